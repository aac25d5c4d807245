//! The media plane of a room: the room's [`MediaCommand`]s carried out on `sfu::rtc` peer
//! connections, and what those connections report turned back into pushes and room inputs.
//!
//! Each participant has up to two connections (see `signaling::PeerTarget`): a publisher one,
//! made when the client first offers, and a subscriber one, made when the room first offers to
//! it. Their events are read by one task per connection ([`Meetings::spawn_events`]), which sends
//! candidates straight to the participant's socket and takes the room's lock for the rest.
//!
//! **Tracks flow late.** The room announces a track when the client publishes it, but the media
//! plane knows it only once its first RTP packet arrives (`PeerEvent::TrackPublished`). Until then
//! a subscription to it waits here (`attached: false`); when the track flows it is added to every
//! waiting subscriber connection, and the room is told to renegotiate them
//! (`Input::Renegotiate`). The arriving track is matched to the announcement by the client's id
//! (`cid` = the msid track id), else to the oldest unmatched announcement of the same kind.
//!
//! **Layers.** Each video subscription has a `signaling::LayerSelector` over the publisher's
//! announced layers, fed with the size the subscriber asked for and its share of the subscriber's
//! REMB estimate (split evenly between its video subscriptions). Its choice goes to the forwarder
//! by rid (`sfu::rtc::layer_of_rid`). Every [`LAYER_INTERVAL`] ([`Meetings::run_layers`]) the
//! selectors learn what each publisher really sends on each layer (`sfu::rate`: rate, and whether
//! the layer is sent at all) and are re-run: a receive-side estimate changes little while nothing is
//! congested, and stepping up (probing) is a matter of time, not of a new report.
//!
//! **Active speaker.** [`Meetings::run_speakers`] takes the audio levels of each room's tracks
//! every [`SPEAKER_INTERVAL`] and feeds the room's `sfu::ActiveSpeaker`; a change becomes
//! `Input::ActiveSpeaker`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use sfu::rtc::{layer_of_rid, MediaKind, MediaNode, MixId, Peer, PeerEvent, PeerId, PeerRole, PublishedTrack};
use signaling::{
    Constraints, IceCandidate, Layer, LayerSelector, MediaCommand, PeerTarget, RoomId, SelectorConfig, TrackId,
    TrackKind, UserId,
};

use super::cluster::Member;
use crate::config::IceServer;
use crate::errors::{ErrorCode, HubError};
use crate::protocol::ServerMsg;

/// How often the rooms' audio levels are read for the active speaker.
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(200);

/// How often simulcast layer choices are reviewed with the layers' measured rates.
pub const LAYER_INTERVAL: Duration = Duration::from_millis(500);

/// The media side of the process: the `sfu` node and what clients are told about ICE.
pub struct Media {
    pub node: MediaNode,
    pub ice_servers: Vec<IceServer>,
    next_peer: AtomicU64,
}

impl Media {
    pub fn new(node: MediaNode, ice_servers: Vec<IceServer>) -> Media {
        Media { node, ice_servers, next_peer: AtomicU64::new(1) }
    }
}

/// One room's media state, kept beside its `signaling::Room` under the room's lock.
pub struct RoomMedia {
    users: HashMap<UserId, UserMedia>,
    tracks: HashMap<TrackId, TrackMedia>,
    speaker: sfu::ActiveSpeaker<UserId>,
    /// The room's audio mix, made for its first listener and fed every flowing audio track.
    mix: Option<MixId>,
}

impl Default for RoomMedia {
    fn default() -> Self {
        RoomMedia {
            users: HashMap::new(),
            tracks: HashMap::new(),
            speaker: sfu::ActiveSpeaker::new(Default::default()),
            mix: None,
        }
    }
}

/// The stream and track id of the room's mix in a listener's SDP.
pub const MIX_LABEL: &str = "mix";

struct UserMedia {
    conn: Member,
    publisher: Option<Peer>,
    subscriber: Option<Peer>,
    subs: HashMap<TrackId, Sub>,
    /// The subscriber connection's last REMB, in bps.
    estimate_bps: Option<u64>,
    /// Whether a track was ever added to the subscriber connection: until then an offer would have
    /// no media section, and is held back (`offer_held`) until the first track flows.
    carried: bool,
    offer_held: bool,
}

