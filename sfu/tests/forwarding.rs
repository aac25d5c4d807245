//! The forwarding path with synthetic RTP: simulcast switches, NACKs, keyframe requests, mute, audio
//! levels and the active speaker.

mod common;

use bytes::Bytes;
use common::*;
use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtp::header::Header;
use rtp::packet::Packet;
use sfu::{
    ActiveSpeaker, AddSubscriberError, AudioLevel, Codec, Forwarder, ForwarderConfig, KeyframeRequest,
    KeyframeRequestKind, Layer, Output, SpeakerConfig, SubscriberId, UnknownSubscriber,
};
use webrtc_util::{Marshal, Unmarshal};

const ALICE: SubscriberId = SubscriberId(1);
const BOB: SubscriberId = SubscriberId(2);
const ALICE_SSRC: u32 = 0xA11CE;
const BOB_SSRC: u32 = 0xB0B;
const SSRC: [u32; 3] = [0x1000, 0x2000, 0x3000];

fn vp8() -> Forwarder {
    Forwarder::new(ForwarderConfig::new(Codec::Vp8))
}

/// Three layers at 30 fps; `bases` are each layer's first (sequence number, timestamp).
fn simulcast(bases: [(u16, u32); 3]) -> [Vp8Layer; 3] {
    [0, 1, 2].map(|i| Vp8Layer::new(i as u8, SSRC[i], bases[i].0, bases[i].1))
}

/// One frame on every layer at `now`, keyframes where `keys` says.
fn tick(f: &mut Forwarder, layers: &mut [Vp8Layer; 3], keys: [bool; 3], now: u64) -> Vec<Output> {
    for (i, l) in layers.iter_mut().enumerate() {
        for p in l.frame(keys[i]) {
            f.on_rtp(Layer::new(i as u8).unwrap(), &p, now);
        }
    }
    drain(f)
}

/// Asserts that `packets` (first sends to one subscriber, in order) have consecutive sequence numbers
/// and never-decreasing timestamps, and that every change of source layer happens on a keyframe start.
fn assert_continuous(packets: &[Packet]) {
    for w in packets.windows(2) {
        let (a, b) = (&w[0].header, &w[1].header);
        assert_eq!(b.sequence_number, a.sequence_number.wrapping_add(1), "{a:?} then {b:?}");
        assert!(ts_step(a.timestamp, b.timestamp) >= 0, "timestamp went back: {a:?} then {b:?}");
        if layer_of(&w[0]) != layer_of(&w[1]) {
            assert!(is_vp8_key_start(&w[1]), "switched on a packet that is no keyframe start");
            assert!(ts_step(a.timestamp, b.timestamp) > 0, "a switch must start a new frame");
        }
    }
}

