//! What a room asks of its surroundings: events for participants, commands for the media plane,
//! replies to the sender, and departures for the hub.

use serde::{Deserialize, Serialize};

use crate::ids::{TrackId, UserId};
use crate::model::{EndReason, IceCandidate, LeaveReason, PeerTarget, Role, TrackKind};
use crate::simulcast::Layer;
use crate::snapshot::RoomSnapshot;

/// One thing to do after [`crate::Room::handle`]. The outputs of one input are to be carried
/// out in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "output", rename_all = "snake_case")]
pub enum Output {
    /// The data of the sender's reply. At most one per input, always first; inputs without one
    /// are answered with an empty reply.
    Reply(Reply),
    /// To every participant: publish on the room's channel `room:{id}`.
    Broadcast(RoomEvent),
    /// To one participant only.
    Notify { to: UserId, event: RoomEvent },
    /// For the media plane (the SFU) of this room.
    Media(MediaCommand),
    /// `user` is no longer in the room: the hub unsubscribes it from `room:{id}` (after the
    /// events before this output) and routes no more of its meeting messages here.
    Detach { user: UserId, reason: LeaveReason },
}

/// The data of a successful reply, for the inputs that have some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// To `Join`: the joiner's role (after the room's `host` option) and the room as it is now,
    /// the joiner included.
    Joined { role: Role, room: RoomSnapshot },
    /// To `PublishTrack`: the id the room gave the track.
    Published { track: TrackId, cid: String },
}

/// What participants are told. The hub pushes each with `event` = [`RoomEvent::name`] and the
/// other fields as `data`.
///
/// ```json
/// {"event":"track_muted","user":"bob","track":"t2","muted":true,"forced":true,"by":"alice"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RoomEvent {
    ParticipantJoined {
        user: UserId,
        role: Role,
    },
    /// The participant's tracks are gone with it (no `track_unpublished` for them).
    ParticipantLeft {
        user: UserId,
        reason: LeaveReason,
    },
    TrackPublished {
        user: UserId,
        track: TrackId,
        kind: TrackKind,
        muted: bool,
        /// The rids of its simulcast layers, lowest quality first; empty without simulcast.
        layers: Vec<String>,
    },
    TrackUnpublished {
        user: UserId,
        track: TrackId,
    },
    TrackMuted {
        user: UserId,
        track: TrackId,
        muted: bool,
        /// True when a host or the server API muted the track, not its owner.
        #[serde(default)]
        forced: bool,
        /// The host who muted it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<UserId>,
    },
    HandRaised {
        user: UserId,
    },
    HandLowered {
        user: UserId,
        /// The host who lowered it, when not its owner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<UserId>,
    },
    /// `user` is absent when nobody speaks.
    ActiveSpeaker {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserId>,
    },
    LockChanged {
        locked: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<UserId>,
    },
    /// Everyone is disconnected from the media and detached after this.
    RoomEnded {
        reason: EndReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<UserId>,
    },
    /// Only to the removed participant, before it is detached.
    Removed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<UserId>,
    },
}

impl RoomEvent {
    /// The event's name: its `event` tag.
    pub fn name(&self) -> &'static str {
        match self {
            RoomEvent::ParticipantJoined { .. } => "participant_joined",
            RoomEvent::ParticipantLeft { .. } => "participant_left",
            RoomEvent::TrackPublished { .. } => "track_published",
            RoomEvent::TrackUnpublished { .. } => "track_unpublished",
            RoomEvent::TrackMuted { .. } => "track_muted",
            RoomEvent::HandRaised { .. } => "hand_raised",
            RoomEvent::HandLowered { .. } => "hand_lowered",
            RoomEvent::ActiveSpeaker { .. } => "active_speaker",
            RoomEvent::LockChanged { .. } => "lock_changed",
            RoomEvent::RoomEnded { .. } => "room_ended",
            RoomEvent::Removed { .. } => "removed",
        }
    }
}

/// What the media plane must do. Everything SDP-related is the media plane's: the room only
/// decides when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum MediaCommand {
    /// Apply the client's offer to its publisher connection and send the answer to the client.
    AcceptOffer {
        user: UserId,
        sdp: String,
    },
    /// Create an offer on `user`'s subscriber connection for its current subscriptions and send
    /// it to the client. The room sends no other `CreateOffer` for `user` until the client's
    /// answer arrives.
    CreateOffer {
        user: UserId,
    },
    /// Apply the client's answer to its subscriber connection.
    ApplyAnswer {
        user: UserId,
        sdp: String,
    },
    AddCandidate {
        user: UserId,
        target: PeerTarget,
        candidate: IceCandidate,
    },
    /// Expect this track on `user`'s publisher connection (matched by `cid`).
    AddTrack {
        user: UserId,
        track: TrackId,
        cid: String,
        kind: TrackKind,
        layers: Vec<Layer>,
    },
    /// The track is gone: stop forwarding it anywhere and forget it. Its subscriptions were
    /// removed by `Unsubscribe` commands before this one.
    RemoveTrack {
        track: TrackId,
    },
    /// Forward `track` to `user`, or change the size `user` asked for on it (which the layer
    /// selector reads). A new subscription is followed by a `CreateOffer` for its m-line; when
    /// its forwarding starts, the media plane asks for a keyframe (through its throttle).
    Subscribe {
        user: UserId,
        track: TrackId,
        max_width: Option<u32>,
        max_height: Option<u32>,
    },
    Unsubscribe {
        user: UserId,
        track: TrackId,
    },
    /// Add the room's audio mix to `user`'s subscriber connection (`on`), or remove it; a
    /// `CreateOffer` follows.
    Mix {
        user: UserId,
        on: bool,
    },
    /// The track is muted: drop its packets instead of forwarding them.
    StopForwarding {
        track: TrackId,
    },
    /// The track is unmuted: forward its packets again. For video a `RequestKeyframe` follows.
    ResumeForwarding {
        track: TrackId,
    },
    /// Ask the publisher of `track` for a keyframe.
    RequestKeyframe {
        track: TrackId,
    },
    /// Close both of `user`'s peer connections (and everything they carried).
    DisconnectMedia {
        user: UserId,
    },
    /// The room ended: release everything it holds. Always the last output of a room.
    CloseRoom,
}
