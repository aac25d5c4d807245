//! Meetings on one node: rooms from the `signaling` crate, driven by socket ops and the server
//! API, with their media on the `sfu` crate (`media`). docs/protocol.md#meetings is its contract.
//!
//! Each room is a `signaling::Room` behind its own async lock; every input for it — a socket op,
//! a server-API action, a closing socket, the timer — is handled and its outputs carried out
//! under that lock, so the room's order is the order its channel sees:
//!
//! - `Broadcast` is published on `room:{id}` (history kept, so a reconnecting participant can
//!   resume). A room grant in the token grants that channel too (`auth::Token::split`): the
//!   users a room's grants name may subscribe to it, and publish on it (in-meeting chat).
//!   `meeting.join` subscribes the joining socket itself.
//! - `Notify` is published on the user's own channel `user:{id}`.
//! - `Detach` unsubscribes the socket that joined from `room:{id}`; the events before it (the
//!   participant's `participant_left`, `room_ended`) have reached it already.
//! - `Media` goes to the room's `media::RoomMedia`, which pushes SDP answers and offers, candidates
//!   and media errors to the socket that joined (on `room:{id}`, without offset).
//!
//! Rooms live in this process: a cluster would route each room's inputs to the node holding it.

pub mod cluster;
pub mod media;

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use dashmap::DashMap;
use serde_json::{json, Value};
use sfu::rtc::{PeerEvent, PeerId};
use signaling::{
    ClientMsg, Input, LeaveReason, Output, PeerTarget, Reply, Role, Room, RoomEvent, RoomId, RoomOptions, RoomSnapshot,
    UserId,
};

use cluster::{Homes, Member, Outbound, Pending, Rpc};
use media::{Media, NewPeer, RoomMedia};
use tokio::sync::mpsc;

use crate::{
    bus::NodeService,
    errors::{ErrorCode, HubError},
    node::{Conn, Node},
    registry::Registry,
};

/// Room ids: what fits a channel name and a URL path segment.
pub const MAX_ROOM_ID_LEN: usize = 64;

/// The channel of a room's events and in-meeting chat.
pub fn room_channel(room: &RoomId) -> String {
    format!("room:{room}")
}

pub fn check_room_id(id: &str) -> Result<(), HubError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ROOM_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(HubError::new(ErrorCode::BadRequest, format!("room ids are 1-{MAX_ROOM_ID_LEN} of A-Z a-z 0-9 - _ .")))
    }
}

fn now_ms() -> u64 {
    crate::chat::unix_ms().max(0) as u64
}

struct Entry {
    room: Room,
    /// The socket each participant joined from: what `Detach` unsubscribes, where its media
    /// messages go.
    conns: HashMap<UserId, Member>,
    /// The socket whose session a join from another socket is replacing, while that is handled
    /// (what its `Detach` reason `Replaced` applies to).
    replaced: Option<Member>,
    /// Whether the room's options are kept in the cluster for restarting it elsewhere (created
    /// through the API, started again from kept options, or locked or unlocked once).
    saved: bool,
    media: RoomMedia,
}

impl Entry {
    fn new(room: Room, saved: bool) -> Slot {
        let entry = Entry { room, conns: HashMap::new(), replaced: None, saved, media: RoomMedia::default() };
        Arc::new(tokio::sync::Mutex::new(entry))
    }

    /// What is kept to restart the room elsewhere: its options, with its current lock.
    fn spec(&self) -> RoomOptions {
        let mut spec = self.room.options().clone();
        spec.locked = self.room.is_locked();
        spec
    }
}

type Slot = Arc<tokio::sync::Mutex<Entry>>;

pub struct Meetings {
    node: Arc<Node>,
    /// `None` when this node carries no media.
    media: Option<Arc<Media>>,
    /// Itself, for the tasks that read peer connection events.
    me: Weak<Meetings>,
    rooms: DashMap<RoomId, Slot>,
    /// Socket id → rooms it joined, here or elsewhere (to leave them when it closes, to tell it
    /// when a room's node is lost).
    joined: DashMap<u64, Vec<Joined>>,
    /// Nodes whose sockets joined rooms held here (some may have left since): watched like homes,
    /// so that a lost node's participants leave the rooms here.
    member_nodes: dashmap::DashSet<Arc<str>>,
    homes: Homes,
    /// The live nodes: a room whose home is not among them is lost.
    registry: Arc<dyn Registry>,
    outbound: Outbound,
    pending: Pending,
    /// Messages from other nodes, handled in order by one task.
    inbound: mpsc::Sender<(String, Rpc)>,
}

