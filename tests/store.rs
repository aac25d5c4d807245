//! The store's conformance suite, run on SQLite and on PostgreSQL, and the hub's behaviour when
//! its database goes away.

mod common;

use common::{services::Postgres, *};
use hub::{
    config::StoreConfig,
    store::{Ban, SqlStore, Store},
};
use serde_json::json;

async fn conformance(store: &dyn Store) {
    store.ping().await.unwrap();
    assert!(store.bans(100).await.unwrap().is_empty());
    let forever = Ban { user: "ann".into(), reason: "spam".into(), created_at: 10, until: None };
    let timed = Ban { user: "bob".into(), reason: "flood".into(), created_at: 10, until: Some(200) };
    store.ban(&forever).await.unwrap();
    store.ban(&timed).await.unwrap();
    assert_eq!(store.bans(100).await.unwrap(), vec![forever.clone(), timed.clone()]);
    // A timed ban ends.
    assert_eq!(store.bans(200).await.unwrap(), vec![forever.clone()]);
    // Banning again replaces.
    let longer = Ban { until: Some(900), reason: "again".into(), ..timed.clone() };
    store.ban(&longer).await.unwrap();
    assert_eq!(store.bans(300).await.unwrap(), vec![forever.clone(), longer]);
    assert!(store.unban("bob").await.unwrap());
    assert!(!store.unban("bob").await.unwrap());
    assert_eq!(store.bans(0).await.unwrap(), vec![forever]);
    // Names are data, not SQL.
    let odd = Ban { user: "x'); DROP TABLE bans; --".into(), reason: "é ü 🙂".into(), created_at: 1, until: None };
    store.ban(&odd).await.unwrap();
    assert!(store.bans(0).await.unwrap().contains(&odd));
}

fn config(url: String) -> StoreConfig {
    StoreConfig { url, ..StoreConfig::default() }
}

#[tokio::test]
async fn sqlite_store_conformance() {
    let path = temp_path("nested/dir/hub.db");
    let store = SqlStore::open(&config(format!("sqlite://{}", path.display()))).await.unwrap();
    conformance(&store).await;
    // Migrations are idempotent: opening again keeps the data.
    drop(store);
    let again = SqlStore::open(&config(format!("sqlite://{}", path.display()))).await.unwrap();
    assert_eq!(again.bans(0).await.unwrap().len(), 2);
}

#[tokio::test]
async fn postgres_store_conformance() {
    let pg = Postgres::start();
    let url = pg.database("conformance");
    let store = SqlStore::open(&config(url.clone())).await.unwrap();
    conformance(&store).await;
    drop(store);
    let again = SqlStore::open(&config(url)).await.unwrap();
    assert_eq!(again.bans(0).await.unwrap().len(), 2);
}

#[tokio::test]
async fn migrate_subcommand_prepares_the_database() {
    let pg = Postgres::start();
    let url = pg.database("migrated");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["--set", &format!("store.url=\"{url}\""), "migrate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = SqlStore::open(&config(url)).await.unwrap();
    assert!(store.bans(0).await.unwrap().is_empty());
}

/// PostgreSQL down: what needs it fails with `unavailable`; sockets, pub/sub and the rest go on;
/// when it is back, so is everything.
#[tokio::test]
async fn database_outage_fails_only_what_needs_it() {
    let mut pg = Postgres::start();
    let url = pg.database("outage");
    let hub = Hub::start(&[&format!("store.url=\"{url}\""), "store.acquire_timeout=\"1s\""]);
    let mut a = Client::connect(&hub, "a").await;
    a.ok(json!({ "op": "subscribe", "channel": "lobby" })).await;
    pg.stop();
    let (status, body) = hub.api_post("/users/zed/ban", json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    let (status, body) = hub.api_get("/bans").await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")));
    // Everything else still works.
    let mut b = Client::connect(&hub, "b").await;
    b.ok(json!({ "op": "publish", "channel": "lobby", "data": "still here" })).await;
    assert_eq!(a.next_of("push", "lobby").await["data"], "still here");
    pg.restart();
    let (status, _) = hub.api_post("/users/zed/ban", json!({})).await;
    assert_eq!(status, 200);
}
