//! One socket's life: authenticate with the first frame, then serve requests and write the
//! outbox until either side closes. Generic over `Sink`/`Stream`, so it knows frames, not TCP.
//! A single task does both directions: an idle socket costs one parked future.

use std::{pin::pin, sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;

use super::ratelimit::RateLimiter;
use crate::{
    auth::AuthError,
    chat::{self, Chat},
    errors::{CloseReason, ErrorCode, HubError},
    meetings::Meetings,
    node::{Conn, Node},
    outbox::Batch,
    protocol::{salvage_id, Codec, ConnectReply, HistoryReply, Op, PresenceReply, PublishReply, Request, ServerMsg},
};

pub async fn run<S, E>(node: Arc<Node>, chat: Arc<Chat>, meetings: Arc<Meetings>, mut ws: S, codec: Codec)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    // Rare, large futures are boxed so that the parked state of an idle socket stays small.
    let Some(conn) = Box::pin(authenticate(&node, &mut ws, codec)).await else {
        return;
    };
    let g = &node.config.gateway;
    let mut limiter = RateLimiter::new(g.rate_per_sec, g.rate_burst, node.now_ms());
    let close = loop {
        tokio::select! {
            _ = conn.outbox.ready() => {
                let batch = conn.outbox.take();
                let close = batch.close;
                conn.writing_since_ms.store(node.now_ms().max(1), std::sync::atomic::Ordering::Relaxed);
                let written = Box::pin(write_batch(&mut ws, &conn, batch)).await;
                conn.writing_since_ms.store(0, std::sync::atomic::Ordering::Relaxed);
                conn.outbox.written();
                if written.is_err() {
                    break None;
                }
                if close.is_some() {
                    break close;
                }
            }
            incoming = ws.next() => match incoming {
                None => break None,
                Some(Err(e)) => {
                    break is_too_large(&e).then_some(CloseReason::TooLarge);
                }
                Some(Ok(msg)) => {
                    conn.last_seen_ms.store(node.now_ms(), std::sync::atomic::Ordering::Relaxed);
                    let payload = match msg {
                        Message::Text(t) => Some((Codec::Json, Bytes::from(t))),
                        Message::Binary(b) => Some((Codec::MsgPack, b)),
                        Message::Close(_) => break None,
                        Message::Ping(_) | Message::Pong(_) => None,
                    };
                    if let Some((frame_codec, bytes)) = payload {
                        let reply = if limiter.allow(node.now_ms()) {
                            Box::pin(handle_frame(&node, &chat, &meetings, &conn, frame_codec, &bytes)).await
                        } else {
                            error_msg(salvage_id(frame_codec, &bytes), ErrorCode::RateLimited, "too many requests")
                        };
                        conn.push(&reply.0);
                        if let Some((channel, delivered)) = reply.1 {
                            node.activate(&conn, &channel, delivered);
                        }
                    }
                }
            }
        }
    };
    if let Some(reason) = close {
        node.count_close(reason);
        Box::pin(finish_close(&mut ws, reason, g.close_grace)).await;
    }
    let chat_device = conn.is_subscribed(&chat::user_channel(&conn.user));
    Box::pin(node.unregister(&conn)).await;
    if chat_device {
        Box::pin(chat.on_disconnect(&conn)).await;
    }
    Box::pin(meetings.on_disconnect(&conn)).await;
}

