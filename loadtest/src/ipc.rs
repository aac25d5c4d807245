//! The pipe protocol between the coordinator and its worker processes: one JSON object per line.
//! The coordinator writes the worker's `WorkerPlan` as the first line of its stdin, then
//! `Command`s; the worker answers on stdout with `Event`s (its logs go to stderr).

use std::net::Ipv4Addr;

use anyhow::Context;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::conn::CodecArg;

/// Everything a worker needs to open its share of the sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub index: usize,
    /// Its sockets bind here before connecting (127.0.0.(2+index)): ~28k ephemeral ports each.
    pub source_ip: Ipv4Addr,
    /// Hub WebSocket URLs; socket `g` goes to `urls[g % urls.len()]`.
    pub urls: Vec<String>,
    /// Global index of its first socket, and how many it opens.
    pub first: u64,
    pub count: u64,
    /// Socket `g` subscribes to channel `g % channels`; 0 = connect only (idle).
    pub channels: u64,
    pub channel_prefix: String,
    pub codec: CodecArg,
    pub secret: String,
    pub token_ttl_secs: u64,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Per socket: TCP + WebSocket handshake + connect reply + subscribe reply.
    pub handshake_timeout_ms: u64,
    /// The worker reports `Ready` by then even if some sockets are still opening.
    pub connect_deadline_ms: u64,
    /// Hard limit: the worker closes everything and exits after this long, whatever it is told.
    pub lifetime_ms: u64,
    /// tungstenite read buffer of each client socket (allocated eagerly).
    pub read_buffer_bytes: usize,
    /// Tokio worker threads; 1 = current-thread runtime.
    pub threads: usize,
    /// The chat scenario's share of this worker (absent for idle and fanout).
    #[serde(default)]
    pub chat: Option<ChatPlan>,
}

/// A worker's part of the chat scenario. Global socket `g` < `pairs` is side A of pair `g`,
/// socket `pairs + p` is side B of pair `p`; side A connects to `urls`, side B to `peer_urls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatPlan {
    pub pairs: u64,
    /// Conversation (match) id of each of this worker's sockets, in socket order.
    pub conversations: Vec<i64>,
    /// User of side A of pair p is `{user_prefix}{p}a`, side B `{user_prefix}{p}b`.
    pub user_prefix: String,
    pub peer_urls: Vec<String>,
    /// Only side A sends (side B only receives).
    pub one_way: bool,
    /// Messages per second of each sending socket, and how many at most.
    pub per_sender_rate: f64,
    pub per_sender_count: u64,
    /// Sending sockets in all: sender i starts i / senders of a period late, so the total rate
    /// is even.
    pub senders: u64,
    pub duration_ms: u64,
    pub text_bytes: usize,
}

impl ChatPlan {
    /// (pair, side A?) of global socket `g`.
    pub fn slot(&self, g: u64) -> (u64, bool) {
        if g < self.pairs {
            (g, true)
        } else {
            (g - self.pairs, false)
        }
    }

    pub fn user(&self, g: u64) -> String {
        let (pair, a) = self.slot(g);
        format!("{}{pair}{}", self.user_prefix, if a { 'a' } else { 'b' })
    }

