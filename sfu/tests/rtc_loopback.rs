//! The WebRTC adapter end to end over real UDP on 127.0.0.1: client A publishes VP8 to the node,
//! client B subscribes through a server-initiated renegotiation, and B gets A's payloads until the
//! track is muted. Both clients are plain webrtc-rs peer connections; nothing is mocked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::peer::{client, complete_local, guarded};
use sfu::rtc::{MediaConfig, MediaKind, MediaNode, PeerEvent, PeerId, PeerRole, TrackId};
use sfu::Layer;
use tokio::sync::mpsc;
use webrtc::api::media_engine::MIME_TYPE_VP8;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

/// Client A's synthetic VP8 stream: one packet per frame, each payload carrying its index.
struct Publisher {
    track: Arc<TrackLocalStaticRTP>,
    next: u32,
}

impl Publisher {
    /// Sends frame `next` (a keyframe when asked) and returns its payload.
    async fn send(&mut self, keyframe: bool) -> Bytes {
        let index = self.next;
        self.next += 1;
        let mut payload = vec![0x10]; // payload descriptor: S = 1, partition 0, no extensions
        if keyframe {
            // Frame tag with P = 0 (key frame), then the start code and a 320x240 size.
            payload.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
        } else {
            payload.extend_from_slice(&[0x11, 0x02, 0x00]);
        }
        payload.extend_from_slice(&index.to_be_bytes());
        let packet = Packet {
            header: Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: index as u16,
                timestamp: index.wrapping_mul(3000),
                ssrc: 1,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        self.track.write_rtp(&packet).await.unwrap();
        packet.payload
    }
}

fn index_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[payload.len() - 4..].try_into().unwrap())
}

