//! The chat's wire types: request bodies of the `chat.*` ops (variants of `protocol::Op`), their
//! replies, and the data of the pushes on `user:{id}`. docs/protocol.md#chat shows each one.

use serde::{Deserialize, Serialize};

/// A conversation is the match it belongs to.
pub type ConversationId = i64;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SwipeKind {
    Like,
    Pass,
    SuperLike,
}

impl SwipeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SwipeKind::Like => "like",
            SwipeKind::Pass => "pass",
            SwipeKind::SuperLike => "super_like",
        }
    }

    /// Whether this swipe counts towards a match.
    pub fn likes(self) -> bool {
        self != SwipeKind::Pass
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Swipe {
    pub user: String,
    pub kind: SwipeKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    pub url: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Send {
    pub conversation: ConversationId,
    pub client_id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HistoryQuery {
    pub conversation: ConversationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `chat.delivered` and `chat.read`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mark {
    pub conversation: ConversationId,
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Typing {
    pub conversation: ConversationId,
    #[serde(default = "yes")]
    pub typing: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Online,
    Away,
    Offline,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetStatus {
    pub status: Status,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PresenceQuery {
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConversationRef {
    pub conversation: ConversationId,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserRef {
    pub user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub user: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

// ---- replies and push data ----

/// A stored message: the `chat.send` ack, a `chat.history` entry, the `message` push.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// `"{conversation}:{seq}"`.
    pub id: String,
    pub conversation: ConversationId,
    pub seq: i64,
    pub from: String,
    pub client_id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// Unix milliseconds, the server's clock when stored.
    pub ts: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserPresence {
    pub user: String,
    pub status: Status,
    /// Unix milliseconds; now while the user is connected.
    pub last_seen: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    Active,
    Closed,
}

/// A conversation as one of its two users sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conversation {
    pub id: ConversationId,
    pub peer: String,
    pub state: ConversationState,
    pub created_at: i64,
    pub last_seq: i64,
    pub last_message: Option<Message>,
    pub read: i64,
    pub unread: i64,
    pub peer_delivered: i64,
    pub peer_read: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<UserPresence>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SwipeReply {
    pub matched: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    pub remaining: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConversationsReply {
    pub conversations: Vec<Conversation>,
    pub total_unread: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub more: bool,
    pub read: i64,
    pub peer_delivered: i64,
    pub peer_read: i64,
}

/// A user's position in a conversation: the `chat.delivered`/`chat.read` reply and `receipt` push.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Receipt {
    pub conversation: ConversationId,
    pub user: String,
    pub delivered: i64,
    pub read: i64,
    /// The caller's unread count (replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TypingEvent {
    pub conversation: ConversationId,
    pub user: String,
    pub typing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClosedEvent {
    pub conversation: ConversationId,
    pub state: ConversationState,
}

/// Push event names on `user:{id}`.
pub mod event {
    pub const MATCH: &str = "match";
    pub const SUPER_LIKE: &str = "super_like";
    pub const MESSAGE: &str = "message";
    pub const RECEIPT: &str = "receipt";
    pub const TYPING: &str = "typing";
    pub const PRESENCE: &str = "presence";
    pub const CLOSED: &str = "closed";
}
