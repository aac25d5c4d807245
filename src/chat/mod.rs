//! The dating-app chat: swipes and matches, messages between matched users, receipts, typing,
//! status for matches, unmatch / block / report. docs/protocol.md#chat is its contract.
//!
//! A service on the hub's seams only: durable state through `ChatStore` (SQLite or PostgreSQL),
//! live events as publications on each user's channel `user:{id}` (so they cross nodes on the
//! bus and resume from history like any channel), status through the `Presence` backend, and
//! offline users handed to `OfflineEvents`. It keeps nothing that another node would need: any
//! node serves any user.

pub mod events;
pub mod protocol;
mod status;

use std::sync::Arc;

use dashmap::DashMap;
use serde_json::{json, Value};

use self::{
    events::{OfflineEvent, OfflineEvents},
    protocol::{
        event, Attachment, ClosedEvent, Conversation, ConversationId, ConversationState, ConversationsReply,
        HistoryPage, HistoryQuery, Mark, Message, Receipt, Report, Send, Status, Swipe, SwipeKind, SwipeReply,
        TypingEvent, UserPresence,
    },
};
use crate::{
    errors::{ErrorCode, HubError},
    gateway::ratelimit::RateLimiter,
    node::{Conn, Node},
    protocol::Op,
    store::{Appended, ChatStore, ConversationRow, MatchRow, NewMessage, ReceiptKind, ReportRow},
};

/// Longest user id accepted in a chat request.
const MAX_USER_LEN: usize = 255;
const MAX_CLIENT_ID_LEN: usize = 64;
const MAX_URL_LEN: usize = 2048;
const MAX_REASON_LEN: usize = 64;
const MAX_DETAILS_LEN: usize = 2000;
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 50;
const MAX_CONVERSATIONS: usize = 500;
const MAX_PRESENCE_QUERY: usize = 100;
/// Pairs of a conversation's users kept in memory (they never change once made).
const MEMBER_CACHE: usize = 100_000;

/// A user's own channel: where every chat event for them is published, and what makes a socket a
/// chat device (its subscription is what `online` means).
pub fn user_channel(user: &str) -> String {
    format!("user:{user}")
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn bad(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::BadRequest, message)
}

pub struct Chat {
    node: Arc<Node>,
    store: Arc<dyn ChatStore>,
    events: Arc<dyn OfflineEvents>,
    /// (user, conversation) → node-clock ms of the last typing indicator let through.
    typing: DashMap<(Arc<str>, ConversationId), u64>,
    /// Per-user send rate, on this node.
    send_limits: DashMap<Arc<str>, RateLimiter>,
    /// Conversation → its two users.
    members: DashMap<ConversationId, (Arc<str>, Arc<str>)>,
}

impl Chat {
    pub fn new(node: Arc<Node>, store: Arc<dyn ChatStore>, events: Arc<dyn OfflineEvents>) -> Arc<Chat> {
        Arc::new(Chat {
            node,
            store,
            events,
            typing: DashMap::new(),
            send_limits: DashMap::new(),
            members: DashMap::new(),
        })
    }

    pub fn store(&self) -> &Arc<dyn ChatStore> {
        &self.store
    }

    /// Serves one `chat.*` op for the socket's user.
    pub async fn handle(&self, conn: &Conn, op: Op) -> Result<Value, HubError> {
        let me = &*conn.user;
        match op {
            Op::ChatSwipe(s) => to_value(&self.swipe(me, s).await?),
            Op::ChatConversations {} => to_value(&self.conversations(me).await?),
            Op::ChatSend(s) => to_value(&self.send(me, s).await?),
            Op::ChatHistory(q) => to_value(&self.history(me, q).await?),
            Op::ChatDelivered(m) => to_value(&self.mark(me, m, ReceiptKind::Delivered).await?),
            Op::ChatRead(m) => to_value(&self.mark(me, m, ReceiptKind::Read).await?),
            Op::ChatTyping(t) => {
                self.typing(me, t.conversation, t.typing).await?;
                Ok(json!({}))
            }
            Op::ChatStatus(s) => Ok(json!({ "status": self.set_status(conn, s.status).await? })),
            Op::ChatPresence(q) => Ok(json!({ "presence": self.presence_of(me, q.users).await? })),
            Op::ChatUnmatch(c) => Ok(json!({ "conversation": self.unmatch(me, c.conversation).await? })),
            Op::ChatBlock(u) => {
                self.block(me, &u.user).await?;
                Ok(json!({}))
            }
            Op::ChatReport(r) => Ok(json!({ "report": self.report(me, r).await? })),
            _ => Err(HubError::new(ErrorCode::UnknownOp, "not a chat op")),
        }
    }

