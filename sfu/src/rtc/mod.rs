//! The WebRTC adapter: peer connections on the callback-driven `webrtc` crate (0.17), carrying the
//! sans-I/O [`Forwarder`](crate::Forwarder)s' input and output. This is the only module that knows
//! `webrtc`.
//!
//! Shape (after mediasoup's handles): a [`MediaNode`] per process owns the `webrtc` API and one UDP
//! port shared by every peer (ICE UDP mux); [`MediaNode::peer`] makes a [`Peer`] per participant. Both
//! are cheap `Clone` handles over shared state; the node holds its peers weakly, and dropping the last
//! handle of a peer closes it as [`Peer::close`] does.
//!
//! Contract:
//! - **Signalling** is the hub's: it carries SDP and candidates. A client offers what it publishes
//!   ([`Peer::accept_offer`]); the server offers when the peer's subscriptions change
//!   ([`Peer::create_offer`], then [`Peer::apply_answer`]). Both return a complete SDP (candidates
//!   included, gathering on the muxed port is immediate); local candidates are also reported as
//!   [`PeerEvent::LocalCandidate`] for clients that trickle.
//! - **Events** of a peer arrive in order on a bounded channel. Their producer (the `webrtc` callback)
//!   waits while the channel is full: a hub that stops reading stalls only that peer. The channel
//!   closes when the peer is closed.
//! - **Tracks.** Each track a client publishes gets a node-wide [`TrackId`] and one
//!   [`Forwarder`](crate::Forwarder); each of its simulcast encodings (rid "q", "h", "f", lowest first;
//!   none without simulcast) is read by its own task and fed to the forwarder as a
//!   [`Layer`](crate::Layer). A subscription is a `sendonly` track on the subscriber's connection; it
//!   stays paused until its sender is bound to a connected transport (after the offer carrying it is
//!   answered), so that the keyframe its start asks for reaches the subscriber.
//! - **SSRC and payload type.** A subscription's track (`sink::SubscriptionTrack`, one binding, no
//!   copies) rewrites both to what its binding negotiated. Its forwarder SSRC is the sender's own, so
//!   that rewrite changes nothing; the payload type is the publisher's until the binding maps it to the
//!   subscriber's (same codec: the subscription uses the publisher's codec capability).
//! - **Feedback.** webrtc-rs's NACK responder is not registered: NACKs, PLIs and FIRs read from a
//!   subscription's sender go to its forwarder, which answers NACKs from its own buffer and asks the
//!   publisher for keyframes (within its throttle) through `write_rtcp` on the publisher's connection.
//!   Towards publishers the default NACK generator and RTCP reports run.
//! - **Locks.** Forwarders sit behind a `std::sync::Mutex`, held only to feed them and drain their
//!   output, never across an `.await`; the packets are written after it is released.
//! - **Shutdown.** Closing a peer unpublishes its tracks, leaves its subscriptions and closes its
//!   connection: its reading tasks end as their tracks and senders stop. A subscriber of a track whose
//!   publisher left keeps a silent track until the hub calls [`Peer::unsubscribe`] and renegotiates.
//! - **Audio levels.** Each packet of a published audio track read while it is not muted gets a level
//!   from a [`LevelSource`](crate::audio::LevelSource): its RFC 6464 extension if the publisher
//!   negotiated one, else its decoded Opus payload (rate-bounded). The latest [`LEVELS_KEPT`] wait
//!   for [`MediaNode::take_levels`]. The forwarder is given no extension id, so nothing counts twice.
//! - **Room mix.** [`MediaNode::create_mix`] makes an [`AudioMixer`](crate::audio::AudioMixer) ticked
//!   every 20 ms by its own task, which writes its Opus packets to one outgoing track shared by every
//!   listener ([`Peer::subscribe_mix`], each under its own label; `TrackLocalStaticRTP` rewrites SSRC
//!   and payload type per listener, the mixer's sequence numbers and timestamps pass unchanged).
//!   Published audio added with [`MediaNode::mix_add_track`] feeds the mixer from the same reading
//!   task as its forwarder, while not muted. A mix sums at most [`MAX_MIX_SOURCES`] tracks; closing a
//!   publisher's peer removes its tracks from every mix; a listener of a closed mix keeps a silent
//!   track until [`Peer::unsubscribe_mix`] and a renegotiation.
//!
//! Files: this one (the node, its configuration, names and events), [`Peer`] in `peer`, the
//! published track and its reading tasks in `track`, the room mix in `mix`, codecs and interceptors
//! in `engine`.

