//! The node: its connections, its channel table, and the operations every front end (sockets,
//! server API, later the domain services) calls. It talks to other nodes only through the `Bus`,
//! and keeps presence and history only through their traits.

use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc, Weak,
};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Claims, Verifier},
    bus::{Bus, BusHandler, BusMessage},
    config::{Access, Config, NamespaceConfig},
    errors::{CloseReason, ErrorCode, HubError},
    history::{History, HistoryOptions, HistoryRead},
    outbox::Outbox,
    presence::Presence,
    protocol::{ClientInfo, Codec, Publication, ServerMsg, SharedMsg, StreamPosition, SubscribeReply},
    store::{Ban, Store},
};

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 255;
/// Longest event name accepted.
pub const MAX_EVENT_LEN: usize = 64;

/// One authenticated socket.
pub struct Conn {
    pub id: u64,
    pub client: Arc<str>,
    pub user: Arc<str>,
    pub codec: Codec,
    pub outbox: Outbox,
    claims: Mutex<Arc<Claims>>,
    /// Milliseconds since node start of the last frame received.
    pub last_seen_ms: AtomicU64,
    pub last_ping_ms: AtomicU64,
    /// When the current write began (ms since node start), 0 while not writing.
    pub writing_since_ms: AtomicU64,
    subs: Mutex<Vec<Arc<str>>>,
    /// The meeting grants of the connection's token.
    rooms: Mutex<Arc<crate::auth::RoomGrants>>,
}

impl Conn {
    pub fn room_grants(&self) -> Arc<crate::auth::RoomGrants> {
        self.rooms.lock().clone()
    }

    pub fn set_room_grants(&self, rooms: crate::auth::RoomGrants) {
        *self.rooms.lock() = Arc::new(rooms);
    }

    pub fn claims(&self) -> Arc<Claims> {
        self.claims.lock().clone()
    }

    pub fn set_claims(&self, claims: Claims) {
        *self.claims.lock() = Arc::new(claims);
    }

    pub fn info(&self) -> ClientInfo {
        ClientInfo { user: self.user.to_string(), client: self.client.to_string() }
    }

    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.subs.lock().iter().any(|c| **c == *channel)
    }

    pub fn push(&self, msg: &ServerMsg) -> bool {
        self.outbox.push(self.codec.encode(msg))
    }
}

struct Subscriber {
    conn: Arc<Conn>,
    state: Mutex<SubState>,
}

#[derive(Default)]
struct SubState {
    /// Some while the subscribe reply is being prepared: live frames (offset or 0, bytes) wait
    /// here so that none arrives before the reply.
    held: Option<Vec<(u64, Bytes)>>,
    /// The highest offset the reply accounted for: a publication at or below it that is fanned
    /// out late (its append finished before the subscribe read history, its delivery after) is
    /// not sent again.
    floor: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
}

#[derive(Default)]
pub struct Counters {
    pub publications: AtomicU64,
    pub deliveries: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub connections_total: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct NodeStats {
    pub node: String,
    pub connections: usize,
    pub users: usize,
    pub channels: usize,
    pub subscriptions: usize,
    pub publications: u64,
    pub deliveries: u64,
    pub slow_consumers: u64,
    pub connections_total: u64,
    pub process: ProcessStats,
}

/// The process's own figures, from /proc (what the load-test tool reports per connection).
#[derive(Debug, Serialize, Default)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct ChannelStats {
    pub channel: String,
    pub subscribers: usize,
}

pub struct Node {
    pub id: Arc<str>,
    pub config: Arc<Config>,
    pub verifier: Verifier,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn Presence>,
    pub history: Arc<dyn History>,
    pub store: Arc<dyn Store>,
    pub shutdown: CancellationToken,
    pub counters: Counters,
    /// Open sockets, authenticated or not (the `max_connections` cap).
    pub sockets: AtomicUsize,
    started: std::time::Instant,
    conns: DashMap<u64, Arc<Conn>>,
    users: DashMap<Arc<str>, Vec<u64>>,
    channels: DashMap<Arc<str>, Vec<Subscriber>>,
    subscriptions: AtomicUsize,
    next_conn: AtomicU64,
    /// Bans in force (user → end, or until lifted): a copy of the store's, kept current by the
    /// bus and a periodic reload, so that connecting never waits on the database.
    bans: DashMap<String, Option<u64>>,
    /// Takes node-addressed bus messages (meetings).
    service: parking_lot::RwLock<Option<Weak<dyn crate::bus::NodeService>>>,
}

