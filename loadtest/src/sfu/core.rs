//! `sfu-core`: the forwarding core alone, in this process: one `sfu::Forwarder` per track fed
//! synthetic packets for K subscribers on one thread, with no network, no SRTP and no webrtc-rs.
//! Its packets per CPU-second are the ceiling of what the hub's media plane could forward per core.

use std::time::Instant;

use ::sfu::{Codec, Forwarder, ForwarderConfig, Layer, Output, SubscriberId};
use clap::Args;
use serde::Serialize;

use super::media::{self, Kind, Speech, Trailer};
use crate::sys;

#[derive(Args, Debug)]
pub struct CoreArgs {
    /// Subscriber counts to measure, each in its own run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,9,49,100,1000")]
    pub subscribers: Vec<u32>,
    /// Packets fed to the forwarder in each run.
    #[arg(long, default_value_t = 200_000)]
    pub packets: u64,
    /// At most this many forwarded packets per run (the feed stops earlier for large K).
    #[arg(long, default_value_t = 20_000_000)]
    pub max_forwarded: u64,
    /// Payload bytes of the video packets.
    #[arg(long, default_value_t = 1100)]
    pub payload_bytes: usize,
    /// Audio (Opus, no retransmission buffer) instead of VP8 video.
    #[arg(long)]
    pub audio: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct CoreRun {
    pub kind: &'static str,
    pub subscribers: u32,
    pub packets_in: u64,
    pub forwarded: u64,
    pub keyframe_requests: u64,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    /// Forwarded packets per CPU-second of the one thread that forwards: per core.
    pub forwarded_per_core_sec: f64,
    pub ns_per_forwarded: f64,
    pub ns_per_packet_in: f64,
}

pub fn run(args: CoreArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.packets > 0 && args.packets <= 100_000_000, "--packets must be in 1..=100000000");
    anyhow::ensure!(args.subscribers.iter().all(|&k| (1..=100_000).contains(&k)), "--subscribers in 1..=100000");
    let mut runs = Vec::new();
    let speech = if args.audio { Some(Speech::new(32_000)?) } else { None };
    for &k in &args.subscribers {
        let r = measure(k, &args, speech.as_ref());
        if !args.json {
            println!(
                "sfu-core {:<5} K={:<6} {:>10} in, {:>11} forwarded in {:.2} s CPU: {:>6.2} M forwarded/s per core, {:>6.1} ns per forwarded packet, {:>7.0} ns per input packet",
                r.kind,
                k,
                r.packets_in,
                r.forwarded,
                r.cpu_seconds,
                r.forwarded_per_core_sec / 1e6,
                r.ns_per_forwarded,
                r.ns_per_packet_in
            );
        }
        runs.push(r);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"scenario": "sfu-core", "runs": runs}))?);
    }
    Ok(())
}

fn measure(k: u32, args: &CoreArgs, speech: Option<&Speech>) -> CoreRun {
    let codec = if args.audio { Codec::Audio } else { Codec::Vp8 };
    let mut forwarder = Forwarder::new(ForwarderConfig::new(codec));
    for s in 0..k {
        forwarder.add_subscriber(SubscriberId(u64::from(s)), 0x1000 + s, Some(Layer::LOW), 0).expect("fresh ids");
    }
    // One keyframe to start every subscriber, then 30 fps of frames of 4 packets, a keyframe every
    // 2 s: the same shape as the scenario's video (the payloads are built once and shared).
    let fps = 30;
    let frames: Vec<Vec<webrtc::rtp::packet::Packet>> = (0..60)
        .map(|f| {
            let first = |kind, seq| Trailer { publisher: 0, kind, layer: 0, seq, sent_us: 0 };
            match speech {
                Some(speech) => vec![speech.packet(f as usize, &first(Kind::Audio, f))],
                None => {
                    let bytes = 4 * args.payload_bytes.max(media::TRAILER + 16);
                    media::video_frame(first(Kind::Video, f * 4), f, fps, f == 0, bytes, (320, 180))
                }
            }
        })
        .collect();
    let packets_in = args.packets.min(args.max_forwarded / u64::from(k)).max(1);
    let (mut fed, mut forwarded, mut requests) = (0u64, 0u64, 0u64);
    let (mut seq, mut frame) = (0u16, 0u32);
    let cpu0 = thread_cpu_seconds();
    let wall0 = Instant::now();
    'feed: loop {
        let template = &frames[(frame % 60) as usize];
        let now_ms = u64::from(frame) * 1000 / u64::from(fps);
        for p in template {
            let mut p = p.clone();
            p.header.sequence_number = seq;
            p.header.timestamp = frame.wrapping_mul(3000);
            p.header.ssrc = 0xabcd;
            seq = seq.wrapping_add(1);
            forwarder.on_rtp(Layer::LOW, &p, now_ms);
            while let Some(out) = forwarder.poll_output() {
                match out {
                    Output::Rtp { packet, .. } => {
                        forwarded += 1;
                        std::hint::black_box(packet);
                    }
                    Output::KeyframeRequest(_) => requests += 1,
                    Output::AudioLevel(_) => {}
                }
            }
            fed += 1;
            if fed >= packets_in {
                break 'feed;
            }
        }
        frame += 1;
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = (thread_cpu_seconds() - cpu0).max(1e-9);
    CoreRun {
        kind: if args.audio { "audio" } else { "video" },
        subscribers: k,
        packets_in: fed,
        forwarded,
        keyframe_requests: requests,
        wall_seconds: wall,
        cpu_seconds: cpu,
        forwarded_per_core_sec: forwarded as f64 / cpu,
        ns_per_forwarded: cpu * 1e9 / forwarded.max(1) as f64,
        ns_per_packet_in: cpu * 1e9 / fed as f64,
    }
}

/// CPU seconds of the calling thread (the forwarding runs on it alone).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only the struct we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return sys::own_cpu_seconds();
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
