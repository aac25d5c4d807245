//! Properties of the forwarding path under arbitrary input: any packet sequence (reordered, duplicated,
//! lost, padded, wrapping, restarted) across any layer switches, pauses and mutes.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtp::header::Header;
use rtp::packet::Packet;
use sfu::{Codec, Forwarder, ForwarderConfig, Layer, Output, SubscriberId};

#[derive(Debug, Clone)]
enum Op {
    /// A packet on `layer`, `seq_step` after the newest one of that layer (≤ 0: late or duplicate).
    Packet {
        layer: u8,
        seq_step: i32,
        ts_step: u32,
        start: bool,
        key: bool,
        padding: bool,
    },
    Target {
        sub: usize,
        layer: Option<u8>,
    },
    Mute(bool),
    /// The publisher restarts a layer: new SSRC, new numbering.
    Restart {
        layer: u8,
        seq: u16,
        ts: u32,
    },
    Wait(u64),
    /// A subscriber NACKs `back` packets before the newest it got, with a bitmask.
    Nack {
        sub: usize,
        back: u16,
        mask: u16,
    },
    Pli {
        sub: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let seq_step = prop_oneof![
        10 => Just(1),
        3 => -3..=5i32,
        1 => -2000..=2000i32,
        1 => any::<i16>().prop_map(i32::from),
    ];
    let ts_step = prop_oneof![4 => Just(0u32), 4 => Just(3000u32), 2 => 0..200_000u32, 1 => any::<u32>()];
    let packet = (0..3u8, seq_step, ts_step, any::<bool>(), prop::bool::weighted(0.15), prop::bool::weighted(0.05))
        .prop_map(|(layer, seq_step, ts_step, start, key, padding)| Op::Packet {
            layer,
            seq_step,
            ts_step,
            start: start || key,
            key,
            padding,
        });
    prop_oneof![
        30 => packet,
        2 => (0..2usize, prop::option::weighted(0.9, 0..3u8)).prop_map(|(sub, layer)| Op::Target { sub, layer }),
        1 => any::<bool>().prop_map(Op::Mute),
        1 => (0..3u8, any::<u16>(), any::<u32>()).prop_map(|(layer, seq, ts)| Op::Restart { layer, seq, ts }),
        3 => prop_oneof![Just(0u64), 1..100u64, 100..5_000u64].prop_map(Op::Wait),
        2 => (0..2usize, 0..40u16, any::<u16>()).prop_map(|(sub, back, mask)| Op::Nack { sub, back, mask }),
        1 => (0..2usize).prop_map(|sub| Op::Pli { sub }),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    ssrc: u32,
    epoch: u8,
    seq: u16,
    ts: u32,
}

/// What one subscriber has received, checked as it arrives.
#[derive(Default)]
struct Receiver {
    last: Option<Packet>,
    by_seq: HashMap<u16, Packet>,
    count: usize,
}

impl Receiver {
    fn first_send(&mut self, p: Packet) -> Result<(), TestCaseError> {
        if let Some(last) = &self.last {
            let (a, b) = (&last.header, &p.header);
            prop_assert!(seq_step(a.sequence_number, b.sequence_number) > 0, "sequence not increasing: {a:?} → {b:?}");
            prop_assert!(ts_step(a.timestamp, b.timestamp) >= 0, "timestamp went back: {a:?} → {b:?}");
            // A change of source (layer, or restarted publisher) happens only on a keyframe start.
            if last.payload[2..4] != p.payload[2..4] {
                prop_assert!(is_vp8_key_start(&p), "switched without a keyframe: {p:?}");
                prop_assert!(ts_step(a.timestamp, b.timestamp) > 0, "a new source must start a new frame");
            }
        } else {
            prop_assert!(is_vp8_key_start(&p), "the first packet must start a keyframe");
        }
        prop_assert!(!p.payload.is_empty());
        self.by_seq.insert(p.header.sequence_number, p.clone());
        self.last = Some(p);
        self.count += 1;
        Ok(())
    }

    fn retransmission(&mut self, p: &Packet) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.by_seq.get(&p.header.sequence_number), Some(p), "a retransmission differs");
        Ok(())
    }
}

const SUBS: [SubscriberId; 2] = [SubscriberId(10), SubscriberId(11)];

