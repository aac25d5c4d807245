//! One task per node, not one timer per socket: it walks the connections, pings the quiet ones,
//! and closes those that stopped answering or whose token expired.

use std::{sync::Arc, time::Duration};

use std::sync::atomic::Ordering;

use crate::{auth::now_secs, errors::CloseReason, node::Node};

pub async fn run_heartbeats(node: Arc<Node>) {
    let g = &node.config.gateway;
    let ping_ms = g.ping_interval.as_millis() as u64;
    let dead_ms = ping_ms + g.pong_timeout.as_millis() as u64;
    let tick = (g.ping_interval.min(g.pong_timeout) / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let leeway = node.config.auth.leeway.as_secs();
    let stall_ms = g.write_timeout.as_millis() as u64;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = node.shutdown.cancelled() => return,
        }
        let now = node.now_ms();
        let now_s = now_secs();
        for conn in node.connections() {
            let quiet = now.saturating_sub(conn.last_seen_ms.load(Ordering::Relaxed));
            let writing_since = conn.writing_since_ms.load(Ordering::Relaxed);
            if writing_since != 0 && now.saturating_sub(writing_since) > stall_ms {
                // A socket that has not taken one batch in this long is a slow consumer; its
                // silence is ours (we were not reading while writing), not a missing pong.
                conn.outbox.close(CloseReason::SlowConsumer);
            } else if writing_since != 0 {
                continue;
            } else if quiet > dead_ms {
                conn.outbox.close(CloseReason::NoPong);
            } else if conn.claims().exp + leeway < now_s {
                conn.outbox.close(CloseReason::TokenExpired);
            } else if quiet >= ping_ms && now.saturating_sub(conn.last_ping_ms.load(Ordering::Relaxed)) >= ping_ms {
                conn.last_ping_ms.store(now, Ordering::Relaxed);
                conn.outbox.ping();
            }
        }
    }
}
