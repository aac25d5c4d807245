//! The socket edge: `/ws` authenticates nothing itself; it sizes the WebSocket for many idle
//! sockets, negotiates the codec, and hands the socket to a session loop.

mod heartbeat;
pub mod ratelimit;
pub mod session;

use std::sync::{atomic::Ordering, Arc};

use axum::{
    extract::{State, WebSocketUpgrade},
    http::StatusCode,
    response::{IntoResponse, Response},
};

pub use heartbeat::run_heartbeats;

use crate::{
    node::Node,
    protocol::{Codec, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK},
    AppState,
};

pub async fn ws_handler(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let node = state.node.clone();
    let chat = state.chat.clone();
    let meetings = state.meetings.clone();
    if node.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node is shutting down").into_response();
    }
    let g = &node.config.gateway;
    // Counts sockets still authenticating too, so a flood of silent sockets cannot pass the cap.
    if node.sockets.fetch_add(1, Ordering::AcqRel) >= g.max_connections {
        node.sockets.fetch_sub(1, Ordering::AcqRel);
        return (StatusCode::SERVICE_UNAVAILABLE, "node is full").into_response();
    }
    let slot = SocketSlot(node.clone());
    let sessions = state.sessions.clone();
    ws.protocols([SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK])
        .read_buffer_size(g.read_buffer_bytes)
        .write_buffer_size(g.write_buffer_bytes)
        .max_message_size(g.max_message_bytes)
        .max_frame_size(g.max_message_bytes)
        .on_upgrade(move |socket| {
            let codec = Codec::from_subprotocol(socket.protocol().and_then(|p| p.to_str().ok()));
            sessions.track_future(async move {
                session::run(node, chat, meetings, socket, codec).await;
                drop(slot);
            })
        })
}

/// Holds one place under `gateway.max_connections` until the socket ends (or never upgrades).
struct SocketSlot(Arc<Node>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.sockets.fetch_sub(1, Ordering::AcqRel);
    }
}
