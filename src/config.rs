//! Configuration: one TOML file, overridden by `HUB_*` environment variables, overridden by
//! `--set key=value` flags. Every key is documented in `config/default.toml`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    providers::{Env, Format, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Stable id of this node; generated at start when empty.
    pub node_id: String,
    pub listen: SocketAddr,
    /// Enables `/dev/token`. Never on in production.
    pub dev_mode: bool,
    /// Directory served at `/` (the web client); empty disables it.
    pub web_root: PathBuf,
    pub auth: AuthConfig,
    pub api: ApiConfig,
    pub gateway: GatewayConfig,
    pub cluster: ClusterConfig,
    pub store: StoreConfig,
    pub chat: ChatConfig,
    pub media: MediaConfig,
    /// Channel namespaces; a channel `ns:rest` uses namespace `ns`, a channel without `:` the one
    /// named "" (if configured).
    pub namespaces: Vec<NamespaceConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret. Used when set.
    pub hmac_secret: String,
    /// PEM files of RSA public keys (RS256) accepted for tokens.
    pub rsa_public_keys: Vec<PathBuf>,
    /// PEM files of EC P-256 public keys (ES256) accepted for tokens.
    pub ec_public_keys: Vec<PathBuf>,
    /// When set, tokens must carry this `aud`; when empty, `aud` is not checked.
    pub audience: Option<String>,
    /// Allowed clock skew when checking `exp`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Time a new socket has to send its `connect` frame.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer keys accepted by `/api/v1`. Empty disables the server API.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Largest accepted WebSocket message; bigger closes the socket with 1009.
    pub max_message_bytes: usize,
    /// tungstenite read buffer; small keeps idle sockets cheap, it grows when needed.
    pub read_buffer_bytes: usize,
    /// tungstenite write buffer target before a write is forced.
    pub write_buffer_bytes: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    pub outbox_bytes: usize,
    /// Frames queued for one connection before it is closed as a slow consumer.
    pub outbox_frames: usize,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// A connection whose socket takes no data for this long while the hub writes to it is
    /// closed as a slow consumer (4001).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How long a closing connection may take to flush its close frame.
    #[serde(with = "humantime_serde")]
    pub close_grace: Duration,
    /// On shutdown, how long to wait for clients to go before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Requests per second a connection may make on average.
    pub rate_per_sec: f64,
    /// Requests a connection may make at once above the average.
    pub rate_burst: f64,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Sockets the node accepts; more are refused with 503.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    /// One node: in-process bus, presence and history.
    Single,
    /// Nodes linked by one Redis server (PUBLISH/SUBSCRIBE).
    Redis,
    /// Nodes linked by a Redis Cluster (sharded pub/sub: SPUBLISH/SSUBSCRIBE).
    RedisCluster,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub mode: ClusterMode,
    /// One URL for `redis`; any seed nodes for `redis_cluster`.
    pub redis_urls: Vec<String>,
    /// Prefix of every Redis key and channel, so several hubs can share a Redis.
    pub key_prefix: String,
    /// A node's presence entries lapse this long after the node stops refreshing them.
    #[serde(with = "humantime_serde")]
    pub presence_ttl: Duration,
    /// A node missing from the registry this long is gone; it refreshes every third of it.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// Address other nodes and operators see for this node (defaults to `listen`).
    pub advertise: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            mode: ClusterMode::Single,
            redis_urls: vec!["redis://127.0.0.1:6379".into()],
            key_prefix: "hub".into(),
            presence_ttl: Duration::from_secs(30),
            node_ttl: Duration::from_secs(15),
            advertise: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://data/hub.db` (created if missing) or `postgres://user:pass@host/db`.
    pub url: String,
    pub max_connections: u32,
    /// How long a request waits for a database connection before failing with `unavailable`.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { url: "sqlite://data/hub.db".into(), max_connections: 8, acquire_timeout: Duration::from_secs(3) }
    }
}

/// The media plane of meetings (`src/meetings/media.rs`, the `sfu` crate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Off: meetings carry signaling only (SDP ops answer `media_unavailable`).
    pub enabled: bool,
    /// The one UDP address of all media (ICE multiplexing). A specific IP is the only one announced;
    /// 0.0.0.0 announces every interface's address.
    pub bind: SocketAddr,
    /// Public IPs announced instead of the local ones (a 1:1 NAT in front of the node).
    pub announced_ips: Vec<std::net::IpAddr>,
    /// STUN/TURN servers handed to clients in the `meeting.join` reply (`ice_servers`), for
    /// networks that block UDP to the hub (docs/operations.md#turn).
    pub ice_servers: Vec<IceServer>,
}