#[test]
fn layer_switch_keeps_sequence_and_timestamp_continuous_across_wraparound() {
    // The low layer's sequence wraps before the switch; the high layer's timestamp wraps after it;
    // the outgoing sequence number wraps too (it continues the low layer's numbers).
    let mut layers = simulcast([(65530, 1_000), (20_000, 2_000_000_000), (40_000, u32::MAX - 7_000)]);
    let mut f = vp8();
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    let mut sent = Vec::new();
    let mut now = 0;
    sent.extend(sent_to(&tick(&mut f, &mut layers, [true; 3], now), ALICE));
    for _ in 0..3 {
        now += 33;
        sent.extend(sent_to(&tick(&mut f, &mut layers, [false; 3], now), ALICE));
    }
    assert_eq!(sent.len(), 12);
    assert!(sent.iter().all(|p| layer_of(p) == 0));

    f.set_target_layer(ALICE, Some(Layer::HIGH), now).unwrap();
    now += 33;
    // No keyframe on the high layer yet: the low layer keeps flowing.
    let out = tick(&mut f, &mut layers, [false; 3], now);
    assert!(sent_to(&out, ALICE).iter().all(|p| layer_of(p) == 0));
    sent.extend(sent_to(&out, ALICE));
    let before = sent.last().unwrap().header.clone();
    now += 33;
    // The high layer's keyframe comes first in this round, so nothing of the low layer follows it.
    let mut switched = Vec::new();
    for (i, key) in [(2, true), (0, false), (1, false)] {
        layers[i].frame(key).iter().for_each(|p| f.on_rtp(Layer::new(i as u8).unwrap(), p, now));
        switched.extend(sent_to(&drain(&mut f), ALICE));
    }
    assert_eq!(switched.len(), 3);
    assert!(switched.iter().all(|p| layer_of(p) == 2), "only the high layer after its keyframe");
    let first_high = &switched[0].header;
    assert_eq!(first_high.sequence_number, before.sequence_number.wrapping_add(1));
    // 33 ms since the last low-layer packet, at 90 kHz.
    assert_eq!(first_high.timestamp, before.timestamp.wrapping_add(33 * 90));
    sent.extend(switched);
    for _ in 0..4 {
        now += 33;
        sent.extend(sent_to(&tick(&mut f, &mut layers, [false; 3], now), ALICE));
    }
    assert!(sent.iter().all(|p| p.header.ssrc == ALICE_SSRC));
    assert_continuous(&sent);
    let seqs: Vec<u16> = sent.iter().map(|p| p.header.sequence_number).collect();
    assert!(seqs.contains(&65535) && seqs.contains(&0), "the output sequence wrapped: {seqs:?}");
    let high_ts: Vec<u32> = sent.iter().filter(|p| layer_of(p) == 2).map(|p| p.header.timestamp).collect();
    assert!(high_ts.windows(2).all(|w| [0, 3000].contains(&ts_step(w[0], w[1]))));
    assert!(f.subscriber_layers(ALICE) == Some((Some(Layer::HIGH), Some(Layer::HIGH))));

    // And down again, to a layer whose timestamps are far from the high layer's.
    f.set_target_layer(ALICE, Some(Layer::MID), now).unwrap();
    now += 33;
    sent.extend(sent_to(&tick(&mut f, &mut layers, [false, true, false], now), ALICE));
    now += 33;
    sent.extend(sent_to(&tick(&mut f, &mut layers, [false; 3], now), ALICE));
    assert_eq!(layer_of(sent.last().unwrap()), 1);
    assert_continuous(&sent);
}

#[test]
fn switch_waits_for_a_keyframe_and_asks_the_new_layer_for_one() {
    let mut layers = simulcast([(100, 0), (200, 0), (300, 0)]);
    let mut f = vp8();
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    // Nothing is known of the layers yet: no SSRC to ask.
    assert!(drain(&mut f).is_empty());
    // The first packets are no keyframe: the subscriber waits, and the low layer is asked for one.
    let out = tick(&mut f, &mut layers, [false; 3], 0);
    assert!(sent_to(&out, ALICE).is_empty());
    assert_eq!(keyframe_requests(&out), vec![KeyframeRequest::Pli { media_ssrc: SSRC[0] }]);
    let out = tick(&mut f, &mut layers, [true, false, false], 33);
    assert_eq!(sent_to(&out, ALICE).len(), 3);
    assert!(keyframe_requests(&out).is_empty());

    // A switch asks the target layer at once.
    f.set_target_layer(ALICE, Some(Layer::MID), 40).unwrap();
    assert_eq!(keyframe_requests(&drain(&mut f)), vec![KeyframeRequest::Pli { media_ssrc: SSRC[1] }]);
    // Still waiting after the throttle interval: asked again.
    for now in (66..600).step_by(33) {
        let out = tick(&mut f, &mut layers, [false; 3], now);
        assert!(sent_to(&out, ALICE).iter().all(|p| layer_of(p) == 0));
        let asked = keyframe_requests(&out);
        assert_eq!(!asked.is_empty(), now == 561, "at {now}: {asked:?}");
    }
    let out = tick(&mut f, &mut layers, [false, true, false], 600);
    // The low layer's frame came before the mid layer's keyframe in this round.
    assert_eq!(sent_to(&out, ALICE).iter().map(layer_of).collect::<Vec<_>>(), [0, 0, 0, 1, 1, 1]);
    assert_eq!(f.subscriber_layers(ALICE), Some((Some(Layer::MID), Some(Layer::MID))));

    // Going back before the keyframe comes cancels the switch.
    f.set_target_layer(ALICE, Some(Layer::HIGH), 700).unwrap();
    f.set_target_layer(ALICE, Some(Layer::MID), 701).unwrap();
    assert_eq!(keyframe_requests(&drain(&mut f)), vec![KeyframeRequest::Pli { media_ssrc: SSRC[2] }]);
    let out = tick(&mut f, &mut layers, [false; 3], 733);
    assert!(sent_to(&out, ALICE).iter().all(|p| layer_of(p) == 1));
    assert_eq!(keyframe_requests(&out), vec![]);
}

