//! Who is in a channel.
//!
//! Contract: `add` and `remove` are idempotent per (channel, client); `members` lists every client
//! added and not removed, on every node that shares the backend. A backend shared by several
//! nodes must let a dead node's entries lapse by themselves (TTL); the memory one lives and dies
//! with its node.

use std::collections::HashMap;

use async_trait::async_trait;
use dashmap::DashMap;

use crate::{errors::HubError, protocol::ClientInfo};

#[async_trait]
pub trait Presence: Send + Sync {
    async fn add(&self, channel: &str, info: &ClientInfo) -> Result<(), HubError>;
    async fn remove(&self, channel: &str, client: &str) -> Result<(), HubError>;
    async fn members(&self, channel: &str) -> Result<Vec<ClientInfo>, HubError>;
}

#[derive(Default)]
pub struct MemoryPresence {
    channels: DashMap<String, HashMap<String, ClientInfo>>,
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn add(&self, channel: &str, info: &ClientInfo) -> Result<(), HubError> {
        self.channels.entry(channel.to_string()).or_default().insert(info.client.clone(), info.clone());
        Ok(())
    }

    async fn remove(&self, channel: &str, client: &str) -> Result<(), HubError> {
        self.channels.remove_if_mut(channel, |_, members| {
            members.remove(client);
            members.is_empty()
        });
        Ok(())
    }

    async fn members(&self, channel: &str) -> Result<Vec<ClientInfo>, HubError> {
        let mut list: Vec<ClientInfo> =
            self.channels.get(channel).map(|m| m.values().cloned().collect()).unwrap_or_default();
        list.sort_by(|a, b| (&a.user, &a.client).cmp(&(&b.user, &b.client)));
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn add_remove_list() {
        let p = MemoryPresence::default();
        let a = ClientInfo { user: "a".into(), client: "1".into() };
        let b = ClientInfo { user: "b".into(), client: "2".into() };
        p.add("room", &a).await.unwrap();
        p.add("room", &a).await.unwrap();
        p.add("room", &b).await.unwrap();
        assert_eq!(p.members("room").await.unwrap(), vec![a.clone(), b]);
        p.remove("room", "2").await.unwrap();
        assert_eq!(p.members("room").await.unwrap(), vec![a]);
        p.remove("room", "1").await.unwrap();
        assert!(p.members("room").await.unwrap().is_empty());
        assert!(p.channels.is_empty());
    }
}
