//! `RedisRegistry`: each node writes `{prefix}:{nodes}:{id}` (its `NodeInfo`, expiring after
//! `node_ttl`) and its id in the sorted set `{prefix}:{nodes}` (score: expiry in ms) every third of
//! the ttl. Listing reads the ids whose expiry is ahead and their infos.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use async_trait::async_trait;

use super::{now_ms, RedisLink};
use crate::{
    errors::HubError,
    node::Node,
    registry::{NodeInfo, Registry},
};

pub struct RedisRegistry {
    link: Arc<RedisLink>,
    node: Weak<Node>,
    address: String,
    ttl: Duration,
}

impl RedisRegistry {
    /// Starts heartbeats for `node` and returns the registry.
    pub fn start(link: Arc<RedisLink>, node: &Arc<Node>, address: String, ttl: Duration) -> Arc<RedisRegistry> {
        let registry = Arc::new(RedisRegistry { link, node: Arc::downgrade(node), address: address.clone(), ttl });
        tokio::spawn(heartbeat(Arc::downgrade(&registry), Arc::downgrade(node), address, ttl));
        registry
    }

    // One hash tag for all registry keys: one slot in a Redis Cluster, so one pipeline.
    fn set_key(&self) -> String {
        format!("{}:{{nodes}}", self.link.prefix)
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}:{{nodes}}:{id}", self.link.prefix)
    }

    async fn announce(&self, info: &NodeInfo, ttl: Duration) -> Result<(), HubError> {
        let ttl_ms = ttl.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.node_key(&info.id))
            .arg(serde_json::to_string(info).unwrap_or_default())
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        pipe.cmd("ZADD").arg(self.set_key()).arg(now_ms() + ttl_ms).arg(&info.id).ignore();
        pipe.cmd("ZREMRANGEBYSCORE").arg(self.set_key()).arg("-inf").arg(format!("({}", now_ms())).ignore();
        self.link.query_pipe(&pipe).await
    }
}

#[async_trait]
impl Registry for RedisRegistry {
    async fn nodes(&self) -> Result<Vec<NodeInfo>, HubError> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.set_key()).arg(now_ms()).arg("+inf");
        let ids: Vec<String> = self.link.query(&cmd).await?;
        let mut nodes = Vec::new();
        for id in ids {
            let mut get = redis::cmd("GET");
            get.arg(self.node_key(&id));
            let raw: Option<String> = self.link.query(&get).await?;
            if let Some(info) = raw.and_then(|s| serde_json::from_str::<NodeInfo>(&s).ok()) {
                nodes.push(info);
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn announce_now(&self) {
        let Some(node) = self.node.upgrade() else { return };
        let info = NodeInfo::of(&node, &self.address, 0.0);
        if let Err(e) = self.announce(&info, self.ttl).await {
            tracing::warn!(error = %e, "node announcement failed");
        }
    }
}

async fn heartbeat(registry: Weak<RedisRegistry>, node: Weak<Node>, address: String, ttl: Duration) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(std::time::Instant, f64)> = None;
    loop {
        tick.tick().await;
        let (Some(registry), Some(node)) = (registry.upgrade(), node.upgrade()) else { return };
        let cpu = node.stats().process.cpu_seconds;
        let load = match last {
            Some((at, before)) => ((cpu - before) / at.elapsed().as_secs_f64().max(0.001)).max(0.0),
            None => 0.0,
        };
        last = Some((std::time::Instant::now(), cpu));
        let info = NodeInfo::of(&node, &address, load);
        if let Err(e) = registry.announce(&info, ttl).await {
            tracing::warn!(error = %e, "node heartbeat failed");
        }
    }
}
