//! The `sfu` scenario's figures: what was sent and forwarded inside the window, loss per
//! forwarded stream, one-way latency, the hub's and this process's CPU. JSON with `--json`.

use std::collections::HashMap;

use anyhow::Context;
use serde::Serialize;

use super::media::{Kind, Received, SentRange};
use super::participant::Outcome;
use crate::report::{ms, Latency};

#[derive(Debug, Serialize)]
pub struct Params {
    pub url: String,
    pub rooms: u32,
    pub size: u32,
    pub publishers_per_room: u32,
    pub audio: bool,
    pub video: bool,
    pub video_bps: u64,
    pub fps: u32,
    pub keyframe_ms: u64,
    pub audio_bytes: usize,
    pub duration_seconds: f64,
    pub warmup_seconds: f64,
    /// Always false: the client tracks send one layer.
    pub simulcast: bool,
    pub hub_pid: Option<u32>,
    pub room_prefix: String,
}

/// Sent and forwarded packets of one kind inside the window.
#[derive(Debug, Default, Serialize)]
pub struct Flow {
    /// Publisher streams, and packets they sent in the window.
    pub published_streams: u64,
    pub sent: u64,
    /// Forwarded streams (publisher stream × subscriber) expected, and those that delivered
    /// anything of the window.
    pub forwarded_streams: u64,
    pub forwarded_streams_flowing: u64,
    /// Packets the subscribers should have got (sent × subscribers) and got (once each).
    pub expected: u64,
    pub received: u64,
    pub loss_percent: f64,
    /// Forwarded streams that lost anything, and the worst stream's loss.
    pub streams_with_loss: u64,
    pub worst_stream_loss_percent: f64,
    pub received_per_sec: f64,
    /// One-way latency (publisher's write → subscriber's read, same clock) of window packets.
    pub latency: Latency,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    pub hub_cpu_seconds: Option<f64>,
    pub hub_cores: Option<f64>,
    /// Hub CPU-µs per forwarded packet received by a subscriber (all the hub's work counted:
    /// reading publishers, SRTP, forwarding, RTCP, signaling).
    pub hub_us_per_forwarded_packet: Option<f64>,
    /// Forwarded packets per hub CPU-second.
    pub forwarded_per_hub_core_sec: Option<f64>,
    /// Forwarded streams (flowing) over hub cores busy.
    pub forwarded_streams_per_hub_core: Option<f64>,
    pub hub_rss_bytes: Option<u64>,
    /// This process (every client peer connection).
    pub loadgen_cpu_seconds: f64,
    pub loadgen_cores: f64,
    pub machine_busy_cores: f64,
    pub machine_cores: f64,
    /// Busy cores of neither the hub nor this process.
    pub other_busy_cores: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SfuReport {
    pub scenario: &'static str,
    pub params: Params,
    pub participants: u64,
    pub setup_errors: Vec<String>,
    pub setup_seconds: f64,
    pub expected_streams: u64,
    pub streams_up_at_start: u64,
    pub window_seconds: f64,
    pub audio: Flow,
    pub video: Flow,
    pub total: Flow,
    pub cpu: Cpu,
    /// Server offers answered, over all participants.
    pub offers: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    pub write_errors: u64,
    pub duplicates: u64,
    pub errors: Vec<String>,
}

pub struct Inputs<'a> {
    pub params: Params,
    pub expected_streams: u64,
    pub streams_up_at_start: u64,
    pub setup_seconds: f64,
    pub setup_errors: Vec<String>,
    pub outcomes: &'a [Outcome],
    pub rooms: &'a HashMap<u32, String>,
    pub window_seconds: f64,
    pub hub_cpu: Option<f64>,
    pub hub_rss: Option<u64>,
    pub loadgen_cpu: f64,
    pub machine_busy: f64,
    pub machine_total: f64,
}

#[derive(Default)]
struct Acc {
    flow: Flow,
    worst: f64,
    latency: Option<hdrhistogram::Histogram<u64>>,
}

impl Acc {
    fn add_stream(&mut self, range: &SentRange, got: Option<&Received>) {
        let expected = range.count();
        let received = got.map_or(0, |r| r.count_in(range));
        self.flow.forwarded_streams += 1;
        self.flow.expected += expected;
        self.flow.received += received;
        if received > 0 {
            self.flow.forwarded_streams_flowing += 1;
        }
        if received < expected {
            self.flow.streams_with_loss += 1;
            self.worst = self.worst.max(100.0 * (expected - received) as f64 / expected as f64);
        }
        if let Some(r) = got {
            let h = self.latency.get_or_insert_with(crate::ipc::new_histogram);
            let _ = h.add(&r.latency);
        }
    }

    fn finish(mut self, window: f64) -> Flow {
        let f = &mut self.flow;
        f.loss_percent =
            if f.expected > 0 { 100.0 * f.expected.saturating_sub(f.received) as f64 / f.expected as f64 } else { 0.0 };
        f.worst_stream_loss_percent = self.worst;
        f.received_per_sec = f.received as f64 / window.max(1e-3);
        f.latency = self.latency.as_ref().map(Latency::from_histogram).unwrap_or_default();
        self.flow
    }
}

