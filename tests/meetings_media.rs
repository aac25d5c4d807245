//! Meeting media through the real binary: plain webrtc-rs peers (nothing mocked) join over the
//! hub's socket, publish synthetic VP8 through `meeting.publish` + `meeting.offer`, and receive
//! on the connection the hub offers. Checks that media reaches the other participant, that a
//! muted track is not forwarded, and the media ops' bad input. Browsers and aiortc are in
//! web-client/test/meeting.test.mjs and tests/meetings_aiortc.rs.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{services::RedisServer, *};
use hub::{
    auth::{mint_hs256, now_secs, parse_room_grants, Claims, Token},
    protocol::Codec,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

async fn guarded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn grant(sub: &str, rooms: &str) -> String {
    let claims = Claims { sub: sub.into(), exp: now_secs() + 3600, role: None, channels: vec![] };
    mint_hs256(SECRET, &Token { claims, rooms: parse_room_grants(rooms).unwrap() })
}

/// A peer connection as a client makes it, on loopback host candidates.
async fn pc() -> Arc<RTCPeerConnection> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();
    Arc::new(api.new_peer_connection(RTCConfiguration::default()).await.unwrap())
}

/// The local description with every candidate in it (these clients do not trickle).
async fn complete_local(pc: &RTCPeerConnection, description: RTCSessionDescription) -> String {
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(description).await.unwrap();
    guarded("client gathering", gathered.recv()).await;
    pc.local_description().await.unwrap().sdp
}

/// The next per-participant media message `name` (`answer`, `offer`, `candidate`, `error`) for
/// `room`: pushed on `room:{id}` without offset.
async fn media_msg(c: &mut Client, room: &str, name: &str) -> Value {
    let channel = format!("room:{room}");
    loop {
        let p = c.next_of("push", &channel).await;
        if p["event"] == name {
            assert!(p.get("offset").is_none(), "media messages are not in the room's history: {p}");
            return p["data"].clone();
        }
    }
}

/// A synthetic VP8 frame: one packet whose payload ends with the frame's index.
fn vp8(index: u32, keyframe: bool) -> Packet {
    let mut payload = vec![0x10]; // descriptor: S = 1, partition 0
    if keyframe {
        // Frame tag with P = 0, the start code and a 320x240 size.
        payload.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
    } else {
        payload.extend_from_slice(&[0x11, 0x02, 0x00]);
    }
    payload.extend_from_slice(&index.to_be_bytes());
    Packet {
        header: Header {
            version: 2,
            marker: true,
            payload_type: 96,
            sequence_number: index as u16,
            timestamp: index.wrapping_mul(3000),
            ssrc: 7,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

fn index_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[payload.len() - 4..].try_into().unwrap())
}

/// A publishing participant: joined, its camera announced and negotiated.
struct Publisher {
    client: Client,
    pc: Arc<RTCPeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    id: String,
    next: u32,
    /// The highest sequence number the hub's receiver reports say it has received.
    received: tokio::sync::watch::Receiver<u32>,
}

impl Publisher {
    async fn start(hub: &Hub, user: &str, room: &str) -> Publisher {
        let mut client = Client::connect_token(hub, &grant(user, &format!("{room}:host")), Codec::Json).await;
        client.ok(json!({ "op": "meeting.join", "room": room })).await;
        let capability = RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.to_owned(), ..Default::default() };
        let track = Arc::new(TrackLocalStaticRTP::new(capability, format!("{user}-cam"), format!("{user}-stream")));
        let reply = client
            .ok(json!({ "op": "meeting.publish", "room": room, "cid": format!("{user}-cam"), "kind": "video" }))
            .await;
        let id = reply["track"].as_str().unwrap().to_string();
        let pc = pc().await;
        let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await.unwrap();
        let (reported, received) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            while let Ok((packets, _)) = sender.read_rtcp().await {
                for packet in packets {
                    if let Some(rr) = packet.as_any().downcast_ref::<ReceiverReport>() {
                        for report in &rr.reports {
                            reported.send_modify(|highest| *highest = (*highest).max(report.last_sequence_number));
                        }
                    }
                }
            }
        });
        let offer = pc.create_offer(None).await.unwrap();
        let sdp = complete_local(&pc, offer).await;
        client.ok(json!({ "op": "meeting.offer", "room": room, "sdp": sdp })).await;
        let answer = media_msg(&mut client, room, "answer").await;
        let answer = RTCSessionDescription::answer(answer["sdp"].as_str().unwrap().to_string()).unwrap();
        pc.set_remote_description(answer).await.unwrap();
        Publisher { client, pc, track, id, next: 0, received }
    }

    /// Waits until the hub's receiver reports say frame `index` (its sequence number) has reached it.
    async fn reached_hub(&mut self, index: u32) {
        guarded("the hub's receiver report", self.received.wait_for(|&highest| highest >= index)).await.unwrap();
    }

    /// Sends the next frame (a keyframe every 10th) and returns its index.
    async fn frame(&mut self) -> u32 {
        let index = self.next;
        self.next += 1;
        // Write errors before the transport is up only lose that frame.
        let _ = self.track.write_rtp(&vp8(index, index.is_multiple_of(10))).await;
        index
    }
}

