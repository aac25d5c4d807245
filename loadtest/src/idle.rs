//! `idle`: N authenticated sockets that do nothing. The figure is the hub's resident memory per
//! socket: (RSS with the sockets up − RSS before) / sockets up.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::conn::Target;
use crate::hubstats::HubStats;
use crate::pool::{self, WorkerPool};
use crate::report::{bytes_signed, mib};
use crate::{bar, phase, sys, IdleArgs};

#[derive(Debug, Serialize)]
struct IdleReport {
    scenario: &'static str,
    urls: Vec<String>,
    codec: crate::conn::CodecArg,
    workers: usize,
    requested: u64,
    connected: u64,
    failed: u64,
    /// Sockets that dropped while held.
    lost: u64,
    errors: Vec<String>,
    connect_seconds: f64,
    /// Hub connections as the hub counts them, with the sockets up.
    hub_connections: u64,
    hub_rss_before_bytes: u64,
    hub_rss_after_bytes: u64,
    /// (after − before) / connected.
    rss_per_connection_bytes: f64,
    /// After the sockets closed again (allocator may keep some).
    hub_rss_after_close_bytes: u64,
    hub_before: HubStats,
    hub_loaded: HubStats,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let c = &args.common;
    sys::raise_nofile_limit();
    for url in &c.urls {
        Target::resolve(url).await?;
    }
    let api = c.api()?;
    let before = api.stats().await?;
    let workers = c.workers();
    let template = c.worker_template(0, "", c.settle + args.hold);
    let plans = pool::plans(c.connections, workers, &template)?;
    let bar = bar(c.connections, "sockets");
    phase(
        &bar,
        format!("idle: {} sockets over {workers} worker(s); hub RSS before {}", c.connections, mib(before.rss_bytes)),
    );
    let started = Instant::now();
    let mut pool = WorkerPool::spawn(&plans).await?;
    let deadline = started + Duration::from_secs(c.connect_timeout + 10);
    let ready = match pool.wait_ready(deadline, 0, &bar).await {
        Ok(r) => r,
        Err(e) => {
            pool.stop(Duration::from_secs(15)).await;
            return Err(e);
        }
    };
    let connect_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // Let the hub finish what the handshakes left behind before reading its RSS.
    let settle_until = Instant::now() + Duration::from_secs_f64(c.settle);
    pool.pump(settle_until, |_| false, |_| {}).await;
    let loaded = api.stats().await?;
    if args.hold > 0.0 {
        let hold_until = Instant::now() + Duration::from_secs_f64(args.hold);
        pool.pump(hold_until, |_| false, |_| {}).await;
    }
    let stats = pool.collect_stats(Duration::from_secs(30)).await;
    pool.stop(Duration::from_secs(20)).await;
    let lost = stats.map(|s| s.iter().map(|w| w.progress.lost).sum()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs_f64(c.settle)).await;
    let after_close = api.stats().await.unwrap_or_default();

    let connected = ready.progress.connected;
    let growth = loaded.rss_bytes as i64 - before.rss_bytes as i64;
    let report = IdleReport {
        scenario: "idle",
        urls: c.urls.clone(),
        codec: c.codec,
        workers,
        requested: c.connections,
        connected,
        failed: ready.progress.failed,
        lost,
        errors: ready.errors,
        connect_seconds,
        hub_connections: loaded.connections,
        hub_rss_before_bytes: before.rss_bytes,
        hub_rss_after_bytes: loaded.rss_bytes,
        rss_per_connection_bytes: if connected > 0 { growth as f64 / connected as f64 } else { 0.0 },
        hub_rss_after_close_bytes: after_close.rss_bytes,
        hub_before: before,
        hub_loaded: loaded,
    };
    if c.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("idle sockets");
        println!(
            "  sockets         {} up, {} failed, {} lost (of {}) in {:.1} s; hub counts {}",
            report.connected,
            report.failed,
            report.lost,
            report.requested,
            report.connect_seconds,
            report.hub_connections
        );
        for e in &report.errors {
            println!("  error           {e}");
        }
        println!(
            "  hub RSS         {} before, {} with sockets ({}), {} after close",
            mib(report.hub_rss_before_bytes),
            mib(report.hub_rss_after_bytes),
            bytes_signed(growth),
            mib(report.hub_rss_after_close_bytes)
        );
        println!(
            "  per connection  {:.0} bytes ({:.2} KiB)",
            report.rss_per_connection_bytes,
            report.rss_per_connection_bytes / 1024.0
        );
    }
    Ok(())
}
