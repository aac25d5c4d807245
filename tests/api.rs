//! The server API, health, metrics, dev tokens, static pages and config errors.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn api_needs_the_key() {
    let hub = Hub::start(&[]);
    let http = reqwest::Client::new();
    for auth in [None, Some("wrong-key-wrong-key-wrong")] {
        let mut req = http.post(hub.http("/api/v1/publish")).json(&json!({ "channel": "news", "data": 1 }));
        if let Some(key) = auth {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _) = hub.api_get("/stats").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn api_publish_broadcast_history_and_errors() {
    let hub = Hub::start(&[]);
    let mut c = Client::connect(&hub, "reader").await;
    c.ok(json!({ "op": "subscribe", "channel": "user:reader" })).await;
    c.ok(json!({ "op": "subscribe", "channel": "public:a" })).await;
    let body = hub.publish("user:reader", json!({ "hello": 1 })).await;
    assert_eq!(body["position"]["offset"], 1);
    let p = c.next_of("push", "user:reader").await;
    assert_eq!(p["data"]["hello"], 1);
    assert!(p.get("from").is_none(), "server publications carry no user");

    let (status, body) = hub
        .api_post(
            "/broadcast",
            json!({ "channels": ["public:a", "user:reader", "nowhere:1"], "event": "note", "data": "x" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][2]["error"]["code"], "not_found");
    assert_eq!(c.next_of("push", "public:a").await["event"], "note");
    let p2 = c.next_of("push", "user:reader").await;
    assert_eq!(p2["offset"], 2, "{p2}");

    let (status, body) = hub.api_get("/channels/user:reader/history?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(body["publications"][0]["offset"], 1);
    let (status, body) = hub.api_get("/channels/user:reader/history?offset=1").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
    let (status, body) = hub.api_get("/channels/public:a/history").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("no_history")));

    let (status, body) = hub.api_post("/publish", json!({ "channel": "nowhere:1", "data": 1 })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let big = "z".repeat(70_000);
    let (status, body) = hub.api_post("/publish", json!({ "channel": "public:a", "data": big })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let long_event = "e".repeat(65);
    let (status, _) = hub.api_post("/publish", json!({ "channel": "public:a", "event": long_event, "data": 1 })).await;
    assert_eq!(status, 400);
    let (status, body) = hub.api_post("/publish", json!({ "data": 1 })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
    let resp = reqwest::Client::new()
        .post(hub.http("/api/v1/publish"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    let (_, channels) = hub.api_get("/channels?prefix=user:").await;
    assert_eq!(channels["channels"], json!([{ "channel": "user:reader", "subscribers": 1 }]));
    let (_, stats) = hub.api_get("/stats").await;
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["subscriptions"], 2);
    assert!(stats["process"]["rss_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn disconnect_user_closes_all_their_sockets() {
    let hub = Hub::start(&[]);
    let mut a1 = Client::connect(&hub, "dave").await;
    let mut a2 = Client::connect(&hub, "dave").await;
    let mut other = Client::connect(&hub, "erin").await;
    let (status, body) = hub.api_post("/users/dave/disconnect", json!({})).await;
    assert_eq!((status, body["closed_here"].as_u64()), (200, Some(2)));
    assert_eq!(a1.close_code().await, Some(4103));
    assert_eq!(a2.close_code().await, Some(4103));
    other.ok(json!({ "op": "ping" })).await;
    // A disconnected user may come back.
    Client::connect(&hub, "dave").await.ok(json!({ "op": "ping" })).await;
}

#[tokio::test]
async fn ban_closes_refuses_and_lifts() {
    let hub = Hub::start(&[]);
    let mut dave = Client::connect(&hub, "dave").await;
    let (status, body) = hub.api_post("/users/dave/ban", json!({ "reason": "spam" })).await;
    assert_eq!((status, body["closed_here"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(dave.close_code().await, Some(4104));
    // New sockets are refused while the ban lasts.
    let mut again = Client::open(&hub, hub::protocol::Codec::Json).await;
    let reply = again.request(json!({ "op": "connect", "token": token("dave") })).await;
    assert_eq!(reply["code"], "banned");
    assert_eq!(again.close_code().await, Some(4104));
    let (_, list) = hub.api_get("/bans").await;
    assert_eq!(list["bans"][0]["user"], "dave");
    assert_eq!(list["bans"][0]["reason"], "spam");
    // Lifted: welcome back. Lifting twice is not_found.
    let resp =
        reqwest::Client::new().delete(hub.http("/api/v1/users/dave/ban")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp =
        reqwest::Client::new().delete(hub.http("/api/v1/users/dave/ban")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    Client::connect(&hub, "dave").await.ok(json!({ "op": "ping" })).await;
    // A ban of no time is refused.
    let (status, _) = hub.api_post("/users/erin/ban", json!({ "duration_secs": 0 })).await;
    assert_eq!(status, 400);
    let (status, body) = hub.api_post("/users/x/ban", json!({ "duration_secs": "soon" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
}

#[tokio::test]
async fn a_single_node_lists_itself() {
    let hub = Hub::start(&[]);
    let _c = Client::connect(&hub, "n").await;
    let (status, body) = hub.api_get("/nodes").await;
    assert_eq!(status, 200);
    assert_eq!(body["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(body["nodes"][0]["connections"], 1);
    assert_eq!(body["nodes"][0]["address"], hub.addr);
}

#[tokio::test]
async fn health_metrics_openapi_and_pages() {
    let hub = Hub::start(&[]);
    let get = |path: &str| reqwest::get(hub.http(path));
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);
    let ready: serde_json::Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let _c = Client::connect(&hub, "metric").await;
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(text.contains("hub_connections_open 1"), "{text}");
    let spec: serde_json::Value = get("/api/v1/openapi.json").await.unwrap().json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap_or_default().starts_with("3."));
    for path in [
        "/publish",
        "/broadcast",
        "/users/{user}/disconnect",
        "/channels",
        "/stats",
        "/swipes",
        "/matches",
        "/matches/{id}",
        "/matches/{id}/messages",
        "/users/{user}/conversations",
        "/reports",
        "/rooms",
        "/rooms/{id}",
        "/rooms/{id}/lock",
        "/rooms/{id}/participants/{user}",
    ] {
        assert!(spec["paths"].get(format!("/api/v1{path}")).is_some(), "openapi lacks {path}");
    }
    let page = get("/").await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
}

#[tokio::test]
async fn dev_tokens_only_in_dev_mode() {
    let hub = Hub::start(&[]);
    let body: serde_json::Value = reqwest::get(hub.http("/dev/token?sub=zoe&role=ops&channels=room:1,room:2"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["claims"]["channels"], json!(["room:1", "room:2"]));
    let token = body["token"].as_str().unwrap();
    let mut c = Client::connect_token(&hub, token, hub::protocol::Codec::Json).await;
    assert_eq!(c.connect_reply["user"], "zoe");
    c.ok(json!({ "op": "subscribe", "channel": "room:2" })).await;

    let prod = Hub::start(&["dev_mode=false"]);
    assert_eq!(reqwest::get(prod.http("/dev/token?sub=zoe")).await.unwrap().status().as_u16(), 404);
}

#[test]
fn bad_config_names_the_key() {
    let root = env!("CARGO_MANIFEST_DIR");
    let default = format!("{root}/config/default.toml");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hub"));
        if !args.contains(&"--config") {
            cmd.arg("--config").arg(&default);
        }
        cmd.args(args).arg("check-config");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = run(&["--set", "gateway.max_message_bytes=10"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("gateway.max_message_bytes"), "{err}");
    let (code, err) = run(&["--set", "gateway.ping_interval=\"soon\""], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("ping_interval"), "{err}");
    let (code, err) = run(&[], &[("HUB_GATEWAY__OUTBOX_FRAMES", "-3")]);
    assert_eq!(code, Some(2));
    assert!(err.to_lowercase().contains("gateway.outbox_frames"), "{err}");
    let (code, err) = run(&["--set", "gatway.x=1"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("gatway"), "{err}");
    let (code, _) = run(&["--set", "gateway.ping_interval=\"5s\""], &[("HUB_DEV_MODE", "false")]);
    assert_eq!(code, Some(0));
    // Other tools' HUB_* variables are not config; unknown keys inside a section still are errors.
    let (code, _) = run(&[], &[("HUB_BIN", "/x"), ("HUB_SOMETHING_ELSE", "1")]);
    assert_eq!(code, Some(0));
    let (code, err) = run(&[], &[("HUB_GATEWAY__PING_INTERVL", "5s")]);
    assert_eq!(code, Some(2));
    assert!(err.to_lowercase().contains("ping_intervl"), "{err}");
    let (code, err) = run(&["--config", "/nonexistent.toml"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not exist"), "{err}");
}
