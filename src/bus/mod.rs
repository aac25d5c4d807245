//! Cross-node delivery.
//!
//! Contract: a node publishes each message to the bus *after* delivering it to its own local
//! subscribers; the bus carries it to every other node and hands it to that node's handler.
//! Messages from one node on one channel arrive in the order they were published. Delivery is
//! at most once per node; history (and the client's resume from offsets) covers what a bus
//! outage loses.
//!
//! Every local subscriber calls `subscribe` once and `unsubscribe` once: the bus counts the
//! references and holds one subscription per channel while any remain. `subscribe` returns once
//! messages published anywhere on that channel are sure to reach this node.

mod local;

use std::sync::{Arc, Weak};

use async_trait::async_trait;

pub use local::{LocalBus, LocalBusNetwork};

use crate::{errors::CloseReason, errors::HubError, protocol::ClientInfo, protocol::Publication};

#[derive(Debug, Clone)]
pub enum BusMessage {
    Publication(Arc<Publication>),
    Join {
        channel: Arc<str>,
        info: ClientInfo,
    },
    Leave {
        channel: Arc<str>,
        info: ClientInfo,
    },
    /// Close every socket of this user, on every node.
    DisconnectUser {
        user: String,
        reason: CloseReason,
    },
    /// A ban was recorded (`until`: seconds since the epoch, or until lifted) or lifted.
    Ban {
        user: String,
        until: Option<u64>,
    },
    Unban {
        user: String,
    },
    /// For one node's services alone (meetings route a room's signaling to the node holding it):
    /// every other node drops it.
    Node {
        to: Arc<str>,
        from: Arc<str>,
        payload: Arc<serde_json::Value>,
    },
}

/// A service that takes [`BusMessage::Node`] messages addressed to its node. Messages from one
/// node arrive in the order that node sent them.
pub trait NodeService: Send + Sync {
    fn on_node_message(&self, from: &str, payload: &serde_json::Value);
}

/// What a bus delivers into: the node.
pub trait BusHandler: Send + Sync {
    fn on_bus_message(&self, msg: BusMessage);
}

#[async_trait]
pub trait Bus: Send + Sync {
    /// Attaches the node that receives messages from other nodes. Called once at start.
    fn attach(&self, handler: Weak<dyn BusHandler>);
    /// Joins the node-to-node control traffic (disconnects, bans). Called once after `attach`.
    async fn start(&self) -> Result<(), HubError> {
        Ok(())
    }
    async fn publish(&self, msg: BusMessage) -> Result<(), HubError>;
    async fn subscribe(&self, channel: &str) -> Result<(), HubError>;
    async fn unsubscribe(&self, channel: &str) -> Result<(), HubError>;
    /// False while the bus cannot reach other nodes (health reports degraded).
    fn healthy(&self) -> bool;
}
