//! One client socket: TCP from a chosen source address, the WebSocket handshake with the codec's
//! subprotocol, the `connect` op and optionally a `subscribe`, then typed frames in and out.
//! Requests use the hub's own `protocol` types; incoming frames are read with a lean view that
//! pulls out only the fields a load test needs.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use hub::auth::{mint_hs256, now_secs, Claims};
use hub::protocol::{Codec, Op, Request, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CodecArg {
    Json,
    Msgpack,
}

impl CodecArg {
    pub fn codec(self) -> Codec {
        match self {
            CodecArg::Json => Codec::Json,
            CodecArg::Msgpack => Codec::MsgPack,
        }
    }

    fn subprotocol(self) -> &'static str {
        match self {
            CodecArg::Json => SUBPROTOCOL_JSON,
            CodecArg::Msgpack => SUBPROTOCOL_MSGPACK,
        }
    }
}

/// A hub WebSocket URL with its address resolved (once per process, not per socket).
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    /// Resolves `url`; refuses anything but a loopback address.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        if uri.scheme_str() != Some("ws") {
            bail!("{url}: only ws:// URLs (loopback, no TLS)");
        }
        let host = uri.host().ok_or_else(|| anyhow!("{url}: no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| anyhow!("{url}: no IPv4 address"))?;
        if !addr.ip().is_loopback() {
            bail!("{url}: {addr} is not a loopback address; this tool stays on loopback");
        }
        Ok(Target { url: url.to_string(), addr })
    }
}

/// A frame from the hub, reduced to what the load test reads. Works for both codecs (the hub
/// encodes MessagePack with field names).
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub id: Option<u64>,
    /// For pushes, the publication's data; for replies, the reply body. Only `t` is read.
    #[serde(default)]
    pub data: Option<Stamp>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Stamp {
    /// Send time in µs since the epoch (publications of this tool only).
    #[serde(default)]
    pub t: Option<u64>,
}

/// What a publication carries: the send stamp and padding up to the payload size.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    pub t: u64,
    pub p: &'a str,
}

/// The bytes of a data frame, whatever its codec (text or binary).
pub fn frame_bytes(msg: &Message) -> Option<&[u8]> {
    match msg {
        Message::Text(t) => Some(t.as_bytes()),
        Message::Binary(b) => Some(b),
        _ => None,
    }
}

pub fn decode(codec: CodecArg, bytes: &[u8]) -> Result<Incoming<'_>, String> {
    codec.codec().decode::<Incoming>(bytes)
}

/// A request as a WebSocket message: JSON in text frames, MessagePack in binary frames.
pub fn request_message(codec: CodecArg, request: &Request) -> Message {
    let bytes = codec.codec().encode(request);
    match codec {
        CodecArg::Json => Message::Text(String::from_utf8(bytes.to_vec()).expect("JSON is UTF-8").into()),
        CodecArg::Msgpack => Message::Binary(bytes),
    }
}

pub fn token(secret: &str, user: String, ttl_secs: u64) -> String {
    mint_hs256(secret, &Claims { sub: user, exp: now_secs() + ttl_secs, role: None, channels: Vec::new() })
}

/// Opens a socket from `source` (None: let the kernel choose) and completes the WebSocket
/// handshake.
pub async fn open(
    target: &Target,
    source: Option<IpAddr>,
    codec: CodecArg,
    read_buffer_bytes: usize,
) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4().context("socket")?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(target.addr).await.context("TCP connect")?;
    stream.set_nodelay(true)?;
    let mut request = target.url.as_str().into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(codec.subprotocol()));
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let (ws, _response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    Ok(ws)
}

/// Sends one request and waits for the reply with its id. Frames that arrive before it (pushes
/// from an earlier subscription) are counted in `skipped`.
pub async fn call(ws: &mut Ws, codec: CodecArg, request: &Request, skipped: &mut u64) -> anyhow::Result<()> {
    ws.send(request_message(codec, request)).await?;
    loop {
        let msg = ws.next().await.ok_or_else(|| anyhow!("closed before the reply"))??;
        if let Message::Close(frame) = &msg {
            let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
            bail!("closed by the hub with {code} before the reply");
        }
        let Some(bytes) = frame_bytes(&msg) else {
            continue;
        };
        let frame = decode(codec, bytes).map_err(|e| anyhow!("bad frame: {e}"))?;
        match (frame.kind.as_ref(), frame.id) {
            ("reply", Some(id)) if id == request.id => return Ok(()),
            ("error", Some(id)) if id == request.id => {
                bail!("{}: {}", frame.code.as_deref().unwrap_or("error"), frame.message.as_deref().unwrap_or(""))
            }
            _ => *skipped += 1,
        }
    }
}

/// Opens a socket, authenticates as `user` and, with a channel, subscribes to it.
pub async fn open_session(
    target: &Target,
    source: Option<IpAddr>,
    codec: CodecArg,
    read_buffer_bytes: usize,
    token: String,
    channel: Option<String>,
) -> anyhow::Result<Ws> {
    let mut ws = open(target, source, codec, read_buffer_bytes).await?;
    let mut skipped = 0;
    call(&mut ws, codec, &Request { id: 1, op: Op::Connect { token } }, &mut skipped).await.context("connect")?;
    if let Some(channel) = channel {
        call(&mut ws, codec, &Request { id: 2, op: Op::Subscribe { channel, since: None } }, &mut skipped)
            .await
            .context("subscribe")?;
    }
    Ok(ws)
}

/// Closes politely, but never waits longer than `grace` for the hub's answer.
pub async fn close(mut ws: Ws, grace: Duration) {
    let _ = tokio::time::timeout(grace, async {
        if ws.close(None).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub::protocol::ServerMsg;
    use serde_json::json;

    #[test]
    fn reads_pushes_and_replies_in_both_codecs() {
        for codec in [CodecArg::Json, CodecArg::Msgpack] {
            let push = ServerMsg::Push {
                channel: "bench:1".into(),
                offset: None,
                event: "message".into(),
                data: json!({"t": 1_700_000_000_123_456u64, "p": "xxxx"}),
                from: Some("u".into()),
            };
            let bytes = codec.codec().encode(&push);
            let f = decode(codec, &bytes).unwrap();
            assert_eq!(f.kind, "push");
            assert_eq!(f.data.unwrap().t, Some(1_700_000_000_123_456));

            let reply = ServerMsg::Reply { id: 7, data: json!({"client": "c", "ping_interval_ms": 25000}) };
            let bytes = codec.codec().encode(&reply);
            let f = decode(codec, &bytes).unwrap();
            assert_eq!((f.kind.as_ref(), f.id), ("reply", Some(7)));
            assert_eq!(f.data.unwrap().t, None);

            let err = ServerMsg::Error {
                id: Some(3),
                code: "rate_limited".into(),
                message: "too many".into(),
                retry_after_ms: None,
            };
            let bytes = codec.codec().encode(&err);
            let f = decode(codec, &bytes).unwrap();
            assert_eq!(f.code.as_deref(), Some("rate_limited"));
        }
    }

    #[test]
    fn requests_use_text_for_json_and_binary_for_msgpack() {
        let r = Request { id: 1, op: Op::Ping {} };
        assert!(matches!(request_message(CodecArg::Json, &r), Message::Text(_)));
        assert!(matches!(request_message(CodecArg::Msgpack, &r), Message::Binary(_)));
    }
}