struct TrackMedia {
    owner: UserId,
    cid: String,
    kind: TrackKind,
    layers: Vec<Layer>,
    muted: bool,
    /// The node's id of the track, once it flows.
    flowing: Option<sfu::rtc::TrackId>,
}

struct Sub {
    max_width: Option<u32>,
    max_height: Option<u32>,
    attached: bool,
    /// Video with simulcast layers only.
    selector: Option<LayerSelector>,
}

/// What a media command or event needs the room to do next.
#[derive(Default)]
pub struct FollowUp {
    /// Subscriber connections that changed on the media side: `Input::Renegotiate` for each.
    pub renegotiate: Vec<UserId>,
}

/// A media failure after the request was accepted: pushed to the participant as an `error` event.
pub fn push_error(conn: &Member, room: &RoomId, message: String) {
    let data = json!({"room": room, "code": ErrorCode::MediaFailed.as_str(), "message": message});
    push(conn, room, "error", data);
}

/// A per-participant media message: on the room's channel, without offset (not in its history).
pub fn push(conn: &Member, room: &RoomId, event: &str, data: Value) {
    conn.push(ServerMsg::Push {
        channel: super::room_channel(room),
        offset: None,
        event: event.to_string(),
        data,
        from: None,
    });
}

/// The browser's `RTCIceCandidateInit` (camelCase, as webrtc-rs reads it) from the wire's snake case.
fn candidate_json(c: &IceCandidate) -> String {
    json!({
        "candidate": c.candidate,
        "sdpMid": c.sdp_mid,
        "sdpMLineIndex": c.sdp_mline_index,
        "usernameFragment": c.username_fragment,
    })
    .to_string()
}

/// The wire's candidate from webrtc-rs's `RTCIceCandidateInit` JSON.
pub fn wire_candidate(json: &str) -> Option<IceCandidate> {
    let v: Value = serde_json::from_str(json).ok()?;
    Some(IceCandidate {
        candidate: v.get("candidate")?.as_str()?.to_string(),
        sdp_mid: v.get("sdpMid").and_then(Value::as_str).map(str::to_string),
        sdp_mline_index: v.get("sdpMLineIndex").and_then(Value::as_u64).and_then(|i| u16::try_from(i).ok()),
        username_fragment: v.get("usernameFragment").and_then(Value::as_str).map(str::to_string),
    })
}

/// A peer connection the caller must start reading events from.
pub struct NewPeer {
    pub user: UserId,
    pub target: PeerTarget,
    pub peer: Peer,
    pub events: tokio::sync::mpsc::Receiver<PeerEvent>,
    pub conn: Member,
}

