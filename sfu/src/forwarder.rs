//! One published track and its subscribers: the forwarding path, sans-I/O.
//!
//! Inputs, each with the current time: RTP from the publisher, tagged with its simulcast layer
//! ([`Forwarder::on_rtp`]); the layer each subscriber should get ([`Forwarder::set_target_layer`],
//! chosen elsewhere); mute ([`Forwarder::set_muted`]); a subscriber's NACK ([`Forwarder::on_nack`]) and
//! PLI or FIR ([`Forwarder::on_pli`]). Outputs, drained with [`Forwarder::poll_output`] after each input
//! in the order they were made: packets to send to a subscriber, keyframe requests to send to the
//! publisher, and the audio level of each forwarded audio packet.
//!
//! Contract:
//! - **Per subscriber**, the stream follows [`crate::rewrite`]: one SSRC (given when the subscriber is
//!   added), continuous sequence numbers and timestamps across layer switches, switches only on
//!   keyframes of the target layer, the previous layer kept until then.
//! - **Outgoing packets** carry the publisher's payload (shared, not copied), payload type and marker;
//!   the subscriber's SSRC, sequence number and timestamp; no CSRC and no header extensions (their ids
//!   were negotiated with the publisher, not with the subscriber; the adapter's interceptors add the
//!   subscriber's own, such as transport-wide sequence numbers). Padding-only packets are not forwarded.
//! - **Keyframes** are asked of the publisher by the rules of [`crate::keyframe`]: when a subscriber
//!   starts waiting for a layer (a switch, a new subscriber, a resume), again while a subscriber drops
//!   that layer's packets waiting for its keyframe, and on a subscriber's PLI/FIR; always through the
//!   per-layer throttle. A request needs the layer's SSRC, learnt from its packets: before the first
//!   packet of a layer there is nothing to ask, and its first packet triggers the request.
//! - **NACKs** are answered from the subscriber's [`crate::nack`] buffer with the packets as first sent.
//! - **Mute** (enforced here, whatever the publisher sends): while muted nothing is forwarded (no
//!   silence or black frames are made up: receivers conceal the gap), NACKs are not answered, PLIs are
//!   not passed on and no audio level is reported. On unmute each subscriber resumes on a switch point,
//!   continuous with what it got before the mute (video waits for a keyframe, which is requested).
//! - Subscribers are independent: feedback from one never changes what another receives, except that
//!   the keyframe it causes is forwarded to all who are waiting.
//!
//! How an owner drives it (the adapter does this with the `webrtc` crate's tracks and RTCP writers):
//!
//! ```
//! use sfu::{Codec, Forwarder, ForwarderConfig, Layer, Output, SubscriberId};
//! # use bytes::Bytes;
//! # use rtp::{header::Header, packet::Packet};
//!
//! let mut track = Forwarder::new(ForwarderConfig::new(Codec::Vp8));
//! track.add_subscriber(SubscriberId(7), 0x5EED, Some(Layer::LOW), 0).unwrap();
//! # let packet = Packet {
//! #     header: Header { version: 2, sequence_number: 1, ssrc: 0x1000, ..Default::default() },
//! #     payload: Bytes::from_static(&[0x10, 0x00, 0x9d, 0x01, 0x2a]),
//! # };
//! // A packet read from the publisher's simulcast layer "q" (the lowest), at 1 000 ms:
//! track.on_rtp(Layer::LOW, &packet, 1_000);
//! while let Some(output) = track.poll_output() {
//!     match output {
//!         Output::Rtp { subscriber, packet, .. } => { /* write `packet` to that subscriber's track */ }
//!         Output::KeyframeRequest(request) => { /* write `request.to_rtcp(0)` to the publisher */ }
//!         Output::AudioLevel(level) => { /* feed the room's `ActiveSpeaker` */ }
//!     }
//! }
//! ```

use std::collections::{HashMap, VecDeque};

use rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtp::header::Header;
use rtp::packet::Packet;

use crate::audio_level::AudioLevel;
use crate::codec::Codec;
use crate::keyframe::{self, KeyframeRequest, KeyframeRequestKind, KeyframeThrottle};
use crate::nack::{self, RetransmitBuffer, RetransmitConfig};
use crate::rate::{LayerRate, MeasuredRate};
use crate::rewrite::{DropReason, Outcome, SourcePacket, StreamRewriter};
use crate::{Layer, SubscriberId};

/// How one track is forwarded. [`ForwarderConfig::new`] fills in defaults for the codec.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwarderConfig {
    pub codec: Codec,
    /// RTP clock rate of the track (90 000 for video, 48 000 for Opus).
    pub clock_rate: u32,
    /// PLI or FIR, as the publisher negotiated.
    pub keyframe_request: KeyframeRequestKind,
    /// At most one keyframe request per layer in this time.
    pub keyframe_interval_ms: u64,
    /// Each subscriber's retransmission buffer.
    pub retransmit: RetransmitConfig,
    /// The publisher's extension id for RFC 6464 audio levels, if negotiated.
    pub audio_level_extension_id: Option<u8>,
}

