//! The worker's side of the chat scenario: one socket of a matched pair. It is subscribed to its
//! own `user:{id}`; once told to go it sends `chat.send` on its schedule, and it reads the
//! replies (ack latency), the peer's `message` pushes (delivery latency) and its own messages
//! pushed back to it (echoes).
//!
//! Every message's `client_id` is `{side}{k}-{send µs}`: the reply and both pushes carry it, so
//! the latencies need no table of sends, and the ids never repeat within a conversation.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hub::chat::protocol as chat;
use hub::protocol::{Op, Request};
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::conn::{self, Ws};
use crate::ipc::{self, ChatStats, SocketCounts};
use crate::sys;
use crate::worker::{Ended, Shared};

/// Request ids below this are the session's own (`connect`, `subscribe`); send k has id
/// `FIRST_SEND_ID + k`.
const FIRST_SEND_ID: u64 = 10;

/// A frame from the hub as the chat socket reads it.
#[derive(Debug, Deserialize)]
struct ChatFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

/// A stored message (send reply, `message` push), or anything else.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Data {
    Message(chat::Message),
    Other(IgnoredAny),
}

/// Send time in µs, from a `client_id` made by this tool.
fn stamp(client_id: &str) -> Option<u64> {
    client_id.rsplit_once('-').and_then(|(_, t)| t.parse().ok())
}

#[derive(Default)]
struct Slot {
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    echoed: AtomicU64,
}

/// What a worker's chat sockets share.
pub struct ChatState {
    go: watch::Sender<Option<u64>>,
    ack_histogram: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    duplicates: AtomicU64,
    other_pushes: AtomicU64,
    last_send_us: AtomicU64,
    last_ack_us: AtomicU64,
    /// One per socket of the worker, by `g - first`.
    slots: Vec<Slot>,
}

impl ChatState {
    pub fn new(sockets: u64) -> ChatState {
        ChatState {
            go: watch::channel(None).0,
            ack_histogram: Mutex::new(ipc::new_histogram()),
            errors: Mutex::new(BTreeMap::new()),
            duplicates: AtomicU64::new(0),
            other_pushes: AtomicU64::new(0),
            last_send_us: AtomicU64::new(0),
            last_ack_us: AtomicU64::new(0),
            slots: (0..sockets).map(|_| Slot::default()).collect(),
        }
    }

    /// Every sending socket starts its schedule from `start_us` (wall clock).
    pub fn go(&self, start_us: u64) {
        self.go.send_replace(Some(start_us));
    }

    pub fn stats(&self, first: u64) -> ChatStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ChatStats {
            ack_histogram: ipc::encode_histogram(&self.ack_histogram.lock().expect("histogram lock")),
            errors: self.errors.lock().expect("errors lock").iter().map(|(c, n)| (c.clone(), *n)).collect(),
            duplicates: load(&self.duplicates),
            other_pushes: load(&self.other_pushes),
            last_send_us: load(&self.last_send_us),
            last_ack_us: load(&self.last_ack_us),
            sockets: self
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| SocketCounts {
                    g: first + i as u64,
                    sent: load(&s.sent),
                    acked: load(&s.acked),
                    delivered: load(&s.delivered),
                    echoed: load(&s.echoed),
                })
                .collect(),
        }
    }
}

/// When a sender's messages fall due: message k at `start + phase + k / rate`, fewer than
/// `count`, and none at or after `end`.
struct Schedule {
    start: Instant,
    phase: f64,
    period: f64,
    count: u64,
    end: Instant,
    k: u64,
}

impl Schedule {
    fn due(&self) -> Option<Instant> {
        if self.k >= self.count {
            return None;
        }
        let at = self.start + Duration::from_secs_f64(self.phase + self.k as f64 * self.period);
        (at < self.end).then_some(at)
    }
}

