//! What the chat tells the notification service: events for users who are not connected.
//!
//! The chat raises an `OfflineEvent` when a message is stored for a user with no connected socket
//! on any node, or a match is made while one of the pair is offline. The notification service
//! implements `OfflineEvents` to turn them into Web Push / FCM / APNs; until it exists,
//! `ChannelEvents` publishes them on a server-only channel (`chat.offline_channel`) with history,
//! where an app back end can subscribe (role `service`) or page them through the server API.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use super::protocol::ConversationId;
use crate::node::Node;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OfflineEvent {
    NewMessage {
        to: String,
        from: String,
        conversation: ConversationId,
        id: String,
        ts: i64,
        /// The first 100 characters of the text.
        preview: String,
    },
    NewMatch {
        to: String,
        peer: String,
        conversation: ConversationId,
    },
}

impl OfflineEvent {
    pub fn name(&self) -> &'static str {
        match self {
            OfflineEvent::NewMessage { .. } => "new_message",
            OfflineEvent::NewMatch { .. } => "new_match",
        }
    }
}

#[async_trait]
pub trait OfflineEvents: Send + Sync {
    /// Hands the event over; failures are the implementation's to log and count (the message
    /// itself is stored either way and reaches the user at their next sync).
    async fn raise(&self, event: OfflineEvent);
}

/// Publishes each event on a channel (with history) of the hub itself.
pub struct ChannelEvents {
    pub node: Arc<Node>,
    pub channel: String,
}

#[async_trait]
impl OfflineEvents for ChannelEvents {
    async fn raise(&self, event: OfflineEvent) {
        let name = event.name();
        let mut data = serde_json::to_value(&event).expect("offline events serialize");
        if let Some(map) = data.as_object_mut() {
            map.remove("event");
        }
        metrics::counter!("hub_chat_offline_events_total", "event" => name).increment(1);
        if let Err(e) = self.node.publish(&self.channel, Some(name.to_string()), data, None).await {
            tracing::warn!(error = %e, event = name, "offline event not published");
        }
    }
}

/// For `chat.offline_channel = ""`: the operator turned offline events off.
pub struct NoEvents;

#[async_trait]
impl OfflineEvents for NoEvents {
    async fn raise(&self, _event: OfflineEvent) {}
}
