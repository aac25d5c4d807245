//! The vocabulary shared by the room, the wire messages and the media plane.

use serde::{Deserialize, Serialize};

/// What a user may do in a room; it comes from the token's room grant, never from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes, and may mute others, remove participants, lock and end the room.
    Host,
    /// Publishes and subscribes.
    Participant,
    /// Subscribes only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Participant => "participant",
            Role::Viewer => "viewer",
        }
    }

    pub fn can_publish(self) -> bool {
        self != Role::Viewer
    }

    pub fn is_host(self) -> bool {
        self == Role::Host
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    /// A camera.
    Video,
    /// A screen share: video, kept apart so clients can lay it out differently.
    Screen,
}

impl TrackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
            TrackKind::Screen => "screen",
        }
    }

    /// Video tracks need keyframes and may have simulcast layers.
    pub fn is_video(self) -> bool {
        self != TrackKind::Audio
    }
}

/// Which of a participant's two peer connections a message is about. Each participant has one
/// connection it publishes on (the client offers, the server answers) and one it receives on (the
/// server offers, the client answers). With one offerer per connection there is never glare, and
/// a change in what a participant receives never waits on what it publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerTarget {
    Publisher,
    Subscriber,
}

/// A trickled ICE candidate, as `RTCIceCandidateInit` (in snake case). An empty `candidate`
/// marks the end of candidates.
///
/// ```json
/// {"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdp_mid":"0","sdp_mline_index":0}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// Why a participant is no longer in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It left, or its connection went away (the hub sends `Leave` for it).
    Left,
    /// A host or the server API removed it.
    Removed,
    /// The room ended.
    Ended,
    /// It joined again from another connection, which took its place.
    Replaced,
}

/// Why a room ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A host ended it.
    Host,
    /// The server API ended it.
    Api,
    /// Its `expires_at_ms` passed.
    Expired,
    /// It stayed empty for `empty_timeout_ms`.
    Empty,
    /// The node holding it shut down (`Input::NodeStopping`) or died (then a cluster's other
    /// nodes tell their sockets). Joining again starts the room afresh on a live node.
    NodeLost,
}
