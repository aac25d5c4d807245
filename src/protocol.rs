//! The wire protocol: one envelope for every op, in JSON text frames or MessagePack binary frames
//! (chosen by WebSocket subprotocol). docs/protocol.md shows every message with an example.
//!
//! Client → server: `Request { id, op... }`; each gets exactly one `Reply` or `Error` with the
//! same id. Server → client pushes (`Push`, `Join`, `Leave`) carry the channel and, where the
//! channel keeps history, the publication's offset.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::protocol as chat;
use signaling::messages as meeting;

/// WebSocket subprotocol names.
pub const SUBPROTOCOL_JSON: &str = "hub.json";
pub const SUBPROTOCOL_MSGPACK: &str = "hub.msgpack";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    MsgPack,
}

impl Codec {
    pub fn from_subprotocol(name: Option<&str>) -> Codec {
        match name {
            Some(SUBPROTOCOL_MSGPACK) => Codec::MsgPack,
            _ => Codec::Json,
        }
    }

    /// Encodes a server message. Serialization of these types cannot fail (string keys only).
    pub fn encode<T: Serialize>(self, msg: &T) -> Bytes {
        match self {
            Codec::Json => Bytes::from(serde_json::to_vec(msg).expect("json encoding of protocol types")),
            Codec::MsgPack => Bytes::from(rmp_serde::to_vec_named(msg).expect("msgpack encoding of protocol types")),
        }
    }

    pub fn decode<'a, T: Deserialize<'a>>(self, bytes: &'a [u8]) -> Result<T, String> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }
}

/// A client request: `{"id": 7, "op": "subscribe", "channel": "news"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// Where a client stands in a channel's stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamPosition {
    pub offset: u64,
    /// Changes when the stream is reset (expired, or its backend lost it): offsets from another
    /// epoch mean nothing.
    pub epoch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// First frame of every connection.
    Connect {
        token: String,
    },
    /// Replaces the connection's token before it expires.
    Refresh {
        token: String,
    },
    /// Subscribe; with `since`, also receive what was missed after that position.
    Subscribe {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<StreamPosition>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        data: Value,
    },
    Presence {
        channel: String,
    },
    History {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<StreamPosition>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Application-level ping for clients that cannot see WebSocket pings.
    Ping {},
    // ---- chat (docs/protocol.md#chat) ----
    #[serde(rename = "chat.swipe")]
    ChatSwipe(chat::Swipe),
    #[serde(rename = "chat.conversations")]
    ChatConversations {},
    #[serde(rename = "chat.send")]
    ChatSend(chat::Send),
    #[serde(rename = "chat.history")]
    ChatHistory(chat::HistoryQuery),
    #[serde(rename = "chat.delivered")]
    ChatDelivered(chat::Mark),
    #[serde(rename = "chat.read")]
    ChatRead(chat::Mark),
    #[serde(rename = "chat.typing")]
    ChatTyping(chat::Typing),
    #[serde(rename = "chat.status")]
    ChatStatus(chat::SetStatus),
    #[serde(rename = "chat.presence")]
    ChatPresence(chat::PresenceQuery),
    #[serde(rename = "chat.unmatch")]
    ChatUnmatch(chat::ConversationRef),
    #[serde(rename = "chat.block")]
    ChatBlock(chat::UserRef),
    #[serde(rename = "chat.report")]
    ChatReport(chat::Report),
    // ---- meetings (docs/protocol.md#meetings) ----
    #[serde(rename = "meeting.join")]
    MeetingJoin(meeting::RoomRef),
    #[serde(rename = "meeting.leave")]
    MeetingLeave(meeting::RoomRef),
    #[serde(rename = "meeting.mute")]
    MeetingMute(meeting::Mute),
    #[serde(rename = "meeting.host_mute")]
    MeetingHostMute(meeting::HostMute),
    #[serde(rename = "meeting.remove")]
    MeetingRemove(meeting::Remove),
    #[serde(rename = "meeting.lock")]
    MeetingLock(meeting::Lock),
    #[serde(rename = "meeting.end")]
    MeetingEnd(meeting::RoomRef),
    #[serde(rename = "meeting.raise_hand")]
    MeetingRaiseHand(meeting::RoomRef),
    #[serde(rename = "meeting.lower_hand")]
    MeetingLowerHand(meeting::LowerHand),
    #[serde(rename = "meeting.offer")]
    MeetingOffer(meeting::Sdp),
    #[serde(rename = "meeting.answer")]
    MeetingAnswer(meeting::Sdp),
    #[serde(rename = "meeting.candidate")]
    MeetingCandidate(meeting::Candidate),
    #[serde(rename = "meeting.publish")]
    MeetingPublish(meeting::Publish),
    #[serde(rename = "meeting.unpublish")]
    MeetingUnpublish(meeting::TrackRef),
    #[serde(rename = "meeting.subscribe")]
    MeetingSubscribe(meeting::Subscribe),
    #[serde(rename = "meeting.unsubscribe")]
    MeetingUnsubscribe(meeting::Unsubscribe),
    #[serde(rename = "meeting.mix")]
    MeetingMix(meeting::Mix),
}

impl Op {
    /// The meeting request this op is, or the op back when it is not one.
    pub fn into_meeting(self) -> Result<signaling::ClientMsg, Op> {
        use signaling::ClientMsg as M;
        Ok(match self {
            Op::MeetingJoin(m) => M::Join(m),
            Op::MeetingLeave(m) => M::Leave(m),
            Op::MeetingMute(m) => M::Mute(m),
            Op::MeetingHostMute(m) => M::HostMute(m),
            Op::MeetingRemove(m) => M::Remove(m),
            Op::MeetingLock(m) => M::Lock(m),
            Op::MeetingEnd(m) => M::End(m),
            Op::MeetingRaiseHand(m) => M::RaiseHand(m),
            Op::MeetingLowerHand(m) => M::LowerHand(m),
            Op::MeetingOffer(m) => M::Offer(m),
            Op::MeetingAnswer(m) => M::Answer(m),
            Op::MeetingCandidate(m) => M::Candidate(m),
            Op::MeetingPublish(m) => M::Publish(m),
            Op::MeetingUnpublish(m) => M::Unpublish(m),
            Op::MeetingSubscribe(m) => M::Subscribe(m),
            Op::MeetingUnsubscribe(m) => M::Unsubscribe(m),
            Op::MeetingMix(m) => M::Mix(m),
            other => return Err(other),
        })
    }
}

/// Every op name, to tell `unknown_op` from `bad_request`.
pub const OP_NAMES: &[&str] = &[
    "connect",
    "refresh",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "history",
    "ping",
    "chat.swipe",
    "chat.conversations",
    "chat.send",
    "chat.history",
    "chat.delivered",
    "chat.read",
    "chat.typing",
    "chat.status",
    "chat.presence",
    "chat.unmatch",
    "chat.block",
    "chat.report",
    "meeting.join",
    "meeting.leave",
    "meeting.mute",
    "meeting.host_mute",
    "meeting.remove",
    "meeting.lock",
    "meeting.end",
    "meeting.raise_hand",
    "meeting.lower_hand",
    "meeting.offer",
    "meeting.answer",
    "meeting.candidate",
    "meeting.publish",
    "meeting.unpublish",
    "meeting.subscribe",
    "meeting.unsubscribe",
    "meeting.mix",
];

/// What a client learns about another client (presence, join/leave, publisher).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientInfo {
    pub user: String,
    pub client: String,
}