#[test]
fn subscribers_switch_independently() {
    let mut layers = simulcast([(1, 10), (1, 20), (1, 30)]);
    let mut f = vp8();
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    f.add_subscriber(BOB, BOB_SSRC, Some(Layer::HIGH), 0).unwrap();
    assert_eq!(f.add_subscriber(BOB, 1, None, 0), Err(AddSubscriberError::Duplicate(BOB)));
    let out = tick(&mut f, &mut layers, [true; 3], 0);
    assert!(sent_to(&out, ALICE).iter().all(|p| layer_of(p) == 0 && p.header.ssrc == ALICE_SSRC));
    assert!(sent_to(&out, BOB).iter().all(|p| layer_of(p) == 2 && p.header.ssrc == BOB_SSRC));
    assert_eq!(sent_to(&out, BOB).len(), 3);

    assert!(f.remove_subscriber(ALICE));
    assert!(!f.remove_subscriber(ALICE));
    assert_eq!(f.set_target_layer(ALICE, None, 1), Err(UnknownSubscriber(ALICE)));
    let out = tick(&mut f, &mut layers, [false; 3], 33);
    assert!(sent_to(&out, ALICE).is_empty());
    assert_eq!(sent_to(&out, BOB).len(), 3);
    assert_eq!(f.subscriber_count(), 1);
}

#[test]
fn payload_bytes_are_shared_not_copied() {
    let mut f = vp8();
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    f.add_subscriber(BOB, BOB_SSRC, Some(Layer::LOW), 0).unwrap();
    let mut low = Vp8Layer::new(0, SSRC[0], 1, 1);
    let frame = low.frame(true);
    f.on_rtp(Layer::LOW, &frame[0], 0);
    let out = drain(&mut f);
    let (a, b) = (&sent_to(&out, ALICE)[0], &sent_to(&out, BOB)[0]);
    assert_eq!(a.payload.as_ptr(), frame[0].payload.as_ptr());
    assert_eq!(b.payload.as_ptr(), frame[0].payload.as_ptr());
}

#[test]
fn publisher_restart_on_a_new_ssrc_needs_a_keyframe_and_stays_continuous() {
    let mut f = vp8();
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    let mut old = Vp8Layer::new(0, SSRC[0], 500, 90_000);
    let mut sent = Vec::new();
    for (i, now) in [0u64, 33, 66].into_iter().enumerate() {
        old.frame(i == 0).iter().for_each(|p| f.on_rtp(Layer::LOW, p, now));
        sent.extend(sent_to(&drain(&mut f), ALICE));
    }
    let mut new = Vp8Layer::new(0, 0x9999, 7, 5);
    new.frame(false).iter().for_each(|p| f.on_rtp(Layer::LOW, p, 1000));
    let out = drain(&mut f);
    assert!(sent_to(&out, ALICE).is_empty());
    assert_eq!(keyframe_requests(&out), vec![KeyframeRequest::Pli { media_ssrc: 0x9999 }]);
    // Until the new stream's keyframe, the old one is still the source: its packets go through.
    old.frame(false).iter().for_each(|p| f.on_rtp(Layer::LOW, p, 1010));
    sent.extend(sent_to(&drain(&mut f), ALICE));
    new.frame(true).iter().for_each(|p| f.on_rtp(Layer::LOW, p, 1033));
    let out = sent_to(&drain(&mut f), ALICE);
    assert_eq!(out.len(), 3);
    sent.extend(out);
    assert_continuous(&sent);
    assert_eq!(sent.len(), 15);
}

