//! hub: one persistent-connection server for chat, notifications, tracking and meetings.
//!
//! `run` takes a bound listener, a config and a shutdown future, so a test can start a real hub
//! on `127.0.0.1:0` and stop it. `main.rs` only parses the command line and calls it.

pub mod api;
pub mod auth;
pub mod bus;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod errors;
pub mod gateway;
pub mod history;
pub mod meetings;
pub mod node;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod registry;
pub mod store;

use std::{future::Future, sync::Arc, sync::OnceLock};

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::{
    auth::Claims,
    bus::{Bus, LocalBus, LocalBusNetwork},
    cluster::{registry::RedisRegistry, RedisBus, RedisHistory, RedisLink, RedisPresence},
    config::{ClusterMode, Config},
    errors::CloseReason,
    history::{History, MemoryHistory},
    node::Node,
    presence::{MemoryPresence, Presence},
    registry::{LocalRegistry, Registry},
    store::{ChatStore, SqlStore, Store},
};

/// What every HTTP and WebSocket handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub chat: Arc<chat::Chat>,
    pub meetings: Arc<meetings::Meetings>,
    pub registry: Arc<dyn Registry>,
    /// Live socket sessions, awaited on shutdown.
    pub sessions: TaskTracker,
    metrics: PrometheusHandle,
}

/// The backends named by the config.
pub struct Backends {
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn Presence>,
    pub history: Arc<dyn History>,
    pub store: Arc<dyn Store>,
    pub chat_store: Arc<dyn ChatStore>,
    /// The Redis link in cluster modes (for the node registry).
    pub redis: Option<Arc<RedisLink>>,
}

impl Backends {
    /// The one place that chooses implementations: in-process ones for `cluster.mode = single`,
    /// Redis ones otherwise; the store by its URL.
    pub async fn from_config(config: &Config) -> anyhow::Result<Backends> {
        let sql = Arc::new(SqlStore::open(&config.store).await?);
        let store: Arc<dyn Store> = sql.clone();
        let chat_store: Arc<dyn ChatStore> = sql;
        let backends = match config.cluster.mode {
            ClusterMode::Single => Backends {
                bus: Arc::new(LocalBus::new(Arc::new(LocalBusNetwork::default()))),
                presence: Arc::new(MemoryPresence::default()),
                history: MemoryHistory::new(),
                store,
                chat_store,
                redis: None,
            },
            ClusterMode::Redis | ClusterMode::RedisCluster => {
                let link = RedisLink::connect(&config.cluster, &config.node_id)
                    .await
                    .map_err(|e| anyhow::anyhow!("cluster.redis_urls: cannot reach Redis: {e}"))?;
                Backends {
                    bus: Arc::new(RedisBus::new(link.clone())),
                    presence: RedisPresence::new(link.clone(), config.cluster.presence_ttl),
                    history: Arc::new(RedisHistory::new(link.clone())),
                    store,
                    chat_store,
                    redis: Some(link),
                }
            }
        };
        Ok(backends)
    }
}

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

/// Serves the hub on `listener` until `shutdown` resolves, then drains: sockets are told to
/// reconnect elsewhere (close 4000) and given `gateway.shutdown_grace` to go.
pub async fn run(
    listener: TcpListener,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.node_id.is_empty() {
        config.node_id = history::new_epoch();
    }
    if config.cluster.mode != ClusterMode::Single && config.store.url.starts_with("sqlite") {
        tracing::warn!("cluster nodes with SQLite stores keep separate bans; share one PostgreSQL database");
    }
    let backends = Backends::from_config(&config).await?;
    run_with(listener, config, backends, shutdown).await
}

