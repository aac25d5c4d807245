//! Server API for meetings (docs: src/api/openapi.json): rooms created, listed and ended by an
//! app back end, and host actions taken on its behalf (trusted: `by` is `None`).

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use signaling::{Input, RoomId, RoomOptions, UserId};

use super::{ApiError, ApiJson, ApiResult};
use crate::{
    errors::{ErrorCode, HubError},
    AppState,
};

const MAX_NAME_LEN: usize = 200;
const MAX_PARTICIPANTS: u32 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rooms", post(create).get(list))
        .route("/rooms/{id}", get(one).delete(end))
        .route("/rooms/{id}/lock", post(lock).delete(unlock))
        .route("/rooms/{id}/participants/{user}", delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// Absent: the hub names the room.
    id: Option<String>,
    name: Option<String>,
    max_participants: Option<u32>,
    /// This user is a host whatever its grant says.
    host: Option<String>,
    #[serde(default)]
    locked: bool,
    expires_in_secs: Option<u64>,
    /// How long the room may stay empty before it ends (default 300; 0: until ended).
    empty_timeout_secs: Option<u64>,
    /// Subscribe every participant to every other's tracks (default); false: each chooses with
    /// `meeting.subscribe`.
    auto_subscribe: Option<bool>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(HubError::new(ErrorCode::BadRequest, message))
}

async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = body.id.unwrap_or_else(|| format!("r{:016x}", rand::random::<u64>()));
    let mut options = RoomOptions::new(RoomId::from(id));
    if let Some(name) = body.name {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(bad(format!("name is 1-{MAX_NAME_LEN} bytes without control characters")));
        }
        options.name = Some(name);
    }
    if let Some(max) = body.max_participants {
        if max == 0 || max > MAX_PARTICIPANTS {
            return Err(bad(format!("max_participants is 1-{MAX_PARTICIPANTS}")));
        }
        options.max_participants = max;
    }
    if let Some(host) = body.host {
        if host.is_empty() || host.len() > 255 {
            return Err(bad("host is a user id of 1-255 bytes"));
        }
        options.host = Some(UserId::from(host));
    }
    options.locked = body.locked;
    if let Some(secs) = body.expires_in_secs {
        if secs == 0 {
            return Err(bad("expires_in_secs must be at least 1"));
        }
        let now = crate::chat::unix_ms().max(0) as u64;
        options.expires_at_ms = Some(now.saturating_add(secs.saturating_mul(1000)));
    }
    if let Some(secs) = body.empty_timeout_secs {
        options.empty_timeout_ms = (secs > 0).then(|| secs.saturating_mul(1000));
    }
    if let Some(auto) = body.auto_subscribe {
        options.auto_subscribe = auto;
    }
    let room = state.meetings.create(options).await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(room).unwrap_or_default())))
}

async fn list(State(state): State<AppState>) -> ApiResult {
    Ok(Json(json!({ "rooms": state.meetings.list().await })))
}

async fn one(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(serde_json::to_value(state.meetings.snapshot(&RoomId::from(id)).await?).unwrap_or_default()))
}

/// Ends the room: `room_ended` on its channel, then every participant is detached.
async fn end(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    act(&state, id, Input::End { by: None }).await
}

async fn lock(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    act(&state, id, Input::Lock { by: None }).await
}

async fn unlock(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    act(&state, id, Input::Unlock { by: None }).await
}

/// Removes a participant, who cannot join this room again.
async fn remove(State(state): State<AppState>, Path((id, user)): Path<(String, String)>) -> ApiResult {
    act(&state, id, Input::Remove { by: None, target: UserId::from(user) }).await
}

async fn act(state: &AppState, id: String, input: Input) -> ApiResult {
    let room = state.meetings.act(&RoomId::from(id), input).await?;
    Ok(Json(serde_json::to_value(room).unwrap_or_default()))
}
