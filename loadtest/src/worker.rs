//! The hidden `worker` subcommand: one process holding its share of the sockets, bound to its own
//! source address. It reads its plan and commands on stdin and answers on stdout (see `ipc`).
//! It stops by itself when told, when stdin closes, or when its lifetime is over.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::chat::session::{self as chat, ChatState};
use crate::conn::{self, Target};
use crate::ipc::{self, Command, Event, Progress, WorkerPlan, WorkerStats};
use crate::sys;

/// Distinct failure messages kept for the report.
const MAX_ERRORS: usize = 8;

#[derive(Default)]
pub(crate) struct Counters {
    connected: AtomicU64,
    subscribed: AtomicU64,
    failed: AtomicU64,
    /// Publications received (fanout) or messages from the peer (chat).
    pub(crate) received: AtomicU64,
    lost: AtomicU64,
    pub(crate) unexpected: AtomicU64,
    pub(crate) last_received_us: AtomicU64,
    /// Chat: messages sent, acknowledged, refused.
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl Counters {
    fn progress(&self) -> Progress {
        Progress {
            connected: self.connected.load(Ordering::Relaxed),
            subscribed: self.subscribed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) plan: WorkerPlan,
    targets: Vec<Target>,
    /// Chat: where side B of each pair connects.
    peer_targets: Vec<Target>,
    pub(crate) counters: Counters,
    per_channel: Vec<AtomicU32>,
    /// End-to-end latency: of publications (fanout), of messages to the peer (chat).
    pub(crate) histogram: Mutex<Histogram<u64>>,
    pub(crate) chat: Option<ChatState>,
    server_closes: Mutex<BTreeMap<u16, u64>>,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn note_error(&self, e: &anyhow::Error) {
        let text = format!("{e:#}");
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() < MAX_ERRORS && !errors.contains(&text) {
            errors.push(text);
        }
    }

    fn stats(&self, cpu_start: f64) -> WorkerStats {
        WorkerStats {
            progress: self.counters.progress(),
            histogram: ipc::encode_histogram(&self.histogram.lock().expect("histogram lock")),
            last_received_us: self.counters.last_received_us.load(Ordering::Relaxed),
            server_closes: self.server_closes.lock().expect("closes lock").iter().map(|(c, n)| (*c, *n)).collect(),
            unexpected: self.counters.unexpected.load(Ordering::Relaxed),
            cpu_seconds: sys::own_cpu_seconds() - cpu_start,
            chat: self.chat.as_ref().map(|c| c.stats(self.plan.first)),
        }
    }
}

/// Entry point of the worker process.
pub fn main() -> anyhow::Result<()> {
    let mut first = String::new();
    std::io::stdin().read_line(&mut first).context("reading the plan")?;
    let plan: WorkerPlan = serde_json::from_str(&first).context("parsing the plan")?;
    let limit = sys::raise_nofile_limit();
    if limit < plan.count + 64 {
        eprintln!(
            "loadtest worker {}: open-file limit {limit} is below the {} sockets planned",
            plan.index, plan.count
        );
    }
    let runtime = if plan.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(plan.threads).enable_all().build()?
    };
    runtime.block_on(run(plan))
}

async fn run(plan: WorkerPlan) -> anyhow::Result<()> {
    let cpu_start = sys::own_cpu_seconds();
    let started = Instant::now();
    let lifetime = started + Duration::from_millis(plan.lifetime_ms);
    let mut targets = Vec::new();
    for url in &plan.urls {
        targets.push(Target::resolve(url).await?);
    }
    let mut peer_targets = Vec::new();
    for url in plan.chat.iter().flat_map(|c| &c.peer_urls) {
        peer_targets.push(Target::resolve(url).await?);
    }
    if peer_targets.is_empty() {
        peer_targets = targets.clone();
    }
    let shared = Arc::new(Shared {
        per_channel: (0..plan.channels).map(|_| AtomicU32::new(0)).collect(),
        chat: plan.chat.as_ref().map(|_| ChatState::new(plan.count)),
        targets,
        peer_targets,
        counters: Counters::default(),
        histogram: Mutex::new(ipc::new_histogram()),
        server_closes: Mutex::new(BTreeMap::new()),
        errors: Mutex::new(Vec::new()),
        plan,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(shared.plan.connect_concurrency.max(1)));
    let mut sockets = JoinSet::new();
    for g in shared.plan.first..shared.plan.first + shared.plan.count {
        sockets.spawn(socket(shared.clone(), g, gate.clone(), stop_rx.clone()));
    }

    // Progress every 500 ms; `Ready` once every socket is settled or the deadline passed.
    let connect_deadline = started + Duration::from_millis(shared.plan.connect_deadline_ms);
    let mut ready_sent = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let p = shared.counters.progress();
                ipc::emit(&Event::Progress(p.clone()));
                let settled = p.connected + p.failed >= shared.plan.count;
                if !ready_sent && (settled || Instant::now() >= connect_deadline) {
                    ready_sent = true;
                    ipc::emit(&Event::Ready {
                        progress: p,
                        per_channel: shared
                            .per_channel
                            .iter()
                            .map(|c| c.load(Ordering::Relaxed))
                            .collect(),
                        errors: shared.errors.lock().expect("errors lock").clone(),
                    });
                }
            }
            line = stdin.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<Command>(&line) {
                    Ok(Command::Report) => ipc::emit(&Event::Stats(shared.stats(cpu_start))),
                    Ok(Command::Stop) => break,
                    Ok(Command::Go { start_us }) => {
                        if let Some(chat) = &shared.chat {
                            chat.go(start_us);
                        }
                    }
                    Err(e) => eprintln!("loadtest worker: bad command {line:?}: {e}"),
                },
                // The coordinator is gone: stop.
                Ok(None) | Err(_) => break,
            },
            _ = tokio::time::sleep_until(lifetime) => {
                eprintln!("loadtest worker {}: lifetime over, stopping", shared.plan.index);
                break;
            }
        }
    }
    let _ = stop_tx.send(true);
    // Sockets close in parallel, each within its grace; the whole within a bound.
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while sockets.join_next().await.is_some() {} }).await;
    sockets.abort_all();
    ipc::emit(&Event::Done);
    Ok(())
}

