//! Server API for the chat (docs: src/api/openapi.json): what an app back end or a moderator
//! does on behalf of users.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiJson, ApiResult};
use crate::{
    chat::protocol::{ConversationId, Swipe, SwipeKind},
    errors::{ErrorCode, HubError},
    store::MatchRow,
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/swipes", post(swipe))
        .route("/matches", post(create_match))
        .route("/matches/{id}", get(get_match).delete(close_match))
        .route("/matches/{id}/messages", get(messages))
        .route("/users/{user}/conversations", get(conversations))
        .route("/reports", get(reports))
}

fn match_view(m: &MatchRow) -> Value {
    json!({
        "id": m.id,
        "users": [m.user_a, m.user_b],
        "state": if m.active { "active" } else { "closed" },
        "created_at": m.created_at,
        "last_seq": m.last_seq,
    })
}

#[derive(Deserialize)]
struct SwipeBody {
    from: String,
    to: String,
    kind: SwipeKind,
}

/// A swipe on behalf of `from`: same rules, limits and events as `chat.swipe`.
async fn swipe(State(state): State<AppState>, ApiJson(body): ApiJson<SwipeBody>) -> ApiResult {
    let reply = state.chat.swipe(&body.from, Swipe { user: body.to, kind: body.kind }).await?;
    Ok(Json(serde_json::to_value(reply).unwrap_or_default()))
}

#[derive(Deserialize)]
struct MatchBody {
    users: [String; 2],
}

/// Creates the match of a pair (or reopens a closed one); both users get `match` live.
async fn create_match(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MatchBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let [a, b] = &body.users;
    let (m, created) = state.chat.create_match(a, b).await?;
    let mut view = match_view(&m);
    view["created"] = json!(created);
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view)))
}

async fn find(state: &AppState, id: ConversationId) -> Result<MatchRow, HubError> {
    state.chat.store().get_match(id).await?.ok_or_else(|| HubError::new(ErrorCode::NotFound, format!("no match {id}")))
}

async fn get_match(State(state): State<AppState>, Path(id): Path<ConversationId>) -> ApiResult {
    Ok(Json(match_view(&find(&state, id).await?)))
}

/// Closes the conversation for both users, live (`closed` push); further sends fail.
async fn close_match(State(state): State<AppState>, Path(id): Path<ConversationId>) -> ApiResult {
    Ok(Json(match_view(&state.chat.close(id).await?)))
}

#[derive(Deserialize)]
struct PageQuery {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<usize>,
}

async fn messages(
    State(state): State<AppState>,
    Path(id): Path<ConversationId>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    find(&state, id).await?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 100 {
        return Err(HubError::new(ErrorCode::BadRequest, "limit is 1-100").into());
    }
    let (messages, more) = state.chat.store().messages(id, q.before, q.after, limit).await?;
    Ok(Json(json!({ "messages": messages, "more": more })))
}

async fn conversations(State(state): State<AppState>, Path(user): Path<String>) -> ApiResult {
    Ok(Json(serde_json::to_value(state.chat.conversations(&user).await?).unwrap_or_default()))
}

async fn reports(State(state): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(HubError::new(ErrorCode::BadRequest, "limit is 1-500").into());
    }
    let reports = state.chat.store().reports(q.before, limit).await?;
    Ok(Json(json!({ "reports": reports })))
}
