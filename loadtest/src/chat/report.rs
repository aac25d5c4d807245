//! The chat scenario's report: JSON with `--json`, else a few readable lines.

use std::collections::BTreeMap;

use serde::Serialize;

use super::pairs::Setup;
use crate::conn::CodecArg;
use crate::hubstats::{HubStats, Sample};
use crate::report::{bytes_signed, mib, ms, Latency};

#[derive(Debug, Serialize)]
pub struct Params {
    /// Side A's hubs.
    pub urls: Vec<String>,
    /// Side B's hubs (empty: the same as side A).
    pub peer_urls: Vec<String>,
    pub apis: Vec<String>,
    pub pairs: u64,
    pub sockets: u64,
    pub one_way: bool,
    pub senders: u64,
    /// Messages per second, all senders together, and per sender.
    pub rate: f64,
    pub per_sender_rate: f64,
    pub duration_seconds: f64,
    /// Messages the schedules call for.
    pub planned: u64,
    pub text_bytes: usize,
    pub codec: CodecArg,
    pub workers: usize,
    pub user_prefix: String,
}

#[derive(Debug, Serialize)]
pub struct Sockets {
    pub connected: u64,
    pub subscribed: u64,
    pub failed: u64,
    /// Sockets the hub closed or that dropped during the run.
    pub lost: u64,
    pub errors: Vec<String>,
    pub connect_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Messages {
    pub planned: u64,
    pub sent: u64,
    /// `chat.send` replies (the message is stored).
    pub acked: u64,
    /// Error replies, in all and by code.
    pub refused: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Sent, but neither acknowledged nor refused by the end of the drain.
    pub unanswered: u64,
    /// `message` pushes from the peer received (each seq once).
    pub delivered: u64,
    /// Σ over pairs and directions of acknowledged − delivered (when positive): lost messages.
    pub missing: u64,
    /// Σ of delivered − acknowledged (when positive).
    pub extra: u64,
    /// Peer messages received again with a seq already seen.
    pub duplicates: u64,
    /// Own messages pushed back to the sender's channel, and how many acknowledged ones were not.
    pub echoed: u64,
    pub echo_missing: u64,
    /// From the start to the last send.
    pub send_seconds: f64,
    /// From the start to the last acknowledgement or delivery.
    pub window_seconds: f64,
    pub sent_per_sec: f64,
    /// Acknowledged per second, from the start to the last acknowledgement.
    pub acked_per_sec: f64,
    /// Delivered per second, from the start to the last delivery.
    pub delivered_per_sec: f64,
}

#[derive(Debug, Serialize)]
pub struct HubFigures {
    /// CPU of every hub in --api over the measured part (start to the end of the drain).
    pub cpu_seconds: f64,
    /// cpu_seconds over window_seconds.
    pub cpu_cores: f64,
    pub cpu_us_per_message: f64,
    pub publications: u64,
    pub deliveries: u64,
    pub rss_before_connections_bytes: u64,
    pub rss_loaded_bytes: u64,
    pub rss_peak_bytes: u64,
    pub rss_after_bytes: u64,
    pub samples: Vec<Sample>,
    pub before: HubStats,
    pub after: HubStats,
}

#[derive(Debug, Serialize)]
pub struct ChatReport {
    pub scenario: &'static str,
    pub params: Params,
    /// When sending started, µs since the epoch (to line up other readings with the run).
    pub start_unix_us: u64,
    pub setup: Setup,
    pub sockets: Sockets,
    pub messages: Messages,
    /// `chat.send` request → reply, at the sender.
    pub ack_latency: Latency,
    /// `chat.send` request → `message` push at the peer.
    pub delivery_latency: Latency,
    pub hub: HubFigures,
    pub server_closes: BTreeMap<u16, u64>,
    /// Pushes other than `message` (presence, match, ...).
    pub other_pushes: u64,
    pub unexpected_frames: u64,
    pub loadgen_cpu_seconds: f64,
    /// Busy cores of the whole machine over the measured part, and what neither the hubs nor
    /// the load generator used.
    pub machine_busy_cores: f64,
    pub other_busy_cores: f64,
}

pub fn print(r: &ChatReport) {
    let p = &r.params;
    println!("chat");
    println!(
        "  setup           {} pairs ({} sockets: {} up, {} failed) in {:.1} s, {} worker(s), codec {:?}; {} matches made, {} reused in {:.1} s",
        p.pairs,
        p.sockets,
        r.sockets.connected,
        r.sockets.failed,
        r.sockets.connect_seconds,
        p.workers,
        p.codec,
        r.setup.created,
        r.setup.existing,
        r.setup.seconds
    );
    if !p.peer_urls.is_empty() {
        println!("  nodes           side A on {:?}, side B on {:?}", p.urls, p.peer_urls);
    }
    for e in &r.sockets.errors {
        println!("  socket error    {e}");
    }
    let m = &r.messages;
    println!(
        "  messages        {} of {} sent in {:.2} s ({:.0}/s, target {}/s{}), {} acked ({:.0}/s), {} refused {:?}, {} unanswered",
        m.sent,
        m.planned,
        m.send_seconds,
        m.sent_per_sec,
        p.rate,
        if p.one_way { ", one way" } else { "" },
        m.acked,
        m.acked_per_sec,
        m.refused,
        m.errors_by_code,
        m.unanswered
    );
    println!(
        "  deliveries      {} delivered ({:.0}/s), {} missing, {} extra, {} duplicates; {} echoes ({} missing)",
        m.delivered, m.delivered_per_sec, m.missing, m.extra, m.duplicates, m.echoed, m.echo_missing
    );
    for (name, l) in [("ack latency", &r.ack_latency), ("delivery", &r.delivery_latency)] {
        println!(
            "  {name:<15} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
    }
    let h = &r.hub;
    println!(
        "  hub CPU         {:.2} s = {:.2} cores; {:.1} µs per message; {} publications, {} deliveries",
        h.cpu_seconds, h.cpu_cores, h.cpu_us_per_message, h.publications, h.deliveries
    );
    println!(
        "  hub RSS         {} before sockets, {} loaded, {} peak, {} after ({} during run)",
        mib(h.rss_before_connections_bytes),
        mib(h.rss_loaded_bytes),
        mib(h.rss_peak_bytes),
        mib(h.rss_after_bytes),
        bytes_signed(h.rss_after_bytes as i64 - h.rss_loaded_bytes as i64)
    );
    println!(
        "  sockets         {} lost, closes {:?}, {} other pushes, {} unexpected frames",
        r.sockets.lost, r.server_closes, r.other_pushes, r.unexpected_frames
    );
    println!(
        "  machine         load generator {:.2} CPU-s; machine {:.2} cores busy, {:.2} by other processes",
        r.loadgen_cpu_seconds, r.machine_busy_cores, r.other_busy_cores
    );
}
