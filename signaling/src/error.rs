//! Why a room refused an input. An input that fails changes nothing in the room.
//!
//! Each variant has a stable code ([`RoomError::as_str`]) for the `code` of the hub's error
//! frame; the `Display` text is for humans and may change.

/// Every reason [`crate::Room::handle`] can refuse an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The room already holds `max_participants` (viewers count too).
    #[error("the room is full ({max} participants)")]
    RoomFull { max: u32 },
    /// The room is locked: only hosts may join.
    #[error("the room is locked")]
    RoomLocked,
    /// Only a host (or the server API) may do this.
    #[error("only a host may do this")]
    NotHost,
    /// Viewers subscribe only: no tracks, no publisher connection.
    #[error("viewers cannot publish")]
    ViewerCannotPublish,
    /// The room has ended; nothing more happens in it.
    #[error("the meeting has ended")]
    RoomEnded,
    /// The sender has not joined this room (or has left it).
    #[error("not in this room")]
    NotInRoom,
    /// The user is already in the room: the hub sends `Leave` for a dropped connection before a
    /// reconnecting client joins again.
    #[error("already in this room")]
    AlreadyJoined,
    /// A host or the server API removed this user; they cannot join this room again.
    #[error("removed from this room")]
    Removed,
    /// The track does not exist in the room, or is not the sender's where it must be.
    #[error("no such track")]
    UnknownTrack,
    /// The target user is not in the room.
    #[error("no such participant")]
    UnknownParticipant,
    /// The publisher already has a track with this `cid`.
    #[error("a track with this cid is already published")]
    TrackAlreadyPublished,
    /// The publisher already has `max_tracks_per_participant` tracks.
    #[error("at most {max} tracks per participant")]
    TooManyTracks { max: u32 },
    /// A malformed track: bad cid, simulcast layers on audio, or bad layers.
    #[error("invalid track: {0}")]
    InvalidTrack(String),
    /// Subscribing to one's own track.
    #[error("cannot subscribe to your own track")]
    OwnTrack,
    /// An empty or oversized SDP.
    #[error("invalid sdp: {0}")]
    InvalidSdp(&'static str),
    /// An answer on the subscriber connection while the server has no offer outstanding.
    #[error("no offer is waiting for an answer")]
    UnexpectedAnswer,
}

impl RoomError {
    /// The stable wire code.
    pub fn as_str(&self) -> &'static str {
        match self {
            RoomError::RoomFull { .. } => "room_full",
            RoomError::RoomLocked => "room_locked",
            RoomError::NotHost => "not_host",
            RoomError::ViewerCannotPublish => "viewer_cannot_publish",
            RoomError::RoomEnded => "room_ended",
            RoomError::NotInRoom => "not_in_room",
            RoomError::AlreadyJoined => "already_joined",
            RoomError::Removed => "removed",
            RoomError::UnknownTrack => "unknown_track",
            RoomError::UnknownParticipant => "unknown_participant",
            RoomError::TrackAlreadyPublished => "track_already_published",
            RoomError::TooManyTracks { .. } => "too_many_tracks",
            RoomError::InvalidTrack(_) => "invalid_track",
            RoomError::OwnTrack => "own_track",
            RoomError::InvalidSdp(_) => "invalid_sdp",
            RoomError::UnexpectedAnswer => "unexpected_answer",
        }
    }
}

/// Every code [`RoomError::as_str`] can return, for documentation and for clients' tables.
pub const ERROR_CODES: &[&str] = &[
    "room_full",
    "room_locked",
    "not_host",
    "viewer_cannot_publish",
    "room_ended",
    "not_in_room",
    "already_joined",
    "removed",
    "unknown_track",
    "unknown_participant",
    "track_already_published",
    "too_many_tracks",
    "invalid_track",
    "own_track",
    "invalid_sdp",
    "unexpected_answer",
];
