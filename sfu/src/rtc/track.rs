//! A published track: its forwarder, the tasks that read the publisher's RTP and the subscribers'
//! RTCP into it, and the writes its output asks for; for audio, its levels and the mixes it feeds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtp::packet::Packet;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::sdp::extmap;
use webrtc::track::track_remote::TrackRemote;

use super::mix::Mix;
use super::peer::{emit, EventSink, PeerInner};
use super::sink::SubscriptionTrack;
use super::{lock, MediaKind, NodeInner, PeerEvent, PeerId, PublishedTrack, TrackId};
use crate::audio::{LevelConfig, LevelSource};
use crate::{AudioLevel, Codec, Forwarder, ForwarderConfig, Layer, Output, SubscriberId};

/// A published track: its forwarder and the outgoing tracks of its subscribers.
pub(super) struct Published {
    pub(super) id: TrackId,
    pub(super) publisher: PeerId,
    pub(super) capability: RTCRtpCodecCapability,
    /// For keyframe requests; weak, so that the track does not keep its publisher's connection alive.
    pub(super) publisher_pc: Weak<RTCPeerConnection>,
    pub(super) forwarder: Mutex<Forwarder>,
    /// RTP packets read from the publisher and fed to the forwarder, all encodings.
    pub(super) received: AtomicU64,
    pub(super) sinks: Mutex<HashMap<SubscriberId, Arc<SubscriptionTrack>>>,
    /// Audio levels read since the hub last took them, oldest first, with the node's time.
    pub(super) levels: Mutex<VecDeque<(u64, AudioLevel)>>,
    /// What an audio track's packets also go to, while it is not muted; `None` for video.
    pub(super) audio: Option<AudioIn>,
}

/// The audio side of a published track.
pub(super) struct AudioIn {
    /// Each packet's level: its RFC 6464 extension, else its decoded payload's. The forwarder is
    /// given no extension id, so that levels come from here only.
    level_source: Mutex<LevelSource>,
    /// The mixes this track is a source of; weak, so that closing a mix needs no visit here.
    pub(super) mixes: Mutex<Vec<Weak<Mix>>>,
}

/// How many audio levels a track keeps for the hub (about 2 s of 20 ms packets); older ones are
/// dropped when the hub takes them less often.
pub const LEVELS_KEPT: usize = 100;

/// What a forwarder's output asks for, taken out of the lock to be done with `.await`.
pub(super) enum Action {
    Rtp(Arc<SubscriptionTrack>, Packet),
    Rtcp(Box<dyn rtcp::packet::Packet + Send + Sync>),
}

impl Published {
    /// Feeds the forwarder under its lock and drains its output into what to do once it is released.
    pub(super) fn feed<R>(&self, f: impl FnOnce(&mut Forwarder) -> R) -> (R, Vec<Action>) {
        self.feed_at(0, f)
    }

    /// [`Published::feed`] at the node's time `now_ms`, which stamps the audio levels it yields.
    pub(super) fn feed_at<R>(&self, now_ms: u64, f: impl FnOnce(&mut Forwarder) -> R) -> (R, Vec<Action>) {
        let mut forwarder = lock(&self.forwarder);
        let result = f(&mut forwarder);
        let sinks = lock(&self.sinks);
        let mut actions = Vec::new();
        while let Some(output) = forwarder.poll_output() {
            match output {
                Output::Rtp { subscriber, packet, .. } => {
                    if let Some(sink) = sinks.get(&subscriber) {
                        actions.push(Action::Rtp(sink.clone(), packet));
                    }
                }
                Output::KeyframeRequest(request) => actions.push(Action::Rtcp(request.to_rtcp(0))),
                // Not produced (the forwarder has no extension id), but a level all the same.
                Output::AudioLevel(level) => self.push_level(now_ms, level),
            }
        }
        (result, actions)
    }

    fn push_level(&self, now_ms: u64, level: AudioLevel) {
        let mut levels = lock(&self.levels);
        if levels.len() == LEVELS_KEPT {
            levels.pop_front();
        }
        levels.push_back((now_ms, level));
    }

    /// An audio packet read while not muted: its level, and a copy to each mix the track is in.
    fn on_audio(&self, audio: &AudioIn, packet: &Packet, now_ms: u64) {
        let level = lock(&audio.level_source).level(packet, now_ms);
        if let Some(level) = level {
            self.push_level(now_ms, level);
        }
        let mixes: Vec<Arc<Mix>> = {
            let mut mixes = lock(&audio.mixes);
            mixes.retain(|m| m.strong_count() > 0);
            mixes.iter().filter_map(Weak::upgrade).collect()
        };
        for mix in mixes {
            // A source removed meanwhile is unknown to the mixer: nothing to do.
            let _ = lock(&mix.mixer).on_rtp(&self.id, packet);
        }
    }

    pub(super) async fn perform(&self, actions: Vec<Action>) {
        for action in actions {
            match action {
                // Errors are those of one subscriber's transport (not yet connected, closing): its
                // receiver conceals the loss, and the other subscribers must not wait for it.
                Action::Rtp(sink, packet) => {
                    let _ = sink.write(packet).await;
                }
                Action::Rtcp(packet) => {
                    if let Some(pc) = self.publisher_pc.upgrade() {
                        let _ = pc.write_rtcp(&[packet]).await;
                    }
                }
            }
        }
    }
}