/// How a socket's read loop ended.
pub(crate) enum Ended {
    /// The worker is stopping: close politely.
    Stopped,
    /// The server closed it with this code.
    Closed(u16),
    /// It dropped without a close frame.
    Dropped,
}

/// One socket's life: open (gated), then read (and, in the chat scenario, send) until stopped
/// or closed.
async fn socket(shared: Arc<Shared>, g: u64, gate: Arc<Semaphore>, mut stop: watch::Receiver<bool>) {
    let plan = &shared.plan;
    let codec = plan.codec;
    // Fanout: socket g subscribes to channel g % channels. Chat: to its own user's channel,
    // side A on `urls`, side B on `peer_urls`.
    let fanout_channel = (plan.channels > 0 && plan.chat.is_none()).then(|| g % plan.channels);
    let (target, user, channel) = match &plan.chat {
        Some(chat) => {
            let (pair, side_a) = chat.slot(g);
            let list = if side_a { &shared.targets } else { &shared.peer_targets };
            let user = chat.user(g);
            let channel = format!("user:{user}");
            (&list[(pair % list.len() as u64) as usize], user, Some(channel))
        }
        None => (
            &shared.targets[(g % shared.targets.len() as u64) as usize],
            format!("lt-{g}"),
            fanout_channel.map(|c| format!("{}{c}", plan.channel_prefix)),
        ),
    };
    let opened = {
        let Ok(_permit) = gate.acquire().await else {
            return;
        };
        if *stop.borrow() {
            return;
        }
        let token = conn::token(&plan.secret, user.clone(), plan.token_ttl_secs);
        let subscribes = channel.is_some();
        tokio::time::timeout(
            Duration::from_millis(plan.handshake_timeout_ms),
            conn::open_session(target, Some(IpAddr::V4(plan.source_ip)), codec, plan.read_buffer_bytes, token, channel),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("handshake timed out")))
        .map(|ws| (ws, subscribes))
    };
    let (mut ws, subscribed) = match opened {
        Ok(x) => x,
        Err(e) => {
            shared.note_error(&e);
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    if subscribed {
        shared.counters.subscribed.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(c) = fanout_channel {
        shared.per_channel[c as usize].fetch_add(1, Ordering::Relaxed);
    }
    let ended = if shared.chat.is_some() {
        chat::drive(&mut ws, &shared, g, &user, &mut stop).await
    } else {
        read_publications(&mut ws, &shared, &mut stop).await
    };
    match ended {
        Ended::Stopped => conn::close(ws, Duration::from_secs(2)).await,
        Ended::Closed(code) => {
            *shared.server_closes.lock().expect("closes lock").entry(code).or_default() += 1;
            shared.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
        Ended::Dropped => {
            shared.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Fanout: reads publications until stopped or closed.
async fn read_publications(ws: &mut conn::Ws, shared: &Shared, stop: &mut watch::Receiver<bool>) -> Ended {
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(msg)) => {
                    if let Message::Close(frame) = &msg {
                        return Ended::Closed(frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005));
                    }
                    if let Some(bytes) = conn::frame_bytes(&msg) {
                        on_frame(shared, bytes);
                    }
                }
                Some(Err(_)) | None => return Ended::Dropped,
            },
            _ = stop.changed() => return Ended::Stopped,
        }
    }
}

fn on_frame(shared: &Shared, bytes: &[u8]) {
    let stamp =
        conn::decode(shared.plan.codec, bytes).ok().filter(|f| f.kind == "push").and_then(|f| f.data).and_then(|d| d.t);
    let Some(sent_us) = stamp else {
        shared.counters.unexpected.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let now = sys::now_us();
    shared.histogram.lock().expect("histogram lock").saturating_record(now.saturating_sub(sent_us).max(1));
    shared.counters.received.fetch_add(1, Ordering::Relaxed);
    shared.counters.last_received_us.fetch_max(now, Ordering::Relaxed);
}