    // ---- swipes and matches ----

    pub async fn swipe(&self, me: &str, s: Swipe) -> Result<SwipeReply, HubError> {
        check_user(me)?;
        check_user(&s.user)?;
        if s.user == me {
            return Err(bad("you cannot swipe yourself"));
        }
        if self.store.blocked_either(me, &s.user).await? {
            return Err(HubError::new(ErrorCode::Blocked, "one of the two users blocked the other"));
        }
        let now = unix_ms();
        let c = &self.node.config.chat;
        let window_ms = c.swipe_window.as_millis() as i64;
        self.within_limit(me, now, c.swipe_limit, c.swipe_window, false).await?;
        if s.kind == SwipeKind::SuperLike {
            self.within_limit(me, now, c.super_like_limit, c.super_like_window, true).await?;
        }
        let (liked_back, previous) = self.store.swipe(me, &s.user, s.kind, now).await?;
        // Super-liking someone already super-liked tells them nothing new.
        if s.kind == SwipeKind::SuperLike && previous != Some(SwipeKind::SuperLike) {
            self.publish(&s.user, event::SUPER_LIKE, json!({ "from": me })).await;
        }
        let (used, _) = self.store.swipes_since(me, now - window_ms, false).await?;
        let remaining = u64::from(c.swipe_limit).saturating_sub(used);
        if !liked_back {
            return Ok(SwipeReply { matched: false, conversation: None, remaining });
        }
        let (m, created) = self.store.create_match(me, &s.user, now, false).await?;
        if created {
            self.announce_match(&m).await;
        }
        let conversation = if m.active { Some(self.new_conversation(&m, me).await?) } else { None };
        Ok(SwipeReply { matched: m.active, conversation, remaining })
    }

    /// Checks a swipe limit (users swiped in the window, so re-swiping one user counts once).
    async fn within_limit(
        &self,
        me: &str,
        now: i64,
        limit: u32,
        window: std::time::Duration,
        super_only: bool,
    ) -> Result<(), HubError> {
        let window_ms = window.as_millis() as i64;
        let (used, oldest) = self.store.swipes_since(me, now - window_ms, super_only).await?;
        if used >= u64::from(limit) {
            let wait = oldest.map(|o| (o + window_ms - now).max(1)).unwrap_or(window_ms);
            let what = if super_only { "super likes" } else { "swipes" };
            let message = format!("{limit} {what} per {} window", humantime::format_duration(window));
            return Err(HubError::new(ErrorCode::SwipeLimit, message).retry_after(wait as u64));
        }
        Ok(())
    }

    /// Creates (or, from the server API, reopens) the match of a pair and tells both users.
    pub async fn create_match(&self, a: &str, b: &str) -> Result<(MatchRow, bool), HubError> {
        check_user(a)?;
        check_user(b)?;
        if a == b {
            return Err(bad("a match needs two different users"));
        }
        if self.store.blocked_either(a, b).await? {
            return Err(HubError::new(ErrorCode::Blocked, "one of the two users blocked the other"));
        }
        let (m, created) = self.store.create_match(a, b, unix_ms(), true).await?;
        if created {
            self.announce_match(&m).await;
        }
        Ok((m, created))
    }

    /// Tells both users of a new (or reopened) match. The match is stored already: a failure
    /// here is logged, and the users see the match at their next sync.
    async fn announce_match(&self, m: &MatchRow) {
        for user in [&m.user_a, &m.user_b] {
            let announced = async {
                let conversation = self.new_conversation(m, user).await?;
                self.publish(user, event::MATCH, json!({ "conversation": conversation })).await;
                if self.status_kind(user).await? == Status::Offline {
                    let peer = m.peer_of(user).to_string();
                    self.events.raise(OfflineEvent::NewMatch { to: user.clone(), peer, conversation: m.id }).await;
                }
                Ok::<(), HubError>(())
            }
            .await;
            if let Err(e) = announced {
                tracing::warn!(user = %user, conversation = m.id, error = %e, "match not announced");
            }
        }
    }

    /// A match as `user` sees it, read from the store (with receipts and the last message).
    async fn new_conversation(&self, m: &MatchRow, user: &str) -> Result<Conversation, HubError> {
        match self.store.conversation(user, m.id).await? {
            Some(row) => {
                let presence = self.statuses(std::slice::from_ref(&row.peer)).await?.remove(&row.peer);
                Ok(view(row, presence))
            }
            None => Err(HubError::new(ErrorCode::NotFound, format!("no conversation {}", m.id))),
        }
    }