fn is_keyframe(payload: &[u8]) -> bool {
    payload[1] & 0x01 == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_reaches_a_subscriber_until_muted() {
    let node = MediaNode::new(MediaConfig::new("127.0.0.1:0".parse().unwrap())).await.unwrap();
    assert!(node.local_addr().port() != 0);
    let (sfu_a, mut events_a) = node.peer(PeerId(1), PeerRole::Publisher).await.unwrap();
    let (sfu_b, _events_b) = node.peer(PeerId(2), PeerRole::Subscriber).await.unwrap();

    // A publishes: its offer carries a VP8 track.
    let a = client().await;
    let vp8 = RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.to_owned(), clock_rate: 90_000, ..Default::default() };
    let track = Arc::new(TrackLocalStaticRTP::new(vp8, "camera".to_owned(), "a".to_owned()));
    let a_sender = a.add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await.unwrap();
    // Reading the sender's RTCP runs A's interceptors (NACK responder, reports); keyframe requests
    // from the node are reported.
    let (a_plis, mut a_pli_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((packets, _)) = a_sender.read_rtcp().await {
            for packet in packets {
                if packet.as_any().is::<PictureLossIndication>() {
                    let _ = a_plis.send(());
                }
            }
        }
    });
    let offer = a.create_offer(None).await.unwrap();
    let offer = complete_local(&a, offer).await;
    let answer = sfu_a.accept_offer(offer).await.unwrap();
    a.set_remote_description(RTCSessionDescription::answer(answer).unwrap()).await.unwrap();

    // The node reports the track once its first packets arrive; A sends until then.
    let mut publisher = Publisher { track, next: 0 };
    let mut sent: Vec<Bytes> = Vec::new();
    let mut candidates = 0;
    let published = guarded("track published", async {
        loop {
            sent.push(publisher.send(true).await);
            tokio::select! {
                event = events_a.recv() => match event.expect("events of A ended") {
                    PeerEvent::TrackPublished(t) => break t,
                    PeerEvent::LocalCandidate(json) => {
                        assert!(json.contains("127.0.0.1"), "{json}");
                        candidates += 1;
                    }
                    PeerEvent::ConnectionState(_) | PeerEvent::Estimate(_) => {}
                },
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await;
    assert!(candidates > 0, "the node reports its candidates");
    assert_eq!(published.kind, MediaKind::Video);
    assert!(published.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8));
    assert_eq!(published.rid, None);
    let track_id: TrackId = published.track;

    // B subscribes: the server offers, B answers.
    let b = client().await;
    let (b_tracks, mut b_track_rx) = mpsc::unbounded_channel();
    let (b_candidates, mut b_candidate_rx) = mpsc::unbounded_channel();
    b.on_ice_candidate(Box::new(move |candidate| {
        if let Some(json) = candidate.and_then(|c| c.to_json().ok()) {
            let _ = b_candidates.send(serde_json::to_string(&json).unwrap());
        }
        Box::pin(async {})
    }));
    b.on_track(Box::new(move |remote, _, _| {
        let _ = b_tracks.send(remote);
        Box::pin(async {})
    }));
    sfu_b.subscribe(track_id, Some(Layer::LOW), "t1").await.unwrap();
    let offer = sfu_b.create_offer().await.unwrap();
    b.set_remote_description(RTCSessionDescription::offer(offer).unwrap()).await.unwrap();
    let answer = b.create_answer(None).await.unwrap();
    let answer = complete_local(&b, answer).await;
    sfu_b.apply_answer(answer).await.unwrap();
    // B's SDP carried its candidates already; trickling them again is harmless and exercises the path.
    let mut trickled = 0;
    while let Ok(json) = b_candidate_rx.try_recv() {
        sfu_b.add_candidate(&json).await.unwrap();
        trickled += 1;
    }
    assert!(trickled > 0);
    assert!(sfu_b.add_candidate("not json").await.is_err());

    // A streams (a keyframe every tenth frame) until B's track fires and B has 20 frames.
    let (b_payloads, mut b_rx) = mpsc::unbounded_channel::<Bytes>();
    let mut received: Vec<Bytes> = Vec::new();
    let mut b_track = None;
    guarded("B receives A's frames", async {
        while received.len() < 20 {
            let keyframe = publisher.next.is_multiple_of(10);
            sent.push(publisher.send(keyframe).await);
            if b_track.is_none() {
                if let Ok(remote) = b_track_rx.try_recv() {
                    let remote: Arc<webrtc::track::track_remote::TrackRemote> = remote;
                    let tx = b_payloads.clone();
                    b_track = Some(remote.clone());
                    tokio::spawn(async move {
                        while let Ok((packet, _)) = remote.read_rtp().await {
                            if tx.send(packet.payload).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
            tokio::select! {
                Some(payload) = b_rx.recv() => received.push(payload),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            while let Ok(payload) = b_rx.try_recv() {
                received.push(payload);
            }
        }
    })
    .await;
    let b_track = b_track.expect("B's on_track fired");
    guarded("A is asked for a keyframe for B", a_pli_rx.recv()).await.unwrap();
    assert_eq!(b_track.codec().capability.mime_type.to_ascii_lowercase(), "video/vp8");
    // The forwarder starts B on a keyframe, but B's transport may drop the first packets while its
    // DTLS handshake completes (the node finishes it first and starts sending): then B's first RTCP
    // gets it a keyframe. Either way B holds a keyframe, and what precedes it is only what followed
    // a keyframe lost that way.
    let order: Vec<u32> = received.iter().take(12).map(|p| index_of(p)).collect();
    let first_key = received.iter().position(|p| is_keyframe(p)).expect("B got a keyframe");
    assert!(
        first_key == 0 || !index_of(&received[0]).is_multiple_of(10) && order.windows(2).all(|w| w[1] == w[0] + 1),
        "B starts on a keyframe, or right after one lost in its transport's start: {order:?}"
    );
    for payload in &received {
        let index = index_of(payload) as usize;
        assert_eq!(payload, &sent[index], "B gets A's payload of frame {index} unchanged");
    }

    // Mute. First let all A sent so far reach B, so that nothing is in flight; then A sends 30 frames,
    // keyframes among them, and once the node has read them all, B has got none. Then unmute and send
    // keyframes until one reaches B: anything forwarded during the mute would have reached B before it.
    let last_sent = sent.len() as u32 - 1;
    guarded("B catches up with A", async {
        while received.iter().map(|p| index_of(p)).max() < Some(last_sent) {
            received.push(b_rx.recv().await.expect("B's reader ended"));
        }
    })
    .await;
    let read_before_mute = node.received_packets(track_id).unwrap();
    let received_before_mute = received.len();
    sfu_a.set_muted(track_id, true).await.unwrap();
    let muted_from = publisher.next;
    for _ in 0..30 {
        let keyframe = publisher.next.is_multiple_of(10);
        sent.push(publisher.send(keyframe).await);
    }
    let muted_until = publisher.next;
    guarded("the node reads the frames sent while muted", async {
        while node.received_packets(track_id).unwrap() < read_before_mute + 30 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    while let Ok(payload) = b_rx.try_recv() {
        received.push(payload);
    }
    assert_eq!(received.len(), received_before_mute, "B's count grew while muted");
    sfu_a.set_muted(track_id, false).await.unwrap();
    guarded("B resumes after unmute", async {
        loop {
            sent.push(publisher.send(true).await);
            tokio::select! {
                Some(payload) = b_rx.recv() => {
                    let resumed = index_of(&payload) >= muted_until;
                    received.push(payload);
                    if resumed {
                        break;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    })
    .await;
    while let Ok(payload) = b_rx.try_recv() {
        received.push(payload);
    }
    let during_mute: Vec<u32> =
        received.iter().map(|p| index_of(p)).filter(|i| (muted_from..muted_until).contains(i)).collect();
    assert!(during_mute.is_empty(), "frames sent while muted reached B: {during_mute:?}");
    let resumed = received.iter().find(|p| index_of(p) >= muted_until).unwrap();
    assert!(is_keyframe(resumed), "B resumes on a keyframe");
    assert_eq!(resumed, &sent[index_of(resumed) as usize]);

    // Closing a peer ends its event stream; closing the node closes the rest.
    sfu_a.close().await;
    guarded("A's events end", async { while events_a.recv().await.is_some() {} }).await;
    node.close().await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}
