//! The server API for app back ends: `/api/v1/...`, bearer API key, JSON in and out, errors as
//! `{"error": {"code", "message"}}`. Described by `openapi.json`, served at `/api/v1/openapi.json`.

use axum::{
    extract::{Path, Query, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    errors::{CloseReason, ErrorCode, HubError},
    protocol::{HistoryReply, PresenceReply, PublishReply, StreamPosition},
    AppState,
};

mod chat;
mod meetings;

const OPENAPI: &str = include_str!("openapi.json");

/// The one error type of the HTTP edge.
pub struct ApiError(pub HubError);

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.code {
            ErrorCode::BadRequest
            | ErrorCode::UnknownOp
            | ErrorCode::NoHistory
            | ErrorCode::InvalidTrack
            | ErrorCode::OwnTrack
            | ErrorCode::InvalidSdp => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::Banned | ErrorCode::NotMatched | ErrorCode::Blocked => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::NotHost | ErrorCode::ViewerCannotPublish | ErrorCode::Removed => StatusCode::FORBIDDEN,
            ErrorCode::ConversationClosed
            | ErrorCode::RoomExists
            | ErrorCode::RoomFull
            | ErrorCode::RoomLocked
            | ErrorCode::RoomEnded
            | ErrorCode::AlreadyJoined
            | ErrorCode::TrackAlreadyPublished
            | ErrorCode::TooManyTracks
            | ErrorCode::UnexpectedAnswer => StatusCode::CONFLICT,
            ErrorCode::NotInRoom | ErrorCode::UnknownTrack | ErrorCode::UnknownParticipant => StatusCode::NOT_FOUND,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::AlreadySubscribed | ErrorCode::NotSubscribed => StatusCode::CONFLICT,
            ErrorCode::RateLimited | ErrorCode::LimitExceeded | ErrorCode::SwipeLimit => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable | ErrorCode::MediaUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::MediaFailed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut error = json!({ "code": self.0.code.as_str(), "message": self.0.message });
        if let Some(ms) = self.0.retry_after_ms {
            error["retry_after_ms"] = json!(ms);
        }
        let body = json!({ "error": error });
        (status, Json(body)).into_response()
    }
}

/// A JSON body whose rejection is an `ApiError` (bad_request) rather than axum's plain text.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(ApiError(HubError::new(ErrorCode::BadRequest, e.body_text()))),
        }
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

pub fn router(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/publish", post(publish))
        .route("/broadcast", post(broadcast))
        .route("/users/{user}/disconnect", post(disconnect_user))
        .route("/users/{user}/ban", post(ban_user).delete(unban_user))
        .route("/bans", get(bans))
        .route("/nodes", get(nodes))
        .route("/channels", get(channels))
        .route("/channels/{channel}/presence", get(presence))
        .route("/channels/{channel}/history", get(history))
        .route("/stats", get(stats))
        .merge(chat::routes())
        .merge(meetings::routes())
        .route_layer(middleware::from_fn_with_state(state, require_key));
    Router::new()
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .merge(guarded)
}