/// Waits for a valid `connect` as the first frame; closes the socket on anything else.
async fn authenticate<S, E>(node: &Arc<Node>, ws: &mut S, codec: Codec) -> Option<Arc<Conn>>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let grace = node.config.gateway.close_grace;
    let deadline = tokio::time::Instant::now() + node.config.auth.connect_timeout;
    let first = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                finish_close(ws, CloseReason::AuthRequired, grace).await;
                return None;
            }
            Ok(Some(Ok(Message::Text(t)))) => break (Codec::Json, Bytes::from(t)),
            Ok(Some(Ok(Message::Binary(b)))) => break (Codec::MsgPack, b),
            // Pings and pongs may come before the connect frame.
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Err(e))) if is_too_large(&e) => {
                finish_close(ws, CloseReason::TooLarge, grace).await;
                return None;
            }
            Ok(_) => return None,
        }
    };
    let (frame_codec, bytes) = first;
    let (id, outcome) = match frame_codec.decode::<Request>(&bytes) {
        Ok(Request { id, op: Op::Connect { token } }) => (Some(id), node.verifier.verify_token(&token).map_err(Some)),
        Ok(Request { id, .. }) => (Some(id), Err(None)),
        Err(_) => (salvage_id(frame_codec, &bytes), Err(None)),
    };
    let (claims, rooms) = match outcome {
        Ok(token) => token.split(),
        Err(e) => {
            let (code, reason, message) = match e {
                Some(AuthError::Expired) => {
                    (ErrorCode::TokenExpired, CloseReason::TokenExpired, "token expired".into())
                }
                Some(AuthError::Invalid(m)) => (ErrorCode::Unauthorized, CloseReason::InvalidToken, m),
                None => (
                    ErrorCode::Unauthorized,
                    CloseReason::AuthRequired,
                    "the first frame must be a valid connect request".to_string(),
                ),
            };
            let msg = ServerMsg::Error { id, code: code.as_str().into(), message, retry_after_ms: None };
            if ws.send(to_message(codec, codec.encode(&msg))).await.is_ok() {
                finish_close(ws, reason, grace).await;
            }
            return None;
        }
    };
    if node.is_banned(&claims.sub) {
        let msg = ServerMsg::Error {
            id,
            code: ErrorCode::Banned.as_str().into(),
            message: "this user is banned".into(),
            retry_after_ms: None,
        };
        if ws.send(to_message(codec, codec.encode(&msg))).await.is_ok() {
            finish_close(ws, CloseReason::Banned, grace).await;
        }
        return None;
    }
    let expires_at = Some(claims.exp);
    let conn = node.register(claims, codec);
    conn.set_room_grants(rooms);
    // A ban recorded between the check above and the registration closes this socket too.
    if node.is_banned(&conn.user) {
        conn.outbox.close(CloseReason::Banned);
    }
    let reply = ConnectReply {
        client: conn.client.to_string(),
        user: conn.user.to_string(),
        node: node.id.to_string(),
        expires_at,
        ping_interval_ms: node.config.gateway.ping_interval.as_millis() as u64,
    };
    conn.push(&ServerMsg::Reply { id: id.unwrap_or(0), data: to_value(&reply) });
    Some(conn)
}

/// A reply, and for a subscribe the channel to activate once the reply is queued (with the
/// highest offset the reply carried).
type Handled = (ServerMsg, Option<(String, u64)>);

async fn handle_frame(
    node: &Arc<Node>,
    chat: &Chat,
    meetings: &Meetings,
    conn: &Arc<Conn>,
    frame_codec: Codec,
    bytes: &[u8],
) -> Handled {
    let request = match frame_codec.decode::<Request>(bytes) {
        Ok(r) => r,
        Err(e) => return decode_error(frame_codec, bytes, e),
    };
    let id = request.id;
    match handle_op(node, chat, meetings, conn, request.op).await {
        Ok((data, activate)) => (ServerMsg::Reply { id, data }, activate),
        Err(e) => (
            ServerMsg::Error {
                id: Some(id),
                code: e.code.as_str().into(),
                message: e.message,
                retry_after_ms: e.retry_after_ms,
            },
            None,
        ),
    }
}

