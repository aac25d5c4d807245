//! The Redis backends of the cluster modes: one multiplexed RESP3 connection per node carries
//! commands, publishes and subscriptions (a single Redis through `ConnectionManager`, a Redis
//! Cluster through its cluster connection with sharded pub/sub). Everything Redis-specific lives
//! in this module; the node sees only the `Bus`, `Presence` and `History` traits.

mod bus;
mod history;
mod presence;
pub mod registry;
pub mod wire;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock, Weak,
    },
    time::Duration,
};

use redis::{aio::ConnectionManager, cluster_async::ClusterConnection, Cmd, FromRedisValue, PushInfo, PushKind};

pub use bus::RedisBus;
pub use history::RedisHistory;
pub use presence::RedisPresence;

use crate::{
    bus::BusHandler,
    config::{ClusterConfig, ClusterMode},
    errors::{ErrorCode, HubError},
};

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A node's link to Redis, shared by its Redis bus, presence, history and registry.
pub struct RedisLink {
    conn: Conn,
    pub prefix: String,
    pub node_id: String,
    sharded: bool,
    healthy: AtomicBool,
    handler: OnceLock<Weak<dyn BusHandler>>,
}

/// Where pushes go before the link exists (the connection is made before the link).
type PushTarget = Arc<OnceLock<Weak<RedisLink>>>;

impl RedisLink {
    pub async fn connect(config: &ClusterConfig, node_id: &str) -> anyhow::Result<Arc<RedisLink>> {
        let target: PushTarget = Arc::new(OnceLock::new());
        let push_target = target.clone();
        let on_push = move |info: PushInfo| -> Result<(), ()> {
            if let Some(link) = push_target.get().and_then(|w| w.upgrade()) {
                link.on_push(info);
            }
            Ok(())
        };
        let timeout = Duration::from_secs(2);
        let (conn, sharded) = match config.mode {
            ClusterMode::Redis => {
                let url = with_resp3(&config.redis_urls[0]);
                let client = redis::Client::open(url.as_str())?;
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_push_sender(on_push)
                    .set_automatic_resubscription()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(2));
                (Conn::Single(client.get_connection_manager_with_config(cfg).await?), false)
            }
            ClusterMode::RedisCluster => {
                let client = redis::cluster::ClusterClient::builder(config.redis_urls.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(on_push)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()?;
                (Conn::Cluster(client.get_async_connection().await?), true)
            }
            ClusterMode::Single => anyhow::bail!("cluster.mode = single uses no Redis"),
        };
        let link = Arc::new(RedisLink {
            conn,
            prefix: config.key_prefix.clone(),
            node_id: node_id.to_string(),
            sharded,
            healthy: AtomicBool::new(true),
            handler: OnceLock::new(),
        });
        let _ = target.set(Arc::downgrade(&link));
        tokio::spawn(watch_health(Arc::downgrade(&link)));
        Ok(link)
    }

    /// True on a Redis Cluster (sharded pub/sub, one slot per pipeline or script).
    pub fn sharded(&self) -> bool {
        self.sharded
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The Redis channel that carries a hub channel. The hash tag keeps a channel's history keys
    /// and its pub/sub channel in one slot of a Redis Cluster.
    pub fn channel_key(&self, channel: &str) -> String {
        format!("{}:c:{{{channel}}}", self.prefix)
    }

    pub fn control_key(&self) -> String {
        format!("{}:control", self.prefix)
    }

    pub fn key(&self, kind: &str, channel: &str) -> String {
        format!("{}:{kind}:{{{channel}}}", self.prefix)
    }

    pub fn publish_command(&self) -> &'static str {
        if self.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, HubError> {
        let result = match self.conn.clone() {
            Conn::Single(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
        };
        result.map_err(|e| self.failed(e))
    }

    pub async fn query_pipe(&self, pipe: &redis::Pipeline) -> Result<(), HubError> {
        let result: redis::RedisResult<()> = match self.conn.clone() {
            Conn::Single(mut c) => pipe.query_async(&mut c).await,
            Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
        };
        result.map_err(|e| self.failed(e))
    }

    pub async fn invoke<T: FromRedisValue>(&self, script: &redis::ScriptInvocation<'_>) -> Result<T, HubError> {
        let result = match self.conn.clone() {
            Conn::Single(mut c) => script.invoke_async(&mut c).await,
            Conn::Cluster(mut c) => script.invoke_async(&mut c).await,
        };
        result.map_err(|e| self.failed(e))
    }

    async fn subscribe(&self, keys: &[String]) -> Result<(), HubError> {
        let result = match self.conn.clone() {
            Conn::Single(mut c) => c.subscribe(keys).await,
            Conn::Cluster(mut c) => {
                // Sharded channels of one SSUBSCRIBE must share a slot: one call each.
                let mut r = Ok(());
                for key in keys {
                    r = c.ssubscribe(key).await;
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
        };
        result.map_err(|e| self.failed(e))
    }

    async fn unsubscribe(&self, keys: &[String]) -> Result<(), HubError> {
        let result = match self.conn.clone() {
            Conn::Single(mut c) => c.unsubscribe(keys).await,
            Conn::Cluster(mut c) => {
                let mut r = Ok(());
                for key in keys {
                    r = c.sunsubscribe(key).await;
                }
                r
            }
        };
        result.map_err(|e| self.failed(e))
    }

    fn failed(&self, e: redis::RedisError) -> HubError {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
            self.healthy.store(false, Ordering::Relaxed);
        }
        HubError::new(ErrorCode::Unavailable, format!("redis: {e}"))
    }

    fn attach(&self, handler: Weak<dyn BusHandler>) {
        let _ = self.handler.set(handler);
    }

    /// Called by the connection's reader for every RESP3 push, in the order Redis sent them.
    fn on_push(&self, info: PushInfo) {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                let Some(redis::Value::BulkString(payload)) = info.data.get(1) else { return };
                let Some(env) = wire::decode(payload) else {
                    tracing::warn!("undecodable bus message ignored");
                    return;
                };
                if env.origin == self.node_id && !env.echo {
                    return;
                }
                let Some(msg) = env.msg.into_bus() else { return };
                if let Some(handler) = self.handler.get().and_then(|h| h.upgrade()) {
                    handler.on_bus_message(msg);
                }
            }
            PushKind::Disconnection => {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::warn!("redis connection lost; delivering on this node only until it is back");
            }
            _ => {}
        }
    }
}

/// Pings Redis every second: a failure marks the link unhealthy (readyz says degraded), and the
/// ping itself drives the reconnection; the first success marks it healthy again.
async fn watch_health(link: Weak<RedisLink>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(link) = link.upgrade() else { return };
        let ok = link.query::<String>(&redis::cmd("PING")).await.is_ok();
        let was = link.healthy.swap(ok, Ordering::Relaxed);
        if ok && !was {
            tracing::info!("redis reachable again; cross-node delivery resumes");
        }
    }
}

fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// Wall-clock milliseconds: expiry scores and entry times shared by every node.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
