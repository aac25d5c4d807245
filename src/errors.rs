//! Stable error codes (in `error` replies and server-API bodies) and WebSocket close codes.
//!
//! Close codes fall in two ranges: 4000–4099 mean "reconnect (with backoff) and resume";
//! 4100–4199 mean "do not reconnect until something changes" (a new token, an operator).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame is not a valid request (bad JSON/MessagePack, missing fields).
    BadRequest,
    /// The `op` is not one this server knows.
    UnknownOp,
    /// The request needs an authenticated connection, or the token is invalid.
    Unauthorized,
    /// The token's `exp` has passed.
    TokenExpired,
    /// The rules of the channel's namespace do not allow this.
    Forbidden,
    /// No namespace matches the channel, or the resource does not exist.
    NotFound,
    AlreadySubscribed,
    NotSubscribed,
    /// The connection sends requests faster than its limit; this one was dropped.
    RateLimited,
    /// A per-connection limit (subscriptions) is reached.
    LimitExceeded,
    /// The channel keeps no history, so there is nothing to recover or page.
    NoHistory,
    /// The user is banned.
    Banned,
    /// A backend (bus, store) could not be reached; try again.
    Unavailable,
    /// Chat: the conversation is not the caller's.
    NotMatched,
    /// Chat: the conversation was closed (unmatch, block, server API).
    ConversationClosed,
    /// Chat: one of the two users blocked the other.
    Blocked,
    /// Chat: too many swipes in the configured window.
    SwipeLimit,
    /// Meetings: a room with this id exists already (server API).
    RoomExists,
    /// Meetings: the codes of `signaling::RoomError`, one for one.
    RoomFull,
    RoomLocked,
    NotHost,
    ViewerCannotPublish,
    RoomEnded,
    NotInRoom,
    AlreadyJoined,
    Removed,
    UnknownTrack,
    UnknownParticipant,
    TrackAlreadyPublished,
    TooManyTracks,
    InvalidTrack,
    OwnTrack,
    InvalidSdp,
    UnexpectedAnswer,
    /// Meetings: the media plane could not apply an SDP or candidate (pushed as an `error` event).
    MediaFailed,
    /// Meetings: this node runs without media (`media.enabled = false`, or its port could not be bound).
    MediaUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::NoHistory => "no_history",
            ErrorCode::Banned => "banned",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotMatched => "not_matched",
            ErrorCode::ConversationClosed => "conversation_closed",
            ErrorCode::Blocked => "blocked",
            ErrorCode::SwipeLimit => "swipe_limit",
            ErrorCode::RoomExists => "room_exists",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RoomLocked => "room_locked",
            ErrorCode::NotHost => "not_host",
            ErrorCode::ViewerCannotPublish => "viewer_cannot_publish",
            ErrorCode::RoomEnded => "room_ended",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::Removed => "removed",
            ErrorCode::UnknownTrack => "unknown_track",
            ErrorCode::UnknownParticipant => "unknown_participant",
            ErrorCode::TrackAlreadyPublished => "track_already_published",
            ErrorCode::TooManyTracks => "too_many_tracks",
            ErrorCode::InvalidTrack => "invalid_track",
            ErrorCode::OwnTrack => "own_track",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::UnexpectedAnswer => "unexpected_answer",
            ErrorCode::MediaFailed => "media_failed",
            ErrorCode::MediaUnavailable => "media_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorCode {
    /// The code named `s` on the wire (nodes pass errors to each other by name).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        Some(match s {
            "bad_request" => ErrorCode::BadRequest,
            "unknown_op" => ErrorCode::UnknownOp,
            "unauthorized" => ErrorCode::Unauthorized,
            "token_expired" => ErrorCode::TokenExpired,
            "forbidden" => ErrorCode::Forbidden,
            "not_found" => ErrorCode::NotFound,
            "already_subscribed" => ErrorCode::AlreadySubscribed,
            "not_subscribed" => ErrorCode::NotSubscribed,
            "rate_limited" => ErrorCode::RateLimited,
            "limit_exceeded" => ErrorCode::LimitExceeded,
            "no_history" => ErrorCode::NoHistory,
            "banned" => ErrorCode::Banned,
            "unavailable" => ErrorCode::Unavailable,
            "not_matched" => ErrorCode::NotMatched,
            "conversation_closed" => ErrorCode::ConversationClosed,
            "blocked" => ErrorCode::Blocked,
            "swipe_limit" => ErrorCode::SwipeLimit,
            "room_exists" => ErrorCode::RoomExists,
            "room_full" => ErrorCode::RoomFull,
            "room_locked" => ErrorCode::RoomLocked,
            "not_host" => ErrorCode::NotHost,
            "viewer_cannot_publish" => ErrorCode::ViewerCannotPublish,
            "room_ended" => ErrorCode::RoomEnded,
            "not_in_room" => ErrorCode::NotInRoom,
            "already_joined" => ErrorCode::AlreadyJoined,
            "removed" => ErrorCode::Removed,
            "unknown_track" => ErrorCode::UnknownTrack,
            "unknown_participant" => ErrorCode::UnknownParticipant,
            "track_already_published" => ErrorCode::TrackAlreadyPublished,
            "too_many_tracks" => ErrorCode::TooManyTracks,
            "invalid_track" => ErrorCode::InvalidTrack,
            "own_track" => ErrorCode::OwnTrack,
            "invalid_sdp" => ErrorCode::InvalidSdp,
            "unexpected_answer" => ErrorCode::UnexpectedAnswer,
            "media_failed" => ErrorCode::MediaFailed,
            "media_unavailable" => ErrorCode::MediaUnavailable,
            "internal" => ErrorCode::Internal,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<signaling::RoomError> for HubError {
    fn from(e: signaling::RoomError) -> Self {
        use signaling::RoomError as R;
        let code = match e {
            R::RoomFull { .. } => ErrorCode::RoomFull,
            R::RoomLocked => ErrorCode::RoomLocked,
            R::NotHost => ErrorCode::NotHost,
            R::ViewerCannotPublish => ErrorCode::ViewerCannotPublish,
            R::RoomEnded => ErrorCode::RoomEnded,
            R::NotInRoom => ErrorCode::NotInRoom,
            R::AlreadyJoined => ErrorCode::AlreadyJoined,
            R::Removed => ErrorCode::Removed,
            R::UnknownTrack => ErrorCode::UnknownTrack,
            R::UnknownParticipant => ErrorCode::UnknownParticipant,
            R::TrackAlreadyPublished => ErrorCode::TrackAlreadyPublished,
            R::TooManyTracks { .. } => ErrorCode::TooManyTracks,
            R::InvalidTrack(_) => ErrorCode::InvalidTrack,
            R::OwnTrack => ErrorCode::OwnTrack,
            R::InvalidSdp(_) => ErrorCode::InvalidSdp,
            R::UnexpectedAnswer => ErrorCode::UnexpectedAnswer,
        };
        debug_assert_eq!(code.as_str(), e.as_str());
        HubError::new(code, e.to_string())
    }
}