/// A receiving participant: answers the hub's offers, reports each received payload's index.
struct Receiver {
    client: Client,
    pc: Arc<RTCPeerConnection>,
    frames: mpsc::UnboundedReceiver<(String, u32)>,
}

impl Receiver {
    async fn start(hub: &Hub, user: &str, room: &str, role: &str) -> Receiver {
        let mut client = Client::connect_token(hub, &grant(user, &format!("{room}:{role}")), Codec::Json).await;
        client.ok(json!({ "op": "meeting.join", "room": room })).await;
        Receiver::with_client(client).await
    }

    /// A receiver on a client that has joined already.
    async fn with_client(client: Client) -> Receiver {
        let pc = pc().await;
        let (tx, frames) = mpsc::unbounded_channel();
        pc.on_track(Box::new(move |track, _, _| {
            let tx = tx.clone();
            // Read in a task of its own: webrtc-rs awaits this future before it reports the
            // connection's next track.
            tokio::spawn(async move {
                let stream = track.stream_id();
                while let Ok((packet, _)) = track.read_rtp().await {
                    if tx.send((stream.clone(), index_of(&packet.payload))).is_err() {
                        return;
                    }
                }
            });
            Box::pin(async {})
        }));
        Receiver { client, pc, frames }
    }

    /// Answers the hub's next offer on the subscriber connection.
    async fn answer_offer(&mut self, room: &str) {
        let offer = media_msg(&mut self.client, room, "offer").await;
        let offer = RTCSessionDescription::offer(offer["sdp"].as_str().unwrap().to_string()).unwrap();
        self.pc.set_remote_description(offer).await.unwrap();
        let answer = self.pc.create_answer(None).await.unwrap();
        let sdp = complete_local(&self.pc, answer).await;
        self.client.ok(json!({ "op": "meeting.answer", "room": room, "sdp": sdp })).await;
    }
}

/// Sends frames until the receiver has one at or after `from`; returns every index it read, that
/// one last.
async fn pump_until_received(publisher: &mut Publisher, receiver: &mut Receiver, from: u32) -> Vec<u32> {
    let read = pump_reading_all(publisher, receiver, from).await;
    assert!(
        read.iter().all(|(stream, _)| *stream == publisher.id),
        "the received stream is named by the room's track id"
    );
    read.into_iter().map(|(_, index)| index).collect()
}

/// Sends `publisher`'s frames until the receiver has one of them at or after `from`; returns every
/// (stream, index) it read meanwhile, of any stream.
async fn pump_reading_all(publisher: &mut Publisher, receiver: &mut Receiver, from: u32) -> Vec<(String, u32)> {
    let mut read = Vec::new();
    guarded("media to arrive", async {
        loop {
            publisher.frame().await;
            // Paced by the receiver: wait briefly for what is in flight before sending more.
            if let Ok(Some((stream, index))) =
                tokio::time::timeout(Duration::from_millis(20), receiver.frames.recv()).await
            {
                let done = stream == publisher.id && index >= from;
                read.push((stream, index));
                if done {
                    return read;
                }
            }
        }
    })
    .await
}

