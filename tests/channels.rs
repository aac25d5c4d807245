//! Channels: namespace rules, publish/subscribe across connections, presence, history and
//! resume, slow consumers.

mod common;

use common::*;
use hub::auth::now_secs;
use serde_json::{json, Value};

#[tokio::test]
async fn namespace_rules_decide_who_subscribes_and_publishes() {
    let hub = Hub::start(&[]);
    let mut alice = Client::connect(&hub, "alice").await;
    let mut bob = Client::connect(&hub, "bob").await;
    // user:{id} is for that user only, and only the server publishes there.
    alice.ok(json!({ "op": "subscribe", "channel": "user:alice" })).await;
    assert_eq!(bob.err(json!({ "op": "subscribe", "channel": "user:alice" })).await, "forbidden");
    assert_eq!(alice.err(json!({ "op": "publish", "channel": "user:alice", "data": 1 })).await, "forbidden");
    // An admin may do both.
    let mut admin = Client::connect_token(
        &hub,
        &token_with("root", Some("admin"), &[], now_secs() + 60),
        hub::protocol::Codec::Json,
    )
    .await;
    admin.ok(json!({ "op": "subscribe", "channel": "user:alice" })).await;
    admin.ok(json!({ "op": "publish", "channel": "user:alice", "data": "hi" })).await;
    assert_eq!(alice.next_of("push", "user:alice").await["data"], "hi");
    // room: needs a grant in the token.
    assert_eq!(bob.err(json!({ "op": "subscribe", "channel": "room:7" })).await, "forbidden");
    let mut granted = Client::connect_token(
        &hub,
        &token_with("carol", None, &["room:7"], now_secs() + 60),
        hub::protocol::Codec::Json,
    )
    .await;
    granted.ok(json!({ "op": "subscribe", "channel": "room:7" })).await;
    assert_eq!(granted.err(json!({ "op": "subscribe", "channel": "room:8" })).await, "forbidden");
    // public: anyone reads, nobody writes over a socket.
    bob.ok(json!({ "op": "subscribe", "channel": "public:news" })).await;
    assert_eq!(bob.err(json!({ "op": "publish", "channel": "public:news", "data": 1 })).await, "forbidden");
    // Unknown namespace, bad names, double subscribe, unsubscribe of nothing.
    assert_eq!(bob.err(json!({ "op": "subscribe", "channel": "nowhere:1" })).await, "not_found");
    assert_eq!(bob.err(json!({ "op": "subscribe", "channel": "" })).await, "bad_request");
    assert_eq!(bob.err(json!({ "op": "subscribe", "channel": "a b" })).await, "bad_request");
    assert_eq!(bob.err(json!({ "op": "subscribe", "channel": "x".repeat(300) })).await, "bad_request");
    assert_eq!(bob.err(json!({ "op": "subscribe", "channel": "public:news" })).await, "already_subscribed");
    assert_eq!(bob.err(json!({ "op": "unsubscribe", "channel": "lobby" })).await, "not_subscribed");
}

#[tokio::test]
async fn subscription_limit_is_enforced() {
    let hub = Hub::start(&["gateway.max_subscriptions=2"]);
    let mut c = Client::connect(&hub, "greedy").await;
    c.ok(json!({ "op": "subscribe", "channel": "a" })).await;
    c.ok(json!({ "op": "subscribe", "channel": "b" })).await;
    assert_eq!(c.err(json!({ "op": "subscribe", "channel": "c" })).await, "limit_exceeded");
    c.ok(json!({ "op": "unsubscribe", "channel": "a" })).await;
    c.ok(json!({ "op": "subscribe", "channel": "c" })).await;
}

#[tokio::test]
async fn publications_reach_every_subscriber_in_order() {
    let hub = Hub::start(&[]);
    let mut subs = Vec::new();
    for i in 0..5 {
        let mut c = Client::connect(&hub, &format!("u{i}")).await;
        c.ok(json!({ "op": "subscribe", "channel": "feed" })).await;
        subs.push(c);
    }
    for n in 1..=20 {
        hub.publish("feed", json!({ "n": n })).await;
    }
    for c in &mut subs {
        for n in 1..=20u64 {
            let p = c.next_of("push", "feed").await;
            assert_eq!(p["data"]["n"], n);
            assert_eq!(p["offset"], n);
        }
    }
    // Unsubscribed: nothing more arrives; the next message on the socket is the ping reply.
    let c = &mut subs[0];
    c.ok(json!({ "op": "unsubscribe", "channel": "feed" })).await;
    hub.publish("feed", json!({ "n": 21 })).await;
    c.ok(json!({ "op": "ping" })).await;
    assert!(c.pushes.is_empty(), "{:?}", c.pushes);
}

