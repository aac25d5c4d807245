//! One meeting participant on plain webrtc-rs peer connections, as a browser would be: a signaling
//! socket, a publisher connection it offers on (one Opus-like and one VP8-like track, if it
//! publishes) and a subscriber connection the room offers on (every other participant's tracks).
//! Received packets are read to their trailers ([`super::media`]) for latency and loss.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::json;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc::track::track_remote::TrackRemote;

use super::media::{self, Received, SentRange};
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
    fn contains(&self, us: u64) -> bool {
        let (s, e) = (self.start_us.load(Ordering::Relaxed), self.end_us.load(Ordering::Relaxed));
        s != 0 && us >= s && (e == 0 || us < e)
    }
}

/// What every participant shares: the client API, the window, counters the coordinator watches.
pub struct Shared {
    pub api: API,
    pub window: Window,
    /// Remote streams that have delivered their first packet, over all participants.
    pub streams_up: AtomicU64,
    pub stop: watch::Receiver<bool>,
}

/// The client side's WebRTC API: default codecs and interceptors, loopback host candidates only.
pub fn client_api() -> anyhow::Result<API> {
    let mut engine = MediaEngine::default();
    engine.register_default_codecs()?;
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

/// What one participant publishes.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    pub audio: bool,
    pub video: bool,
    pub audio_bytes: usize,
    pub video_bps: u64,
    pub fps: u32,
    pub keyframe_every_ms: u64,
}

pub struct Participant {
    pub index: u32,
    pub room: String,
    signal: Arc<Signal>,
    publisher: Arc<RTCPeerConnection>,
    subscriber: Arc<RTCPeerConnection>,
    readers: Arc<Mutex<Vec<JoinHandle<Option<Received>>>>>,
    control: JoinHandle<()>,
    sender: Option<JoinHandle<SentStats>>,
    pub errors: Arc<Mutex<Vec<String>>>,
    pub offers: Arc<AtomicU64>,
}

/// What a publisher sent in all and inside the window, per stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct SentStats {
    pub audio_total: u64,
    pub video_total: u64,
    pub audio: SentRange,
    pub video: SentRange,
    pub keyframes: u64,
    pub keyframe_requests: u64,
    pub write_errors: u64,
}

/// What a participant hands back at the end.
pub struct Outcome {
    pub index: u32,
    pub room: String,
    pub sent: Option<SentStats>,
    pub received: Vec<Received>,
    pub errors: Vec<String>,
    pub offers: u64,
}

async fn complete_local(pc: &RTCPeerConnection, d: RTCSessionDescription, within: Duration) -> anyhow::Result<String> {
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(d).await?;
    let _ = tokio::time::timeout(within, gathered.recv()).await;
    Ok(pc.local_description().await.ok_or_else(|| anyhow!("no local description"))?.sdp)
}

impl Participant {
    /// Joins `room` as user `user`, sets up both connections and, if `sending` publishes anything,
    /// announces the tracks, offers them and starts sending once the answer is applied.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        shared: Arc<Shared>,
        target: &Target,
        secret: &str,
        index: u32,
        room: &str,
        user: &str,
        sending: Option<Sending>,
        timeout: Duration,
    ) -> anyhow::Result<Participant> {
        let (signal, pushes) = Signal::connect(target, secret, user, room, 7200, timeout).await?;
        let signal = Arc::new(signal);
        signal.request(json!({"op": "meeting.join", "room": room})).await?;
        let publisher = Arc::new(shared.api.new_peer_connection(RTCConfiguration::default()).await?);
        let subscriber = Arc::new(shared.api.new_peer_connection(RTCConfiguration::default()).await?);
        let readers: Arc<Mutex<Vec<JoinHandle<Option<Received>>>>> = Arc::default();
        {
            let (shared, readers) = (shared.clone(), readers.clone());
            subscriber.on_track(Box::new(move |track, _, _| {
                let handle = tokio::spawn(read_track(shared.clone(), track));
                readers.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
                Box::pin(async {})
            }));
        }
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let offers = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(Notify::new());
        let control = tokio::spawn(control(
            signal.clone(),
            room.to_string(),
            pushes,
            publisher.clone(),
            subscriber.clone(),
            answered.clone(),
            errors.clone(),
            offers.clone(),
            shared.stop.clone(),
            timeout,
        ));
        let mut p = Participant {
            index,
            room: room.to_string(),
            signal,
            publisher,
            subscriber,
            readers,
            control,
            sender: None,
            errors,
            offers,
        };
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
        let mut tracks = (None, None);
        let keyframe_wanted = Arc::new(AtomicBool::new(true));
        let requests = Arc::new(AtomicU64::new(0));
        if s.audio {
            let cap = RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                ..Default::default()
            };
            let cid = format!("a{}", self.index);
            let track = Arc::new(TrackLocalStaticRTP::new(cap, cid.clone(), stream.clone()));
            let sender = self.publisher.add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await?;
            tokio::spawn(read_rtcp(sender, None, requests.clone()));
            self.signal
                .request(json!({"op": "meeting.publish", "room": self.room, "cid": cid, "kind": "audio"}))
                .await?;
            tracks.0 = Some(track);
        }
        if s.video {
            let cap =
                RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.to_owned(), clock_rate: 90_000, ..Default::default() };
            let cid = format!("v{}", self.index);
            let track = Arc::new(TrackLocalStaticRTP::new(cap, cid.clone(), stream.clone()));
            let sender = self.publisher.add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await?;
            tokio::spawn(read_rtcp(sender, Some(keyframe_wanted.clone()), requests.clone()));
            self.signal
                .request(json!({"op": "meeting.publish", "room": self.room, "cid": cid, "kind": "video"}))
                .await?;
            tracks.1 = Some(track);
        }
        let offer = self.publisher.create_offer(None).await?;
        let sdp = complete_local(&self.publisher, offer, timeout).await?;
        let answer = answered.notified();
        self.signal.request(json!({"op": "meeting.offer", "room": self.room, "sdp": sdp})).await?;
        tokio::time::timeout(timeout, answer).await.map_err(|_| anyhow!("no answer to the publisher offer"))?;
        let index = self.index;
        self.sender = Some(tokio::spawn(send(shared, index, s, tracks, keyframe_wanted, requests)));
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
        Outcome {
            index: self.index,
            room: self.room,
            sent,
            received,
            errors,
            offers: self.offers.load(Ordering::Relaxed),
        }
    }
}