pub async fn run_with(
    listener: TcpListener,
    config: Config,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let address = if config.cluster.advertise.is_empty() {
        listener.local_addr()?.to_string()
    } else {
        config.cluster.advertise.clone()
    };
    let redis = backends.redis.clone();
    let chat_store = backends.chat_store.clone();
    let node = Node::new(config.clone(), backends)?;
    let offline: Arc<dyn chat::events::OfflineEvents> = if config.chat.offline_channel.is_empty() {
        Arc::new(chat::events::NoEvents)
    } else {
        Arc::new(chat::events::ChannelEvents { node: node.clone(), channel: config.chat.offline_channel.clone() })
    };
    let chat = chat::Chat::new(node.clone(), chat_store, offline);
    let media = if config.media.enabled { start_media(&config.media).await } else { None };
    let registry: Arc<dyn Registry> = match redis.clone() {
        Some(link) => RedisRegistry::start(link, &node, address, config.cluster.node_ttl),
        None => Arc::new(LocalRegistry { node: node.clone(), address }),
    };
    let meetings = meetings::Meetings::new(node.clone(), media, redis, registry.clone());
    node.bus.start().await?;
    node.reload_bans().await?;
    let state = AppState {
        node: node.clone(),
        chat,
        meetings: meetings.clone(),
        registry,
        sessions: TaskTracker::new(),
        metrics: metrics_handle(),
    };
    let app = router(state.clone());
    tokio::spawn(gateway::run_heartbeats(node.clone()));
    tokio::spawn(reload_bans(Arc::downgrade(&node)));
    tokio::spawn(meetings.clone().run_timers());
    tokio::spawn(meetings.clone().run_home_watch());
    tokio::spawn(meetings.clone().run_layers());
    tokio::spawn(meetings.clone().run_speakers());
    tracing::info!(addr = %listener.local_addr()?, node = %node.id, "hub listening");
    let drain_node = node.clone();
    let drain_meetings = meetings.clone();
    // Small real-time frames go out at once; the session coalesces what is queued itself.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing sockets with 4000");
            drain_node.shutdown.cancel();
            // Before the sockets go: participants everywhere are told to join again elsewhere.
            drain_meetings.stop().await;
            drain_node.close_all(CloseReason::Shutdown);
        })
        .await?;
    state.sessions.close();
    if tokio::time::timeout(config.gateway.shutdown_grace, state.sessions.wait()).await.is_err() {
        tracing::warn!(left = node.connection_count(), "shutdown grace over; dropping remaining sockets");
    }
    Ok(())
}

/// Heals a ban copy that missed a bus message (say, while Redis was away).
/// The media plane of meetings on `config.bind`. A port that cannot be bound leaves the node without
/// media (meetings still carry signaling; SDP ops answer `media_unavailable`), said loudly in the log.
async fn start_media(config: &config::MediaConfig) -> Option<meetings::media::Media> {
    let mut media = sfu::rtc::MediaConfig::new(config.bind);
    media.announced_ips = config.announced_ips.clone();
    match sfu::rtc::MediaNode::new(media).await {
        Ok(node) => {
            tracing::info!(udp = %node.local_addr(), "media listening");
            Some(meetings::media::Media::new(node, config.ice_servers.clone()))
        }
        Err(e) => {
            tracing::error!(bind = %config.bind, error = %e, "media port not bound: meetings run without media");
            None
        }
    }
}

async fn reload_bans(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if let Err(e) = node.reload_bans().await {
            tracing::warn!(error = %e, "ban reload failed");
        }
    }
}

fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/ws", get(gateway::ws_handler))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/dev/token", get(dev_token))
        .nest("/api/v1", api::router(state.clone()));
    let web_root = &state.node.config.web_root;
    if !web_root.as_os_str().is_empty() {
        app = app.fallback_service(tower_http::services::ServeDir::new(web_root));
    }
    app.with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    let node = &state.node;
    if node.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" }))).into_response()
    } else if !node.bus.healthy() {
        let body = json!({ "status": "degraded", "node": node.id.as_ref(), "bus": "unreachable" });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else {
        Json(json!({ "status": "ready", "node": node.id.as_ref() })).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let s = state.node.stats();
    metrics::gauge!("hub_connections_open").set(s.connections as f64);
    metrics::gauge!("hub_channels").set(s.channels as f64);
    metrics::gauge!("hub_subscriptions").set(s.subscriptions as f64);
    metrics::counter!("hub_publications_total").absolute(s.publications);
    metrics::counter!("hub_deliveries_total").absolute(s.deliveries);
    metrics::counter!("hub_connections_accepted_total").absolute(s.connections_total);
    metrics::gauge!("hub_process_resident_bytes").set(s.process.rss_bytes as f64);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

#[derive(Deserialize)]
struct DevTokenQuery {
    sub: String,
    role: Option<String>,
    /// Seconds until expiry (default 3600).
    ttl: Option<u64>,
    /// Comma-separated channel grants.
    channels: Option<String>,
    /// Comma-separated meeting grants: `r1:host,r2:viewer`.
    rooms: Option<String>,
}

/// Mints a token for anyone who asks: exists only with `dev_mode = true`.
async fn dev_token(State(state): State<AppState>, Query(q): Query<DevTokenQuery>) -> Response {
    let config = &state.node.config;
    if !config.dev_mode || config.auth.hmac_secret.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": { "code": "not_found", "message": "dev mode is off" } })),
        )
            .into_response();
    }
    let claims = Claims {
        sub: q.sub,
        exp: auth::now_secs() + q.ttl.unwrap_or(3600),
        role: q.role.filter(|r| !r.is_empty()),
        channels: q
            .channels
            .map(|c| c.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
    };
    let rooms = match auth::parse_room_grants(q.rooms.as_deref().unwrap_or("")) {
        Ok(rooms) => rooms,
        Err(message) => {
            let body = json!({ "error": { "code": "bad_request", "message": format!("rooms: {message}") } });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let token = auth::Token { claims, rooms };
    let minted = auth::mint_hs256(&config.auth.hmac_secret, &token);
    Json(json!({ "token": minted, "claims": token })).into_response()
}
