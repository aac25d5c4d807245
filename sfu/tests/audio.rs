//! Decoded audio with real libopus on both ends: synthetic sines and silence encoded by
//! `opus::Encoder` into RTP (no audio-level header extension), read back as levels, picked as the
//! active speaker, and mixed; the mix is decoded by `opus::Decoder` and its spectrum checked.

use std::f64::consts::PI;

use bytes::Bytes;
use proptest::prelude::*;
use rtp::header::{Extension, Header};
use rtp::packet::Packet;
use sfu::audio::{level_of_pcm, AudioMixer, LevelConfig, LevelSource, MixerConfig, FRAME_SAMPLES, SAMPLE_RATE};
use sfu::{ActiveSpeaker, SpeakerConfig};

/// A publisher of mono Opus at 20 ms a packet, as a browser sends it (without the level extension).
struct Publisher {
    encoder: opus::Encoder,
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// The next sample's index, so that a tone stays continuous across packets.
    sample: usize,
}

impl Publisher {
    fn new(ssrc: u32, seq: u16) -> Self {
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip).unwrap();
        encoder.set_bitrate(opus::Bitrate::Bits(48_000)).unwrap();
        Publisher { encoder, ssrc, seq, ts: ssrc.wrapping_mul(7), sample: 0 }
    }

    /// The next packet: a tone of `freq` Hz at `amplitude` of full scale (0.0: digital silence).
    fn tone(&mut self, freq: f64, amplitude: f64) -> Packet {
        let pcm: Vec<i16> = (self.sample..self.sample + FRAME_SAMPLES)
            .map(|i| (amplitude * 32_767.0 * (2.0 * PI * freq * i as f64 / f64::from(SAMPLE_RATE)).sin()) as i16)
            .collect();
        self.packet(&pcm)
    }

    fn packet(&mut self, pcm: &[i16]) -> Packet {
        let payload = self.encoder.encode_vec(pcm, 1_500).unwrap();
        let p = Packet {
            header: Header {
                version: 2,
                payload_type: 111,
                sequence_number: self.seq,
                timestamp: self.ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
        self.sample += FRAME_SAMPLES;
        p
    }
}

/// The amplitude (fraction of full scale) of the `freq` component of `samples`, by Goertzel.
fn amplitude_at(samples: &[i16], freq: f64) -> f64 {
    let w = 2.0 * PI * freq / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = f64::from(x) / 32_768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / samples.len() as f64
}

/// Decodes the mix's packets in order into mono PCM.
fn decode_all(packets: &[Packet]) -> Vec<i16> {
    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0i16; 5_760];
    for p in packets {
        let n = decoder.decode(&p.payload, &mut buf, false).unwrap();
        pcm.extend_from_slice(&buf[..n]);
    }
    pcm
}

/// Asserts consecutive sequence numbers and timestamps 960 apart, the marker on the first only.
fn assert_continuous(packets: &[Packet], ssrc: u32) {
    assert!(packets[0].header.marker, "the first packet starts a talkspurt");
    for w in packets.windows(2) {
        let (a, b) = (&w[0].header, &w[1].header);
        assert_eq!(b.sequence_number, a.sequence_number.wrapping_add(1), "{a:?} then {b:?}");
        assert_eq!(b.timestamp, a.timestamp.wrapping_add(960), "{a:?} then {b:?}");
        assert!(!b.marker, "marker in mid-talkspurt: {b:?}");
    }
    assert!(packets.iter().all(|p| p.header.ssrc == ssrc && p.header.extensions.is_empty()));
}

/// Every tick due at `now`.
fn mix_due(mixer: &mut AudioMixer<u32>, now: u64) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut bound = 0;
    while mixer.next_mix_ms().is_none_or(|due| due <= now) {
        out.extend(mixer.mix(now));
        bound += 1;
        assert!(bound < 100, "mix never got ahead of {now}");
    }
    out
}

