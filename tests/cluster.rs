//! Several real hub processes linked by a real Redis: delivery, presence, disconnects, the node
//! registry, and what happens when a node is killed or Redis restarts.

mod common;

use std::time::Duration;

use common::{services::RedisServer, *};
use serde_json::{json, Value};

fn nodes(redis: &RedisServer, n: usize) -> Vec<Hub> {
    (0..n).map(|_| Hub::start_node(&redis.url(), &format!("sqlite://{}", temp_path("hub.db").display()), &[])).collect()
}

async fn readyz(hub: &Hub) -> u16 {
    match reqwest::get(hub.http("/readyz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn publications_and_presence_cross_nodes() {
    let redis = RedisServer::start();
    let hubs = nodes(&redis, 3);
    let mut clients = Vec::new();
    for (i, hub) in hubs.iter().enumerate() {
        let mut c = Client::connect(hub, &format!("u{i}")).await;
        c.ok(json!({ "op": "subscribe", "channel": "lobby" })).await;
        clients.push(c);
    }
    // u0 sees itself, then u1 and u2 join, though they are on other nodes.
    for user in ["u0", "u1", "u2"] {
        assert_eq!(clients[0].next_of("join", "lobby").await["info"]["user"], user);
    }
    // A socket publish on node 0 and an API publish on node 2 reach everyone, with offsets.
    clients[0].ok(json!({ "op": "publish", "channel": "lobby", "data": "from socket" })).await;
    hubs[2].publish("lobby", json!("from api")).await;
    for c in &mut clients {
        let a = c.next_of("push", "lobby").await;
        let b = c.next_of("push", "lobby").await;
        assert_eq!((a["data"].clone(), a["offset"].clone()), (json!("from socket"), json!(1)));
        assert_eq!((b["data"].clone(), b["offset"].clone()), (json!("from api"), json!(2)));
    }
    // Presence is cluster-wide, from any node and through the API of any node.
    let members = clients[1].ok(json!({ "op": "presence", "channel": "lobby" })).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 3);
    let (_, body) = hubs[2].api_get("/channels/lobby/presence").await;
    assert_eq!(body["members"].as_array().unwrap().len(), 3);
    // Leave crosses nodes too.
    drop(clients.pop());
    assert_eq!(clients[0].next_of("leave", "lobby").await["info"]["user"], "u2");
    // History is shared: a client of node 1 pages what node 0 and node 2 published.
    let page = clients[1].ok(json!({ "op": "history", "channel": "lobby" })).await;
    assert_eq!(page["publications"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn concurrent_publishers_on_different_nodes_keep_one_order() {
    let redis = RedisServer::start();
    let hubs = nodes(&redis, 2);
    let mut watchers = Vec::new();
    for hub in &hubs {
        let mut c = Client::connect(hub, "w").await;
        c.ok(json!({ "op": "subscribe", "channel": "user:w" })).await;
        watchers.push(c);
    }
    const EACH: u64 = 50;
    let mut tasks = Vec::new();
    for hub in &hubs {
        let url = hub.http("/api/v1/publish");
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0..EACH {
                let body = json!({ "channel": "user:w", "data": n });
                assert!(http.post(&url).bearer_auth(API_KEY).json(&body).send().await.unwrap().status().is_success());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Both nodes' subscribers see offsets 1..=100 in order, each once.
    for w in &mut watchers {
        let mut offsets = Vec::new();
        while offsets.len() < (2 * EACH) as usize {
            offsets.push(w.next_of("push", "user:w").await["offset"].as_u64().unwrap());
        }
        assert_eq!(offsets, (1..=2 * EACH).collect::<Vec<u64>>());
    }
}

#[tokio::test]
async fn disconnect_user_reaches_every_node() {
    let redis = RedisServer::start();
    let hubs = nodes(&redis, 3);
    let mut a = Client::connect(&hubs[0], "dave").await;
    let mut b = Client::connect(&hubs[1], "dave").await;
    let mut other = Client::connect(&hubs[0], "erin").await;
    let (status, _) = hubs[2].api_post("/users/dave/disconnect", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(a.close_code().await, Some(4103));
    assert_eq!(b.close_code().await, Some(4103));
    other.ok(json!({ "op": "ping" })).await;
}

#[tokio::test]
async fn node_registry_lists_live_nodes_and_forgets_dead_ones() {
    let redis = RedisServer::start();
    let mut hubs = nodes(&redis, 3);
    eventually("three nodes registered", || async {
        let (_, body) = hubs[0].api_get("/nodes").await;
        body["nodes"].as_array().map(|n| n.len()) == Some(3)
    })
    .await;
    let (_, body) = hubs[1].api_get("/nodes").await;
    let addrs: Vec<&str> = body["nodes"].as_array().unwrap().iter().map(|n| n["address"].as_str().unwrap()).collect();
    for hub in &hubs {
        assert!(addrs.contains(&hub.addr.as_str()), "{addrs:?}");
    }
    hubs[2].kill();
    eventually("the killed node drops out", || async {
        let (_, body) = hubs[0].api_get("/nodes").await;
        body["nodes"].as_array().map(|n| n.len()) == Some(2)
    })
    .await;
}

/// A node dies (SIGKILL) while messages flow; its client reconnects to another node and resumes
/// from its offset: every message arrives exactly once, counted.
#[tokio::test]
async fn resume_on_another_node_after_sigkill_loses_and_duplicates_nothing() {
    let redis = RedisServer::start();
    let mut hubs = nodes(&redis, 3);
    let mut c = Client::connect(&hubs[0], "mia").await;
    let sub = c.ok(json!({ "op": "subscribe", "channel": "user:mia" })).await;
    let epoch = sub["position"]["epoch"].clone();
    let mut watcher = Client::connect(&hubs[1], "watcher").await;
    watcher.ok(json!({ "op": "subscribe", "channel": "lobby" })).await;
    c.ok(json!({ "op": "subscribe", "channel": "lobby" })).await;
    assert_eq!(watcher.next_of("join", "lobby").await["info"]["user"], "watcher");
    assert_eq!(watcher.next_of("join", "lobby").await["info"]["user"], "mia");

    const TOTAL: u64 = 300;
    let url = hubs[2].http("/api/v1/publish");
    let publisher = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for n in 1..=TOTAL {
            let body = json!({ "channel": "user:mia", "data": n });
            assert!(http.post(&url).bearer_auth(API_KEY).json(&body).send().await.unwrap().status().is_success());
        }
    });
    // Receive a part, then the node under the client dies.
    let mut seen: Vec<u64> = Vec::new();
    while seen.len() < 50 {
        let p = c.next_of("push", "user:mia").await;
        seen.push(p["data"].as_u64().unwrap());
    }
    hubs[0].kill();
    // Whatever was already on the wire is still the client's.
    while let Some(msg) = c.next_message().await {
        if msg["type"] == "push" && msg["channel"] == "user:mia" {
            seen.push(msg["data"].as_u64().unwrap());
        }
    }
    let last = *seen.last().unwrap();
    // Reconnect elsewhere and resume.
    let mut c = Client::connect(&hubs[1], "mia").await;
    let sub =
        c.ok(json!({ "op": "subscribe", "channel": "user:mia", "since": { "offset": last, "epoch": epoch } })).await;
    assert_eq!(sub["recovered"], true, "{sub}");
    // No list when nothing was missed.
    for p in sub["publications"].as_array().into_iter().flatten() {
        seen.push(p["data"].as_u64().unwrap());
    }
    publisher.await.unwrap();
    while *seen.last().unwrap() < TOTAL {
        seen.push(c.next_of("push", "user:mia").await["data"].as_u64().unwrap());
    }
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<u64>>(), "nothing lost, nothing twice");
    // The dead node's presence entry lapses by itself.
    eventually("the dead node's member leaves presence", || async {
        let (_, body) = hubs[1].api_get("/channels/lobby/presence").await;
        body["members"].as_array().map(|m| m.len()) == Some(1)
    })
    .await;
}

/// Redis goes away: nodes keep serving their own clients and say "degraded"; when it is back they
/// reconnect by themselves and cross-node delivery resumes.
#[tokio::test]
async fn redis_restart_degrades_then_recovers() {
    let mut redis = RedisServer::start();
    let hubs = nodes(&redis, 2);
    let mut a = Client::connect(&hubs[0], "a").await;
    let mut a2 = Client::connect(&hubs[0], "a2").await;
    let mut b = Client::connect(&hubs[1], "b").await;
    for c in [&mut a, &mut a2, &mut b] {
        c.ok(json!({ "op": "subscribe", "channel": "public:news" })).await;
    }
    hubs[0].publish("public:news", json!("before")).await;
    assert_eq!(b.next_of("push", "public:news").await["data"], "before");

    redis.stop();
    eventually("node 0 reports degraded", || async { readyz(&hubs[0]).await == 503 }).await;
    // Local delivery goes on.
    a2.ok(json!({ "op": "ping" })).await;
    let (status, body) = hubs[0].api_post("/publish", json!({ "channel": "public:news", "data": "local" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.next_of("push", "public:news").await["data"], "before");
    assert_eq!(a.next_of("push", "public:news").await["data"], "local");

    redis.restart();
    eventually("both nodes ready again", || async { readyz(&hubs[0]).await == 200 && readyz(&hubs[1]).await == 200 })
        .await;
    // Cross-node delivery is back (subscriptions were restored on reconnect). A probe may race
    // the resubscription, so publish until one arrives, then check ordering of what follows.
    let mut n = 0;
    let arrived: Value = loop {
        n += 1;
        hubs[0].publish("public:news", json!({ "probe": n })).await;
        let got = tokio::time::timeout(Duration::from_millis(500), b.next_of("push", "public:news")).await;
        if let Ok(p) = got {
            break p;
        }
        assert!(n < 60, "cross-node delivery never resumed");
    };
    assert!(arrived["data"]["probe"].is_number());
    hubs[1].publish("public:news", json!("after")).await;
    loop {
        let p = a.next_of("push", "public:news").await;
        if p["data"] == "after" {
            break;
        }
    }
}

/// The same hub over a Redis Cluster: sharded pub/sub, per-slot scripts, presence and registry.
#[tokio::test]
async fn redis_cluster_mode_with_sharded_pubsub() {
    let cluster = common::services::RedisCluster::start(3);
    let urls = format!("cluster.redis_urls={}", cluster.urls_toml());
    let hubs: Vec<Hub> = (0..2)
        .map(|_| {
            let store = format!("store.url=\"sqlite://{}\"", temp_path("hub.db").display());
            Hub::start(&["cluster.mode=\"redis_cluster\"", &urls, &store, "cluster.node_ttl=\"2s\""])
        })
        .collect();
    let mut a = Client::connect(&hubs[0], "a").await;
    let mut b = Client::connect(&hubs[1], "b").await;
    // Channels spread over the slots of all three masters.
    let channels: Vec<String> = (0..12).map(|i| format!("chan{i}")).collect();
    for ch in &channels {
        a.ok(json!({ "op": "subscribe", "channel": ch })).await;
        b.ok(json!({ "op": "subscribe", "channel": ch })).await;
    }
    for (i, ch) in channels.iter().enumerate() {
        hubs[i % 2].publish(ch, json!(i)).await;
    }
    for c in [&mut a, &mut b] {
        for (i, ch) in channels.iter().enumerate() {
            let p = c.next_of("push", ch).await;
            assert_eq!((p["data"].clone(), p["offset"].clone()), (json!(i), json!(1)));
        }
    }
    let members = b.ok(json!({ "op": "presence", "channel": "chan3" })).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 2);
    eventually("both nodes registered", || async {
        let (_, body) = hubs[1].api_get("/nodes").await;
        body["nodes"].as_array().map(|n| n.len()) == Some(2)
    })
    .await;
    let (status, _) = hubs[1].api_post("/users/a/disconnect", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(a.close_code().await, Some(4103));
}