#[test]
fn late_duplicate_and_padding_packets_are_not_forwarded() {
    let mut f = vp8();
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    let mut low = Vp8Layer::new(0, SSRC[0], 65534, 0);
    let key = low.frame(true); // 65534, 65535, 0
    let next = low.frame(false); // 1, 2, 3
    f.on_rtp(Layer::LOW, &key[0], 0);
    f.on_rtp(Layer::LOW, &key[2], 0);
    f.on_rtp(Layer::LOW, &key[1], 0); // late
    f.on_rtp(Layer::LOW, &key[2], 0); // duplicate
    let padding = Packet {
        header: Header { sequence_number: 1, padding: true, ..next[0].header.clone() },
        payload: Bytes::new(),
    };
    f.on_rtp(Layer::LOW, &padding, 10);
    // The padding took sequence number 1; the frame's packets are renumbered after it.
    for p in &next[..] {
        let p = Packet {
            header: Header { sequence_number: p.header.sequence_number + 1, ..p.header.clone() },
            ..p.clone()
        };
        f.on_rtp(Layer::LOW, &p, 33);
    }
    let sent = sent_to(&drain(&mut f), ALICE);
    let seqs: Vec<u16> = sent.iter().map(|p| p.header.sequence_number).collect();
    // 65535 was late and stays a gap (the receiver NACKs it); padding leaves none.
    assert_eq!(seqs, vec![65534, 0, 1, 2, 3]);
    assert!(sent.iter().all(|p| !p.payload.is_empty() && !p.header.padding));
}

#[test]
fn nack_is_answered_from_the_buffer_with_identical_rewritten_bytes() {
    let mut layers = simulcast([(1000, 0), (2000, 0), (65500, 0)]);
    let mut f = vp8();
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    let mut sent = sent_to(&tick(&mut f, &mut layers, [true; 3], 0), ALICE);
    f.set_target_layer(ALICE, Some(Layer::HIGH), 10).unwrap();
    for now in [33, 66] {
        sent.extend(sent_to(&tick(&mut f, &mut layers, [false, false, now == 66], now), ALICE));
    }
    // Three frames of the low layer (the last one arrives before the high layer's keyframe), then one
    // of the high layer.
    assert_eq!(sent.len(), 12);
    assert_eq!(sent.iter().map(layer_of).collect::<Vec<_>>(), [0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2]);
    let wire: Vec<Bytes> = sent.iter().map(|p| p.marshal().unwrap()).collect();
    // The wire form parses back to what was sent.
    assert_eq!(Packet::unmarshal(&mut wire[4].clone()).unwrap(), sent[4]);

    // Lost: the second packet, and (by bitmask) the fourth and the tenth (the first of the high layer).
    let first = sent[0].header.sequence_number;
    let nack = TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc: ALICE_SSRC,
        nacks: vec![NackPair { packet_id: first.wrapping_add(1), lost_packets: 0b1000_0010 }],
    };
    f.on_nack(ALICE, &nack, 100).unwrap();
    let out = drain(&mut f);
    let resent = resent_to(&out, ALICE);
    assert_eq!(resent.len(), 3);
    assert!(sent_to(&out, ALICE).is_empty());
    for (p, i) in resent.iter().zip([1, 3, 9]) {
        assert_eq!(p.marshal().unwrap(), wire[i], "retransmission of packet {i}");
    }
    assert_eq!(layer_of(&resent[2]), 2);

    // The same NACK again at once: the receiver repeats itself; one retransmission per 50 ms.
    f.on_nack(ALICE, &nack, 120).unwrap();
    assert!(drain(&mut f).is_empty());
    f.on_nack(ALICE, &nack, 150).unwrap();
    assert_eq!(resent_to(&drain(&mut f), ALICE).len(), 3);

    // Never sent, or too old: ignored.
    let never = TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc: ALICE_SSRC,
        nacks: vec![NackPair { packet_id: first.wrapping_add(500), lost_packets: 0 }],
    };
    f.on_nack(ALICE, &never, 200).unwrap();
    assert!(drain(&mut f).is_empty());
    f.on_nack(ALICE, &nack, 5_000).unwrap();
    assert!(drain(&mut f).is_empty());
    assert_eq!(f.on_nack(BOB, &nack, 0), Err(UnknownSubscriber(BOB)));
}

