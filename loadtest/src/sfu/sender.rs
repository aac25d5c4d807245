//! A publisher's outgoing media: its client tracks (an Opus track; a VP8 track, with simulcast one
//! encoding per layer on one sender), the RTCP readers that turn PLI/FIR into keyframes of the
//! encoding asked for, and the paced sending loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use webrtc::api::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

use super::media::{self, Kind, LayerSpec, Trailer};
use super::participant::Shared;
use super::received::SentRange;
use crate::sys;

/// What one participant publishes.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    pub audio: bool,
    pub video: bool,
    pub fps: u32,
    pub keyframe_every_ms: u64,
}

/// What a publisher sent in all and inside the window.
#[derive(Debug, Default, Clone)]
pub struct SentStats {
    pub audio_total: u64,
    /// Payload bytes of all audio packets (Opus with its padding and the trailer).
    pub audio_bytes: u64,
    pub audio: SentRange,
    /// Per video layer, lowest first.
    pub video: Vec<LayerSent>,
    pub write_errors: u64,
}

/// One video encoding's sends.
#[derive(Debug, Default, Clone, Copy)]
pub struct LayerSent {
    pub total: u64,
    pub range: SentRange,
    pub keyframes: u64,
    pub keyframe_requests: u64,
}

/// One video encoding: its track, and the flag its RTCP reader raises on a PLI or FIR.
pub struct Encoding {
    spec: LayerSpec,
    track: Arc<TrackLocalStaticRTP>,
    keyframe_wanted: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
}

/// The tracks a publisher sends on.
#[derive(Default)]
pub struct Tracks {
    pub audio: Option<Arc<TrackLocalStaticRTP>>,
    pub video: Vec<Encoding>,
}

/// Adds the Opus track (client id `cid`) to `pc`, and starts reading its RTCP (which runs the
/// interceptors).
pub async fn add_audio(pc: &RTCPeerConnection, cid: &str, stream: &str) -> anyhow::Result<Arc<TrackLocalStaticRTP>> {
    let cap = RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        ..Default::default()
    };
    let track = Arc::new(TrackLocalStaticRTP::new(cap, cid.to_owned(), stream.to_owned()));
    let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await?;
    tokio::spawn(read_rtcp(sender, None, None, None));
    Ok(track)
}

/// Adds the VP8 track (client id `cid`) to `pc`: one encoding per layer of `layers` (with rids,
/// on one sender, as a browser's `sendEncodings`; without a rid when there is one layer), each
/// with its own RTCP reader, so that a keyframe request for one layer's SSRC makes a keyframe on
/// that layer only.
pub async fn add_video(
    pc: &RTCPeerConnection,
    cid: &str,
    stream: &str,
    layers: &[LayerSpec],
) -> anyhow::Result<Vec<Encoding>> {
    let cap = RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.to_owned(), clock_rate: 90_000, ..Default::default() };
    let tracks: Vec<Arc<TrackLocalStaticRTP>> = layers
        .iter()
        .map(|l| {
            Arc::new(if layers.len() == 1 {
                TrackLocalStaticRTP::new(cap.clone(), cid.to_owned(), stream.to_owned())
            } else {
                TrackLocalStaticRTP::new_with_rid(cap.clone(), cid.to_owned(), l.rid.clone(), stream.to_owned())
            })
        })
        .collect();
    let Some(base) = tracks.first() else { return Ok(Vec::new()) };
    let sender = pc.add_track(base.clone() as Arc<dyn TrackLocal + Send + Sync>).await?;
    for track in &tracks[1..] {
        sender.add_encoding(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await?;
    }
    let params = sender.get_parameters().await;
    let mut encodings = Vec::new();
    for (spec, track) in layers.iter().zip(tracks) {
        let keyframe_wanted = Arc::new(AtomicBool::new(true));
        let requests = Arc::new(AtomicU64::new(0));
        let (rid, ssrc) = if layers.len() == 1 {
            (None, None)
        } else {
            let ssrc = params.encodings.iter().find(|e| e.rid.as_str() == spec.rid).map(|e| e.ssrc);
            (Some(spec.rid.clone()), ssrc)
        };
        tokio::spawn(read_rtcp(sender.clone(), rid, ssrc, Some((keyframe_wanted.clone(), requests.clone()))));
        encodings.push(Encoding { spec: spec.clone(), track, keyframe_wanted, requests });
    }
    Ok(encodings)
}

