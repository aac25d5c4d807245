//! The chat's durable state: swipes, matches, messages, receipts, blocks, reports, last seen.
//!
//! Contract (tested on SQLite and PostgreSQL by tests/store.rs):
//! - `create_match` makes at most one match per pair of users, however many callers race on any
//!   number of nodes (the pair is unique in the table; the loser sees `created == false`).
//! - `append` gives each stored message the next `seq` of its conversation inside the same
//!   transaction that bumps `last_seq` under the match row's lock, so seqs are 1, 2, 3… with no
//!   gap and commit in seq order; a second append with the same (conversation, sender,
//!   client_id) stores nothing and returns the first message. Appends are batched (one
//!   transaction for what queued up meanwhile); the call returns once its batch is committed.
//! - `mark` only moves a receipt forward.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{any::AnyRow, AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::{unavailable, SqlStore};
use crate::{
    chat::protocol::{Attachment, ConversationId, Message, SwipeKind},
    errors::HubError,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRow {
    pub id: ConversationId,
    pub user_a: String,
    pub user_b: String,
    pub active: bool,
    pub created_at: i64,
    pub last_seq: i64,
}

impl MatchRow {
    pub fn has(&self, user: &str) -> bool {
        self.user_a == user || self.user_b == user
    }

    /// The other user of the pair (`user` must be one of them).
    pub fn peer_of(&self, user: &str) -> &str {
        if self.user_a == user {
            &self.user_b
        } else {
            &self.user_a
        }
    }
}

/// One user's side of a conversation, with what a conversation list shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRow {
    pub matched: MatchRow,
    pub peer: String,
    pub read: i64,
    pub delivered: i64,
    pub peer_read: i64,
    pub peer_delivered: i64,
    pub unread: i64,
    pub last_message: Option<Message>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipts {
    pub delivered: i64,
    pub read: i64,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation: ConversationId,
    pub from: String,
    pub client_id: String,
    pub text: String,
    pub attachment: Option<Attachment>,
    pub ts: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    Stored(Message),
    /// Stored before under the same client id: the first copy.
    Duplicate(Message),
    /// The conversation is closed (or does not exist): nothing stored.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReportRow {
    pub id: i64,
    pub reporter: String,
    pub reported: String,
    pub reason: String,
    pub conversation: Option<ConversationId>,
    pub details: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

#[async_trait]
pub trait ChatStore: Send + Sync {
    /// Records `from`'s swipe on `to` (replacing an earlier one). Returns whether `to` likes
    /// `from` (like or super like), read after the swipe is committed: of two simultaneous mutual
    /// likes, at least one sees the other.
    /// Also returns the kind of the swipe it replaced, if any.
    async fn swipe(
        &self,
        from: &str,
        to: &str,
        kind: SwipeKind,
        now: i64,
    ) -> Result<(bool, Option<SwipeKind>), HubError>;
    /// Swipes by `user` made after `since` (only super likes when `super_only`): how many, and
    /// when the oldest of them was made.
    async fn swipes_since(&self, user: &str, since: i64, super_only: bool) -> Result<(u64, Option<i64>), HubError>;
    /// The match of the pair, created if there is none (`created`); a closed one is reopened
    /// only when `reopen`.
    async fn create_match(&self, a: &str, b: &str, now: i64, reopen: bool) -> Result<(MatchRow, bool), HubError>;
    async fn get_match(&self, id: ConversationId) -> Result<Option<MatchRow>, HubError>;
    /// Closes an active match; `None` when it was not active.
    async fn close_match(&self, id: ConversationId, now: i64) -> Result<Option<MatchRow>, HubError>;
    /// Every conversation of `user`, newest activity first.
    async fn conversations(&self, user: &str, limit: usize) -> Result<Vec<ConversationRow>, HubError>;
    /// One conversation as `user` sees it.
    async fn conversation(&self, user: &str, id: ConversationId) -> Result<Option<ConversationRow>, HubError>;
    async fn append(&self, message: &NewMessage) -> Result<Appended, HubError>;
    /// Messages with seq in (after, before), `limit` of them nearest to `after` when it is given,
    /// else nearest to `before`; ascending; and whether more lie beyond in that direction.
    async fn messages(
        &self,
        conversation: ConversationId,
        before: Option<i64>,
        after: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), HubError>;
    /// Moves `user`'s receipt forward to `seq`; `None` when it did not move.
    async fn mark(
        &self,
        conversation: ConversationId,
        user: &str,
        kind: ReceiptKind,
        seq: i64,
    ) -> Result<Option<Receipts>, HubError>;
    /// Records the block and closes the pair's match; returns the match it closed.
    async fn block(&self, blocker: &str, blocked: &str, now: i64) -> Result<Option<MatchRow>, HubError>;
    /// Whether either user blocked the other.
    async fn blocked_either(&self, a: &str, b: &str) -> Result<bool, HubError>;
    async fn report(&self, report: &ReportRow) -> Result<i64, HubError>;
    /// Reports, newest first, with ids below `before` when given.
    async fn reports(&self, before: Option<i64>, limit: usize) -> Result<Vec<ReportRow>, HubError>;
    /// Users with an active match with `user` (whom its presence concerns).
    async fn active_peers(&self, user: &str) -> Result<Vec<String>, HubError>;
    async fn set_last_seen(&self, user: &str, at: i64) -> Result<(), HubError>;
    async fn last_seen(&self, users: &[String]) -> Result<HashMap<String, i64>, HubError>;
}

fn pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

const MATCH_COLUMNS: &str = "id, user_a, user_b, state, created_at, last_seq";
const MESSAGE_COLUMNS: &str = "match_id, seq, sender, client_id, body, attachment_url, attachment_type, created_at";

fn match_row(r: &AnyRow) -> Result<MatchRow, sqlx::Error> {
    Ok(MatchRow {
        id: r.try_get("id")?,
        user_a: r.try_get("user_a")?,
        user_b: r.try_get("user_b")?,
        active: r.try_get::<String, _>("state")? == "active",
        created_at: r.try_get("created_at")?,
        last_seq: r.try_get("last_seq")?,
    })
}

fn message_row(r: &AnyRow) -> Result<Message, sqlx::Error> {
    let conversation: i64 = r.try_get("match_id")?;
    let seq: i64 = r.try_get("seq")?;
    let url: Option<String> = r.try_get("attachment_url")?;
    let kind: Option<String> = r.try_get("attachment_type")?;
    Ok(Message {
        id: format!("{conversation}:{seq}"),
        conversation,
        seq,
        from: r.try_get("sender")?,
        client_id: r.try_get("client_id")?,
        text: r.try_get("body")?,
        attachment: url.zip(kind).map(|(url, kind)| Attachment { url, kind }),
        ts: r.try_get("created_at")?,
    })
}

/// Appends go through writer tasks that commit whatever has queued up in one transaction: at a
/// few thousand messages a second that is one commit per batch instead of one per message, and
/// no lock contention between the store's connections (SQLite allows one writer at a time).
/// A conversation always goes to the same writer, so its appends are committed in arrival order.
pub(super) struct Appenders {
    writers: Vec<mpsc::Sender<AppendJob>>,
}

type AppendJob = (NewMessage, oneshot::Sender<Result<Appended, HubError>>);

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 256;

impl Appenders {
    pub(super) fn start(pool: AnyPool, sqlite: bool, writers: usize) -> Appenders {
        let writers = (0..writers)
            .map(|_| {
                let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(run_appender(pool.clone(), sqlite, rx));
                tx
            })
            .collect();
        Appenders { writers }
    }

    async fn append(&self, m: NewMessage) -> Result<Appended, HubError> {
        let writer = &self.writers[m.conversation.unsigned_abs() as usize % self.writers.len()];
        let (done, result) = oneshot::channel();
        let gone = || HubError::new(crate::errors::ErrorCode::Unavailable, "store writer stopped");
        writer.send((m, done)).await.map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

async fn run_appender(pool: AnyPool, sqlite: bool, mut jobs: mpsc::Receiver<AppendJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match append_batch(&pool, sqlite, &batch).await {
            Ok(outcomes) => {
                for ((_, done), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = done.send(Ok(outcome));
                }
            }
            Err(e) => {
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn append_batch(pool: &AnyPool, sqlite: bool, batch: &[AppendJob]) -> Result<Vec<Appended>, HubError> {
    // IMMEDIATE takes SQLite's write lock up front (waiting for it), instead of failing when a
    // read turns into a write while another connection writes.
    let mut tx =
        if sqlite { pool.begin_with("BEGIN IMMEDIATE").await } else { pool.begin().await }.map_err(unavailable)?;
    // Rows are locked in ascending conversation order on every node, so two nodes' batches
    // cannot deadlock; the sort is stable, so each conversation keeps its arrival order.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| batch[i].0.conversation);
    let mut outcomes = vec![Appended::Closed; batch.len()];
    for i in order {
        outcomes[i] = append_one(&mut tx, &batch[i].0).await?;
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(outcomes)
}

async fn append_one(tx: &mut sqlx::Transaction<'static, sqlx::Any>, m: &NewMessage) -> Result<Appended, HubError> {
    if let Some(first) = message_by_client_id(tx, m).await? {
        return Ok(Appended::Duplicate(first));
    }
    // Bumping last_seq locks the match row (PostgreSQL) until commit: appends to one
    // conversation are serialized, so seq order is commit order.
    let seq: Option<i64> = sqlx::query_scalar(
        "UPDATE chat_matches SET last_seq = last_seq + 1, last_at = $2 WHERE id = $1 AND state = 'active'
         RETURNING last_seq",
    )
    .bind(m.conversation)
    .bind(m.ts)
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)?;
    let Some(seq) = seq else {
        return Ok(Appended::Closed);
    };
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO chat_messages (match_id, seq, sender, client_id, body, attachment_url, attachment_type, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (match_id, sender, client_id) DO NOTHING RETURNING seq",
    )
    .bind(m.conversation)
    .bind(seq)
    .bind(&m.from)
    .bind(&m.client_id)
    .bind(&m.text)
    .bind(m.attachment.as_ref().map(|a| a.url.clone()))
    .bind(m.attachment.as_ref().map(|a| a.kind.clone()))
    .bind(m.ts)
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)?;
    if inserted.is_none() {
        // The same send, retried on another node, committed first. We still hold the row lock,
        // so nobody took a seq after ours: give it back.
        sqlx::query("UPDATE chat_matches SET last_seq = last_seq - 1 WHERE id = $1")
            .bind(m.conversation)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
        let first = message_by_client_id(tx, m).await?;
        return first.map(Appended::Duplicate).ok_or_else(|| unavailable(sqlx::Error::RowNotFound));
    }
    Ok(Appended::Stored(Message {
        id: format!("{}:{seq}", m.conversation),
        conversation: m.conversation,
        seq,
        from: m.from.clone(),
        client_id: m.client_id.clone(),
        text: m.text.clone(),
        attachment: m.attachment.clone(),
        ts: m.ts,
    }))
}

async fn message_by_client_id(conn: &mut sqlx::AnyConnection, m: &NewMessage) -> Result<Option<Message>, HubError> {
    let row = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE match_id = $1 AND sender = $2 AND client_id = $3"
    ))
    .bind(m.conversation)
    .bind(&m.from)
    .bind(&m.client_id)
    .fetch_optional(conn)
    .await
    .map_err(unavailable)?;
    row.as_ref().map(message_row).transpose().map_err(unavailable)
}

impl SqlStore {
    async fn match_of_pair(&self, a: &str, b: &str) -> Result<Option<MatchRow>, HubError> {
        let (lo, hi) = pair(a, b);
        let row = sqlx::query(&format!("SELECT {MATCH_COLUMNS} FROM chat_matches WHERE user_a = $1 AND user_b = $2"))
            .bind(lo)
            .bind(hi)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(match_row).transpose().map_err(unavailable)
    }

    async fn conversation_rows(
        &self,
        user: &str,
        only: Option<ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationRow>, HubError> {
        let filter = if only.is_some() { "AND me.match_id = $3" } else { "" };
        let sql = format!(
            "SELECT m.id, m.user_a, m.user_b, m.state, m.created_at, m.last_seq, me.peer_id,
                    me.read_seq, me.delivered_seq, p.read_seq AS peer_read, p.delivered_seq AS peer_delivered,
                    (SELECT COUNT(*) FROM chat_messages x
                      WHERE x.match_id = m.id AND x.seq > me.read_seq AND x.sender <> me.user_id) AS unread,
                    lm.match_id, lm.seq, lm.sender, lm.client_id, lm.body, lm.attachment_url,
                    lm.attachment_type, lm.created_at AS lm_created_at
               FROM chat_members me
               JOIN chat_matches m ON m.id = me.match_id
               JOIN chat_members p ON p.user_id = me.peer_id AND p.match_id = me.match_id
               LEFT JOIN chat_messages lm ON lm.match_id = m.id AND lm.seq = m.last_seq
              WHERE me.user_id = $1 {filter}
              ORDER BY m.last_at DESC, m.id DESC
              LIMIT $2"
        );
        let mut query = sqlx::query(&sql).bind(user).bind(limit as i64);
        if let Some(id) = only {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let matched = match_row(r)?;
                let last_message = match r.try_get::<Option<i64>, _>("seq")? {
                    Some(seq) => {
                        let url: Option<String> = r.try_get("attachment_url")?;
                        let kind: Option<String> = r.try_get("attachment_type")?;
                        Some(Message {
                            id: format!("{}:{seq}", matched.id),
                            conversation: matched.id,
                            seq,
                            from: r.try_get("sender")?,
                            client_id: r.try_get("client_id")?,
                            text: r.try_get("body")?,
                            attachment: url.zip(kind).map(|(url, kind)| Attachment { url, kind }),
                            ts: r.try_get("lm_created_at")?,
                        })
                    }
                    None => None,
                };
                Ok(ConversationRow {
                    peer: r.try_get("peer_id")?,
                    read: r.try_get("read_seq")?,
                    delivered: r.try_get("delivered_seq")?,
                    peer_read: r.try_get("peer_read")?,
                    peer_delivered: r.try_get("peer_delivered")?,
                    unread: r.try_get("unread")?,
                    last_message,
                    matched,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(unavailable)
    }
}

#[async_trait]
impl ChatStore for SqlStore {
    async fn swipe(
        &self,
        from: &str,
        to: &str,
        kind: SwipeKind,
        now: i64,
    ) -> Result<(bool, Option<SwipeKind>), HubError> {
        let previous: Option<String> =
            sqlx::query_scalar("SELECT kind FROM chat_likes WHERE from_user = $1 AND to_user = $2")
                .bind(from)
                .bind(to)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        let previous = previous.and_then(|k| match k.as_str() {
            "like" => Some(SwipeKind::Like),
            "pass" => Some(SwipeKind::Pass),
            "super_like" => Some(SwipeKind::SuperLike),
            _ => None,
        });
        sqlx::query(
            "INSERT INTO chat_likes (from_user, to_user, kind, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (from_user, to_user) DO UPDATE SET kind = excluded.kind, created_at = excluded.created_at",
        )
        .bind(from)
        .bind(to)
        .bind(kind.as_str())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        if !kind.likes() {
            return Ok((false, previous));
        }
        let liked: Option<String> =
            sqlx::query_scalar("SELECT kind FROM chat_likes WHERE from_user = $1 AND to_user = $2 AND kind <> 'pass'")
                .bind(to)
                .bind(from)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok((liked.is_some(), previous))
    }

    async fn swipes_since(&self, user: &str, since: i64, super_only: bool) -> Result<(u64, Option<i64>), HubError> {
        let filter = if super_only { "AND kind = 'super_like'" } else { "" };
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM chat_likes
              WHERE from_user = $1 AND created_at > $2 {filter}"
        ))
        .bind(user)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let n: i64 = row.try_get("n").map_err(unavailable)?;
        let oldest: Option<i64> = row.try_get("oldest").map_err(unavailable)?;
        Ok((n as u64, oldest))
    }

    async fn create_match(&self, a: &str, b: &str, now: i64, reopen: bool) -> Result<(MatchRow, bool), HubError> {
        let (lo, hi) = pair(a, b);
        if let Some(existing) = self.match_of_pair(lo, hi).await? {
            if existing.active || !reopen {
                return Ok((existing, false));
            }
            sqlx::query("UPDATE chat_matches SET state = 'active', closed_at = NULL WHERE id = $1")
                .bind(existing.id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            return Ok((MatchRow { active: true, ..existing }, true));
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let id: i64 =
            sqlx::query_scalar("UPDATE hub_counters SET value = value + 1 WHERE name = 'match' RETURNING value")
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO chat_matches (id, user_a, user_b, state, created_at, last_seq, last_at)
             VALUES ($1, $2, $3, 'active', $4, 0, $4) ON CONFLICT (user_a, user_b) DO NOTHING RETURNING id",
        )
        .bind(id)
        .bind(lo)
        .bind(hi)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if inserted.is_none() {
            // Another caller made it between our read and our insert.
            drop(tx);
            let existing = self.match_of_pair(lo, hi).await?;
            return existing.map(|m| (m, false)).ok_or_else(|| unavailable(sqlx::Error::RowNotFound));
        }
        for (user, peer) in [(lo, hi), (hi, lo)] {
            sqlx::query(
                "INSERT INTO chat_members (user_id, match_id, peer_id, delivered_seq, read_seq) VALUES ($1, $2, $3, 0, 0)",
            )
            .bind(user)
            .bind(id)
            .bind(peer)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        let row = MatchRow { id, user_a: lo.into(), user_b: hi.into(), active: true, created_at: now, last_seq: 0 };
        Ok((row, true))
    }

    async fn get_match(&self, id: ConversationId) -> Result<Option<MatchRow>, HubError> {
        let row = sqlx::query(&format!("SELECT {MATCH_COLUMNS} FROM chat_matches WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(match_row).transpose().map_err(unavailable)
    }

    async fn close_match(&self, id: ConversationId, now: i64) -> Result<Option<MatchRow>, HubError> {
        let row = sqlx::query(&format!(
            "UPDATE chat_matches SET state = 'closed', closed_at = $2 WHERE id = $1 AND state = 'active'
             RETURNING {MATCH_COLUMNS}"
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(match_row).transpose().map_err(unavailable)
    }

    async fn conversations(&self, user: &str, limit: usize) -> Result<Vec<ConversationRow>, HubError> {
        self.conversation_rows(user, None, limit).await
    }

    async fn conversation(&self, user: &str, id: ConversationId) -> Result<Option<ConversationRow>, HubError> {
        Ok(self.conversation_rows(user, Some(id), 1).await?.pop())
    }

    async fn append(&self, m: &NewMessage) -> Result<Appended, HubError> {
        self.appenders.append(m.clone()).await
    }

    async fn messages(
        &self,
        conversation: ConversationId,
        before: Option<i64>,
        after: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), HubError> {
        let (order, bound) = match after {
            Some(_) => ("ASC", "seq > $2 AND seq < $3"),
            None => ("DESC", "seq > $2 AND seq < $3"),
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE match_id = $1 AND {bound} ORDER BY seq {order} LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(conversation)
            .bind(after.unwrap_or(0))
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit as i64 + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut messages = rows.iter().map(message_row).collect::<Result<Vec<_>, _>>().map_err(unavailable)?;
        let more = messages.len() > limit;
        messages.truncate(limit);
        if after.is_none() {
            messages.reverse();
        }
        Ok((messages, more))
    }

    async fn mark(
        &self,
        conversation: ConversationId,
        user: &str,
        kind: ReceiptKind,
        seq: i64,
    ) -> Result<Option<Receipts>, HubError> {
        let sql = match kind {
            ReceiptKind::Read => {
                "UPDATE chat_members SET read_seq = $3,
                        delivered_seq = CASE WHEN delivered_seq < $3 THEN $3 ELSE delivered_seq END
                  WHERE user_id = $1 AND match_id = $2 AND read_seq < $3
                  RETURNING delivered_seq, read_seq"
            }
            ReceiptKind::Delivered => {
                "UPDATE chat_members SET delivered_seq = $3
                  WHERE user_id = $1 AND match_id = $2 AND delivered_seq < $3
                  RETURNING delivered_seq, read_seq"
            }
        };
        let row = sqlx::query(sql)
            .bind(user)
            .bind(conversation)
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| Ok(Receipts { delivered: r.try_get("delivered_seq")?, read: r.try_get("read_seq")? }))
            .transpose()
            .map_err(unavailable)
    }

    async fn block(&self, blocker: &str, blocked: &str, now: i64) -> Result<Option<MatchRow>, HubError> {
        sqlx::query(
            "INSERT INTO chat_blocks (blocker, blocked, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (blocker, blocked) DO NOTHING",
        )
        .bind(blocker)
        .bind(blocked)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        match self.match_of_pair(blocker, blocked).await? {
            Some(m) => self.close_match(m.id, now).await,
            None => Ok(None),
        }
    }

    async fn blocked_either(&self, a: &str, b: &str) -> Result<bool, HubError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM chat_blocks WHERE (blocker = $1 AND blocked = $2) OR (blocker = $2 AND blocked = $1)",
        )
        .bind(a)
        .bind(b)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn report(&self, r: &ReportRow) -> Result<i64, HubError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let id: i64 =
            sqlx::query_scalar("UPDATE hub_counters SET value = value + 1 WHERE name = 'report' RETURNING value")
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO chat_reports (id, reporter, reported, reason, conversation, details, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(&r.reporter)
        .bind(&r.reported)
        .bind(&r.reason)
        .bind(r.conversation)
        .bind(r.details.clone())
        .bind(r.created_at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(id)
    }

    async fn reports(&self, before: Option<i64>, limit: usize) -> Result<Vec<ReportRow>, HubError> {
        let rows = sqlx::query(
            "SELECT id, reporter, reported, reason, conversation, details, created_at FROM chat_reports
              WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(ReportRow {
                    id: r.try_get("id")?,
                    reporter: r.try_get("reporter")?,
                    reported: r.try_get("reported")?,
                    reason: r.try_get("reason")?,
                    conversation: r.try_get("conversation")?,
                    details: r.try_get("details")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(unavailable)
    }

    async fn active_peers(&self, user: &str) -> Result<Vec<String>, HubError> {
        sqlx::query_scalar(
            "SELECT me.peer_id FROM chat_members me JOIN chat_matches m ON m.id = me.match_id
              WHERE me.user_id = $1 AND m.state = 'active'",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn set_last_seen(&self, user: &str, at: i64) -> Result<(), HubError> {
        sqlx::query(
            "INSERT INTO chat_users (user_id, last_seen) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(user)
        .bind(at)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn last_seen(&self, users: &[String]) -> Result<HashMap<String, i64>, HubError> {
        let mut seen = HashMap::new();
        // Small batches keep the statement portable (no array binds on SQLite).
        for chunk in users.chunks(50) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT user_id, last_seen FROM chat_users WHERE user_id IN ({})", marks.join(", "));
            let mut query = sqlx::query(&sql);
            for u in chunk {
                query = query.bind(u);
            }
            for r in query.fetch_all(&self.pool).await.map_err(unavailable)? {
                seen.insert(r.try_get("user_id").map_err(unavailable)?, r.try_get("last_seen").map_err(unavailable)?);
            }
        }
        Ok(seen)
    }
}