#[test]
fn nack_for_packets_that_fell_out_of_the_ring_is_ignored() {
    let mut config = ForwarderConfig::new(Codec::Vp8);
    config.retransmit.capacity = 16;
    let mut f = Forwarder::new(config);
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    let mut low = Vp8Layer::new(0, SSRC[0], 65530, 0);
    let mut sent = Vec::new();
    for i in 0..10 {
        low.frame(i == 0).iter().for_each(|p| f.on_rtp(Layer::LOW, p, i * 33));
        sent.extend(sent_to(&drain(&mut f), ALICE));
    }
    assert_eq!(sent.len(), 30);
    let seq = |i: usize| sent[i].header.sequence_number;
    let ask = |f: &mut Forwarder, i: usize| {
        let nack = TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc: ALICE_SSRC,
            nacks: vec![NackPair { packet_id: seq(i), lost_packets: 0 }],
        };
        f.on_nack(ALICE, &nack, 400).unwrap();
        resent_to(&drain(f), ALICE)
    };
    assert!(ask(&mut f, 13).is_empty(), "17 packets ago");
    assert_eq!(ask(&mut f, 14), vec![sent[14].clone()]);
    assert_eq!(ask(&mut f, 29), vec![sent[29].clone()]);
}

#[test]
fn muted_track_forwards_nothing() {
    let mut layers = simulcast([(10, 0), (20, 0), (30, 0)]);
    let mut f = vp8();
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    let mut sent = sent_to(&tick(&mut f, &mut layers, [true; 3], 0), ALICE);
    assert_eq!(sent.len(), 3);

    f.set_muted(true);
    assert!(f.is_muted());
    for now in (33..1000).step_by(33) {
        let out = tick(&mut f, &mut layers, [now == 66; 3], now);
        assert!(out.is_empty(), "muted, yet: {out:?}");
    }
    // Feedback while muted goes nowhere.
    let nack = TransportLayerNack {
        sender_ssrc: 0,
        media_ssrc: ALICE_SSRC,
        nacks: vec![NackPair { packet_id: sent[0].header.sequence_number, lost_packets: 0 }],
    };
    f.on_nack(ALICE, &nack, 1000).unwrap();
    f.on_pli(ALICE, 1000).unwrap();
    f.set_target_layer(ALICE, Some(Layer::HIGH), 1000).unwrap();
    assert!(drain(&mut f).is_empty());
    f.set_target_layer(ALICE, Some(Layer::LOW), 1000).unwrap();

    // Unmuted: a keyframe is needed, asked for, and the stream continues where it stopped.
    f.set_muted(false);
    let out = tick(&mut f, &mut layers, [false; 3], 1033);
    assert!(sent_to(&out, ALICE).is_empty());
    assert_eq!(keyframe_requests(&out), vec![KeyframeRequest::Pli { media_ssrc: SSRC[0] }]);
    let resumed = sent_to(&tick(&mut f, &mut layers, [true, false, false], 1066), ALICE);
    assert_eq!(resumed.len(), 3);
    assert_eq!(resumed[0].header.timestamp, sent[2].header.timestamp + 1066 * 90);
    sent.extend(resumed);
    assert_continuous(&sent);
}

#[test]
fn muted_audio_reports_no_level_and_resumes_continuously() {
    let mut config = ForwarderConfig::new(Codec::Audio);
    config.audio_level_extension_id = Some(1);
    let mut f = Forwarder::new(config);
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    let mut seq = 65000u16;
    let mut sent = Vec::new();
    let mut levels = Vec::new();
    for i in 0..150u64 {
        let now = i * 20;
        f.set_muted((50..100).contains(&i));
        f.on_rtp(Layer::LOW, &opus(seq, (i * 960) as u32, 30), now);
        seq = seq.wrapping_add(1);
        let out = drain(&mut f);
        levels.extend(out.iter().filter(|o| matches!(o, Output::AudioLevel(_))).cloned());
        sent.extend(sent_to(&out, ALICE));
    }
    assert_eq!(sent.len(), 100);
    assert_eq!(levels.len(), 100);
    assert!(keyframe_requests(&levels).is_empty());
    let seqs: Vec<u16> = sent.iter().map(|p| p.header.sequence_number).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    // The 50 packets of the mute (1 s) show as 1 s of timestamps, not as a loss.
    assert_eq!(sent[50].header.timestamp - sent[49].header.timestamp, 51 * 960);
}