/// Handles the room's pushes in order: answers to the publisher offer, server offers on the
/// subscriber connection (answered with `meeting.answer`), media errors.
#[allow(clippy::too_many_arguments)]
async fn control(
    signal: Arc<Signal>,
    room: String,
    mut pushes: mpsc::UnboundedReceiver<Push>,
    publisher: Arc<RTCPeerConnection>,
    subscriber: Arc<RTCPeerConnection>,
    answered: Arc<Notify>,
    errors: Arc<Mutex<Vec<String>>>,
    offers: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    timeout: Duration,
) {
    let fail = |e: String| errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    loop {
        let push = tokio::select! {
            p = pushes.recv() => match p { Some(p) => p, None => return },
            _ = stop.changed() => return,
        };
        let sdp = push.data.get("sdp").and_then(|s| s.as_str()).map(str::to_string);
        match (push.event.as_str(), sdp) {
            ("answer", Some(sdp)) => match RTCSessionDescription::answer(sdp) {
                Ok(d) => match publisher.set_remote_description(d).await {
                    Ok(()) => answered.notify_one(),
                    Err(e) => fail(format!("publisher answer: {e}")),
                },
                Err(e) => fail(format!("publisher answer: {e}")),
            },
            ("offer", Some(sdp)) => {
                offers.fetch_add(1, Ordering::Relaxed);
                let answer = async {
                    subscriber.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                    let answer = subscriber.create_answer(None).await?;
                    let sdp = complete_local(&subscriber, answer, timeout).await?;
                    signal.request(json!({"op": "meeting.answer", "room": room, "sdp": sdp})).await?;
                    anyhow::Ok(())
                };
                if let Err(e) = answer.await {
                    fail(format!("subscriber offer: {e:#}"));
                }
            }
            ("error", _) => fail(format!("media error push: {}", push.data)),
            _ => {}
        }
    }
}

/// Reads a publisher-side sender's RTCP (which runs the interceptors); a PLI or FIR asks the video
/// sender for a keyframe.
async fn read_rtcp(sender: Arc<RTCRtpSender>, keyframe: Option<Arc<AtomicBool>>, requests: Arc<AtomicU64>) {
    while let Ok((packets, _)) = sender.read_rtcp().await {
        for p in packets {
            let any = p.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                if let Some(k) = &keyframe {
                    requests.fetch_add(1, Ordering::Relaxed);
                    k.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Paced sending until the stop signal: an audio packet every 20 ms, a video frame every 1/fps s
/// (cut into packets of at most `MAX_VIDEO_PAYLOAD` bytes), a keyframe every `keyframe_every_ms`
/// and whenever asked.
async fn send(
    shared: Arc<Shared>,
    index: u32,
    s: Sending,
    (audio, video): (Option<Arc<TrackLocalStaticRTP>>, Option<Arc<TrackLocalStaticRTP>>),
    keyframe_wanted: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
) -> SentStats {
    let mut st = SentStats::default();
    let mut stop = shared.stop.clone();
    let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
    audio_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let fps = s.fps.max(1);
    let mut video_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
    video_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let frame_bytes = (s.video_bps / 8 / u64::from(fps)) as usize;
    let keyframe_every = (s.keyframe_every_ms * u64::from(fps) / 1000).max(1) as u32;
    let (mut audio_seq, mut video_seq, mut frame) = (0u32, 0u32, 0u32);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = audio_tick.tick(), if audio.is_some() => {
                let now = sys::now_us();
                let packet = media::audio_packet(index, audio_seq, now, s.audio_bytes);
                if shared.window.contains(now) {
                    st.audio.note(audio_seq);
                }
                if let Some(track) = &audio {
                    if track.write_rtp(&packet).await.is_err() {
                        st.write_errors += 1;
                    }
                }
                audio_seq += 1;
                st.audio_total += 1;
            }
            _ = video_tick.tick(), if video.is_some() => {
                let now = sys::now_us();
                let keyframe = frame % keyframe_every == 0 || keyframe_wanted.swap(false, Ordering::Relaxed);
                let packets = media::video_frame(index, video_seq, frame, fps, keyframe, frame_bytes, now);
                st.keyframes += u64::from(keyframe);
                let in_window = shared.window.contains(now);
                for packet in &packets {
                    if in_window {
                        st.video.note(video_seq);
                    }
                    if let Some(track) = &video {
                        if track.write_rtp(packet).await.is_err() {
                            st.write_errors += 1;
                        }
                    }
                    video_seq += 1;
                    st.video_total += 1;
                }
                frame += 1;
            }
        }
    }
    st.keyframe_requests = requests.load(Ordering::Relaxed);
    st
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
        r.note(&t, now, shared.window.contains(t.sent_us));
    }
    got
}
