//! `fanout`: N subscribers spread over R channels, publishers at a paced total rate. Receivers
//! put each publication's end-to-end latency into an HDR histogram; the hub's own stats give its
//! CPU per delivered frame and its memory before, during (peak) and after the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::{CodecArg, Target};
use crate::hubstats::{HubApi, HubStats};
use crate::ipc::{self, WorkerStats};
use crate::pool::{self, WorkerPool};
use crate::publisher::{PublishPlan, PublishResult, Publishers, Tally, Via};
use crate::report::{bytes_signed, mib, ms, Latency};
use crate::{bar, phase, sys, FanoutArgs};

#[derive(Debug, Serialize)]
struct Params {
    urls: Vec<String>,
    /// Where the publishers connect (empty: the subscribers' hubs).
    publish_urls: Vec<String>,
    publish_apis: Vec<String>,
    connections: u64,
    channels: u64,
    subscribers_per_channel: f64,
    rate: f64,
    duration_seconds: f64,
    count: u64,
    publishers: usize,
    publish_via: Via,
    payload_bytes: usize,
    codec: CodecArg,
    workers: usize,
    /// rate × subscribers per channel.
    target_deliveries_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct Sockets {
    connected: u64,
    subscribed: u64,
    failed: u64,
    /// Subscribers the server closed or that dropped during the run.
    lost: u64,
    errors: Vec<String>,
    connect_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Hub {
    deliveries: u64,
    deliveries_per_sec: f64,
    cpu_seconds: f64,
    /// Average hub cores busy over the window.
    cpu_cores: f64,
    cpu_us_per_delivery: f64,
    /// Deliveries per hub CPU-second (= per core at full use).
    deliveries_per_cpu_second: f64,
    slow_consumers: u64,
    rss_before_connections_bytes: u64,
    rss_loaded_bytes: u64,
    rss_peak_bytes: u64,
    rss_after_bytes: u64,
    /// Once a second during the run: seconds since the first publication, hub RSS, hub
    /// deliveries so far (counted when queued), hub CPU seconds so far.
    samples: Vec<Sample>,
    before: HubStats,
    after: HubStats,
}

#[derive(Debug, Clone, Serialize)]
struct Sample {
    t: f64,
    rss_bytes: u64,
    deliveries: u64,
    cpu_seconds: f64,
}

#[derive(Debug, Serialize)]
struct FanoutReport {
    scenario: &'static str,
    params: Params,
    sockets: Sockets,
    publish: PublishResult,
    /// Σ over channels of acknowledged publications × subscribers.
    expected: u64,
    received: u64,
    /// From the first publication to the last frame received.
    window_seconds: f64,
    received_per_sec: f64,
    latency: Latency,
    hub: Hub,
    server_closes: BTreeMap<u16, u64>,
    unexpected_frames: u64,
    /// CPU seconds of the load generator's processes over the window.
    loadgen_cpu_seconds: f64,
    /// Busy cores of the whole machine over the window, and what neither the hub nor the load
    /// generator used (other processes: a figure well above 0 means a disturbed run).
    machine_busy_cores: f64,
    other_busy_cores: f64,
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let c = &args.common;
    anyhow::ensure!(args.channels > 0, "--channels must be above 0");
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!(args.publishers > 0, "--publishers must be above 0");
    anyhow::ensure!(args.duration > 0.0 && args.duration <= 3600.0, "--duration must be in (0, 3600] seconds");
    sys::raise_nofile_limit();
    let mut targets = Vec::new();
    for url in &c.urls {
        targets.push(Target::resolve(url).await?);
    }
    let mut publish_targets = Vec::new();
    for url in &args.publish_urls {
        publish_targets.push(Target::resolve(url).await?);
    }
    if publish_targets.is_empty() {
        publish_targets = targets.clone();
    }
    let api = Arc::new(c.api()?);
    let publish_api =
        if args.publish_apis.is_empty() { api.clone() } else { Arc::new(HubApi::new(&args.publish_apis, &c.api_key)?) };
    let count = args.count.unwrap_or((args.rate * args.duration).ceil() as u64);
    let workers = c.workers();
    let per_channel_avg = c.connections as f64 / args.channels as f64;
    let params = Params {
        urls: c.urls.clone(),
        publish_urls: args.publish_urls.clone(),
        publish_apis: args.publish_apis.clone(),
        connections: c.connections,
        channels: args.channels,
        subscribers_per_channel: per_channel_avg,
        rate: args.rate,
        duration_seconds: args.duration,
        count,
        publishers: args.publishers,
        publish_via: args.publish_via,
        payload_bytes: args.payload_bytes,
        codec: c.codec,
        workers,
        target_deliveries_per_sec: args.rate * per_channel_avg,
    };
    let plan = PublishPlan {
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        count,
        publishers: args.publishers,
        channels: args.channels,
        channel_prefix: args.channel_prefix.clone(),
        codec: c.codec,
        payload_bytes: args.payload_bytes,
        ack_grace: Duration::from_secs_f64(args.drain.max(1.0)),
    };

    let before = api.stats().await?;
    let template = c.worker_template(args.channels, &args.channel_prefix, args.duration + args.drain + c.settle);
    let plans = pool::plans(c.connections, workers, &template)?;
    let connect_bar = bar(c.connections, "sockets");
    phase(
        &connect_bar,
        format!(
            "fanout: {} subscribers over {} channels, {workers} worker(s); {} pub/s for {} s ≈ {:.0} deliveries/s",
            c.connections, args.channels, args.rate, args.duration, params.target_deliveries_per_sec
        ),
    );
    let started = Instant::now();
    let mut pool = WorkerPool::spawn(&plans).await?;
    let deadline = started + Duration::from_secs(c.connect_timeout + 10);
    let ready = match pool.wait_ready(deadline, args.channels as usize, &connect_bar).await {
        Ok(r) => r,
        Err(e) => {
            pool.stop(Duration::from_secs(15)).await;
            return Err(e);
        }
    };
    let connect_seconds = started.elapsed().as_secs_f64();
    connect_bar.finish_and_clear();
    let publishers = match Publishers::connect(args.publish_via, &plan, &publish_targets, &c.secret).await {
        Ok(p) => p,
        Err(e) => {
            pool.stop(Duration::from_secs(15)).await;
            return Err(e);
        }
    };
    let settle_until = Instant::now() + Duration::from_secs_f64(c.settle);
    pool.pump(settle_until, |_| false, |_| {}).await;

    let run = measure(&mut pool, &api, &publish_api, publishers, &plan, &ready.per_channel, args.drain).await;
    pool.stop(Duration::from_secs(20)).await;
    let run = run?;

    let latency = Latency::from_histogram(&run.histogram);
    let received: u64 = run.worker_stats.iter().map(|w| w.progress.received).sum();
    let last_us = run.worker_stats.iter().map(|w| w.last_received_us).max().unwrap_or(0);
    let window_seconds =
        if last_us > run.start_us { (last_us - run.start_us) as f64 / 1e6 } else { run.publish.send_seconds }
            .max(run.publish.send_seconds)
            .max(1e-3);
    let mut server_closes = BTreeMap::new();
    for w in &run.worker_stats {
        for (code, n) in &w.server_closes {
            *server_closes.entry(*code).or_default() += n;
        }
    }
    let deliveries = run.after.deliveries - run.loaded.deliveries;
    let cpu = run.after.cpu_seconds - run.loaded.cpu_seconds;
    let machine_busy_cores = run.machine_busy / run.machine_seconds.max(1e-3);
    // Worker CPU also counts the report round after the window: a slight overestimate.
    let other_busy_cores = machine_busy_cores - (cpu + run.loadgen_cpu) / run.machine_seconds.max(1e-3);
    let report = FanoutReport {
        scenario: "fanout",
        params,
        sockets: Sockets {
            connected: ready.progress.connected,
            subscribed: ready.progress.subscribed,
            failed: ready.progress.failed,
            lost: run.worker_stats.iter().map(|w| w.progress.lost).sum(),
            errors: ready.errors,
            connect_seconds,
        },
        expected: run.expected,
        received,
        window_seconds,
        received_per_sec: received as f64 / window_seconds,
        latency,
        hub: Hub {
            deliveries,
            deliveries_per_sec: deliveries as f64 / window_seconds,
            cpu_seconds: cpu,
            cpu_cores: cpu / window_seconds,
            cpu_us_per_delivery: if deliveries > 0 { cpu * 1e6 / deliveries as f64 } else { 0.0 },
            deliveries_per_cpu_second: if cpu > 0.0 { deliveries as f64 / cpu } else { 0.0 },
            slow_consumers: run.after.slow_consumers - run.loaded.slow_consumers,
            rss_before_connections_bytes: before.rss_bytes,
            rss_loaded_bytes: run.loaded.rss_bytes,
            rss_peak_bytes: run.rss_peak,
            samples: run.samples,
            rss_after_bytes: run.after.rss_bytes,
            before: run.loaded.clone(),
            after: run.after.clone(),
        },
        publish: run.publish,
        server_closes,
        unexpected_frames: run.worker_stats.iter().map(|w| w.unexpected).sum(),
        loadgen_cpu_seconds: run.loadgen_cpu,
        machine_busy_cores,
        other_busy_cores,
    };
    if c.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

struct Measured {
    publish: PublishResult,
    start_us: u64,
    expected: u64,
    loaded: HubStats,
    after: HubStats,
    rss_peak: u64,
    samples: Vec<Sample>,
    histogram: hdrhistogram::Histogram<u64>,
    worker_stats: Vec<WorkerStats>,
    loadgen_cpu: f64,
    /// Machine busy CPU-seconds over the measured part, and its length in seconds.
    machine_busy: f64,
    machine_seconds: f64,
}

/// The measured part: hub stats, publishing with a progress bar, draining, hub stats again.
async fn measure(
    pool: &mut WorkerPool,
    api: &Arc<HubApi>,
    publish_api: &Arc<HubApi>,
    publishers: Publishers,
    plan: &PublishPlan,
    per_channel: &[u64],
    drain: f64,
) -> anyhow::Result<Measured> {
    let stats_before = pool.collect_stats(Duration::from_secs(30)).await?;
    let worker_cpu_before: f64 = stats_before.iter().map(|w| w.cpu_seconds).sum();
    let received_before: u64 = stats_before.iter().map(|w| w.progress.received).sum();
    let own_cpu_before = sys::own_cpu_seconds();
    let machine_before = sys::machine_cpu_seconds();
    let measure_start = Instant::now();
    let loaded = api.stats().await?;

    // Memory during the run: the hub's stats once a second (bounded by the run's own limits).
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let sampler_api = api.clone();
    let sample_start = Instant::now();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Ok(s) = sampler_api.stats().await {
                        samples.push(Sample {
                            t: sample_start.elapsed().as_secs_f64(),
                            rss_bytes: s.rss_bytes,
                            deliveries: s.deliveries,
                            cpu_seconds: s.cpu_seconds,
                        });
                    }
                }
                _ = stop_rx.changed() => return samples,
            }
        }
    });

    let tally = Tally::new(plan.channels);
    let run_bar = bar((plan.duration.as_secs_f64() * 10.0) as u64, "publish");
    let start_us = sys::now_us();
    let start = Instant::now();
    let publishing = {
        let plan = plan.clone();
        let api = publish_api.clone();
        let tally = tally.clone();
        tokio::spawn(async move { publishers.run(&plan, &api, tally).await })
    };
    let send_end = start + plan.duration;
    let show = |p: &crate::ipc::Progress| {
        run_bar.set_position((start.elapsed().as_secs_f64() * 10.0) as u64);
        run_bar.set_message(format!(
            "sent {} acked {} received {}",
            tally.sent.load(std::sync::atomic::Ordering::Relaxed),
            tally.acked_total(),
            p.received - received_before
        ));
    };
    pool.pump(send_end, |_| publishing.is_finished(), show).await;
    let publish = publishing.await?;
    run_bar.finish_and_clear();

    // Wait for what is still on its way: until every expected frame is in, or the drain ends.
    let expected: u64 =
        tally.acked.iter().zip(per_channel).map(|(a, n)| a.load(std::sync::atomic::Ordering::Relaxed) * n).sum();
    let drain_until = Instant::now() + Duration::from_secs_f64(drain);
    pool.pump(drain_until, |p| p.received - received_before >= expected, |_| {}).await;
    // One more report round so the last counts are current.
    let after = api.stats().await?;
    let machine_after = sys::machine_cpu_seconds();
    let machine_seconds = measure_start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let samples = sampler.await.unwrap_or_default();
    let rss_peak = samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0).max(after.rss_bytes);
    let worker_stats = pool.collect_stats(Duration::from_secs(30)).await?;
    let mut histogram = ipc::new_histogram();
    for w in &worker_stats {
        histogram.add(ipc::decode_histogram(&w.histogram)?)?;
    }
    let worker_cpu_after: f64 = worker_stats.iter().map(|w| w.cpu_seconds).sum();
    let loadgen_cpu = worker_cpu_after - worker_cpu_before + sys::own_cpu_seconds() - own_cpu_before;
    Ok(Measured {
        publish,
        start_us,
        expected,
        loaded,
        after,
        rss_peak,
        samples,
        histogram,
        worker_stats,
        loadgen_cpu,
        machine_busy: machine_after.0 - machine_before.0,
        machine_seconds,
    })
}

