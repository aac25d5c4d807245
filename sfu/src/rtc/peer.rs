//! One participant's peer connection: signalling, subscriptions, events and closing.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::TrackLocal;

use super::mix::MixId;
use super::sink::SubscriptionTrack;
use super::track::{on_remote_track, read_subscriber_rtcp, Published};
use super::{lock, MediaError, NodeInner, PeerEvent, PeerId, TrackId};
use crate::{Layer, SubscriberId};

/// One participant's peer connection. Cheap to clone; closed when the last clone is dropped.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<PeerInner>,
}

pub(super) type EventSink = Arc<Mutex<Option<mpsc::Sender<PeerEvent>>>>;

pub(super) struct PeerInner {
    pub(super) id: PeerId,
    pub(super) node: Arc<NodeInner>,
    pub(super) pc: Arc<RTCPeerConnection>,
    pub(super) events: EventSink,
    /// The client's track id (msid) → the node's name for it.
    pub(super) published: Mutex<HashMap<String, TrackId>>,
    subscriptions: Mutex<HashMap<TrackId, Subscription>>,
    /// The mixes this peer listens to, by the sender of each.
    mix_subscriptions: Mutex<HashMap<MixId, Arc<RTCRtpSender>>>,
    pub(super) closed: AtomicBool,
    /// The last REMB estimate reported, in bps.
    estimate: Arc<AtomicU64>,
    /// Whether the connection is up (ICE and DTLS): subscriptions start only then.
    connected: watch::Sender<bool>,
}

struct Subscription {
    subscriber: SubscriberId,
    sender: Arc<RTCRtpSender>,
    track: Weak<Published>,
    start: Arc<Mutex<Start>>,
    /// Dropped with the subscription, which ends its start task if the sender never started.
    _cancel: oneshot::Sender<()>,
}

/// A subscription is paused until its sender is bound to a connected transport (negotiated, and the
/// connection up): a keyframe asked for earlier could be forwarded before the subscriber can decrypt
/// it, leaving it waiting for the next one, which the keyframe throttle delays.
struct Start {
    started: bool,
    layer: Option<Layer>,
}

impl Peer {
    pub(super) fn open(id: PeerId, node: Arc<NodeInner>, pc: RTCPeerConnection) -> (Peer, mpsc::Receiver<PeerEvent>) {
        let (tx, rx) = mpsc::channel(node.event_capacity);
        let inner = Arc::new(PeerInner {
            id,
            node,
            pc: Arc::new(pc),
            events: Arc::new(Mutex::new(Some(tx))),
            published: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
            mix_subscriptions: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            estimate: Arc::new(AtomicU64::new(0)),
            connected: watch::Sender::new(false),
        });
        install_handlers(&inner);
        (Peer { inner }, rx)
    }

    pub(super) fn downgrade(&self) -> Weak<PeerInner> {
        Arc::downgrade(&self.inner)
    }

    pub fn id(&self) -> PeerId {
        self.inner.id
    }

    /// Answers the client's offer (its published tracks, or any renegotiation it starts).
    pub async fn accept_offer(&self, sdp: String) -> Result<String, MediaError> {
        let pc = &self.inner.pc;
        pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
        let answer = pc.create_answer(None).await?;
        self.set_local(answer).await
    }

    /// An offer for the client, after subscriptions changed; answer it with [`Peer::apply_answer`].
    pub async fn create_offer(&self) -> Result<String, MediaError> {
        let offer = self.inner.pc.create_offer(None).await?;
        self.set_local(offer).await
    }

    /// Applies the client's answer to [`Peer::create_offer`]; subscriptions it carries start.
    pub async fn apply_answer(&self, sdp: String) -> Result<(), MediaError> {
        self.inner.pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
        Ok(())
    }

    /// A remote ICE candidate, as the JSON of an `RTCIceCandidateInit`.
    pub async fn add_candidate(&self, json: &str) -> Result<(), MediaError> {
        let candidate: RTCIceCandidateInit = serde_json::from_str(json)?;
        self.inner.pc.add_ice_candidate(candidate).await?;
        Ok(())
    }