/// The `Instant` of a wall-clock time in µs since the epoch.
fn instant_of(at_us: u64) -> Instant {
    let (now, now_us) = (Instant::now(), sys::now_us());
    if at_us >= now_us {
        now + Duration::from_micros(at_us - now_us)
    } else {
        now.checked_sub(Duration::from_micros(now_us - at_us)).unwrap_or(now)
    }
}

/// Drives one chat socket (already subscribed to `user:{me}`) until it is stopped or closed.
pub(crate) async fn drive(ws: &mut Ws, shared: &Shared, g: u64, me: &str, stop: &mut watch::Receiver<bool>) -> Ended {
    let plan = &shared.plan;
    let chat = plan.chat.as_ref().expect("a chat worker has a chat plan");
    let state = shared.chat.as_ref().expect("a chat worker has chat state");
    let i = (g - plan.first) as usize;
    let slot = &state.slots[i];
    let conversation = chat.conversations[i];
    let side = if chat.slot(g).1 { 'a' } else { 'b' };
    let sender = chat.sender_index(g);
    let text = "x".repeat(chat.text_bytes.max(1));
    let mut go = state.go.subscribe();
    let mut schedule: Option<Schedule> = None;
    let mut next: Option<Instant> = None;
    // Seqs of the peer's messages seen here, to tell duplicates.
    let mut seen = HashSet::new();
    let start_from = |start_us: u64, schedule: &mut Option<Schedule>| {
        let index = sender?;
        let period = 1.0 / chat.per_sender_rate;
        let start = instant_of(start_us);
        let s = Schedule {
            start,
            phase: index as f64 / chat.senders.max(1) as f64 * period,
            period,
            count: chat.per_sender_count,
            end: start + Duration::from_millis(chat.duration_ms),
            k: 0,
        };
        let due = s.due();
        *schedule = Some(s);
        due
    };
    if let Some(start_us) = *go.borrow_and_update() {
        next = start_from(start_us, &mut schedule);
    }
    loop {
        let sleep = async move {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(WsMessage::Close(frame))) => {
                    return Ended::Closed(frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005));
                }
                Some(Ok(msg)) => {
                    if let Some(bytes) = conn::frame_bytes(&msg) {
                        on_frame(shared, state, slot, me, &mut seen, bytes);
                    }
                }
                Some(Err(_)) | None => return Ended::Dropped,
            },
            changed = go.changed(), if schedule.is_none() && sender.is_some() => {
                match changed {
                    Ok(()) => {
                        if let Some(start_us) = *go.borrow_and_update() {
                            next = start_from(start_us, &mut schedule);
                        }
                    }
                    // The worker is going away; stop waiting for the start.
                    Err(_) => schedule = Some(Schedule {
                        start: Instant::now(), phase: 0.0, period: 1.0, count: 0, end: Instant::now(), k: 0,
                    }),
                }
            }
            _ = sleep => {
                let Some(s) = schedule.as_mut() else { continue };
                let sent_us = sys::now_us();
                let request = Request {
                    id: FIRST_SEND_ID + s.k,
                    op: Op::ChatSend(chat::Send {
                        conversation,
                        client_id: format!("{side}{}-{sent_us}", s.k),
                        text: text.clone(),
                        attachment: None,
                    }),
                };
                s.k += 1;
                next = s.due();
                if ws.send(conn::request_message(plan.codec, &request)).await.is_err() {
                    return Ended::Dropped;
                }
                slot.sent.fetch_add(1, Ordering::Relaxed);
                shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                state.last_send_us.fetch_max(sent_us, Ordering::Relaxed);
            }
            _ = stop.changed() => return Ended::Stopped,
        }
    }
}

