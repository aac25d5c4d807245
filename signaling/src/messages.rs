//! The meeting messages a client exchanges with the hub over its WebSocket.
//!
//! **Client → server** requests are ops of the hub's envelope, named `meeting.*`: `id` and `op`
//! belong to the envelope, the other fields to the op. [`ClientMsg`] decodes a whole request
//! frame (it ignores `id`), and each body type can also be a variant of the hub's own `Op` enum.
//! Each request gets one reply: the data of a [`Reply`] for `meeting.join` and
//! `meeting.publish`, `{}` for the others, or an error whose `code` is a [`RoomError`] code:
//!
//! ```json
//! {"type":"error","id":7,"code":"room_full","message":"the room is full (8 participants)"}
//! ```
//!
//! **Server → client**: room events ([`RoomEvent`]) are pushes on the room's channel
//! `room:{id}`, which the hub subscribes a participant to when it joins; chat goes over that
//! channel too ([`ChatMessage`]). What concerns one participant's peer connections
//! ([`ServerMsg`]: offers, answers, candidates, asynchronous errors) goes to that participant
//! alone. In both cases the push's `event` is the message's name and `data` its other fields.
//!
//! A client joins, then publishes on its publisher connection (it offers, the server answers)
//! and receives on its subscriber connection (the server offers whenever what it receives
//! changes, the client answers); see [`PeerTarget`].
//!
//! [`Reply`]: crate::Reply
//! [`RoomError`]: crate::RoomError
//! [`RoomEvent`]: crate::RoomEvent

use serde::{Deserialize, Serialize};

use crate::ids::{RoomId, TrackId, UserId};
use crate::input::Input;
use crate::model::{IceCandidate, PeerTarget, Role, TrackKind};
use crate::simulcast::Layer;

/// A request naming only the room.
///
/// ```json
/// {"id":1,"op":"meeting.join","room":"standup"}
/// ```
///
/// The `meeting.join` reply (see [`crate::Reply::Joined`]):
///
/// ```json
/// {"type":"reply","id":1,"data":{"role":"participant","room":{"id":"standup","max_participants":8,"locked":false,"created_at_ms":1767225600000,"participants":[{"user":"alice","role":"host","joined_at_ms":1767225601000,"hand_raised":false,"tracks":[{"id":"t1","cid":"mic","kind":"audio","muted":false}]},{"user":"bob","role":"participant","joined_at_ms":1767225602000,"hand_raised":false,"tracks":[]}],"hands":[]}}}
/// ```
///
/// `meeting.leave` and `meeting.end` (hosts only) take the same fields:
///
/// ```json
/// {"id":9,"op":"meeting.end","room":"standup"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRef {
    pub room: RoomId,
}

/// An SDP: `meeting.offer` carries the client's offer on its publisher connection,
/// `meeting.answer` its answer to the server's latest offer on its subscriber connection.
///
/// ```json
/// {"id":3,"op":"meeting.offer","room":"standup","sdp":"v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n..."}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sdp {
    pub room: RoomId,
    pub sdp: String,
}

/// A trickled candidate for one of the client's two connections.
///
/// ```json
/// {"id":4,"op":"meeting.candidate","room":"standup","target":"publisher","candidate":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdp_mid":"0","sdp_mline_index":0}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub room: RoomId,
    pub target: PeerTarget,
    pub candidate: IceCandidate,
}

/// Announces a track the client is adding to its publisher connection; the offer that carries
/// it follows. `cid` is the client's id for it (1–64 bytes); `layers` lists its simulcast
/// encodings (video only, at most three, empty without simulcast).
///
/// ```json
/// {"id":5,"op":"meeting.publish","room":"standup","cid":"cam","kind":"video","layers":[{"rid":"q","width":320,"height":180,"bitrate_bps":150000},{"rid":"h","width":640,"height":360,"bitrate_bps":500000},{"rid":"f","width":1280,"height":720,"bitrate_bps":1500000}]}
/// ```
///
/// The reply names the track (see [`crate::Reply::Published`]):
///
/// ```json
/// {"type":"reply","id":5,"data":{"track":"t2","cid":"cam"}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub room: RoomId,
    pub cid: String,
    pub kind: TrackKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Layer>,
    /// Publish muted (a microphone that starts off).
    #[serde(default, skip_serializing_if = "is_false")]
    pub muted: bool,
}

/// Removes one of the client's tracks; a new offer without it follows.
///
/// ```json
/// {"id":6,"op":"meeting.unpublish","room":"standup","track":"t2"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackRef {
    pub room: RoomId,
    pub track: TrackId,
}

/// Mutes or unmutes one of the client's own tracks. A muted track's packets are not forwarded.
///
/// ```json
/// {"id":7,"op":"meeting.mute","room":"standup","track":"t1","muted":true}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    pub room: RoomId,
    pub track: TrackId,
    pub muted: bool,
}

/// Subscribes to tracks (in rooms without auto-subscribe), or tells the server the size the
/// client renders them at: the server forwards the smallest simulcast layer covering that size
/// that the client's bandwidth carries.
///
/// ```json
/// {"id":8,"op":"meeting.subscribe","room":"standup","tracks":["t2"],"max_width":640,"max_height":360}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    pub room: RoomId,
    pub tracks: Vec<TrackId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
}