#[tokio::test]
async fn presence_lists_members_and_announces_join_and_leave() {
    let hub = Hub::start(&[]);
    let mut alice = Client::connect(&hub, "alice").await;
    alice.ok(json!({ "op": "subscribe", "channel": "lobby" })).await;
    let own = alice.next_of("join", "lobby").await;
    assert_eq!(own["info"]["user"], "alice");
    let mut bob = Client::connect(&hub, "bob").await;
    bob.ok(json!({ "op": "subscribe", "channel": "lobby" })).await;
    assert_eq!(alice.next_of("join", "lobby").await["info"]["user"], "bob");
    let members = alice.ok(json!({ "op": "presence", "channel": "lobby" })).await;
    let users: Vec<&str> = members["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    assert_eq!(users, vec!["alice", "bob"]);
    let (status, body) = hub.api_get("/channels/lobby/presence").await;
    assert_eq!(status, 200);
    assert_eq!(body["members"].as_array().unwrap().len(), 2);
    // bob goes away without unsubscribing: his leave is announced.
    drop(bob);
    assert_eq!(alice.next_of("leave", "lobby").await["info"]["user"], "bob");
    let members = alice.ok(json!({ "op": "presence", "channel": "lobby" })).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    // A namespace without presence says so.
    assert_eq!(alice.err(json!({ "op": "presence", "channel": "public:x" })).await, "not_found");
}

/// The offsets of a list of publications; an absent list (a resume that missed nothing) is empty.
fn offsets(list: &Value) -> Vec<u64> {
    match list {
        Value::Null => Vec::new(),
        list => list.as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect(),
    }
}

#[tokio::test]
async fn resume_after_a_dropped_connection_gets_exactly_what_was_missed() {
    let hub = Hub::start(&[]);
    let mut c = Client::connect(&hub, "mobile").await;
    let sub = c.ok(json!({ "op": "subscribe", "channel": "user:mobile" })).await;
    let epoch = sub["position"]["epoch"].clone();
    for n in 1..=3 {
        hub.publish("user:mobile", json!(n)).await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = c.next_of("push", "user:mobile").await["offset"].as_u64().unwrap();
    }
    drop(c);
    for n in 4..=8 {
        hub.publish("user:mobile", json!(n)).await;
    }
    let mut c = Client::connect(&hub, "mobile").await;
    let sub =
        c.ok(json!({ "op": "subscribe", "channel": "user:mobile", "since": { "offset": last, "epoch": epoch } })).await;
    assert_eq!(sub["recovered"], true);
    assert_eq!(offsets(&sub["publications"]), vec![4, 5, 6, 7, 8]);
    assert_eq!(sub["publications"][0]["data"], 4);
    hub.publish("user:mobile", json!(9)).await;
    let live = c.next_of("push", "user:mobile").await;
    assert_eq!(live["offset"], 9, "the first live push follows the recovered ones");
    // A stale epoch cannot be recovered: the client is told to refetch.
    let mut d = Client::connect(&hub, "mobile").await;
    let sub =
        d.ok(json!({ "op": "subscribe", "channel": "user:mobile", "since": { "offset": 2, "epoch": "gone" } })).await;
    assert_eq!(sub["recovered"], false);
    assert!(sub["publications"].is_null());
    assert_eq!(sub["position"]["offset"], 9);
    // Channels without history refuse `since`.
    assert_eq!(
        d.err(json!({ "op": "subscribe", "channel": "public:x", "since": { "offset": 1, "epoch": "e" } })).await,
        "no_history"
    );
}

#[tokio::test]
async fn trimmed_history_means_refetch() {
    let hub = Hub::start(&[]);
    // The "room" namespace keeps 50 publications.
    let mut c =
        Client::connect_token(&hub, &token_with("r", None, &["room:1"], now_secs() + 60), hub::protocol::Codec::Json)
            .await;
    let sub = c.ok(json!({ "op": "subscribe", "channel": "room:1" })).await;
    let epoch = sub["position"]["epoch"].clone();
    drop(c);
    for n in 0..60 {
        hub.publish("room:1", json!(n)).await;
    }
    let mut c =
        Client::connect_token(&hub, &token_with("r", None, &["room:1"], now_secs() + 60), hub::protocol::Codec::Json)
            .await;
    let sub = c.ok(json!({ "op": "subscribe", "channel": "room:1", "since": { "offset": 0, "epoch": epoch } })).await;
    assert_eq!(sub["recovered"], false);
    // History paging still gives the newest 50.
    let page = c.ok(json!({ "op": "history", "channel": "room:1" })).await;
    assert_eq!(offsets(&page["publications"]), (11..=60).collect::<Vec<u64>>());
    let page = c
        .ok(json!({ "op": "history", "channel": "room:1", "since": { "offset": 55, "epoch": epoch }, "limit": 3 }))
        .await;
    assert_eq!(offsets(&page["publications"]), vec![56, 57, 58]);
}

/// Publications racing with a resuming subscribe are neither lost nor duplicated.
#[tokio::test]
async fn resume_during_concurrent_publishing_loses_and_duplicates_nothing() {
    let hub = Hub::start(&["gateway.rate_per_sec=100000.0", "gateway.rate_burst=100000.0"]);
    let mut first = Client::connect(&hub, "racer").await;
    let sub = first.ok(json!({ "op": "subscribe", "channel": "user:racer" })).await;
    let epoch = sub["position"]["epoch"].clone();
    drop(first);
    const TOTAL: u64 = 90;
    let publisher = {
        let url = hub.http("/api/v1/publish");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 1..=TOTAL {
                let resp = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&json!({ "channel": "user:racer", "data": n }))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
            }
        })
    };
    // Resubscribe while the publisher runs.
    let mut c = Client::connect(&hub, "racer").await;
    let sub =
        c.ok(json!({ "op": "subscribe", "channel": "user:racer", "since": { "offset": 0, "epoch": epoch } })).await;
    assert_eq!(sub["recovered"], true);
    let mut seen = offsets(&sub["publications"]);
    publisher.await.unwrap();
    while seen.last().copied().unwrap_or(0) < TOTAL {
        let p = c.next_of("push", "user:racer").await;
        seen.push(p["offset"].as_u64().unwrap());
    }
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<u64>>());
}