impl RoomMedia {
    /// Carries out one command. `conn` is the socket `user` joined from (for the commands naming a
    /// user). Failures of one participant's connection are pushed to it and logged; they do not stop
    /// the room's other outputs.
    pub async fn command(
        &mut self,
        media: &Media,
        room: &RoomId,
        conns: &HashMap<UserId, Member>,
        command: MediaCommand,
        new_peers: &mut Vec<NewPeer>,
    ) {
        match command {
            MediaCommand::AcceptOffer { user, sdp } => {
                let Some(peer) = self.peer(media, room, conns, &user, PeerTarget::Publisher, new_peers).await else {
                    return;
                };
                match peer.accept_offer(sdp).await {
                    Ok(answer) => self.send(&user, room, "answer", json!({"room": room, "sdp": answer})),
                    Err(e) => self.fail(&user, room, format!("could not apply the offer: {e}")),
                }
            }
            MediaCommand::CreateOffer { user } => {
                let Some(peer) = self.peer(media, room, conns, &user, PeerTarget::Subscriber, new_peers).await else {
                    return;
                };
                if let Some(u) = self.users.get_mut(&user).filter(|u| !u.carried) {
                    // Nothing flows yet: this offer goes out with the first track (`track_flowing`).
                    u.offer_held = true;
                    return;
                }
                self.offer(&user, room, &peer).await;
            }
            MediaCommand::ApplyAnswer { user, sdp } => {
                let Some(peer) = self.users.get(&user).and_then(|u| u.subscriber.clone()) else { return };
                if let Err(e) = peer.apply_answer(sdp).await {
                    self.fail(&user, room, format!("could not apply the answer: {e}"));
                }
            }
            MediaCommand::AddCandidate { user, target, candidate } => {
                let Some(u) = self.users.get(&user) else { return };
                let peer = match target {
                    PeerTarget::Publisher => u.publisher.clone(),
                    PeerTarget::Subscriber => u.subscriber.clone(),
                };
                // A candidate before its connection exists has nothing to apply to; the SDPs carry
                // the server's candidates, and the client's reach it as peer-reflexive ones.
                let Some(peer) = peer else { return };
                if candidate.candidate.is_empty() {
                    return;
                }
                if let Err(e) = peer.add_candidate(&candidate_json(&candidate)).await {
                    tracing::debug!(%room, %user, error = %e, "candidate not applied");
                }
            }
            MediaCommand::AddTrack { user, track, cid, kind, layers } => {
                let muted = false;
                self.tracks.insert(track, TrackMedia { owner: user, cid, kind, layers, muted, flowing: None });
            }
            MediaCommand::RemoveTrack { track } => {
                if let Some(t) = self.tracks.remove(&track) {
                    if t.kind == TrackKind::Audio {
                        self.speaker.remove(&t.owner);
                        if let (Some(mix), Some(id)) = (self.mix, t.flowing) {
                            let _ = media.node.mix_remove_track(mix, id);
                        }
                    }
                }
            }
            MediaCommand::Mix { user, on } => {
                let Some(peer) = self.peer(media, room, conns, &user, PeerTarget::Subscriber, new_peers).await else {
                    return;
                };
                let result = if on {
                    match self.ensure_mix(media) {
                        Ok(mix) => peer.subscribe_mix(mix, MIX_LABEL).await,
                        Err(e) => Err(e),
                    }
                } else {
                    match self.mix {
                        Some(mix) => peer.unsubscribe_mix(mix).await,
                        None => Ok(()),
                    }
                };
                match result {
                    Ok(()) => {
                        if let Some(u) = self.users.get_mut(&user) {
                            u.carried = true;
                        }
                    }
                    Err(e) => self.fail(&user, room, format!("the room's mix: {e}")),
                }
            }
            MediaCommand::Subscribe { user, track, max_width, max_height } => {
                let size = (max_width, max_height);
                self.subscribe(media, room, conns, &user, &track, size, new_peers).await;
            }
            MediaCommand::Unsubscribe { user, track } => {
                let Some(u) = self.users.get_mut(&user) else { return };
                let Some(sub) = u.subs.remove(&track) else { return };
                let flowing = self.tracks.get(&track).and_then(|t| t.flowing);
                if let (true, Some(peer), Some(id)) = (sub.attached, u.subscriber.clone(), flowing) {
                    if let Err(e) = peer.unsubscribe(id).await {
                        tracing::debug!(%room, %user, error = %e, "unsubscribe");
                    }
                }
            }
            MediaCommand::StopForwarding { track } => self.set_muted(&track, true).await,
            MediaCommand::ResumeForwarding { track } => self.set_muted(&track, false).await,
            // Resuming asks for keyframes itself (`Peer::set_muted`).
            MediaCommand::RequestKeyframe { .. } => {}
            MediaCommand::DisconnectMedia { user } => {
                if let Some(u) = self.users.remove(&user) {
                    u.close().await;
                }
                self.speaker.remove(&user);
            }
            MediaCommand::CloseRoom => {
                for (_, u) in self.users.drain() {
                    u.close().await;
                }
                self.tracks.clear();
                if let Some(mix) = self.mix.take() {
                    let _ = media.node.close_mix(mix);
                }
            }
        }
    }

    /// The room's mix, made with every audio track flowing now when it does not exist yet.
    fn ensure_mix(&mut self, media: &Media) -> Result<MixId, sfu::rtc::MediaError> {
        if let Some(mix) = self.mix {
            return Ok(mix);
        }
        let mix = media.node.create_mix()?;
        for t in self.tracks.values().filter(|t| t.kind == TrackKind::Audio) {
            if let Some(id) = t.flowing {
                let _ = media.node.mix_add_track(mix, id);
            }
        }
        self.mix = Some(mix);
        Ok(mix)
    }