mod engine;
mod mix;
mod peer;
mod sink;
mod track;

pub use mix::{MixId, MAX_MIX_SOURCES};
pub use peer::Peer;
pub use track::{layer_of_rid, LEVELS_KEPT};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::sync::mpsc;

use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_mux::{UDPMux, UDPMuxDefault, UDPMuxParams};
use webrtc::ice::udp_network::UDPNetwork;
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;

use crate::audio::MixerError;
use engine::{interceptors, register_codecs};
use mix::Mix;
use peer::PeerInner;
use track::Published;

/// How the node listens and what it announces.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// The one UDP address of all peers (port 0: any free port). A specific IP is the only one
    /// announced (unless `announced_ips` says otherwise); an unspecified one announces every interface's.
    pub bind: SocketAddr,
    /// Public IPs of a 1:1 NAT in front of the node, announced instead of the local ones.
    pub announced_ips: Vec<IpAddr>,
    /// Capacity of each peer's event channel.
    pub event_capacity: usize,
}

impl MediaConfig {
    pub fn new(bind: SocketAddr) -> Self {
        MediaConfig { bind, announced_ips: Vec::new(), event_capacity: 64 }
    }
}

/// A participant's connection, named by the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// A published track, named by the node (shared by all its simulcast encodings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

/// One encoding of a track a client published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    pub track: TrackId,
    pub kind: MediaKind,
    /// As negotiated, e.g. "video/VP8".
    pub mime_type: String,
    /// The client's id of the track: the track id of its `msid` (a browser's `MediaStreamTrack.id`).
    pub client_id: String,
    /// The simulcast encoding, if the track has several.
    pub rid: Option<String>,
    pub ssrc: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// A local ICE candidate, as the JSON of an `RTCIceCandidateInit`.
    LocalCandidate(String),
    ConnectionState(RTCPeerConnectionState),
    /// One encoding of a published track began; a simulcast track reports each of its encodings.
    TrackPublished(PublishedTrack),
    /// The client's estimate of what it can receive (its REMB), in bits per second: on subscriber
    /// connections, whenever the estimate changes.
    Estimate(u64),
}

/// What a peer connection is for. Publisher connections negotiate transport-wide congestion control
/// (the client estimates its uplink from our feedback); subscriber connections negotiate REMB
/// instead, so that the client reports its downlink estimate ([`PeerEvent::Estimate`]), which the
/// hub's layer choice reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Publisher,
    Subscriber,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("binding the media port: {0}")]
    Bind(#[from] std::io::Error),
    #[error(transparent)]
    WebRtc(#[from] webrtc::Error),
    #[error("bad ICE candidate: {0}")]
    Candidate(#[from] serde_json::Error),
    #[error("no track {0:?}")]
    UnknownTrack(TrackId),
    #[error("track {0:?} is not published by this peer")]
    NotPublisher(TrackId),
    #[error("peer {0:?} already exists")]
    DuplicatePeer(PeerId),
    #[error("already subscribed to {0:?}")]
    AlreadySubscribed(TrackId),
    #[error("not subscribed to {0:?}")]
    NotSubscribed(TrackId),
    #[error("no local description")]
    NoLocalDescription,
    #[error("no mix {0:?}")]
    UnknownMix(MixId),
    #[error("track {0:?} is not audio")]
    NotAudio(TrackId),
    #[error("track {0:?} is already in the mix")]
    AlreadyMixed(TrackId),
    #[error("track {0:?} is not in the mix")]
    NotMixed(TrackId),
    #[error("mix {0:?} has {MAX_MIX_SOURCES} tracks already")]
    MixFull(MixId),
    #[error("already listening to {0:?}")]
    AlreadyListening(MixId),
    #[error("not listening to {0:?}")]
    NotListening(MixId),
    #[error("audio codec: {0}")]
    Mixer(MixerError),
}

/// The media side of one process. Cheap to clone.
#[derive(Clone)]
pub struct MediaNode {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    api: API,
    subscriber_api: API,
    mux: Arc<UDPMuxDefault>,
    local_addr: SocketAddr,
    event_capacity: usize,
    epoch: Instant,
    next_id: AtomicU64,
    peers: Mutex<HashMap<PeerId, Weak<PeerInner>>>,
    tracks: Mutex<HashMap<TrackId, Arc<Published>>>,
    mixes: Mutex<HashMap<MixId, Arc<Mix>>>,
}

impl NodeInner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn track(&self, id: TrackId) -> Result<Arc<Published>, MediaError> {
        lock(&self.tracks).get(&id).cloned().ok_or(MediaError::UnknownTrack(id))
    }

    fn mix(&self, id: MixId) -> Result<Arc<Mix>, MediaError> {
        lock(&self.mixes).get(&id).cloned().ok_or(MediaError::UnknownMix(id))
    }
}

impl Drop for NodeInner {
    /// The mux's reading task holds the mux: without a close it would outlive the node.
    fn drop(&mut self) {
        let mux = self.mux.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = mux.close().await;
            });
        }
    }
}