fn opus(seq: u16, ts: u32, level: u8) -> Packet {
    let mut header = Header {
        version: 2,
        payload_type: 111,
        sequence_number: seq,
        timestamp: ts,
        ssrc: 0xA0D10,
        extension: true,
        extension_profile: 0xBEDE,
        ..Default::default()
    };
    header.set_extension(1, Bytes::copy_from_slice(&[0x80 | level])).unwrap();
    Packet { header, payload: Bytes::from_static(&[0xFC, 0xFF, 0xFE]) }
}

#[test]
fn keyframe_requests_are_throttled_per_layer() {
    let mut layers = simulcast([(1, 0), (1, 0), (1, 0)]);
    let mut f = vp8();
    for i in 0..10 {
        f.add_subscriber(SubscriberId(i), i as u32, Some(Layer::LOW), 0).unwrap();
    }
    f.add_subscriber(SubscriberId(99), 99, Some(Layer::HIGH), 0).unwrap();
    let out = tick(&mut f, &mut layers, [true; 3], 0);
    assert_eq!(sent_to(&out, SubscriberId(3)).len(), 3);
    assert!(keyframe_requests(&out).is_empty());

    // Ten subscribers lose the same packet: the publisher hears once.
    for i in 0..10 {
        f.on_pli(SubscriberId(i), 100 + i).unwrap();
    }
    assert_eq!(keyframe_requests(&drain(&mut f)), vec![KeyframeRequest::Pli { media_ssrc: SSRC[0] }]);
    // Another layer has its own budget.
    f.on_pli(SubscriberId(99), 120).unwrap();
    assert_eq!(keyframe_requests(&drain(&mut f)), vec![KeyframeRequest::Pli { media_ssrc: SSRC[2] }]);
    f.on_pli(SubscriberId(0), 599).unwrap();
    assert!(drain(&mut f).is_empty());
    f.on_pli(SubscriberId(0), 600).unwrap();
    assert_eq!(keyframe_requests(&drain(&mut f)), vec![KeyframeRequest::Pli { media_ssrc: SSRC[0] }]);
    assert_eq!(f.on_pli(SubscriberId(50), 0), Err(UnknownSubscriber(SubscriberId(50))));

    // A paused subscriber asks nothing.
    f.set_target_layer(SubscriberId(1), None, 2000).unwrap();
    f.on_pli(SubscriberId(1), 2000).unwrap();
    assert!(drain(&mut f).is_empty());
}

#[test]
fn fir_when_negotiated_and_its_rtcp_form() {
    let mut config = ForwarderConfig::new(Codec::Vp8);
    config.keyframe_request = KeyframeRequestKind::Fir;
    config.keyframe_interval_ms = 100;
    let mut f = Forwarder::new(config);
    f.add_subscriber(ALICE, ALICE_SSRC, Some(Layer::LOW), 0).unwrap();
    let mut low = Vp8Layer::new(0, SSRC[0], 1, 0);
    low.frame(false).iter().for_each(|p| f.on_rtp(Layer::LOW, p, 0));
    f.on_pli(ALICE, 100).unwrap();
    let asked = keyframe_requests(&drain(&mut f));
    assert_eq!(
        asked,
        vec![
            KeyframeRequest::Fir { media_ssrc: SSRC[0], seq_nr: 1 },
            KeyframeRequest::Fir { media_ssrc: SSRC[0], seq_nr: 2 }
        ]
    );
    let rtcp = asked[1].to_rtcp(0x5F0);
    assert_eq!(rtcp.destination_ssrc(), vec![SSRC[0]]);
    let pli = KeyframeRequest::Pli { media_ssrc: 77 }.to_rtcp(0x5F0);
    assert_eq!(pli.marshal().unwrap().len(), 12);
}