    /// `user`'s connection for `target`, made (and reported in `new_peers`) when missing.
    async fn peer(
        &mut self,
        media: &Media,
        room: &RoomId,
        conns: &HashMap<UserId, Member>,
        user: &UserId,
        target: PeerTarget,
        new_peers: &mut Vec<NewPeer>,
    ) -> Option<Peer> {
        let conn = conns.get(user)?.clone();
        let u = self.users.entry(user.clone()).or_insert_with(|| UserMedia {
            conn: conn.clone(),
            publisher: None,
            subscriber: None,
            subs: HashMap::new(),
            estimate_bps: None,
            carried: false,
            offer_held: false,
        });
        let slot = match target {
            PeerTarget::Publisher => &mut u.publisher,
            PeerTarget::Subscriber => &mut u.subscriber,
        };
        if let Some(peer) = slot {
            return Some(peer.clone());
        }
        let id = PeerId(media.next_peer.fetch_add(1, Ordering::Relaxed));
        let role = match target {
            PeerTarget::Publisher => PeerRole::Publisher,
            PeerTarget::Subscriber => PeerRole::Subscriber,
        };
        match media.node.peer(id, role).await {
            Ok((peer, events)) => {
                *slot = Some(peer.clone());
                new_peers.push(NewPeer { user: user.clone(), target, peer: peer.clone(), events, conn });
                Some(peer)
            }
            Err(e) => {
                tracing::warn!(%user, error = %e, "peer connection not made");
                push_error(&conn, room, format!("no peer connection: {e}"));
                None
            }
        }
    }

    async fn offer(&self, user: &UserId, room: &RoomId, peer: &Peer) {
        match peer.create_offer().await {
            Ok(offer) => self.send(user, room, "offer", json!({"room": room, "sdp": offer})),
            Err(e) => self.fail(user, room, format!("could not create an offer: {e}")),
        }
    }

    fn send(&self, user: &UserId, room: &RoomId, event: &str, data: Value) {
        if let Some(u) = self.users.get(user) {
            push(&u.conn, room, event, data);
        }
    }

    fn fail(&self, user: &UserId, room: &RoomId, message: String) {
        tracing::warn!(%room, %user, %message, "media failure");
        if let Some(u) = self.users.get(user) {
            push_error(&u.conn, room, message);
        }
    }

    /// Records a subscription (or its new size `(max_width, max_height)`) and attaches it if its
    /// track flows.
    #[allow(clippy::too_many_arguments)]
    async fn subscribe(
        &mut self,
        media: &Media,
        room: &RoomId,
        conns: &HashMap<UserId, Member>,
        user: &UserId,
        track: &TrackId,
        (max_width, max_height): (Option<u32>, Option<u32>),
        new_peers: &mut Vec<NewPeer>,
    ) {
        // The subscriber connection exists from the first subscription on: the room's offer follows.
        if self.peer(media, room, conns, user, PeerTarget::Subscriber, new_peers).await.is_none() {
            return;
        }
        let layers = self.tracks.get(track).map(|t| t.layers.clone()).unwrap_or_default();
        let Some(u) = self.users.get_mut(user) else { return };
        let sub = u.subs.entry(track.clone()).or_insert_with(|| Sub {
            max_width,
            max_height,
            attached: false,
            selector: LayerSelector::new(layers, SelectorConfig::default()).ok(),
        });
        sub.max_width = max_width;
        sub.max_height = max_height;
        if self.tracks.get(track).and_then(|t| t.flowing).is_some() {
            if self.users[user].subs[track].attached {
                self.choose_layers(user, media.node.now_ms()).await;
            } else {
                self.attach(user, track, media.node.now_ms()).await;
            }
        }
    }

    /// Adds a flowing track to `user`'s subscriber connection, on the layer its selector picks.
    async fn attach(&mut self, user: &UserId, track: &TrackId, now_ms: u64) -> bool {
        let Some(id) = self.tracks.get(track).and_then(|t| t.flowing) else { return false };
        let share = self.share_bps(user, 1);
        let Some(u) = self.users.get_mut(user) else { return false };
        let Some(peer) = u.subscriber.clone() else { return false };
        let Some(sub) = u.subs.get_mut(track) else { return false };
        if sub.attached {
            return false;
        }
        let layer = match &mut sub.selector {
            Some(selector) => {
                let want = Constraints { max_width: sub.max_width, max_height: sub.max_height, available_bps: share };
                selector.update(want, now_ms);
                selector.current().map(|l| layer_of_rid(&l.rid))
            }
            None => Some(sfu::Layer::LOW),
        };
        match peer.subscribe(id, layer, track.as_str()).await {
            Ok(()) => {
                sub.attached = true;
                u.carried = true;
                true
            }
            Err(e) => {
                tracing::warn!(%user, %track, error = %e, "subscription not attached");
                false
            }
        }
    }