/// A room a socket of this node joined, and the node holding it.
struct Joined {
    room: RoomId,
    home: Arc<str>,
}

/// How often the nodes holding rooms that this node's sockets joined are checked for life.
const HOME_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The home keys of the rooms held here are refreshed every this many timer ticks (seconds), a
/// third of their lifetime.
const HOME_REFRESH_TICKS: u64 = cluster::HOME_TTL.as_secs() / 3;

/// Messages from other nodes waiting for the meetings' task; more are dropped (and logged).
const INBOUND_CAPACITY: usize = 4096;

impl NodeService for Meetings {
    fn on_node_message(&self, from: &str, payload: &Value) {
        match serde_json::from_value::<Rpc>(payload.clone()) {
            Ok(rpc) => {
                if self.inbound.try_send((from.to_string(), rpc)).is_err() {
                    metrics::counter!("hub_meeting_node_messages_dropped_total").increment(1);
                    tracing::warn!(from, "meeting messages from other nodes: queue full, message dropped");
                }
            }
            Err(e) => tracing::warn!(from, error = %e, "unreadable meeting message from another node"),
        }
    }
}

/// What carrying out a room's outputs produced for the caller.
struct Done {
    reply: Value,
}

impl Meetings {
    /// The meetings of this node; `redis` (cluster modes) holds the directory of room homes.
    pub fn new(
        node: Arc<Node>,
        media: Option<Media>,
        redis: Option<Arc<crate::cluster::RedisLink>>,
        registry: Arc<dyn Registry>,
    ) -> Arc<Meetings> {
        let media = media.map(Arc::new);
        let homes = redis.map_or(Homes::Single, Homes::Redis);
        let outbound = Outbound::start(&node);
        let (inbound, mut rx) = mpsc::channel::<(String, Rpc)>(INBOUND_CAPACITY);
        let meetings = Arc::new_cyclic(|me: &Weak<Meetings>| {
            let me = me.clone();
            tokio::spawn({
                let me = me.clone();
                async move {
                    while let Some((from, rpc)) = rx.recv().await {
                        let Some(meetings) = me.upgrade() else { return };
                        meetings.on_rpc(&from, rpc).await;
                    }
                }
            });
            Meetings {
                node: node.clone(),
                media,
                me,
                rooms: DashMap::new(),
                joined: DashMap::new(),
                member_nodes: dashmap::DashSet::new(),
                homes,
                registry,
                outbound,
                pending: Pending::default(),
                inbound,
            }
        });
        let service: Weak<dyn NodeService> = Arc::downgrade(&meetings) as Weak<dyn NodeService>;
        node.set_service(service);
        meetings
    }

    /// Feeds the rooms' audio levels to their active-speaker choice, every
    /// [`media::SPEAKER_INTERVAL`], until the node shuts down.
    pub async fn run_speakers(self: Arc<Self>) {
        let Some(media) = self.media.clone() else { return };
        let mut every = ticker(media::SPEAKER_INTERVAL);
        while self.tick(&mut every).await {
            for (id, slot) in self.slots() {
                let mut entry = slot.lock().await;
                if !entry.media.has_audio() {
                    continue;
                }
                if let Some(user) = entry.media.poll_speaker(&media) {
                    if let Err(e) = self.apply(&id, &mut entry, Input::ActiveSpeaker { user }, now_ms()).await {
                        tracing::debug!(room = %id, error = %e, "active speaker");
                    }
                }
            }
        }
    }

    /// Reviews the rooms' simulcast layer choices with the layers' measured rates, every
    /// [`media::LAYER_INTERVAL`], until the node shuts down.
    pub async fn run_layers(self: Arc<Self>) {
        let Some(media) = self.media.clone() else { return };
        let mut every = ticker(media::LAYER_INTERVAL);
        while self.tick(&mut every).await {
            for (_, slot) in self.slots() {
                let mut entry = slot.lock().await;
                if entry.media.has_layers() {
                    entry.media.review_layers(&media.node, media.node.now_ms()).await;
                }
            }
        }
    }

