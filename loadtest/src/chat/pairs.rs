//! Before the run: one match per pair through the server API (`POST /api/v1/matches`), a bounded
//! number of requests in flight. A match that already exists (a rerun with the same users) is
//! returned as it is and reused.

use std::time::Duration;

use anyhow::{anyhow, bail};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::hubstats::HubApi;

#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Where the matches were made.
    pub api: String,
    pub pairs: u64,
    pub created: u64,
    /// Matches that existed already (same users).
    pub existing: u64,
    pub seconds: f64,
    pub concurrency: usize,
    /// Conversation id of pair p at index p.
    #[serde(skip)]
    pub conversations: Vec<i64>,
}

#[derive(Deserialize)]
struct MatchView {
    id: i64,
    #[serde(default)]
    created: bool,
}

/// Creates the match of every pair (`users(p)`), `concurrency` requests at a time, each within
/// the client's timeout; fails if any of them fails.
pub async fn create(
    api: &HubApi,
    base: &str,
    pairs: u64,
    users: impl Fn(u64) -> (String, String),
    concurrency: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Setup> {
    let started = Instant::now();
    let url = format!("{}/api/v1/matches", base.trim_end_matches('/'));
    let requests = (0..pairs).map(|p| {
        let (a, b) = users(p);
        let request = api.client().post(&url).bearer_auth(api.key()).json(&json!({ "users": [a, b] }));
        async move {
            let response = request.send().await.map_err(|e| anyhow!("pair {p}: {e}"))?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                bail!("pair {p}: HTTP {status}: {body}");
            }
            let view: MatchView = response.json().await.map_err(|e| anyhow!("pair {p}: {e}"))?;
            Ok::<_, anyhow::Error>((p, view))
        }
    });
    let mut results = futures_util::stream::iter(requests).buffer_unordered(concurrency.max(1));
    let mut conversations = vec![0i64; pairs as usize];
    let (mut created, mut existing, mut failed) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    // Bounded: each request has the client's timeout, and the whole has one too.
    let limit = Duration::from_secs(60) + Duration::from_millis(pairs * 50 / concurrency.max(1) as u64);
    let drained = tokio::time::timeout(limit, async {
        while let Some(result) = results.next().await {
            match result {
                Ok((p, view)) => {
                    conversations[p as usize] = view.id;
                    if view.created {
                        created += 1;
                    } else {
                        existing += 1;
                    }
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
            bar.inc(1);
        }
    })
    .await;
    if drained.is_err() {
        bail!("creating {pairs} matches took longer than {limit:?}");
    }
    if let Some(e) = first_error {
        bail!("{failed} of {pairs} matches could not be created; first: {e:#}");
    }
    Ok(Setup {
        api: base.to_string(),
        pairs,
        created,
        existing,
        seconds: started.elapsed().as_secs_f64(),
        concurrency,
        conversations,
    })
}