/// Answers the receiver's next offer while `publishers` keep sending (a subscription's track is
/// added once its packets flow, so the offer may wait for them); returns the offer's SDP.
async fn answer_while_sending(receiver: &mut Receiver, room: &str, publishers: &mut [&mut Publisher]) -> String {
    let offer = {
        let next_offer = media_msg(&mut receiver.client, room, "offer");
        tokio::pin!(next_offer);
        loop {
            tokio::select! {
                offer = &mut next_offer => break offer,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    for p in publishers.iter_mut() {
                        p.frame().await;
                    }
                }
            }
        }
    };
    let sdp = offer["sdp"].as_str().unwrap().to_string();
    receiver.pc.set_remote_description(RTCSessionDescription::offer(sdp.clone()).unwrap()).await.unwrap();
    let answer = receiver.pc.create_answer(None).await.unwrap();
    let answer = complete_local(&receiver.pc, answer).await;
    receiver.client.ok(json!({ "op": "meeting.answer", "room": room, "sdp": answer })).await;
    sdp
}

/// In a room created without auto-subscribe, a participant receives only the tracks it asks for,
/// adds one later, and stops receiving one it unsubscribes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_participant_chooses_what_it_receives() {
    let hub = Hub::start(&[]);
    let room = "chosen";
    let (status, created) = hub.api_post("/rooms", json!({ "id": room, "auto_subscribe": false })).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["auto_subscribe"], false);
    let mut bob = Client::connect_token(&hub, &grant("bob", &format!("{room}:participant")), Codec::Json).await;
    let joined = bob.ok(json!({ "op": "meeting.join", "room": room })).await;
    assert_eq!(joined["room"]["auto_subscribe"], false);
    let mut bob = Receiver::with_client(bob).await;
    let mut alice = Publisher::start(&hub, "alice", room).await;
    let mut carol = Publisher::start(&hub, "carol", room).await;

    // Bob asks for carol's camera only: his offer carries it, not alice's, though both flow.
    bob.client.ok(json!({ "op": "meeting.subscribe", "room": room, "tracks": [carol.id] })).await;
    let sdp = answer_while_sending(&mut bob, room, &mut [&mut alice, &mut carol]).await;
    assert!(sdp.contains(&format!("a=msid:{} ", carol.id)), "carol's track offered: {sdp}");
    assert!(!sdp.contains(&format!("a=msid:{} ", alice.id)), "alice's track not offered: {sdp}");
    for _ in 0..20 {
        alice.frame().await;
    }
    pump_until_received(&mut carol, &mut bob, 0).await;

    // He adds alice's: the next offer carries both, and her frames arrive.
    bob.client.ok(json!({ "op": "meeting.subscribe", "room": room, "tracks": [alice.id] })).await;
    let sdp = answer_while_sending(&mut bob, room, &mut [&mut alice, &mut carol]).await;
    assert!(sdp.contains(&format!("a=msid:{} ", alice.id)) && sdp.contains(&format!("a=msid:{} ", carol.id)), "{sdp}");
    let from = alice.next;
    pump_reading_all(&mut alice, &mut bob, from).await;

    // He drops carol's: nothing she sends once his answer is in reaches him, while alice's flows.
    bob.client.ok(json!({ "op": "meeting.unsubscribe", "room": room, "tracks": [carol.id] })).await;
    answer_while_sending(&mut bob, room, &mut [&mut alice]).await;
    let unsubscribed = carol.next;
    let mut after = Vec::new();
    for _ in 0..30 {
        after.push(carol.frame().await);
    }
    carol.reached_hub(*after.last().unwrap()).await;
    let from = alice.next + 20;
    let read = pump_reading_all(&mut alice, &mut bob, from).await;
    let late: Vec<u32> = read.iter().filter(|(s, i)| *s == carol.id && *i >= unsubscribed).map(|(_, i)| *i).collect();
    assert!(late.is_empty(), "carol's frames forwarded after the unsubscribe: {late:?}");
    bob.client.ok(json!({ "op": "ping" })).await;
    for pc in [&alice.pc, &carol.pc, &bob.pc] {
        pc.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_reaches_the_other_participant_and_a_muted_track_is_not_forwarded() {
    let hub = Hub::start(&[]);
    let room = "media1";
    // Bob joins first: the room subscribes him when Alice publishes, and the hub holds his offer
    // until her track flows.
    let mut bob = Receiver::start(&hub, "bob", room, "participant").await;
    let mut alice = Publisher::start(&hub, "alice", room).await;
    let published = media_msg_event(&mut bob.client, room, "track_published").await;
    assert_eq!(published["user"], "alice");
    assert_eq!(published["track"], alice.id.as_str());
    // Frames flow before Bob's offer exists: the first makes the track known to the SFU.
    let mut answered = Box::pin(async {
        bob.answer_offer(room).await;
        bob
    });
    let mut bob = loop {
        tokio::select! {
            bob = &mut answered => break bob,
            _ = tokio::time::sleep(Duration::from_millis(20)) => { alice.frame().await; }
        }
    };
    // The first frames may be lost while Bob's transport comes up (sfu/tests/rtc_loopback.rs
    // covers where a subscriber starts); here it matters that media arrives.
    pump_until_received(&mut alice, &mut bob, 0).await;

    // Muted: whatever Alice sends from the ack on is dropped by the hub.
    alice.client.ok(json!({ "op": "meeting.mute", "room": room, "track": alice.id, "muted": true })).await;
    let muted = media_msg_event(&mut bob.client, room, "track_muted").await;
    assert_eq!((muted["track"].as_str(), muted["muted"].as_bool()), (Some(alice.id.as_str()), Some(true)));
    let mut during_mute = Vec::new();
    for _ in 0..30 {
        during_mute.push(alice.frame().await);
    }
    // The frames travel by UDP, the unmute by WebSocket: unmute only once the hub has read them all.
    alice.reached_hub(*during_mute.last().unwrap()).await;
    alice.client.ok(json!({ "op": "meeting.mute", "room": room, "track": alice.id, "muted": false })).await;
    let resume_from = alice.next;
    // Everything Bob reads from here on: frames sent before the mute still in flight, then only
    // frames sent after the unmute, from the keyframe that restarts the track (a frame lost on the
    // way comes back through NACK). None sent while muted.
    // The track restarts on the first keyframe sent after the unmute; the frames before it are
    // dropped (a decoder cannot start on them).
    let restart = resume_from.div_ceil(10) * 10;
    let mut after_unmute = pump_until_received(&mut alice, &mut bob, restart + 10).await;
    while let Ok((_, index)) = bob.frames.try_recv() {
        after_unmute.push(index);
    }
    guarded("the restart keyframe", async {
        while !after_unmute.contains(&restart) {
            let (_, index) = bob.frames.recv().await.expect("Bob's reader ended");
            after_unmute.push(index);
        }
    })
    .await;
    for index in &after_unmute {
        assert!(!during_mute.contains(index), "frame {index} was sent while muted and forwarded");
        assert!(!(resume_from..restart).contains(index), "frame {index} came before the restart keyframe {restart}");
    }
    alice.client.ok(json!({ "op": "ping" })).await;
    alice.pc.close().await.unwrap();
    bob.pc.close().await.unwrap();
}

/// The next room event `name` (a push on `room:{id}` with an offset).
async fn media_msg_event(c: &mut Client, room: &str, name: &str) -> Value {
    let channel = format!("room:{room}");
    loop {
        let p = c.next_of("push", &channel).await;
        if p["event"] == name {
            return p["data"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_ops_refuse_bad_input_and_the_socket_lives_on() {
    let hub = Hub::start(&[]);
    let room = "media2";
    let mut viewer = Client::connect_token(&hub, &grant("vic", &format!("{room}:viewer")), Codec::Json).await;
    viewer.ok(json!({ "op": "meeting.join", "room": room })).await;
    let publish = json!({ "op": "meeting.publish", "room": room, "cid": "cam", "kind": "video" });
    assert_eq!(viewer.err(publish).await, "viewer_cannot_publish");
    let offer = json!({ "op": "meeting.offer", "room": room, "sdp": "v=0\r\n" });
    assert_eq!(viewer.err(offer).await, "viewer_cannot_publish");
    let mut p = Client::connect_token(&hub, &grant("pat", &format!("{room}:participant")), Codec::Json).await;
    // Not joined yet.
    let offer = json!({ "op": "meeting.offer", "room": room, "sdp": "v=0\r\n" });
    assert_eq!(p.err(offer).await, "not_in_room");
    p.ok(json!({ "op": "meeting.join", "room": room })).await;
    assert_eq!(p.err(json!({ "op": "meeting.offer", "room": room, "sdp": "hello" })).await, "invalid_sdp");
    assert_eq!(p.err(json!({ "op": "meeting.offer", "room": room, "sdp": "" })).await, "invalid_sdp");
    assert_eq!(p.err(json!({ "op": "meeting.offer", "room": room })).await, "bad_request");
    // Looks like an SDP, is not one: accepted by the room, refused by the media plane, told
    // asynchronously.
    p.ok(json!({ "op": "meeting.offer", "room": room, "sdp": "v=0\r\nthis is not sdp\r\n" })).await;
    let error = media_msg(&mut p, room, "error").await;
    assert_eq!(error["code"], "media_failed");
    assert_eq!(error["room"], room);
    // No offer was sent to it: an answer is unexpected.
    assert_eq!(p.err(json!({ "op": "meeting.answer", "room": room, "sdp": "v=0\r\n" })).await, "unexpected_answer");
    let candidate = json!({ "op": "meeting.candidate", "room": room, "target": "sideways", "candidate": {} });
    assert_eq!(p.err(candidate).await, "bad_request");
    let candidate = json!({ "op": "meeting.candidate", "room": room, "target": "publisher",
        "candidate": { "candidate": "candidate:garbage", "sdp_mid": "0", "sdp_mline_index": 0 } });
    p.ok(candidate).await;
    let subscribe = json!({ "op": "meeting.subscribe", "room": room, "tracks": ["t404"] });
    assert_eq!(p.err(subscribe).await, "unknown_track");
    let layers = json!([{ "rid": "q", "width": 0, "height": 180, "bitrate_bps": 1 }]);
    let publish = json!({ "op": "meeting.publish", "room": room, "cid": "cam", "kind": "video", "layers": layers });
    assert_eq!(p.err(publish).await, "invalid_track");
    p.ok(json!({ "op": "ping" })).await;
    viewer.ok(json!({ "op": "ping" })).await;
}

/// Two nodes on one Redis: the room lives on the node of its first joiner; a participant whose
/// socket is on the other node joins, negotiates and receives media through it, and its node's
/// socket closing takes it out of the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_on_one_node_serves_a_socket_on_another() {
    let redis = RedisServer::start();
    // Neither node dies here: a long node ttl keeps a busy machine's late heartbeat from passing
    // for a lost node (which would end the room for the far socket).
    let ttl = "cluster.node_ttl=\"30s\"";
    let node = |_| Hub::start_node(&redis.url(), &format!("sqlite://{}", temp_path("hub.db").display()), &[ttl]);
    let (one, two) = (node(1), node(2));
    let room = "spanning";
    let mut alice = Publisher::start(&one, "alice", room).await;
    let home = alice.client.connect_reply["node"].as_str().unwrap().to_string();

    let mut bob = Client::connect_token(&two, &grant("bob", &format!("{room}:participant")), Codec::Json).await;
    let bob_node = bob.connect_reply["node"].as_str().unwrap().to_string();
    assert_ne!(bob_node, home, "bob's socket is on the other node");
    let joined = bob.ok(json!({ "op": "meeting.join", "room": room })).await;
    assert_eq!(joined["node"], home.as_str(), "the room, and so the media, is on the first node");
    let users: Vec<&str> =
        joined["room"]["participants"].as_array().unwrap().iter().map(|p| p["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["alice", "bob"]);
    let mut bob = Receiver::with_client(bob).await;
    // Alice's own `participant_joined` went by while she negotiated; Bob's follows.
    while media_msg_event(&mut alice.client, room, "participant_joined").await["user"] != "bob" {}

    // Bob's offer comes from the home through his node; his answer goes back the same way.
    let mut answered = Box::pin(async {
        bob.answer_offer(room).await;
        bob
    });
    let mut bob = loop {
        tokio::select! {
            bob = &mut answered => break bob,
            _ = tokio::time::sleep(Duration::from_millis(20)) => { alice.frame().await; }
        }
    };
    pump_until_received(&mut alice, &mut bob, 0).await;

    // Room ops from the far socket reach the room; its events come back over the room channel.
    bob.client.ok(json!({ "op": "meeting.raise_hand", "room": room })).await;
    let raised = media_msg_event(&mut alice.client, room, "hand_raised").await;
    assert_eq!(raised["user"], "bob");
    assert_eq!(bob.client.err(json!({ "op": "meeting.end", "room": room })).await, "not_host");
    assert_eq!(
        bob.client.err(json!({ "op": "meeting.mute", "room": room, "track": "t9", "muted": true })).await,
        "unknown_track"
    );

    // Bob's socket closes on his node: the home hears of it.
    drop(bob.client);
    let left = media_msg_event(&mut alice.client, room, "participant_left").await;
    assert_eq!((left["user"].as_str(), left["reason"].as_str()), (Some("bob"), Some("left")));
    bob.pc.close().await.unwrap();
    alice.pc.close().await.unwrap();
}
