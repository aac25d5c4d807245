//! The hubs' own figures, from `GET /api/v1/stats` on each hub, summed over the hubs.

use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The fields of the hub's `NodeStats` this tool reads (summed over hubs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HubStats {
    pub connections: u64,
    pub subscriptions: u64,
    pub publications: u64,
    pub deliveries: u64,
    pub slow_consumers: u64,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

#[derive(Deserialize)]
struct NodeStats {
    connections: u64,
    subscriptions: u64,
    publications: u64,
    deliveries: u64,
    slow_consumers: u64,
    process: ProcessStats,
}

#[derive(Deserialize)]
struct ProcessStats {
    rss_bytes: u64,
    cpu_seconds: f64,
}

pub struct HubApi {
    client: reqwest::Client,
    bases: Vec<String>,
    key: String,
}

impl HubApi {
    pub fn new(bases: &[String], key: &str) -> anyhow::Result<HubApi> {
        for base in bases {
            let url = reqwest::Url::parse(base).with_context(|| format!("bad --api {base}"))?;
            let host = url.host_str().unwrap_or("");
            let loopback = host == "localhost"
                || host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!("--api {base}: this tool only talks to loopback hubs");
            }
        }
        Ok(HubApi {
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            bases: bases.iter().map(|b| b.trim_end_matches('/').to_string()).collect(),
            key: key.to_string(),
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stats of every hub, summed.
    pub async fn stats(&self) -> anyhow::Result<HubStats> {
        let mut sum = HubStats::default();
        for base in &self.bases {
            let s: NodeStats = self
                .client
                .get(format!("{base}/api/v1/stats"))
                .bearer_auth(&self.key)
                .send()
                .await
                .with_context(|| format!("GET {base}/api/v1/stats"))?
                .error_for_status()?
                .json()
                .await?;
            sum.connections += s.connections;
            sum.subscriptions += s.subscriptions;
            sum.publications += s.publications;
            sum.deliveries += s.deliveries;
            sum.slow_consumers += s.slow_consumers;
            sum.rss_bytes += s.process.rss_bytes;
            sum.cpu_seconds += s.process.cpu_seconds;
        }
        Ok(sum)
    }
}

/// One reading of the hubs' stats during a run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since sampling started.
    pub t: f64,
    pub rss_bytes: u64,
    pub publications: u64,
    pub deliveries: u64,
    pub cpu_seconds: f64,
}

/// Reads the hubs' stats once a second until `stop` is set; the task returns the samples.
pub fn sample_every_second(
    api: std::sync::Arc<HubApi>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Ok(s) = api.stats().await {
                        samples.push(Sample {
                            t: start.elapsed().as_secs_f64(),
                            rss_bytes: s.rss_bytes,
                            publications: s.publications,
                            deliveries: s.deliveries,
                            cpu_seconds: s.cpu_seconds,
                        });
                    }
                }
                _ = stop.changed() => return samples,
            }
        }
    })
}
