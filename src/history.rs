//! Each channel's recent publications, for resume and paging.
//!
//! Contract: `append` gives each publication of a channel the next offset (1, 2, …) of the
//! channel's current epoch, atomically, and returns the publication with its offset. A stream
//! keeps at most `size` publications, none older than `ttl`; a stream left without writes for
//! `ttl` may be dropped, and the next append starts a new epoch. `read` returns what follows a
//! position, oldest first, and says whether that is *everything* that followed it (same epoch,
//! nothing trimmed in between): when not, the client must refetch its state.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::{
    errors::HubError,
    protocol::{Publication, StreamPosition},
};

#[derive(Debug, Clone, Copy)]
pub struct HistoryOptions {
    pub size: usize,
    pub ttl: Duration,
}

#[derive(Debug)]
pub struct HistoryRead {
    pub position: StreamPosition,
    pub publications: Vec<Arc<Publication>>,
    /// True when `publications` holds every publication after the asked position.
    pub complete: bool,
}

impl From<HistoryRead> for crate::protocol::HistoryReply {
    fn from(read: HistoryRead) -> Self {
        crate::protocol::HistoryReply {
            position: read.position,
            publications: read.publications.iter().map(|p| p.view()).collect(),
            complete: read.complete,
        }
    }
}

#[async_trait]
pub trait History: Send + Sync {
    async fn append(
        &self,
        publication: Publication,
        opts: HistoryOptions,
    ) -> Result<(Arc<Publication>, StreamPosition), HubError>;

    /// Publications after `since` (all kept ones when `None`), at most `limit`.
    async fn read(
        &self,
        channel: &str,
        since: Option<&StreamPosition>,
        limit: usize,
        opts: HistoryOptions,
    ) -> Result<HistoryRead, HubError>;

    /// True when `append` also carries the publication to every node, this one included, in
    /// offset order (a shared backend must, or nodes could see a channel's publications out of
    /// order). The node then delivers nothing itself and waits for its copy.
    fn broadcasts(&self) -> bool {
        false
    }
}

pub fn new_epoch() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")[..10].to_string()
}

struct Stream {
    epoch: String,
    top: u64,
    last_write: Instant,
    ttl: Duration,
    entries: VecDeque<(Instant, Arc<Publication>)>,
}

impl Stream {
    fn new() -> Self {
        Stream {
            epoch: new_epoch(),
            top: 0,
            last_write: Instant::now(),
            ttl: Duration::from_secs(300),
            entries: VecDeque::new(),
        }
    }

    fn prune(&mut self, opts: HistoryOptions, now: Instant) {
        while self.entries.len() > opts.size {
            self.entries.pop_front();
        }
        while let Some((at, _)) = self.entries.front() {
            if now.duration_since(*at) > opts.ttl {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition { offset: self.top, epoch: self.epoch.clone() }
    }
}

/// Node-local history. A background sweep drops streams idle for longer than their ttl.
#[derive(Default)]
pub struct MemoryHistory {
    streams: DashMap<Arc<str>, Mutex<Stream>>,
}

impl MemoryHistory {
    pub fn new() -> Arc<Self> {
        let h = Arc::new(MemoryHistory::default());
        let weak = Arc::downgrade(&h);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let Some(h) = weak.upgrade() else { return };
                h.sweep(Instant::now());
            }
        });
        h
    }

    /// Drops streams left without writes for longer than their ttl: all their entries have
    /// expired, and a later append starts a new epoch anyway.
    fn sweep(&self, now: Instant) {
        self.streams.retain(|_, s| {
            let s = s.get_mut();
            now.duration_since(s.last_write) <= s.ttl
        });
    }
}

#[async_trait]
impl History for MemoryHistory {
    async fn append(
        &self,
        mut publication: Publication,
        opts: HistoryOptions,
    ) -> Result<(Arc<Publication>, StreamPosition), HubError> {
        let now = Instant::now();
        let entry = self.streams.entry(publication.channel.clone()).or_insert_with(|| Mutex::new(Stream::new()));
        let mut s = entry.lock();
        if now.duration_since(s.last_write) > opts.ttl && s.top > 0 {
            *s = Stream::new();
        }
        s.top += 1;
        s.last_write = now;
        s.ttl = opts.ttl;
        publication.offset = s.top;
        let publication = Arc::new(publication);
        s.entries.push_back((now, publication.clone()));
        s.prune(opts, now);
        Ok((publication, s.position()))
    }

    async fn read(
        &self,
        channel: &str,
        since: Option<&StreamPosition>,
        limit: usize,
        opts: HistoryOptions,
    ) -> Result<HistoryRead, HubError> {
        let now = Instant::now();
        let entry = self.streams.entry(Arc::from(channel)).or_insert_with(|| Mutex::new(Stream::new()));
        let mut s = entry.lock();
        if now.duration_since(s.last_write) > opts.ttl && s.top > 0 {
            *s = Stream::new();
        }
        s.ttl = opts.ttl;
        s.prune(opts, now);
        let after = match since {
            Some(p) if p.epoch == s.epoch && p.offset <= s.top => p.offset,
            Some(_) => {
                return Ok(HistoryRead { position: s.position(), publications: Vec::new(), complete: false });
            }
            None => 0,
        };
        let first_kept = s.entries.front().map(|(_, p)| p.offset).unwrap_or(s.top + 1);
        let publications: Vec<Arc<Publication>> =
            s.entries.iter().filter(|(_, p)| p.offset > after).take(limit).map(|(_, p)| p.clone()).collect();
        let last = publications.last().map(|p| p.offset).unwrap_or(after);
        let complete = since.is_some() && first_kept <= after + 1 && last == s.top;
        Ok(HistoryRead { position: s.position(), publications, complete })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn publication(n: u64) -> Publication {
        Publication::new(Arc::from("news"), 0, "message".into(), json!(n), None)
    }

    const OPTS: HistoryOptions = HistoryOptions { size: 3, ttl: Duration::from_secs(60) };

    #[tokio::test]
    async fn offsets_and_recovery() {
        let h = MemoryHistory::new();
        let mut pos = None;
        for n in 1..=2 {
            let (p, position) = h.append(publication(n), OPTS).await.unwrap();
            assert_eq!(p.offset, n);
            pos = Some(position);
        }
        let mark = pos.clone().unwrap();
        for n in 3..=4 {
            h.append(publication(n), OPTS).await.unwrap();
        }
        let r = h.read("news", Some(&mark), 100, OPTS).await.unwrap();
        assert!(r.complete);
        assert_eq!(r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![3, 4]);
        // 5 and 6 push 3 and 4's predecessors out: from offset 1 the gap cannot be filled.
        for n in 5..=6 {
            h.append(publication(n), OPTS).await.unwrap();
        }
        let from_one = StreamPosition { offset: 1, epoch: mark.epoch.clone() };
        assert!(!h.read("news", Some(&from_one), 100, OPTS).await.unwrap().complete);
        let wrong_epoch = StreamPosition { offset: 4, epoch: "other".into() };
        assert!(!h.read("news", Some(&wrong_epoch), 100, OPTS).await.unwrap().complete);
        let up_to_date = StreamPosition { offset: 6, epoch: mark.epoch };
        let r = h.read("news", Some(&up_to_date), 100, OPTS).await.unwrap();
        assert!(r.complete && r.publications.is_empty());
    }
}