    pub async fn conversations(&self, me: &str) -> Result<ConversationsReply, HubError> {
        let rows = self.store.conversations(me, MAX_CONVERSATIONS).await?;
        let peers: Vec<String> = rows.iter().filter(|r| r.matched.active).map(|r| r.peer.clone()).collect();
        let mut statuses = self.statuses(&peers).await?;
        let total_unread = rows.iter().map(|r| r.unread).sum();
        let conversations = rows
            .into_iter()
            .map(|r| {
                let presence = if r.matched.active { statuses.remove(&r.peer) } else { None };
                view(r, presence)
            })
            .collect();
        Ok(ConversationsReply { conversations, total_unread })
    }

    /// The pair of a conversation that `me` belongs to.
    async fn members_of(&self, me: &str, id: ConversationId) -> Result<(Arc<str>, Arc<str>), HubError> {
        let pair = match self.members.get(&id) {
            Some(p) => p.clone(),
            None => {
                let m = self
                    .store
                    .get_match(id)
                    .await?
                    .ok_or_else(|| HubError::new(ErrorCode::NotFound, format!("no conversation {id}")))?;
                let pair: (Arc<str>, Arc<str>) = (Arc::from(m.user_a.as_str()), Arc::from(m.user_b.as_str()));
                if self.members.len() >= MEMBER_CACHE {
                    self.members.clear();
                }
                self.members.insert(id, pair.clone());
                pair
            }
        };
        if &*pair.0 != me && &*pair.1 != me {
            return Err(HubError::new(ErrorCode::NotMatched, format!("conversation {id} is not yours")));
        }
        Ok(pair)
    }

    /// Why a conversation of `me` with `peer` refuses messages.
    async fn closed_error(&self, me: &str, peer: &str, id: ConversationId) -> HubError {
        match self.store.blocked_either(me, peer).await {
            Ok(true) => HubError::new(ErrorCode::Blocked, "one of the two users blocked the other"),
            Ok(false) => HubError::new(ErrorCode::ConversationClosed, format!("conversation {id} is closed")),
            Err(e) => e,
        }
    }

    // ---- messages ----

    pub async fn send(&self, me: &str, s: Send) -> Result<Message, HubError> {
        let c = &self.node.config.chat;
        if s.client_id.is_empty() || s.client_id.len() > MAX_CLIENT_ID_LEN {
            return Err(bad(format!("client_id is 1-{MAX_CLIENT_ID_LEN} bytes")));
        }
        // The message travels as a push, which must fit in a frame with its envelope.
        let max_text = c.max_text_bytes.min(self.node.config.gateway.max_message_bytes.saturating_sub(1024).max(1));
        if s.text.trim().is_empty() || s.text.len() > max_text {
            return Err(bad(format!("text is 1-{max_text} bytes and not blank")));
        }
        if let Some(a) = &s.attachment {
            check_attachment(a)?;
        }
        {
            let now = self.node.now_ms();
            let mut limiter = self
                .send_limits
                .entry(Arc::from(me))
                .or_insert_with(|| RateLimiter::new(c.send_rate, c.send_rate * 2.0, now));
            if !limiter.allow(now) {
                let wait = limiter.retry_after_ms();
                return Err(HubError::new(ErrorCode::RateLimited, "sending too fast").retry_after(wait));
            }
        }
        let (a, b) = self.members_of(me, s.conversation).await?;
        let peer = if &*a == me { b } else { a };
        let new = NewMessage {
            conversation: s.conversation,
            from: me.to_string(),
            client_id: s.client_id,
            text: s.text,
            attachment: s.attachment,
            ts: unix_ms(),
        };
        let message = match self.store.append(&new).await? {
            Appended::Stored(m) | Appended::Duplicate(m) => m,
            Appended::Closed => return Err(self.closed_error(me, &peer, s.conversation).await),
        };
        // A retried send publishes again too: if the first publish was lost (the node died
        // after the commit), the retry delivers it; devices drop the copy by seq.
        let data = to_value(&message)?;
        self.publish(&peer, event::MESSAGE, data.clone()).await;
        self.publish(me, event::MESSAGE, data).await;
        if self.status_kind(&peer).await? == Status::Offline {
            self.events
                .raise(OfflineEvent::NewMessage {
                    to: peer.to_string(),
                    from: me.to_string(),
                    conversation: message.conversation,
                    id: message.id.clone(),
                    ts: message.ts,
                    preview: message.text.chars().take(100).collect(),
                })
                .await;
        }
        Ok(message)
    }

