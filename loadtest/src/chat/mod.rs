//! `chat`: N matched pairs of users, each user one socket subscribed to its own `user:{id}`.
//! The matches are made through the server API first; then the senders (both sides of every
//! pair, or side A only with `--one-way`) send `chat.send` at a paced total rate. Each message's
//! `client_id` carries its send time, so the worker that gets the reply records the ack latency
//! and the worker that holds the peer records the delivery latency (send → `message` push).
//! Acknowledged messages are counted against deliveries per pair and direction: what was
//! acknowledged but never pushed to the peer is reported as missing.
//!
//! Side A connects to `--url`, side B to `--peer-url` (default the same), so with two nodes of
//! a cluster every message crosses nodes.

mod pairs;
mod report;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::Target;
use crate::hubstats::{self, HubApi};
use crate::ipc::{self, ChatPlan, SocketCounts};
use crate::pool::{self, WorkerPool};
use crate::report::Latency;
use crate::{bar, phase, sys, ChatArgs};

use self::report::{ChatReport, HubFigures, Messages, Params, Sockets};

/// Sending starts this long after the command goes out, so every worker starts together.
const START_DELAY: Duration = Duration::from_millis(300);

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.pairs > 0, "--pairs must be above 0");
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!(args.duration > 0.0 && args.duration <= 3600.0, "--duration must be in (0, 3600] seconds");
    anyhow::ensure!(args.text_bytes > 0, "--text-bytes must be above 0");
    let mut c = args.common.clone();
    c.connections = 2 * args.pairs;
    sys::raise_nofile_limit();
    for url in c.urls.iter().chain(&args.peer_urls) {
        Target::resolve(url).await?;
    }
    let api = Arc::new(c.api()?);
    let match_base = args.match_api.clone().unwrap_or_else(|| api.bases()[0].clone());
    let match_api = HubApi::new(std::slice::from_ref(&match_base), &c.api_key)?;
    let user_prefix = args.user_prefix.clone().unwrap_or_else(|| format!("lt{}-", sys::now_us() / 1_000_000));
    let senders = if args.one_way { args.pairs } else { 2 * args.pairs };
    let per_sender_rate = args.rate / senders as f64;
    let per_sender_count = (per_sender_rate * args.duration).ceil() as u64;
    let planned = planned_messages(senders, per_sender_rate, per_sender_count, args.duration);
    let workers = c.workers();
    let params = Params {
        urls: c.urls.clone(),
        peer_urls: args.peer_urls.clone(),
        apis: c.apis.clone(),
        pairs: args.pairs,
        sockets: c.connections,
        one_way: args.one_way,
        senders,
        rate: args.rate,
        per_sender_rate,
        duration_seconds: args.duration,
        planned,
        text_bytes: args.text_bytes,
        codec: c.codec,
        workers,
        user_prefix: user_prefix.clone(),
    };

    let before = api.stats().await?;
    let setup_bar = bar(args.pairs, "matches");
    phase(&setup_bar, format!("chat: creating {} matches through {match_base}", args.pairs));
    let users = |p: u64| (format!("{user_prefix}{p}a"), format!("{user_prefix}{p}b"));
    let setup = pairs::create(&match_api, &match_base, args.pairs, users, args.setup_concurrency, &setup_bar).await?;
    setup_bar.finish_and_clear();

    let template = c.worker_template(0, "", args.duration + args.drain + c.settle);
    let mut plans = pool::plans(c.connections, workers, &template)?;
    for plan in &mut plans {
        let mut chat = ChatPlan {
            pairs: args.pairs,
            conversations: Vec::new(),
            user_prefix: user_prefix.clone(),
            peer_urls: args.peer_urls.clone(),
            one_way: args.one_way,
            per_sender_rate,
            per_sender_count,
            senders,
            duration_ms: (args.duration * 1000.0) as u64,
            text_bytes: args.text_bytes,
        };
        chat.conversations =
            (plan.first..plan.first + plan.count).map(|g| setup.conversations[chat.slot(g).0 as usize]).collect();
        plan.chat = Some(chat);
    }
    let connect_bar = bar(c.connections, "sockets");
    phase(
        &connect_bar,
        format!(
            "chat: {} pairs ({} sockets, {workers} worker(s)); {senders} senders, {} msg/s in all for {} s",
            args.pairs, c.connections, args.rate, args.duration
        ),
    );
    let started = Instant::now();
    let mut pool = WorkerPool::spawn(&plans).await?;
    let deadline = started + Duration::from_secs(c.connect_timeout + 10);
    let ready = match pool.wait_ready(deadline, 0, &connect_bar).await {
        Ok(r) => r,
        Err(e) => {
            pool.stop(Duration::from_secs(15)).await;
            return Err(e);
        }
    };
    let connect_seconds = started.elapsed().as_secs_f64();
    connect_bar.finish_and_clear();
    let settle_until = Instant::now() + Duration::from_secs_f64(c.settle);
    pool.pump(settle_until, |_| false, |_| {}).await;

    let run = measure(&mut pool, &api, args.duration, args.drain).await;
    pool.stop(Duration::from_secs(20)).await;
    let run = run?;

    let report = build_report(params, setup, before, ready, connect_seconds, run, args.pairs)?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print(&report);
    }
    Ok(())
}