/// Server → client messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Reply {
        id: u64,
        data: Value,
    },
    Error {
        id: Option<u64>,
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Push {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        event: String,
        data: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    Join {
        channel: String,
        info: ClientInfo,
    },
    Leave {
        channel: String,
        info: ClientInfo,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectReply {
    pub client: String,
    pub user: String,
    pub node: String,
    pub expires_at: Option<u64>,
    pub ping_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubscribeReply {
    /// Top of the channel's stream; absent where the channel keeps no history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<StreamPosition>,
    /// True when `since` was given and every missed publication is in `publications`.
    pub recovered: bool,
    /// Missed publications, oldest first (only with `since`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<PublicationView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublishReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<StreamPosition>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryReply {
    pub position: StreamPosition,
    pub publications: Vec<PublicationView>,
    /// With `since`: true when `publications` holds everything after it (false: trimmed, epoch
    /// changed, or more remain than `limit` or the reply's size allowed).
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PresenceReply {
    pub members: Vec<ClientInfo>,
}

/// A publication as the client sees it in history and subscribe replies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublicationView {
    pub offset: u64,
    pub event: String,
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// One message published to a channel. Encoded at most once per codec, however many subscribers
/// receive it: every subscriber's outbox shares the same bytes.
#[derive(Debug)]
pub struct Publication {
    pub channel: Arc<str>,
    /// Offset in the channel's stream; 0 where the channel keeps no history.
    pub offset: u64,
    pub event: String,
    pub data: Value,
    pub from: Option<String>,
    encoded: EncodeOnce,
}

/// A server message's bytes per codec, made on first use and shared by every receiver.
#[derive(Debug, Default)]
pub struct EncodeOnce {
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl EncodeOnce {
    pub fn get(&self, codec: Codec, msg: impl FnOnce() -> ServerMsg) -> Bytes {
        let cell = match codec {
            Codec::Json => &self.json,
            Codec::MsgPack => &self.msgpack,
        };
        cell.get_or_init(|| codec.encode(&msg())).clone()
    }
}

/// A server message sent to many connections (join/leave), encoded once per codec.
#[derive(Debug)]
pub struct SharedMsg {
    pub msg: ServerMsg,
    encoded: EncodeOnce,
}

impl SharedMsg {
    pub fn new(msg: ServerMsg) -> Self {
        SharedMsg { msg, encoded: EncodeOnce::default() }
    }

    pub fn encoded(&self, codec: Codec) -> Bytes {
        self.encoded.get(codec, || self.msg.clone())
    }
}

impl Publication {
    pub fn new(channel: Arc<str>, offset: u64, event: String, data: Value, from: Option<String>) -> Self {
        Publication { channel, offset, event, data, from, encoded: EncodeOnce::default() }
    }

    fn push_msg(&self) -> ServerMsg {
        ServerMsg::Push {
            channel: self.channel.to_string(),
            offset: (self.offset > 0).then_some(self.offset),
            event: self.event.clone(),
            data: self.data.clone(),
            from: self.from.clone(),
        }
    }

    /// The push frame in `codec`, encoded on first use and shared afterwards.
    pub fn encoded(&self, codec: Codec) -> Bytes {
        self.encoded.get(codec, || self.push_msg())
    }

    pub fn view(&self) -> PublicationView {
        PublicationView {
            offset: self.offset,
            event: self.event.clone(),
            data: self.data.clone(),
            from: self.from.clone(),
        }
    }
}

/// Pulls the request id out of a frame that failed to decode, so the error can name it.
pub fn salvage_id(codec: Codec, bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: u64,
    }
    codec.decode::<IdOnly>(bytes).ok().map(|r| r.id)
}