    /// Sends `Tick` to rooms whose timeout has come (expiry, empty too long), every second,
    /// until the node shuts down.
    pub async fn run_timers(self: Arc<Self>) {
        let mut every = ticker(Duration::from_secs(1));
        let mut ticks = 0u64;
        while self.tick(&mut every).await {
            let slots = self.slots();
            ticks += 1;
            let refresh = ticks.is_multiple_of(HOME_REFRESH_TICKS);
            if refresh {
                let ids: Vec<RoomId> = slots.iter().map(|(id, _)| id.clone()).collect();
                self.homes.refresh(&ids, &self.node.id).await;
            }
            let now = now_ms();
            let mut specs = Vec::new();
            for (id, slot) in slots {
                let mut entry = slot.lock().await;
                if entry.room.next_timeout().is_some_and(|at| at <= now) {
                    if let Err(e) = self.apply(&id, &mut entry, Input::Tick, now).await {
                        tracing::warn!(room = %id, error = %e, "room tick failed");
                    }
                }
                if refresh && entry.saved && entry.room.ended().is_none() {
                    specs.push(entry.spec());
                }
            }
            // Written again (not only extended): a Redis restarted empty has them back in 10 s.
            self.homes.save(&specs).await;
        }
    }

    /// The node is shutting down: every room held here ends with reason `node_lost` (published
    /// on its channel, so its participants on every node hear it and join again elsewhere), and
    /// its id is free at once.
    pub async fn stop(&self) {
        // Draining in the registry first: a participant told below joins again at once, and its
        // node must already know not to send it here.
        self.registry.announce_now().await;
        for (id, slot) in self.slots() {
            let mut entry = slot.lock().await;
            // Free before anyone is told: a join that follows the news claims the room elsewhere.
            self.homes.forget_lost(&id, &self.node.id).await;
            if let Err(e) = self.apply(&id, &mut entry, Input::NodeStopping, now_ms()).await {
                tracing::debug!(room = %id, error = %e, "room not ended at shutdown");
            }
        }
    }

    /// Watches the nodes holding rooms this node's sockets joined, every [`HOME_WATCH_INTERVAL`],
    /// until the node shuts down: when one drops out of the registry (died), its rooms are lost —
    /// see [`Meetings::home_lost`]. (One that shuts down ends its rooms itself.)
    pub async fn run_home_watch(self: Arc<Self>) {
        if matches!(self.homes, Homes::Single) {
            return;
        }
        // A home missing from the registry is lost once it has been missing for half a node ttl:
        // longer than a heartbeat's period, so that a registry Redis lost (restarted empty) is told
        // again by every live node before any is judged.
        let grace = self.node.config.cluster.node_ttl / 2;
        let mut missing: HashMap<Arc<str>, tokio::time::Instant> = HashMap::new();
        let mut every = ticker(HOME_WATCH_INTERVAL);
        while self.tick(&mut every).await {
            let mut homes: Vec<Arc<str>> = self
                .joined
                .iter()
                .flat_map(|j| j.value().iter().map(|r| r.home.clone()).collect::<Vec<_>>())
                .chain(self.member_nodes.iter().map(|n| n.key().clone()))
                .filter(|home| **home != *self.node.id)
                .collect();
            homes.sort();
            homes.dedup();
            missing.retain(|home, _| homes.contains(home));
            if homes.is_empty() {
                continue;
            }
            let Some(nodes) = self.live_nodes().await else { continue };
            let now = tokio::time::Instant::now();
            for home in homes {
                // A draining home ends its rooms itself ([`Meetings::stop`]).
                if nodes.iter().any(|n| *n.id == *home) {
                    missing.remove(&home);
                    continue;
                }
                let since = *missing.entry(home.clone()).or_insert(now);
                if now.duration_since(since) >= grace {
                    missing.remove(&home);
                    self.home_lost(&home).await;
                    self.members_lost(&home).await;
                }
            }
        }
    }

