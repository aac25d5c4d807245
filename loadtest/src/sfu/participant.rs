//! One meeting participant on plain webrtc-rs peer connections, as a browser would be: a signaling
//! socket, a publisher connection it offers on (an Opus track and a VP8 track, simulcast or not,
//! if it publishes: [`super::sender`]) and a subscriber connection the room offers on (every other
//! participant's tracks). A participant that shows video at a given size tells the hub with
//! `meeting.subscribe` (`max_width`/`max_height`) for every other participant's video track.
//! Received packets are read to their trailers ([`super::media`]) for latency and loss
//! ([`super::received`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpHeaderExtensionCapability, RTPCodecType};
use webrtc::sdp::extmap;
use webrtc::track::track_remote::TrackRemote;

use super::media::{self, LayerSpec, Speech};
use super::received::Received;
use super::sender::{self, Sending, SentStats, Tracks};
use super::signal::{Push, Signal};
use crate::conn::Target;
use crate::sys;

/// The measured window, µs since the epoch (0: not yet set). Shared by every participant.
#[derive(Default)]
pub struct Window {
    pub start_us: AtomicU64,
    pub end_us: AtomicU64,
}

impl Window {
    pub fn contains(&self, us: u64) -> bool {
        let (s, e) = (self.start_us.load(Ordering::Relaxed), self.end_us.load(Ordering::Relaxed));
        s != 0 && us >= s && (e == 0 || us < e)
    }
}

/// What every participant shares: the client APIs, the media plan, the window, counters the
/// coordinator watches.
pub struct Shared {
    /// For publisher connections, and for subscriber connections ([`client_api`]).
    pub publish_api: API,
    pub subscribe_api: API,
    /// Every publisher's video encodings, lowest first (one without simulcast).
    pub layers: Vec<LayerSpec>,
    /// The synthetic speaker every publisher's audio cycles through (`None`: no audio).
    pub speech: Option<Speech>,
    pub window: Window,
    /// Remote streams that have delivered their first packet, over all participants.
    pub streams_up: AtomicU64,
    pub stop: watch::Receiver<bool>,
}

/// The client side's WebRTC API: default codecs and interceptors, loopback host candidates only.
/// No RFC 6464 audio level extension: the hub measures levels by decoding the Opus it gets, as
/// for clients that send none.
///
/// `publishing`: also the MID and RID header extensions on video, without which the hub cannot
/// tell simulcast encodings apart. Only for publisher connections: on a receiving webrtc-rs
/// connection with both negotiated, a forwarded stream whose first packets arrive before the
/// renegotiation that declares its SSRC is applied goes to webrtc-rs's simulcast probe, which
/// finds no RID, gives up and closes that SSRC's stream, and with it the track once declared
/// (seen as streams that stop after ~10 packets in rooms of 10).
pub fn client_api(publishing: bool) -> anyhow::Result<API> {
    let mut engine = MediaEngine::default();
    engine.register_default_codecs()?;
    if publishing {
        for uri in [extmap::SDES_MID_URI, extmap::SDES_RTP_STREAM_ID_URI] {
            let extension = RTCRtpHeaderExtensionCapability { uri: uri.to_owned() };
            engine.register_header_extension(extension, RTPCodecType::Video, None)?;
        }
    }
    let registry = register_default_interceptors(Registry::new(), &mut engine)?;
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    Ok(APIBuilder::new()
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build())
}

/// Who one participant is and what it does.
#[derive(Debug, Clone)]
pub struct Spec {
    pub index: u32,
    pub room: String,
    pub user: String,
    pub sending: Option<Sending>,
    /// The size it shows other participants' video at; `None`: no limit (no `meeting.subscribe`).
    pub view: Option<(u32, u32)>,
    /// The bandwidth its subscriber connection reports (REMB, bits/s); `None`: no REMB.
    pub bandwidth: Option<u64>,
}

