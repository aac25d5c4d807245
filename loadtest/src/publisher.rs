//! Publishers: a few WebSocket connections (or the server API) publishing at a paced total rate,
//! bounded by a count and a time limit. Each publication carries its send time; the m-th
//! publication overall goes to channel `m % channels`, so every channel gets its share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hub::protocol::{Op, Request};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::conn::{self, CodecArg, Payload, Target, Ws};
use crate::hubstats::HubApi;
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// `publish` ops over WebSocket connections.
    Ws,
    /// `POST /api/v1/publish`.
    Api,
}

#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// Publications per second, all publishers together.
    pub rate: f64,
    pub duration: Duration,
    /// At most this many publications in all.
    pub count: u64,
    pub publishers: usize,
    pub channels: u64,
    pub channel_prefix: String,
    pub codec: CodecArg,
    /// Size of the publication's data as JSON (`{"t":…,"p":"xx…"}`).
    pub payload_bytes: usize,
    /// How long to wait for the last acknowledgements after the last send.
    pub ack_grace: Duration,
}

impl PublishPlan {
    fn padding(&self) -> String {
        // {"t":1700000000000000,"p":""} is 29 bytes.
        "x".repeat(self.payload_bytes.saturating_sub(29))
    }

    /// How many of the `count` publications publisher `p` of `n` sends (it sends m ≡ p mod n).
    fn share(&self, p: usize) -> u64 {
        let n = self.publishers as u64;
        self.count / n + u64::from((p as u64) < self.count % n)
    }
}

/// Counters shared by a publisher's writer and reader.
pub struct Tally {
    pub sent: AtomicU64,
    pub errors: AtomicU64,
    /// Acknowledged publications per channel.
    pub acked: Vec<AtomicU64>,
    pub first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    pub fn new(channels: u64) -> Arc<Tally> {
        Arc::new(Tally {
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            acked: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            first_error: std::sync::Mutex::new(None),
        })
    }

