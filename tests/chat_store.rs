//! The chat store's conformance suite, on SQLite and on PostgreSQL: the same contract on both,
//! including the races that matter (simultaneous mutual likes from two "nodes", i.e. two pools,
//! and simultaneous sends to one conversation).

mod common;

use std::{collections::BTreeSet, sync::Arc};

use common::{services::Postgres, *};
use hub::{
    chat::protocol::SwipeKind,
    config::StoreConfig,
    store::{Appended, ChatStore, NewMessage, ReceiptKind, ReportRow, SqlStore},
};

async fn open(url: &str) -> Arc<dyn ChatStore> {
    let config = StoreConfig { url: url.to_string(), max_connections: 8, ..StoreConfig::default() };
    Arc::new(SqlStore::open(&config).await.unwrap())
}

fn message(conversation: i64, from: &str, client_id: &str, text: &str) -> NewMessage {
    NewMessage {
        conversation,
        from: from.into(),
        client_id: client_id.into(),
        text: text.into(),
        attachment: None,
        ts: 1000,
    }
}

async fn conformance(store: Arc<dyn ChatStore>) {
    // Swipes: one-sided likes match nothing; a pass never matches.
    assert_eq!(store.swipe("ann", "bob", SwipeKind::Like, 10).await.unwrap(), (false, None));
    assert_eq!(store.swipe("cat", "ann", SwipeKind::Pass, 11).await.unwrap(), (false, None));
    assert_eq!(store.swipe("ann", "cat", SwipeKind::Like, 12).await.unwrap(), (false, None));
    assert_eq!(store.swipe("bob", "ann", SwipeKind::SuperLike, 13).await.unwrap(), (true, None));
    // A second swipe on the same user replaces the first and says what it was.
    assert_eq!(store.swipe("bob", "ann", SwipeKind::SuperLike, 13).await.unwrap(), (true, Some(SwipeKind::SuperLike)));
    assert_eq!(store.swipes_since("ann", 0, false).await.unwrap(), (2, Some(10)));
    assert_eq!(store.swipes_since("ann", 10, false).await.unwrap(), (1, Some(12)));
    assert_eq!(store.swipes_since("bob", 0, true).await.unwrap(), (1, Some(13)));
    // A match per pair, whichever way round.
    let (m, created) = store.create_match("bob", "ann", 20, false).await.unwrap();
    assert!(created && m.active && m.user_a == "ann" && m.user_b == "bob");
    let (again, created) = store.create_match("ann", "bob", 21, false).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, m.id);
    assert_eq!(store.active_peers("ann").await.unwrap(), vec!["bob".to_string()]);

    // Messages: seq 1, 2, …; a retried client id stores nothing.
    let Appended::Stored(first) = store.append(&message(m.id, "ann", "c1", "hi")).await.unwrap() else {
        panic!("first append")
    };
    assert_eq!((first.seq, first.id.clone()), (1, format!("{}:1", m.id)));
    assert_eq!(store.append(&message(m.id, "ann", "c1", "hi")).await.unwrap(), Appended::Duplicate(first.clone()));
    // The same client id from the other user is another message.
    assert!(
        matches!(store.append(&message(m.id, "bob", "c1", "yo")).await.unwrap(), Appended::Stored(x) if x.seq == 2)
    );
    for i in 3..=10 {
        store.append(&message(m.id, "bob", &format!("b{i}"), &format!("text {i}"))).await.unwrap();
    }
    let (page, more) = store.messages(m.id, None, None, 4).await.unwrap();
    assert_eq!((page.iter().map(|x| x.seq).collect::<Vec<_>>(), more), (vec![7, 8, 9, 10], true));
    let (page, more) = store.messages(m.id, Some(3), None, 4).await.unwrap();
    assert_eq!((page.iter().map(|x| x.seq).collect::<Vec<_>>(), more), (vec![1, 2], false));
    let (page, more) = store.messages(m.id, None, Some(8), 4).await.unwrap();
    assert_eq!((page.iter().map(|x| x.seq).collect::<Vec<_>>(), more), (vec![9, 10], false));
    let (page, _) = store.messages(m.id, Some(6), Some(2), 10).await.unwrap();
    assert_eq!(page.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![3, 4, 5]);

    // Receipts only move forward; read implies delivered; unread counts the peer's messages.
    let r = store.mark(m.id, "ann", ReceiptKind::Delivered, 5).await.unwrap().unwrap();
    assert_eq!((r.delivered, r.read), (5, 0));
    assert!(store.mark(m.id, "ann", ReceiptKind::Delivered, 4).await.unwrap().is_none());
    let r = store.mark(m.id, "ann", ReceiptKind::Read, 7).await.unwrap().unwrap();
    assert_eq!((r.delivered, r.read), (7, 7));
    let row = store.conversation("ann", m.id).await.unwrap().unwrap();
    assert_eq!((row.peer.as_str(), row.read, row.unread, row.matched.last_seq), ("bob", 7, 3, 10));
    assert_eq!(row.last_message.as_ref().map(|x| x.seq), Some(10));
    let bob_side = store.conversation("bob", m.id).await.unwrap().unwrap();
    assert_eq!((bob_side.peer_read, bob_side.peer_delivered, bob_side.unread), (7, 7, 1));

    // Closing: appends refused; closing twice reports nothing; reopening only when asked.
    assert!(store.close_match(m.id, 30).await.unwrap().is_some());
    assert!(store.close_match(m.id, 31).await.unwrap().is_none());
    assert_eq!(store.append(&message(m.id, "ann", "c9", "late")).await.unwrap(), Appended::Closed);
    assert!(store.active_peers("ann").await.unwrap().is_empty());
    let (closed, created) = store.create_match("ann", "bob", 32, false).await.unwrap();
    assert!(!created && !closed.active);
    let (reopened, created) = store.create_match("ann", "bob", 33, true).await.unwrap();
    assert!(created && reopened.active && reopened.id == m.id);

    // Blocks close the pair's match and are seen both ways.
    let (m2, _) = store.create_match("ann", "dan", 40, false).await.unwrap();
    assert!(!store.blocked_either("dan", "ann").await.unwrap());
    assert_eq!(store.block("dan", "ann", 41).await.unwrap().map(|x| x.id), Some(m2.id));
    assert!(store.blocked_either("ann", "dan").await.unwrap());
    assert!(store.block("dan", "ann", 42).await.unwrap().is_none());

    // Conversation lists: newest activity first (bob's messages are at 1000, dan's match at 40).
    let list = store.conversations("ann", 10).await.unwrap();
    assert_eq!(list.iter().map(|c| c.peer.as_str()).collect::<Vec<_>>(), vec!["bob", "dan"]);

    // Reports, newest first; last seen.
    let report = |n: &str| ReportRow {
        id: 0,
        reporter: "ann".into(),
        reported: n.into(),
        reason: "spam".into(),
        conversation: None,
        details: Some("x'); DROP TABLE chat_reports; --".into()),
        created_at: 50,
    };
    let r1 = store.report(&report("dan")).await.unwrap();
    let r2 = store.report(&report("eve")).await.unwrap();
    assert!(r2 > r1);
    let reports = store.reports(None, 10).await.unwrap();
    assert_eq!(reports.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r2, r1]);
    assert_eq!(store.reports(Some(r2), 10).await.unwrap().len(), 1);
    store.set_last_seen("ann", 60).await.unwrap();
    store.set_last_seen("ann", 70).await.unwrap();
    let seen = store.last_seen(&["ann".into(), "nobody".into()]).await.unwrap();
    assert_eq!((seen.get("ann"), seen.get("nobody")), (Some(&70), None));
}