/// Messages the schedules send if nothing holds them back: sender i sends at
/// `(i / senders + k) / rate` for k below `count`, before `duration`.
fn planned_messages(senders: u64, rate: f64, count: u64, duration: f64) -> u64 {
    let period = 1.0 / rate;
    (0..senders)
        .map(|i| {
            let phase = i as f64 / senders as f64 * period;
            let fit = ((duration - phase) / period).ceil().max(0.0) as u64;
            fit.min(count)
        })
        .sum()
}

struct Measured {
    start_us: u64,
    loaded: hubstats::HubStats,
    after: hubstats::HubStats,
    samples: Vec<hubstats::Sample>,
    worker_stats: Vec<ipc::WorkerStats>,
    loadgen_cpu: f64,
    machine_busy: f64,
    machine_seconds: f64,
}

/// The measured part: hub stats, go, the sending window with a progress bar, the drain until
/// every acknowledged message is delivered (or the drain ends), hub stats again.
async fn measure(pool: &mut WorkerPool, api: &Arc<HubApi>, duration: f64, drain: f64) -> anyhow::Result<Measured> {
    let stats_before = pool.collect_stats(Duration::from_secs(30)).await?;
    let worker_cpu_before: f64 = stats_before.iter().map(|w| w.cpu_seconds).sum();
    let own_cpu_before = sys::own_cpu_seconds();
    let machine_before = sys::machine_cpu_seconds();
    let measure_start = Instant::now();
    let loaded = api.stats().await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = hubstats::sample_every_second(api.clone(), stop_rx);

    let start_us = sys::now_us() + START_DELAY.as_micros() as u64;
    let start = Instant::now() + START_DELAY;
    pool.go(start_us).await;
    let run_bar = bar((duration * 10.0) as u64, "chat");
    let show = |p: &ipc::Progress| {
        run_bar.set_position((start.elapsed().as_secs_f64().max(0.0) * 10.0) as u64);
        run_bar
            .set_message(format!("sent {} acked {} refused {} delivered {}", p.sent, p.acked, p.refused, p.received));
    };
    let send_end = start + Duration::from_secs_f64(duration) + Duration::from_millis(100);
    pool.pump(send_end, |_| false, show).await;
    run_bar.finish_and_clear();
    // Everything answered, and every acknowledged message delivered (or the drain is over).
    let drain_until = Instant::now() + Duration::from_secs_f64(drain);
    pool.pump(drain_until, |p| p.acked + p.refused >= p.sent && p.received >= p.acked, |_| {}).await;

    let after = api.stats().await?;
    let machine_after = sys::machine_cpu_seconds();
    let machine_seconds = measure_start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let samples = sampler.await.unwrap_or_default();
    let worker_stats = pool.collect_stats(Duration::from_secs(30)).await?;
    let worker_cpu_after: f64 = worker_stats.iter().map(|w| w.cpu_seconds).sum();
    let loadgen_cpu = worker_cpu_after - worker_cpu_before + sys::own_cpu_seconds() - own_cpu_before;
    Ok(Measured {
        start_us,
        loaded,
        after,
        samples,
        worker_stats,
        loadgen_cpu,
        machine_busy: machine_after.0 - machine_before.0,
        machine_seconds,
    })
}

/// Per pair and direction: acknowledged messages against the peer's deliveries.
#[derive(Debug, Default, PartialEq, Eq)]
struct Balance {
    /// Acknowledged but never pushed to the peer.
    missing: u64,
    /// Pushed to the peer beyond what its sender saw acknowledged (e.g. stored, reply lost).
    extra: u64,
    /// Acknowledged but not pushed back to the sender's own channel.
    echo_missing: u64,
}

fn balance(pairs: u64, sockets: &[SocketCounts]) -> Balance {
    let mut by_g = vec![SocketCounts::default(); (2 * pairs) as usize];
    for s in sockets {
        if let Some(slot) = by_g.get_mut(s.g as usize) {
            *slot = *s;
        }
    }
    let mut b = Balance::default();
    for p in 0..pairs as usize {
        let (a, z) = (by_g[p], by_g[pairs as usize + p]);
        for (from, to) in [(a, z), (z, a)] {
            b.missing += from.acked.saturating_sub(to.delivered);
            b.extra += to.delivered.saturating_sub(from.acked);
        }
        b.echo_missing += a.acked.saturating_sub(a.echoed) + z.acked.saturating_sub(z.echoed);
    }
    b
}

