//! The socket edge: `/ws` authenticates nothing itself; it sizes the WebSocket for many idle
//! sockets, negotiates the codec, and hands the socket to a session loop.

mod heartbeat;
mod ratelimit;
pub mod session;

use axum::{
    extract::{State, WebSocketUpgrade},
    http::StatusCode,
    response::{IntoResponse, Response},
};

pub use heartbeat::run_heartbeats;

use crate::{
    protocol::{Codec, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK},
    AppState,
};

pub async fn ws_handler(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let node = state.node.clone();
    if node.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node is shutting down").into_response();
    }
    let g = &node.config.gateway;
    if node.connection_count() >= g.max_connections {
        return (StatusCode::SERVICE_UNAVAILABLE, "node is full").into_response();
    }
    let sessions = state.sessions.clone();
    ws.protocols([SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK])
        .read_buffer_size(g.read_buffer_bytes)
        .write_buffer_size(g.write_buffer_bytes)
        .max_message_size(g.max_message_bytes)
        .max_frame_size(g.max_message_bytes)
        .on_upgrade(move |socket| {
            let codec = Codec::from_subprotocol(socket.protocol().and_then(|p| p.to_str().ok()));
            sessions.track_future(session::run(node, socket, codec))
        })
}
