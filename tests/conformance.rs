//! One suite per backend trait, run against every implementation: the in-process ones and the
//! Redis ones (against a real redis-server).

mod common;

use std::{sync::Arc, time::Duration};

use common::services::RedisServer;
use hub::{
    cluster::{RedisHistory, RedisLink, RedisPresence},
    config::{ClusterConfig, ClusterMode},
    history::{History, HistoryOptions, MemoryHistory},
    presence::{MemoryPresence, Presence},
    protocol::{ClientInfo, Publication, StreamPosition},
};
use serde_json::json;

async fn link(redis: &RedisServer, node: &str) -> Arc<RedisLink> {
    let config = ClusterConfig { mode: ClusterMode::Redis, redis_urls: vec![redis.url()], ..ClusterConfig::default() };
    RedisLink::connect(&config, node).await.expect("connect to redis")
}

fn publication(channel: &str, n: u64) -> Publication {
    Publication::new(Arc::from(channel), 0, "message".into(), json!(n), Some("u".into()))
}

const OPTS: HistoryOptions = HistoryOptions { size: 3, ttl: Duration::from_secs(60) };

async fn history_conformance(h: &dyn History) {
    // Reading an empty channel fixes its epoch at offset 0.
    let empty = h.read("c1", None, 10, OPTS).await.unwrap();
    assert_eq!(empty.position.offset, 0);
    assert!(empty.publications.is_empty());
    let mut last = None;
    for n in 1..=2 {
        let (p, pos) = h.append(publication("c1", n), OPTS).await.unwrap();
        assert_eq!((p.offset, pos.offset), (n, n));
        assert_eq!(pos.epoch, empty.position.epoch, "the epoch holds while the stream lives");
        last = Some(pos);
    }
    let mark = last.unwrap();
    for n in 3..=4 {
        h.append(publication("c1", n), OPTS).await.unwrap();
    }
    let r = h.read("c1", Some(&mark), 10, OPTS).await.unwrap();
    assert!(r.complete);
    assert_eq!(r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(r.publications[0].data, json!(3));
    assert_eq!(r.publications[0].from.as_deref(), Some("u"));
    // Limit: fewer than what follows is not complete.
    let r = h.read("c1", Some(&StreamPosition { offset: 2, epoch: mark.epoch.clone() }), 1, OPTS).await.unwrap();
    assert_eq!((r.publications.len(), r.complete), (1, false));
    // Size 3 keeps 2..=4 only: from 0 the gap cannot be filled.
    let r = h.read("c1", Some(&StreamPosition { offset: 0, epoch: mark.epoch.clone() }), 10, OPTS).await.unwrap();
    assert!(!r.complete);
    assert_eq!(r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![2, 3, 4]);
    // Wrong epoch, or an offset from the future: refetch.
    let r = h.read("c1", Some(&StreamPosition { offset: 3, epoch: "nope".into() }), 10, OPTS).await.unwrap();
    assert!(!r.complete && r.publications.is_empty());
    let r = h.read("c1", Some(&StreamPosition { offset: 9, epoch: mark.epoch.clone() }), 10, OPTS).await.unwrap();
    assert!(!r.complete);
    // Up to date: complete and empty.
    let r = h.read("c1", Some(&StreamPosition { offset: 4, epoch: mark.epoch.clone() }), 10, OPTS).await.unwrap();
    assert!(r.complete && r.publications.is_empty());
    // Channels are independent.
    let (p, _) = h.append(publication("c2", 1), OPTS).await.unwrap();
    assert_eq!(p.offset, 1);
}

async fn presence_conformance(p: &dyn Presence) {
    let a = ClientInfo { user: "a".into(), client: "n1-1".into() };
    let b = ClientInfo { user: "b".into(), client: "n1-2".into() };
    p.add("room", &a).await.unwrap();
    p.add("room", &a).await.unwrap();
    p.add("room", &b).await.unwrap();
    p.add("other", &b).await.unwrap();
    assert_eq!(p.members("room").await.unwrap(), vec![a.clone(), b.clone()]);
    p.remove("room", "n1-2").await.unwrap();
    p.remove("room", "n1-2").await.unwrap();
    assert_eq!(p.members("room").await.unwrap(), vec![a.clone()]);
    assert_eq!(p.members("other").await.unwrap(), vec![b]);
    p.remove("room", "n1-1").await.unwrap();
    assert!(p.members("room").await.unwrap().is_empty());
    assert!(p.members("never").await.unwrap().is_empty());
}

#[tokio::test]
async fn memory_history() {
    history_conformance(MemoryHistory::new().as_ref()).await;
}

#[tokio::test]
async fn redis_history() {
    let redis = RedisServer::start();
    history_conformance(&RedisHistory::new(link(&redis, "n1").await)).await;
}

#[tokio::test]
async fn memory_presence() {
    presence_conformance(&MemoryPresence::default()).await;
}

#[tokio::test]
async fn redis_presence() {
    let redis = RedisServer::start();
    presence_conformance(RedisPresence::new(link(&redis, "n1").await, Duration::from_secs(30)).as_ref()).await;
}

/// Entries of a node that stops refreshing lapse by themselves; a live node's do not.
#[tokio::test]
async fn redis_presence_of_a_dead_node_expires() {
    let redis = RedisServer::start();
    let observer = RedisPresence::new(link(&redis, "n0").await, Duration::from_secs(30));
    let live = RedisPresence::new(link(&redis, "n1").await, Duration::from_millis(900));
    let doomed = RedisPresence::new(link(&redis, "n2").await, Duration::from_millis(900));
    let a = ClientInfo { user: "alive".into(), client: "n1-1".into() };
    let d = ClientInfo { user: "doomed".into(), client: "n2-1".into() };
    live.add("room", &a).await.unwrap();
    doomed.add("room", &d).await.unwrap();
    assert_eq!(observer.members("room").await.unwrap().len(), 2);
    drop(doomed); // its refresher stops with it
                  // Wait for the event itself: the doomed entry disappearing (bounded by the guard).
    let gone = async {
        loop {
            let members = observer.members("room").await.unwrap();
            if members.len() == 1 {
                return members;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let members = tokio::time::timeout(common::GUARD, gone).await.expect("the dead node's entry expires");
    assert_eq!(members, vec![a], "the live node's refreshed entry stays");
}
