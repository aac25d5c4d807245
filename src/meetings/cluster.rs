//! Rooms in a cluster: a room lives on one node (its *home*, the node where it was created or first
//! joined), and the signaling of sockets on other nodes reaches it over the bus.
//!
//! - **Home directory** ([`Homes`]): in Redis modes, `{prefix}:room-home:{room}` names the node,
//!   claimed by get-or-set in one script, with an expiry the home refreshes while the room lives
//!   ([`HOME_TTL`]). A node that is lost loses its rooms; their ids are freed by the nodes that
//!   notice (or when the key lapses), and their options (`room-spec`) let them start again
//!   elsewhere. A single node is every room's home.
//! - **Requests** ([`Rpc::Request`]): the socket's node checks the token's grant, then sends the
//!   op to the home as a `BusMessage::Node`; the home runs it as it would a local one, with a
//!   [`Member::Remote`] for the socket, and answers with [`Rpc::Reply`]. The caller waits at most
//!   [`REQUEST_TIMEOUT`] (`unavailable` after).
//! - **Back to the socket**: room events are publications on `room:{id}`, which reach the socket's
//!   node as any channel's do (the socket is subscribed there by its own node). What is for the
//!   socket alone — SDP answers and offers, candidates, media errors — goes as [`Rpc::Push`], and a
//!   departure as [`Rpc::Detach`] (the socket's node unsubscribes it from `room:{id}`).
//! - **Order**: each node sends its node messages through one queue ([`Outbound`]) and handles
//!   those it receives in one task, so two nodes see each other's messages in order.
//! - **Media** is the home's: the SDP a remote participant gets is made there and carries the home's
//!   candidates, so its media goes straight to the home's UDP port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use signaling::{ClientMsg, Role, RoomId, RoomOptions};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::RedisLink;
use crate::errors::{ErrorCode, HubError};
use crate::node::{Conn, Node};
use crate::protocol::ServerMsg;

/// How long a room's home key lives without a refresh.
pub const HOME_TTL: Duration = Duration::from_secs(30);
/// How long a socket's node waits for the home's reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a room's saved options outlive their last refresh: the time its participants have
/// to join again on another node and find the room as it was.
pub const SPEC_TTL: Duration = Duration::from_secs(600);
/// KEYS[1]'s value; when it has none, sets it to ARGV[1] with expiry ARGV[2] ms and returns that.
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local v = redis.call('GET', KEYS[1]) if v then return v end \
         redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return ARGV[1]",
    )
});
/// Deletes KEYS[1] when it holds ARGV[1]; 1 when it did.
static COMPARE_AND_DELETE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});
/// Sets KEYS[1] to ARGV[1] with expiry ARGV[2] ms when it holds ARGV[1] or nothing. Sent as a
/// plain `EVAL` in the refresh pipeline: after a Redis restart (when the refresh matters most)
/// no script is loaded for an `EVALSHA`.
const KEEP_HOME: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == false or v == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end \
    return 0";
/// Node messages waiting to be sent; more are dropped (and logged).
const OUTBOUND_CAPACITY: usize = 4096;

/// What meeting nodes tell each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Rpc {
    /// A socket's meeting op, for the room's home. `grant` is the token's role for the room.
    /// `closing`: the socket closed (a `Leave` that applies only if the user is still in the room
    /// from that socket; no reply).
    Request { id: u64, conn: u64, user: String, grant: Option<Role>, closing: bool, msg: ClientMsg },
    /// A server-API call on a room held by the addressee: `input` (`by: None`), or only a look
    /// at it; the reply is the room's snapshot afterwards.
    Api { id: u64, room: RoomId, input: Option<signaling::Input> },
    /// The home's answer: the reply data, or an error code and message.
    Reply { id: u64, ok: Option<Value>, code: Option<String>, message: Option<String> },
    /// A message for one socket alone.
    Push { conn: u64, msg: ServerMsg },
    /// The socket's user left the room: unsubscribe it from `room:{id}`.
    Detach { conn: u64, room: RoomId },
}

/// Where a participant's socket is.
#[derive(Clone)]
pub enum Member {
    Local(Arc<Conn>),
    Remote { node: String, conn: u64, outbound: Outbound },
}