    /// The share of `user`'s estimate for each of its video subscriptions (`extra` counts one about
    /// to be added); unlimited until the client reports an estimate.
    fn share_bps(&self, user: &UserId, extra: u64) -> u64 {
        let Some(u) = self.users.get(user) else { return u64::MAX };
        let Some(estimate) = u.estimate_bps else { return u64::MAX };
        let videos = u.subs.values().filter(|s| s.attached && s.selector.is_some()).count() as u64 + extra;
        estimate / videos.max(1)
    }

    /// Whether any subscription of the room chooses among simulcast layers.
    pub fn has_layers(&self) -> bool {
        self.users.values().any(|u| u.subs.values().any(|s| s.attached && s.selector.is_some()))
    }

    /// Tells every layer selector what its publisher sends on each layer now, then re-runs them all.
    pub async fn review_layers(&mut self, node: &MediaNode, now_ms: u64) {
        let mut measured: HashMap<TrackId, Vec<(String, sfu::MeasuredRate)>> = HashMap::new();
        for (track, t) in self.tracks.iter().filter(|(_, t)| !t.layers.is_empty()) {
            let Some(rates) = t.flowing.and_then(|id| node.layer_rates(id).ok()) else { continue };
            let by_rid = t.layers.iter().map(|l| (l.rid.clone(), rates[layer_of_rid(&l.rid).index()])).collect();
            measured.insert(track.clone(), by_rid);
        }
        let users: Vec<UserId> = self.users.keys().cloned().collect();
        for user in users {
            let Some(u) = self.users.get_mut(&user) else { continue };
            let mut any = false;
            for (track, sub) in u.subs.iter_mut().filter(|(_, s)| s.attached) {
                let (Some(selector), Some(rates)) = (&mut sub.selector, measured.get(track)) else { continue };
                for (rid, rate) in rates {
                    let _ = selector.set_measured(rid, rate.active, rate.bps);
                }
                any = true;
            }
            if any {
                self.choose_layers(&user, now_ms).await;
            }
        }
    }

    /// Re-runs every layer selector of `user`'s video subscriptions and carries out the switches.
    async fn choose_layers(&mut self, user: &UserId, now_ms: u64) {
        let share = self.share_bps(user, 0);
        let Some(u) = self.users.get_mut(user) else { return };
        let Some(peer) = u.subscriber.clone() else { return };
        let mut switches = Vec::new();
        for (track, sub) in u.subs.iter_mut().filter(|(_, s)| s.attached) {
            let Some(selector) = &mut sub.selector else { continue };
            let want = Constraints { max_width: sub.max_width, max_height: sub.max_height, available_bps: share };
            if let Some(switch) = selector.update(want, now_ms) {
                if let Some(id) = self.tracks.get(track).and_then(|t| t.flowing) {
                    switches.push((id, switch.to.as_deref().map(layer_of_rid)));
                }
            }
        }
        for (id, layer) in switches {
            metrics::counter!("hub_meeting_layer_switches_total").increment(1);
            tracing::debug!(%user, track = id.0, ?layer, "layer switch");
            if let Err(e) = peer.set_layer(id, layer).await {
                tracing::debug!(%user, error = %e, "layer switch");
            }
        }
    }

    async fn set_muted(&mut self, track: &TrackId, muted: bool) {
        let Some(t) = self.tracks.get_mut(track) else { return };
        t.muted = muted;
        let (Some(id), Some(peer)) = (t.flowing, self.users.get(&t.owner).and_then(|u| u.publisher.clone())) else {
            return;
        };
        if let Err(e) = peer.set_muted(id, muted).await {
            tracing::debug!(%track, error = %e, "mute");
        }
    }