pub struct Participant {
    pub index: u32,
    pub room: String,
    view: Option<(u32, u32)>,
    signal: Arc<Signal>,
    publisher: Arc<RTCPeerConnection>,
    subscriber: Arc<RTCPeerConnection>,
    readers: Arc<Mutex<Vec<JoinHandle<Option<Received>>>>>,
    control: JoinHandle<()>,
    sender: Option<JoinHandle<SentStats>>,
    pub errors: Arc<Mutex<Vec<String>>>,
    pub offers: Arc<AtomicU64>,
    heard: Arc<Mutex<Heard>>,
}

/// The room's `active_speaker` events a participant got: how many, and whom they named.
#[derive(Debug, Default, Clone)]
pub struct Heard {
    pub active_speaker_events: u64,
    pub speakers: HashSet<String>,
}

/// What a participant hands back at the end.
pub struct Outcome {
    pub index: u32,
    pub room: String,
    pub view: Option<(u32, u32)>,
    pub sent: Option<SentStats>,
    pub received: Vec<Received>,
    pub errors: Vec<String>,
    pub offers: u64,
    pub heard: Heard,
}

async fn complete_local(pc: &RTCPeerConnection, d: RTCSessionDescription, within: Duration) -> anyhow::Result<String> {
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(d).await?;
    let _ = tokio::time::timeout(within, gathered.recv()).await;
    Ok(pc.local_description().await.ok_or_else(|| anyhow!("no local description"))?.sdp)
}

impl Participant {
    /// Joins the room, sets up both connections, tells the hub its view size for the video tracks
    /// already there and, if it publishes anything, announces the tracks, offers them and starts
    /// sending once the answer is applied.
    pub async fn start(
        shared: Arc<Shared>,
        target: &Target,
        secret: &str,
        spec: &Spec,
        timeout: Duration,
    ) -> anyhow::Result<Participant> {
        let Spec { index, room, user, sending, view, bandwidth } = spec.clone();
        let (signal, pushes) = Signal::connect(target, secret, &user, &room, 7200, timeout).await?;
        let signal = Arc::new(signal);
        let joined = signal.request(json!({"op": "meeting.join", "room": room})).await?;
        let publisher = Arc::new(shared.publish_api.new_peer_connection(RTCConfiguration::default()).await?);
        let subscriber = Arc::new(shared.subscribe_api.new_peer_connection(RTCConfiguration::default()).await?);
        let readers: Arc<Mutex<Vec<JoinHandle<Option<Received>>>>> = Arc::default();
        let ssrcs: Arc<Mutex<Vec<u32>>> = Arc::default();
        {
            let (shared, readers, ssrcs) = (shared.clone(), readers.clone(), ssrcs.clone());
            subscriber.on_track(Box::new(move |track, _, _| {
                ssrcs.lock().unwrap_or_else(|e| e.into_inner()).push(track.ssrc());
                let handle = tokio::spawn(read_track(shared.clone(), track));
                readers.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
                Box::pin(async {})
            }));
        }
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let offers = Arc::new(AtomicU64::new(0));
        let heard: Arc<Mutex<Heard>> = Arc::default();
        let answered = Arc::new(Notify::new());
        let control = tokio::spawn(control(
            Control {
                signal: signal.clone(),
                room: room.clone(),
                user: user.clone(),
                view,
                publisher: publisher.clone(),
                subscriber: subscriber.clone(),
                answered: answered.clone(),
                errors: errors.clone(),
                offers: offers.clone(),
                heard: heard.clone(),
                timeout,
            },
            pushes,
            shared.stop.clone(),
        ));
        if let Some(bps) = bandwidth {
            tokio::spawn(report_bandwidth(subscriber.clone(), ssrcs, bps, shared.stop.clone()));
        }
        let mut p = Participant {
            index,
            room: room.clone(),
            view,
            signal,
            publisher,
            subscriber,
            readers,
            control,
            sender: None,
            errors,
            offers,
            heard,
        };
        // Tracks published later come as `track_published` pushes (see `control`).
        if let Some((w, h)) = view {
            let tracks = others_video_tracks(&joined, &user);
            if !tracks.is_empty() {
                let subscribe =
                    json!({"op": "meeting.subscribe", "room": room, "tracks": tracks, "max_width": w, "max_height": h});
                p.signal.request(subscribe).await.with_context(|| format!("{user} subscribing at {w}x{h}"))?;
            }
        }
        if let Some(s) = sending.filter(|s| s.audio || s.video) {
            p.publish(shared, s, answered, timeout).await.with_context(|| format!("{user} publishing"))?;
        }
        Ok(p)
    }