impl ForwarderConfig {
    /// Video: 90 kHz, PLI at most every 500 ms per layer, 512 packets kept for NACKs. Audio: 48 kHz,
    /// no retransmission.
    pub fn new(codec: Codec) -> Self {
        let video = codec.is_video();
        ForwarderConfig {
            codec,
            clock_rate: if video { 90_000 } else { 48_000 },
            keyframe_request: KeyframeRequestKind::Pli,
            keyframe_interval_ms: 500,
            retransmit: if video { RetransmitConfig::default() } else { RetransmitConfig::disabled() },
            audio_level_extension_id: None,
        }
    }
}

/// What the forwarder asks its owner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this packet to the subscriber (on its outgoing track of this forwarder).
    Rtp { subscriber: SubscriberId, packet: Packet, retransmission: bool },
    /// Send this request to the publisher (on its connection, as RTCP: [`KeyframeRequest::to_rtcp`]).
    KeyframeRequest(KeyframeRequest),
    /// The audio level of a packet from the publisher (reported while not muted, whether or not anyone
    /// subscribes), for the room's active-speaker choice.
    AudioLevel(AudioLevel),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddSubscriberError {
    #[error("subscriber {0:?} is already on this track")]
    Duplicate(SubscriberId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscriber {0:?} is not on this track")]
pub struct UnknownSubscriber(pub SubscriberId);

#[derive(Debug)]
struct Subscriber {
    id: SubscriberId,
    ssrc: u32,
    rewriter: StreamRewriter,
    retransmit: RetransmitBuffer,
}

/// The forwarding state of one published track.
#[derive(Debug)]
pub struct Forwarder {
    config: ForwarderConfig,
    subscribers: Vec<Subscriber>,
    index: HashMap<SubscriberId, usize>,
    layer_ssrc: [Option<u32>; Layer::COUNT],
    layer_rates: [LayerRate; Layer::COUNT],
    muted: bool,
    keyframes: KeyframeThrottle,
    output: VecDeque<Output>,
}

impl Forwarder {
    pub fn new(config: ForwarderConfig) -> Self {
        Forwarder {
            keyframes: KeyframeThrottle::new(config.keyframe_request, config.keyframe_interval_ms),
            config,
            subscribers: Vec::new(),
            index: HashMap::new(),
            layer_ssrc: [None; Layer::COUNT],
            layer_rates: [LayerRate::default(); Layer::COUNT],
            muted: false,
            output: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &ForwarderConfig {
        &self.config
    }

    /// Adds a subscriber whose outgoing stream has SSRC `ssrc`, wanting `target` (`None`: paused).
    pub fn add_subscriber(
        &mut self,
        id: SubscriberId,
        ssrc: u32,
        target: Option<Layer>,
        now_ms: u64,
    ) -> Result<(), AddSubscriberError> {
        if self.index.contains_key(&id) {
            return Err(AddSubscriberError::Duplicate(id));
        }
        let mut rewriter = StreamRewriter::new(self.config.clock_rate);
        rewriter.set_target(target);
        self.index.insert(id, self.subscribers.len());
        self.subscribers.push(Subscriber {
            id,
            ssrc,
            rewriter,
            retransmit: RetransmitBuffer::new(self.config.retransmit),
        });
        if let Some(layer) = keyframe::layer_for_switch(None, target) {
            self.request_keyframe(layer, now_ms);
        }
        Ok(())
    }

    /// Removes a subscriber; false if it was not there.
    pub fn remove_subscriber(&mut self, id: SubscriberId) -> bool {
        let Some(i) = self.index.remove(&id) else { return false };
        self.subscribers.swap_remove(i);
        if let Some(moved) = self.subscribers.get(i) {
            self.index.insert(moved.id, i);
        }
        true
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Sets the layer a subscriber should receive (`None` pauses it). The switch happens on the next
    /// keyframe of that layer, which is requested now.
    pub fn set_target_layer(
        &mut self,
        id: SubscriberId,
        target: Option<Layer>,
        now_ms: u64,
    ) -> Result<(), UnknownSubscriber> {
        let sub = self.subscriber_mut(id)?;
        let current = sub.rewriter.current();
        sub.rewriter.set_target(target);
        if let Some(layer) = keyframe::layer_for_switch(current, target) {
            self.request_keyframe(layer, now_ms);
        }
        Ok(())
    }

    /// The layer a subscriber receives now and the one it should receive.
    pub fn subscriber_layers(&self, id: SubscriberId) -> Option<(Option<Layer>, Option<Layer>)> {
        let sub = &self.subscribers[*self.index.get(&id)?];
        Some((sub.rewriter.current(), sub.rewriter.target()))
    }

    /// What the publisher sends on each layer, lowest first (measured whether or not the track is
    /// muted: see [`crate::rate`]).
    pub fn layer_rates(&self, now_ms: u64) -> [MeasuredRate; Layer::COUNT] {
        self.layer_rates.map(|r| r.read(now_ms))
    }

    /// Mutes or unmutes the track.
    pub fn set_muted(&mut self, muted: bool) {
        if muted && !self.muted {
            self.subscribers.iter_mut().for_each(|s| s.rewriter.reset_source());
        }
        self.muted = muted;
    }

    pub fn is_muted(&self) -> bool {
        self.muted
    }

    /// Asks for a keyframe on every layer a subscriber waits for or receives (through the throttle):
    /// after an unmute, whose subscribers wait for a switch point.
    pub fn request_keyframes(&mut self, now_ms: u64) {
        let mut layers: Vec<Layer> = self.subscribers.iter().filter_map(|s| s.rewriter.target()).collect();
        layers.sort();
        layers.dedup();
        for layer in layers {
            self.request_keyframe(layer, now_ms);
        }
    }

    /// A packet from the publisher, on simulcast layer `layer` ([`Layer::LOW`] without simulcast).
    pub fn on_rtp(&mut self, layer: Layer, packet: &Packet, now_ms: u64) {
        self.layer_ssrc[layer.index()] = Some(packet.header.ssrc);
        self.layer_rates[layer.index()].on_packet(packet.payload.len(), now_ms);
        if self.muted {
            return;
        }
        if let Some(level) =
            self.config.audio_level_extension_id.and_then(|id| AudioLevel::from_header(&packet.header, id))
        {
            self.output.push_back(Output::AudioLevel(level));
        }
        let p = SourcePacket {
            layer,
            ssrc: packet.header.ssrc,
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            padding_only: packet.payload.is_empty(),
            switch_point: self.config.codec.is_keyframe_start(&packet.payload),
        };
        let mut waiting = false;
        for sub in &mut self.subscribers {
            match sub.rewriter.rewrite(&p, now_ms) {
                Outcome::Forward(r) => {
                    let out = Packet {
                        header: Header {
                            version: 2,
                            marker: packet.header.marker,
                            payload_type: packet.header.payload_type,
                            sequence_number: r.seq,
                            timestamp: r.timestamp,
                            ssrc: sub.ssrc,
                            ..Header::default()
                        },
                        payload: packet.payload.clone(),
                    };
                    sub.retransmit.insert(&out, now_ms);
                    self.output.push_back(Output::Rtp { subscriber: sub.id, packet: out, retransmission: false });
                }
                Outcome::Drop(DropReason::WaitingForKeyframe) => waiting = true,
                Outcome::Drop(_) => {}
            }
        }
        if waiting {
            self.request_keyframe(layer, now_ms);
        }
    }

    /// A generic NACK from a subscriber: the packets it names that are still held are sent again.
    /// Its media SSRC is not checked: the subscriber's identity says which stream it is about.
    pub fn on_nack(
        &mut self,
        id: SubscriberId,
        nack: &TransportLayerNack,
        now_ms: u64,
    ) -> Result<(), UnknownSubscriber> {
        let i = *self.index.get(&id).ok_or(UnknownSubscriber(id))?;
        if self.muted {
            return Ok(());
        }
        let retransmit = &mut self.subscribers[i].retransmit;
        for seq in nack::lost_seqs(&nack.nacks) {
            if let Some(packet) = retransmit.retransmit(seq, now_ms) {
                self.output.push_back(Output::Rtp { subscriber: id, packet, retransmission: true });
            }
        }
        Ok(())
    }

    /// A PLI (or FIR) from a subscriber: passed on to the publisher for the layer the subscriber waits
    /// for or receives, within the throttle.
    pub fn on_pli(&mut self, id: SubscriberId, now_ms: u64) -> Result<(), UnknownSubscriber> {
        let sub = self.subscriber_mut(id)?;
        let layer = keyframe::layer_for_subscriber_request(sub.rewriter.current(), sub.rewriter.target());
        if let Some(layer) = layer {
            self.request_keyframe(layer, now_ms);
        }
        Ok(())
    }

    /// The next thing to do, in the order they arose.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.output.pop_front()
    }

    fn subscriber_mut(&mut self, id: SubscriberId) -> Result<&mut Subscriber, UnknownSubscriber> {
        let i = *self.index.get(&id).ok_or(UnknownSubscriber(id))?;
        Ok(&mut self.subscribers[i])
    }

    fn request_keyframe(&mut self, layer: Layer, now_ms: u64) {
        if self.muted || !self.config.codec.is_video() {
            return;
        }
        let Some(ssrc) = self.layer_ssrc[layer.index()] else { return };
        if let Some(request) = self.keyframes.request(layer, ssrc, now_ms) {
            self.output.push_back(Output::KeyframeRequest(request));
        }
    }
}
