//! The in-process bus. Nodes built on one `LocalBusNetwork` see each other's messages (several
//! nodes in one process, as tests do); a single node on its own network has nobody to tell.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{Bus, BusHandler, BusMessage};
use crate::errors::HubError;

#[derive(Default)]
pub struct LocalBusNetwork {
    nodes: RwLock<Vec<(u64, Weak<dyn BusHandler>)>>,
    next: std::sync::atomic::AtomicU64,
}

pub struct LocalBus {
    network: Arc<LocalBusNetwork>,
    me: u64,
}

impl LocalBus {
    pub fn new(network: Arc<LocalBusNetwork>) -> Self {
        let me = network.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LocalBus { network, me }
    }
}

#[async_trait]
impl Bus for LocalBus {
    fn attach(&self, handler: Weak<dyn BusHandler>) {
        self.network.nodes.write().push((self.me, handler));
    }

    async fn publish(&self, msg: BusMessage) -> Result<(), HubError> {
        let peers: Vec<Arc<dyn BusHandler>> = {
            let nodes = self.network.nodes.read();
            nodes.iter().filter(|(id, _)| *id != self.me).filter_map(|(_, h)| h.upgrade()).collect()
        };
        for peer in peers {
            peer.on_bus_message(msg.clone());
        }
        Ok(())
    }

    async fn subscribe(&self, _channel: &str) -> Result<(), HubError> {
        Ok(())
    }

    async fn unsubscribe(&self, _channel: &str) -> Result<(), HubError> {
        Ok(())
    }

    fn healthy(&self) -> bool {
        true
    }
}

impl Drop for LocalBus {
    fn drop(&mut self) {
        self.network.nodes.write().retain(|(id, _)| *id != self.me);
    }
}