impl Node {
    pub fn new(config: Arc<Config>, backends: crate::Backends) -> anyhow::Result<Arc<Node>> {
        let id: Arc<str> = if config.node_id.is_empty() {
            Arc::from(crate::history::new_epoch().as_str())
        } else {
            Arc::from(config.node_id.as_str())
        };
        let node = Arc::new(Node {
            id,
            verifier: Verifier::new(&config.auth)?,
            config,
            bus: backends.bus,
            presence: backends.presence,
            history: backends.history,
            store: backends.store,
            shutdown: CancellationToken::new(),
            counters: Counters::default(),
            sockets: AtomicUsize::new(0),
            started: std::time::Instant::now(),
            conns: DashMap::new(),
            users: DashMap::new(),
            channels: DashMap::new(),
            subscriptions: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            bans: DashMap::new(),
            service: parking_lot::RwLock::new(None),
        });
        let handler: Weak<dyn BusHandler> = Arc::downgrade(&node) as Weak<dyn BusHandler>;
        node.bus.attach(handler);
        Ok(node)
    }

    // ---- bans ----

    pub fn is_banned(&self, user: &str) -> bool {
        let now = crate::auth::now_secs();
        self.bans.get(user).is_some_and(|until| until.is_none_or(|u| u > now))
    }

    /// Replaces the ban copy with the store's.
    pub async fn reload_bans(&self) -> Result<(), HubError> {
        let bans = self.store.bans(crate::auth::now_secs()).await?;
        self.bans.retain(|user, _| bans.iter().any(|b| b.user == *user));
        for b in bans {
            // A ban this node missed on the bus still closes the user's sockets here.
            self.disconnect_user_local(&b.user, CloseReason::Banned);
            self.bans.insert(b.user, b.until);
        }
        Ok(())
    }

    /// Records a ban, tells every node, and closes the user's sockets everywhere (4104). Returns
    /// how many sockets closed on this node.
    pub async fn ban(&self, ban: Ban) -> Result<usize, HubError> {
        self.store.ban(&ban).await?;
        self.bans.insert(ban.user.clone(), ban.until);
        let here = self.disconnect_user_local(&ban.user, CloseReason::Banned);
        if let Err(e) = self.bus.publish(BusMessage::Ban { user: ban.user, until: ban.until }).await {
            tracing::warn!(error = %e, "ban not announced to other nodes; they learn it at their next reload");
        }
        Ok(here)
    }

    pub async fn unban(&self, user: &str) -> Result<bool, HubError> {
        let existed = self.store.unban(user).await?;
        let msg = BusMessage::Unban { user: user.to_string() };
        self.deliver_local(&msg);
        if let Err(e) = self.bus.publish(msg).await {
            tracing::warn!(error = %e, "unban not announced to other nodes; they learn it at their next reload");
        }
        Ok(existed)
    }

    /// Milliseconds since the node started: the clock of heartbeats.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    // ---- connections ----

    pub fn register(&self, claims: Claims, codec: Codec) -> Arc<Conn> {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let g = &self.config.gateway;
        let now = self.now_ms();
        let user: Arc<str> = Arc::from(claims.sub.as_str());
        let conn = Arc::new(Conn {
            id,
            client: Arc::from(format!("{}-{id}", self.id).as_str()),
            user: user.clone(),
            codec,
            outbox: Outbox::new(g.outbox_bytes, g.outbox_frames),
            claims: Mutex::new(Arc::new(claims)),
            last_seen_ms: AtomicU64::new(now),
            last_ping_ms: AtomicU64::new(now),
            writing_since_ms: AtomicU64::new(0),
            subs: Mutex::new(Vec::new()),
            rooms: Mutex::new(Arc::default()),
        });
        self.conns.insert(id, conn.clone());
        self.users.entry(user).or_default().push(id);
        self.counters.connections_total.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("hub_connections").increment(1.0);
        conn
    }