    pub async fn history(&self, me: &str, q: HistoryQuery) -> Result<HistoryPage, HubError> {
        let limit = q.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(bad(format!("limit is 1-{MAX_PAGE}")));
        }
        self.members_of(me, q.conversation).await?;
        let (messages, more) = self.store.messages(q.conversation, q.before, q.after, limit).await?;
        let row = self.store.conversation(me, q.conversation).await?;
        let (read, peer_delivered, peer_read) =
            row.map(|r| (r.read, r.peer_delivered, r.peer_read)).unwrap_or_default();
        Ok(HistoryPage { messages, more, read, peer_delivered, peer_read })
    }

    pub async fn mark(&self, me: &str, m: Mark, kind: ReceiptKind) -> Result<Receipt, HubError> {
        if m.seq < 1 {
            return Err(bad("seq starts at 1"));
        }
        let (a, b) = self.members_of(me, m.conversation).await?;
        let peer = if &*a == me { b } else { a };
        let last_seq = self.store.get_match(m.conversation).await?.map(|x| x.last_seq).unwrap_or(0);
        let seq = m.seq.min(last_seq);
        if seq >= 1 {
            if let Some(r) = self.store.mark(m.conversation, me, kind, seq).await? {
                let receipt = Receipt {
                    conversation: m.conversation,
                    user: me.to_string(),
                    delivered: r.delivered,
                    read: r.read,
                    unread: None,
                };
                let data = to_value(&receipt)?;
                self.publish(&peer, event::RECEIPT, data.clone()).await;
                self.publish(me, event::RECEIPT, data).await;
            }
        }
        let row = self
            .store
            .conversation(me, m.conversation)
            .await?
            .ok_or_else(|| HubError::new(ErrorCode::NotFound, format!("no conversation {}", m.conversation)))?;
        Ok(Receipt {
            conversation: m.conversation,
            user: me.to_string(),
            delivered: row.delivered,
            read: row.read,
            unread: Some(row.unread),
        })
    }

    async fn typing(&self, me: &str, id: ConversationId, typing: bool) -> Result<(), HubError> {
        let interval = self.node.config.chat.typing_interval.as_millis() as u64;
        let now = self.node.now_ms();
        let key = (Arc::<str>::from(me), id);
        if let Some(last) = self.typing.get(&key) {
            let since = now.saturating_sub(*last);
            if since < interval && typing {
                let wait = interval - since;
                return Err(HubError::new(ErrorCode::RateLimited, "typing indicators are limited").retry_after(wait));
            }
        }
        let (a, b) = self.members_of(me, id).await?;
        let peer = if &*a == me { b } else { a };
        let active = self.store.get_match(id).await?.is_some_and(|m| m.active);
        if !active {
            return Err(self.closed_error(me, &peer, id).await);
        }
        if self.typing.len() > 100_000 {
            self.typing.retain(|_, last| now.saturating_sub(*last) < interval);
        }
        self.typing.insert(key, now);
        let data = to_value(&TypingEvent { conversation: id, user: me.to_string(), typing })?;
        self.node.publish_live(&user_channel(&peer), event::TYPING, data).await
    }

    async fn presence_of(&self, me: &str, users: Vec<String>) -> Result<Vec<UserPresence>, HubError> {
        if users.len() > MAX_PRESENCE_QUERY {
            return Err(bad(format!("at most {MAX_PRESENCE_QUERY} users")));
        }
        let peers = self.store.active_peers(me).await?;
        let mut seen = std::collections::HashSet::new();
        let wanted: Vec<String> = users.into_iter().filter(|u| peers.contains(u) && seen.insert(u.clone())).collect();
        let mut statuses = self.statuses(&wanted).await?;
        Ok(wanted.iter().filter_map(|u| statuses.remove(u)).collect())
    }

    // ---- unmatch, block, report ----

    pub async fn unmatch(&self, me: &str, id: ConversationId) -> Result<Conversation, HubError> {
        self.members_of(me, id).await?;
        if let Some(m) = self.store.close_match(id, unix_ms()).await? {
            self.announce_closed(&m).await;
        }
        let row = self.store.conversation(me, id).await?;
        row.map(|r| view(r, None)).ok_or_else(|| HubError::new(ErrorCode::NotFound, format!("no conversation {id}")))
    }

    /// Closes a conversation from the server API.
    pub async fn close(&self, id: ConversationId) -> Result<MatchRow, HubError> {
        let closed = self.store.close_match(id, unix_ms()).await?;
        match closed {
            Some(m) => {
                self.announce_closed(&m).await;
                Ok(m)
            }
            None => self
                .store
                .get_match(id)
                .await?
                .ok_or_else(|| HubError::new(ErrorCode::NotFound, format!("no match {id}"))),
        }
    }

    async fn announce_closed(&self, m: &MatchRow) {
        let data = serde_json::to_value(ClosedEvent { conversation: m.id, state: ConversationState::Closed })
            .expect("closed event serializes");
        for user in [&m.user_a, &m.user_b] {
            self.publish(user, event::CLOSED, data.clone()).await;
        }
    }

    pub async fn block(&self, me: &str, user: &str) -> Result<(), HubError> {
        check_user(user)?;
        if user == me {
            return Err(bad("you cannot block yourself"));
        }
        if let Some(m) = self.store.block(me, user, unix_ms()).await? {
            self.announce_closed(&m).await;
        }
        Ok(())
    }

    pub async fn report(&self, me: &str, r: Report) -> Result<i64, HubError> {
        check_user(&r.user)?;
        if r.user == me {
            return Err(bad("you cannot report yourself"));
        }
        if r.reason.is_empty() || r.reason.len() > MAX_REASON_LEN {
            return Err(bad(format!("reason is 1-{MAX_REASON_LEN} bytes")));
        }
        if r.details.as_ref().is_some_and(|d| d.len() > MAX_DETAILS_LEN) {
            return Err(bad(format!("details are at most {MAX_DETAILS_LEN} bytes")));
        }
        if let Some(id) = r.conversation {
            self.members_of(me, id).await?;
        }
        let row = ReportRow {
            id: 0,
            reporter: me.to_string(),
            reported: r.user,
            reason: r.reason,
            conversation: r.conversation,
            details: r.details,
            created_at: unix_ms(),
        };
        let id = self.store.report(&row).await?;
        metrics::counter!("hub_chat_reports_total").increment(1);
        Ok(id)
    }

    /// Publishes a chat event on `user:{user}` (history kept, so a resume brings it back). A
    /// failure is logged: the state is in the store, and the next sync shows it.
    async fn publish(&self, user: &str, event: &str, data: Value) {
        let channel = user_channel(user);
        if let Err(e) = self.node.publish(&channel, Some(event.to_string()), data, None).await {
            tracing::warn!(channel, event, error = %e, "chat event not published");
        }
    }
}

