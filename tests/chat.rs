//! The chat service against the real binary: swipes and matches, messages, receipts, typing,
//! status, unmatch / block / report / ban, sync after a reconnect, offline events, bad input.
//! Every test runs twice: on SQLite and on PostgreSQL. tests/chat_cluster.rs runs the
//! cross-node cases.

mod common;

use common::{services::Postgres, *};
use hub::{auth::now_secs, protocol::Codec};
use serde_json::{json, Value};

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A hub on a fresh database of the backend (the PostgreSQL server lives as long as the handle).
fn start(backend: Backend, overrides: &[&str]) -> (Hub, Option<Postgres>) {
    match backend {
        Backend::Sqlite => (Hub::start(overrides), None),
        Backend::Postgres => {
            let pg = Postgres::start();
            let store = format!("store.url=\"{}\"", pg.database("chat"));
            let mut all = vec![store.as_str()];
            all.extend_from_slice(overrides);
            (Hub::start(&all), Some(pg))
        }
    }
}

/// Runs a test on both stores: `name::sqlite` and `name::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

on_both!(
    mutual_like_makes_one_match_and_both_hear_it,
    messages_receipts_and_unread,
    typing_is_live_and_limited,
    status_is_shown_to_matches_only,
    unmatch_closes_for_both_and_the_api_can_reopen,
    block_stops_everything_both_ways_and_reports_are_kept,
    bad_input_gets_codes_stores_nothing_and_the_socket_lives,
    swipe_limit_says_when_to_come_back,
    offline_users_raise_events_for_notifications,
    a_reconnecting_device_gets_every_message_once,
    msgpack_clients_chat_too,
);

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

