//! `RedisPresence`: channel members shared by every node, each entry with an expiry.
//!
//! A channel has a sorted set `{prefix}:p:{channel}` (client → expiry in ms) and a hash
//! `{prefix}:pi:{channel}` (client → info). Each node refreshes the expiry of its own entries every
//! third of `presence_ttl`; a node that dies stops refreshing, and its users drop out of every
//! list by themselves once their entries expire.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use async_trait::async_trait;
use dashmap::DashMap;

use super::{now_ms, RedisLink};
use crate::{errors::HubError, presence::Presence, protocol::ClientInfo};

const MEMBERS: &str = r#"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
  redis.call('HDEL', KEYS[2], unpack(gone))
end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(live))
"#;

pub struct RedisPresence {
    link: Arc<RedisLink>,
    ttl: Duration,
    members: redis::Script,
    /// This node's own entries, to refresh.
    mine: DashMap<String, HashMap<String, ClientInfo>>,
}

impl RedisPresence {
    pub fn new(link: Arc<RedisLink>, ttl: Duration) -> Arc<RedisPresence> {
        let p = Arc::new(RedisPresence { link, ttl, members: redis::Script::new(MEMBERS), mine: DashMap::new() });
        tokio::spawn(refresh(Arc::downgrade(&p), ttl / 3));
        p
    }

    fn add_cmd(&self, pipe: &mut redis::Pipeline, channel: &str, infos: &[&ClientInfo]) {
        let expiry = now_ms() + self.ttl.as_millis() as u64;
        let (z, h) = (self.link.key("p", channel), self.link.key("pi", channel));
        for info in infos {
            pipe.cmd("ZADD").arg(&z).arg(expiry).arg(&info.client).ignore();
            let encoded = serde_json::to_string(info).unwrap_or_default();
            pipe.cmd("HSET").arg(&h).arg(&info.client).arg(encoded).ignore();
        }
        let keep = (self.ttl.as_millis() as u64) * 2;
        pipe.cmd("PEXPIRE").arg(&z).arg(keep).ignore();
        pipe.cmd("PEXPIRE").arg(&h).arg(keep).ignore();
    }

    async fn run(&self, pipe: redis::Pipeline) -> Result<(), HubError> {
        self.link.query_pipe(&pipe).await
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn add(&self, channel: &str, info: &ClientInfo) -> Result<(), HubError> {
        self.mine.entry(channel.to_string()).or_default().insert(info.client.clone(), info.clone());
        let mut pipe = redis::pipe();
        self.add_cmd(&mut pipe, channel, &[info]);
        self.run(pipe).await
    }

    async fn remove(&self, channel: &str, client: &str) -> Result<(), HubError> {
        self.mine.remove_if_mut(channel, |_, m| {
            m.remove(client);
            m.is_empty()
        });
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(self.link.key("p", channel)).arg(client).ignore();
        pipe.cmd("HDEL").arg(self.link.key("pi", channel)).arg(client).ignore();
        self.run(pipe).await
    }

    async fn members(&self, channel: &str) -> Result<Vec<ClientInfo>, HubError> {
        let mut inv = self.members.prepare_invoke();
        inv.key(self.link.key("p", channel)).key(self.link.key("pi", channel)).arg(now_ms());
        let raw: Vec<Option<String>> = self.link.invoke(&inv).await?;
        let mut list: Vec<ClientInfo> =
            raw.into_iter().flatten().filter_map(|s| serde_json::from_str(&s).ok()).collect();
        list.sort_by(|a, b| (&a.user, &a.client).cmp(&(&b.user, &b.client)));
        Ok(list)
    }
}

async fn refresh(presence: Weak<RedisPresence>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(p) = presence.upgrade() else { return };
        let snapshot: Vec<(String, Vec<ClientInfo>)> =
            p.mine.iter().map(|e| (e.key().clone(), e.value().values().cloned().collect())).collect();
        // A Redis Cluster takes a pipeline only within one slot: one channel at a time there.
        let per_pipe = if p.link.sharded() { 1 } else { 256 };
        for chunk in snapshot.chunks(per_pipe) {
            let mut pipe = redis::pipe();
            for (channel, infos) in chunk {
                let refs: Vec<&ClientInfo> = infos.iter().collect();
                p.add_cmd(&mut pipe, channel, &refs);
            }
            if let Err(e) = p.run(pipe).await {
                tracing::warn!(error = %e, "presence refresh failed");
                break;
            }
        }
    }
}