#[test]
fn level_fallback_reads_a_sine_as_loud_and_silence_as_127() {
    let mut publisher = Publisher::new(1, 100);
    let mut levels = LevelSource::new(LevelConfig::new(Some(1)));
    // 0.5 of full scale: RMS 0.354, -9 dBov.
    let loud: Vec<u8> =
        (0..50u64).filter_map(|i| levels.level(&publisher.tone(440.0, 0.5), i * 20)).map(|l| l.level).collect();
    assert_eq!(loud.len(), 50);
    // The encoder needs a few frames to settle.
    assert!(loud[5..].iter().all(|l| (7..=11).contains(l)), "{loud:?}");
    let silent: Vec<_> = (50..100u64).filter_map(|i| levels.level(&publisher.tone(440.0, 0.0), i * 20)).collect();
    assert_eq!(silent.len(), 50);
    assert!(silent[5..].iter().all(|l| l.level >= 120 && !l.voice), "{silent:?}");
    let stats = levels.stats();
    assert_eq!((stats.decoded, stats.from_extension, stats.skipped, stats.bad_packets), (100, 0, 0, 0));
}

#[test]
fn the_extension_is_used_when_present_and_the_payload_decoded_when_not() {
    let mut publisher = Publisher::new(2, 0);
    let mut levels = LevelSource::new(LevelConfig::new(Some(3)));
    let mut tagged = publisher.tone(440.0, 0.5);
    tagged.header.extension = true;
    tagged.header.extension_profile = 0xBEDE;
    // V set, 42 -dBov: not what the payload says, so the answer shows which was read.
    tagged.header.extensions = vec![Extension { id: 3, payload: Bytes::from_static(&[0x80 | 42]) }];
    let level = levels.level(&tagged, 0).unwrap();
    assert_eq!((level.level, level.voice), (42, true));
    assert_eq!((levels.stats().from_extension, levels.stats().decoded), (1, 0));

    // Another id than the negotiated one counts as absent.
    let mut other = publisher.tone(440.0, 0.5);
    other.header.extension = true;
    other.header.extension_profile = 0xBEDE;
    other.header.extensions = vec![Extension { id: 4, payload: Bytes::from_static(&[42]) }];
    assert!(levels.level(&other, 20).unwrap().level < 30);
    assert_eq!((levels.stats().from_extension, levels.stats().decoded), (1, 1));

    // Padding has no level and is not decoded.
    let padding = Packet { header: other.header.clone(), payload: Bytes::new() };
    assert_eq!(levels.level(&padding, 40), None);
    assert_eq!(levels.stats().decoded, 1);
}

#[test]
fn decoding_is_bounded_by_its_rate() {
    let mut publisher = Publisher::new(3, 0);
    let config = LevelConfig { max_decodes_per_second: 50, burst: 5, ..LevelConfig::new(None) };
    let mut levels = LevelSource::new(config);
    // A flood at one instant: the burst, then nothing.
    let got = (0..40).filter(|_| levels.level(&publisher.tone(440.0, 0.5), 1_000).is_some()).count();
    assert_eq!(got, 5);
    assert_eq!(levels.stats().skipped, 35);
    // One second later the bucket is full again (capped at the burst).
    let got = (0..40).filter(|_| levels.level(&publisher.tone(440.0, 0.5), 2_000).is_some()).count();
    assert_eq!(got, 5);
    // At the allowed rate nothing is skipped.
    let skipped = levels.stats().skipped;
    for i in 0..100u64 {
        assert!(levels.level(&publisher.tone(440.0, 0.5), 3_000 + i * 20).is_some());
    }
    assert_eq!(levels.stats().skipped, skipped);
}

#[test]
fn the_active_speaker_is_the_loud_source_among_several_without_the_extension() {
    let names = ["silent", "murmur", "talker"];
    let mut publishers: Vec<_> = (0..3).map(|i| Publisher::new(10 + i, 0)).collect();
    let mut levels: Vec<_> = (0..3).map(|_| LevelSource::new(LevelConfig::new(None))).collect();
    let mut speaker = ActiveSpeaker::new(SpeakerConfig::default());
    // Amplitudes: silence, a murmur at about -54 dBov (under the speech threshold), a talker at -9.
    let mut amplitudes = [0.0, 0.003, 0.5];
    let mut run = |amplitudes: &[f64; 3], from: u64, speaker: &mut ActiveSpeaker<&'static str>| {
        let mut changes = Vec::new();
        for t in (from..from + 2_000).step_by(20) {
            for i in 0..3 {
                let packet = publishers[i].tone(300.0 + 100.0 * i as f64, amplitudes[i]);
                if let Some(level) = levels[i].level(&packet, t) {
                    speaker.observe(&names[i], level, t);
                }
            }
            if t % 100 == 0 {
                changes.extend(speaker.poll(t));
            }
        }
        changes
    };
    assert_eq!(run(&amplitudes, 0, &mut speaker), vec!["talker"]);
    let murmur = speaker.loudness(&"murmur", 1_980).unwrap();
    let talker = speaker.loudness(&"talker", 1_980).unwrap();
    assert!(talker > 50.0 * murmur, "talker {talker}, murmur {murmur}");
    assert!(speaker.loudness(&"silent", 1_980).unwrap() < 1e-4);

    // The talker falls silent and the murmur speaks up: the choice follows.
    amplitudes = [0.0, 0.4, 0.0];
    assert_eq!(run(&amplitudes, 2_000, &mut speaker), vec!["murmur"]);
}

