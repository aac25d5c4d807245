//! Audio through the WebRTC adapter over real UDP on 127.0.0.1: webrtc-rs clients publish Opus
//! encoded by libopus (sine tones, digital silence) without the RFC 6464 extension; the node reports
//! the levels it decodes, and mixes two publishers for a listener, whose received Opus is decoded and
//! its spectrum checked. Nothing is mocked; sends are paced at 20 ms like a real sender's.

mod common;

use std::f64::consts::PI;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::peer::{client, complete_local, guarded};
use sfu::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use sfu::rtc::{MediaConfig, MediaError, MediaKind, MediaNode, MixId, Peer, PeerEvent, PeerId, PeerRole, TrackId};
use tokio::sync::mpsc;
use webrtc::api::media_engine::MIME_TYPE_OPUS;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc::track::track_remote::TrackRemote;

/// A client publishing one mono Opus track of a tone (`amplitude` 0: digital silence), 20 ms a packet.
struct Talker {
    pc: Arc<RTCPeerConnection>,
    peer: Peer,
    events: mpsc::Receiver<PeerEvent>,
    track: Arc<TrackLocalStaticRTP>,
    encoder: opus::Encoder,
    freq: f64,
    amplitude: f64,
    seq: u16,
    ts: u32,
    sample: usize,
    /// The node's id of the track, once published.
    id: Option<TrackId>,
}

