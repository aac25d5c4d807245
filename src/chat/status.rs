//! Online / away / offline for chat users, cluster-wide, shown only to their matches.
//!
//! A chat device is a socket subscribed to its user's channel `user:{id}` (other sockets of the
//! user, say a back-office tab, neither count nor pay for this). Kept in the `Presence` backend
//! (memory on one node, Redis with TTL in a cluster) under two keys per user that no client can
//! subscribe to: `chat-online:{user}` holds the user's devices that are not away,
//! `chat-away:{user}` those that said away. A user is online
//! while the first has anyone, away while only the second has, offline otherwise. The time a user
//! was last connected is written to the store when their last socket closes.

use std::collections::HashMap;

use super::{protocol::Status, protocol::UserPresence, unix_ms, Chat};
use crate::{errors::HubError, node::Conn, protocol::ClientInfo};

fn online_key(user: &str) -> String {
    format!("chat-online:{user}")
}

fn away_key(user: &str) -> String {
    format!("chat-away:{user}")
}

impl Chat {
    /// The user's status from the presence backend (no last seen).
    pub(super) async fn status_kind(&self, user: &str) -> Result<Status, HubError> {
        let presence = &self.node.presence;
        if !presence.members(&online_key(user)).await?.is_empty() {
            return Ok(Status::Online);
        }
        if !presence.members(&away_key(user)).await?.is_empty() {
            return Ok(Status::Away);
        }
        Ok(Status::Offline)
    }

    /// Status and last seen of each of `users`.
    pub(super) async fn statuses(&self, users: &[String]) -> Result<HashMap<String, UserPresence>, HubError> {
        let mut kinds = Vec::with_capacity(users.len());
        for u in users {
            kinds.push(self.status_kind(u).await?);
        }
        let offline: Vec<String> =
            users.iter().zip(&kinds).filter(|(_, k)| **k == Status::Offline).map(|(u, _)| u.clone()).collect();
        let seen = if offline.is_empty() { HashMap::new() } else { self.store.last_seen(&offline).await? };
        let now = unix_ms();
        Ok(users
            .iter()
            .zip(kinds)
            .map(|(u, status)| {
                let last_seen = if status == Status::Offline { seen.get(u).copied() } else { Some(now) };
                (u.clone(), UserPresence { user: u.clone(), status, last_seen })
            })
            .collect())
    }

    /// A socket of `conn.user` subscribed to its user channel.
    pub async fn on_connect(&self, conn: &Conn) {
        let result = async {
            let before = self.status_kind(&conn.user).await?;
            self.node.presence.add(&online_key(&conn.user), &conn.info()).await?;
            if before != Status::Online {
                self.announce_status(&conn.user, Status::Online).await?;
            }
            Ok::<(), HubError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(user = %conn.user, error = %e, "chat status not updated on connect");
        }
    }

    /// A chat device of `conn.user` closed or unsubscribed from its user channel.
    pub async fn on_disconnect(&self, conn: &Conn) {
        let result = async {
            let before = self.status_kind(&conn.user).await?;
            self.node.presence.remove(&online_key(&conn.user), &conn.client).await?;
            self.node.presence.remove(&away_key(&conn.user), &conn.client).await?;
            let after = self.status_kind(&conn.user).await?;
            if after == Status::Offline {
                self.store.set_last_seen(&conn.user, unix_ms()).await?;
            }
            if after != before {
                self.announce_status(&conn.user, after).await?;
            }
            Ok::<(), HubError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(user = %conn.user, error = %e, "chat status not updated on disconnect");
        }
        if self.node.user_connection_count(&conn.user) == 0 {
            self.send_limits.remove(&*conn.user);
        }
    }

    /// `chat.status`: this socket is away, or back.
    pub(super) async fn set_status(&self, conn: &Conn, status: Status) -> Result<Status, HubError> {
        if !conn.is_subscribed(&super::user_channel(&conn.user)) {
            return Err(HubError::new(
                crate::errors::ErrorCode::NotSubscribed,
                "status is a chat device's: subscribe to your user channel first",
            ));
        }
        let info: ClientInfo = conn.info();
        let before = self.status_kind(&conn.user).await?;
        let presence = &self.node.presence;
        match status {
            Status::Away => {
                presence.add(&away_key(&conn.user), &info).await?;
                presence.remove(&online_key(&conn.user), &conn.client).await?;
            }
            Status::Online => {
                presence.add(&online_key(&conn.user), &info).await?;
                presence.remove(&away_key(&conn.user), &conn.client).await?;
            }
            Status::Offline => {
                return Err(HubError::new(
                    crate::errors::ErrorCode::BadRequest,
                    "status is online or away (offline is closing the socket)",
                ))
            }
        }
        let after = self.status_kind(&conn.user).await?;
        if after != before {
            self.announce_status(&conn.user, after).await?;
        }
        Ok(after)
    }

    /// Tells every match of `user` its new status.
    async fn announce_status(&self, user: &str, status: Status) -> Result<(), HubError> {
        let peers = self.store.active_peers(user).await?;
        if peers.is_empty() {
            return Ok(());
        }
        let now = unix_ms();
        let last_seen = Some(now);
        let data = serde_json::to_value(UserPresence { user: user.to_string(), status, last_seen })
            .expect("presence serializes");
        for peer in peers {
            self.node.publish_live(&super::user_channel(&peer), super::protocol::event::PRESENCE, data.clone()).await?;
        }
        Ok(())
    }
}