fn print_report(r: &FanoutReport) {
    let p = &r.params;
    println!("fanout");
    println!(
        "  setup           {} subscribers ({} up, {} failed) over {} channels ({:.0} each), {} worker(s), codec {:?}",
        p.connections,
        r.sockets.subscribed,
        r.sockets.failed,
        p.channels,
        p.subscribers_per_channel,
        p.workers,
        p.codec
    );
    if !p.publish_urls.is_empty() || !p.publish_apis.is_empty() {
        println!("  publishers on   {:?} {:?} (subscribers on {:?})", p.publish_urls, p.publish_apis, p.urls);
    }
    for e in &r.sockets.errors {
        println!("  socket error    {e}");
    }
    println!(
        "  publish         {} of {} sent via {:?} in {:.2} s ({:.0}/s, target {}/s), {} acked, {} errors",
        r.publish.sent,
        p.count,
        p.publish_via,
        r.publish.send_seconds,
        r.publish.achieved_rate,
        p.rate,
        r.publish.acked,
        r.publish.errors
    );
    if let Some(e) = &r.publish.first_error {
        println!("  publish error   {e}");
    }
    println!(
        "  deliveries      expected {} received {} ({:.2}%), {:.0}/s over {:.2} s (target {:.0}/s)",
        r.expected,
        r.received,
        if r.expected > 0 { r.received as f64 * 100.0 / r.expected as f64 } else { 0.0 },
        r.received_per_sec,
        r.window_seconds,
        p.target_deliveries_per_sec
    );
    let l = &r.latency;
    println!(
        "  latency         p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us)
    );
    let h = &r.hub;
    println!(
        "  hub CPU         {:.2} s = {:.2} cores; {:.2} µs per delivery ({:.0} deliveries per CPU-second); {} deliveries counted",
        h.cpu_seconds, h.cpu_cores, h.cpu_us_per_delivery, h.deliveries_per_cpu_second, h.deliveries
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
        "  losses          {} slow-consumer closes (hub), {} subscribers lost, closes {:?}, {} unexpected frames",
        h.slow_consumers, r.sockets.lost, r.server_closes, r.unexpected_frames
    );
    println!(
        "  machine         load generator {:.2} CPU-s; machine {:.2} cores busy, {:.2} by other processes",
        r.loadgen_cpu_seconds, r.machine_busy_cores, r.other_busy_cores
    );
}