impl Talker {
    async fn join(node: &MediaNode, id: u64, freq: f64, amplitude: f64) -> Talker {
        let (peer, events) = node.peer(PeerId(id), PeerRole::Publisher).await.unwrap();
        let pc = client().await;
        let opus = RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: Vec::new(),
        };
        let track = Arc::new(TrackLocalStaticRTP::new(opus, format!("mic{id}"), format!("talker{id}")));
        let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await.unwrap();
        // Reading the sender's RTCP runs the client's interceptors.
        tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
        let offer = pc.create_offer(None).await.unwrap();
        let offer = complete_local(&pc, offer).await;
        assert!(!offer.contains("ssrc-audio-level"), "the client offers no level extension");
        let answer = peer.accept_offer(offer).await.unwrap();
        pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap()).await.unwrap();
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip).unwrap();
        encoder.set_bitrate(opus::Bitrate::Bits(48_000)).unwrap();
        let seq = (id as u16).wrapping_mul(9_000);
        Talker { pc, peer, events, track, encoder, freq, amplitude, seq, ts: 0, sample: 0, id: None }
    }

    /// Encodes and sends the next 20 ms, and notes the track's id when the node reports it.
    async fn send(&mut self) {
        let pcm: Vec<i16> = (self.sample..self.sample + FRAME_SAMPLES)
            .map(|i| {
                let phase = 2.0 * PI * self.freq * i as f64 / f64::from(SAMPLE_RATE);
                (self.amplitude * 32_767.0 * phase.sin()) as i16
            })
            .collect();
        let payload = self.encoder.encode_vec(&pcm, 1_500).unwrap();
        let packet = Packet {
            header: Header {
                version: 2,
                payload_type: 111,
                sequence_number: self.seq,
                timestamp: self.ts,
                ssrc: 1,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        self.track.write_rtp(&packet).await.unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
        self.sample += FRAME_SAMPLES;
        while let Ok(event) = self.events.try_recv() {
            if let PeerEvent::TrackPublished(t) = event {
                assert_eq!(t.kind, MediaKind::Audio);
                assert!(t.mime_type.eq_ignore_ascii_case(MIME_TYPE_OPUS));
                self.id = Some(t.track);
            }
        }
    }
}

/// Talkers sending together, paced at 20 ms.
struct Room {
    talkers: Vec<Talker>,
    pace: tokio::time::Interval,
}

impl Room {
    fn new(talkers: Vec<Talker>) -> Room {
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Room { talkers, pace }
    }

    async fn tick(&mut self) {
        self.pace.tick().await;
        for talker in &mut self.talkers {
            talker.send().await;
        }
    }

    /// Sends until the node has published every talker's track; their ids.
    async fn until_published(&mut self) -> Vec<TrackId> {
        guarded("tracks published", async {
            while self.talkers.iter().any(|t| t.id.is_none()) {
                self.tick().await;
            }
        })
        .await;
        self.talkers.iter().map(|t| t.id.unwrap()).collect()
    }

    async fn close(self) {
        for talker in self.talkers {
            talker.peer.close().await;
            talker.pc.close().await.unwrap();
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_are_decoded_when_packets_carry_none() {
    let node = MediaNode::new(MediaConfig::new("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let tone = Talker::join(&node, 1, 440.0, 0.5).await;
    let silence = Talker::join(&node, 2, 440.0, 0.0).await;
    let mut room = Room::new(vec![tone, silence]);
    let ids = room.until_published().await;
    let (tone_id, silence_id) = (ids[0], ids[1]);

    let (mut loud, mut quiet) = (Vec::new(), Vec::new());
    guarded("40 levels of each", async {
        while loud.len() < 40 || quiet.len() < 40 {
            room.tick().await;
            loud.extend(node.take_levels(tone_id).unwrap().into_iter().map(|(_, l)| l));
            quiet.extend(node.take_levels(silence_id).unwrap().into_iter().map(|(_, l)| l));
        }
    })
    .await;
    // A full-scale sine is 3 -dBov; at half scale 9. The first packets are the encoder's start.
    assert!(loud[5..].iter().all(|l| (6..=12).contains(&l.level) && l.voice), "{loud:?}");
    // Digital silence from a fresh encoder decodes to a trace of noise (about -112 dBov), far below
    // speech.
    assert!(quiet[5..].iter().all(|l| l.level >= 100 && !l.voice), "{quiet:?}");

    // Muted, the track gives no levels: those taken after the mute are all from packets read before.
    room.talkers[0].peer.set_muted(tone_id, true).await.unwrap();
    let muted_at = node.now_ms();
    let read = node.received_packets(tone_id).unwrap();
    let mut after_mute = node.take_levels(tone_id).unwrap();
    guarded("the node reads 25 packets sent while muted", async {
        while node.received_packets(tone_id).unwrap() < read + 25 {
            room.tick().await;
        }
    })
    .await;
    after_mute.extend(node.take_levels(tone_id).unwrap());
    assert!(
        after_mute.iter().all(|&(at, _)| at <= muted_at),
        "levels while muted: {after_mute:?} (muted at {muted_at})"
    );
    // The silent track was not muted and still reports.
    assert!(!node.take_levels(silence_id).unwrap().is_empty());

    room.talkers[0].peer.set_muted(tone_id, false).await.unwrap();
    let resumed = guarded("levels after unmute", async {
        loop {
            room.tick().await;
            if let Some(&(at, level)) = node.take_levels(tone_id).unwrap().last() {
                break (at, level);
            }
        }
    })
    .await;
    assert!(resumed.0 > muted_at);

    // An unknown track is an error, not an empty list.
    assert!(matches!(node.take_levels(TrackId(9_999)), Err(MediaError::UnknownTrack(_))));
    room.close().await;
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_hears_both_talkers_in_the_mix() {
    let node = MediaNode::new(MediaConfig::new("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let low = Talker::join(&node, 1, 440.0, 0.25).await;
    let high = Talker::join(&node, 2, 1_250.0, 0.25).await;
    let mut room = Room::new(vec![low, high]);
    let ids = room.until_published().await;

    let mix = node.create_mix().unwrap();
    for &id in &ids {
        node.mix_add_track(mix, id).unwrap();
    }
    assert!(matches!(node.mix_add_track(mix, ids[0]), Err(MediaError::AlreadyMixed(_))));
    assert!(matches!(node.mix_add_track(MixId(9_999), ids[0]), Err(MediaError::UnknownMix(_))));
    assert!(matches!(node.mix_add_track(mix, TrackId(9_999)), Err(MediaError::UnknownTrack(_))));

    // The listener: a subscriber connection with the mix alone, offered by the node.
    let (sfu_listener, _listener_events) = node.peer(PeerId(3), PeerRole::Subscriber).await.unwrap();
    let listener = client().await;
    let (tracks, mut track_rx) = mpsc::unbounded_channel::<Arc<TrackRemote>>();
    listener.on_track(Box::new(move |remote, _, _| {
        let _ = tracks.send(remote);
        Box::pin(async {})
    }));
    sfu_listener.subscribe_mix(mix, "room-mix").await.unwrap();
    assert!(matches!(sfu_listener.subscribe_mix(mix, "again").await, Err(MediaError::AlreadyListening(_))));
    let offer = sfu_listener.create_offer().await.unwrap();
    assert!(offer.contains("msid:room-mix room-mix"), "{offer}");
    listener.set_remote_description(RTCSessionDescription::offer(offer).unwrap()).await.unwrap();
    let answer = listener.create_answer(None).await.unwrap();
    let answer = complete_local(&listener, answer).await;
    sfu_listener.apply_answer(answer).await.unwrap();

    // The talkers go on until the listener has 100 packets (2 s) of the mix.
    let (packets_tx, mut packets_rx) = mpsc::unbounded_channel::<Packet>();
    let mut received: Vec<Packet> = Vec::new();
    let mut remote = None;
    guarded("the listener gets 100 packets of the mix", async {
        while received.len() < 100 {
            room.tick().await;
            if remote.is_none() {
                if let Ok(track) = track_rx.try_recv() {
                    let tx = packets_tx.clone();
                    remote = Some(track.clone());
                    tokio::spawn(async move {
                        while let Ok((packet, _)) = track.read_rtp().await {
                            if tx.send(packet).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
            while let Ok(packet) = packets_rx.try_recv() {
                received.push(packet);
            }
        }
    })
    .await;
    let remote = remote.unwrap();
    assert_eq!(remote.codec().capability.mime_type.to_ascii_lowercase(), "audio/opus");
    assert_eq!(remote.id(), "room-mix");

    for pair in received.windows(2) {
        let (a, b) = (&pair[0].header, &pair[1].header);
        assert_eq!(b.sequence_number, a.sequence_number.wrapping_add(1), "{a:?} then {b:?}");
        let step = b.timestamp.wrapping_sub(a.timestamp);
        assert!(step > 0 && step.is_multiple_of(960) && step < 960 * 50, "{a:?} then {b:?}");
        assert_eq!(b.ssrc, a.ssrc);
    }

    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0i16; 5_760];
    for packet in &received {
        let n = decoder.decode(&packet.payload, &mut buf, false).unwrap();
        pcm.extend_from_slice(&buf[..n]);
    }
    // Each packet of the last second (past the start of both sources and of the encoder) on its own:
    // a source that ran dry for a moment resumes with a shift of phase, which would cancel part of
    // a tone measured across the shift. Most packets hold both tones, at their level, and nothing else.
    let per_packet = |freq: f64| -> Vec<f64> {
        let mut amplitudes: Vec<f64> =
            pcm[pcm.len() - 50 * FRAME_SAMPLES..].chunks(FRAME_SAMPLES).map(|p| amplitude_at(p, freq)).collect();
        amplitudes.sort_by(f64::total_cmp);
        amplitudes
    };
    let (low, high) = (per_packet(440.0), per_packet(1_250.0));
    assert!((0.15..0.35).contains(&low[25]), "440 Hz: {low:?}");
    assert!((0.15..0.35).contains(&high[25]), "1250 Hz: {high:?}");
    for off in [2_500.0, 3_100.0, 4_000.0] {
        let x = per_packet(off);
        assert!(x[25] < 0.02, "{off} Hz: {x:?}");
    }

    // Closing a talker's peer takes its track out of the mix.
    room.talkers[0].peer.close().await;
    assert!(matches!(node.mix_remove_track(mix, ids[0]), Err(MediaError::NotMixed(_))));
    node.mix_remove_track(mix, ids[1]).unwrap();
    assert!(matches!(node.mix_remove_track(mix, ids[1]), Err(MediaError::NotMixed(_))));

    sfu_listener.unsubscribe_mix(mix).await.unwrap();
    assert!(matches!(sfu_listener.unsubscribe_mix(mix).await, Err(MediaError::NotListening(_))));
    node.close_mix(mix).unwrap();
    assert!(matches!(node.close_mix(mix), Err(MediaError::UnknownMix(_))));
    assert!(matches!(sfu_listener.subscribe_mix(mix, "gone").await, Err(MediaError::UnknownMix(_))));

    room.close().await;
    sfu_listener.close().await;
    listener.close().await.unwrap();
    node.close().await;
}
