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
    ClientMsg, Input, Output, PeerTarget, Reply, Role, Room, RoomEvent, RoomId, RoomOptions, RoomSnapshot, UserId,
};

use media::{Media, NewPeer, RoomMedia};

use crate::{
    errors::{ErrorCode, HubError},
    node::{Conn, Node},
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
    /// The socket each participant joined from: what `Detach` unsubscribes.
    conns: HashMap<UserId, Arc<Conn>>,
    media: RoomMedia,
}

impl Entry {
    fn new(room: Room) -> Slot {
        Arc::new(tokio::sync::Mutex::new(Entry { room, conns: HashMap::new(), media: RoomMedia::default() }))
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
    /// Socket id → rooms it joined (to leave them when it closes).
    joined: DashMap<u64, Vec<RoomId>>,
}

/// What carrying out a room's outputs produced for the caller.
struct Done {
    reply: Value,
}

impl Meetings {
    pub fn new(node: Arc<Node>, media: Option<Media>) -> Arc<Meetings> {
        let media = media.map(Arc::new);
        Arc::new_cyclic(|me| Meetings { node, media, me: me.clone(), rooms: DashMap::new(), joined: DashMap::new() })
    }

    /// Feeds the rooms' audio levels to their active-speaker choice, every
    /// [`media::SPEAKER_INTERVAL`], until the node shuts down.
    pub async fn run_speakers(self: Arc<Self>) {
        let Some(media) = self.media.clone() else { return };
        let mut every = tokio::time::interval(media::SPEAKER_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = self.node.shutdown.cancelled() => return,
            }
            let slots: Vec<(RoomId, Slot)> = self.rooms.iter().map(|r| (r.key().clone(), r.value().clone())).collect();
            for (id, slot) in slots {
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

    /// Sends `Tick` to rooms whose timeout has come (expiry, empty too long), every second,
    /// until the node shuts down.
    pub async fn run_timers(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = self.node.shutdown.cancelled() => return,
            }
            let slots: Vec<(RoomId, Slot)> = self.rooms.iter().map(|r| (r.key().clone(), r.value().clone())).collect();
            let now = now_ms();
            for (id, slot) in slots {
                let mut entry = slot.lock().await;
                if entry.room.next_timeout().is_some_and(|at| at <= now) {
                    if let Err(e) = self.apply(&id, &mut entry, Input::Tick, now).await {
                        tracing::warn!(room = %id, error = %e, "room tick failed");
                    }
                }
            }
        }
    }

