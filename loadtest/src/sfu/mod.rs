//! `sfu`: meeting rooms of N participants through the hub's real signaling, each a pair of
//! webrtc-rs peer connections in this process (see `participant`). Publishers send real Opus audio
//! (a synthetic speaker, 50 packets/s) and VP8-like video (paced frames, keyframes every 2 s and on
//! PLI/FIR), by default as three simulcast encodings ("q", "h", "f"); every participant receives
//! every other participant's tracks (rooms auto-subscribe), at the view size it asks for
//! (`--subscriber-size`), which decides the layer the hub forwards to it. Each payload carries its
//! publisher, layer, sequence and send time, so the receivers measure one-way latency (same
//! machine clock) and loss per forwarded stream, against the layer in effect (see `received`), over
//! a measured window that starts once every stream flows. The hub's CPU is read from
//! /proc/<--hub-pid>/stat around that window.
//!
//! `sfu-core` ([`core`]) measures the forwarding core alone, without network or crypto.

pub mod core;
mod media;
mod participant;
mod received;
mod report;
mod sender;
mod signal;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;
use tokio::time::Instant;

use self::media::Speech;
use self::participant::{Participant, Shared, Spec, Window};
use self::report::Params;
use self::sender::Sending;
use crate::conn::Target;
use crate::sys;