    /// Sends `track` to this peer, from `layer` on (`None`: paused), named `label` in the SDP (both
    /// the stream and the track id of its `msid`). Takes effect after the next offer
    /// ([`Peer::create_offer`]) is answered.
    pub async fn subscribe(&self, track: TrackId, layer: Option<Layer>, label: &str) -> Result<(), MediaError> {
        let published = self.inner.node.track(track)?;
        if lock(&self.inner.subscriptions).contains_key(&track) {
            return Err(MediaError::AlreadySubscribed(track));
        }
        let local = Arc::new(SubscriptionTrack::new(published.capability.clone(), label));
        let sender = self.inner.pc.add_track(local.clone() as Arc<dyn TrackLocal + Send + Sync>).await?;
        let ssrc = sender.get_parameters().await.encodings.first().map_or(0, |e| e.ssrc);
        let subscriber = SubscriberId(self.inner.node.next_id());
        let now = self.inner.node.now_ms();
        let (added, _) = published.feed(|f| f.add_subscriber(subscriber, ssrc, None, now).is_ok());
        if !added {
            let _ = self.inner.pc.remove_track(&sender).await;
            return Err(MediaError::AlreadySubscribed(track));
        }
        lock(&published.sinks).insert(subscriber, local);
        let start = Arc::new(Mutex::new(Start { started: false, layer }));
        let (cancel, cancelled) = oneshot::channel();
        let node = self.inner.node.clone();
        tokio::spawn(start_subscription(
            sender.clone(),
            self.inner.connected.subscribe(),
            Arc::downgrade(&published),
            subscriber,
            start.clone(),
            cancelled,
            node.clone(),
        ));
        let estimates = (self.inner.events.clone(), self.inner.estimate.clone());
        tokio::spawn(read_subscriber_rtcp(sender.clone(), Arc::downgrade(&published), subscriber, node, estimates));
        let subscription =
            Subscription { subscriber, sender, track: Arc::downgrade(&published), start, _cancel: cancel };
        let raced = {
            let mut subscriptions = lock(&self.inner.subscriptions);
            match subscriptions.entry(track) {
                Entry::Occupied(_) => Some(subscription),
                Entry::Vacant(slot) => {
                    slot.insert(subscription);
                    None
                }
            }
        };
        if let Some(subscription) = raced {
            // A concurrent `subscribe` to the same track won.
            subscription.leave();
            let _ = self.inner.pc.remove_track(&subscription.sender).await;
            return Err(MediaError::AlreadySubscribed(track));
        }
        Ok(())
    }

    /// Stops sending `track` to this peer; renegotiate ([`Peer::create_offer`]) to remove it from the SDP.
    pub async fn unsubscribe(&self, track: TrackId) -> Result<(), MediaError> {
        let subscription = lock(&self.inner.subscriptions).remove(&track).ok_or(MediaError::NotSubscribed(track))?;
        subscription.leave();
        self.inner.pc.remove_track(&subscription.sender).await?;
        Ok(())
    }

    /// Sends the room mix `mix` to this peer (a subscriber connection), named `label` in the SDP (both
    /// the stream and the track id of its `msid`). Takes effect after the next offer
    /// ([`Peer::create_offer`]) is answered.
    pub async fn subscribe_mix(&self, mix: MixId, label: &str) -> Result<(), MediaError> {
        let local = self.inner.node.mix(mix)?.labeled(label);
        if lock(&self.inner.mix_subscriptions).contains_key(&mix) {
            return Err(MediaError::AlreadyListening(mix));
        }
        let sender = self.inner.pc.add_track(local).await?;
        let reader = sender.clone();
        // Reading runs the interceptors (receiver reports); nothing in a listener's RTCP is for the mix.
        tokio::spawn(async move { while reader.read_rtcp().await.is_ok() {} });
        let raced = match lock(&self.inner.mix_subscriptions).entry(mix) {
            Entry::Occupied(_) => true,
            Entry::Vacant(slot) => {
                slot.insert(sender.clone());
                false
            }
        };
        if raced {
            // A concurrent `subscribe_mix` to the same mix won.
            let _ = self.inner.pc.remove_track(&sender).await;
            return Err(MediaError::AlreadyListening(mix));
        }
        Ok(())
    }

    /// Stops sending `mix` to this peer; renegotiate ([`Peer::create_offer`]) to remove it from the SDP.
    pub async fn unsubscribe_mix(&self, mix: MixId) -> Result<(), MediaError> {
        let sender = lock(&self.inner.mix_subscriptions).remove(&mix).ok_or(MediaError::NotListening(mix))?;
        self.inner.pc.remove_track(&sender).await?;
        Ok(())
    }

    /// Sets the simulcast layer this peer receives of `track` (`None`: paused).
    pub async fn set_layer(&self, track: TrackId, layer: Option<Layer>) -> Result<(), MediaError> {
        let (subscriber, published, start) = {
            let mut subscriptions = lock(&self.inner.subscriptions);
            let s = subscriptions.get_mut(&track).ok_or(MediaError::NotSubscribed(track))?;
            (s.subscriber, s.track.upgrade().ok_or(MediaError::UnknownTrack(track))?, s.start.clone())
        };
        let actions = {
            let mut start = lock(&start);
            if !start.started {
                start.layer = layer;
                return Ok(());
            }
            let now = self.inner.node.now_ms();
            published.feed(|f| f.set_target_layer(subscriber, layer, now)).1
        };
        published.perform(actions).await;
        Ok(())
    }

    /// Mutes or unmutes a track this peer publishes, for all its subscribers.
    pub async fn set_muted(&self, track: TrackId, muted: bool) -> Result<(), MediaError> {
        let published = self.inner.node.track(track)?;
        if published.publisher != self.inner.id {
            return Err(MediaError::NotPublisher(track));
        }
        let now = self.inner.node.now_ms();
        let (_, actions) = published.feed(|f| {
            f.set_muted(muted);
            if !muted {
                f.request_keyframes(now);
            }
        });
        published.perform(actions).await;
        Ok(())
    }

