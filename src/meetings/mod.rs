//! Meetings on one node: rooms from the `signaling` crate, driven by socket ops and the server
//! API. docs/protocol.md#meetings-signaling is its contract. Media is not wired yet: the rooms'
//! media commands are dropped, and no SDP, candidate or publish op is served.
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
//!
//! Rooms live in this process: a cluster would route each room's inputs to the node holding it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use dashmap::DashMap;
use serde_json::{json, Value};
use signaling::{Input, Output, Reply, Role, Room, RoomEvent, RoomId, RoomOptions, RoomSnapshot, UserId};

use crate::{
    errors::{ErrorCode, HubError},
    node::{Conn, Node},
    protocol::Op,
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
}

type Slot = Arc<tokio::sync::Mutex<Entry>>;

pub struct Meetings {
    node: Arc<Node>,
    rooms: DashMap<RoomId, Slot>,
    /// Socket id → rooms it joined (to leave them when it closes).
    joined: DashMap<u64, Vec<RoomId>>,
}

/// What carrying out a room's outputs produced for the caller.
struct Done {
    reply: Value,
}

impl Meetings {
    pub fn new(node: Arc<Node>) -> Arc<Meetings> {
        Arc::new(Meetings { node, rooms: DashMap::new(), joined: DashMap::new() })
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
                v.insert(Arc::new(tokio::sync::Mutex::new(Entry { room, conns: HashMap::new() })));
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
    pub async fn handle(&self, conn: &Arc<Conn>, op: Op) -> Result<(Value, Option<(String, u64)>), HubError> {
        use signaling::ClientMsg as M;
        let msg = match op {
            Op::MeetingJoin(r) => return self.join(conn, r.room).await,
            Op::MeetingLeave(r) => M::Leave(r),
            Op::MeetingMute(m) => M::Mute(m),
            Op::MeetingHostMute(m) => M::HostMute(m),
            Op::MeetingRemove(m) => M::Remove(m),
            Op::MeetingLock(m) => M::Lock(m),
            Op::MeetingEnd(r) => M::End(r),
            Op::MeetingRaiseHand(r) => M::RaiseHand(r),
            Op::MeetingLowerHand(m) => M::LowerHand(m),
            _ => return Err(HubError::new(ErrorCode::UnknownOp, "not a meeting op")),
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
                let room = Room::new(RoomOptions::new(id.clone()), now_ms());
                Arc::new(tokio::sync::Mutex::new(Entry { room, conns: HashMap::new() }))
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
            Ok(done) => Ok((done.reply, activate)),
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
                // No media plane yet: nothing publishes, so nothing is forwarded.
                Output::Media(command) => tracing::trace!(room = %id, ?command, "media command dropped"),
            }
        }
        if entry.room.ended().is_some() {
            self.rooms.remove(id);
        }
        Ok(Done { reply })
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
