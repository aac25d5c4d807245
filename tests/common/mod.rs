//! Test harness: starts the real `hub` binary on an ephemeral port and talks to it over real
//! sockets. Timeouts here only turn a hang into a failure; no test asserts on time.

#![allow(dead_code)]

pub mod services;

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use hub::{
    auth::{mint_hs256, now_secs, Claims},
    protocol::{Codec, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK},
};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig, Message},
    MaybeTlsStream, WebSocketStream,
};

pub const SECRET: &str = "dev-secret-change-me-0123456789";
pub const API_KEY: &str = "dev-api-key-change-me-0123456789";
/// Failure guard for any single wait.
pub const GUARD: Duration = Duration::from_secs(30);

pub struct Hub {
    pub child: Child,
    pub addr: String,
}

impl Hub {
    /// Starts the hub with config/default.toml and `overrides` (`key=value`, as `--set`).
    pub fn start(overrides: &[&str]) -> Hub {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hub"));
        cmd.arg("--config").arg(format!("{root}/config/default.toml")).arg("--listen").arg("127.0.0.1:0");
        cmd.arg("--set").arg(format!("web_root=\"{root}/web-client\""));
        cmd.arg("--set").arg(format!("store.url=\"sqlite://{}\"", temp_path("hub.db").display()));
        // Every test hub has its own media port.
        cmd.arg("--set").arg("media.bind=\"127.0.0.1:0\"");
        for o in overrides {
            cmd.arg("--set").arg(o);
        }
        cmd.env("HUB_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start hub binary");
        let stdout = child.stdout.take().expect("hub stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("hub printed its address").expect("read hub stdout");
            if let Some(addr) = line.strip_prefix("hub listening on ") {
                break addr.trim().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Hub { child, addr }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn api_post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.http(&format!("/api/v1{path}")))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .expect("api request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn api_get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .get(self.http(&format!("/api/v1{path}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("api request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn publish(&self, channel: &str, data: Value) -> Value {
        let (status, body) = self.api_post("/publish", json!({ "channel": channel, "data": data })).await;
        assert_eq!(status, 200, "publish failed: {body}");
        body
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        unsafe_kill(self.child.id(), "TERM");
        self.child.wait().ok().and_then(|s| s.code())
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh path in a folder of this test process (removed with the system's temp files).
pub fn temp_path(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hub-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

pub fn token(sub: &str) -> String {
    token_with(sub, None, &[], now_secs() + 3600)
}

pub fn token_with(sub: &str, role: Option<&str>, channels: &[&str], exp: u64) -> String {
    let claims = Claims {
        sub: sub.into(),
        exp,
        role: role.map(String::from),
        channels: channels.iter().map(|c| c.to_string()).collect(),
    };
    mint_hs256(SECRET, &claims)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client: requests get their reply; pushes met on the way are kept in order.
pub struct Client {
    pub ws: Ws,
    pub codec: Codec,
    next_id: u64,
    pub pushes: VecDeque<Value>,
    pub connect_reply: Value,
}

impl Client {
    /// Opens a socket without authenticating.
    pub async fn open(hub: &Hub, codec: Codec) -> Client {
        let mut req = hub.ws_url().into_client_request().expect("ws request");
        let proto = if codec == Codec::MsgPack { SUBPROTOCOL_MSGPACK } else { SUBPROTOCOL_JSON };
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(proto));
        let config = WebSocketConfig::default().max_message_size(Some(64 << 20)).max_frame_size(Some(64 << 20));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false).await.expect("ws connect");
        Client { ws, codec, next_id: 1, pushes: VecDeque::new(), connect_reply: Value::Null }
    }

    /// Opens and authenticates as `user`; panics unless the connect succeeds.
    pub async fn connect(hub: &Hub, user: &str) -> Client {
        Self::connect_token(hub, &token(user), Codec::Json).await
    }

    pub async fn connect_token(hub: &Hub, token: &str, codec: Codec) -> Client {
        let mut c = Self::open(hub, codec).await;
        let reply = c.request(json!({ "op": "connect", "token": token })).await;
        assert_eq!(reply["type"], "reply", "connect failed: {reply}");
        c.connect_reply = reply["data"].clone();
        c
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    pub async fn send_value(&mut self, v: &Value) {
        let msg = match self.codec {
            Codec::Json => Message::text(v.to_string()),
            Codec::MsgPack => Message::binary(rmp_serde::to_vec_named(v).expect("msgpack")),
        };
        self.send_raw(msg).await;
    }

    /// Sends `op` (an object without id) and returns the whole reply or error message.
    pub async fn request(&mut self, mut op: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        op["id"] = json!(id);
        self.send_value(&op).await;
        self.reply_for(id).await
    }

    /// Ok data of a request, or panics with the error.
    pub async fn ok(&mut self, op: Value) -> Value {
        let reply = self.request(op.clone()).await;
        assert_eq!(reply["type"], "reply", "{op} failed: {reply}");
        reply["data"].clone()
    }

    /// Error code of a request that must fail.
    pub async fn err(&mut self, op: Value) -> String {
        let reply = self.request(op.clone()).await;
        assert_eq!(reply["type"], "error", "{op} should fail: {reply}");
        reply["code"].as_str().unwrap_or_default().to_string()
    }

    pub async fn reply_for(&mut self, id: u64) -> Value {
        loop {
            let msg = self.next_message().await.unwrap_or_else(|| panic!("socket closed before reply {id}"));
            let is_answer = matches!(msg["type"].as_str(), Some("reply") | Some("error"));
            if is_answer && (msg["id"] == json!(id) || msg["id"].is_null()) {
                return msg;
            }
            if !is_answer {
                self.pushes.push_back(msg);
            }
        }
    }

    /// Next decoded server message, or None when the socket closed.
    pub async fn next_message(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(GUARD, self.ws.next()).await.expect("no frame within the guard time")?;
            match msg.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(&t).expect("server sent valid JSON")),
                Message::Binary(b) => return Some(rmp_serde::from_slice(&b).expect("server sent valid MessagePack")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Next push (publication, join, leave), from the buffer or the socket.
    pub async fn next_push(&mut self) -> Value {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        self.next_message().await.expect("socket closed while waiting for a push")
    }

    /// Next push of type `kind` on `channel`, skipping others.
    pub async fn next_of(&mut self, kind: &str, channel: &str) -> Value {
        loop {
            let p = self.next_push().await;
            if p["type"] == kind && p["channel"] == channel {
                return p;
            }
        }
    }

    /// Reads until the server closes; returns the close code (None: closed without a frame).
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let msg = tokio::time::timeout(GUARD, self.ws.next()).await.expect("no close within the guard time");
            match msg {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
            }
        }
    }
}

impl Hub {
    /// A cluster node on `redis` with its store at `store_url`.
    pub fn start_node(redis: &str, store_url: &str, extra: &[&str]) -> Hub {
        let mode = "cluster.mode=\"redis\"".to_string();
        let urls = format!("cluster.redis_urls=[\"{redis}\"]");
        let store = format!("store.url=\"{store_url}\"");
        let mut all: Vec<&str> = vec![&mode, &urls, &store, "cluster.presence_ttl=\"2s\"", "cluster.node_ttl=\"2s\""];
        all.extend_from_slice(extra);
        Hub::start(&all)
    }

    /// Ends the process at once (SIGKILL): no goodbye to clients or to Redis.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it holds (for states that announce themselves with no event).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let wait = async {
        while !check().await {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(GUARD, wait).await.unwrap_or_else(|_| panic!("never happened: {what}"));
}
