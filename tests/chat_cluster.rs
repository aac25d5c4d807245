//! The chat on two real hub nodes linked by a real Redis and sharing one PostgreSQL database:
//! simultaneous mutual likes on different nodes, messages, receipts, status and closures
//! crossing nodes, and bans that reach every node.

mod common;

use common::{
    services::{Postgres, RedisServer},
    *,
};
use serde_json::{json, Value};

async fn device(hub: &Hub, user: &str) -> Client {
    let mut c = Client::connect(hub, user).await;
    c.ok(json!({ "op": "subscribe", "channel": format!("user:{user}") })).await;
    c
}

async fn next_event(c: &mut Client, event: &str) -> Value {
    loop {
        let p = c.next_push().await;
        if p["type"] == "push" && p["event"] == event {
            return p["data"].clone();
        }
    }
}

fn two_nodes(redis: &RedisServer, pg: &Postgres, db: &str) -> (Hub, Hub) {
    let url = pg.database(db);
    (Hub::start_node(&redis.url(), &url, &[]), Hub::start_node(&redis.url(), &url, &[]))
}

#[tokio::test]
async fn simultaneous_mutual_likes_on_two_nodes_make_one_match() {
    let redis = RedisServer::start();
    let pg = Postgres::start();
    let (n1, n2) = two_nodes(&redis, &pg, "likes");
    const PAIRS: usize = 12;
    let mut lefts = Vec::new();
    let mut rights = Vec::new();
    for i in 0..PAIRS {
        lefts.push(device(&n1, &format!("l{i}")).await);
        rights.push(device(&n2, &format!("r{i}")).await);
    }
    // Each pair likes each other at the same moment, one on each node.
    let mut swipes = Vec::new();
    for (i, (mut l, mut r)) in lefts.into_iter().zip(rights).enumerate() {
        swipes.push(tokio::spawn(async move {
            let (a, b) = tokio::join!(
                l.ok(json!({ "op": "chat.swipe", "user": format!("r{i}"), "kind": "like" })),
                r.ok(json!({ "op": "chat.swipe", "user": format!("l{i}"), "kind": "like" })),
            );
            assert!(a["matched"] == true || b["matched"] == true, "no match for pair {i}: {a} {b}");
            // Each side hears of the match once: the match push arrives, and the channel's
            // history holds exactly one.
            let la = next_event(&mut l, "match").await;
            let rb = next_event(&mut r, "match").await;
            assert_eq!(la["conversation"]["id"], rb["conversation"]["id"]);
            for (c, user) in [(&mut l, format!("l{i}")), (&mut r, format!("r{i}"))] {
                let h = c.ok(json!({ "op": "history", "channel": format!("user:{user}") })).await;
                let matches = h["publications"].as_array().unwrap().iter().filter(|p| p["event"] == "match").count();
                assert_eq!(matches, 1, "{user}: {h}");
            }
            (l, r, la["conversation"]["id"].as_i64().unwrap())
        }));
    }
    let mut pairs = Vec::new();
    for s in swipes {
        pairs.push(s.await.unwrap());
    }
    let ids: std::collections::BTreeSet<i64> = pairs.iter().map(|p| p.2).collect();
    assert_eq!(ids.len(), PAIRS);
    let (status, body) = n2.api_get("/users/l0/conversations").await;
    assert_eq!((status, body["conversations"].as_array().map(|c| c.len())), (200, Some(1)));

    // Messages and receipts cross nodes; the peer's status is seen from the other node.
    let (mut l, mut r, id) = pairs.remove(0);
    let ack = l.ok(json!({ "op": "chat.send", "conversation": id, "client_id": "x1", "text": "hello from n1" })).await;
    let got = next_event(&mut r, "message").await;
    assert_eq!((got["seq"].clone(), got["text"].clone()), (ack["seq"].clone(), json!("hello from n1")));
    r.ok(json!({ "op": "chat.read", "conversation": id, "seq": 1 })).await;
    assert_eq!(next_event(&mut l, "receipt").await["read"], 1);
    r.ok(json!({ "op": "chat.typing", "conversation": id })).await;
    assert_eq!(next_event(&mut l, "typing").await["user"], "r0");
    let list = l.ok(json!({ "op": "chat.conversations" })).await;
    assert_eq!(list["conversations"][0]["presence"]["status"], "online");
    drop(r);
    let p = next_event(&mut l, "presence").await;
    assert_eq!((p["user"].as_str(), p["status"].as_str()), (Some("r0"), Some("offline")));
    // An unmatch on node 2 closes it on node 1.
    let mut r = device(&n2, "r0").await;
    r.ok(json!({ "op": "chat.unmatch", "conversation": id })).await;
    assert_eq!(next_event(&mut l, "closed").await["conversation"], id);
    let code = l.err(json!({ "op": "chat.send", "conversation": id, "client_id": "x2", "text": "?" })).await;
    assert_eq!(code, "conversation_closed");
}

#[tokio::test]
async fn a_ban_closes_every_socket_on_every_node_and_refuses_new_ones() {
    let redis = RedisServer::start();
    let pg = Postgres::start();
    let (n1, n2) = two_nodes(&redis, &pg, "bans");
    let mut on1 = device(&n1, "mallory").await;
    let mut on2 = device(&n2, "mallory").await;
    let (status, _) = n1.api_post("/users/mallory/ban", json!({ "reason": "scam" })).await;
    assert_eq!(status, 200);
    assert_eq!(on1.close_code().await, Some(4104));
    assert_eq!(on2.close_code().await, Some(4104));
    for hub in [&n1, &n2] {
        let mut again = Client::open(hub, hub::protocol::Codec::Json).await;
        let reply = again.request(json!({ "op": "connect", "token": token("mallory") })).await;
        assert_eq!(reply["code"], "banned");
        assert_eq!(again.close_code().await, Some(4104));
    }
}

#[tokio::test]
async fn offline_means_no_socket_on_any_node() {
    let redis = RedisServer::start();
    let pg = Postgres::start();
    let (n1, n2) = two_nodes(&redis, &pg, "offline");
    let service_token = token_with("notifier", Some("service"), &[], hub::auth::now_secs() + 3600);
    let mut service = Client::connect_token(&n1, &service_token, hub::protocol::Codec::Json).await;
    service.ok(json!({ "op": "subscribe", "channel": "hooks:chat" })).await;
    let mut ann = device(&n1, "ann").await;
    let bob = device(&n2, "bob").await;
    let (_, m) = n1.api_post("/matches", json!({ "users": ["ann", "bob"] })).await;
    let id = m["id"].as_i64().unwrap();
    // bob is connected to node 2 only: node 1 knows he is online, so nothing is raised.
    ann.ok(json!({ "op": "chat.send", "conversation": id, "client_id": "1", "text": "online?" })).await;
    drop(bob);
    next_event(&mut ann, "presence").await;
    ann.ok(json!({ "op": "chat.send", "conversation": id, "client_id": "2", "text": "offline now" })).await;
    let e = service.next_of("push", "hooks:chat").await;
    assert_eq!((e["event"].as_str(), e["data"]["id"].as_str()), (Some("new_message"), Some(&*format!("{id}:2"))));
}
