//! Synthetic publishers for the forwarding tests: RTP packets built with the `rtp` crate's types.
#![allow(dead_code)]

pub mod peer;

use bytes::Bytes;
use rtp::header::Header;
use rtp::packet::Packet;
use sfu::{Forwarder, KeyframeRequest, Output, SubscriberId};

/// VP8 payload: descriptor (S bit as given, PID 0), frame tag (P bit clear on keyframes), then the
/// source layer and the packet's input sequence number so a test can tell where a packet came from.
pub fn vp8_payload(start: bool, key: bool, layer: u8, seq: u16) -> Bytes {
    let descriptor = if start { 0x10 } else { 0x00 };
    let tag = if key { 0x00 } else { 0x01 };
    let [hi, lo] = seq.to_be_bytes();
    Bytes::from(vec![descriptor, tag, layer, hi, lo])
}

/// The source layer written into a payload by [`vp8_payload`].
pub fn layer_of(packet: &Packet) -> u8 {
    packet.payload[2]
}

pub fn is_vp8_key_start(packet: &Packet) -> bool {
    sfu::codec::vp8_keyframe_start(&packet.payload)
}

/// One simulcast layer of a VP8 publisher: 30 frames a second of `packets_per_frame` packets each.
#[derive(Debug, Clone)]
pub struct Vp8Layer {
    pub layer: u8,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub packets_per_frame: usize,
}

impl Vp8Layer {
    pub fn new(layer: u8, ssrc: u32, seq: u16, ts: u32) -> Self {
        Vp8Layer { layer, ssrc, seq, ts, packets_per_frame: 3 }
    }

    /// The packets of the next frame.
    pub fn frame(&mut self, key: bool) -> Vec<Packet> {
        let n = self.packets_per_frame;
        let packets = (0..n)
            .map(|i| {
                let p = Packet {
                    header: Header {
                        version: 2,
                        marker: i + 1 == n,
                        payload_type: 96,
                        sequence_number: self.seq,
                        timestamp: self.ts,
                        ssrc: self.ssrc,
                        ..Default::default()
                    },
                    payload: vp8_payload(i == 0, key, self.layer, self.seq),
                };
                self.seq = self.seq.wrapping_add(1);
                p
            })
            .collect();
        self.ts = self.ts.wrapping_add(3000);
        packets
    }
}

/// Everything the forwarder queued.
pub fn drain(f: &mut Forwarder) -> Vec<Output> {
    std::iter::from_fn(|| f.poll_output()).collect()
}

/// The first-time (not retransmitted) packets sent to `sub`.
pub fn sent_to(outputs: &[Output], sub: SubscriberId) -> Vec<Packet> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Rtp { subscriber, packet, retransmission: false } if *subscriber == sub => Some(packet.clone()),
            _ => None,
        })
        .collect()
}

/// The retransmissions sent to `sub`.
pub fn resent_to(outputs: &[Output], sub: SubscriberId) -> Vec<Packet> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Rtp { subscriber, packet, retransmission: true } if *subscriber == sub => Some(packet.clone()),
            _ => None,
        })
        .collect()
}

pub fn keyframe_requests(outputs: &[Output]) -> Vec<KeyframeRequest> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::KeyframeRequest(r) => Some(*r),
            _ => None,
        })
        .collect()
}

/// Signed distance from `a` to `b` modulo 2^16.
pub fn seq_step(a: u16, b: u16) -> i16 {
    b.wrapping_sub(a) as i16
}

/// Signed distance from `a` to `b` modulo 2^32.
pub fn ts_step(a: u32, b: u32) -> i32 {
    b.wrapping_sub(a) as i32
}