async fn mutual_like_makes_one_match_and_both_hear_it(backend: Backend) {
    let (hub, _pg) = start(backend, &[]);
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
    // Super-liking again tells alice nothing new and uses no swipe.
    let third = bob.ok(json!({ "op": "chat.swipe", "user": "alice", "kind": "super_like" })).await;
    assert_eq!(third["remaining"], 198);
    // alice hears of the super like (once) and of the match; bob of the match.
    assert_eq!(next_event(&mut alice, "super_like").await["from"], "bob");
    let m = next_event(&mut alice, "match").await;
    let h = alice.ok(json!({ "op": "history", "channel": "user:alice" })).await;
    let super_likes = h["publications"].as_array().unwrap().iter().filter(|p| p["event"] == "super_like").count();
    assert_eq!(super_likes, 1, "{h}");
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

async fn messages_receipts_and_unread(backend: Backend) {
    let (hub, _pg) = start(backend, &[]);
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

async fn typing_is_live_and_limited(backend: Backend) {
    let (hub, _pg) = start(backend, &[]);
    let mut alice = device(&hub, "alice").await;
    let mut bob = device(&hub, "bob").await;
    let id = matched(&hub, "alice", "bob").await;
    next_event(&mut bob, "match").await;
    alice.ok(json!({ "op": "chat.typing", "conversation": id })).await;
    let reply = alice.request(json!({ "op": "chat.typing", "conversation": id, "typing": true })).await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    assert!(reply["retry_after_ms"].as_u64().is_some_and(|ms| (1..=1000).contains(&ms)), "{reply}");
    // Stopping is never limited.
    alice.ok(json!({ "op": "chat.typing", "conversation": id, "typing": false })).await;
    loop {
        let p = bob.next_push().await;
        if p["event"] == "typing" {
            assert!(p.get("offset").is_none(), "typing is not kept in history: {p}");
            assert_eq!((p["data"]["user"].as_str(), p["data"]["typing"].as_bool()), (Some("alice"), Some(true)));
            break;
        }
    }
    assert_eq!(next_event(&mut bob, "typing").await["typing"], false);
    // Not in bob's history: a resume brings back the match, never the typing.
    let h = bob.ok(json!({ "op": "history", "channel": "user:bob" })).await;
    assert!(h["publications"].as_array().unwrap().iter().all(|p| p["event"] != "typing"), "{h}");
}

async fn status_is_shown_to_matches_only(backend: Backend) {
    let (hub, _pg) = start(backend, &[]);
    let mut alice = device(&hub, "alice").await;
    let id = matched(&hub, "alice", "bob").await;
    next_event(&mut alice, "match").await;
    let list = alice.ok(json!({ "op": "chat.conversations" })).await;
    assert_eq!(list["conversations"][0]["presence"]["status"], "offline");
    assert!(list["conversations"][0]["presence"]["last_seen"].is_null());

    // A socket that does not receive bob's chat (not subscribed to user:bob) is no chat device.
    let mut bob_tab = Client::connect(&hub, "bob").await;
    assert_eq!(bob_tab.err(json!({ "op": "chat.status", "status": "away" })).await, "not_subscribed");
    let reply = alice.ok(json!({ "op": "chat.presence", "users": ["bob"] })).await;
    assert_eq!(reply["presence"][0]["status"], "offline");
    let mut bob = device(&hub, "bob").await;
    let p = next_event(&mut alice, "presence").await;
    assert_eq!((p["user"].as_str(), p["status"].as_str()), (Some("bob"), Some("online")));
    // A second device changes nothing; away only when every device is away.
    let mut bob2 = device(&hub, "bob").await;
    assert_eq!(bob.ok(json!({ "op": "chat.status", "status": "away" })).await["status"], "online");
    assert_eq!(bob2.ok(json!({ "op": "chat.status", "status": "away" })).await["status"], "away");
    assert_eq!(next_event(&mut alice, "presence").await["status"], "away");
    assert_eq!(bob.err(json!({ "op": "chat.status", "status": "busy" })).await, "bad_request");
    drop(bob);
    // Unsubscribing from the user channel ends a device too.
    bob2.ok(json!({ "op": "unsubscribe", "channel": "user:bob" })).await;
    let p = next_event(&mut alice, "presence").await;
    assert_eq!(p["status"], "offline");
    bob_tab.ok(json!({ "op": "ping" })).await;
    let list = alice.ok(json!({ "op": "chat.conversations" })).await;
    let seen = list["conversations"][0]["presence"]["last_seen"].as_i64().expect("last seen after a visit");
    assert!(seen > 0);

    // carol is no match of alice: her status is not shown, even when asked for.
    let _carol = device(&hub, "carol").await;
    let reply = alice.ok(json!({ "op": "chat.presence", "users": ["bob", "carol"] })).await;
    let users: Vec<&str> = reply["presence"].as_array().unwrap().iter().map(|p| p["user"].as_str().unwrap()).collect();
    assert_eq!(users, vec!["bob"]);
    // After an unmatch, not even bob's.
    alice.ok(json!({ "op": "chat.unmatch", "conversation": id })).await;
    let reply = alice.ok(json!({ "op": "chat.presence", "users": ["bob"] })).await;
    assert_eq!(reply["presence"], json!([]));
}

async fn unmatch_closes_for_both_and_the_api_can_reopen(backend: Backend) {
    let (hub, _pg) = start(backend, &[]);
    let mut alice = device(&hub, "alice").await;
    let mut bob = device(&hub, "bob").await;
    let id = matched(&hub, "alice", "bob").await;
    alice.ok(send(id, "a1", "hello")).await;
    let closed = bob.ok(json!({ "op": "chat.unmatch", "conversation": id })).await;
    assert_eq!(closed["conversation"]["state"], "closed");
    assert!(closed["conversation"].get("presence").is_none());
    for c in [&mut alice, &mut bob] {
        let e = next_event(c, "closed").await;
        assert_eq!((e["conversation"].as_i64(), e["state"].as_str()), (Some(id), Some("closed")));
    }
    assert_eq!(alice.err(send(id, "a2", "still there?")).await, "conversation_closed");
    assert_eq!(alice.err(json!({ "op": "chat.typing", "conversation": id })).await, "conversation_closed");
    // A retried send of a message stored before the unmatch still gets its ack.
    assert_eq!(alice.ok(send(id, "a1", "hello")).await["seq"], 1);
    // Mutual likes do not reopen it; the server API does.
    alice.ok(json!({ "op": "chat.swipe", "user": "bob", "kind": "like" })).await;
    let again = bob.ok(json!({ "op": "chat.swipe", "user": "alice", "kind": "like" })).await;
    assert_eq!(again["matched"], false);
    let (status, body) = hub.api_post("/matches", json!({ "users": ["bob", "alice"] })).await;
    assert_eq!((status, body["id"].as_i64(), body["state"].as_str()), (201, Some(id), Some("active")));
    next_event(&mut alice, "match").await;
    assert_eq!(alice.ok(send(id, "a3", "again")).await["seq"], 2);
    // The API closes it too.
    let resp = reqwest::Client::new()
        .delete(hub.http(&format!("/api/v1/matches/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    next_event(&mut bob, "closed").await;
    assert_eq!(bob.err(send(id, "b1", "hm")).await, "conversation_closed");
    let (status, body) = hub.api_get(&format!("/matches/{id}/messages")).await;
    assert_eq!((status, body["messages"].as_array().map(|m| m.len())), (200, Some(2)));
}

async fn block_stops_everything_both_ways_and_reports_are_kept(backend: Backend) {
    let (hub, _pg) = start(backend, &[]);
    let mut alice = device(&hub, "alice").await;
    let mut bob = device(&hub, "bob").await;
    let id = matched(&hub, "alice", "bob").await;
    bob.ok(send(id, "b1", "hey")).await;
    alice.ok(json!({ "op": "chat.block", "user": "bob" })).await;
    next_event(&mut alice, "closed").await;
    next_event(&mut bob, "closed").await;
    assert_eq!(bob.err(send(id, "b2", "why?")).await, "blocked");
    assert_eq!(alice.err(send(id, "a1", "bye")).await, "blocked");
    assert_eq!(bob.err(json!({ "op": "chat.swipe", "user": "alice", "kind": "like" })).await, "blocked");
    assert_eq!(alice.err(json!({ "op": "chat.swipe", "user": "bob", "kind": "like" })).await, "blocked");
    let (status, body) = hub.api_post("/matches", json!({ "users": ["alice", "bob"] })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("blocked")));
    assert_eq!(alice.err(json!({ "op": "chat.block", "user": "alice" })).await, "bad_request");

    let report =
        json!({ "op": "chat.report", "user": "bob", "reason": "spam", "conversation": id, "details": "links" });
    let r = alice.ok(report).await;
    assert!(r["report"].as_i64().is_some());
    assert_eq!(alice.err(json!({ "op": "chat.report", "user": "bob", "reason": "" })).await, "bad_request");
    let long = "x".repeat(2001);
    assert_eq!(
        alice.err(json!({ "op": "chat.report", "user": "bob", "reason": "spam", "details": long })).await,
        "bad_request"
    );
    let (status, body) = hub.api_get("/reports").await;
    assert_eq!(status, 200);
    let reports = body["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0]["reporter"].as_str(), reports[0]["reported"].as_str()), (Some("alice"), Some("bob")));
    assert_eq!(reports[0]["conversation"].as_i64(), Some(id));
    // The history stays readable for moderators; nothing after the block was stored.
    let (_, body) = hub.api_get(&format!("/matches/{id}/messages")).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
}

async fn bad_input_gets_codes_stores_nothing_and_the_socket_lives(backend: Backend) {
    let (hub, _pg) = start(backend, &["chat.send_rate=5.0"]);
    let mut alice = device(&hub, "alice").await;
    let id = matched(&hub, "alice", "bob").await;
    let others = matched(&hub, "carol", "dave").await;
    assert_eq!(alice.err(send(others, "x1", "hi")).await, "not_matched");
    assert_eq!(alice.err(json!({ "op": "chat.history", "conversation": others })).await, "not_matched");
    assert_eq!(alice.err(json!({ "op": "chat.read", "conversation": others, "seq": 1 })).await, "not_matched");
    assert_eq!(alice.err(send(424242, "x2", "hi")).await, "not_found");
    assert_eq!(alice.err(send(id, "x3", "")).await, "bad_request");
    assert_eq!(alice.err(send(id, "x4", "   ")).await, "bad_request");
    assert_eq!(alice.err(send(id, "x5", &"a".repeat(4001))).await, "bad_request");
    assert_eq!(alice.err(send(id, "", "hi")).await, "bad_request");
    assert_eq!(alice.err(send(id, &"c".repeat(65), "hi")).await, "bad_request");
    let bad_attachment = json!({ "op": "chat.send", "conversation": id, "client_id": "x6", "text": "hi",
        "attachment": { "url": "javascript:alert(1)", "type": "image/png" } });
    assert_eq!(alice.err(bad_attachment).await, "bad_request");
    assert_eq!(
        alice.err(json!({ "op": "chat.send", "conversation": "one", "client_id": "x7", "text": "hi" })).await,
        "bad_request"
    );
    assert_eq!(alice.err(json!({ "op": "chat.send", "client_id": "x8", "text": "hi" })).await, "bad_request");
    assert_eq!(alice.err(json!({ "op": "chat.read", "conversation": id, "seq": 0 })).await, "bad_request");
    assert_eq!(alice.err(json!({ "op": "chat.history", "conversation": id, "limit": 0 })).await, "bad_request");
    assert_eq!(alice.err(json!({ "op": "chat.history", "conversation": id, "limit": 101 })).await, "bad_request");
    assert_eq!(alice.err(json!({ "op": "chat.nope" })).await, "unknown_op");
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    assert_eq!(alice.err(json!({ "op": "chat.presence", "users": many })).await, "bad_request");
    // A flood: the burst (twice the rate) goes through, then `rate_limited` with a wait.
    let mut limited = None;
    for i in 0..20 {
        let reply = alice.request(send(id, &format!("f{i}"), "flood")).await;
        if reply["type"] == "error" {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.expect("the flood was never limited");
    assert_eq!(limited["code"], "rate_limited");
    assert!(limited["retry_after_ms"].as_u64().is_some_and(|ms| ms >= 1), "{limited}");
    // The socket lives, and only the accepted flood messages were stored.
    alice.ok(json!({ "op": "ping" })).await;
    let page = alice.ok(json!({ "op": "chat.history", "conversation": id })).await;
    let texts: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert!(!texts.is_empty() && texts.iter().all(|t| *t == "flood"), "{texts:?}");
    let (_, other) = hub.api_get(&format!("/matches/{others}/messages")).await;
    assert_eq!(other["messages"], json!([]));
}

async fn swipe_limit_says_when_to_come_back(backend: Backend) {
    let (hub, _pg) = start(backend, &["chat.swipe_limit=3", "chat.super_like_limit=1"]);
    let mut alice = device(&hub, "alice").await;
    let r = alice.ok(json!({ "op": "chat.swipe", "user": "u1", "kind": "super_like" })).await;
    assert_eq!(r["remaining"], 2);
    let reply = alice.request(json!({ "op": "chat.swipe", "user": "u2", "kind": "super_like" })).await;
    assert_eq!(reply["code"], "swipe_limit", "{reply}");
    alice.ok(json!({ "op": "chat.swipe", "user": "u2", "kind": "like" })).await;
    assert_eq!(alice.ok(json!({ "op": "chat.swipe", "user": "u3", "kind": "pass" })).await["remaining"], 0);
    let reply = alice.request(json!({ "op": "chat.swipe", "user": "u4", "kind": "like" })).await;
    assert_eq!(reply["code"], "swipe_limit", "{reply}");
    let wait = reply["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(wait > 0 && wait <= 12 * 3600 * 1000, "{reply}");
    // Through the server API too, with the wait in the body.
    let (status, body) = hub.api_post("/swipes", json!({ "from": "alice", "to": "u5", "kind": "like" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("swipe_limit")));
    assert!(body["error"]["retry_after_ms"].as_u64().is_some());
    alice.ok(json!({ "op": "ping" })).await;
}

async fn offline_users_raise_events_for_notifications(backend: Backend) {
    let (hub, _pg) = start(backend, &[]);
    let mut service =
        Client::connect_token(&hub, &token_with("notifier", Some("service"), &[], now_secs() + 3600), Codec::Json)
            .await;
    service.ok(json!({ "op": "subscribe", "channel": "hooks:chat" })).await;
    let mut alice = device(&hub, "alice").await;
    let _bob = device(&hub, "bob").await;
    // carol is offline when the match is made: one new_match, for her.
    let with_carol = matched(&hub, "alice", "carol").await;
    let e = service.next_of("push", "hooks:chat").await;
    assert_eq!(
        (e["event"].as_str(), e["data"]["to"].as_str(), e["data"]["peer"].as_str()),
        (Some("new_match"), Some("carol"), Some("alice"))
    );
    let with_bob = matched(&hub, "alice", "bob").await;
    // bob is online: his message raises nothing; carol's does, and it is the next event.
    alice.ok(send(with_bob, "m1", "hi bob")).await;
    alice.ok(send(with_carol, "m2", "hi carol, this is a message long enough to be cut in its preview for the notification that goes out to her phone")).await;
    let e = service.next_of("push", "hooks:chat").await;
    assert_eq!(e["event"], "new_message", "{e}");
    let d = &e["data"];
    assert_eq!(
        (d["to"].as_str(), d["from"].as_str(), d["conversation"].as_i64()),
        (Some("carol"), Some("alice"), Some(with_carol))
    );
    assert_eq!(d["preview"].as_str().unwrap().chars().count(), 100);
    assert_eq!(d["id"], format!("{with_carol}:1"));
    // Users cannot read the hooks channel.
    assert_eq!(alice.err(json!({ "op": "subscribe", "channel": "hooks:chat" })).await, "forbidden");
}

async fn a_reconnecting_device_gets_every_message_once(backend: Backend) {
    let (hub, _pg) = start(backend, &["chat.send_rate=1000.0"]);
    let mut alice = device(&hub, "alice").await;
    let id = matched(&hub, "alice", "bob").await;
    const N: i64 = 60;
    // alice sends all the time; bob drops and comes back three times meanwhile.
    let sender = tokio::spawn(async move {
        for i in 1..=N {
            alice.ok(send(id, &format!("m{i}"), &format!("message {i}"))).await;
        }
        alice
    });
    let mut held: std::collections::BTreeMap<i64, String> = Default::default();
    for round in 0..4 {
        let mut bob = device(&hub, "bob").await;
        // Sync: list, then page after the highest seq held.
        let list = bob.ok(json!({ "op": "chat.conversations" })).await;
        let last = list["conversations"][0]["last_seq"].as_i64().unwrap_or(0);
        let mut after = held.keys().last().copied().unwrap_or(0);
        while after < last {
            let page = bob.ok(json!({ "op": "chat.history", "conversation": id, "after": after })).await;
            for m in page["messages"].as_array().unwrap() {
                let seq = m["seq"].as_i64().unwrap();
                held.insert(seq, m["text"].as_str().unwrap().to_string());
                after = seq;
            }
        }
        // Then live until a few more arrive (the last round: until the end).
        let target = if round == 3 { N } else { (after + 5).min(N) };
        while held.keys().last().copied().unwrap_or(0) < target {
            let m = next_event(&mut bob, "message").await;
            let seq = m["seq"].as_i64().unwrap();
            // A copy seen both live and in a page is the same message: kept once by seq.
            held.insert(seq, m["text"].as_str().unwrap().to_string());
        }
    }
    sender.await.unwrap();
    let expected: Vec<i64> = (1..=N).collect();
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), expected, "a message was lost");
    for (seq, text) in &held {
        assert_eq!(text, &format!("message {seq}"));
    }
    let (_, body) = hub.api_get(&format!("/matches/{id}/messages?limit=100")).await;
    assert_eq!(body["messages"].as_array().unwrap().len() as i64, N, "stored exactly once each");
}

async fn msgpack_clients_chat_too(backend: Backend) {
    let (hub, _pg) = start(backend, &[]);
    let mut alice = Client::connect_token(&hub, &token("alice"), Codec::MsgPack).await;
    alice.ok(json!({ "op": "subscribe", "channel": "user:alice" })).await;
    let id = matched(&hub, "alice", "bob").await;
    let ack = alice.ok(send(id, "p1", "binary hello")).await;
    assert_eq!(ack["seq"], 1);
    assert_eq!(next_event(&mut alice, "message").await["text"], "binary hello");
}