#[test]
fn the_mix_of_two_tones_carries_both_in_continuous_rtp() {
    let mut mixer = AudioMixer::new(MixerConfig {
        first_sequence: 65_500,
        first_timestamp: u32::MAX - 10_000,
        ..MixerConfig::new(0x3141, 111)
    })
    .unwrap();
    mixer.add_source(1).unwrap();
    mixer.add_source(2).unwrap();
    let (mut a, mut b) = (Publisher::new(1, 7), Publisher::new(2, 65_530));
    let mut out = Vec::new();
    for tick in 0..60u64 {
        let now = 1_000 + tick * 20;
        mixer.on_rtp(&1, &a.tone(440.0, 0.25)).unwrap();
        mixer.on_rtp(&2, &b.tone(1_250.0, 0.25)).unwrap();
        out.extend(mix_due(&mut mixer, now));
    }
    // The first tick waits for the jitter buffer (two frames); every later one sends.
    assert_eq!(out.len(), 59);
    assert_eq!(out[0].header.sequence_number, 65_500);
    assert_eq!(out[0].header.timestamp, (u32::MAX - 10_000).wrapping_add(960));
    assert_continuous(&out, 0x3141);
    assert_eq!(mixer.stats().silent_ticks, 1);

    let pcm = decode_all(&out);
    assert_eq!(pcm.len(), 59 * 960);
    // 400 ms from the middle: both tones at about their level, little elsewhere.
    let window = &pcm[20 * 960..40 * 960];
    let (low, high) = (amplitude_at(window, 440.0), amplitude_at(window, 1_250.0));
    assert!((0.15..0.35).contains(&low), "440 Hz at {low}");
    assert!((0.15..0.35).contains(&high), "1250 Hz at {high}");
    for off in [700.0, 2_000.0, 3_000.0] {
        let a = amplitude_at(window, off);
        assert!(a < 0.02, "{off} Hz at {a}");
    }
    for key in [1, 2] {
        let s = mixer.source_stats(&key).unwrap();
        assert_eq!((s.decoded, s.mixed_frames, s.bad_packets, s.late, s.underruns), (60, 59, 0, 0, 0));
        assert_eq!(s.buffered_samples, 960);
    }
}

#[test]
fn a_stereo_mix_carries_both_tones_on_both_channels() {
    let mut mixer =
        AudioMixer::new(MixerConfig { stereo: true, bitrate_bps: 64_000, ..MixerConfig::new(8, 111) }).unwrap();
    mixer.add_source(1).unwrap();
    mixer.add_source(2).unwrap();
    let (mut a, mut b) = (Publisher::new(1, 0), Publisher::new(2, 0));
    let mut out = Vec::new();
    for tick in 0..40u64 {
        mixer.on_rtp(&1, &a.tone(440.0, 0.25)).unwrap();
        mixer.on_rtp(&2, &b.tone(1_250.0, 0.25)).unwrap();
        out.extend(mix_due(&mut mixer, tick * 20));
    }
    assert_eq!(out.len(), 39);
    assert_continuous(&out, 8);
    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo).unwrap();
    let mut buf = vec![0i16; 2 * 5_760];
    let mut pcm = Vec::new();
    for p in &out {
        assert_eq!(opus::packet::get_nb_channels(&p.payload).unwrap(), opus::Channels::Stereo);
        let n = decoder.decode(&p.payload, &mut buf, false).unwrap();
        pcm.extend_from_slice(&buf[..2 * n]);
    }
    for channel in 0..2 {
        let samples: Vec<i16> = pcm.iter().skip(channel).step_by(2).copied().collect();
        let window = &samples[10 * 960..30 * 960];
        assert!(amplitude_at(window, 440.0) > 0.15, "channel {channel}");
        assert!(amplitude_at(window, 1_250.0) > 0.15, "channel {channel}");
        assert!(amplitude_at(window, 3_000.0) < 0.02, "channel {channel}");
    }
}