impl Member {
    pub fn push(&self, msg: ServerMsg) {
        match self {
            Member::Local(conn) => {
                conn.push(&msg);
            }
            Member::Remote { node, conn, outbound } => outbound.send(node, Rpc::Push { conn: *conn, msg }),
        }
    }

    /// This node's socket `conn`.
    pub fn is_local(&self, conn: u64) -> bool {
        matches!(self, Member::Local(c) if c.id == conn)
    }

    /// Whether both are the same socket.
    pub fn same_socket(&self, other: &Member) -> bool {
        match other {
            Member::Local(c) => self.is_local(c.id),
            Member::Remote { node, conn, .. } => self.is_remote(node, *conn),
        }
    }

    /// Socket `conn` of node `node`.
    pub fn is_remote(&self, node: &str, conn: u64) -> bool {
        matches!(self, Member::Remote { node: n, conn: c, .. } if n == node && *c == conn)
    }
}

/// This node's queue of node messages, sent in order by one task.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::Sender<(String, Rpc)>,
}

impl Outbound {
    pub fn start(node: &Arc<Node>) -> Outbound {
        let (tx, mut rx) = mpsc::channel::<(String, Rpc)>(OUTBOUND_CAPACITY);
        let weak = Arc::downgrade(node);
        tokio::spawn(async move {
            while let Some((to, rpc)) = rx.recv().await {
                let Some(node) = weak.upgrade() else { return };
                let payload = serde_json::to_value(&rpc).unwrap_or_default();
                if let Err(e) = node.send_to_node(&to, payload).await {
                    tracing::warn!(to, error = %e, "meeting message to another node lost");
                }
            }
        });
        Outbound { tx }
    }

    pub fn send(&self, to: &str, rpc: Rpc) {
        if self.tx.try_send((to.to_string(), rpc)).is_err() {
            metrics::counter!("hub_meeting_node_messages_dropped_total").increment(1);
            tracing::warn!(to, "meeting message queue full: message dropped");
        }
    }
}

/// Requests waiting for their reply, with the node each went to.
#[derive(Default)]
pub struct Pending {
    next: AtomicU64,
    waiting: DashMap<u64, (String, oneshot::Sender<Result<Value, HubError>>)>,
}

impl Pending {
    /// A request to node `to`: its id, and where its outcome arrives.
    pub fn open(&self, to: &str) -> (u64, oneshot::Receiver<Result<Value, HubError>>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(id, (to.to_string(), tx));
        (id, rx)
    }

    pub fn close(&self, id: u64, result: Result<Value, HubError>) {
        if let Some((_, (_, tx))) = self.waiting.remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// Node `dead` was lost: its requests fail now instead of at their timeout.
    pub fn fail_node(&self, dead: &str) {
        let ids: Vec<u64> = self.waiting.iter().filter(|w| w.value().0 == dead).map(|w| *w.key()).collect();
        for id in ids {
            self.close(id, Err(lost()));
        }
    }

    pub async fn wait(&self, id: u64, rx: oneshot::Receiver<Result<Value, HubError>>) -> Result<Value, HubError> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, rx).await;
        self.waiting.remove(&id);
        match result {
            Ok(Ok(result)) => result,
            _ => Err(HubError::new(ErrorCode::Unavailable, "the room's node did not answer")),
        }
    }
}

/// The error of a request whose room's node was lost.
fn lost() -> HubError {
    HubError::new(ErrorCode::Unavailable, "the room's node was lost; join again")
}

/// The reply message for a request's outcome.
pub fn reply(id: u64, result: Result<Value, HubError>) -> Rpc {
    match result {
        Ok(data) => Rpc::Reply { id, ok: Some(data), code: None, message: None },
        Err(e) => Rpc::Reply { id, ok: None, code: Some(e.code.as_str().to_string()), message: Some(e.message) },
    }
}

/// The outcome a reply message carries.
pub fn outcome(ok: Option<Value>, code: Option<String>, message: Option<String>) -> Result<Value, HubError> {
    match ok {
        Some(data) => Ok(data),
        None => {
            let code = code.as_deref().and_then(ErrorCode::parse).unwrap_or(ErrorCode::Internal);
            Err(HubError::new(code, message.unwrap_or_default()))
        }
    }
}

/// Which node holds each room.
pub enum Homes {
    /// One node: every room is here.
    Single,
    Redis(Arc<RedisLink>),
}