fn view(r: ConversationRow, presence: Option<UserPresence>) -> Conversation {
    let state = if r.matched.active { ConversationState::Active } else { ConversationState::Closed };
    Conversation {
        id: r.matched.id,
        peer: r.peer,
        state,
        created_at: r.matched.created_at,
        last_seq: r.matched.last_seq,
        last_message: r.last_message,
        read: r.read,
        unread: r.unread,
        peer_delivered: r.peer_delivered,
        peer_read: r.peer_read,
        presence: if r.matched.active { presence } else { None },
    }
}

fn check_user(user: &str) -> Result<(), HubError> {
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(|c| c.is_control()) {
        return Err(bad(format!("user ids are 1-{MAX_USER_LEN} bytes without control characters")));
    }
    Ok(())
}

fn check_attachment(a: &Attachment) -> Result<(), HubError> {
    let url_ok = (a.url.starts_with("https://") || a.url.starts_with("http://"))
        && a.url.len() <= MAX_URL_LEN
        && !a.url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !url_ok {
        return Err(bad(format!("attachment.url is an http(s) URL of at most {MAX_URL_LEN} bytes")));
    }
    let mime_ok = a.kind.len() <= 100
        && a.kind.split_once('/').is_some_and(|(t, s)| {
            let token =
                |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c));
            token(t) && token(s)
        });
    if !mime_ok {
        return Err(bad("attachment.type is a MIME type such as image/jpeg"));
    }
    Ok(())
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, HubError> {
    serde_json::to_value(v).map_err(|e| HubError::new(ErrorCode::Internal, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_checked() {
        let ok = |url: &str, kind: &str| check_attachment(&Attachment { url: url.into(), kind: kind.into() }).is_ok();
        assert!(ok("https://cdn.example/p.jpg", "image/jpeg"));
        assert!(ok("http://cdn.example/v", "video/mp4"));
        assert!(!ok("ftp://cdn.example/p.jpg", "image/jpeg"));
        assert!(!ok("javascript:alert(1)", "image/jpeg"));
        assert!(!ok("https://cdn.example/a b", "image/jpeg"));
        assert!(!ok("https://cdn.example/p.jpg", "jpeg"));
        assert!(!ok("https://cdn.example/p.jpg", "image/"));
        assert!(!ok(&format!("https://x/{}", "a".repeat(MAX_URL_LEN)), "image/png"));
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("").is_err());
        assert!(check_user("a\nb").is_err());
        assert!(check_user(&"a".repeat(MAX_USER_LEN + 1)).is_err());
    }
}