/// Runs `ops`, checking every output; returns how many first sends each subscriber got.
fn run(ops: &[Op]) -> Result<[usize; 2], TestCaseError> {
    let mut f = Forwarder::new(ForwarderConfig::new(Codec::Vp8));
    f.add_subscriber(SUBS[0], 0xAAAA, Some(Layer::LOW), 0).unwrap();
    f.add_subscriber(SUBS[1], 0xBBBB, Some(Layer::HIGH), 0).unwrap();
    let mut cursors =
        [0u8, 1, 2].map(|l| Cursor { ssrc: 100 + u32::from(l), epoch: 0, seq: 65500, ts: u32::MAX - 10_000 });
    let mut receivers = [Receiver::default(), Receiver::default()];
    let mut now = 0u64;
    let mut muted = false;
    for op in ops {
        match *op {
            Op::Packet { layer, seq_step, ts_step, start, key, padding } => {
                let c = &mut cursors[usize::from(layer)];
                let seq = c.seq.wrapping_add(seq_step as u16);
                let ts = c.ts.wrapping_add(ts_step);
                if seq_step > 0 {
                    c.seq = seq;
                    c.ts = ts;
                }
                let payload = if padding {
                    Bytes::new()
                } else {
                    Bytes::from(vec![if start { 0x10 } else { 0x00 }, if key { 0x00 } else { 0x01 }, layer, c.epoch])
                };
                let header = Header {
                    version: 2,
                    padding,
                    payload_type: 96,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc: c.ssrc,
                    ..Default::default()
                };
                f.on_rtp(Layer::new(layer).unwrap(), &Packet { header, payload }, now);
            }
            Op::Target { sub, layer } => f.set_target_layer(SUBS[sub], layer.and_then(Layer::new), now).unwrap(),
            Op::Mute(m) => {
                muted = m;
                f.set_muted(m);
            }
            Op::Restart { layer, seq, ts } => {
                let c = &mut cursors[usize::from(layer)];
                *c = Cursor { ssrc: c.ssrc + 1000, epoch: c.epoch.wrapping_add(1), seq, ts };
            }
            Op::Wait(ms) => now += ms,
            Op::Nack { sub, back, mask } => {
                let newest = receivers[sub].last.as_ref().map_or(0, |p| p.header.sequence_number);
                let nack = TransportLayerNack {
                    sender_ssrc: 1,
                    media_ssrc: 2,
                    nacks: vec![NackPair { packet_id: newest.wrapping_sub(back), lost_packets: mask }],
                };
                f.on_nack(SUBS[sub], &nack, now).unwrap();
            }
            Op::Pli { sub } => f.on_pli(SUBS[sub], now).unwrap(),
        }
        while let Some(out) = f.poll_output() {
            match out {
                Output::Rtp { subscriber, packet, retransmission } => {
                    prop_assert!(!muted, "sent while muted");
                    let i = SUBS.iter().position(|s| *s == subscriber).unwrap();
                    prop_assert_eq!(packet.header.ssrc, [0xAAAA, 0xBBBB][i]);
                    if retransmission {
                        receivers[i].retransmission(&packet)?;
                    } else {
                        receivers[i].first_send(packet)?;
                    }
                }
                Output::KeyframeRequest(r) => {
                    prop_assert!(!muted, "keyframe asked while muted");
                    prop_assert!((100..103).contains(&(r.media_ssrc() % 1000)), "asked an unknown SSRC: {:?}", r);
                }
                Output::AudioLevel(_) => prop_assert!(false, "no audio level on a video track"),
            }
        }
    }
    Ok(receivers.map(|r| r.count))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn output_sequence_and_timestamps_never_go_back(ops in prop::collection::vec(op(), 1..400)) {
        run(&ops)?;
    }
}

/// The harness itself: a clean run with a switch forwards one packet per frame to each subscriber.
#[test]
fn plain_run_forwards() {
    let mut ops = vec![];
    for i in 0..30 {
        for layer in 0..3 {
            ops.push(Op::Packet { layer, seq_step: 1, ts_step: 3000, start: true, key: i % 10 == 0, padding: false });
        }
        ops.push(Op::Wait(33));
        if i == 12 {
            ops.push(Op::Target { sub: 0, layer: Some(1) });
        }
    }
    let counts = run(&ops).unwrap();
    // Subscriber 0 gets both the low layer's and the mid layer's packet in the round of the switch.
    assert_eq!(counts, [31, 30]);
}
