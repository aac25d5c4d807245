//! One participant's signaling socket: `meeting.*` requests answered by id, and the pushes the
//! room sends it (SDP offers and answers, candidates, media errors, room events) on a channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, CodecArg, Target};

/// A push on the room's channel: its event name and data.
#[derive(Debug)]
pub struct Push {
    pub event: String,
    pub data: Value,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

pub struct Signal {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU64,
    timeout: Duration,
}

impl Signal {
    /// Connects with a token granting `room` as participant, and starts the reading and writing
    /// tasks; they end when the socket closes or the returned `Signal` is dropped.
    pub async fn connect(
        target: &Target,
        secret: &str,
        user: &str,
        room: &str,
        ttl_secs: u64,
        timeout: Duration,
    ) -> anyhow::Result<(Signal, mpsc::UnboundedReceiver<Push>)> {
        let claims = json!({
            "sub": user,
            "exp": hub::auth::now_secs() + ttl_secs,
            "rooms": { room: "participant" },
        });
        let token = hub::auth::mint_hs256(secret, &claims);
        let ws =
            tokio::time::timeout(timeout, conn::open_session(target, None, CodecArg::Json, 64 * 1024, token, None))
                .await
                .map_err(|_| anyhow!("connect timed out"))??;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let replies = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(text) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                match v.get("type").and_then(Value::as_str) {
                    Some("reply") | Some("error") => {
                        let Some(id) = v.get("id").and_then(Value::as_u64) else { continue };
                        let Some(tx) = replies.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) else {
                            continue;
                        };
                        let result = if v["type"] == "reply" {
                            Ok(v.get("data").cloned().unwrap_or(Value::Null))
                        } else {
                            Err(format!("{}: {}", v["code"].as_str().unwrap_or("?"), v["message"]))
                        };
                        let _ = tx.send(result);
                    }
                    Some("push") => {
                        let event = v.get("event").and_then(Value::as_str).unwrap_or("").to_string();
                        let data = v.get("data").cloned().unwrap_or(Value::Null);
                        if push_tx.send(Push { event, data }).is_err() {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        });
        let signal = Signal { out, pending, next_id: std::sync::atomic::AtomicU64::new(10), timeout };
        Ok((signal, push_rx))
    }

    /// Sends `op` with a fresh id and waits (bounded) for its reply's data.
    pub async fn request(&self, mut op: Value) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        op["id"] = json!(id);
        let what = op["op"].as_str().unwrap_or("?").to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        if self.out.send(Message::Text(op.to_string().into())).is_err() {
            bail!("{what}: socket closed");
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(data))) => Ok(data),
            Ok(Ok(Err(e))) => bail!("{what}: {e}"),
            Ok(Err(_)) => bail!("{what}: socket closed"),
            Err(_) => {
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                Err(anyhow!("{what}: no reply")).context("timed out")
            }
        }
    }

    /// Closes the socket (the writing task sends a close frame).
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}