    /// Unpublishes this peer's tracks (taking them out of their mixes), leaves its subscriptions and
    /// mixes, closes the connection and the event channel.
    pub async fn close(&self) {
        self.inner.close().await;
    }

    async fn set_local(&self, description: RTCSessionDescription) -> Result<String, MediaError> {
        let pc = &self.inner.pc;
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(description).await?;
        // Host candidates on the muxed port are known at once; the cap only guards a stuck gatherer.
        let _ = tokio::time::timeout(Duration::from_secs(2), gathered.recv()).await;
        Ok(pc.local_description().await.ok_or(MediaError::NoLocalDescription)?.sdp)
    }
}

impl Subscription {
    fn leave(&self) {
        if let Some(published) = self.track.upgrade() {
            published.feed(|f| f.remove_subscriber(self.subscriber));
            lock(&published.sinks).remove(&self.subscriber);
        }
    }
}

impl PeerInner {
    /// The part of closing that needs no `.await`; true the first time.
    fn detach(&self) -> bool {
        if self.closed.swap(true, Ordering::SeqCst) {
            return false;
        }
        lock(&self.events).take();
        let unpublished: Vec<Arc<Published>> = {
            // This order (the peer's, then the node's) is also `on_remote_track`'s, which publishes
            // nothing once `closed` is set.
            let published = lock(&self.published);
            let mut tracks = lock(&self.node.tracks);
            published.values().filter_map(|id| tracks.remove(id)).collect()
        };
        for published in unpublished {
            let Some(audio) = &published.audio else { continue };
            let mixes = std::mem::take(&mut *lock(&audio.mixes));
            for mix in mixes.iter().filter_map(Weak::upgrade) {
                lock(&mix.mixer).remove_source(&published.id);
            }
        }
        for (_, subscription) in lock(&self.subscriptions).drain() {
            subscription.leave();
        }
        // Their senders stop as the connection closes.
        lock(&self.mix_subscriptions).clear();
        let mut peers = lock(&self.node.peers);
        if peers.get(&self.id).is_some_and(|p| std::ptr::eq(p.as_ptr(), self)) {
            peers.remove(&self.id);
        }
        true
    }

    pub(super) async fn close(&self) {
        if self.detach() {
            let _ = self.pc.close().await;
        }
    }
}

impl Drop for PeerInner {
    fn drop(&mut self) {
        if self.detach() {
            let pc = self.pc.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = pc.close().await;
                });
            }
        }
    }
}

fn install_handlers(peer: &Arc<PeerInner>) {
    let pc = &peer.pc;
    let events = peer.events.clone();
    pc.on_ice_candidate(Box::new(move |candidate| {
        let events = events.clone();
        Box::pin(async move {
            let Some(json) = candidate.and_then(|c| c.to_json().ok()).and_then(|c| serde_json::to_string(&c).ok())
            else {
                return;
            };
            emit(&events, PeerEvent::LocalCandidate(json)).await;
        })
    }));
    let events = peer.events.clone();
    let weak = Arc::downgrade(peer);
    pc.on_peer_connection_state_change(Box::new(move |state| {
        if let Some(peer) = weak.upgrade() {
            peer.connected.send_replace(state == RTCPeerConnectionState::Connected);
        }
        let events = events.clone();
        Box::pin(async move { emit(&events, PeerEvent::ConnectionState(state)).await })
    }));
    let weak = Arc::downgrade(peer);
    pc.on_track(Box::new(move |track, _receiver, _transceiver| {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(peer) = weak.upgrade() {
                on_remote_track(peer, track).await;
            }
        })
    }));
}

pub(super) async fn emit(events: &EventSink, event: PeerEvent) {
    let tx = lock(events).clone();
    if let Some(tx) = tx {
        let _ = tx.send(event).await;
    }
}

/// Starts a subscription on its layer once its sender is bound, unless it is dropped first.
async fn start_subscription(
    sender: Arc<RTCRtpSender>,
    mut connected: watch::Receiver<bool>,
    published: Weak<Published>,
    subscriber: SubscriberId,
    start: Arc<Mutex<Start>>,
    cancelled: oneshot::Receiver<()>,
    node: Arc<NodeInner>,
) {
    let up = async {
        sender.wait_for_send().await;
        // Err: the peer is gone.
        connected.wait_for(|&up| up).await.is_ok()
    };
    tokio::select! {
        up = up => if !up { return },
        _ = cancelled => return,
    }
    drop(sender);
    let Some(published) = published.upgrade() else { return };
    let actions = {
        let mut start = lock(&start);
        start.started = true;
        let now = node.now_ms();
        published.feed(|f| f.set_target_layer(subscriber, start.layer, now)).1
    };
    published.perform(actions).await;
}