    async fn publish(
        &mut self,
        shared: Arc<Shared>,
        s: Sending,
        answered: Arc<Notify>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let stream = format!("s{}", self.index);
        let mut tracks = Tracks::default();
        if s.audio && shared.speech.is_some() {
            let cid = format!("a{}", self.index);
            tracks.audio = Some(sender::add_audio(&self.publisher, &cid, &stream).await?);
            self.signal
                .request(json!({"op": "meeting.publish", "room": self.room, "cid": cid, "kind": "audio"}))
                .await?;
        }
        if s.video {
            let cid = format!("v{}", self.index);
            tracks.video = sender::add_video(&self.publisher, &cid, &stream, &shared.layers).await?;
            let mut publish = json!({"op": "meeting.publish", "room": self.room, "cid": cid, "kind": "video"});
            if shared.layers.len() > 1 {
                publish["layers"] = serde_json::to_value(&shared.layers)?;
            }
            self.signal.request(publish).await?;
        }
        let offer = self.publisher.create_offer(None).await?;
        let sdp = complete_local(&self.publisher, offer, timeout).await?;
        let answer = answered.notified();
        self.signal.request(json!({"op": "meeting.offer", "room": self.room, "sdp": sdp})).await?;
        tokio::time::timeout(timeout, answer).await.map_err(|_| anyhow!("no answer to the publisher offer"))?;
        self.sender = Some(tokio::spawn(sender::send(shared, self.index, s, tracks)));
        Ok(())
    }

    /// Stops (the stop signal must be set), closes both connections and the socket, and returns
    /// what was sent and received. Bounded by `grace`.
    pub async fn finish(self, grace: Duration) -> Outcome {
        let sent = match self.sender {
            Some(h) => tokio::time::timeout(grace, h).await.ok().and_then(Result::ok),
            None => None,
        };
        let handles: Vec<_> = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|e| e.into_inner()));
        let mut received = Vec::new();
        for h in handles {
            if let Ok(Ok(Some(r))) = tokio::time::timeout(grace, h).await {
                received.push(r);
            }
        }
        self.control.abort();
        let _ = tokio::time::timeout(grace, self.publisher.close()).await;
        let _ = tokio::time::timeout(grace, self.subscriber.close()).await;
        self.signal.close();
        let errors = std::mem::take(&mut *self.errors.lock().unwrap_or_else(|e| e.into_inner()));
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Outcome {
            index: self.index,
            room: self.room,
            view: self.view,
            sent,
            received,
            errors,
            offers: self.offers.load(Ordering::Relaxed),
            heard,
        }
    }
}

/// Tells the hub, as a browser's REMB would, that `bps` is what the subscriber connection carries:
/// every [`REMB_EVERY`] for the media SSRCs it receives, until the run stops.
async fn report_bandwidth(
    pc: Arc<RTCPeerConnection>,
    ssrcs: Arc<Mutex<Vec<u32>>>,
    bps: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(REMB_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let ssrcs = ssrcs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if ssrcs.is_empty() {
            continue;
        }
        let remb = ReceiverEstimatedMaximumBitrate { sender_ssrc: 0, bitrate: bps as f32, ssrcs };
        if pc.write_rtcp(&[Box::new(remb)]).await.is_err() && *stop.borrow() {
            return;
        }
    }
}

/// How often a subscriber with a set bandwidth sends its REMB (browsers: about once a second).
const REMB_EVERY: Duration = Duration::from_millis(500);

/// The video tracks of other participants in a `meeting.join` reply.
fn others_video_tracks(joined: &Value, me: &str) -> Vec<String> {
    let participants = joined["room"]["participants"].as_array().map(Vec::as_slice).unwrap_or_default();
    participants
        .iter()
        .filter(|p| p["user"].as_str() != Some(me))
        .flat_map(|p| p["tracks"].as_array().map(Vec::as_slice).unwrap_or_default())
        .filter(|t| t["kind"] == "video")
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect()
}