#[test]
fn a_source_that_stops_does_not_stall_the_mix() {
    let mut mixer = AudioMixer::new(MixerConfig::new(9, 111)).unwrap();
    mixer.add_source(1).unwrap();
    mixer.add_source(2).unwrap();
    let (mut a, mut b) = (Publisher::new(1, 0), Publisher::new(2, 0));
    let mut out = Vec::new();
    for tick in 0..50u64 {
        if tick < 10 {
            mixer.on_rtp(&1, &a.tone(440.0, 0.25)).unwrap();
        }
        mixer.on_rtp(&2, &b.tone(1_250.0, 0.25)).unwrap();
        out.extend(mix_due(&mut mixer, tick * 20));
    }
    assert_eq!(out.len(), 49, "a packet every tick after the first");
    assert_continuous(&out, 9);
    assert_eq!(mixer.source_stats(&1).unwrap().underruns, 1);
    let pcm = decode_all(&out);
    let tail = &pcm[pcm.len() - 20 * 960..];
    assert!(amplitude_at(tail, 1_250.0) > 0.15);
    assert!(amplitude_at(tail, 440.0) < 0.02);

    // Removing a source drops it and its buffer; the other plays on.
    assert!(mixer.remove_source(&1));
    assert!(!mixer.remove_source(&1));
    mixer.on_rtp(&2, &b.tone(1_250.0, 0.25)).unwrap();
    assert!(mixer.on_rtp(&1, &a.tone(440.0, 0.25)).is_err());
    let more = mix_due(&mut mixer, 1_000);
    assert_eq!(more.len(), 1);
    let joined: Vec<Packet> = out.iter().chain(&more).cloned().collect();
    assert_continuous(&joined, 9);
}

#[test]
fn after_silence_the_mix_resumes_with_the_marker_and_the_clock_s_timestamp() {
    let mut mixer = AudioMixer::new(MixerConfig::new(5, 111)).unwrap();
    mixer.add_source(1).unwrap();
    let mut a = Publisher::new(1, 0);
    let mut out = Vec::new();
    for tick in 0..40u64 {
        // Talks for 200 ms, pauses for 400 ms (as DTX would: nothing sent), talks again.
        if !(10..30).contains(&tick) {
            mixer.on_rtp(&1, &a.tone(440.0, 0.25)).unwrap();
        }
        out.extend(mix_due(&mut mixer, tick * 20).into_iter().map(|p| (tick, p)));
    }
    let markers: Vec<u64> = out.iter().filter(|(_, p)| p.header.marker).map(|(t, _)| *t).collect();
    // Ticks 1-10 send (the jitter buffer holds 2), then it runs dry; after the pause it refills.
    assert_eq!(markers, vec![1, 31]);
    let (first_tick, first) = &out[0];
    for w in out.windows(2) {
        let ((_, a), (tb, b)) = (&w[0], &w[1]);
        assert_eq!(b.header.sequence_number, a.header.sequence_number.wrapping_add(1));
        let ticks = (tb - first_tick) as u32;
        assert_eq!(b.header.timestamp, first.header.timestamp.wrapping_add(960 * ticks), "tick {tb}");
    }
    assert_eq!(mixer.source_stats(&1).unwrap().underruns, 1);
}

#[test]
fn a_late_caller_skips_ticks_instead_of_bursting() {
    let mut mixer = AudioMixer::new(MixerConfig::new(5, 111)).unwrap();
    mixer.add_source(1).unwrap();
    let mut a = Publisher::new(1, 0);
    for _ in 0..4 {
        mixer.on_rtp(&1, &a.tone(440.0, 0.25)).unwrap();
    }
    let first = mix_due(&mut mixer, 0);
    // 60 ms late: the three ticks due are made now.
    let caught_up = mix_due(&mut mixer, 60);
    assert_eq!(first.len() + caught_up.len(), 4);
    for _ in 0..4 {
        mixer.on_rtp(&1, &a.tone(440.0, 0.25)).unwrap();
    }
    // 440 ms late: one tick, on the clock's timestamp.
    let after = mix_due(&mut mixer, 500);
    assert_eq!(after.len(), 1);
    assert!(after[0].header.marker);
    assert_eq!(after[0].header.timestamp, first[0].header.timestamp.wrapping_add(25 * 960));
    assert_eq!(after[0].header.sequence_number, caught_up.last().unwrap().header.sequence_number.wrapping_add(1));
    assert_eq!(mixer.stats().skipped_ticks, 21);
    assert_eq!(mixer.next_mix_ms(), Some(520));
}