/// Reads a sender's RTCP (of the encoding `rid`, or of its only one); a PLI or FIR for `ssrc` (any,
/// if `None`) asks for a keyframe. RTCP arrives per destination SSRC, but a compound packet goes
/// to every SSRC it names, hence the check.
async fn read_rtcp(
    sender: Arc<RTCRtpSender>,
    rid: Option<String>,
    ssrc: Option<u32>,
    keyframe: Option<(Arc<AtomicBool>, Arc<AtomicU64>)>,
) {
    let ours = |s: u32| ssrc.is_none_or(|o| o == s);
    loop {
        let read = match &rid {
            Some(rid) => sender.read_rtcp_simulcast(rid).await,
            None => sender.read_rtcp().await,
        };
        let Ok((packets, _)) = read else { return };
        let Some((wanted, requests)) = &keyframe else { continue };
        for p in packets {
            let any = p.as_any();
            let asked = any.downcast_ref::<PictureLossIndication>().is_some_and(|pli| ours(pli.media_ssrc))
                || any.downcast_ref::<FullIntraRequest>().is_some_and(|fir| fir.fir.iter().any(|e| ours(e.ssrc)));
            if asked {
                requests.fetch_add(1, Ordering::Relaxed);
                wanted.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Paced sending until the stop signal: an Opus packet every 20 ms (the shared speaker's cycle,
/// from a frame that depends on `index`), a video frame every 1/fps s on every layer (cut into
/// packets of at most `MAX_VIDEO_PAYLOAD` bytes, the layer's bitrate / fps bytes per frame), a
/// keyframe on each layer every `keyframe_every_ms` and whenever that layer is asked for one.
pub async fn send(shared: Arc<Shared>, index: u32, s: Sending, tracks: Tracks) -> SentStats {
    let mut st = SentStats { video: vec![LayerSent::default(); tracks.video.len()], ..Default::default() };
    let mut stop = shared.stop.clone();
    let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
    audio_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let fps = s.fps.max(1);
    let mut video_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
    video_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let keyframe_every = (s.keyframe_every_ms * u64::from(fps) / 1000).max(1) as u32;
    let speech = shared.speech.as_ref().filter(|_| tracks.audio.is_some());
    // Publishers start at different points of the speaker's cycle, so they do not all talk at once.
    let speech_start = speech.map_or(0, |sp| (index as usize * 53) % sp.len().max(1));
    let (mut audio_seq, mut frame) = (0u32, 0u32);
    let mut video_seq = vec![0u32; tracks.video.len()];
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = audio_tick.tick(), if speech.is_some() => {
                let (Some(speech), Some(track)) = (speech, &tracks.audio) else { continue };
                let now = sys::now_us();
                let t = Trailer { publisher: index, kind: Kind::Audio, layer: 0, seq: audio_seq, sent_us: now };
                let packet = speech.packet(speech_start + audio_seq as usize, &t);
                if shared.window.contains(now) {
                    st.audio.note(audio_seq);
                }
                if track.write_rtp(&packet).await.is_err() {
                    st.write_errors += 1;
                }
                audio_seq += 1;
                st.audio_total += 1;
                st.audio_bytes += packet.payload.len() as u64;
            }
            _ = video_tick.tick(), if !tracks.video.is_empty() => {
                let now = sys::now_us();
                let in_window = shared.window.contains(now);
                let mut errors = 0;
                for (layer, e) in tracks.video.iter().enumerate() {
                    let sent = &mut st.video[layer];
                    let keyframe = frame % keyframe_every == 0 || e.keyframe_wanted.swap(false, Ordering::Relaxed);
                    let first = Trailer { publisher: index, kind: Kind::Video, layer: layer as u8, seq: video_seq[layer], sent_us: now };
                    let frame_bytes = (e.spec.bitrate_bps / 8 / u64::from(fps)) as usize;
                    let size = (e.spec.width, e.spec.height);
                    let packets = media::video_frame(first, frame, fps, keyframe, frame_bytes, size);
                    sent.keyframes += u64::from(keyframe);
                    for packet in &packets {
                        if in_window {
                            sent.range.note(video_seq[layer]);
                        }
                        if e.track.write_rtp(packet).await.is_err() {
                            errors += 1;
                        }
                        video_seq[layer] += 1;
                        sent.total += 1;
                    }
                }
                st.write_errors += errors;
                frame += 1;
            }
        }
    }
    for (sent, e) in st.video.iter_mut().zip(&tracks.video) {
        sent.keyframe_requests = e.requests.load(Ordering::Relaxed);
    }
    st
}