fn build_report(
    params: Params,
    setup: pairs::Setup,
    before: hubstats::HubStats,
    ready: pool::Ready,
    connect_seconds: f64,
    run: Measured,
    pairs: u64,
) -> anyhow::Result<ChatReport> {
    let mut ack_histogram = ipc::new_histogram();
    let mut delivery_histogram = ipc::new_histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut server_closes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut sockets = Vec::new();
    let (mut duplicates, mut other_pushes, mut last_send_us, mut last_ack_us) = (0, 0, 0, 0);
    for w in &run.worker_stats {
        delivery_histogram.add(ipc::decode_histogram(&w.histogram)?)?;
        for (code, n) in &w.server_closes {
            *server_closes.entry(*code).or_default() += n;
        }
        if let Some(chat) = &w.chat {
            ack_histogram.add(ipc::decode_histogram(&chat.ack_histogram)?)?;
            for (code, n) in &chat.errors {
                *errors.entry(code.clone()).or_default() += n;
            }
            duplicates += chat.duplicates;
            other_pushes += chat.other_pushes;
            last_send_us = last_send_us.max(chat.last_send_us);
            last_ack_us = last_ack_us.max(chat.last_ack_us);
            sockets.extend_from_slice(&chat.sockets);
        }
    }
    let sum = |f: fn(&SocketCounts) -> u64| sockets.iter().map(f).sum::<u64>();
    let (sent, acked, delivered, echoed) = (sum(|s| s.sent), sum(|s| s.acked), sum(|s| s.delivered), sum(|s| s.echoed));
    let refused: u64 = errors.values().sum();
    let last_delivery_us = run.worker_stats.iter().map(|w| w.last_received_us).max().unwrap_or(0);
    let secs_since_start = |us: u64| if us > run.start_us { (us - run.start_us) as f64 / 1e6 } else { 0.0 };
    let send_seconds = secs_since_start(last_send_us).max(1e-3);
    let window_seconds = secs_since_start(last_ack_us.max(last_delivery_us)).max(send_seconds);
    let b = balance(pairs, &sockets);
    let messages = Messages {
        planned: params.planned,
        sent,
        acked,
        refused,
        errors_by_code: errors,
        unanswered: sent.saturating_sub(acked + refused),
        delivered,
        missing: b.missing,
        extra: b.extra,
        duplicates,
        echoed,
        echo_missing: b.echo_missing,
        send_seconds,
        window_seconds,
        sent_per_sec: sent as f64 / send_seconds,
        acked_per_sec: acked as f64 / secs_since_start(last_ack_us).max(1e-3),
        delivered_per_sec: delivered as f64 / secs_since_start(last_delivery_us).max(1e-3),
    };
    let cpu = run.after.cpu_seconds - run.loaded.cpu_seconds;
    let rss_peak = run.samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0).max(run.after.rss_bytes);
    let hub = HubFigures {
        cpu_seconds: cpu,
        cpu_cores: cpu / window_seconds,
        cpu_us_per_message: if acked > 0 { cpu * 1e6 / acked as f64 } else { 0.0 },
        publications: run.after.publications.saturating_sub(run.loaded.publications),
        deliveries: run.after.deliveries.saturating_sub(run.loaded.deliveries),
        rss_before_connections_bytes: before.rss_bytes,
        rss_loaded_bytes: run.loaded.rss_bytes,
        rss_peak_bytes: rss_peak,
        rss_after_bytes: run.after.rss_bytes,
        samples: run.samples,
        before: run.loaded.clone(),
        after: run.after.clone(),
    };
    let machine_busy_cores = run.machine_busy / run.machine_seconds.max(1e-3);
    let other_busy_cores = machine_busy_cores - (cpu + run.loadgen_cpu) / run.machine_seconds.max(1e-3);
    Ok(ChatReport {
        scenario: "chat",
        params,
        start_unix_us: run.start_us,
        setup,
        sockets: Sockets {
            connected: ready.progress.connected,
            subscribed: ready.progress.subscribed,
            failed: ready.progress.failed,
            lost: run.worker_stats.iter().map(|w| w.progress.lost).sum(),
            errors: ready.errors,
            connect_seconds,
        },
        messages,
        ack_latency: Latency::from_histogram(&ack_histogram),
        delivery_latency: Latency::from_histogram(&delivery_histogram),
        hub,
        server_closes,
        other_pushes,
        unexpected_frames: run.worker_stats.iter().map(|w| w.unexpected).sum(),
        loadgen_cpu_seconds: run.loadgen_cpu,
        machine_busy_cores,
        other_busy_cores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_is_rate_times_duration() {
        // 1,000 senders at 5/s for 20 s.
        assert_eq!(planned_messages(1000, 5.0, 100, 20.0), 100_000);
        // 3 senders at 2/s for 1.1 s start at 0, 1/6 and 1/3 s: 3 + 2 + 2 sends before 1.1 s.
        assert_eq!(planned_messages(3, 2.0, 3, 1.1), 7);
        assert_eq!(planned_messages(3, 2.0, 2, 1.1), 6);
    }

    #[test]
    fn balance_counts_each_direction() {
        let s = |g, acked, delivered, echoed| SocketCounts { g, sent: acked, acked, delivered, echoed };
        // Pair 0: A acked 5, B got 4 of them; B acked 3, A got 3. Pair 1: clean, one echo short.
        let sockets = [s(0, 5, 3, 5), s(2, 3, 4, 3), s(1, 2, 2, 2), s(3, 2, 2, 1)];
        assert_eq!(balance(2, &sockets), Balance { missing: 1, extra: 0, echo_missing: 1 });
    }
}