#[derive(Args, Debug)]
pub struct SfuArgs {
    /// Hub WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    pub url: String,
    /// Hub HTTP base (unused for media; kept for symmetry with the other scenarios' commands).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub api: String,
    /// HS256 secret the hub accepts (tokens with a `rooms` grant are minted here).
    #[arg(long, default_value = "dev-secret-change-me-0123456789")]
    pub secret: String,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
    /// Participants per room.
    #[arg(long, default_value_t = 2)]
    pub size: u32,
    /// Participants per room that publish (the first ones); default: all.
    #[arg(long)]
    pub publishers: Option<u32>,
    /// Publishers send no video / no audio.
    #[arg(long)]
    pub no_video: bool,
    #[arg(long)]
    pub no_audio: bool,
    /// Video bitrate per publisher, bits/s: of the top layer with simulcast (the others get 50 %
    /// and 15 % of it).
    #[arg(long, default_value_t = 1_000_000)]
    pub video_bps: u64,
    /// Send one video encoding instead of three simulcast layers (q 320x180, h 640x360,
    /// f 1280x720).
    #[arg(long)]
    pub no_simulcast: bool,
    /// The size subscribers show video at, WxH (`meeting.subscribe` max_width/max_height for every
    /// other participant's video track), or "any" for no limit. A comma-separated list is handed
    /// out in turn by participant within a room: "320x180,1280x720" makes half the subscribers
    /// get layer q and half layer f.
    #[arg(long, default_value = "any")]
    pub subscriber_size: String,
    /// The bandwidth subscribers report to the hub (REMB on their subscriber connection, twice a
    /// second), bits/s, or "any" for none; a comma-separated list is handed out in turn like
    /// `--subscriber-size`: "200000,any" makes half the subscribers fit only the lowest layer.
    #[arg(long, default_value = "any")]
    pub subscriber_bps: String,
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    #[arg(long, default_value_t = 2000)]
    pub keyframe_ms: u64,
    /// The Opus encoder's target bitrate, bits/s (20 ms frames, VBR).
    #[arg(long, default_value_t = 32_000)]
    pub audio_bps: u32,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds of sending after every stream flows, before the window opens.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Seconds allowed for joining, negotiating and every stream's first packet.
    #[arg(long, default_value_t = 90.0)]
    pub setup_timeout: f64,
    /// Participants set up at once.
    #[arg(long, default_value_t = 8)]
    pub setup_concurrency: usize,
    /// The hub's process id: its CPU is read from /proc/PID/stat around the window.
    #[arg(long)]
    pub hub_pid: Option<u32>,
    /// Rooms are PREFIX + number (default: "sfu" + the time + "-").
    #[arg(long)]
    pub room_prefix: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: SfuArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=100).contains(&args.rooms), "--rooms must be in 1..=100");
    anyhow::ensure!((2..=100).contains(&args.size), "--size must be in 2..=100");
    anyhow::ensure!(args.rooms * args.size <= 200, "at most 200 participants (rooms × size)");
    anyhow::ensure!(args.duration > 0.0 && args.duration <= 600.0, "--duration must be in (0, 600] seconds");
    anyhow::ensure!((1..=60).contains(&args.fps), "--fps must be in 1..=60");
    anyhow::ensure!(args.video_bps <= 20_000_000, "--video-bps at most 20 Mb/s");
    anyhow::ensure!((6_000..=510_000).contains(&args.audio_bps), "--audio-bps must be in 6000..=510000");
    let sizes = parse_sizes(&args.subscriber_size)?;
    let bandwidths = parse_bandwidths(&args.subscriber_bps)?;
    let publishers = args.publishers.unwrap_or(args.size).min(args.size);
    let target = Target::resolve(&args.url).await?;
    sys::raise_nofile_limit();
    let prefix = args.room_prefix.clone().unwrap_or_else(|| format!("sfu{}-", sys::now_us() / 1_000_000));
    let (stop_tx, stop_rx) = watch::channel(false);
    let simulcast = !args.no_simulcast;
    let layers = media::video_layers(simulcast, args.video_bps);
    let speech = if args.no_audio { None } else { Some(Speech::new(args.audio_bps)?) };
    let shared = Arc::new(Shared {
        publish_api: participant::client_api(true)?,
        subscribe_api: participant::client_api(false)?,
        layers: layers.clone(),
        speech,
        window: Window::default(),
        streams_up: Default::default(),
        stop: stop_rx,
    });
    let sending =
        Sending { audio: !args.no_audio, video: !args.no_video, fps: args.fps, keyframe_every_ms: args.keyframe_ms };
    let kinds = u64::from(sending.audio) + u64::from(sending.video);
    // Every participant receives each other publisher's streams.
    let per_room = u64::from(publishers) * u64::from(args.size - 1) * kinds;
    let expected_streams = per_room * u64::from(args.rooms);
    let timeout = Duration::from_secs_f64(args.setup_timeout.clamp(5.0, 600.0));

    eprintln!(
        "loadtest: sfu: {} room(s) of {} ({} publishing {}{}{}), {} forwarded streams expected",
        args.rooms,
        args.size,
        publishers,
        if sending.audio { "audio " } else { "" },
        if sending.video { "video" } else { "" },
        if sending.video && simulcast { " in 3 layers" } else { "" },
        expected_streams
    );
    let setup_start = Instant::now();
    let setup_deadline = setup_start + timeout;
    let mut participants: Vec<Participant> = Vec::new();
    let mut setup_errors: Vec<String> = Vec::new();
    let secret = args.secret.clone();
    let specs: Vec<Spec> = (0..args.rooms)
        .flat_map(|r| {
            let room = format!("{prefix}{r}");
            (0..args.size).map(move |i| (i, room.clone()))
        })
        .enumerate()
        .map(|(g, (i, room))| Spec {
            index: g as u32,
            user: format!("{room}-u{i}"),
            room,
            sending: (i < publishers).then_some(sending),
            view: sizes[i as usize % sizes.len()],
            bandwidth: bandwidths[i as usize % bandwidths.len()],
        })
        .collect();
    for chunk in specs.chunks(args.setup_concurrency.max(1)) {
        let started = futures_util::future::join_all(chunk.iter().map(|spec| {
            let (shared, target, secret) = (shared.clone(), &target, &secret);
            async move { Participant::start(shared, target, secret, spec, timeout).await }
        }))
        .await;
        for p in started {
            match p {
                Ok(p) => participants.push(p),
                Err(e) => setup_errors.push(format!("{e:#}")),
            }
        }
        if Instant::now() > setup_deadline {
            break;
        }
    }
    // Every expected stream flows (or the setup time is over).
    while shared.streams_up.load(Ordering::Relaxed) < expected_streams && Instant::now() < setup_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let streams_up_at_start = shared.streams_up.load(Ordering::Relaxed);
    let setup_seconds = setup_start.elapsed().as_secs_f64();
    eprintln!(
        "loadtest: sfu: {} participants up ({} failed), {streams_up_at_start}/{expected_streams} streams flowing after {setup_seconds:.1} s",
        participants.len(),
        setup_errors.len()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.warmup.clamp(0.0, 60.0))).await;

    // The measured window.
    let hub0 = args.hub_pid.map(report::proc_cpu_seconds).transpose()?;
    let own0 = sys::own_cpu_seconds();
    let machine0 = sys::machine_cpu_seconds();
    let start_us = sys::now_us();
    shared.window.start_us.store(start_us, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let end_us = sys::now_us();
    shared.window.end_us.store(end_us, Ordering::Relaxed);
    let hub1 = args.hub_pid.map(report::proc_cpu_seconds).transpose()?;
    let own1 = sys::own_cpu_seconds();
    let machine1 = sys::machine_cpu_seconds();
    let hub_rss = args.hub_pid.and_then(report::proc_rss_bytes);
    // Packets sent in the window's last moments are still under way: let them arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);

    let mut outcomes = Vec::new();
    for p in participants {
        outcomes.push(p.finish(Duration::from_secs(5)).await);
    }
    let params = Params {
        url: args.url.clone(),
        rooms: args.rooms,
        size: args.size,
        publishers_per_room: publishers,
        audio: sending.audio,
        video: sending.video,
        video_bps: args.video_bps,
        fps: args.fps,
        keyframe_ms: args.keyframe_ms,
        audio_bps: args.audio_bps,
        duration_seconds: args.duration,
        warmup_seconds: args.warmup,
        simulcast,
        layers,
        subscriber_sizes: sizes
            .iter()
            .map(|s| s.map_or_else(|| "any".to_string(), |(w, h)| format!("{w}x{h}")))
            .collect(),
        subscriber_bps: bandwidths.iter().map(|b| b.map_or_else(|| "any".to_string(), |b| b.to_string())).collect(),
        hub_pid: args.hub_pid,
        room_prefix: prefix,
    };
    let window_seconds = (end_us - start_us) as f64 / 1e6;
    let report = report::build(report::Inputs {
        params,
        expected_streams,
        streams_up_at_start,
        setup_seconds,
        setup_errors,
        outcomes: &outcomes,
        window_seconds,
        hub_cpu: hub0.zip(hub1).map(|(a, b)| b - a),
        hub_rss,
        loadgen_cpu: own1 - own0,
        machine_busy: machine1.0 - machine0.0,
        machine_total: machine1.1 - machine0.1,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print(&report);
    }
    Ok(())
}

/// `--subscriber-size`: "WxH" or "any", comma-separated.
fn parse_sizes(spec: &str) -> anyhow::Result<Vec<Option<(u32, u32)>>> {
    spec.split(',')
        .map(|s| {
            let s = s.trim();
            if s.eq_ignore_ascii_case("any") {
                return Ok(None);
            }
            let parsed = s.split_once(['x', 'X']).and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
            match parsed {
                Some((w, h)) if w > 0 && h > 0 && w <= 8192 && h <= 8192 => Ok(Some((w, h))),
                _ => anyhow::bail!("--subscriber-size: {s:?} is neither WxH nor \"any\""),
            }
        })
        .collect()
}

fn parse_bandwidths(spec: &str) -> anyhow::Result<Vec<Option<u64>>> {
    spec.split(',')
        .map(|s| match s.trim() {
            s if s.eq_ignore_ascii_case("any") => Ok(None),
            s => match s.parse::<u64>() {
                Ok(bps) if (10_000..=100_000_000).contains(&bps) => Ok(Some(bps)),
                _ => anyhow::bail!("--subscriber-bps: {s:?} is neither bits/s (10000 to 100000000) nor \"any\""),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{parse_bandwidths, parse_sizes};

    #[test]
    fn subscriber_bandwidths() {
        assert_eq!(parse_bandwidths("any").unwrap(), [None]);
        assert_eq!(parse_bandwidths("200000, ANY").unwrap(), [Some(200_000), None]);
        assert!(parse_bandwidths("200k").is_err());
        assert!(parse_bandwidths("5").is_err());
    }

    #[test]
    fn subscriber_sizes() {
        assert_eq!(parse_sizes("any").unwrap(), [None]);
        assert_eq!(parse_sizes("320x180, any,1280X720").unwrap(), [Some((320, 180)), None, Some((1280, 720))]);
        assert!(parse_sizes("320").is_err());
        assert!(parse_sizes("0x10").is_err());
        assert!(parse_sizes("").is_err());
    }
}
