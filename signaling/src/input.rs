//! What a room is told. Inputs are serde types too, so a node that holds a client's socket can
//! forward them over the bus to the node that holds the room.

use serde::{Deserialize, Serialize};

use crate::ids::{TrackId, UserId};
use crate::model::{IceCandidate, PeerTarget, Role, TrackKind};
use crate::simulcast::Layer;

/// One event for [`crate::Room::handle`]. `user` is the authenticated sender; `by` is the acting
/// host, or `None` for the server API (trusted: no host check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// `role` comes from the token's room grant; the room's `host` option overrides it.
    Join {
        user: UserId,
        role: Role,
    },
    Leave {
        user: UserId,
    },
    /// `user`, in the room already, joins again from another connection (its old one lost, or
    /// another tab): the old session leaves (reason `Replaced`) and a new one joins in its place,
    /// even into a locked or full room. The hub tells which connection is which.
    Replace {
        user: UserId,
        role: Role,
    },
    /// An offer on the sender's publisher connection; the media plane answers it.
    Offer {
        user: UserId,
        sdp: String,
    },
    /// The answer to the server's latest offer on the sender's subscriber connection.
    Answer {
        user: UserId,
        sdp: String,
    },
    Candidate {
        user: UserId,
        target: PeerTarget,
        candidate: IceCandidate,
    },
    /// Announces a track before (or with) the offer that carries it. `cid` is the client's own
    /// id for it (the `MediaStreamTrack` id or the transceiver's mid); `layers` lists its
    /// simulcast encodings, empty when it has none.
    PublishTrack {
        user: UserId,
        cid: String,
        kind: TrackKind,
        #[serde(default)]
        layers: Vec<Layer>,
        #[serde(default)]
        muted: bool,
    },
    UnpublishTrack {
        user: UserId,
        track: TrackId,
    },
    /// Subscribes to tracks, or changes the size asked for on tracks already subscribed.
    Subscribe {
        user: UserId,
        tracks: Vec<TrackId>,
        #[serde(default)]
        max_width: Option<u32>,
        #[serde(default)]
        max_height: Option<u32>,
    },
    Unsubscribe {
        user: UserId,
        tracks: Vec<TrackId>,
    },
    /// Mutes or unmutes one of the sender's own tracks.
    SetMuted {
        user: UserId,
        track: TrackId,
        muted: bool,
    },
    /// Mutes another participant's track, or all its tracks when `track` is `None`. There is no
    /// host unmute: turning someone's microphone or camera on is theirs to do.
    HostMute {
        by: Option<UserId>,
        target: UserId,
        track: Option<TrackId>,
    },
    /// Removes a participant, who cannot join this room again.
    Remove {
        by: Option<UserId>,
        target: UserId,
    },
    /// Locks the room: only hosts may join from now on.
    Lock {
        by: Option<UserId>,
    },
    Unlock {
        by: Option<UserId>,
    },
    End {
        by: Option<UserId>,
    },
    /// The node holding the room is shutting down: the room ends with reason `NodeLost`, so that
    /// its participants join again (on another node) at once.
    NodeStopping,
    RaiseHand {
        user: UserId,
    },
    /// Lowers the sender's hand, or (hosts only) `target`'s.
    LowerHand {
        user: UserId,
        #[serde(default)]
        target: Option<UserId>,
    },
    /// Receive the room's audio mix on the subscriber connection (`on`), or stop.
    Mix {
        user: UserId,
        on: bool,
    },
    /// From the media plane: who speaks loudest now (`None`: nobody).
    ActiveSpeaker {
        user: Option<UserId>,
    },
    /// From the media plane: what `user`'s subscriber connection carries changed on its side (a
    /// subscribed track began to flow and was added to the connection), so it needs an offer. A user
    /// who has left is not an error.
    Renegotiate {
        user: UserId,
    },
    /// Time passes: ends the room when it expires or has stayed empty too long. Call it at
    /// [`crate::Room::next_timeout`] (earlier or extra ticks are harmless).
    Tick,
}