#[test]
fn audio_level_is_read_from_the_negotiated_extension() {
    let packet = opus(1, 0, 42);
    let wire = packet.marshal().unwrap();
    let parsed = Packet::unmarshal(&mut wire.clone()).unwrap();
    assert_eq!(AudioLevel::from_header(&parsed.header, 1), Some(AudioLevel { level: 42, voice: true }));
    assert_eq!(AudioLevel::from_header(&parsed.header, 2), None);
    assert_eq!(AudioLevel::from_byte(0x7F), AudioLevel { level: 127, voice: false });
    assert_eq!(AudioLevel::from_header(&Header::default(), 1), None);

    // The two-byte form (RFC 8285), for senders that use it.
    let mut header = Header { version: 2, extension: true, extension_profile: 0x1000, ..Default::default() };
    header.set_extension(3, Bytes::from_static(&[10])).unwrap();
    let parsed =
        Packet::unmarshal(&mut Packet { header, payload: Bytes::from_static(&[1]) }.marshal().unwrap()).unwrap();
    assert_eq!(AudioLevel::from_header(&parsed.header, 3), Some(AudioLevel { level: 10, voice: false }));
    assert!((AudioLevel { level: 20, voice: true }.amplitude() - 0.1).abs() < 1e-6);
}

/// Feeds `who` 20 ms packets at `level` from `from` to `to` (exclusive), polling every 100 ms; returns
/// the changes of speaker with their times.
fn speak(
    s: &mut ActiveSpeaker<&'static str>,
    voices: &[(&'static str, u8)],
    from: u64,
    to: u64,
) -> Vec<(u64, &'static str)> {
    let mut changes = Vec::new();
    for now in (from..to).step_by(20) {
        for &(who, level) in voices {
            s.observe(&who, AudioLevel { level, voice: true }, now);
        }
        if now % 100 == 0 {
            if let Some(who) = s.poll(now) {
                changes.push((now, who));
            }
        }
    }
    changes
}

#[test]
fn active_speaker_with_hysteresis() {
    let mut s = ActiveSpeaker::new(SpeakerConfig::default());
    assert_eq!(s.poll(0), None);
    // Background noise is nobody.
    assert_eq!(speak(&mut s, &[("ann", 70), ("bo", 75)], 0, 1000), vec![]);
    // Ann speaks: she is the speaker once her smoothed level is over the threshold.
    let changes = speak(&mut s, &[("ann", 25), ("bo", 70)], 1000, 2000);
    assert_eq!(changes.iter().map(|c| c.1).collect::<Vec<_>>(), vec!["ann"]);
    assert!(changes[0].0 <= 1100, "{changes:?}");
    // Bo a little louder (2 dB, under the ratio): no switch, however long.
    assert_eq!(speak(&mut s, &[("ann", 25), ("bo", 23)], 2000, 5000), vec![]);
    // Bo clearly louder, but only briefly (a laugh): no switch.
    assert_eq!(speak(&mut s, &[("ann", 25), ("bo", 10)], 5000, 5100), vec![]);
    assert_eq!(speak(&mut s, &[("ann", 25), ("bo", 70)], 5100, 6000), vec![]);
    // Bo clearly louder for long enough: switch, after the window.
    let changes = speak(&mut s, &[("ann", 40), ("bo", 15)], 6000, 8000);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].1, "bo");
    assert!((6500..=7200).contains(&changes[0].0), "{changes:?}");
    // Both quiet, then both stop sending: the last speaker stays.
    assert_eq!(speak(&mut s, &[("ann", 80), ("bo", 80)], 8000, 9000), vec![]);
    assert_eq!(s.poll(20_000), None);
    assert_eq!(s.active(), Some(&"bo"));
    assert!(s.loudness(&"bo", 20_000).unwrap() < 1e-6);
    s.remove(&"bo");
    assert_eq!(s.active(), None);
}
