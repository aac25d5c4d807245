//! The `sfu` scenario's figures: what was sent and forwarded inside the window, per kind and per
//! video layer, loss per forwarded stream (against the layer in effect: [`super::received`]),
//! one-way latency, the hub's and this process's CPU. JSON with `--json`.

use std::collections::HashMap;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::media::{layer_for, Kind, LayerSpec};
use super::participant::Outcome;
use super::received::{account_missing, Count, Received, SentRange};
use crate::report::{ms, Latency};

#[derive(Debug, Serialize)]
pub struct Params {
    pub url: String,
    pub rooms: u32,
    pub size: u32,
    pub publishers_per_room: u32,
    pub audio: bool,
    pub video: bool,
    /// The top layer's bitrate (the only one's without simulcast).
    pub video_bps: u64,
    pub fps: u32,
    pub keyframe_ms: u64,
    /// The Opus encoder's target bitrate.
    pub audio_bps: u32,
    pub duration_seconds: f64,
    pub warmup_seconds: f64,
    pub simulcast: bool,
    /// Every publisher's video encodings, lowest first.
    pub layers: Vec<LayerSpec>,
    /// The view sizes subscribers asked for, in turn by participant ("any": none asked).
    pub subscriber_sizes: Vec<String>,
    /// REMB bits/s reported by subscribers, in turn ("any": none).
    pub subscriber_bps: Vec<String>,
    pub hub_pid: Option<u32>,
    pub room_prefix: String,
}

/// Sent and forwarded packets of one kind inside the window.
#[derive(Debug, Default, Serialize)]
pub struct Flow {
    /// Publisher streams (tracks), and packets they sent in the window (all layers).
    pub published_streams: u64,
    pub sent: u64,
    /// Forwarded streams (publisher track × subscriber) expected, and those that delivered
    /// anything of the window.
    pub forwarded_streams: u64,
    pub forwarded_streams_flowing: u64,
    /// Packets the subscribers should have got of the layers in effect for them (without
    /// simulcast: sent × subscribers), and got (once each).
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

/// One video layer's part of the window.
#[derive(Debug, Serialize)]
pub struct LayerFlow {
    #[serde(flatten)]
    pub layer: LayerSpec,
    /// Packets the publishers sent on this layer in the window, keyframes they sent on it (in
    /// all) and keyframe requests (PLI/FIR) it got.
    pub sent: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    /// Forwarded streams for which this layer was in effect during some of the window, and the
    /// packets of this layer they should have got and got.
    pub forwarded_streams: u64,
    pub expected: u64,
    pub received: u64,
    pub loss_percent: f64,
    pub received_per_sec: f64,
    pub latency: Latency,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    pub hub_cpu_seconds: Option<f64>,
    pub hub_cores: Option<f64>,
    /// Hub CPU-µs per forwarded packet received by a subscriber (all the hub's work counted:
    /// reading publishers, SRTP, forwarding, RTCP, Opus decoding for levels, signaling).
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

/// What the participants heard of the hub's active speaker (levels it measured by decoding Opus).
#[derive(Debug, Default, Serialize)]
pub struct Speakers {
    /// `active_speaker` events, over all participants (the whole run, not just the window).
    pub events: u64,
    /// Distinct users named, per room, the most any participant heard.
    pub distinct_speakers: u64,
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
    /// Video per layer, lowest first.
    pub layers: Vec<LayerFlow>,
    /// Layer switches the subscribers saw (a forwarded video stream changing source).
    pub layer_switches: u64,
    /// Mean payload of the audio packets sent (Opus, its padding, the trailer).
    pub audio_payload_bytes: f64,
    pub active_speaker: Speakers,
    pub cpu: Cpu,
    /// Server offers answered, over all participants.
    pub offers: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    pub write_errors: u64,
    pub duplicates: u64,
    /// The forwarded streams that lost the most (at most 20): who got whose, how much, in
    /// how many segments (runs of one layer; see `received`).
    pub lossy_streams: Vec<String>,
    pub errors: Vec<String>,
}

pub struct Inputs<'a> {
    pub params: Params,
    pub expected_streams: u64,
    pub streams_up_at_start: u64,
    pub setup_seconds: f64,
    pub setup_errors: Vec<String>,
    pub outcomes: &'a [Outcome],
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
    latency: Option<Histogram<u64>>,
}

impl Acc {
    /// Adds one forwarded stream's counts (`always`: count the stream even if nothing of it was
    /// expected, as for a kind; a layer counts only the streams it was in effect for).
    fn add<'h>(&mut self, c: Count, latency: impl IntoIterator<Item = &'h Histogram<u64>>, always: bool) {
        if !always && c.expected == 0 && c.received == 0 {
            return;
        }
        self.flow.forwarded_streams += 1;
        self.flow.expected += c.expected;
        self.flow.received += c.received;
        if c.received > 0 {
            self.flow.forwarded_streams_flowing += 1;
        }
        if c.received < c.expected {
            self.flow.streams_with_loss += 1;
            self.worst = self.worst.max(100.0 * (c.expected - c.received) as f64 / c.expected as f64);
        }
        for l in latency {
            let h = self.latency.get_or_insert_with(crate::ipc::new_histogram);
            let _ = h.add(l);
        }
    }

