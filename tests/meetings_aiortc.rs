//! Meeting media through the real hub with an independent WebRTC stack: each participant is a
//! Python aiortc process (tests/peers/aiortc_peer.py) that speaks the hub protocol, publishes
//! synthetic VP8 (or H.264) video and an Opus tone, and counts the frames it decodes from every
//! remote track. Two publishers hear and see each other; a viewer only receives and may not
//! publish; a muted video track stops reaching its subscriber while the audio beside it keeps
//! flowing; H.264 camera video reaches its subscribers, each starting on a keyframe the hub asked
//! the publisher for; a listen-only participant hears every microphone in the room's audio mix.
//!
//! The peers need python3 with the `aiortc` and `websockets` packages (.ci/run installs them); a
//! machine without them fails these tests rather than skipping them.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Frames each expected remote track must decode before a peer reports `done`.
const FRAMES: u64 = 30;
/// A peer's own deadline: it exits with a reason once this passes.
const PEER_DEADLINE_SECS: u64 = 120;
/// Failure guard for one line from a peer (ICE, DTLS and the first keyframe come before `done`).
const LINE_GUARD: Duration = Duration::from_secs(60);

fn peer_script() -> String {
    format!("{}/tests/peers/aiortc_peer.py", env!("CARGO_MANIFEST_DIR"))
}

/// Fails (does not skip) when the peer's Python packages are missing.
fn require_aiortc() {
    let out = std::process::Command::new("python3").args(["-c", "import aiortc, av, websockets"]).output();
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "these tests need python3 with aiortc and websockets (pip install aiortc websockets): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("these tests need python3 with aiortc and websockets; python3 did not start: {e}"),
    }
}

/// The hub with its media port on loopback.
fn media_hub() -> Hub {
    require_aiortc();
    Hub::start(&["media.bind=\"127.0.0.1:0\""])
}

/// A dev token from the hub itself, e.g. rooms `"r1:host"`.
async fn dev_token(hub: &Hub, sub: &str, rooms: &str) -> String {
    let url = hub.http(&format!("/dev/token?sub={sub}&rooms={rooms}"));
    let body: Value = reqwest::get(url).await.expect("dev token request").json().await.expect("dev token body");
    body["token"].as_str().unwrap_or_else(|| panic!("no token in {body}")).to_string()
}