/// ```json
/// {"id":10,"op":"meeting.unsubscribe","room":"standup","tracks":["t2"]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    pub room: RoomId,
    pub tracks: Vec<TrackId>,
}

/// Hosts only: mute another participant's track, or all its tracks without `track`.
///
/// ```json
/// {"id":11,"op":"meeting.host_mute","room":"standup","user":"bob","track":"t3"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMute {
    pub room: RoomId,
    pub user: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackId>,
}

/// Hosts only: remove a participant (it cannot join this room again).
///
/// ```json
/// {"id":12,"op":"meeting.remove","room":"standup","user":"mallory"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remove {
    pub room: RoomId,
    pub user: UserId,
}

/// Hosts only: lock (only hosts may join) or unlock the room.
///
/// ```json
/// {"id":13,"op":"meeting.lock","room":"standup","locked":true}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub room: RoomId,
    pub locked: bool,
}

/// `meeting.raise_hand` takes only `room`; `meeting.lower_hand` lowers the client's own hand,
/// or with `user` (hosts only) someone else's.
///
/// ```json
/// {"id":14,"op":"meeting.lower_hand","room":"standup","user":"bob"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowerHand {
    pub room: RoomId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
}

/// Receives the room's audio mix (every published microphone, decoded, summed and encoded as
/// one Opus track) on the subscriber connection, or stops it. For listen-only participants: a
/// client that takes the mix usually unsubscribes from the separate audio tracks. A new offer
/// follows.
///
/// ```json
/// {"id":16,"op":"meeting.mix","room":"townhall","on":true}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    pub room: RoomId,
    pub on: bool,
}

/// A meeting request, decoded from a whole request frame (the envelope's `id` is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum ClientMsg {
    #[serde(rename = "meeting.join")]
    Join(RoomRef),
    #[serde(rename = "meeting.leave")]
    Leave(RoomRef),
    #[serde(rename = "meeting.offer")]
    Offer(Sdp),
    #[serde(rename = "meeting.answer")]
    Answer(Sdp),
    #[serde(rename = "meeting.candidate")]
    Candidate(Candidate),
    #[serde(rename = "meeting.publish")]
    Publish(Publish),
    #[serde(rename = "meeting.unpublish")]
    Unpublish(TrackRef),
    #[serde(rename = "meeting.mute")]
    Mute(Mute),
    #[serde(rename = "meeting.subscribe")]
    Subscribe(Subscribe),
    #[serde(rename = "meeting.unsubscribe")]
    Unsubscribe(Unsubscribe),
    #[serde(rename = "meeting.host_mute")]
    HostMute(HostMute),
    #[serde(rename = "meeting.remove")]
    Remove(Remove),
    #[serde(rename = "meeting.lock")]
    Lock(Lock),
    #[serde(rename = "meeting.end")]
    End(RoomRef),
    #[serde(rename = "meeting.raise_hand")]
    RaiseHand(RoomRef),
    #[serde(rename = "meeting.lower_hand")]
    LowerHand(LowerHand),
    #[serde(rename = "meeting.mix")]
    Mix(Mix),
}

/// Every meeting op name, to tell `unknown_op` from `bad_request`.
pub const OP_NAMES: &[&str] = &[
    "meeting.join",
    "meeting.leave",
    "meeting.offer",
    "meeting.answer",
    "meeting.candidate",
    "meeting.publish",
    "meeting.unpublish",
    "meeting.mute",
    "meeting.subscribe",
    "meeting.unsubscribe",
    "meeting.host_mute",
    "meeting.remove",
    "meeting.lock",
    "meeting.end",
    "meeting.raise_hand",
    "meeting.lower_hand",
    "meeting.mix",
];