#[tokio::test]
async fn slow_consumer_is_closed_while_others_keep_flowing() {
    let hub =
        Hub::start(&["gateway.outbox_bytes=131072", "gateway.outbox_frames=100000", "gateway.close_grace=\"60s\""]);
    let mut slow = Client::connect(&hub, "slow").await;
    slow.ok(json!({ "op": "subscribe", "channel": "public:firehose" })).await;
    let mut fast = Client::connect(&hub, "fast").await;
    fast.ok(json!({ "op": "subscribe", "channel": "public:firehose" })).await;
    // 24 MB in 16 KiB publications: far more than the slow socket's kernel buffers and outbox hold.
    let chunk = "y".repeat(16 * 1024);
    const COUNT: usize = 1500;
    let fast_reader = tokio::spawn(async move {
        let mut got = 0;
        while got < COUNT {
            let p = fast.next_of("push", "public:firehose").await;
            assert_eq!(p["data"]["i"], got);
            got += 1;
        }
        got
    });
    for i in 0..COUNT {
        hub.publish("public:firehose", json!({ "i": i, "pad": chunk })).await;
    }
    assert_eq!(fast_reader.await.unwrap(), COUNT, "the fast subscriber got everything");
    // Only now does the slow one read: some publications, then close 4001.
    let mut received = 0;
    let code = loop {
        match tokio::time::timeout(GUARD, futures_util::StreamExt::next(&mut slow.ws)).await.unwrap() {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_))) => received += 1,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("slow consumer saw {e} after {received} frames instead of a close frame"),
            None => break None,
        }
    };
    assert_eq!(code, Some(4001));
    assert!(received < COUNT);
    let (_, stats) = hub.api_get("/stats").await;
    assert_eq!(stats["slow_consumers"], 1);
}

/// A socket that takes nothing for `write_timeout` while the hub writes is closed as a slow
/// consumer even when its queue is within bounds (and not mistaken for a missing pong).
#[tokio::test]
async fn stalled_writer_is_closed_as_slow_consumer() {
    let hub = Hub::start(&[
        "gateway.outbox_bytes=67108864",
        "gateway.outbox_frames=1000000",
        "gateway.write_timeout=\"300ms\"",
        "gateway.close_grace=\"60s\"",
    ]);
    let mut slow = Client::connect(&hub, "stuck").await;
    slow.ok(json!({ "op": "subscribe", "channel": "public:stall" })).await;
    let chunk = "s".repeat(16 * 1024);
    for i in 0..1500 {
        hub.publish("public:stall", json!({ "i": i, "pad": chunk })).await;
    }
    // The hub's own count says when it gave up on the socket; then the client reads.
    let wait = async {
        loop {
            let (_, stats) = hub.api_get("/stats").await;
            if stats["slow_consumers"] == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(GUARD, wait).await.expect("the stalled socket is given up");
    let code = loop {
        match tokio::time::timeout(GUARD, futures_util::StreamExt::next(&mut slow.ws)).await.unwrap() {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{e}"),
            None => break None,
        }
    };
    assert_eq!(code, Some(4001));
}