    /// Index of socket `g` among the senders, when it sends.
    pub fn sender_index(&self, g: u64) -> Option<u64> {
        match self.slot(g) {
            (pair, true) => Some(pair),
            (pair, false) if !self.one_way => Some(self.pairs + pair),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Send a `Stats` event now.
    Report,
    /// Close every socket, send `Done`, exit.
    Stop,
    /// Chat: start sending at this wall-clock time (µs since the epoch), the same for every
    /// worker.
    Go { start_us: u64 },
}

/// Counters a worker keeps; sent with every progress line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub connected: u64,
    pub subscribed: u64,
    pub failed: u64,
    pub received: u64,
    /// Sockets the server closed, or that dropped, after they were up.
    pub lost: u64,
    /// Chat: messages sent, acknowledged, and refused with an error.
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub acked: u64,
    #[serde(default)]
    pub refused: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Progress(Progress),
    /// Every socket is up (or failed, or the connect deadline passed).
    Ready {
        progress: Progress,
        /// Subscribed sockets per channel (empty when not subscribing).
        per_channel: Vec<u32>,
        /// First few distinct failure messages.
        errors: Vec<String>,
    },
    Stats(WorkerStats),
    Done,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerStats {
    pub progress: Progress,
    /// End-to-end latency in µs, V2-serialized HDR histogram, base64.
    pub histogram: String,
    /// Receive time (µs since the epoch) of the last publication received.
    pub last_received_us: u64,
    /// Close codes sent by the server, with counts (pairs: a JSON map's keys would be strings,
    /// which an internally tagged enum cannot read back as numbers).
    pub server_closes: Vec<(u16, u64)>,
    /// Frames that were neither a publication nor an expected reply.
    pub unexpected: u64,
    pub cpu_seconds: f64,
    /// Chat figures (the histogram above is then the delivery latency).
    #[serde(default)]
    pub chat: Option<ChatStats>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatStats {
    /// Request → reply of `chat.send`, µs, encoded like `histogram`.
    pub ack_histogram: String,
    /// Error replies to `chat.send` by code.
    pub errors: Vec<(String, u64)>,
    /// Peer messages seen twice (same seq).
    pub duplicates: u64,
    /// Pushes on `user:` other than `message` (match, presence, ...).
    pub other_pushes: u64,
    /// Wall clock (µs since the epoch) of the last send and the last acknowledgement.
    pub last_send_us: u64,
    pub last_ack_us: u64,
    /// One entry per socket of this worker.
    pub sockets: Vec<SocketCounts>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SocketCounts {
    pub g: u64,
    pub sent: u64,
    pub acked: u64,
    /// Messages from the peer received as `message` pushes.
    pub delivered: u64,
    /// Its own messages pushed back on its own channel.
    pub echoed: u64,
}

/// A latency histogram in µs: 1 µs to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf).expect("serializing a histogram into memory");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode_histogram(s: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).context("histogram base64")?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|e| anyhow::anyhow!("histogram: {e:?}"))
}

/// One line of JSON on stdout, flushed at once (the coordinator reads line by line).
pub fn emit(event: &Event) {
    use std::io::Write;
    let line = serde_json::to_string(event).expect("events serialize");
    let mut out = std::io::stdout().lock();
    // A closed pipe means the coordinator is gone; the worker notices on stdin and exits.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_round_trip() {
        let mut h = new_histogram();
        for v in [1u64, 250, 999, 12_345, 3_000_000] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h)).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
    }

    #[test]
    fn events_are_one_line() {
        let e = Event::Ready { progress: Progress::default(), per_channel: vec![1, 2], errors: vec!["x".into()] };
        let s = serde_json::to_string(&e).unwrap();
        assert!(!s.contains('\n'));
        let back: Event = serde_json::from_str(&s).unwrap();
        assert!(matches!(back, Event::Ready { per_channel, .. } if per_channel == [1, 2]));
        let c: Command = serde_json::from_str(r#"{"cmd":"stop"}"#).unwrap();
        assert!(matches!(c, Command::Stop));
        let stats = Event::Stats(WorkerStats {
            progress: Progress::default(),
            histogram: encode_histogram(&new_histogram()),
            last_received_us: 1,
            server_closes: vec![(4002, 7)],
            unexpected: 0,
            cpu_seconds: 0.5,
            chat: None,
        });
        let back: Event = serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        assert!(matches!(back, Event::Stats(s) if s.server_closes == [(4002, 7)]));
        let c: Command = serde_json::from_str(r#"{"cmd":"report"}"#).unwrap();
        assert!(matches!(c, Command::Report));
        let go = serde_json::to_string(&Command::Go { start_us: 5 }).unwrap();
        assert!(matches!(serde_json::from_str(&go).unwrap(), Command::Go { start_us: 5 }));
    }

    #[test]
    fn chat_sockets_map_to_pairs_and_senders() {
        let mut plan = ChatPlan {
            pairs: 3,
            conversations: vec![],
            user_prefix: "u".into(),
            peer_urls: vec![],
            one_way: false,
            per_sender_rate: 1.0,
            per_sender_count: 1,
            senders: 6,
            duration_ms: 1,
            text_bytes: 1,
        };
        assert_eq!((plan.user(1), plan.user(4)), ("u1a".to_string(), "u1b".to_string()));
        assert_eq!((plan.slot(5), plan.sender_index(5)), ((2, false), Some(5)));
        plan.one_way = true;
        assert_eq!((plan.sender_index(2), plan.sender_index(3)), (Some(2), None));
    }
}