impl MediaNode {
    /// Binds the media port and builds the `webrtc` API (codecs, feedback, extensions, interceptors).
    pub async fn new(config: MediaConfig) -> Result<MediaNode, MediaError> {
        let socket = tokio::net::UdpSocket::bind(config.bind).await?;
        let local_addr = socket.local_addr()?;
        let mux = UDPMuxDefault::new(UDPMuxParams::new(socket));

        let mut settings = SettingEngine::default();
        settings.set_udp_network(UDPNetwork::Muxed(mux.clone()));
        // Host candidates only, named by IP: no mDNS names that a server's clients could not resolve.
        settings.set_ice_multicast_dns_mode(webrtc::ice::mdns::MulticastDnsMode::Disabled);
        let ip = local_addr.ip();
        // The socket has one address family; candidates of the other would be dead.
        settings.set_network_types(vec![if ip.is_ipv4() { NetworkType::Udp4 } else { NetworkType::Udp6 }]);
        if !ip.is_unspecified() {
            // Only the bound IP can receive; announcing the others would offer dead candidates.
            settings.set_ip_filter(Box::new(move |candidate| candidate == ip));
            settings.set_include_loopback_candidate(ip.is_loopback());
        }
        if !config.announced_ips.is_empty() {
            let ips = config.announced_ips.iter().map(IpAddr::to_string).collect();
            settings.set_nat_1to1_ips(ips, RTCIceCandidateType::Host);
        }

        let build = |role| -> Result<API, MediaError> {
            let mut media = MediaEngine::default();
            register_codecs(&mut media, role)?;
            Ok(APIBuilder::new()
                .with_media_engine(media)
                .with_interceptor_registry(interceptors(Registry::new(), role))
                .with_setting_engine(settings.clone())
                .build())
        };
        let api = build(PeerRole::Publisher)?;
        let subscriber_api = build(PeerRole::Subscriber)?;
        Ok(MediaNode {
            inner: Arc::new(NodeInner {
                api,
                subscriber_api,
                mux,
                local_addr,
                event_capacity: config.event_capacity.max(1),
                epoch: Instant::now(),
                next_id: AtomicU64::new(1),
                peers: Mutex::new(HashMap::new()),
                tracks: Mutex::new(HashMap::new()),
                mixes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The UDP address all peers share.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// How many RTP packets of `track` the node has read from its publisher (and acted upon: forwarded,
    /// dropped or held back by mute), over all its encodings.
    pub fn received_packets(&self, track: TrackId) -> Result<u64, MediaError> {
        Ok(self.inner.track(track)?.received.load(Ordering::Acquire))
    }

    /// The audio levels read from `track` since the last call (at most the latest
    /// [`LEVELS_KEPT`]), with the node's time of each in ms ([`MediaNode::now_ms`]): one per packet
    /// read while not muted, from its RFC 6464 extension or else its decoded payload (a packet over
    /// the decoding budget, padding or a payload libopus refuses has none). Empty for video.
    pub fn take_levels(&self, track: TrackId) -> Result<Vec<(u64, crate::AudioLevel)>, MediaError> {
        Ok(lock(&self.inner.track(track)?.levels).drain(..).collect())
    }

    /// What the publisher of `track` sends on each simulcast layer, lowest first ([`crate::rate`]).
    pub fn layer_rates(&self, track: TrackId) -> Result<[crate::MeasuredRate; crate::Layer::COUNT], MediaError> {
        let published = self.inner.track(track)?;
        let now = self.inner.now_ms();
        let rates = lock(&published.forwarder).layer_rates(now);
        Ok(rates)
    }

    /// The node's monotonic clock, in ms.
    pub fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    /// A new room mix, silent until tracks are added and listeners subscribe.
    pub fn create_mix(&self) -> Result<MixId, MediaError> {
        let id = MixId(self.inner.next_id());
        let mix = Mix::start(id)?;
        lock(&self.inner.mixes).insert(id, mix);
        Ok(id)
    }

    /// Adds a published audio track to `mix`: its packets read from now on while it is not muted
    /// are mixed (after the mixer's jitter buffer fills).
    pub fn mix_add_track(&self, mix: MixId, track: TrackId) -> Result<(), MediaError> {
        let shared = self.inner.mix(mix)?;
        let published = self.inner.track(track)?;
        let audio = published.audio.as_ref().ok_or(MediaError::NotAudio(track))?;
        {
            let mut mixer = lock(&shared.mixer);
            if mixer.source_count() >= MAX_MIX_SOURCES {
                return Err(MediaError::MixFull(mix));
            }
            mixer.add_source(track).map_err(|e| match e {
                MixerError::DuplicateSource => MediaError::AlreadyMixed(track),
                e => MediaError::Mixer(e),
            })?;
        }
        lock(&audio.mixes).push(Arc::downgrade(&shared));
        // Closing the publisher removes its tracks from the node, then from their mixes: if that
        // ran between the lookup above and the push, this source would be left behind.
        let live = lock(&self.inner.tracks).get(&track).is_some_and(|p| Arc::ptr_eq(p, &published));
        if !live {
            lock(&shared.mixer).remove_source(&track);
            return Err(MediaError::UnknownTrack(track));
        }
        Ok(())
    }

    /// Takes `track` out of `mix`, with what the mixer buffered of it.
    pub fn mix_remove_track(&self, mix: MixId, track: TrackId) -> Result<(), MediaError> {
        let shared = self.inner.mix(mix)?;
        let removed = lock(&shared.mixer).remove_source(&track);
        if let Some(audio) = self.inner.track(track).ok().as_ref().and_then(|p| p.audio.as_ref()) {
            let weak = Arc::downgrade(&shared);
            lock(&audio.mixes).retain(|m| !m.ptr_eq(&weak));
        }
        if removed {
            Ok(())
        } else {
            Err(MediaError::NotMixed(track))
        }
    }

    /// Ends `mix`: its task stops within a tick; its listeners keep a silent track until they
    /// unsubscribe ([`Peer::unsubscribe_mix`]).
    pub fn close_mix(&self, mix: MixId) -> Result<(), MediaError> {
        lock(&self.inner.mixes).remove(&mix).map(drop).ok_or(MediaError::UnknownMix(mix))
    }

    /// A new peer connection for participant `id`, and the channel of its events.
    pub async fn peer(&self, id: PeerId, role: PeerRole) -> Result<(Peer, mpsc::Receiver<PeerEvent>), MediaError> {
        let live = |peers: &HashMap<PeerId, Weak<PeerInner>>| peers.get(&id).is_some_and(|p| p.strong_count() > 0);
        if live(&lock(&self.inner.peers)) {
            return Err(MediaError::DuplicatePeer(id));
        }
        let api = match role {
            PeerRole::Publisher => &self.inner.api,
            PeerRole::Subscriber => &self.inner.subscriber_api,
        };
        let pc = api.new_peer_connection(RTCConfiguration::default()).await?;
        let (peer, events) = Peer::open(id, self.inner.clone(), pc);
        let mut peers = lock(&self.inner.peers);
        if live(&peers) {
            drop(peers);
            // Another call made this peer meanwhile; this one closes as it drops.
            return Err(MediaError::DuplicatePeer(id));
        }
        peers.insert(id, peer.downgrade());
        Ok((peer, events))
    }

    /// Closes every peer and mix, then the media port.
    pub async fn close(&self) {
        let peers: Vec<_> = lock(&self.inner.peers).drain().filter_map(|(_, p)| p.upgrade()).collect();
        for peer in peers {
            peer.close().await;
        }
        lock(&self.inner.mixes).clear();
        let _ = self.inner.mux.close().await;
    }
}

/// A poisoned lock only means another task panicked mid-update; the maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