/// One entry of a client's `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            enabled: true,
            bind: SocketAddr::from(([0, 0, 0, 0], 7882)),
            announced_ips: Vec::new(),
            ice_servers: Vec::new(),
        }
    }
}

/// The dating-app chat (`src/chat/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Swipes (like, pass, super like) a user may make per `swipe_window`.
    pub swipe_limit: u32,
    #[serde(with = "humantime_serde")]
    pub swipe_window: Duration,
    /// Super likes a user may make per `super_like_window` (they count as swipes too).
    pub super_like_limit: u32,
    #[serde(with = "humantime_serde")]
    pub super_like_window: Duration,
    /// Longest message text, in bytes.
    pub max_text_bytes: usize,
    /// Messages a user may send per second (all their devices on one node), burst twice that.
    pub send_rate: f64,
    /// Shortest gap between two typing indicators of a user in one conversation.
    #[serde(with = "humantime_serde")]
    pub typing_interval: Duration,
    /// Channel that receives `new_message` / `new_match` events for offline users (empty: off).
    pub offline_channel: String,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            swipe_limit: 200,
            swipe_window: Duration::from_secs(12 * 3600),
            super_like_limit: 5,
            super_like_window: Duration::from_secs(24 * 3600),
            max_text_bytes: 4000,
            send_rate: 20.0,
            typing_interval: Duration::from_secs(1),
            offline_channel: "hooks:chat".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Any authenticated user.
    Any,
    /// Only the user whose id is the channel's rest (`user:alice` for `alice`).
    Owner,
    /// Only users whose token grants the channel by name (`channels` claim).
    Grant,
    /// Nobody over a socket; the server API still may.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    pub name: String,
    #[serde(default = "Access::any")]
    pub subscribe: Access,
    #[serde(default = "Access::any")]
    pub publish: Access,
    /// Roles (token `role` claim) allowed to subscribe and publish whatever the rules above say.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Publications kept for resume; 0 keeps none (no offsets, no recovery).
    #[serde(default)]
    pub history_size: usize,
    #[serde(default = "default_history_ttl", with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Keep a member list for the channel.
    #[serde(default)]
    pub presence: bool,
    /// Push join/leave events to subscribers (needs `presence`).
    #[serde(default)]
    pub join_leave: bool,
}

impl Access {
    fn any() -> Self {
        Access::Any
    }
}

fn default_history_ttl() -> Duration {
    Duration::from_secs(300)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: String::new(),
            listen: "127.0.0.1:8000".parse().expect("literal address"),
            dev_mode: false,
            web_root: PathBuf::from("web-client"),
            auth: AuthConfig::default(),
            api: ApiConfig::default(),
            gateway: GatewayConfig::default(),
            cluster: ClusterConfig::default(),
            store: StoreConfig::default(),
            chat: ChatConfig::default(),
            media: MediaConfig::default(),
            namespaces: Vec::new(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hmac_secret: String::new(),
            rsa_public_keys: Vec::new(),
            ec_public_keys: Vec::new(),
            audience: None,
            leeway: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 512,
            write_buffer_bytes: 16 * 1024,
            outbox_bytes: 1024 * 1024,
            outbox_frames: 4096,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            close_grace: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            rate_per_sec: 50.0,
            rate_burst: 100.0,
            max_subscriptions: 256,
            max_connections: 19_000,
        }
    }
}

