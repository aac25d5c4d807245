//! The chat service against the real binary: swipes and matches, messages, receipts, typing,
//! status, unmatch / block / report / ban, sync after a reconnect, offline events, bad input.
//! SQLite here; tests/chat_cluster.rs runs the cross-node and PostgreSQL cases.

mod common;

use common::*;
use serde_json::{json, Value};

/// A chat device: connected and subscribed to its user channel.
async fn device(hub: &Hub, user: &str) -> Client {
    let mut c = Client::connect(hub, user).await;
    c.ok(json!({ "op": "subscribe", "channel": format!("user:{user}") })).await;
    c
}

/// Next chat push with this event on the client's user channel.
async fn next_event(c: &mut Client, event: &str) -> Value {
    loop {
        let p = c.next_push().await;
        if p["type"] == "push" && p["event"] == event {
            return p["data"].clone();
        }
    }
}

async fn matched(hub: &Hub, a: &str, b: &str) -> i64 {
    let (status, body) = hub.api_post("/matches", json!({ "users": [a, b] })).await;
    assert!(status == 201 || status == 200, "{body}");
    body["id"].as_i64().expect("match id")
}

fn send(conversation: i64, client_id: &str, text: &str) -> Value {
    json!({ "op": "chat.send", "conversation": conversation, "client_id": client_id, "text": text })
}

#[tokio::test]
async fn mutual_like_makes_one_match_and_both_hear_it() {
    let hub = Hub::start(&[]);
    let mut alice = device(&hub, "alice").await;
    let mut bob = device(&hub, "bob").await;
    let first = alice.ok(json!({ "op": "chat.swipe", "user": "bob", "kind": "like" })).await;
    assert_eq!(first["matched"], false);
    assert_eq!(first["remaining"], 199);
    let pass = bob.ok(json!({ "op": "chat.swipe", "user": "carol", "kind": "pass" })).await;
    assert_eq!(pass["matched"], false);
    let second = bob.ok(json!({ "op": "chat.swipe", "user": "alice", "kind": "super_like" })).await;
    assert_eq!(second["matched"], true);
    let id = second["conversation"]["id"].as_i64().unwrap();
    assert_eq!(second["conversation"]["peer"], "alice");
    assert_eq!(second["conversation"]["presence"]["status"], "online");
    // alice hears of the super like and of the match; bob of the match.
    assert_eq!(next_event(&mut alice, "super_like").await["from"], "bob");
    let m = next_event(&mut alice, "match").await;
    assert_eq!((m["conversation"]["id"].as_i64(), m["conversation"]["peer"].as_str()), (Some(id), Some("bob")));
    assert_eq!(next_event(&mut bob, "match").await["conversation"]["peer"], "alice");
    // Liking again makes no second match.
    let again = alice.ok(json!({ "op": "chat.swipe", "user": "bob", "kind": "like" })).await;
    assert_eq!(again["conversation"]["id"].as_i64(), Some(id));
    let list = alice.ok(json!({ "op": "chat.conversations" })).await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1);
    // Bad swipes.
    assert_eq!(alice.err(json!({ "op": "chat.swipe", "user": "alice", "kind": "like" })).await, "bad_request");
    assert_eq!(alice.err(json!({ "op": "chat.swipe", "user": "bob", "kind": "love" })).await, "bad_request");
    assert_eq!(alice.err(json!({ "op": "chat.swipe", "user": "", "kind": "like" })).await, "bad_request");
}

#[tokio::test]
async fn messages_receipts_and_unread() {
    let hub = Hub::start(&[]);
    let mut alice = device(&hub, "alice").await;
    let mut bob = device(&hub, "bob").await;
    let id = matched(&hub, "alice", "bob").await;
    next_event(&mut alice, "match").await;
    next_event(&mut bob, "match").await;

    let ack = alice.ok(send(id, "c1", "hi bob")).await;
    assert_eq!(
        (ack["seq"].as_i64(), ack["from"].as_str(), ack["id"].as_str()),
        (Some(1), Some("alice"), Some(&*format!("{id}:1")))
    );
    assert!(ack["ts"].as_i64().unwrap() > 0);
    // A retry with the same client id: the same ack, nothing stored twice.
    assert_eq!(alice.ok(send(id, "c1", "hi bob")).await, ack);
    let with_photo = json!({ "op": "chat.send", "conversation": id, "client_id": "c2", "text": "look",
        "attachment": { "url": "https://cdn.example/p.jpg", "type": "image/jpeg" } });
    let ack2 = alice.ok(with_photo).await;
    assert_eq!(ack2["seq"], 2);
    assert_eq!(ack2["attachment"]["type"], "image/jpeg");

    // bob gets both (the retry's copy is dropped by seq), in order.
    let m1 = next_event(&mut bob, "message").await;
    assert_eq!((m1["seq"].as_i64(), m1["text"].as_str()), (Some(1), Some("hi bob")));
    let list = bob.ok(json!({ "op": "chat.conversations" })).await;
    assert_eq!(list["total_unread"], 2);
    assert_eq!(list["conversations"][0]["last_message"]["seq"], 2);

    // Delivered, then read, flow back to alice.
    let r = bob.ok(json!({ "op": "chat.delivered", "conversation": id, "seq": 2 })).await;
    assert_eq!((r["delivered"].as_i64(), r["read"].as_i64(), r["unread"].as_i64()), (Some(2), Some(0), Some(2)));
    let seen = next_event(&mut alice, "receipt").await;
    assert_eq!((seen["user"].as_str(), seen["delivered"].as_i64()), (Some("bob"), Some(2)));
    let r = bob.ok(json!({ "op": "chat.read", "conversation": id, "seq": 1 })).await;
    assert_eq!((r["read"].as_i64(), r["unread"].as_i64()), (Some(1), Some(1)));
    assert_eq!(next_event(&mut alice, "receipt").await["read"], 1);
    // Receipts only move forward and stop at the last message.
    let r = bob.ok(json!({ "op": "chat.read", "conversation": id, "seq": 99 })).await;
    assert_eq!((r["read"].as_i64(), r["unread"].as_i64()), (Some(2), Some(0)));
    let r = bob.ok(json!({ "op": "chat.read", "conversation": id, "seq": 1 })).await;
    assert_eq!(r["read"], 2);

    // Paging by seq.
    for i in 3..=7 {
        bob.ok(send(id, &format!("b{i}"), &format!("reply {i}"))).await;
    }
    let page = alice.ok(json!({ "op": "chat.history", "conversation": id, "limit": 3 })).await;
    let seqs: Vec<i64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!((seqs, page["more"].as_bool()), (vec![5, 6, 7], Some(true)));
    let page = alice.ok(json!({ "op": "chat.history", "conversation": id, "before": 5, "limit": 3 })).await;
    let seqs: Vec<i64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!((seqs, page["more"].as_bool()), (vec![2, 3, 4], Some(true)));
    let page = alice.ok(json!({ "op": "chat.history", "conversation": id, "after": 4 })).await;
    let seqs: Vec<i64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!((seqs, page["more"].as_bool()), (vec![5, 6, 7], Some(false)));
    assert_eq!(page["peer_read"], 2);
    let list = alice.ok(json!({ "op": "chat.conversations" })).await;
    assert_eq!((list["total_unread"].as_i64(), list["conversations"][0]["unread"].as_i64()), (Some(5), Some(5)));
}