    /// Creates a room (server API).
    pub fn create(&self, options: RoomOptions) -> Result<RoomSnapshot, HubError> {
        check_room_id(options.id.as_str())?;
        let id = options.id.clone();
        match self.rooms.entry(id.clone()) {
            dashmap::Entry::Occupied(_) => Err(HubError::new(ErrorCode::RoomExists, format!("room {id} exists"))),
            dashmap::Entry::Vacant(v) => {
                let room = Room::new(options, now_ms());
                let snapshot = room.snapshot();
                v.insert(Entry::new(room));
                metrics::counter!("hub_meeting_rooms_created_total").increment(1);
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

    pub async fn snapshot(&self, id: &RoomId) -> Result<RoomSnapshot, HubError> {
        Ok(self.slot(id)?.lock().await.room.snapshot())
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
        let slot = self.slot(id)?;
        let mut entry = slot.lock().await;
        self.apply(id, &mut entry, input, now_ms()).await?;
        Ok(entry.room.snapshot())
    }

    /// Serves one `meeting.*` op for the socket. A join also returns the channel to activate
    /// once the reply is queued.
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
        let slot = self.slot(&id)?;
        let mut entry = slot.lock().await;
        // Only `Join` reads the role.
        let input = msg.into_input(UserId::from(&*conn.user), Role::Viewer);
        let done = self.apply(&id, &mut entry, input, now_ms()).await?;
        Ok((done.reply, None))
    }

    async fn join(&self, conn: &Arc<Conn>, id: RoomId) -> Result<(Value, Option<(String, u64)>), HubError> {
        check_room_id(id.as_str())?;
        let Some(role) = conn.room_grants().get(id.as_str()).copied() else {
            return Err(HubError::new(ErrorCode::Forbidden, format!("the token grants no access to room {id}")));
        };
        // A grant for a room that does not exist creates it with the default options.
        let slot = self
            .rooms
            .entry(id.clone())
            .or_insert_with(|| {
                metrics::counter!("hub_meeting_rooms_created_total").increment(1);
                Entry::new(Room::new(RoomOptions::new(id.clone()), now_ms()))
            })
            .clone();
        let mut entry = slot.lock().await;
        let user = UserId::from(&*conn.user);
        let now = now_ms();
        // Check before subscribing, so that a refused join leaves no subscription behind.
        let mut trial = entry.room.clone();
        trial.handle(Input::Join { user: user.clone(), role }, now)?;
        let channel = room_channel(&id);
        // Subscribed (pending) before the room's events go out: the joiner reads its reply, then
        // `participant_joined` for itself.
        let activate = match self.node.subscribe(conn, &channel, None).await {
            Ok(reply) => Some((channel.clone(), reply.position.map(|p| p.offset).unwrap_or(0))),
            Err(e) if e.code == ErrorCode::AlreadySubscribed => None,
            Err(e) => return Err(e),
        };
        entry.conns.insert(user.clone(), conn.clone());
        self.joined.entry(conn.id).or_default().push(id.clone());
        match self.apply(&id, &mut entry, Input::Join { user: user.clone(), role }, now).await {
            Ok(mut done) => {
                if let (Some(media), Some(data)) = (&self.media, done.reply.as_object_mut()) {
                    data.insert("ice_servers".into(), serde_json::to_value(&media.ice_servers).unwrap_or_default());
                }
                Ok((done.reply, activate))
            }
            Err(e) => {
                entry.conns.remove(&user);
                self.forget(conn.id, &id);
                if activate.is_some() {
                    let _ = self.node.unsubscribe(conn, &channel).await;
                }
                Err(e)
            }
        }
    }

    /// A closing socket leaves every room it joined.
    pub async fn on_disconnect(&self, conn: &Arc<Conn>) {
        let Some((_, rooms)) = self.joined.remove(&conn.id) else {
            return;
        };
        let user = UserId::from(&*conn.user);
        for id in rooms {
            let Ok(slot) = self.slot(&id) else { continue };
            let mut entry = slot.lock().await;
            if entry.conns.get(&user).is_some_and(|c| c.id == conn.id) {
                if let Err(e) = self.apply(&id, &mut entry, Input::Leave { user: user.clone() }, now_ms()).await {
                    tracing::debug!(room = %id, error = %e, "leave on disconnect");
                }
            }
        }
    }

    fn forget(&self, conn: u64, id: &RoomId) {
        self.joined.remove_if_mut(&conn, |_, rooms| {
            rooms.retain(|r| r != id);
            rooms.is_empty()
        });
    }

    /// Hands one input to the room and carries out its outputs, in order. An ended room is
    /// dropped.
    async fn apply(&self, id: &RoomId, entry: &mut Entry, input: Input, now: u64) -> Result<Done, HubError> {
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
                    if let Some(conn) = entry.conns.remove(&user) {
                        self.forget(conn.id, id);
                        // Not subscribed any more when its socket has closed.
                        let _ = self.node.unsubscribe(&conn, &room_channel(id)).await;
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
        if entry.room.ended().is_some() {
            self.rooms.remove(id);
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
        conn: &Conn,
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
                let follow = entry.media.track_flowing(room, user, peer, track, media.node.now_ms()).await;
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
        let mut data = serde_json::to_value(event).unwrap_or_default();
        if let Some(fields) = data.as_object_mut() {
            fields.remove("event");
        }
        if let Err(e) = self.node.publish(channel, Some(event.name().to_string()), data, None).await {
            tracing::warn!(channel, event = event.name(), error = %e, "room event not published");
        }
    }
}

fn reply_data(reply: &Reply) -> Value {
    serde_json::to_value(reply).unwrap_or_default()
}