async fn handle_op(
    node: &Arc<Node>,
    chat: &Chat,
    meetings: &Meetings,
    conn: &Arc<Conn>,
    op: Op,
) -> Result<(Value, Option<(String, u64)>), HubError> {
    match op {
        Op::Connect { .. } => Err(HubError::new(ErrorCode::BadRequest, "already connected")),
        Op::Refresh { token } => {
            let token = node.verifier.verify_token(&token).map_err(|e| match e {
                AuthError::Expired => HubError::new(ErrorCode::TokenExpired, "token expired"),
                AuthError::Invalid(m) => HubError::new(ErrorCode::Unauthorized, m),
            })?;
            if token.claims.sub != *conn.user {
                return Err(HubError::new(ErrorCode::Unauthorized, "token is for another user"));
            }
            let exp = token.claims.exp;
            let (claims, rooms) = token.split();
            conn.set_claims(claims);
            conn.set_room_grants(rooms);
            Ok((serde_json::json!({ "expires_at": exp }), None))
        }
        Op::Subscribe { channel, since } => {
            let reply = node.subscribe(conn, &channel, since.clone()).await?;
            // What the client now holds: the recovered publications, or with a fresh (or failed)
            // resume, everything up to the top it was told of. Held-back frames at or below it
            // are not sent again.
            let delivered = match (&since, reply.recovered) {
                (Some(_), true) => reply.publications.last().map(|p| p.offset).or(since.as_ref().map(|s| s.offset)),
                _ => reply.position.as_ref().map(|p| p.offset),
            }
            .unwrap_or(0);
            if channel == chat::user_channel(&conn.user) {
                chat.on_connect(conn).await;
            }
            Ok((to_value(&reply), Some((channel, delivered))))
        }
        Op::Unsubscribe { channel } => {
            node.unsubscribe(conn, &channel).await?;
            if channel == chat::user_channel(&conn.user) {
                chat.on_disconnect(conn).await;
            }
            Ok((Value::Object(Default::default()), None))
        }
        Op::Publish { channel, event, data } => {
            let position = node.publish(&channel, event, data, Some(conn)).await?;
            Ok((to_value(&PublishReply { position }), None))
        }
        Op::Presence { channel } => {
            node.authorize(&conn.claims(), &channel, crate::node::Action::Subscribe)?;
            let members = node.presence(&channel).await?;
            Ok((to_value(&PresenceReply { members }), None))
        }
        Op::History { channel, since, limit } => {
            node.authorize(&conn.claims(), &channel, crate::node::Action::Subscribe)?;
            let read = node.history(&channel, since.as_ref(), limit).await?;
            Ok((to_value(&HistoryReply::from(read)), None))
        }
        Op::Ping {} => Ok((Value::Object(Default::default()), None)),
        other => match other.into_meeting() {
            Ok(meeting) => meetings.handle(conn, meeting).await,
            Err(chat_op) => Ok((chat.handle(conn, chat_op).await?, None)),
        },
    }
}

fn decode_error(codec: Codec, bytes: &[u8], e: String) -> Handled {
    #[derive(serde::Deserialize)]
    struct OpOnly {
        op: String,
    }
    let id = salvage_id(codec, bytes);
    let unknown = codec.decode::<OpOnly>(bytes).ok().filter(|o| !crate::protocol::OP_NAMES.contains(&o.op.as_str()));
    match unknown {
        Some(o) => error_msg(id, ErrorCode::UnknownOp, &format!("unknown op {:?}", o.op)),
        None => error_msg(id, ErrorCode::BadRequest, &e),
    }
}

fn error_msg(id: Option<u64>, code: ErrorCode, message: &str) -> Handled {
    (ServerMsg::Error { id, code: code.as_str().into(), message: message.into(), retry_after_ms: None }, None)
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("protocol replies serialize to JSON")
}

fn to_message(codec: Codec, bytes: Bytes) -> Message {
    match codec {
        // Frames we encoded as JSON are UTF-8 by construction.
        Codec::Json => match Utf8Bytes::try_from(bytes) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(Bytes::new()),
        },
        Codec::MsgPack => Message::Binary(bytes),
    }
}

/// Writes a batch in one flush. A slow consumer's close interrupts a write that cannot finish.
async fn write_batch<S, E>(ws: &mut S, conn: &Conn, batch: Batch) -> Result<(), ()>
where
    S: Sink<Message, Error = E> + Unpin,
{
    if batch.close == Some(CloseReason::SlowConsumer) {
        return Ok(());
    }
    let codec = conn.codec;
    let mut write = pin!(async {
        for frame in batch.frames {
            ws.feed(to_message(codec, frame)).await?;
        }
        if batch.ping {
            ws.feed(Message::Ping(Bytes::new())).await?;
        }
        ws.flush().await
    });
    loop {
        tokio::select! {
            result = &mut write => return result.map_err(|_| ()),
            _ = conn.outbox.killed() => {
                if conn.outbox.closing() == Some(CloseReason::SlowConsumer) {
                    return Ok(());
                }
            }
        }
    }
}

/// Sends the close frame and waits (bounded) for the peer's reply, so that the peer reads the
/// code before the TCP connection goes.
async fn finish_close<S, E>(ws: &mut S, reason: CloseReason, grace: Duration)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
{
    let frame = CloseFrame { code: reason.code(), reason: Utf8Bytes::from_static(reason.text()) };
    let _ = tokio::time::timeout(grace, async {
        if ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn is_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<tungstenite::Error>() {
            return matches!(t, tungstenite::Error::Capacity(_));
        }
        cur = err.source();
    }
    false
}