/// Two stores on one database stand for two nodes: every pair likes each other at the same
/// moment from both; each pair ends with exactly one match, announced once.
async fn simultaneous_mutual_likes(node1: Arc<dyn ChatStore>, node2: Arc<dyn ChatStore>) {
    const PAIRS: usize = 40;
    let mut tasks = Vec::new();
    for i in 0..PAIRS {
        for (store, from, to) in [(node1.clone(), "l", "r"), (node2.clone(), "r", "l")] {
            let (from, to) = (format!("{from}{i}"), format!("{to}{i}"));
            tasks.push(tokio::spawn(async move {
                let (liked_back, _) = store.swipe(&from, &to, SwipeKind::Like, 100).await.unwrap();
                if liked_back {
                    let (m, created) = store.create_match(&from, &to, 100, false).await.unwrap();
                    Some((m.id, created))
                } else {
                    None
                }
            }));
        }
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    for pair in outcomes.chunks(2) {
        let seen: Vec<(i64, bool)> = pair.iter().flatten().copied().collect();
        assert!(!seen.is_empty(), "neither like saw the other: {pair:?}");
        assert_eq!(seen.iter().filter(|(_, created)| *created).count(), 1, "{pair:?}");
        assert!(seen.iter().all(|(id, _)| *id == seen[0].0));
    }
    let ids: BTreeSet<i64> = outcomes.iter().flatten().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), PAIRS);
}

/// Senders on both "nodes" write to one conversation at once, some retrying the same client id:
/// seqs are 1..=N with no gap and each client id is stored once.
async fn simultaneous_sends(node1: Arc<dyn ChatStore>, node2: Arc<dyn ChatStore>) {
    let (m, _) = node1.create_match("s1", "s2", 1, false).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 { node1.clone() } else { node2.clone() };
        let from = if t % 2 == 0 { "s1" } else { "s2" };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..15 {
                // Every message is sent twice, as a client retrying after a lost ack would.
                let msg = message(m.id, from, &format!("t{t}-{i}"), "x");
                for _ in 0..2 {
                    match store.append(&msg).await.unwrap() {
                        Appended::Stored(x) => seqs.push(x.seq),
                        Appended::Duplicate(_) => {}
                        Appended::Closed => panic!("closed"),
                    }
                }
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=120).collect::<Vec<i64>>());
    let (page, more) = node2.messages(m.id, None, Some(0), 100).await.unwrap();
    assert!(more);
    assert_eq!(page.len(), 100);
}

#[tokio::test]
async fn sqlite_chat_store() {
    let url = format!("sqlite://{}", temp_path("chat.db").display());
    conformance(open(&url).await).await;
    let url = format!("sqlite://{}", temp_path("race.db").display());
    let (a, b) = (open(&url).await, open(&url).await);
    simultaneous_mutual_likes(a.clone(), b.clone()).await;
    simultaneous_sends(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_chat_store() {
    let pg = Postgres::start();
    conformance(open(&pg.database("chat")).await).await;
    let url = pg.database("race");
    let (a, b) = (open(&url).await, open(&url).await);
    simultaneous_mutual_likes(a.clone(), b.clone()).await;
    simultaneous_sends(a, b).await;
}