pub fn build(i: Inputs<'_>) -> SfuReport {
    let mut by_receiver: HashMap<(u32, u32, u8), &Received> = HashMap::new();
    let mut duplicates = 0;
    for o in i.outcomes {
        for r in &o.received {
            duplicates += r.duplicates;
            by_receiver.insert((o.index, r.publisher, r.kind as u8), r);
        }
    }
    let (mut audio, mut video, mut total) = (Acc::default(), Acc::default(), Acc::default());
    let (mut keyframes, mut requests, mut write_errors) = (0, 0, 0);
    for p in i.outcomes {
        let Some(sent) = &p.sent else { continue };
        keyframes += sent.keyframes;
        requests += sent.keyframe_requests;
        write_errors += sent.write_errors;
        for (kind, range, acc) in [(Kind::Audio, &sent.audio, &mut audio), (Kind::Video, &sent.video, &mut video)] {
            if range.first.is_none() {
                continue;
            }
            acc.flow.published_streams += 1;
            acc.flow.sent += range.count();
            total.flow.published_streams += 1;
            total.flow.sent += range.count();
            for s in i.outcomes.iter().filter(|s| s.index != p.index && i.rooms.get(&s.index) == i.rooms.get(&p.index))
            {
                let got = by_receiver.get(&(s.index, p.index, kind as u8)).copied();
                acc.add_stream(range, got);
                total.add_stream(range, got);
            }
        }
    }
    let w = i.window_seconds;
    let (audio, video, total) = (audio.finish(w), video.finish(w), total.finish(w));
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let machine_busy_cores = if i.machine_total > 0.0 { i.machine_busy / (i.machine_total / ncpu) } else { 0.0 };
    let cpu = Cpu {
        hub_cpu_seconds: i.hub_cpu,
        hub_cores: i.hub_cpu.map(|c| c / w),
        hub_us_per_forwarded_packet: i.hub_cpu.map(|c| c * 1e6 / total.received.max(1) as f64),
        forwarded_per_hub_core_sec: i.hub_cpu.map(|c| total.received as f64 / c.max(1e-9)),
        forwarded_streams_per_hub_core: i.hub_cpu.map(|c| total.forwarded_streams_flowing as f64 / (c / w).max(1e-9)),
        hub_rss_bytes: i.hub_rss,
        loadgen_cpu_seconds: i.loadgen_cpu,
        loadgen_cores: i.loadgen_cpu / w,
        machine_busy_cores,
        machine_cores: ncpu,
        other_busy_cores: i.hub_cpu.map(|c| machine_busy_cores - (c + i.loadgen_cpu) / w),
    };
    let mut errors: Vec<String> = i.outcomes.iter().flat_map(|o| o.errors.iter().cloned()).collect();
    errors.truncate(50);
    SfuReport {
        scenario: "sfu",
        params: i.params,
        participants: i.outcomes.len() as u64,
        setup_errors: i.setup_errors,
        setup_seconds: i.setup_seconds,
        expected_streams: i.expected_streams,
        streams_up_at_start: i.streams_up_at_start,
        window_seconds: w,
        audio,
        video,
        total,
        cpu,
        offers: i.outcomes.iter().map(|o| o.offers).sum(),
        keyframes_sent: keyframes,
        keyframe_requests: requests,
        write_errors,
        duplicates,
        errors,
    }
}

/// utime + stime of a process, in seconds (/proc/PID/stat, fields 14 and 15).
pub fn proc_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("hub pid {pid}"))?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Ok((ticks(11) + ticks(12)) / hz)
}

pub fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant.
    Some(pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64)
}

pub fn print(r: &SfuReport) {
    let p = &r.params;
    println!("sfu");
    println!(
        "  setup      {} room(s) × {} ({} publishing), {} participants up, {} failed; {}/{} streams flowing after {:.1} s; {} server offers answered",
        p.rooms,
        p.size,
        p.publishers_per_room,
        r.participants,
        r.setup_errors.len(),
        r.streams_up_at_start,
        r.expected_streams,
        r.setup_seconds,
        r.offers
    );
    for e in r.setup_errors.iter().chain(&r.errors).take(10) {
        println!("  error      {e}");
    }
    for (name, f) in [("audio", &r.audio), ("video", &r.video), ("total", &r.total)] {
        println!(
            "  {name:<10} {} streams sent {} pkts; {} forwarded streams ({} flowing): {} of {} received ({:.0}/s), loss {:.3} % ({} streams with loss, worst {:.2} %); latency p50 {} p99 {} max {}",
            f.published_streams,
            f.sent,
            f.forwarded_streams,
            f.forwarded_streams_flowing,
            f.received,
            f.expected,
            f.received_per_sec,
            f.loss_percent,
            f.streams_with_loss,
            f.worst_stream_loss_percent,
            ms(f.latency.p50_us),
            ms(f.latency.p99_us),
            ms(f.latency.max_us)
        );
    }
    let c = &r.cpu;
    if let (Some(cores), Some(us), Some(per), Some(streams)) =
        (c.hub_cores, c.hub_us_per_forwarded_packet, c.forwarded_per_hub_core_sec, c.forwarded_streams_per_hub_core)
    {
        println!(
            "  hub        {cores:.2} cores; {us:.1} CPU-µs per forwarded packet; {per:.0} forwarded packets per CPU-s; {streams:.0} forwarded streams per core"
        );
    }
    println!(
        "  machine    load generator {:.2} cores; machine {:.2} of {} cores busy{}",
        c.loadgen_cores,
        c.machine_busy_cores,
        c.machine_cores,
        c.other_busy_cores.map(|o| format!(", {o:.2} by other processes")).unwrap_or_default()
    );
    println!(
        "  media      {} keyframes sent, {} keyframe requests, {} write errors, {} duplicates",
        r.keyframes_sent, r.keyframe_requests, r.write_errors, r.duplicates
    );
}