/// An error carried to the client: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HubError {
    pub code: ErrorCode,
    pub message: String,
    /// When retrying makes sense (limits), how long to wait first.
    pub retry_after_ms: Option<u64>,
}

impl HubError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError { code, message: message.into(), retry_after_ms: None }
    }

    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
}

/// Why the hub closes a socket. The numeric code is what the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The node is shutting down: reconnect (to another node) and resume.
    Shutdown,
    /// The connection fell too far behind; reconnect and resume from history.
    SlowConsumer,
    /// No pong (or any frame) within the timeout.
    NoPong,
    /// The first frame was not a valid `connect` in time.
    AuthRequired,
    /// The token was rejected.
    InvalidToken,
    /// The token expired without a `refresh`.
    TokenExpired,
    /// Disconnected through the server API.
    Disconnected,
    /// The user is banned.
    Banned,
    /// A frame above `gateway.max_message_bytes` (standard code).
    TooLarge,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Shutdown => 4000,
            CloseReason::SlowConsumer => 4001,
            CloseReason::NoPong => 4002,
            CloseReason::AuthRequired => 4100,
            CloseReason::InvalidToken => 4101,
            CloseReason::TokenExpired => 4102,
            CloseReason::Disconnected => 4103,
            CloseReason::Banned => 4104,
            CloseReason::TooLarge => 1009,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "shutdown",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::NoPong => "no pong",
            CloseReason::AuthRequired => "auth required",
            CloseReason::InvalidToken => "invalid token",
            CloseReason::TokenExpired => "token expired",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Banned => "banned",
            CloseReason::TooLarge => "message too large",
        }
    }

    pub fn from_code(code: u16) -> Option<CloseReason> {
        use CloseReason::*;
        [Shutdown, SlowConsumer, NoPong, AuthRequired, InvalidToken, TokenExpired, Disconnected, Banned, TooLarge]
            .into_iter()
            .find(|r| r.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_error_keeps_its_wire_code() {
        use signaling::RoomError as R;
        let all = [
            R::RoomFull { max: 2 },
            R::RoomLocked,
            R::NotHost,
            R::ViewerCannotPublish,
            R::RoomEnded,
            R::NotInRoom,
            R::AlreadyJoined,
            R::Removed,
            R::UnknownTrack,
            R::UnknownParticipant,
            R::TrackAlreadyPublished,
            R::TooManyTracks { max: 1 },
            R::InvalidTrack("x".into()),
            R::OwnTrack,
            R::InvalidSdp("x"),
            R::UnexpectedAnswer,
        ];
        assert_eq!(all.len(), signaling::ERROR_CODES.len());
        for e in all {
            let wire = e.as_str();
            assert_eq!(HubError::from(e).code.as_str(), wire);
        }
    }
}