    /// A track (or one more of its simulcast encodings) began to flow on `user`'s publisher
    /// connection `peer`: attach it to the subscriptions waiting for it. Held offers go out now;
    /// the other subscribers are for the room to renegotiate.
    pub async fn track_flowing(
        &mut self,
        media_node: &MediaNode,
        room: &RoomId,
        user: &UserId,
        peer: PeerId,
        t: PublishedTrack,
        now_ms: u64,
    ) -> FollowUp {
        let mut follow = FollowUp::default();
        let current = self.users.get(user).and_then(|u| u.publisher.as_ref()).map(Peer::id);
        if current != Some(peer) {
            return follow;
        }
        if self.tracks.values().any(|m| m.flowing == Some(t.track)) {
            // Another encoding of a track already attached.
            return follow;
        }
        let video = t.kind == MediaKind::Video;
        let mine = |m: &TrackMedia| &m.owner == user && m.flowing.is_none();
        let by_cid = self.tracks.iter().find(|(_, m)| mine(m) && m.cid == t.client_id).map(|(id, _)| id.clone());
        let by_kind = || {
            let mut candidates: Vec<&TrackId> =
                self.tracks.iter().filter(|(_, m)| mine(m) && m.kind.is_video() == video).map(|(id, _)| id).collect();
            // Room track ids are issued in order ("t1", "t2", ...): the oldest announcement first.
            candidates.sort_by_key(|id| id.as_str().trim_start_matches('t').parse::<u64>().unwrap_or(u64::MAX));
            candidates.first().map(|id| (*id).clone())
        };
        let Some(track) = by_cid.or_else(by_kind) else {
            tracing::info!(%user, cid = %t.client_id, "a track nobody announced: not forwarded");
            metrics::counter!("hub_meeting_unannounced_tracks_total").increment(1);
            return follow;
        };
        let muted = {
            let m = self.tracks.get_mut(&track).expect("found above");
            m.flowing = Some(t.track);
            m.muted
        };
        if let (Some(mix), MediaKind::Audio) = (self.mix, t.kind) {
            if let Err(e) = media_node.mix_add_track(mix, t.track) {
                tracing::warn!(%track, error = %e, "not mixed");
            }
        }
        if muted {
            if let Some(p) = self.users.get(user).and_then(|u| u.publisher.clone()) {
                let _ = p.set_muted(t.track, true).await;
            }
        }
        let waiting: Vec<UserId> = self
            .users
            .iter()
            .filter(|(_, u)| u.subs.get(&track).is_some_and(|s| !s.attached))
            .map(|(who, _)| who.clone())
            .collect();
        for who in waiting {
            if !self.attach(&who, &track, now_ms).await {
                continue;
            }
            let held = self.users.get_mut(&who).map(|u| std::mem::take(&mut u.offer_held)).unwrap_or(false);
            match self.users.get(&who).and_then(|u| u.subscriber.clone()) {
                Some(peer) if held => self.offer(&who, room, &peer).await,
                _ => follow.renegotiate.push(who),
            }
        }
        follow
    }

    /// A subscriber connection's new REMB estimate.
    pub async fn estimate(&mut self, user: &UserId, peer: PeerId, bps: u64, now_ms: u64) {
        let Some(u) = self.users.get_mut(user) else { return };
        if u.subscriber.as_ref().map(Peer::id) != Some(peer) {
            return;
        }
        u.estimate_bps = Some(bps);
        self.choose_layers(user, now_ms).await;
    }

    /// Takes the audio levels read since the last call into the speaker choice; returns the new
    /// active speaker when it changed (`Some(None)`: nobody speaks any more).
    pub fn poll_speaker(&mut self, media: &Media) -> Option<Option<UserId>> {
        let before = self.speaker.active().cloned();
        for t in self.tracks.values().filter(|t| t.kind == TrackKind::Audio) {
            let Some(id) = t.flowing else { continue };
            for (at, level) in media.node.take_levels(id).unwrap_or_default() {
                self.speaker.observe(&t.owner, level, at);
            }
        }
        self.speaker.poll(media.node.now_ms());
        let after = self.speaker.active().cloned();
        (after != before).then_some(after)
    }

    /// Whether any track of the room carries audio (the speaker loop skips the others).
    pub fn has_audio(&self) -> bool {
        self.tracks.values().any(|t| t.kind == TrackKind::Audio && t.flowing.is_some())
    }
}

impl UserMedia {
    async fn close(self) {
        if let Some(p) = self.publisher {
            p.close().await;
        }
        if let Some(p) = self.subscriber {
            p.close().await;
        }
    }
}

/// Media is off on this node.
pub fn unavailable() -> HubError {
    HubError::new(ErrorCode::MediaUnavailable, "this node carries no media (media.enabled is off or its port is taken)")
}