/// What the push handler works with.
struct Control {
    signal: Arc<Signal>,
    room: String,
    user: String,
    view: Option<(u32, u32)>,
    publisher: Arc<RTCPeerConnection>,
    subscriber: Arc<RTCPeerConnection>,
    answered: Arc<Notify>,
    errors: Arc<Mutex<Vec<String>>>,
    offers: Arc<AtomicU64>,
    heard: Arc<Mutex<Heard>>,
    timeout: Duration,
}

/// Handles the room's pushes in order: answers to the publisher offer, server offers on the
/// subscriber connection (answered with `meeting.answer`), other participants' new video tracks
/// (told the view size), active speakers, media errors.
async fn control(c: Control, mut pushes: mpsc::UnboundedReceiver<Push>, mut stop: watch::Receiver<bool>) {
    let fail = |e: String| c.errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    loop {
        let push = tokio::select! {
            p = pushes.recv() => match p { Some(p) => p, None => return },
            _ = stop.changed() => return,
        };
        let sdp = push.data.get("sdp").and_then(|s| s.as_str()).map(str::to_string);
        match (push.event.as_str(), sdp) {
            ("answer", Some(sdp)) => match RTCSessionDescription::answer(sdp) {
                Ok(d) => match c.publisher.set_remote_description(d).await {
                    Ok(()) => c.answered.notify_one(),
                    Err(e) => fail(format!("publisher answer: {e}")),
                },
                Err(e) => fail(format!("publisher answer: {e}")),
            },
            ("offer", Some(sdp)) => {
                c.offers.fetch_add(1, Ordering::Relaxed);
                let answer = async {
                    c.subscriber.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                    let answer = c.subscriber.create_answer(None).await?;
                    let sdp = complete_local(&c.subscriber, answer, c.timeout).await?;
                    c.signal.request(json!({"op": "meeting.answer", "room": c.room, "sdp": sdp})).await?;
                    anyhow::Ok(())
                };
                if let Err(e) = answer.await {
                    fail(format!("subscriber offer: {e:#}"));
                }
            }
            ("track_published", _) => {
                let d = &push.data;
                let (Some((w, h)), Some(track)) = (c.view, d["track"].as_str()) else { continue };
                if d["kind"] != "video" || d["user"].as_str() == Some(c.user.as_str()) {
                    continue;
                }
                let subscribe = json!({"op": "meeting.subscribe", "room": c.room, "tracks": [track], "max_width": w, "max_height": h});
                if let Err(e) = c.signal.request(subscribe).await {
                    fail(format!("subscribing at {w}x{h}: {e:#}"));
                }
            }
            ("active_speaker", _) => {
                let mut heard = c.heard.lock().unwrap_or_else(|e| e.into_inner());
                heard.active_speaker_events += 1;
                if let Some(user) = push.data["user"].as_str() {
                    heard.speakers.insert(user.to_string());
                }
            }
            ("error", _) => fail(format!("media error push: {}", push.data)),
            _ => {}
        }
    }
}

/// Reads one forwarded track until the stop signal or its end; `None` if nothing arrived.
async fn read_track(shared: Arc<Shared>, track: Arc<TrackRemote>) -> Option<Received> {
    let mut stop = shared.stop.clone();
    let mut got: Option<Received> = None;
    loop {
        let packet = tokio::select! {
            r = track.read_rtp() => match r { Ok((p, _)) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let now = sys::now_us();
        let Some(t) = media::read_trailer(&packet.payload) else { continue };
        let r = got.get_or_insert_with(|| {
            shared.streams_up.fetch_add(1, Ordering::Relaxed);
            Received::new(t.publisher, t.kind)
        });
        // A reused transceiver could carry another stream later: only the first one counts.
        if r.publisher != t.publisher || r.kind != t.kind {
            continue;
        }
        // The sequence number it arrived with is the hub's: it tells the hub's sources apart.
        r.note(&t, packet.header.sequence_number, now, shared.window.contains(t.sent_us));
    }
    got
}