#[test]
fn lost_packets_are_concealed_late_ones_dropped_and_buffers_bounded() {
    let mut mixer = AudioMixer::new(MixerConfig::new(5, 111)).unwrap();
    mixer.add_source(1).unwrap();
    let mut a = Publisher::new(1, 65_534);
    let packets: Vec<_> = (0..5).map(|_| a.tone(440.0, 0.25)).collect();
    // 65534, 65535, (0 and 1 lost), 2, then 0 arrives late.
    for i in [0, 1, 4, 2] {
        mixer.on_rtp(&1, &packets[i]).unwrap();
    }
    let s = mixer.source_stats(&1).unwrap();
    assert_eq!((s.decoded, s.concealed, s.late), (3, 2, 1));
    assert_eq!(s.buffered_samples, 5 * 960);

    // Fed without being mixed, a source keeps at most 10 frames.
    for _ in 0..30 {
        mixer.on_rtp(&1, &a.tone(440.0, 0.25)).unwrap();
    }
    let s = mixer.source_stats(&1).unwrap();
    assert_eq!(s.buffered_samples, 10 * 960);
    assert_eq!(s.overflow_frames, 25);
}

#[test]
fn payloads_libopus_refuses_are_counted_and_skipped() {
    let mut mixer = AudioMixer::new(MixerConfig::new(5, 111)).unwrap();
    mixer.add_source(1).unwrap();
    let mut levels = LevelSource::new(LevelConfig::new(None));
    let mut a = Publisher::new(1, 0);
    // Code 3 without its frame count; code 1 (two equal frames) with an odd length.
    for bad in [&[0x03u8][..], &[0x01, 0x00]] {
        let mut p = a.tone(440.0, 0.25);
        p.payload = Bytes::copy_from_slice(bad);
        assert_eq!(levels.level(&p, 0), None);
        assert_eq!(mixer.on_rtp(&1, &p).unwrap(), None);
    }
    assert_eq!(levels.stats().bad_packets, 2);
    let s = mixer.source_stats(&1).unwrap();
    assert_eq!((s.bad_packets, s.decoded), (2, 0));
    // The next good packet decodes (nothing before it to conceal from).
    assert!(mixer.on_rtp(&1, &a.tone(440.0, 0.25)).unwrap().is_some());
    assert!(levels.level(&a.tone(440.0, 0.25), 20).is_some());
}

#[test]
fn the_level_of_decoded_pcm_matches_the_mixers() {
    let mut mixer = AudioMixer::new(MixerConfig::new(5, 111)).unwrap();
    mixer.add_source(1).unwrap();
    let mut levels = LevelSource::new(LevelConfig::new(None));
    let mut a = Publisher::new(1, 0);
    for i in 0..20 {
        let p = a.tone(440.0, 0.1);
        assert_eq!(mixer.on_rtp(&1, &p).unwrap(), levels.level(&p, i * 20));
    }
    assert_eq!(level_of_pcm(&[0; 10], 50).level, 127);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_payloads_never_panic_the_decoders(
        packets in prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..300)), 1..30),
        stereo in any::<bool>(),
    ) {
        let mut mixer = AudioMixer::new(MixerConfig { stereo, ..MixerConfig::new(5, 111) }).unwrap();
        mixer.add_source(1).unwrap();
        let config = LevelConfig { max_decodes_per_second: 1_000, burst: 100, ..LevelConfig::new(Some(1)) };
        let mut levels = LevelSource::new(config);
        let mut fed = 0;
        for (i, (seq, payload)) in packets.iter().enumerate() {
            let now = i as u64 * 20;
            let packet = Packet {
                header: Header { version: 2, sequence_number: *seq, payload_type: 111, ..Default::default() },
                payload: Bytes::copy_from_slice(payload),
            };
            fed += u64::from(!payload.is_empty());
            if let Some(level) = levels.level(&packet, now) {
                prop_assert!(level.level <= 127);
            }
            mixer.on_rtp(&1, &packet).unwrap();
            let _ = mix_due(&mut mixer, now);
        }
        let l = levels.stats();
        prop_assert_eq!(l.decoded + l.bad_packets + l.skipped, fed);
        let s = mixer.source_stats(&1).unwrap();
        prop_assert_eq!(s.decoded + s.bad_packets + s.late, fed);
        prop_assert!(s.buffered_samples <= 10 * 960);
    }
}