    /// Removes a closed connection and all its subscriptions.
    pub async fn unregister(&self, conn: &Arc<Conn>) {
        if self.conns.remove(&conn.id).is_none() {
            return;
        }
        self.users.remove_if_mut(&conn.user, |_, ids| {
            ids.retain(|id| *id != conn.id);
            ids.is_empty()
        });
        let subs = std::mem::take(&mut *conn.subs.lock());
        for channel in subs {
            self.drop_subscription(conn, &channel).await;
        }
        metrics::gauge!("hub_connections").decrement(1.0);
    }

    /// Counts a close for a reason worth watching, before the client can see it.
    pub fn count_close(&self, reason: CloseReason) {
        if reason == CloseReason::SlowConsumer {
            self.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!("hub_closes_total", "reason" => reason.text()).increment(1);
    }

    pub fn connections(&self) -> Vec<Arc<Conn>> {
        self.conns.iter().map(|c| c.value().clone()).collect()
    }

    /// How many sockets `user` has open on this node.
    pub fn user_connection_count(&self, user: &str) -> usize {
        self.users.get(user).map(|ids| ids.len()).unwrap_or(0)
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Closes every socket of `user` on this node and, through the bus, on every other.
    pub async fn disconnect_user(&self, user: &str, reason: CloseReason) -> Result<usize, HubError> {
        let n = self.disconnect_user_local(user, reason);
        self.bus.publish(BusMessage::DisconnectUser { user: user.to_string(), reason }).await?;
        Ok(n)
    }

    fn disconnect_user_local(&self, user: &str, reason: CloseReason) -> usize {
        let ids = self.users.get(user).map(|ids| ids.clone()).unwrap_or_default();
        for id in &ids {
            if let Some(conn) = self.conns.get(id) {
                conn.outbox.close(reason);
            }
        }
        ids.len()
    }

    /// Asks every socket to close with `reason` (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for conn in self.conns.iter() {
            conn.outbox.close(reason);
        }
    }

    // ---- channels ----

    /// The namespace of `channel`, if `claims` may do `action` there.
    pub fn authorize(&self, claims: &Claims, channel: &str, action: Action) -> Result<&NamespaceConfig, HubError> {
        let ns = self.namespace(channel)?;
        if claims.role.as_ref().is_some_and(|r| ns.roles.contains(r)) {
            return Ok(ns);
        }
        let access = match action {
            Action::Subscribe => &ns.subscribe,
            Action::Publish => &ns.publish,
        };
        let allowed = match access {
            Access::Any => true,
            Access::Owner => channel.split_once(':').map(|(_, rest)| rest == claims.sub).unwrap_or(false),
            Access::Grant => claims.channels.iter().any(|c| c == channel),
            Access::None => false,
        };
        if allowed {
            Ok(ns)
        } else {
            let verb = if action == Action::Subscribe { "subscribe to" } else { "publish to" };
            Err(HubError::new(ErrorCode::Forbidden, format!("may not {verb} {channel}")))
        }
    }