    fn finish(mut self, window: f64) -> Flow {
        let f = &mut self.flow;
        f.loss_percent = loss_percent(f.expected, f.received);
        f.worst_stream_loss_percent = self.worst;
        f.received_per_sec = f.received as f64 / window.max(1e-3);
        f.latency = self.latency.as_ref().map(Latency::from_histogram).unwrap_or_default();
        self.flow
    }
}

fn loss_percent(expected: u64, received: u64) -> f64 {
    if expected > 0 {
        100.0 * expected.saturating_sub(received) as f64 / expected as f64
    } else {
        0.0
    }
}

fn sum(counts: &[Count]) -> Count {
    counts
        .iter()
        .fold(Count::default(), |a, c| Count { expected: a.expected + c.expected, received: a.received + c.received })
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
    let layers = &i.params.layers;
    let (mut audio, mut video, mut total) = (Acc::default(), Acc::default(), Acc::default());
    let mut by_layer: Vec<Acc> = layers.iter().map(|_| Acc::default()).collect();
    let mut layer_sent = vec![(0u64, 0u64, 0u64); layers.len()];
    let (mut write_errors, mut switches, mut audio_packets, mut audio_bytes) = (0, 0, 0, 0);
    let mut lossy: Vec<(u64, String)> = Vec::new();
    for p in i.outcomes {
        let Some(sent) = &p.sent else { continue };
        write_errors += sent.write_errors;
        audio_packets += sent.audio_total;
        audio_bytes += sent.audio_bytes;
        for (l, s) in sent.video.iter().enumerate().filter(|(l, _)| *l < layers.len()) {
            layer_sent[l].0 += s.range.count();
            layer_sent[l].1 += s.keyframes;
            layer_sent[l].2 += s.keyframe_requests;
        }
        let video_ranges: Vec<SentRange> = sent.video.iter().map(|l| l.range).collect();
        let audio_ranges = [sent.audio];
        for (kind, ranges, acc) in
            [(Kind::Audio, &audio_ranges[..], &mut audio), (Kind::Video, &video_ranges[..], &mut video)]
        {
            if ranges.iter().all(|r| r.first.is_none()) {
                continue;
            }
            let sent_count: u64 = ranges.iter().map(SentRange::count).sum();
            acc.flow.published_streams += 1;
            acc.flow.sent += sent_count;
            total.flow.published_streams += 1;
            total.flow.sent += sent_count;
            for s in i.outcomes.iter().filter(|s| s.index != p.index && s.room == p.room) {
                let got = by_receiver.get(&(s.index, p.index, kind as u8)).copied();
                let asked = if kind == Kind::Video { layer_for(layers, s.view) } else { 0 };
                let counts = got.map_or_else(|| account_missing(ranges, asked), |r| r.account(ranges));
                let c = sum(&counts);
                if c.received < c.expected {
                    let segments = got.map_or(0, |r| r.segments.len());
                    let total = got.map_or(0, |r| r.total);
                    let what = format!(
                        "{} <- {} {kind:?}: {} of {} ({} in all, {segments} segments)",
                        s.index, p.index, c.received, c.expected, total
                    );
                    lossy.push((c.expected - c.received, what));
                }
                acc.add(c, got.into_iter().flat_map(Received::latency), true);
                total.add(c, got.into_iter().flat_map(Received::latency), true);
                if kind == Kind::Video {
                    switches += got.map_or(0, |r| r.segments.len().saturating_sub(1) as u64);
                    for (l, (count, acc)) in counts.iter().zip(by_layer.iter_mut()).enumerate() {
                        let latency = got.and_then(|r| r.layer_latency.get(l)).and_then(Option::as_ref);
                        acc.add(*count, latency, false);
                    }
                }
            }
        }
    }
    let w = i.window_seconds;
    let (audio, video, total) = (audio.finish(w), video.finish(w), total.finish(w));
    let layer_flows: Vec<LayerFlow> = by_layer
        .into_iter()
        .zip(layers)
        .zip(layer_sent)
        .map(|((acc, layer), (sent, keyframes_sent, keyframe_requests))| {
            let f = acc.finish(w);
            LayerFlow {
                layer: layer.clone(),
                sent,
                keyframes_sent,
                keyframe_requests,
                forwarded_streams: f.forwarded_streams,
                expected: f.expected,
                received: f.received,
                loss_percent: f.loss_percent,
                received_per_sec: f.received_per_sec,
                latency: f.latency,
            }
        })
        .collect();
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
    let active_speaker = Speakers {
        events: i.outcomes.iter().map(|o| o.heard.active_speaker_events).sum(),
        distinct_speakers: i.outcomes.iter().map(|o| o.heard.speakers.len() as u64).max().unwrap_or(0),
    };
    lossy.sort_by_key(|l| std::cmp::Reverse(l.0));
    let lossy_streams = lossy.into_iter().take(20).map(|(_, s)| s).collect();
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
        keyframes_sent: layer_flows.iter().map(|l| l.keyframes_sent).sum(),
        keyframe_requests: layer_flows.iter().map(|l| l.keyframe_requests).sum(),
        layers: layer_flows,
        layer_switches: switches,
        audio_payload_bytes: audio_bytes as f64 / audio_packets.max(1) as f64,
        active_speaker,
        cpu,
        offers: i.outcomes.iter().map(|o| o.offers).sum(),
        write_errors,
        duplicates,
        lossy_streams,
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
    for l in r.lossy_streams.iter().take(10) {
        println!("  lossy      participant {l}");
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
    for l in &r.layers {
        let name = if l.layer.rid.is_empty() { "single".to_string() } else { format!("layer {}", l.layer.rid) };
        println!(
            "  {name:<10} {}x{} {} kb/s: sent {} pkts ({} keyframes, {} requests); {} forwarded streams: {} of {} received ({:.0}/s), loss {:.3} %; latency p50 {} p99 {} max {}",
            l.layer.width,
            l.layer.height,
            l.layer.bitrate_bps / 1000,
            l.sent,
            l.keyframes_sent,
            l.keyframe_requests,
            l.forwarded_streams,
            l.received,
            l.expected,
            l.received_per_sec,
            l.loss_percent,
            ms(l.latency.p50_us),
            ms(l.latency.p99_us),
            ms(l.latency.max_us)
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
        "  media      {} keyframes sent, {} keyframe requests, {} layer switches, {} write errors, {} duplicates; audio {:.0} B per packet; {} active speaker events, up to {} speakers named",
        r.keyframes_sent,
        r.keyframe_requests,
        r.layer_switches,
        r.write_errors,
        r.duplicates,
        r.audio_payload_bytes,
        r.active_speaker.events,
        r.active_speaker.distinct_speakers
    );
}