async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let keys = &state.node.config.api.keys;
    match given {
        Some(key) if keys.iter().any(|k| constant_time_eq(k.as_bytes(), key.as_bytes())) => next.run(req).await,
        _ => ApiError(HubError::new(ErrorCode::Unauthorized, "a valid API key is required (Authorization: Bearer …)"))
            .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct PublishBody {
    channel: String,
    event: Option<String>,
    data: Value,
}

async fn publish(State(state): State<AppState>, ApiJson(body): ApiJson<PublishBody>) -> ApiResult {
    let position = state.node.publish(&body.channel, body.event, body.data, None).await?;
    Ok(Json(serde_json::to_value(PublishReply { position }).unwrap_or_default()))
}

#[derive(Deserialize)]
struct BroadcastBody {
    channels: Vec<String>,
    event: Option<String>,
    data: Value,
}

/// Publishes the same data to many channels; each channel's outcome is reported on its own.
async fn broadcast(State(state): State<AppState>, ApiJson(body): ApiJson<BroadcastBody>) -> ApiResult {
    if body.channels.is_empty() || body.channels.len() > 1000 {
        return Err(HubError::new(ErrorCode::BadRequest, "channels must list 1 to 1000 channels").into());
    }
    let mut results = Vec::with_capacity(body.channels.len());
    for channel in &body.channels {
        let outcome = state.node.publish(channel, body.event.clone(), body.data.clone(), None).await;
        results.push(match outcome {
            Ok(position) => json!({ "channel": channel, "position": position }),
            Err(e) => json!({ "channel": channel, "error": { "code": e.code.as_str(), "message": e.message } }),
        });
    }
    Ok(Json(json!({ "results": results })))
}

/// Closes every socket of the user on every node (4103); they may reconnect.
async fn disconnect_user(State(state): State<AppState>, Path(user): Path<String>) -> ApiResult {
    let closed = state.node.disconnect_user(&user, CloseReason::Disconnected).await?;
    Ok(Json(json!({ "closed_here": closed })))
}

#[derive(Deserialize, Default)]
struct BanBody {
    #[serde(default)]
    reason: String,
    /// Seconds; absent: until lifted.
    duration_secs: Option<u64>,
}

/// Records a ban (durable, in the store), closes the user's sockets everywhere (4104), and
/// refuses their connects until it ends or is lifted.
async fn ban_user(State(state): State<AppState>, Path(user): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let body: BanBody = if body.is_empty() {
        BanBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| HubError::new(ErrorCode::BadRequest, e.to_string()))?
    };
    if body.duration_secs == Some(0) {
        return Err(HubError::new(ErrorCode::BadRequest, "duration_secs must be at least 1").into());
    }
    let now = crate::auth::now_secs();
    let ban = crate::store::Ban {
        user,
        reason: body.reason,
        created_at: now,
        until: body.duration_secs.map(|d| now.saturating_add(d)),
    };
    let view = serde_json::to_value(&ban).unwrap_or_default();
    let closed = state.node.ban(ban).await?;
    Ok(Json(json!({ "ban": view, "closed_here": closed })))
}

async fn unban_user(State(state): State<AppState>, Path(user): Path<String>) -> ApiResult {
    if state.node.unban(&user).await? {
        Ok(Json(json!({ "lifted": true })))
    } else {
        Err(HubError::new(ErrorCode::NotFound, format!("{user} is not banned")).into())
    }
}

async fn bans(State(state): State<AppState>) -> ApiResult {
    let bans = state.node.store.bans(crate::auth::now_secs()).await?;
    Ok(Json(json!({ "bans": bans })))
}

/// Live nodes of the cluster (this one alone on a single node), with their load.
async fn nodes(State(state): State<AppState>) -> ApiResult {
    Ok(Json(json!({ "nodes": state.registry.nodes().await? })))
}

#[derive(Deserialize)]
struct ChannelsQuery {
    prefix: Option<String>,
    limit: Option<usize>,
}

async fn channels(State(state): State<AppState>, Query(q): Query<ChannelsQuery>) -> ApiResult {
    let list = state.node.channel_stats(q.prefix.as_deref().unwrap_or(""), q.limit.unwrap_or(100).min(10_000));
    Ok(Json(json!({ "channels": list })))
}

async fn presence(State(state): State<AppState>, Path(channel): Path<String>) -> ApiResult {
    let members = state.node.presence(&channel).await?;
    Ok(Json(serde_json::to_value(PresenceReply { members }).unwrap_or_default()))
}

#[derive(Deserialize)]
struct HistoryQuery {
    offset: Option<u64>,
    epoch: Option<String>,
    limit: Option<usize>,
}

async fn history(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    let since = match (q.offset, q.epoch) {
        (Some(offset), Some(epoch)) => Some(StreamPosition { offset, epoch }),
        (None, None) => None,
        _ => return Err(HubError::new(ErrorCode::BadRequest, "offset and epoch go together").into()),
    };
    let read = state.node.history(&channel, since.as_ref(), q.limit).await?;
    Ok(Json(serde_json::to_value(HistoryReply::from(read)).unwrap_or_default()))
}

async fn stats(State(state): State<AppState>) -> ApiResult {
    Ok(Json(serde_json::to_value(state.node.stats()).unwrap_or_default()))
}