    /// Node `dead` held rooms that sockets here joined, and is gone: each such socket is told
    /// `room_ended` (reason `node_lost`, on the room's channel without offset) and detached; its
    /// requests there fail now; the rooms' ids are freed so that joining again starts each room
    /// on a live node with the options it was saved with.
    async fn home_lost(&self, dead: &str) {
        self.pending.fail_node(dead);
        let mut lost: Vec<(u64, RoomId)> = Vec::new();
        for mut joined in self.joined.iter_mut() {
            let conn = *joined.key();
            joined.value_mut().retain(|r| {
                let here = *r.home == *dead;
                if here {
                    lost.push((conn, r.room.clone()));
                }
                !here
            });
        }
        self.joined.retain(|_, rooms| !rooms.is_empty());
        let mut rooms: Vec<RoomId> = lost.iter().map(|(_, room)| room.clone()).collect();
        rooms.sort();
        rooms.dedup();
        if !rooms.is_empty() {
            tracing::warn!(node = dead, rooms = rooms.len(), "a node holding meetings was lost");
            metrics::counter!("hub_meeting_rooms_lost_total").increment(rooms.len() as u64);
        }
        for room in &rooms {
            self.homes.forget_lost(room, dead).await;
        }
        let ended = event_data(&RoomEvent::RoomEnded { reason: signaling::EndReason::NodeLost, by: None });
        for (conn, room) in lost {
            let Some(conn) = self.node.conn(conn) else { continue };
            media::push(&Member::Local(conn.clone()), &room, "room_ended", ended.clone());
            let _ = self.node.unsubscribe(&conn, &room_channel(&room)).await;
        }
    }

    /// Whether `node` is in the registry and not draining (true when the registry cannot say).
    async fn alive(&self, node: &str) -> bool {
        match self.live_nodes().await {
            Some(nodes) => nodes.iter().any(|n| n.id == node && !n.draining),
            None => true,
        }
    }

    /// The registry's nodes, when it can be trusted to know who is alive: it answers, and lists
    /// this node. (Redis away, or restarted empty and not yet told again by every node's
    /// heartbeat, would make every other node look lost.)
    async fn live_nodes(&self) -> Option<Vec<crate::registry::NodeInfo>> {
        let nodes = self.registry.nodes().await.ok()?;
        nodes.iter().any(|n| *n.id == *self.node.id).then_some(nodes)
    }

    /// Node `dead` is gone with its sockets: those of them in rooms held here leave (as a closed
    /// socket does; nobody is left to send that `Leave`).
    async fn members_lost(&self, dead: &str) {
        self.member_nodes.remove(dead);
        for (id, slot) in self.slots() {
            let mut entry = slot.lock().await;
            let users: Vec<UserId> = entry
                .conns
                .iter()
                .filter(|(_, m)| matches!(m, Member::Remote { node, .. } if node == dead))
                .map(|(user, _)| user.clone())
                .collect();
            for user in users {
                if let Err(e) = self.apply(&id, &mut entry, Input::Leave { user }, now_ms()).await {
                    tracing::debug!(room = %id, error = %e, "leave of a lost node's participant");
                }
            }
        }
    }

    /// Waits for the next tick of `every`; false once the node shuts down.
    async fn tick(&self, every: &mut tokio::time::Interval) -> bool {
        tokio::select! {
            _ = every.tick() => true,
            _ = self.node.shutdown.cancelled() => false,
        }
    }

    /// The rooms held here now (their locks are taken one at a time by the caller).
    fn slots(&self) -> Vec<(RoomId, Slot)> {
        self.rooms.iter().map(|r| (r.key().clone(), r.value().clone())).collect()
    }

    /// Creates a room (server API), held by this node.
    pub async fn create(&self, options: RoomOptions) -> Result<RoomSnapshot, HubError> {
        check_room_id(options.id.as_str())?;
        let id = options.id.clone();
        let exists = || HubError::new(ErrorCode::RoomExists, format!("room {id} exists"));
        if self.rooms.contains_key(&id) || self.homes.claim(&id, &self.node.id).await? != *self.node.id {
            return Err(exists());
        }
        match self.rooms.entry(id.clone()) {
            dashmap::Entry::Occupied(_) => Err(exists()),
            dashmap::Entry::Vacant(v) => {
                let room = Room::new(options.clone(), now_ms());
                let snapshot = room.snapshot();
                v.insert(Entry::new(room, true));
                metrics::counter!("hub_meeting_rooms_created_total").increment(1);
                self.homes.save(&[options]).await;
                Ok(snapshot)
            }
        }
    }

    fn slot(&self, id: &RoomId) -> Result<Slot, HubError> {
        self.rooms
            .get(id)
            .map(|s| s.value().clone())
            .ok_or_else(|| HubError::new(ErrorCode::NotFound, format!("no room {id}")))
    }

    /// The room as it is now, from whichever node holds it.
    pub async fn snapshot(&self, id: &RoomId) -> Result<RoomSnapshot, HubError> {
        match self.slot(id) {
            Ok(slot) => Ok(slot.lock().await.room.snapshot()),
            Err(e) => self.api_elsewhere(id, None).await?.ok_or(e),
        }
    }