fn on_frame(shared: &Shared, state: &ChatState, slot: &Slot, me: &str, seen: &mut HashSet<i64>, bytes: &[u8]) {
    let counters = &shared.counters;
    let Ok(frame) = shared.plan.codec.codec().decode::<ChatFrame>(bytes) else {
        counters.unexpected.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let now = sys::now_us();
    let latency = |client_id: &str| stamp(client_id).map(|t| now.saturating_sub(t).max(1));
    match (frame.kind.as_ref(), frame.event.as_deref(), frame.data) {
        ("reply", _, Some(Data::Message(m))) if frame.id.is_some_and(|id| id >= FIRST_SEND_ID) => {
            if let Some(us) = latency(&m.client_id) {
                state.ack_histogram.lock().expect("histogram lock").saturating_record(us);
            }
            slot.acked.fetch_add(1, Ordering::Relaxed);
            counters.acked.fetch_add(1, Ordering::Relaxed);
            state.last_ack_us.fetch_max(now, Ordering::Relaxed);
        }
        ("error", _, _) => {
            let code = frame.code.as_deref().unwrap_or("?").to_string();
            *state.errors.lock().expect("errors lock").entry(code).or_default() += 1;
            counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        ("push", Some("message"), Some(Data::Message(m))) => {
            if m.from == me {
                slot.echoed.fetch_add(1, Ordering::Relaxed);
            } else if !seen.insert(m.seq) {
                state.duplicates.fetch_add(1, Ordering::Relaxed);
            } else {
                if let Some(us) = latency(&m.client_id) {
                    shared.histogram.lock().expect("histogram lock").saturating_record(us);
                }
                slot.delivered.fetch_add(1, Ordering::Relaxed);
                counters.received.fetch_add(1, Ordering::Relaxed);
                counters.last_received_us.fetch_max(now, Ordering::Relaxed);
            }
        }
        ("push", _, _) => {
            state.other_pushes.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            counters.unexpected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::CodecArg;
    use hub::protocol::ServerMsg;
    use serde_json::json;

    fn message(from: &str, seq: i64, client_id: &str) -> chat::Message {
        chat::Message {
            id: format!("3:{seq}"),
            conversation: 3,
            seq,
            from: from.into(),
            client_id: client_id.into(),
            text: "xx".into(),
            attachment: None,
            ts: 1,
        }
    }

    #[test]
    fn reads_replies_and_message_pushes_in_both_codecs() {
        for codec in [CodecArg::Json, CodecArg::Msgpack] {
            let m = message("alice", 4, "a7-1700000000123456");
            let reply = ServerMsg::Reply { id: 17, data: serde_json::to_value(&m).unwrap() };
            let bytes = codec.codec().encode(&reply);
            let f: ChatFrame = codec.codec().decode(&bytes).unwrap();
            assert_eq!((f.kind.as_ref(), f.id), ("reply", Some(17)));
            let Some(Data::Message(back)) = f.data else { panic!("no message in {codec:?}") };
            assert_eq!(back, m);
            assert_eq!(stamp(&back.client_id), Some(1_700_000_000_123_456));

            let push = ServerMsg::Push {
                channel: "user:bob".into(),
                offset: Some(9),
                event: "message".into(),
                data: serde_json::to_value(&m).unwrap(),
                from: None,
            };
            let bytes = codec.codec().encode(&push);
            let f: ChatFrame = codec.codec().decode(&bytes).unwrap();
            assert_eq!(f.event.as_deref(), Some("message"));
            assert!(matches!(f.data, Some(Data::Message(_))));

            let presence = ServerMsg::Push {
                channel: "user:bob".into(),
                offset: Some(10),
                event: "presence".into(),
                data: json!({"user": "alice", "status": "online", "last_seen": 1}),
                from: None,
            };
            let bytes = codec.codec().encode(&presence);
            let f: ChatFrame = codec.codec().decode(&bytes).unwrap();
            assert!(matches!(f.data, Some(Data::Other(_))));
        }
    }

    #[test]
    fn schedule_spreads_senders_and_stops_at_its_end() {
        let start = Instant::now();
        let mut s = Schedule { start, phase: 0.25, period: 1.0, count: 10, end: start + Duration::from_secs(3), k: 0 };
        let mut dues = Vec::new();
        while let Some(at) = s.due() {
            dues.push(at.duration_since(start).as_secs_f64());
            s.k += 1;
        }
        assert_eq!(dues, [0.25, 1.25, 2.25]);
    }
}