    pub fn acked_total(&self) -> u64 {
        self.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    fn error(&self, text: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("error lock");
        if first.is_none() {
            *first = Some(text);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishResult {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the first send to the last.
    pub send_seconds: f64,
    pub achieved_rate: f64,
}

/// Publishers, connected before the measurement starts.
pub enum Publishers {
    Ws(Vec<Ws>),
    Api,
}

impl Publishers {
    pub async fn connect(via: Via, plan: &PublishPlan, targets: &[Target], secret: &str) -> anyhow::Result<Publishers> {
        match via {
            Via::Api => Ok(Publishers::Api),
            Via::Ws => {
                let mut socks = Vec::new();
                for p in 0..plan.publishers {
                    let token = conn::token(secret, format!("lt-pub-{p}"), 3600);
                    let ws = tokio::time::timeout(
                        Duration::from_secs(10),
                        conn::open_session(&targets[p % targets.len()], None, plan.codec, 64 * 1024, token, None),
                    )
                    .await
                    .map_err(|_| anyhow::anyhow!("publisher {p}: handshake timed out"))??;
                    socks.push(ws);
                }
                Ok(Publishers::Ws(socks))
            }
        }
    }

    /// Publishes per `plan`; returns when every publisher has sent its share or its time is up,
    /// and the acknowledgements are in (or `ack_grace` has passed).
    pub async fn run(self, plan: &PublishPlan, api: &HubApi, tally: Arc<Tally>) -> PublishResult {
        let start = Instant::now();
        let last_send = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        match self {
            Publishers::Ws(socks) => {
                for (p, ws) in socks.into_iter().enumerate() {
                    tasks.spawn(ws_publisher(p, ws, plan.clone(), start, tally.clone(), last_send.clone()));
                }
            }
            Publishers::Api => {
                for p in 0..plan.publishers {
                    let base = api.bases()[p % api.bases().len()].clone();
                    tasks.spawn(api_publisher(
                        p,
                        api.client().clone(),
                        base,
                        api.key().to_string(),
                        plan.clone(),
                        start,
                        tally.clone(),
                        last_send.clone(),
                    ));
                }
            }
        }
        // Each publisher is bounded by its pacer and its ack grace, but a write can block on a
        // hub that stops reading: the whole is bounded too.
        let limit = plan.duration + plan.ack_grace + Duration::from_secs(10);
        let bounded = tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
        if bounded.is_err() {
            tasks.abort_all();
            tally.error("publishers overran their time limit and were stopped".into());
        }
        let sent = tally.sent.load(Ordering::Relaxed);
        let send_seconds = last_send.load(Ordering::Relaxed) as f64 / 1e6;
        PublishResult {
            sent,
            acked: tally.acked_total(),
            errors: tally.errors.load(Ordering::Relaxed),
            first_error: tally.first_error.lock().expect("error lock").clone(),
            send_seconds,
            achieved_rate: if send_seconds > 0.0 { sent as f64 / send_seconds } else { 0.0 },
        }
    }
}

/// Paces one publisher: calls `send(j, channel)` for its j-th publication as they fall due, in
/// batches (the returned future flushes a batch). Stops at its share or at the time limit.
struct Pacer {
    p: usize,
    n: usize,
    share: u64,
    rate: f64,
    start: Instant,
    end: Instant,
    next: u64,
}

impl Pacer {
    fn new(p: usize, plan: &PublishPlan, start: Instant) -> Pacer {
        Pacer {
            p,
            n: plan.publishers,
            share: plan.share(p),
            rate: plan.rate / plan.publishers as f64,
            start,
            end: start + plan.duration,
            next: 0,
        }
    }

    /// The range of this publisher's publications due now, capped to bound one batch; None when
    /// it is finished.
    fn due(&mut self) -> Option<std::ops::Range<u64>> {
        let now = Instant::now();
        if self.next >= self.share || now >= self.end {
            return None;
        }
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let due = ((self.rate * elapsed) as u64 + 1).min(self.share);
        let from = self.next;
        let to = due.min(from + 2_000);
        self.next = to;
        Some(from..to)
    }

    /// Publication number overall, and its channel.
    fn channel(&self, j: u64, channels: u64) -> u64 {
        (self.p as u64 + self.n as u64 * j) % channels
    }
}

fn publish_request(plan: &PublishPlan, id: u64, channel: u64, padding: &str) -> Request {
    Request {
        id,
        op: Op::Publish {
            channel: format!("{}{channel}", plan.channel_prefix),
            event: None,
            data: serde_json::to_value(Payload { t: sys::now_us(), p: padding }).expect("payload serializes"),
        },
    }
}

async fn ws_publisher(
    p: usize,
    ws: Ws,
    plan: PublishPlan,
    start: Instant,
    tally: Arc<Tally>,
    last_send: Arc<AtomicU64>,
) {
    let (mut sink, mut stream) = ws.split();
    let (sent_tx, mut sent_rx) = watch::channel::<Option<u64>>(None);
    let mut pacer = Pacer::new(p, &plan, start);
    let codec = plan.codec;
    // Request id j+1 is publication j of this publisher, so a reply names its channel.
    let reader_tally = tally.clone();
    let channels = plan.channels;
    let (pp, nn) = (p as u64, plan.publishers as u64);
    let hard_end = start + plan.duration + plan.ack_grace;
    let reader = tokio::spawn(async move {
        let mut answered = 0u64;
        loop {
            if let Some(total) = *sent_rx.borrow() {
                if answered >= total {
                    break;
                }
            }
            tokio::select! {
                msg = stream.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    let Some(bytes) = conn::frame_bytes(&msg) else { continue };
                    let Ok(frame) = conn::decode(codec, bytes) else { continue };
                    let Some(id) = frame.id.filter(|id| *id > 0) else { continue };
                    answered += 1;
                    match frame.kind.as_ref() {
                        "reply" => {
                            let c = (pp + nn * (id - 1)) % channels;
                            reader_tally.acked[c as usize].fetch_add(1, Ordering::Relaxed);
                        }
                        _ => reader_tally.error(format!(
                            "{}: {}",
                            frame.code.as_deref().unwrap_or("?"),
                            frame.message.as_deref().unwrap_or("")
                        )),
                    }
                }
                _ = sent_rx.changed() => {}
                _ = tokio::time::sleep_until(hard_end) => break,
            }
        }
        stream
    });
    let padding = plan.padding();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    'pace: while let Some(range) = pacer.due() {
        if !range.is_empty() {
            for j in range {
                let req = publish_request(&plan, j + 1, pacer.channel(j, plan.channels), &padding);
                if sink.feed(conn::request_message(codec, &req)).await.is_err() {
                    tally.error("publisher socket closed".into());
                    break 'pace;
                }
                sent += 1;
                tally.sent.fetch_add(1, Ordering::Relaxed);
            }
            if sink.flush().await.is_err() {
                tally.error("publisher socket closed".into());
                break;
            }
            last_send.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        tick.tick().await;
    }
    let _ = sent_tx.send(Some(sent));
    if let Ok(stream) = reader.await {
        if let Ok(ws) = sink.reunite(stream) {
            conn::close(ws, Duration::from_secs(1)).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn api_publisher(
    p: usize,
    client: reqwest::Client,
    base: String,
    key: String,
    plan: PublishPlan,
    start: Instant,
    tally: Arc<Tally>,
    last_send: Arc<AtomicU64>,
) {
    const IN_FLIGHT: u32 = 64;
    let mut pacer = Pacer::new(p, &plan, start);
    let padding = plan.padding();
    let url = format!("{base}/api/v1/publish");
    let gate = Arc::new(Semaphore::new(IN_FLIGHT as usize));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while let Some(range) = pacer.due() {
        for j in range {
            let Ok(permit) = gate.clone().acquire_owned().await else {
                return;
            };
            let c = pacer.channel(j, plan.channels);
            let body = json!({
                "channel": format!("{}{c}", plan.channel_prefix),
                "data": Payload { t: sys::now_us(), p: &padding },
            });
            let request = client.post(&url).bearer_auth(&key).json(&body);
            let tally = tally.clone();
            tally.sent.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        tally.acked[c as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => tally.error(format!("HTTP {}", r.status())),
                    Err(e) => tally.error(e.to_string()),
                }
                drop(permit);
            });
        }
        last_send.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        tick.tick().await;
    }
    // Every request in flight finishes (the client has a timeout) or the grace ends.
    let _ = tokio::time::timeout(plan.ack_grace, gate.acquire_many(IN_FLIGHT)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(count: u64, publishers: usize) -> PublishPlan {
        PublishPlan {
            rate: 1000.0,
            duration: Duration::from_secs(1),
            count,
            publishers,
            channels: 7,
            channel_prefix: "bench:".into(),
            codec: CodecArg::Json,
            payload_bytes: 100,
            ack_grace: Duration::from_secs(1),
        }
    }

    #[test]
    fn shares_add_up_and_channels_cycle() {
        let pl = plan(1001, 3);
        assert_eq!((0..3).map(|p| pl.share(p)).sum::<u64>(), 1001);
        let start = Instant::now();
        let pacers: Vec<Pacer> = (0..3).map(|p| Pacer::new(p, &pl, start)).collect();
        // Publication m overall is j-th of publisher m % n and goes to channel m % channels.
        for m in 0..100u64 {
            let (p, j) = ((m % 3) as usize, m / 3);
            assert_eq!(pacers[p].channel(j, 7), m % 7);
        }
    }

    #[test]
    fn payload_has_the_asked_size() {
        let pl = plan(1, 1);
        let data = serde_json::to_vec(&Payload { t: 1_700_000_000_000_000, p: &pl.padding() }).unwrap();
        assert_eq!(data.len(), 100);
    }
}