    /// A server-API call on a room another node holds; `None` when no node holds it.
    async fn api_elsewhere(&self, id: &RoomId, input: Option<Input>) -> Result<Option<RoomSnapshot>, HubError> {
        let Some(home) = self.homes.lookup(id, &self.node.id).await?.filter(|h| **h != *self.node.id) else {
            return Ok(None);
        };
        if !self.alive(&home).await {
            // Lost with its node: no room until someone joins again.
            self.homes.forget_lost(id, &home).await;
            return Ok(None);
        }
        let (rid, rx) = self.pending.open(&home);
        self.outbound.send(&home, Rpc::Api { id: rid, room: id.clone(), input });
        let data = self.pending.wait(rid, rx).await?;
        serde_json::from_value(data)
            .map(Some)
            .map_err(|e| HubError::new(ErrorCode::Internal, format!("unreadable room from its node: {e}")))
    }

    /// Every live room, by id.
    pub async fn list(&self) -> Vec<RoomSnapshot> {
        let slots: Vec<Slot> = self.rooms.iter().map(|r| r.value().clone()).collect();
        let mut list = Vec::with_capacity(slots.len());
        for slot in slots {
            let entry = slot.lock().await;
            if entry.room.ended().is_none() {
                list.push(entry.room.snapshot());
            }
        }
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// A server-API action (`by: None` in its input), with the room as it is afterwards.
    pub async fn act(&self, id: &RoomId, input: Input) -> Result<RoomSnapshot, HubError> {
        let slot = match self.slot(id) {
            Ok(slot) => slot,
            Err(e) => return self.api_elsewhere(id, Some(input)).await?.ok_or(e),
        };
        let mut entry = slot.lock().await;
        self.apply(id, &mut entry, input, now_ms()).await?;
        Ok(entry.room.snapshot())
    }

    /// Serves one `meeting.*` op for the socket, here or at the room's home node. A join also
    /// returns the channel to activate once the reply is queued.
    pub async fn handle(&self, conn: &Arc<Conn>, msg: ClientMsg) -> Result<(Value, Option<(String, u64)>), HubError> {
        let msg = match msg {
            ClientMsg::Join(r) => return self.join(conn, r.room).await,
            ClientMsg::Offer(_) | ClientMsg::Answer(_) | ClientMsg::Candidate(_) | ClientMsg::Publish(_)
                if self.media.is_none() =>
            {
                return Err(media::unavailable())
            }
            // The room checks only sizes (its tests use placeholders); what reaches the media plane
            // must at least look like an SDP.
            ClientMsg::Offer(m) | ClientMsg::Answer(m) if !m.sdp.starts_with("v=0") => {
                return Err(HubError::new(ErrorCode::InvalidSdp, "invalid SDP: an SDP starts with v=0"))
            }
            msg => msg,
        };
        let id = msg.room().clone();
        let user = UserId::from(&*conn.user);
        if !self.rooms.contains_key(&id) {
            let home = self.homes.lookup(&id, &self.node.id).await?;
            if let Some(home) = home.filter(|h| **h != *self.node.id) {
                return Ok((self.request(&home, conn, None, msg).await?, None));
            }
        }
        Ok((self.serve(&id, user, msg).await?, None))
    }

    /// Runs a (non-join) request of `user` on a room held here.
    async fn serve(&self, id: &RoomId, user: UserId, msg: ClientMsg) -> Result<Value, HubError> {
        let slot = self.slot(id)?;
        let mut entry = slot.lock().await;
        // Only `Join` reads the role.
        let input = msg.into_input(user, Role::Viewer);
        Ok(self.apply(id, &mut entry, input, now_ms()).await?.reply)
    }

    /// Sends a socket's request to the room's home and waits for its answer.
    async fn request(&self, home: &str, conn: &Conn, grant: Option<Role>, msg: ClientMsg) -> Result<Value, HubError> {
        let (id, rx) = self.pending.open(home);
        let rpc = Rpc::Request { id, conn: conn.id, user: conn.user.to_string(), grant, closing: false, msg };
        self.outbound.send(home, rpc);
        self.pending.wait(id, rx).await
    }

    async fn join(&self, conn: &Arc<Conn>, id: RoomId) -> Result<(Value, Option<(String, u64)>), HubError> {
        check_room_id(id.as_str())?;
        let Some(role) = conn.room_grants().get(id.as_str()).copied() else {
            return Err(HubError::new(ErrorCode::Forbidden, format!("the token grants no access to room {id}")));
        };
        let home = if self.rooms.contains_key(&id) {
            self.node.id.to_string()
        } else {
            let home = self.homes.claim(&id, &self.node.id).await?;
            if home != *self.node.id && !self.alive(&home).await {
                // Its node was lost and nobody here has noticed yet (no socket of this node was in
                // the room): the room starts again here.
                self.homes.forget_lost(&id, &home).await;
                self.homes.claim(&id, &self.node.id).await?
            } else {
                home
            }
        };
        let user = UserId::from(&*conn.user);
        let channel = room_channel(&id);
        // Subscribed (pending) before the room's events go out: the joiner reads its reply, then
        // `participant_joined` for itself.
        let activate = match self.node.subscribe(conn, &channel, None).await {
            Ok(reply) => Some((channel.clone(), reply.position.map(|p| p.offset).unwrap_or(0))),
            Err(e) if e.code == ErrorCode::AlreadySubscribed => None,
            Err(e) => return Err(e),
        };
        // A socket in the room already (its join is refused below) keeps the record it has.
        let recorded = {
            let mut rooms = self.joined.entry(conn.id).or_default();
            let fresh = !rooms.iter().any(|r| r.room == id);
            if fresh {
                rooms.push(Joined { room: id.clone(), home: home.as_str().into() });
            }
            fresh
        };
        let joined = if home == *self.node.id {
            self.admit(&id, Member::Local(conn.clone()), user, role).await
        } else {
            self.request(&home, conn, Some(role), ClientMsg::Join(signaling::messages::RoomRef { room: id.clone() }))
                .await
        };
        match joined {
            Ok(reply) => Ok((reply, activate)),
            Err(e) => {
                if recorded {
                    self.forget(conn.id, &id);
                }
                if activate.is_some() {
                    let _ = self.node.unsubscribe(conn, &channel).await;
                }
                Err(e)
            }
        }
    }

    /// Lets `user` into a room held here (made with the default options if it does not exist),
    /// from the socket `member`.
    async fn admit(&self, id: &RoomId, member: Member, user: UserId, role: Role) -> Result<Value, HubError> {
        if self.node.shutdown.is_cancelled() {
            return Err(HubError::new(ErrorCode::Unavailable, "the room's node is shutting down; join again"));
        }
        // A grant for a room that does not exist creates it: with the options it had on a node
        // that was lost, or the default ones.
        let saved = if self.rooms.contains_key(id) { None } else { self.homes.saved(id).await };
        let slot = self
            .rooms
            .entry(id.clone())
            .or_insert_with(|| {
                metrics::counter!("hub_meeting_rooms_created_total").increment(1);
                let restarted = saved.is_some();
                if restarted {
                    metrics::counter!("hub_meeting_rooms_restarted_total").increment(1);
                }
                Entry::new(Room::new(saved.unwrap_or_else(|| RoomOptions::new(id.clone())), now_ms()), restarted)
            })
            .clone();
        let mut entry = slot.lock().await;
        let now = now_ms();
        // In the room from another socket already (a lost one not yet noticed, another tab): this
        // join takes its place.
        let replacing =
            entry.room.role_of(&user).is_some() && entry.conns.get(&user).is_some_and(|old| !old.same_socket(&member));
        let previous = entry.conns.insert(user.clone(), member);
        let input = if replacing {
            entry.replaced = previous.clone();
            Input::Replace { user: user.clone(), role }
        } else {
            Input::Join { user: user.clone(), role }
        };
        let result = self.apply(id, &mut entry, input, now).await;
        entry.replaced = None;
        match result {
            Ok(mut done) => {
                if let Some(data) = done.reply.as_object_mut() {
                    data.insert("node".into(), json!(&*self.node.id));
                    if let Some(media) = &self.media {
                        data.insert("ice_servers".into(), serde_json::to_value(&media.ice_servers).unwrap_or_default());
                    }
                }
                Ok(done.reply)
            }
            Err(e) => {
                // Refused (already joined from another socket, full, locked...): as it was.
                match previous {
                    Some(member) => entry.conns.insert(user, member),
                    None => entry.conns.remove(&user),
                };
                Err(e)
            }
        }
    }

    /// A closing socket leaves every room it joined (here, or through the room's home).
    pub async fn on_disconnect(&self, conn: &Arc<Conn>) {
        let Some((_, rooms)) = self.joined.remove(&conn.id) else {
            return;
        };
        let user = UserId::from(&*conn.user);
        for Joined { room: id, home } in rooms {
            match self.slot(&id) {
                Ok(slot) => {
                    let mut entry = slot.lock().await;
                    if entry.conns.get(&user).is_some_and(|m| m.is_local(conn.id)) {
                        let leave = Input::Leave { user: user.clone() };
                        if let Err(e) = self.apply(&id, &mut entry, leave, now_ms()).await {
                            tracing::debug!(room = %id, error = %e, "leave on disconnect");
                        }
                    }
                }
                Err(_) if *home == *self.node.id => {}
                Err(_) => {
                    let msg = ClientMsg::Leave(signaling::messages::RoomRef { room: id.clone() });
                    // No reply is sent to a closing request.
                    let rpc =
                        Rpc::Request { id: 0, conn: conn.id, user: user.to_string(), grant: None, closing: true, msg };
                    self.outbound.send(&home, rpc);
                }
            }
        }
    }

    /// A request from another node's socket (`from`, socket `conn`), for a room held here.
    async fn serve_remote(
        &self,
        from: &str,
        conn: u64,
        user: UserId,
        grant: Option<Role>,
        closing: bool,
        msg: ClientMsg,
    ) -> Result<Value, HubError> {
        let id = msg.room().clone();
        match msg {
            ClientMsg::Join(_) => {
                let role = grant.ok_or_else(|| HubError::new(ErrorCode::Forbidden, "no grant for the room"))?;
                let member = Member::Remote { node: from.to_string(), conn, outbound: self.outbound.clone() };
                self.member_nodes.insert(from.into());
                self.admit(&id, member, user, role).await
            }
            ClientMsg::Leave(_) if closing => {
                // The socket closed: only if it is still the one the user joined from.
                let slot = self.slot(&id)?;
                let mut entry = slot.lock().await;
                if !entry.conns.get(&user).is_some_and(|m| m.is_remote(from, conn)) {
                    return Ok(json!({}));
                }
                Ok(self.apply(&id, &mut entry, Input::Leave { user }, now_ms()).await?.reply)
            }
            msg => self.serve(&id, user, msg).await,
        }
    }

    /// One message from another node, in the order that node sent it.
    async fn on_rpc(&self, from: &str, rpc: Rpc) {
        match rpc {
            Rpc::Request { id, conn, user, grant, closing, msg } => {
                let result = self.serve_remote(from, conn, UserId::from(user.as_str()), grant, closing, msg).await;
                if !closing {
                    self.outbound.send(from, cluster::reply(id, result));
                }
            }
            Rpc::Api { id, room, input } => {
                let result = match input {
                    Some(input) => self.act(&room, input).await,
                    None => self.snapshot(&room).await,
                };
                let result = result.map(|snapshot| serde_json::to_value(snapshot).unwrap_or_default());
                self.outbound.send(from, cluster::reply(id, result));
            }
            Rpc::Reply { id, ok, code, message } => self.pending.close(id, cluster::outcome(ok, code, message)),
            Rpc::Push { conn, msg } => {
                if let Some(conn) = self.node.conn(conn) {
                    conn.push(&msg);
                }
            }
            Rpc::Detach { conn, room } => {
                self.forget(conn, &room);
                if let Some(conn) = self.node.conn(conn) {
                    let _ = self.node.unsubscribe(&conn, &room_channel(&room)).await;
                }
            }
        }
    }

    fn forget(&self, conn: u64, id: &RoomId) {
        self.joined.remove_if_mut(&conn, |_, rooms| {
            rooms.retain(|r| r.room != *id);
            rooms.is_empty()
        });
    }

    /// Hands one input to the room and carries out its outputs, in order. An ended room is
    /// dropped.
    async fn apply(&self, id: &RoomId, entry: &mut Entry, input: Input, now: u64) -> Result<Done, HubError> {
        let locked = entry.room.is_locked();
        let outputs = entry.room.handle(input, now)?;
        let mut reply = json!({});
        let mut new_peers = Vec::new();
        for output in outputs {
            match output {
                Output::Reply(r) => reply = reply_data(&r),
                Output::Broadcast(event) => self.publish(&room_channel(id), &event).await,
                Output::Notify { to, event } => self.publish(&crate::chat::user_channel(to.as_str()), &event).await,
                Output::Detach { user, reason } => {
                    tracing::debug!(room = %id, %user, ?reason, "detached");
                    let gone = match reason {
                        // The new socket stays; the old one goes.
                        LeaveReason::Replaced => entry.replaced.take(),
                        _ => entry.conns.remove(&user),
                    };
                    match gone {
                        Some(Member::Local(conn)) => {
                            self.forget(conn.id, id);
                            // Not subscribed any more when its socket has closed.
                            let _ = self.node.unsubscribe(&conn, &room_channel(id)).await;
                        }
                        Some(Member::Remote { node, conn, outbound }) => {
                            outbound.send(&node, Rpc::Detach { conn, room: id.clone() });
                        }
                        None => {}
                    }
                }
                Output::Media(command) => match &self.media {
                    Some(media) => entry.media.command(media, id, &entry.conns, command, &mut new_peers).await,
                    None => tracing::trace!(room = %id, ?command, "no media on this node"),
                },
            }
        }
        for peer in new_peers {
            self.spawn_events(id.clone(), peer);
        }
        if let Some(reason) = entry.room.ended() {
            self.rooms.remove(id);
            // Ended by a stopping node (`stop`), the id is free already and the saved options
            // stay, for the room to start again elsewhere.
            if reason != signaling::EndReason::NodeLost {
                self.homes.release(id, &self.node.id).await;
            }
        } else if entry.room.is_locked() != locked {
            // What is kept to restart the room elsewhere follows its lock.
            entry.saved = true;
            self.homes.save(&[entry.spec()]).await;
        }
        Ok(Done { reply })
    }

    /// Reads one peer connection's events until it closes: candidates go to the participant's
    /// socket, the rest to the room's media state under the room's lock.
    fn spawn_events(&self, room: RoomId, new: NewPeer) {
        let NewPeer { user, target, peer, mut events, conn } = new;
        let me = self.me.clone();
        let peer_id = peer.id();
        // The task must not keep the connection open: the room owns it.
        drop(peer);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(meetings) = me.upgrade() else { return };
                meetings.on_peer_event(&room, &user, target, peer_id, &conn, event).await;
            }
        });
    }

    async fn on_peer_event(
        &self,
        room: &RoomId,
        user: &UserId,
        target: PeerTarget,
        peer: PeerId,
        conn: &Member,
        event: PeerEvent,
    ) {
        let Some(media) = &self.media else { return };
        match event {
            PeerEvent::LocalCandidate(json) => {
                if let Some(candidate) = media::wire_candidate(&json) {
                    let data = json!({"room": room, "target": target, "candidate": candidate});
                    media::push(conn, room, "candidate", data);
                }
            }
            PeerEvent::ConnectionState(state) => {
                tracing::debug!(%room, %user, ?target, ?state, "peer connection state");
            }
            PeerEvent::TrackPublished(track) => {
                let Ok(slot) = self.slot(room) else { return };
                let mut entry = slot.lock().await;
                let follow = entry.media.track_flowing(&media.node, room, user, peer, track, media.node.now_ms()).await;
                for who in follow.renegotiate {
                    if let Err(e) = self.apply(room, &mut entry, Input::Renegotiate { user: who }, now_ms()).await {
                        tracing::debug!(%room, error = %e, "renegotiate");
                    }
                }
            }
            PeerEvent::Estimate(bps) => {
                let Ok(slot) = self.slot(room) else { return };
                let mut entry = slot.lock().await;
                entry.media.estimate(user, peer, bps, media.node.now_ms()).await;
            }
        }
    }

    /// Publishes a room event: `event` is its name, `data` its other fields.
    async fn publish(&self, channel: &str, event: &RoomEvent) {
        if let Err(e) = self.node.publish(channel, Some(event.name().to_string()), event_data(event), None).await {
            tracing::warn!(channel, event = event.name(), error = %e, "room event not published");
        }
    }
}

/// A room event's fields but its name (which a push carries as `event`).
fn event_data(event: &RoomEvent) -> Value {
    let mut data = serde_json::to_value(event).unwrap_or_default();
    if let Some(fields) = data.as_object_mut() {
        fields.remove("event");
    }
    data
}

fn reply_data(reply: &Reply) -> Value {
    serde_json::to_value(reply).unwrap_or_default()
}

/// An interval for a periodic room task: a tick missed while the rooms were busy is not made up.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every
}
