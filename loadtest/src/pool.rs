//! The coordinator's side of the worker processes: it re-executes this binary with the hidden
//! `worker` subcommand, one process per share of sockets, and talks to each over its pipes.
//! Every wait here has a deadline; a worker that overstays is killed (it is our own child).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use indicatif::ProgressBar;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::ipc::{Command, Event, Progress, WorkerPlan, WorkerStats};

/// What all workers reported once their sockets were up.
#[derive(Debug, Default)]
pub struct Ready {
    pub progress: Progress,
    /// Subscribed sockets per channel, summed over workers.
    pub per_channel: Vec<u64>,
    pub errors: Vec<String>,
}

pub struct WorkerPool {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    /// (worker, event); `None` when its stdout closed.
    events: mpsc::UnboundedReceiver<(usize, Option<Event>)>,
    progress: Vec<Progress>,
    ready: Vec<bool>,
    done: Vec<bool>,
}

impl WorkerPool {
    pub async fn spawn(plans: &[WorkerPlan]) -> anyhow::Result<WorkerPool> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let (tx, events) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for plan in plans {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let mut stdin = child.stdin.take().expect("piped stdin");
            let mut line = serde_json::to_string(plan)?;
            line.push('\n');
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
            let stdout = child.stdout.take().expect("piped stdout");
            let tx = tx.clone();
            let index = plan.index;
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Event>(&line) {
                        Ok(e) => {
                            if tx.send((index, Some(e))).is_err() {
                                return;
                            }
                        }
                        Err(e) => eprintln!("loadtest: worker {index} said {line:?}: {e}"),
                    }
                }
                let _ = tx.send((index, None));
            });
            children.push(child);
            stdins.push(Some(stdin));
        }
        let n = plans.len();
        Ok(WorkerPool {
            children,
            stdins,
            events,
            progress: vec![Progress::default(); n],
            ready: vec![false; n],
            done: vec![false; n],
        })
    }

    /// Progress summed over workers (as of their last report).
    pub fn progress(&self) -> Progress {
        let mut sum = Progress::default();
        for p in &self.progress {
            sum.connected += p.connected;
            sum.subscribed += p.subscribed;
            sum.failed += p.failed;
            sum.received += p.received;
            sum.lost += p.lost;
            sum.sent += p.sent;
            sum.acked += p.acked;
            sum.refused += p.refused;
        }
        sum
    }

    /// Handles one event, or returns None at the deadline.
    async fn next_event(&mut self, deadline: Instant) -> Option<(usize, Option<Event>)> {
        tokio::time::timeout_at(deadline, self.events.recv()).await.ok().flatten()
    }

    fn absorb(&mut self, index: usize, event: &Option<Event>) {
        match event {
            Some(Event::Progress(p)) => self.progress[index] = p.clone(),
            Some(Event::Ready { progress, .. }) => {
                self.progress[index] = progress.clone();
                self.ready[index] = true;
            }
            Some(Event::Stats(s)) => self.progress[index] = s.progress.clone(),
            Some(Event::Done) | None => self.done[index] = true,
        }
    }

    /// Waits until every worker reports `Ready`, showing sockets up on `bar`.
    pub async fn wait_ready(&mut self, deadline: Instant, channels: usize, bar: &ProgressBar) -> anyhow::Result<Ready> {
        let mut ready = Ready { per_channel: vec![0; channels], ..Ready::default() };
        while self.ready.iter().any(|r| !r) {
            let Some((index, event)) = self.next_event(deadline).await else {
                bail!("workers not ready by the connect deadline");
            };
            self.absorb(index, &event);
            match event {
                Some(Event::Ready { per_channel, errors, .. }) => {
                    for (sum, n) in ready.per_channel.iter_mut().zip(per_channel) {
                        *sum += u64::from(n);
                    }
                    for e in errors {
                        if !ready.errors.contains(&e) {
                            ready.errors.push(e);
                        }
                    }
                }
                None => bail!("worker {index} exited before it was ready"),
                _ => {}
            }
            let p = self.progress();
            bar.set_position(p.connected + p.failed);
            bar.set_message(format!("up {} failed {}", p.connected, p.failed));
        }
        ready.progress = self.progress();
        Ok(ready)
    }

    /// Takes in progress reports until `until` (or until `stop_when` holds on the summed
    /// progress), calling `on_progress` after each.
    pub async fn pump(
        &mut self,
        until: Instant,
        mut stop_when: impl FnMut(&Progress) -> bool,
        mut on_progress: impl FnMut(&Progress),
    ) {
        while Instant::now() < until {
            if stop_when(&self.progress()) {
                return;
            }
            let Some((index, event)) = self.next_event(until).await else {
                return;
            };
            self.absorb(index, &event);
            on_progress(&self.progress());
        }
    }

    async fn send(&mut self, index: usize, cmd: &Command) {
        if let Some(stdin) = self.stdins[index].as_mut() {
            let mut line = serde_json::to_string(cmd).expect("commands serialize");
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                self.stdins[index] = None;
            }
        }
    }

    /// Tells every worker to start sending at `start_us` (chat).
    pub async fn go(&mut self, start_us: u64) {
        for i in 0..self.children.len() {
            self.send(i, &Command::Go { start_us }).await;
        }
    }

    /// Asks every worker for its counters and latency histogram.
    pub async fn collect_stats(&mut self, timeout: Duration) -> anyhow::Result<Vec<WorkerStats>> {
        let n = self.children.len();
        for i in 0..n {
            self.send(i, &Command::Report).await;
        }
        let deadline = Instant::now() + timeout;
        let mut stats: Vec<Option<WorkerStats>> = (0..n).map(|_| None).collect();
        while stats.iter().any(|s| s.is_none()) {
            let (index, event) =
                self.next_event(deadline).await.ok_or_else(|| anyhow!("workers did not send their stats in time"))?;
            self.absorb(index, &event);
            match event {
                Some(Event::Stats(s)) => stats[index] = Some(s),
                None => bail!("worker {index} exited before sending its stats"),
                _ => {}
            }
        }
        Ok(stats.into_iter().flatten().collect())
    }

    /// Tells every worker to close its sockets and waits (bounded) for them to exit; kills the
    /// ones that do not.
    pub async fn stop(mut self, timeout: Duration) {
        for i in 0..self.children.len() {
            self.send(i, &Command::Stop).await;
            self.stdins[i] = None;
        }
        let deadline = Instant::now() + timeout;
        while self.done.iter().any(|d| !d) {
            let Some((index, event)) = self.next_event(deadline).await else {
                break;
            };
            self.absorb(index, &event);
        }
        for child in &mut self.children {
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!("loadtest: a worker overstayed; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}

/// Splits `connections` sockets over `workers` processes, worker k binding to 127.0.0.(2+k).
pub fn plans(connections: u64, workers: usize, template: &WorkerPlan) -> anyhow::Result<Vec<WorkerPlan>> {
    if workers == 0 || workers > 250 {
        bail!("--workers must be 1..=250 (one source address 127.0.0.(2+k) each)");
    }
    let base = connections / workers as u64;
    let extra = connections % workers as u64;
    let mut first = 0;
    let mut plans = Vec::new();
    for k in 0..workers {
        let count = base + u64::from((k as u64) < extra);
        plans.push(WorkerPlan {
            index: k,
            source_ip: std::net::Ipv4Addr::new(127, 0, 0, 2 + k as u8),
            first,
            count,
            ..template.clone()
        });
        first += count;
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::CodecArg;

    #[test]
    fn plans_cover_every_socket_once() {
        let template = WorkerPlan {
            index: 0,
            source_ip: std::net::Ipv4Addr::LOCALHOST,
            urls: vec!["ws://127.0.0.1:1/ws".into()],
            first: 0,
            count: 0,
            channels: 10,
            channel_prefix: "bench:".into(),
            codec: CodecArg::Json,
            secret: "s".into(),
            token_ttl_secs: 60,
            connect_concurrency: 1,
            handshake_timeout_ms: 1,
            connect_deadline_ms: 1,
            lifetime_ms: 1,
            read_buffer_bytes: 1024,
            threads: 1,
            chat: None,
        };
        let p = plans(19_001, 3, &template).unwrap();
        assert_eq!(p.iter().map(|w| w.count).sum::<u64>(), 19_001);
        assert_eq!(p[1].first, p[0].count);
        assert_eq!(p[2].source_ip, std::net::Ipv4Addr::new(127, 0, 0, 4));
        assert!(plans(1, 0, &template).is_err());
    }
}