    /// The namespace of a well-formed channel name.
    pub fn namespace(&self, channel: &str) -> Result<&NamespaceConfig, HubError> {
        if channel.is_empty() || channel.len() > MAX_CHANNEL_LEN || channel.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(HubError::new(
                ErrorCode::BadRequest,
                "channel names are 1-255 bytes without spaces or control characters",
            ));
        }
        self.config
            .namespace(channel)
            .ok_or_else(|| HubError::new(ErrorCode::NotFound, format!("no namespace for channel {channel}")))
    }

    fn history_options(ns: &NamespaceConfig) -> Option<HistoryOptions> {
        (ns.history_size > 0).then_some(HistoryOptions { size: ns.history_size, ttl: ns.history_ttl })
    }

    /// Subscribes `conn`. The subscription stays *pending* (live frames are held back) until
    /// `activate` is called after the reply has been queued.
    pub async fn subscribe(
        &self,
        conn: &Arc<Conn>,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<SubscribeReply, HubError> {
        let claims = conn.claims();
        let ns = self.authorize(&claims, channel, Action::Subscribe)?;
        let key: Arc<str> = Arc::from(channel);
        {
            let mut subs = conn.subs.lock();
            if subs.iter().any(|c| **c == *channel) {
                return Err(HubError::new(ErrorCode::AlreadySubscribed, format!("already subscribed to {channel}")));
            }
            if subs.len() >= self.config.gateway.max_subscriptions {
                return Err(HubError::new(ErrorCode::LimitExceeded, "too many subscriptions on this connection"));
            }
            subs.push(key.clone());
        }
        self.channels
            .entry(key.clone())
            .or_default()
            .push(Subscriber { conn: conn.clone(), state: Mutex::new(SubState { held: Some(Vec::new()), floor: 0 }) });
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        let result = self.finish_subscribe(conn, ns, &key, since).await;
        if result.is_err() {
            conn.subs.lock().retain(|c| *c != key);
            self.remove_subscriber(conn, &key).await;
        }
        result
    }

    async fn finish_subscribe(
        &self,
        conn: &Arc<Conn>,
        ns: &NamespaceConfig,
        channel: &Arc<str>,
        since: Option<StreamPosition>,
    ) -> Result<SubscribeReply, HubError> {
        self.bus.subscribe(channel).await?;
        let reply = match Self::history_options(ns) {
            Some(opts) => {
                let read = self.history.read(channel, since.as_ref(), opts.size, opts).await?;
                let fits = self.fits_in_reply(&read.publications) == read.publications.len();
                // A recovery too big for one reply is refused: the client refetches instead.
                let recovered = since.is_some() && read.complete && fits;
                let publications =
                    if recovered { read.publications.iter().map(|p| p.view()).collect() } else { Vec::new() };
                SubscribeReply { position: Some(read.position), recovered, publications }
            }
            None if since.is_some() => {
                return Err(HubError::new(ErrorCode::NoHistory, format!("{channel} keeps no history to recover")))
            }
            None => SubscribeReply { position: None, recovered: false, publications: Vec::new() },
        };
        if ns.presence {
            let info = conn.info();
            self.presence.add(channel, &info).await?;
            if ns.join_leave {
                self.broadcast(BusMessage::Join { channel: channel.clone(), info }).await;
            }
        }
        Ok(reply)
    }

    /// Ends the pending state of a subscription: frames held back are queued after the reply,
    /// except publications the reply already carried (offset ≤ `delivered`).
    pub fn activate(&self, conn: &Arc<Conn>, channel: &str, delivered: u64) {
        let Some(subs) = self.channels.get(channel) else {
            return;
        };
        let Some(sub) = subs.iter().find(|s| s.conn.id == conn.id) else {
            return;
        };
        let mut state = sub.state.lock();
        state.floor = delivered;
        for (offset, frame) in state.held.take().unwrap_or_default() {
            if offset == 0 || offset > delivered {
                conn.outbox.push(frame);
            }
        }
    }

    pub async fn unsubscribe(&self, conn: &Arc<Conn>, channel: &str) -> Result<(), HubError> {
        let key = {
            let mut subs = conn.subs.lock();
            let Some(i) = subs.iter().position(|c| **c == *channel) else {
                return Err(HubError::new(ErrorCode::NotSubscribed, format!("not subscribed to {channel}")));
            };
            subs.swap_remove(i)
        };
        self.drop_subscription(conn, &key).await;
        Ok(())
    }

    async fn drop_subscription(&self, conn: &Arc<Conn>, channel: &Arc<str>) {
        self.remove_subscriber(conn, channel).await;
        if let Ok(ns) = self.namespace(channel) {
            if ns.presence {
                if let Err(e) = self.presence.remove(channel, &conn.client).await {
                    tracing::warn!(channel = %channel, error = %e, "presence remove failed");
                }
                if ns.join_leave {
                    self.broadcast(BusMessage::Leave { channel: channel.clone(), info: conn.info() }).await;
                }
            }
        }
    }

    async fn remove_subscriber(&self, conn: &Arc<Conn>, channel: &Arc<str>) {
        let mut found = false;
        self.channels.remove_if_mut(channel, |_, subs| {
            let before = subs.len();
            subs.retain(|s| s.conn.id != conn.id);
            found = subs.len() < before;
            subs.is_empty()
        });
        if found {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            if let Err(e) = self.bus.unsubscribe(channel).await {
                tracing::warn!(channel = %channel, error = %e, "bus unsubscribe failed");
            }
        }
    }

    // ---- publishing ----

    /// Publishes to a channel: into its history (if it keeps one), to local subscribers, then to
    /// other nodes. `from` is the publishing client, checked against the namespace rules; the
    /// server API passes `None` and may publish anywhere a namespace exists.
    pub async fn publish(
        &self,
        channel: &str,
        event: Option<String>,
        data: Value,
        from: Option<&Conn>,
    ) -> Result<Option<StreamPosition>, HubError> {
        let ns = match from {
            Some(conn) => self.authorize(&conn.claims(), channel, Action::Publish)?,
            None => self.namespace(channel)?,
        };
        let publication = Publication::new(
            Arc::from(channel),
            0,
            event.unwrap_or_else(|| "message".to_string()),
            data,
            from.map(|c| c.user.to_string()),
        );
        if publication.event.is_empty() || publication.event.len() > MAX_EVENT_LEN {
            return Err(HubError::new(ErrorCode::BadRequest, format!("event names are 1-{MAX_EVENT_LEN} bytes")));
        }
        let max = self.config.gateway.max_message_bytes;
        if json_len(&publication.data) > max {
            return Err(HubError::new(ErrorCode::BadRequest, format!("publication larger than {max} bytes")));
        }
        self.counters.publications.fetch_add(1, Ordering::Relaxed);
        match Self::history_options(ns) {
            Some(opts) => {
                let (publication, position) = self.history.append(publication, opts).await?;
                if !self.history.broadcasts() {
                    self.broadcast(BusMessage::Publication(publication)).await;
                }
                Ok(Some(position))
            }
            None => {
                self.broadcast(BusMessage::Publication(Arc::new(publication))).await;
                Ok(None)
            }
        }
    }

    /// Publishes from the server to a channel's current subscribers only, skipping its history
    /// even where the namespace keeps one: for ephemeral, latest-wins events (typing, presence).
    pub async fn publish_live(&self, channel: &str, event: &str, data: Value) -> Result<(), HubError> {
        self.namespace(channel)?;
        let publication = Publication::new(Arc::from(channel), 0, event.to_string(), data, None);
        self.counters.publications.fetch_add(1, Ordering::Relaxed);
        self.broadcast(BusMessage::Publication(Arc::new(publication))).await;
        Ok(())
    }

    /// Delivers here, then tells the other nodes. A bus failure is logged, not returned: local
    /// delivery happened, and history lets remote subscribers recover.
    async fn broadcast(&self, msg: BusMessage) {
        self.deliver_local(&msg);
        if let Err(e) = self.bus.publish(msg).await {
            tracing::warn!(error = %e, "bus publish failed; delivered on this node only");
        }
    }

    fn deliver_local(&self, msg: &BusMessage) {
        match msg {
            BusMessage::Publication(p) => self.fan_out(&p.channel, p.offset, |codec| p.encoded(codec)),
            BusMessage::Join { channel, info } => {
                let shared = SharedMsg::new(ServerMsg::Join { channel: channel.to_string(), info: info.clone() });
                self.fan_out(channel, 0, |codec| shared.encoded(codec));
            }
            BusMessage::Leave { channel, info } => {
                let shared = SharedMsg::new(ServerMsg::Leave { channel: channel.to_string(), info: info.clone() });
                self.fan_out(channel, 0, |codec| shared.encoded(codec));
            }
            BusMessage::DisconnectUser { user, reason } => {
                self.disconnect_user_local(user, *reason);
            }
            BusMessage::Ban { user, until } => {
                self.bans.insert(user.clone(), *until);
                self.disconnect_user_local(user, CloseReason::Banned);
            }
            BusMessage::Unban { user } => {
                self.bans.remove(user);
            }
            BusMessage::Node { to, from, payload } => {
                if **to == *self.id {
                    let service = self.service.read().as_ref().and_then(Weak::upgrade);
                    if let Some(service) = service {
                        service.on_node_message(from, payload);
                    }
                }
            }
        }
    }

    /// Attaches the service that takes node-addressed bus messages (meetings).
    pub fn set_service(&self, service: Weak<dyn crate::bus::NodeService>) {
        *self.service.write() = Some(service);
    }

    /// Sends `payload` to node `to`'s service over the bus.
    pub async fn send_to_node(&self, to: &str, payload: Value) -> Result<(), HubError> {
        let msg = BusMessage::Node { to: Arc::from(to), from: self.id.clone(), payload: Arc::new(payload) };
        self.bus.publish(msg).await
    }

    /// A socket of this node, by id.
    pub fn conn(&self, id: u64) -> Option<Arc<Conn>> {
        self.conns.get(&id).map(|c| c.value().clone())
    }

    /// Queues one frame on every local subscriber of `channel`; the frame is encoded once per codec.
    fn fan_out(&self, channel: &str, offset: u64, frame: impl Fn(Codec) -> Bytes) {
        let Some(subs) = self.channels.get(channel) else {
            return;
        };
        let mut delivered = 0u64;
        for sub in subs.iter() {
            let mut state = sub.state.lock();
            if let Some(held) = state.held.as_mut() {
                held.push((offset, frame(sub.conn.codec)));
                continue;
            }
            if offset != 0 && offset <= state.floor {
                continue;
            }
            drop(state);
            if sub.conn.outbox.push(frame(sub.conn.codec)) {
                delivered += 1;
            }
        }
        self.counters.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }

    // ---- reads ----

    pub async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, HubError> {
        let ns = self.namespace(channel)?;
        if !ns.presence {
            return Err(HubError::new(ErrorCode::NotFound, format!("{channel} keeps no presence")));
        }
        self.presence.members(channel).await
    }

    pub async fn history(
        &self,
        channel: &str,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
    ) -> Result<HistoryRead, HubError> {
        let ns = self.namespace(channel)?;
        let opts = Self::history_options(ns)
            .ok_or_else(|| HubError::new(ErrorCode::NoHistory, format!("{channel} keeps no history")))?;
        let limit = limit.unwrap_or(opts.size).min(opts.size);
        let mut read = self.history.read(channel, since, limit, opts).await?;
        let fits = self.fits_in_reply(&read.publications);
        if fits < read.publications.len() {
            read.publications.truncate(fits);
            read.complete = false;
        }
        Ok(read)
    }

    /// How many of `publications` fit in one reply: half an outbox, so that a reply can never
    /// make its own reader a slow consumer.
    fn fits_in_reply(&self, publications: &[Arc<Publication>]) -> usize {
        let budget = self.config.gateway.outbox_bytes / 2;
        let mut used = 0;
        let fit = publications
            .iter()
            .take_while(|p| {
                used += p.encoded(Codec::Json).len();
                used <= budget
            })
            .count();
        // One always fits (config guarantees an outbox of two largest messages), so paging
        // always moves on.
        fit.max(publications.len().min(1))
    }

    pub fn stats(&self) -> NodeStats {
        NodeStats {
            node: self.id.to_string(),
            connections: self.conns.len(),
            users: self.users.len(),
            channels: self.channels.len(),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            publications: self.counters.publications.load(Ordering::Relaxed),
            deliveries: self.counters.deliveries.load(Ordering::Relaxed),
            slow_consumers: self.counters.slow_consumers.load(Ordering::Relaxed),
            connections_total: self.counters.connections_total.load(Ordering::Relaxed),
            process: process_stats(),
        }
    }

    /// Channels with local subscribers, those starting with `prefix`, largest first.
    pub fn channel_stats(&self, prefix: &str, limit: usize) -> Vec<ChannelStats> {
        let mut list: Vec<ChannelStats> = self
            .channels
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .map(|e| ChannelStats { channel: e.key().to_string(), subscribers: e.value().len() })
            .collect();
        list.sort_by(|a, b| b.subscribers.cmp(&a.subscribers).then_with(|| a.channel.cmp(&b.channel)));
        list.truncate(limit);
        list
    }
}

impl BusHandler for Node {
    fn on_bus_message(&self, msg: BusMessage) {
        self.deliver_local(&msg);
    }
}

/// Bytes of `value` as JSON, counted without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn process_stats() -> ProcessStats {
    let rss_bytes = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0);
    ProcessStats { rss_bytes, cpu_seconds: process_cpu_seconds() }
}

/// User + system CPU seconds of this process: fields 14 and 15 of /proc/self/stat, in clock
/// ticks (100 per second).
pub fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}