const TOP_LEVEL_KEYS: &[&str] =
    &["node_id", "listen", "dev_mode", "web_root", "auth", "api", "gateway", "cluster", "store", "chat", "namespaces"];

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl Config {
    /// Loads `file` (if given), then `HUB_*` variables (`HUB_GATEWAY__PING_INTERVAL=10s`), then
    /// `overrides` (`gateway.ping_interval=10s`), and validates the result.
    pub fn load(file: Option<&std::path::Path>, overrides: &[String]) -> Result<Config, ConfigError> {
        // Without a file, the embedded default (config/default.toml) is the config. With one, keys
        // it leaves out take the built-in defaults, never the dev-mode ones of default.toml.
        let mut fig = Figment::new();
        if file.is_none() {
            fig = fig.merge(Toml::string(include_str!("../config/default.toml")));
        }
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid {
                    key: "--config".into(),
                    problem: format!("file {} does not exist", file.display()),
                });
            }
            fig = fig.merge(Toml::file(file));
        }
        // Only variables naming a top-level section are config (HUB_CONFIG, HUB_LOG and other
        // tools' HUB_* variables are not); inside a section, unknown keys are still refused.
        let env = Env::prefixed("HUB_").filter(|key| {
            let top = key.as_str().split("__").next().unwrap_or_default().to_ascii_lowercase();
            TOP_LEVEL_KEYS.contains(&top.as_str())
        });
        fig = fig.merge(env.split("__"));
        for item in overrides {
            let (key, value) = item.split_once('=').ok_or_else(|| ConfigError::Invalid {
                key: item.clone(),
                problem: "an override is written key=value".into(),
            })?;
            let value: figment::value::Value = value.parse().expect("figment values parse from any string");
            fig = fig.merge(figment::providers::Serialized::global(key, value));
        }
        let config: Config = fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot say.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: &str| Err(ConfigError::Invalid { key: key.into(), problem: problem.into() });
        let a = &self.auth;
        if a.hmac_secret.is_empty() && a.rsa_public_keys.is_empty() && a.ec_public_keys.is_empty() {
            return bad("auth.hmac_secret", "no token key configured (set a secret or public keys)");
        }
        if !a.hmac_secret.is_empty() && a.hmac_secret.len() < 16 {
            return bad("auth.hmac_secret", "must be at least 16 bytes long");
        }
        let g = &self.gateway;
        if g.max_message_bytes < 128 {
            return bad("gateway.max_message_bytes", "must be at least 128");
        }
        if g.outbox_bytes < 2 * g.max_message_bytes {
            return bad("gateway.outbox_bytes", "must be at least twice gateway.max_message_bytes");
        }
        if g.outbox_frames == 0 {
            return bad("gateway.outbox_frames", "must be above 0");
        }
        if g.write_timeout.is_zero() {
            return bad("gateway.write_timeout", "must be above 0");
        }
        if g.ping_interval.is_zero() || g.pong_timeout.is_zero() {
            return bad("gateway.ping_interval", "ping interval and pong timeout must be above 0");
        }
        if g.rate_per_sec <= 0.0 || g.rate_burst < 1.0 {
            return bad("gateway.rate_per_sec", "rate must be above 0 and burst at least 1");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            if !seen.insert(ns.name.as_str()) {
                return bad(&format!("namespaces[{i}].name"), "duplicate namespace");
            }
            if ns.name.contains(':') {
                return bad(&format!("namespaces[{i}].name"), "must not contain ':'");
            }
            if ns.join_leave && !ns.presence {
                return bad(&format!("namespaces[{i}].join_leave"), "needs presence = true");
            }
            if ns.history_size > 0 && ns.history_ttl.is_zero() {
                return bad(&format!("namespaces[{i}].history_ttl"), "must be above 0 with a history");
            }
        }
        let c = &self.cluster;
        if c.mode != ClusterMode::Single {
            if c.redis_urls.is_empty() {
                return bad("cluster.redis_urls", "a Redis URL is needed in this cluster mode");
            }
            if let Some(u) = c.redis_urls.iter().find(|u| !u.starts_with("redis://") && !u.starts_with("rediss://")) {
                return bad("cluster.redis_urls", &format!("{u:?} is not a redis:// URL"));
            }
            if c.presence_ttl < Duration::from_secs(1) || c.node_ttl < Duration::from_secs(1) {
                return bad("cluster.presence_ttl", "presence_ttl and node_ttl must be at least 1s");
            }
        }
        if !(self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres")) {
            return bad("store.url", "must start with sqlite: or postgres://");
        }
        if self.store.max_connections == 0 {
            return bad("store.max_connections", "must be above 0");
        }
        let chat = &self.chat;
        if chat.swipe_window.is_zero() || chat.super_like_window.is_zero() {
            return bad("chat.swipe_window", "swipe windows must be above 0");
        }
        if chat.max_text_bytes == 0 {
            return bad("chat.max_text_bytes", "must be above 0");
        }
        if chat.send_rate <= 0.0 {
            return bad("chat.send_rate", "must be above 0");
        }
        if !chat.offline_channel.is_empty() && self.namespace(&chat.offline_channel).is_none() {
            return bad("chat.offline_channel", "no namespace matches this channel");
        }
        for key in &self.api.keys {
            if key.len() < 16 {
                return bad("api.keys", "each key must be at least 16 characters long");
            }
        }
        Ok(())
    }

    pub fn namespace(&self, channel: &str) -> Option<&NamespaceConfig> {
        let ns = channel.split_once(':').map(|(ns, _)| ns).unwrap_or("");
        self.namespaces.iter().find(|n| n.name == ns)
    }
}