impl Homes {
    fn key(link: &RedisLink, room: &RoomId) -> String {
        link.key("room-home", room.as_str())
    }

    /// The room's home, claiming it for `me` when it has none.
    pub async fn claim(&self, room: &RoomId, me: &str) -> Result<String, HubError> {
        let Homes::Redis(link) = self else { return Ok(me.to_string()) };
        // One step in Redis: a key freed meanwhile (its node lost) cannot fall between a set and
        // a read.
        let mut inv = CLAIM.prepare_invoke();
        inv.key(Self::key(link, room)).arg(me).arg(HOME_TTL.as_millis() as u64);
        link.invoke(&inv).await
    }

    /// The room's home, if it has one.
    pub async fn lookup(&self, room: &RoomId, me: &str) -> Result<Option<String>, HubError> {
        let Homes::Redis(link) = self else { return Ok(Some(me.to_string())) };
        link.query(redis::cmd("GET").arg(Self::key(link, room))).await
    }

    /// Keeps the home keys of the rooms held here alive. A home key that is
    /// gone (Redis restarted empty) is written again, unless another node claimed the id meanwhile.
    pub async fn refresh(&self, rooms: &[RoomId], me: &str) {
        let Homes::Redis(link) = self else { return };
        if rooms.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for room in rooms {
            pipe.cmd("EVAL").arg(KEEP_HOME).arg(1).arg(Self::key(link, room)).arg(me).arg(HOME_TTL.as_millis() as u64);
            pipe.ignore();
        }
        if let Err(e) = link.query_pipe(&pipe).await {
            tracing::warn!(error = %e, "room homes not refreshed");
        }
    }

    /// The room ended here: its id is free again, and what was kept to restart it goes.
    pub async fn release(&self, room: &RoomId, me: &str) {
        let Homes::Redis(link) = self else { return };
        if self.free_if_held_by(room, me).await {
            let _: Result<i64, _> = link.query(redis::cmd("DEL").arg(Self::spec_key(link, room))).await;
        }
    }

    /// Node `dead` was lost: its rooms' ids are free at once (not when their keys lapse), so
    /// that joining again starts them on a live node. Their saved options stay.
    pub async fn forget_lost(&self, room: &RoomId, dead: &str) {
        self.free_if_held_by(room, dead).await;
    }

    /// Deletes the home key if (and only if) it still names `node`; true when it did.
    async fn free_if_held_by(&self, room: &RoomId, node: &str) -> bool {
        let Homes::Redis(link) = self else { return false };
        // One step in Redis: a node that claimed the id meanwhile keeps it.
        let mut inv = COMPARE_AND_DELETE.prepare_invoke();
        inv.key(Self::key(link, room)).arg(node);
        let deleted: Result<i64, _> = link.invoke(&inv).await;
        deleted.is_ok_and(|n| n == 1)
    }

    fn spec_key(link: &RedisLink, room: &RoomId) -> String {
        link.key("room-spec", room.as_str())
    }

    /// Keeps rooms' options for [`SPEC_TTL`], for restarting them elsewhere if this node is lost.
    /// Written at creation through the server API, whenever a room's lock changes, and with each
    /// refresh of the home keys (`locked` is the current lock).
    pub async fn save(&self, specs: &[RoomOptions]) {
        let Homes::Redis(link) = self else { return };
        if specs.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for spec in specs {
            let json = serde_json::to_string(spec).unwrap_or_default();
            pipe.cmd("SET").arg(Self::spec_key(link, &spec.id)).arg(json).arg("PX").arg(SPEC_TTL.as_millis() as u64);
            pipe.ignore();
        }
        if let Err(e) = link.query_pipe(&pipe).await {
            tracing::warn!(error = %e, "room options not saved");
        }
    }

    /// The options a lost room was saved with, if any.
    pub async fn saved(&self, room: &RoomId) -> Option<RoomOptions> {
        let Homes::Redis(link) = self else { return None };
        let raw: Result<Option<String>, _> = link.query(redis::cmd("GET").arg(Self::spec_key(link, room))).await;
        match raw {
            Ok(raw) => raw.and_then(|json| serde_json::from_str(&json).ok()),
            Err(e) => {
                tracing::warn!(%room, error = %e, "saved room options unreadable: default options");
                None
            }
        }
    }
}