impl ClientMsg {
    /// The op name (one of [`OP_NAMES`]).
    pub fn op(&self) -> &'static str {
        match self {
            ClientMsg::Join(_) => "meeting.join",
            ClientMsg::Leave(_) => "meeting.leave",
            ClientMsg::Offer(_) => "meeting.offer",
            ClientMsg::Answer(_) => "meeting.answer",
            ClientMsg::Candidate(_) => "meeting.candidate",
            ClientMsg::Publish(_) => "meeting.publish",
            ClientMsg::Unpublish(_) => "meeting.unpublish",
            ClientMsg::Mute(_) => "meeting.mute",
            ClientMsg::Subscribe(_) => "meeting.subscribe",
            ClientMsg::Unsubscribe(_) => "meeting.unsubscribe",
            ClientMsg::HostMute(_) => "meeting.host_mute",
            ClientMsg::Remove(_) => "meeting.remove",
            ClientMsg::Lock(_) => "meeting.lock",
            ClientMsg::End(_) => "meeting.end",
            ClientMsg::RaiseHand(_) => "meeting.raise_hand",
            ClientMsg::LowerHand(_) => "meeting.lower_hand",
            ClientMsg::Mix(_) => "meeting.mix",
        }
    }

    /// The room the request is for: where the hub routes it.
    pub fn room(&self) -> &RoomId {
        match self {
            ClientMsg::Join(m) | ClientMsg::Leave(m) | ClientMsg::End(m) | ClientMsg::RaiseHand(m) => &m.room,
            ClientMsg::Offer(m) | ClientMsg::Answer(m) => &m.room,
            ClientMsg::Candidate(m) => &m.room,
            ClientMsg::Publish(m) => &m.room,
            ClientMsg::Unpublish(m) => &m.room,
            ClientMsg::Mute(m) => &m.room,
            ClientMsg::Subscribe(m) => &m.room,
            ClientMsg::Unsubscribe(m) => &m.room,
            ClientMsg::HostMute(m) => &m.room,
            ClientMsg::Remove(m) => &m.room,
            ClientMsg::Lock(m) => &m.room,
            ClientMsg::LowerHand(m) => &m.room,
            ClientMsg::Mix(m) => &m.room,
        }
    }

    /// The room input for this request from the authenticated `user`. `grant` is the role of the
    /// user's token grant for this room; only `meeting.join` reads it.
    pub fn into_input(self, user: UserId, grant: Role) -> Input {
        match self {
            ClientMsg::Join(_) => Input::Join { user, role: grant },
            ClientMsg::Leave(_) => Input::Leave { user },
            ClientMsg::Offer(m) => Input::Offer { user, sdp: m.sdp },
            ClientMsg::Answer(m) => Input::Answer { user, sdp: m.sdp },
            ClientMsg::Candidate(m) => Input::Candidate { user, target: m.target, candidate: m.candidate },
            ClientMsg::Publish(m) => {
                Input::PublishTrack { user, cid: m.cid, kind: m.kind, layers: m.layers, muted: m.muted }
            }
            ClientMsg::Unpublish(m) => Input::UnpublishTrack { user, track: m.track },
            ClientMsg::Mute(m) => Input::SetMuted { user, track: m.track, muted: m.muted },
            ClientMsg::Subscribe(m) => {
                Input::Subscribe { user, tracks: m.tracks, max_width: m.max_width, max_height: m.max_height }
            }
            ClientMsg::Unsubscribe(m) => Input::Unsubscribe { user, tracks: m.tracks },
            ClientMsg::HostMute(m) => Input::HostMute { by: Some(user), target: m.user, track: m.track },
            ClientMsg::Remove(m) => Input::Remove { by: Some(user), target: m.user },
            ClientMsg::Lock(m) if m.locked => Input::Lock { by: Some(user) },
            ClientMsg::Lock(_) => Input::Unlock { by: Some(user) },
            ClientMsg::End(_) => Input::End { by: Some(user) },
            ClientMsg::RaiseHand(_) => Input::RaiseHand { user },
            ClientMsg::LowerHand(m) => Input::LowerHand { user, target: m.user },
            ClientMsg::Mix(m) => Input::Mix { user, on: m.on },
        }
    }
}

/// What the server sends one participant about its own peer connections. The hub pushes each
/// with `event` = [`ServerMsg::name`] and the other fields as `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The answer to the client's offer on its publisher connection.
    ///
    /// ```json
    /// {"event":"answer","room":"standup","sdp":"v=0\r\no=- 8112 2 IN IP4 127.0.0.1\r\n..."}
    /// ```
    Answer { room: RoomId, sdp: String },
    /// A (re)negotiation of the client's subscriber connection: tracks were added to or removed
    /// from what it receives. The client answers with `meeting.answer`; the server sends no
    /// other offer until then.
    ///
    /// ```json
    /// {"event":"offer","room":"standup","sdp":"v=0\r\no=- 8113 3 IN IP4 127.0.0.1\r\n..."}
    /// ```
    Offer { room: RoomId, sdp: String },
    /// A server candidate for one of the client's connections.
    ///
    /// ```json
    /// {"event":"candidate","room":"standup","target":"subscriber","candidate":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host","sdp_mid":"0","sdp_mline_index":0}}
    /// ```
    Candidate { room: RoomId, target: PeerTarget, candidate: IceCandidate },
    /// A failure after the request was accepted (the media plane could not apply an SDP). The
    /// client should leave and join again.
    ///
    /// ```json
    /// {"event":"error","room":"standup","code":"media_failed","message":"could not apply the answer"}
    /// ```
    Error { room: RoomId, code: String, message: String },
}

impl ServerMsg {
    /// The message's name: its `event` tag.
    pub fn name(&self) -> &'static str {
        match self {
            ServerMsg::Answer { .. } => "answer",
            ServerMsg::Offer { .. } => "offer",
            ServerMsg::Candidate { .. } => "candidate",
            ServerMsg::Error { .. } => "error",
        }
    }
}

/// The event name of in-meeting chat on `room:{id}`.
pub const CHAT_EVENT: &str = "chat";

/// The data of an in-meeting chat message: a plain `publish` on the room's channel with event
/// [`CHAT_EVENT`], which only participants may subscribe to and publish on.
///
/// ```json
/// {"id":15,"op":"publish","channel":"room:standup","event":"chat","data":{"text":"can you see my screen?"}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub text: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}