/// A client's track (or one of its simulcast encodings) arrived: publish it and start reading it.
pub(super) async fn on_remote_track(peer: Arc<PeerInner>, remote: Arc<TrackRemote>) {
    let params = remote.codec();
    let capability = params.capability.clone();
    let Some(codec) = codec_of(&capability.mime_type) else { return };
    let layer = layer_of_rid(remote.rid());
    let (track, published) = {
        let mut by_client_id = lock(&peer.published);
        if peer.closed.load(Ordering::SeqCst) {
            return;
        }
        let id = *by_client_id.entry(remote.id()).or_insert_with(|| TrackId(peer.node.next_id()));
        let mut tracks = lock(&peer.node.tracks);
        let published = tracks
            .entry(id)
            .or_insert_with(|| {
                let mut config = ForwarderConfig::new(codec);
                config.clock_rate = capability.clock_rate;
                let audio = (codec == Codec::Audio).then(|| {
                    let extension_id = remote
                        .params()
                        .header_extensions
                        .iter()
                        .find(|e| e.uri == extmap::AUDIO_LEVEL_URI)
                        .and_then(|e| u8::try_from(e.id).ok());
                    AudioIn {
                        level_source: Mutex::new(LevelSource::new(LevelConfig::new(extension_id))),
                        mixes: Mutex::new(Vec::new()),
                    }
                });
                Arc::new(Published {
                    id,
                    publisher: peer.id,
                    capability: capability.clone(),
                    publisher_pc: Arc::downgrade(&peer.pc),
                    forwarder: Mutex::new(Forwarder::new(config)),
                    received: AtomicU64::new(0),
                    sinks: Mutex::new(HashMap::new()),
                    levels: Mutex::new(VecDeque::new()),
                    audio,
                })
            })
            .clone();
        (id, published)
    };
    let kind = if remote.kind() == RTPCodecType::Audio { MediaKind::Audio } else { MediaKind::Video };
    let rid = Some(remote.rid().to_owned()).filter(|r| !r.is_empty());
    let client_id = remote.id();
    let node = peer.node.clone();
    let events = peer.events.clone();
    drop(peer);
    tokio::spawn(read_publisher_rtp(remote.clone(), layer, published, node));
    let event = PublishedTrack { track, kind, mime_type: capability.mime_type, client_id, rid, ssrc: remote.ssrc() };
    emit(&events, PeerEvent::TrackPublished(event)).await;
}

/// Reads one encoding of a published track into its forwarder (and, for audio not muted, into its
/// levels and mixes), until the track ends.
async fn read_publisher_rtp(remote: Arc<TrackRemote>, layer: Layer, published: Arc<Published>, node: Arc<NodeInner>) {
    while let Ok((packet, _)) = remote.read_rtp().await {
        let now = node.now_ms();
        let (muted, actions) = published.feed_at(now, |f| {
            f.on_rtp(layer, &packet, now);
            f.is_muted()
        });
        published.perform(actions).await;
        if let (false, Some(audio)) = (muted, &published.audio) {
            published.on_audio(audio, &packet, now);
        }
        published.received.fetch_add(1, Ordering::Release);
    }
}

/// Reads a subscription's RTCP (its receiver's NACKs and keyframe requests) into the forwarder, until
/// the sender stops or the track is gone; REMB estimates go to the subscriber's events when they change.
pub(super) async fn read_subscriber_rtcp(
    sender: Arc<RTCRtpSender>,
    published: Weak<Published>,
    subscriber: SubscriberId,
    node: Arc<NodeInner>,
    estimates: (EventSink, Arc<AtomicU64>),
) {
    let (events, last_estimate) = estimates;
    let mut first = true;
    while let Ok((packets, _)) = sender.read_rtcp().await {
        let Some(published) = published.upgrade() else { return };
        let now = node.now_ms();
        let mut estimate = None;
        let (_, actions) = published.feed(|f| {
            if std::mem::take(&mut first) {
                // The subscriber's first RTCP: its transport is up now. Packets sent before (the
                // first keyframe among them) may have arrived before it could decrypt them, so it
                // gets a keyframe now (through the throttle).
                let _ = f.on_pli(subscriber, now);
            }
            for packet in &packets {
                let any = packet.as_any();
                if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                    let _ = f.on_nack(subscriber, nack, now);
                } else if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                    let _ = f.on_pli(subscriber, now);
                } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                    estimate = Some(remb.bitrate as u64);
                }
            }
        });
        published.perform(actions).await;
        // Every subscription of a connection reads the same REMB: report it once.
        if let Some(bps) = estimate.filter(|&bps| last_estimate.swap(bps, Ordering::AcqRel) != bps) {
            emit(&events, PeerEvent::Estimate(bps)).await;
        }
    }
}

/// The rids browsers use for simulcast, lowest first ("q", "h", "f", or "0", "1", "2"); an unknown or
/// absent rid is the lowest layer.
pub fn layer_of_rid(rid: &str) -> Layer {
    match rid {
        "h" | "1" => Layer::MID,
        "f" | "2" => Layer::HIGH,
        _ => Layer::LOW,
    }
}

fn codec_of(mime_type: &str) -> Option<Codec> {
    let mime = mime_type.to_ascii_lowercase();
    Some(match mime.as_str() {
        "video/vp8" => Codec::Vp8,
        "video/vp9" => Codec::Vp9,
        "video/h264" => Codec::H264,
        "video/av1" => Codec::Av1,
        _ if mime.starts_with("audio/") => Codec::Audio,
        _ => return None,
    })
}
