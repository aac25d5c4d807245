//! `RedisBus`: channels carried over Redis pub/sub (sharded in a Redis Cluster).
//!
//! Each local subscriber takes a reference on its channel; the node holds one Redis
//! subscription per channel with any local subscriber. One task owns SUBSCRIBE/UNSUBSCRIBE: it
//! batches what queued up and always reconciles with the current reference counts, so racing
//! subscribes and unsubscribes can never leave the node subscribed to nothing or to too much.
//! `subscribe` returns only once Redis confirmed the subscription: from then on nothing
//! published on any node can pass this node by.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::{wire, RedisLink};
use crate::{
    bus::{Bus, BusHandler, BusMessage},
    errors::{ErrorCode, HubError},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Active,
    Failed,
}

struct Entry {
    refs: usize,
    active: bool,
    status: watch::Sender<Status>,
}

type Table = Arc<Mutex<HashMap<String, Entry>>>;

pub struct RedisBus {
    link: Arc<RedisLink>,
    table: Table,
    changes: mpsc::Sender<String>,
}

impl RedisBus {
    pub fn new(link: Arc<RedisLink>) -> RedisBus {
        let table: Table = Arc::default();
        let (changes, rx) = mpsc::channel(65_536);
        tokio::spawn(reconcile(link.clone(), table.clone(), rx, changes.downgrade()));
        RedisBus { link, table, changes }
    }

    async fn take_ref(&self, key: String) -> Result<(), HubError> {
        let mut status = {
            let mut table = self.table.lock();
            let entry = table.entry(key.clone()).or_insert_with(|| Entry {
                refs: 0,
                active: false,
                status: watch::Sender::new(Status::Pending),
            });
            entry.refs += 1;
            if entry.active {
                return Ok(());
            }
            if *entry.status.borrow() == Status::Failed {
                entry.status.send_replace(Status::Pending);
            }
            entry.status.subscribe()
        };
        self.changes.send(key).await.map_err(|_| HubError::new(ErrorCode::Unavailable, "bus is shutting down"))?;
        let outcome = status.wait_for(|s| *s != Status::Pending).await.map(|s| *s);
        match outcome {
            Ok(Status::Active) => Ok(()),
            _ => Err(HubError::new(ErrorCode::Unavailable, "redis subscription failed; try again")),
        }
    }

    async fn drop_ref(&self, key: String) {
        let idle = {
            let mut table = self.table.lock();
            match table.get_mut(&key) {
                Some(entry) => {
                    entry.refs = entry.refs.saturating_sub(1);
                    entry.refs == 0
                }
                None => false,
            }
        };
        if idle {
            let _ = self.changes.send(key).await;
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn attach(&self, handler: Weak<dyn BusHandler>) {
        self.link.attach(handler);
    }

    async fn start(&self) -> Result<(), HubError> {
        self.take_ref(self.link.control_key()).await
    }

    async fn publish(&self, msg: BusMessage) -> Result<(), HubError> {
        let key = match &msg {
            BusMessage::Publication(p) => self.link.channel_key(&p.channel),
            BusMessage::Join { channel, .. } | BusMessage::Leave { channel, .. } => self.link.channel_key(channel),
            BusMessage::DisconnectUser { .. }
            | BusMessage::Ban { .. }
            | BusMessage::Unban { .. }
            | BusMessage::Node { .. } => self.link.control_key(),
        };
        let env = wire::Envelope { origin: self.link.node_id.clone(), echo: false, msg: wire::WireMsg::from_bus(&msg) };
        let mut cmd = redis::cmd(self.link.publish_command());
        cmd.arg(key).arg(wire::encode(&env));
        self.link.query::<i64>(&cmd).await.map(|_| ())
    }

    async fn subscribe(&self, channel: &str) -> Result<(), HubError> {
        self.take_ref(self.link.channel_key(channel)).await
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), HubError> {
        self.drop_ref(self.link.channel_key(channel)).await;
        Ok(())
    }

    fn healthy(&self) -> bool {
        self.link.healthy()
    }
}

/// The one task that talks SUBSCRIBE/UNSUBSCRIBE to Redis.
async fn reconcile(
    link: Arc<RedisLink>,
    table: Table,
    mut rx: mpsc::Receiver<String>,
    requeue: mpsc::WeakSender<String>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        batch.sort();
        batch.dedup();
        let (mut to_sub, mut to_unsub) = (Vec::new(), Vec::new());
        {
            let table = table.lock();
            for key in batch.drain(..) {
                match table.get(&key) {
                    Some(e) if e.refs > 0 && !e.active => to_sub.push(key),
                    Some(e) if e.refs == 0 && e.active => to_unsub.push(key),
                    _ => {}
                }
            }
        }
        if !to_sub.is_empty() {
            let ok = link.subscribe(&to_sub).await.is_ok();
            let mut entries = table.lock();
            for key in &to_sub {
                if let Some(e) = entries.get_mut(key) {
                    e.active = ok;
                    e.status.send_replace(if ok { Status::Active } else { Status::Failed });
                }
            }
            drop(entries);
            to_sub.clear();
        }
        if !to_unsub.is_empty() && link.unsubscribe(&to_unsub).await.is_ok() {
            let mut again = Vec::new();
            let mut table = table.lock();
            for key in to_unsub.drain(..) {
                let wanted = table.get(&key).is_some_and(|e| e.refs > 0);
                if wanted {
                    // Someone subscribed while we unsubscribed: subscribe again.
                    if let Some(e) = table.get_mut(&key) {
                        e.active = false;
                        e.status.send_replace(Status::Pending);
                    }
                    again.push(key);
                } else {
                    table.remove(&key);
                }
            }
            drop(table);
            if let Some(tx) = requeue.upgrade() {
                for key in again {
                    let _ = tx.try_send(key);
                }
            }
        }
    }
}
