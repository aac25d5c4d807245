//! Which nodes are alive, with their load. Contract: `nodes` lists every node that announced
//! itself within the registry's ttl, this one included; a node that stops (or dies) drops out
//! by itself once its last heartbeat expires.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{errors::HubError, node::Node};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    /// Address clients and operators reach it at.
    pub address: String,
    pub connections: usize,
    pub subscriptions: usize,
    pub rss_bytes: u64,
    /// Share of one core the process used since its previous heartbeat.
    pub cpu_load: f64,
    pub draining: bool,
    /// Seconds since the epoch of this heartbeat.
    pub updated_at: u64,
}

impl NodeInfo {
    pub fn of(node: &Node, address: &str, cpu_load: f64) -> NodeInfo {
        let s = node.stats();
        NodeInfo {
            id: node.id.to_string(),
            address: address.to_string(),
            connections: s.connections,
            subscriptions: s.subscriptions,
            rss_bytes: s.process.rss_bytes,
            cpu_load,
            draining: node.shutdown.is_cancelled(),
            updated_at: crate::auth::now_secs(),
        }
    }
}

#[async_trait]
pub trait Registry: Send + Sync {
    async fn nodes(&self) -> Result<Vec<NodeInfo>, HubError>;

    /// Announces this node now (at shutdown: as draining) instead of at its next heartbeat.
    async fn announce_now(&self) {}
}

/// A single node's registry: itself.
pub struct LocalRegistry {
    pub node: Arc<Node>,
    pub address: String,
}

#[async_trait]
impl Registry for LocalRegistry {
    async fn nodes(&self) -> Result<Vec<NodeInfo>, HubError> {
        Ok(vec![NodeInfo::of(&self.node, &self.address, 0.0)])
    }
}