/// One aiortc participant: JSON commands in on stdin, JSON events out on stdout.
struct Peer {
    name: String,
    started: Instant,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    /// Starts a peer as `user` with `rooms` grants, joining `room`; `args` are the script's options.
    async fn start(hub: &Hub, user: &str, rooms: &str, room: &str, args: &[&str]) -> Peer {
        let token = dev_token(hub, user, rooms).await;
        let mut child = Command::new("python3")
            .arg(peer_script())
            .args(["--ws", &hub.ws_url(), "--token", &token, "--room", room])
            .args(["--frames", &FRAMES.to_string(), "--deadline", &PEER_DEADLINE_SECS.to_string()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start python3 with the aiortc peer");
        let stdin = child.stdin.take().expect("peer stdin");
        let lines = BufReader::new(child.stdout.take().expect("peer stdout")).lines();
        let mut peer = Peer { name: user.to_string(), started: Instant::now(), child, stdin, lines };
        let joined = peer.until("joined").await;
        assert_eq!(joined["user"], user, "{joined}");
        peer
    }

    /// The next event line; a `fatal` one fails the test with the peer's reason.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(LINE_GUARD, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: no event within the guard time", self.name))
            .expect("read peer stdout")
            .unwrap_or_else(|| panic!("{}: the peer exited without a word", self.name));
        // Shown with a failing test's output: the peer's whole story.
        eprintln!("{:8.3}s {}: {line}", self.started.elapsed().as_secs_f64(), self.name);
        let event: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", self.name));
        assert_ne!(event["event"], "fatal", "{}: the peer gave up: {event}", self.name);
        event
    }

    /// The next event named `name`, skipping others.
    async fn until(&mut self, name: &str) -> Value {
        loop {
            let event = self.next().await;
            if event["event"] == name {
                return event;
            }
        }
    }

    /// The next room event `name` (as pushed on the room's channel) whose data matches `filter`.
    async fn room_event(&mut self, name: &str, filter: impl Fn(&Value) -> bool) -> Value {
        loop {
            let event = self.until("room").await;
            if event["name"] == name && filter(&event["data"]) {
                return event["data"].clone();
            }
        }
    }

    async fn send(&mut self, cmd: Value) {
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("write to peer stdin");
        self.stdin.flush().await.expect("flush peer stdin");
    }

    /// The peer's remote tracks now: room track id → {kind, user, frames}.
    async fn counts(&mut self) -> Value {
        self.send(json!({ "cmd": "counts" })).await;
        self.until("counts").await["tracks"].clone()
    }

    /// Waits until remote `track` has decoded `frames` frames; returns every track's counts then.
    async fn wait_frames(&mut self, track: &str, frames: u64) -> Value {
        self.send(json!({ "cmd": "wait", "track": track, "frames": frames })).await;
        let reached = self.until("reached").await;
        assert_eq!(reached["track"], track, "{reached}");
        reached["tracks"].clone()
    }

    /// What its own tracks sent so far: room track id → {kind, codec, frames, requests, keyframes}.
    async fn sent(&mut self) -> Value {
        self.send(json!({ "cmd": "counts" })).await;
        self.until("counts").await["sent"].clone()
    }

    /// Its own tracks as announced at start, by kind.
    async fn published(&mut self, kinds: &[&str]) -> Vec<(String, String)> {
        let mut tracks = Vec::new();
        for _ in kinds {
            let p = self.until("published").await;
            tracks.push((p["kind"].as_str().unwrap().to_string(), p["track"].as_str().unwrap().to_string()));
        }
        tracks
    }

    /// Leaves the room and exits cleanly; returns the final counts.
    async fn quit(mut self) -> Value {
        self.send(json!({ "cmd": "quit" })).await;
        let bye = self.until("bye").await;
        let status = tokio::time::timeout(GUARD, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: did not exit after bye", self.name))
            .expect("wait for the peer");
        assert!(status.success(), "{}: exit status {status}", self.name);
        bye["tracks"].clone()
    }
}

/// Frames decoded from `track` in a counts table.
fn frames(tracks: &Value, track: &str) -> u64 {
    tracks[track]["frames"].as_u64().unwrap_or_else(|| panic!("no track {track} in {tracks}"))
}

/// Checks that `tracks` (a peer's `done` table) holds each of `from`'s published tracks, with its
/// kind and user, at `FRAMES` decoded frames or more.
fn received_all(tracks: &Value, user: &str, from: &[(String, String)]) {
    for (kind, track) in from {
        let t = &tracks[track];
        assert_eq!((t["kind"].as_str(), t["user"].as_str()), (Some(kind.as_str()), Some(user)), "{track} in {tracks}");
        assert!(frames(tracks, track) >= FRAMES, "{track} in {tracks}");
    }
}

#[tokio::test]
async fn two_aiortc_peers_see_and_hear_each_other() {
    let hub = media_hub();
    let both = ["--publish", "audio,video", "--expect", "video:1,audio:1"];
    let mut alice = Peer::start(&hub, "alice", "r1:host", "r1", &both).await;
    let alice_tracks = alice.published(&["audio", "video"]).await;
    let mut bob = Peer::start(&hub, "bob", "r1:participant", "r1", &both).await;
    let bob_tracks = bob.published(&["audio", "video"]).await;

    let alice_got = alice.until("done").await["tracks"].clone();
    let bob_got = bob.until("done").await["tracks"].clone();
    received_all(&alice_got, "bob", &bob_tracks);
    received_all(&bob_got, "alice", &alice_tracks);
    // Nothing else arrived: no echo of one's own tracks.
    assert_eq!(alice_got.as_object().unwrap().len(), 2, "{alice_got}");
    assert_eq!(bob_got.as_object().unwrap().len(), 2, "{bob_got}");

    alice.quit().await;
    bob.quit().await;
}

#[tokio::test]
async fn a_viewer_receives_and_may_not_publish() {
    let hub = media_hub();
    let mut alice = Peer::start(&hub, "alice", "r1:host", "r1", &["--publish", "audio,video"]).await;
    let alice_tracks = alice.published(&["audio", "video"]).await;
    let mut vic = Peer::start(&hub, "vic", "r1:viewer", "r1", &["--expect", "video:1,audio:1"]).await;

    let got = vic.until("done").await["tracks"].clone();
    received_all(&got, "alice", &alice_tracks);

    vic.send(json!({ "cmd": "publish", "kind": "video" })).await;
    let refused = vic.until("error").await;
    assert_eq!(
        (refused["op"].as_str(), refused["code"].as_str()),
        (Some("meeting.publish"), Some("viewer_cannot_publish"))
    );
    // Still receiving after the refusal.
    let (_, video) = alice_tracks.iter().find(|(kind, _)| kind == "video").unwrap();
    let now = frames(&vic.counts().await, video);
    vic.wait_frames(video, now + FRAMES).await;

    // The viewer sent nothing, so the host received nothing.
    assert_eq!(alice.counts().await, json!({}));
    alice.quit().await;
    vic.quit().await;
}

/// Audio frames the subscriber decodes while the video is muted (20 ms each: about three seconds,
/// in which an unmuted 30 fps track would decode about 90 frames).
const AUDIO_WHILE_MUTED: u64 = 150;
/// Video frames that may still be decoded after the mute was acknowledged and announced: those
/// already forwarded, in flight, or waiting in the subscriber's jitter buffer and decoder (3 seen
/// on an idle machine; the margin is for a loaded one).
const IN_FLIGHT: u64 = 15;

#[tokio::test]
async fn a_muted_video_track_stops_reaching_its_subscriber() {
    let hub = media_hub();
    let mut alice = Peer::start(&hub, "alice", "r1:host", "r1", &["--publish", "audio,video"]).await;
    let tracks = alice.published(&["audio", "video"]).await;
    let audio = tracks.iter().find(|(kind, _)| kind == "audio").unwrap().1.clone();
    let video = tracks.iter().find(|(kind, _)| kind == "video").unwrap().1.clone();
    let mut bob = Peer::start(&hub, "bob", "r1:participant", "r1", &["--expect", "video:1,audio:1"]).await;
    bob.until("done").await;

    // Muted: acknowledged to alice, announced to bob; from then on only in-flight video arrives.
    alice.send(json!({ "cmd": "mute", "kind": "video", "muted": true })).await;
    assert_eq!(alice.until("muted").await["track"], video.as_str());
    let muted = bob.room_event("track_muted", |d| d["track"] == video.as_str()).await;
    assert_eq!((&muted["user"], &muted["muted"]), (&json!("alice"), &json!(true)), "{muted}");
    let before = bob.counts().await;
    let after = bob.wait_frames(&audio, frames(&before, &audio) + AUDIO_WHILE_MUTED).await;
    let (v0, v1) = (frames(&before, &video), frames(&after, &video));
    assert!(
        v1 - v0 <= IN_FLIGHT,
        "video went on while muted: {v0} -> {v1} frames over {AUDIO_WHILE_MUTED} audio frames"
    );

    // Unmuted: the video comes back.
    alice.send(json!({ "cmd": "mute", "kind": "video", "muted": false })).await;
    assert_eq!(alice.until("muted").await["muted"], false);
    bob.room_event("track_muted", |d| d["track"] == video.as_str() && d["muted"] == false).await;
    bob.wait_frames(&video, v1 + FRAMES).await;

    alice.quit().await;
    bob.quit().await;
}

/// The index of the first frame a subscriber decoded (its `first_frame` event), as the publisher
/// drew it in the picture.
fn first_index(first: &Value) -> u64 {
    first["index"].as_u64().unwrap_or_else(|| panic!("no readable frame index in {first}"))
}

/// Checks that the keyframes `sent` lists for `track` include frame `index`, sent in answer to a
/// keyframe request.
fn requested_keyframe(sent: &Value, track: &str, index: u64) {
    let keyframes = sent[track]["keyframes"].as_array().unwrap_or_else(|| panic!("no {track} in {sent}"));
    assert!(
        keyframes.iter().any(|k| k["frame"] == index && k["requested"] == true),
        "the first frame decoded, {index}, is not a keyframe sent on request: {sent}"
    );
}

#[tokio::test]
async fn h264_video_reaches_subscribers_from_keyframes_the_hub_asks_for() {
    let hub = media_hub();
    let h264 = ["--publish", "video", "--video-codec", "h264"];
    let mut alice = Peer::start(&hub, "alice", "r1:host", "r1", &h264).await;
    let alice_tracks = alice.published(&["video"]).await;
    let video = alice_tracks[0].1.clone();
    // The hub accepted H.264 (alice offered nothing else), in packetization mode 1.
    let sending = alice.until("sending").await;
    assert_eq!((sending["track"].as_str(), sending["codec"].as_str()), (Some(video.as_str()), Some("video/H264")));
    assert!(sending["fmtp"].as_str().unwrap().contains("packetization-mode=1"), "{sending}");
    let h264_only = json!(["video/H264"]);

    // Bob joins while alice is sending: he gets H.264, and his decoder starts on a keyframe that
    // alice sent after a keyframe request (her only other one is her first frame's, before bob was
    // subscribed).
    let mut bob = Peer::start(&hub, "bob", "r1:participant", "r1", &["--expect", "video:1"]).await;
    let first = bob.until("first_frame").await;
    assert_eq!((first["track"].as_str(), &first["codecs"]), (Some(video.as_str()), &h264_only), "{first}");
    let got = bob.until("done").await["tracks"].clone();
    received_all(&got, "alice", &alice_tracks);
    assert_eq!(got[&video]["codecs"], h264_only, "{got}");
    let before = alice.sent().await;
    requested_keyframe(&before, &video, first_index(&first));

    // Carol joins later still, in mid-stream: alice must send another keyframe for her, on request.
    let sent_before = before[&video]["frames"].as_u64().unwrap();
    let mut carol = Peer::start(&hub, "carol", "r1:participant", "r1", &["--expect", "video:1"]).await;
    let first = carol.until("first_frame").await;
    assert_eq!((first["track"].as_str(), &first["codecs"]), (Some(video.as_str()), &h264_only), "{first}");
    let start = first_index(&first);
    assert!(start >= sent_before, "carol started on frame {start}, before she joined (frame {sent_before})");
    let got = carol.until("done").await["tracks"].clone();
    received_all(&got, "alice", &alice_tracks);
    assert_eq!(got[&video]["codecs"], h264_only, "{got}");
    let after = alice.sent().await;
    requested_keyframe(&after, &video, start);
    let requests = |sent: &Value| sent[&video]["requests"].as_u64().unwrap();
    assert!(requests(&after) > requests(&before), "no keyframe request while carol joined: {before} -> {after}");

    // Bob went on decoding meanwhile.
    let now = frames(&bob.counts().await, &video);
    bob.wait_frames(&video, now + FRAMES).await;

    alice.quit().await;
    bob.quit().await;
    carol.quit().await;
}

/// The level of each tone in a peer's `tones` reply, by frequency.
fn tone(levels: &Value, hz: u32) -> f64 {
    levels[hz.to_string()].as_f64().unwrap_or_else(|| panic!("no level for {hz} Hz in {levels}"))
}

/// The room's audio mix: two publishers' tones (400 Hz and 1 kHz, at the same level) reach a
/// listen-only participant as one Opus track that carries both, each at the level its publisher's
/// own track has, beside the two tracks that carry one tone each.
#[tokio::test]
async fn a_listener_hears_every_microphone_in_the_room_mix() {
    let hub = media_hub();
    let mut alice = Peer::start(&hub, "alice", "r1:host", "r1", &["--publish", "audio", "--tone", "400"]).await;
    let (_, alice_audio) = alice.published(&["audio"]).await.remove(0);
    let mut bob = Peer::start(&hub, "bob", "r1:participant", "r1", &["--publish", "audio", "--tone", "1000"]).await;
    bob.published(&["audio"]).await;
    let mut lee = Peer::start(&hub, "lee", "r1:viewer", "r1", &[]).await;
    let hz = [400, 1000, 700];

    // Alice's own track, as the room forwards it: her tone alone (700 Hz is a control frequency).
    lee.send(json!({ "cmd": "tones", "track": alice_audio, "hz": hz, "frames": 100 })).await;
    let alone = lee.until("tones").await["levels"].clone();
    assert!(tone(&alone, 400) > tone(&alone, 1000) + 60.0, "{alone}");
    assert!(tone(&alone, 400) > tone(&alone, 700) + 60.0, "{alone}");

    // The mix: a second of it once it has played two, both tones at her tone's level.
    lee.send(json!({ "cmd": "mix", "on": true })).await;
    lee.until("mix").await;
    lee.send(json!({ "cmd": "tones", "track": "mix", "hz": hz, "frames": 100 })).await;
    let mix = lee.until("tones").await["levels"].clone();
    for source in [400, 1000] {
        assert!((tone(&mix, source) - tone(&alone, 400)).abs() < 3.0, "{source} Hz in the mix {mix}, alone {alone}");
        assert!(tone(&mix, source) > tone(&mix, 700) + 60.0, "{source} Hz far above the control: {mix}");
    }

    lee.quit().await;
    bob.quit().await;
    alice.quit().await;
}
