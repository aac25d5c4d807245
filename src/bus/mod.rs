//! Cross-node delivery.
//!
//! Contract: a node publishes each message to the bus *after* delivering it to its own local
//! subscribers; the bus carries it to every other node and hands it to that node's handler.
//! Messages from one node on one channel arrive in the order they were published. Delivery is
//! at most once per node; history (and the client's resume from offsets) covers what a bus
//! outage loses. `subscribe`/`unsubscribe` tell the bus which channels this node has local
//! interest in, so a bus can skip carrying messages nobody here wants.

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
}

/// What a bus delivers into: the node.
pub trait BusHandler: Send + Sync {
    fn on_bus_message(&self, msg: BusMessage);
}

#[async_trait]
pub trait Bus: Send + Sync {
    /// Attaches the node that receives messages from other nodes. Called once at start.
    fn attach(&self, handler: Weak<dyn BusHandler>);
    async fn publish(&self, msg: BusMessage) -> Result<(), HubError>;
    async fn subscribe(&self, channel: &str) -> Result<(), HubError>;
    async fn unsubscribe(&self, channel: &str) -> Result<(), HubError>;
    /// False while the bus cannot reach other nodes (health reports degraded).
    fn healthy(&self) -> bool;
}
