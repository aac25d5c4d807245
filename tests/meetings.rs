//! Meetings' signaling against the real binary (media: tests/meetings_media.rs): rooms made through the
//! server API or a token grant, joins by grant and role, size and lock, host controls seen by
//! the others, hands, leaving on socket close, ending from the API, in-meeting chat, bad input.

mod common;

use std::time::Duration;

use common::{services::RedisServer, *};
use hub::{
    auth::{mint_hs256, now_secs, parse_room_grants, Claims, Token},
    protocol::Codec,
};
use serde_json::{json, Value};

/// A token for `sub` with meeting grants such as `"r1:host,r2:viewer"`.
fn grant(sub: &str, rooms: &str) -> String {
    let claims = Claims { sub: sub.into(), exp: now_secs() + 3600, role: None, channels: vec![] };
    mint_hs256(SECRET, &Token { claims, rooms: parse_room_grants(rooms).unwrap() })
}

async fn joined(hub: &Hub, user: &str, rooms: &str) -> Client {
    Client::connect_token(hub, &grant(user, rooms), Codec::Json).await
}

/// The next room event named `name` on `channel` (skipping join/leave and other events).
async fn event(c: &mut Client, channel: &str, name: &str) -> Value {
    loop {
        let p = c.next_of("push", channel).await;
        if p["event"] == name {
            return p["data"].clone();
        }
    }
}

async fn api_delete(hub: &Hub, path: &str) -> (u16, Value) {
    let res =
        reqwest::Client::new().delete(hub.http(&format!("/api/v1{path}"))).bearer_auth(API_KEY).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

fn join(room: &str) -> Value {
    json!({ "op": "meeting.join", "room": room })
}

#[tokio::test]
async fn the_api_creates_lists_and_ends_rooms() {
    let hub = Hub::start(&[]);
    let body = json!({ "id": "standup", "name": "Daily", "max_participants": 3, "host": "alice" });
    let (status, room) = hub.api_post("/rooms", body.clone()).await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["id"], "standup");
    assert_eq!(room["name"], "Daily");
    assert_eq!(room["max_participants"], 3);
    assert_eq!(room["locked"], false);
    assert_eq!(room["participants"], json!([]));
    let (status, again) = hub.api_post("/rooms", body).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("room_exists")));
    // Named by the hub when no id is given; expiry in the future.
    let (status, unnamed) = hub.api_post("/rooms", json!({ "expires_in_secs": 600 })).await;
    assert_eq!(status, 201);
    assert!(unnamed["id"].as_str().unwrap().starts_with('r'));
    assert!(unnamed["expires_at_ms"].as_u64().unwrap() > unnamed["created_at_ms"].as_u64().unwrap());
    for bad in [
        json!({ "max_participants": 0 }),
        json!({ "id": "no spaces" }),
        json!({ "id": "x", "colour": "red" }),
        json!({ "expires_in_secs": 0 }),
        json!({ "max_participants": "many" }),
    ] {
        let (status, e) = hub.api_post("/rooms", bad.clone()).await;
        assert_eq!((status, e["error"]["code"].as_str()), (400, Some("bad_request")), "{bad}");
    }

    // The room's `host` option makes alice a host whatever her grant says.
    let mut alice = joined(&hub, "alice", "standup:participant").await;
    let reply = alice.ok(join("standup")).await;
    assert_eq!(reply["role"], "host");
    assert_eq!(reply["room"]["participants"][0]["user"], "alice");
    let mut bob = joined(&hub, "bob", "standup:participant").await;
    assert_eq!(bob.ok(join("standup")).await["role"], "participant");
    assert_eq!(
        event(&mut alice, "room:standup", "participant_joined").await,
        json!({ "user": "alice", "role": "host" })
    );
    assert_eq!(
        event(&mut alice, "room:standup", "participant_joined").await,
        json!({ "user": "bob", "role": "participant" })
    );

    let (status, list) = hub.api_get("/rooms").await;
    assert_eq!(status, 200);
    let standup = list["rooms"].as_array().unwrap().iter().find(|r| r["id"] == "standup").unwrap().clone();
    let users: Vec<&str> =
        standup["participants"].as_array().unwrap().iter().map(|p| p["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["alice", "bob"]);
    let (status, one) = hub.api_get("/rooms/standup").await;
    assert_eq!((status, one["participants"].as_array().unwrap().len()), (200, 2));
    let (status, e) = hub.api_get("/rooms/nowhere").await;
    assert_eq!((status, e["error"]["code"].as_str()), (404, Some("not_found")));

    // Lock and remove through the API, seen on the room's channel.
    let (status, locked) = hub.api_post("/rooms/standup/lock", json!({})).await;
    assert_eq!((status, &locked["locked"]), (200, &json!(true)));
    assert_eq!(event(&mut bob, "room:standup", "lock_changed").await, json!({ "locked": true }));
    let (status, _) = api_delete(&hub, "/rooms/standup/lock").await;
    assert_eq!(status, 200);
    assert_eq!(event(&mut bob, "room:standup", "lock_changed").await, json!({ "locked": false }));
    let mut carol = joined(&hub, "carol", "standup:viewer").await;
    assert_eq!(carol.ok(join("standup")).await["role"], "viewer");
    let (status, after) = api_delete(&hub, "/rooms/standup/participants/carol").await;
    assert_eq!((status, after["participants"].as_array().unwrap().len()), (200, 2));
    assert_eq!(
        event(&mut carol, "room:standup", "participant_left").await,
        json!({ "user": "carol", "reason": "removed" })
    );
    assert_eq!(carol.err(join("standup")).await, "removed");
    let (status, e) = api_delete(&hub, "/rooms/standup/participants/zed").await;
    assert_eq!((status, e["error"]["code"].as_str()), (404, Some("unknown_participant")));

    // Ending: everyone hears it, is detached, and the room is gone.
    let (status, ended) = api_delete(&hub, "/rooms/standup").await;
    assert_eq!((status, &ended["ended"]), (200, &json!("api")));
    for c in [&mut alice, &mut bob] {
        assert_eq!(event(c, "room:standup", "room_ended").await, json!({ "reason": "api" }));
    }
    assert_eq!(alice.err(json!({ "op": "meeting.leave", "room": "standup" })).await, "not_found");
    let (status, _) = hub.api_get("/rooms/standup").await;
    assert_eq!(status, 404);
    let (status, _) = api_delete(&hub, "/rooms/standup").await;
    assert_eq!(status, 404);
    // Detached: bob's socket is no longer subscribed to the room's channel.
    assert_eq!(bob.err(json!({ "op": "unsubscribe", "channel": "room:standup" })).await, "not_subscribed");
}

#[tokio::test]
async fn joins_follow_grants_size_and_lock() {
    let hub = Hub::start(&[]);
    let (status, _) = hub.api_post("/rooms", json!({ "id": "small", "max_participants": 2 })).await;
    assert_eq!(status, 201);

    let mut nogrant = joined(&hub, "nora", "other:host").await;
    assert_eq!(nogrant.err(join("small")).await, "forbidden");
    assert_eq!(nogrant.err(json!({ "op": "subscribe", "channel": "room:small" })).await, "forbidden");

    let mut host = joined(&hub, "hana", "small:host,adhoc:host,shut:host").await;
    assert_eq!(host.ok(join("small")).await["role"], "host");
    let mut viewer = joined(&hub, "vic", "small:viewer").await;
    let reply = viewer.ok(join("small")).await;
    assert_eq!(reply["role"], "viewer");
    assert_eq!(reply["room"]["participants"].as_array().unwrap().len(), 2);
    let mut third = joined(&hub, "pat", "small:participant,shut:participant").await;
    assert_eq!(third.err(join("small")).await, "room_full");
    assert_eq!(host.err(join("small")).await, "already_joined");

    // A grant for a room that does not exist creates it.
    assert_eq!(host.ok(join("adhoc")).await["room"]["participants"][0]["user"], "hana");
    let (status, adhoc) = hub.api_get("/rooms/adhoc").await;
    assert_eq!((status, adhoc["participants"][0]["role"].as_str()), (200, Some("host")));

    // Locked: only hosts join until a host unlocks.
    let (status, _) = hub.api_post("/rooms", json!({ "id": "shut", "locked": true })).await;
    assert_eq!(status, 201);
    assert_eq!(third.err(join("shut")).await, "room_locked");
    host.ok(join("shut")).await;
    host.ok(json!({ "op": "meeting.lock", "room": "shut", "locked": false })).await;
    assert_eq!(event(&mut host, "room:shut", "lock_changed").await, json!({ "locked": false, "by": "hana" }));
    third.ok(join("shut")).await;

    // Host controls from a non-host.
    for op in [
        json!({ "op": "meeting.lock", "room": "shut", "locked": true }),
        json!({ "op": "meeting.remove", "room": "shut", "user": "hana" }),
        json!({ "op": "meeting.host_mute", "room": "shut", "user": "hana" }),
        json!({ "op": "meeting.end", "room": "shut" }),
        json!({ "op": "meeting.lower_hand", "room": "shut", "user": "hana" }),
    ] {
        assert_eq!(third.err(op.clone()).await, "not_host", "{op}");
    }
    // Bad input: unknown room, not joined, malformed bodies; the socket lives on.
    assert_eq!(third.err(json!({ "op": "meeting.raise_hand", "room": "ghost" })).await, "not_found");
    assert_eq!(third.err(json!({ "op": "meeting.raise_hand", "room": "small" })).await, "not_in_room");
    assert_eq!(third.err(json!({ "op": "meeting.lock", "room": "shut" })).await, "bad_request");
    assert_eq!(third.err(json!({ "op": "meeting.join" })).await, "bad_request");
    assert_eq!(third.err(json!({ "op": "meeting.join", "room": "bad room" })).await, "bad_request");
    assert_eq!(third.err(json!({ "op": "meeting.bogus", "room": "shut" })).await, "unknown_op");
    assert_eq!(third.err(json!({ "op": "meeting.offer", "room": "shut", "sdp": "not an sdp" })).await, "invalid_sdp");
    assert_eq!(
        third.err(json!({ "op": "meeting.mute", "room": "shut", "track": "t1", "muted": true })).await,
        "unknown_track"
    );
    third.ok(json!({ "op": "ping" })).await;
}

#[tokio::test]
async fn host_controls_and_hands_reach_everyone() {
    let hub = Hub::start(&[]);
    let mut alice = joined(&hub, "alice", "ctl:host").await;
    let mut bob = joined(&hub, "bob", "ctl:participant").await;
    let mut carol = joined(&hub, "carol", "ctl:participant").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.ok(join("ctl")).await;
    }
    // bob's own channel carries what is for him alone.
    bob.ok(json!({ "op": "subscribe", "channel": "user:bob" })).await;

    bob.ok(json!({ "op": "meeting.raise_hand", "room": "ctl" })).await;
    bob.ok(json!({ "op": "meeting.raise_hand", "room": "ctl" })).await;
    for c in [&mut alice, &mut carol] {
        assert_eq!(event(c, "room:ctl", "hand_raised").await, json!({ "user": "bob" }));
    }
    let (_, room) = hub.api_get("/rooms/ctl").await;
    assert_eq!(room["hands"], json!(["bob"]));
    alice.ok(json!({ "op": "meeting.lower_hand", "room": "ctl", "user": "bob" })).await;
    for c in [&mut bob, &mut carol] {
        assert_eq!(event(c, "room:ctl", "hand_lowered").await, json!({ "user": "bob", "by": "alice" }));
    }
    carol.ok(json!({ "op": "meeting.raise_hand", "room": "ctl" })).await;
    carol.ok(json!({ "op": "meeting.lower_hand", "room": "ctl" })).await;
    assert_eq!(event(&mut bob, "room:ctl", "hand_lowered").await, json!({ "user": "carol" }));

    // Without media there are no tracks: a host mute of everything succeeds with nothing to say.
    alice.ok(json!({ "op": "meeting.host_mute", "room": "ctl", "user": "bob" })).await;
    assert_eq!(
        alice.err(json!({ "op": "meeting.host_mute", "room": "ctl", "user": "zed" })).await,
        "unknown_participant"
    );

    alice.ok(json!({ "op": "meeting.lock", "room": "ctl", "locked": true })).await;
    assert_eq!(event(&mut carol, "room:ctl", "lock_changed").await, json!({ "locked": true, "by": "alice" }));

    alice.ok(json!({ "op": "meeting.remove", "room": "ctl", "user": "bob" })).await;
    assert_eq!(event(&mut bob, "user:bob", "removed").await, json!({ "by": "alice" }));
    for c in [&mut bob, &mut carol] {
        assert_eq!(event(c, "room:ctl", "participant_left").await, json!({ "user": "bob", "reason": "removed" }));
    }
    assert_eq!(bob.err(json!({ "op": "meeting.raise_hand", "room": "ctl" })).await, "not_in_room");
    assert_eq!(bob.err(join("ctl")).await, "removed");

    alice.ok(json!({ "op": "meeting.end", "room": "ctl" })).await;
    assert_eq!(event(&mut carol, "room:ctl", "room_ended").await, json!({ "reason": "host", "by": "alice" }));
    let (status, _) = hub.api_get("/rooms/ctl").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn closing_a_socket_leaves_and_chat_goes_over_the_room_channel() {
    let hub = Hub::start(&[]);
    let mut alice = joined(&hub, "alice", "cafe:host").await;
    let mut bob = joined(&hub, "bob", "cafe:participant").await;
    alice.ok(join("cafe")).await;
    bob.ok(join("cafe")).await;
    let chat = json!({ "op": "publish", "channel": "room:cafe", "event": "chat", "data": { "text": "can you see my screen?" } });
    bob.ok(chat.clone()).await;
    let push = loop {
        let p = alice.next_of("push", "room:cafe").await;
        if p["event"] == "chat" {
            break p;
        }
    };
    assert_eq!(push["data"]["text"], "can you see my screen?");
    assert_eq!(push["from"], "bob");
    let mut outsider = Client::connect(&hub, "eve").await;
    assert_eq!(outsider.err(chat).await, "forbidden");

    bob.ws.close(None).await.unwrap();
    drop(bob);
    assert_eq!(event(&mut alice, "room:cafe", "participant_left").await, json!({ "user": "bob", "reason": "left" }));
    let (_, room) = hub.api_get("/rooms/cafe").await;
    assert_eq!(room["participants"].as_array().unwrap().len(), 1);
    // bob may come back on a new socket.
    let mut again = joined(&hub, "bob", "cafe:participant").await;
    again.ok(join("cafe")).await;
    again.ok(json!({ "op": "meeting.leave", "room": "cafe" })).await;
    assert_eq!(event(&mut alice, "room:cafe", "participant_left").await, json!({ "user": "bob", "reason": "left" }));
}

#[tokio::test]
async fn the_dev_token_carries_room_grants() {
    let hub = Hub::start(&["dev_mode=true"]);
    let body: Value =
        reqwest::get(hub.http("/dev/token?sub=zoe&rooms=r1:host,r2:viewer")).await.unwrap().json().await.unwrap();
    assert_eq!(body["claims"]["rooms"], json!({ "r1": "host", "r2": "viewer" }));
    let mut zoe = Client::connect_token(&hub, body["token"].as_str().unwrap(), Codec::Json).await;
    assert_eq!(zoe.ok(join("r2")).await["role"], "viewer");
    let res = reqwest::get(hub.http("/dev/token?sub=zoe&rooms=r1:owner")).await.unwrap();
    assert_eq!(res.status().as_u16(), 400);
}

/// Two nodes on one Redis; the node holding a room dies. A participant whose socket is on the
/// other node is told `room_ended` (`node_lost`) and detached; joining again starts the room on
/// the live node with the options it was created with and its lock. A room nobody on the live
/// node was in starts there too once the dead node has left the registry. A participant of a
/// room on the live node whose socket was on the dead node leaves that room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_node_dies_starts_again_on_a_live_node() {
    let redis = RedisServer::start();
    let node = |_| Hub::start_node(&redis.url(), &format!("sqlite://{}", temp_path("hub.db").display()), &[]);
    let (mut one, two) = (node(1), node(2));
    let body = json!({ "id": "durable", "name": "Weekly", "max_participants": 2, "host": "hal" });
    assert_eq!(one.api_post("/rooms", body).await.0, 201);

    let mut hal = joined(&two, "hal", "durable:participant").await;
    let live = hal.connect_reply["node"].clone();
    let reply = hal.ok(join("durable")).await;
    let dead = reply["node"].clone();
    assert_ne!(dead, live, "the room is on the node that created it");
    assert_eq!(reply["role"], "host");
    hal.ok(json!({ "op": "meeting.lock", "room": "durable", "locked": true })).await;
    assert_eq!(event(&mut hal, "room:durable", "lock_changed").await["locked"], true);
    let mut dora = joined(&one, "dora", "solo:host,spare:host").await;
    assert_eq!(dora.ok(join("solo")).await["node"], dead);
    assert_eq!(dora.ok(join("spare")).await["node"], dead);
    // And the other way round: a room on the live node with a participant whose socket is on the
    // node that dies.
    let mut ivy = joined(&two, "ivy", "stay:host").await;
    assert_eq!(ivy.ok(join("stay")).await["node"], live);
    let mut zed = joined(&one, "zed", "stay:participant").await;
    assert_eq!(zed.ok(join("stay")).await["node"], live);

    one.kill();
    drop(dora);
    drop(zed);
    let ended = event(&mut hal, "room:durable", "room_ended").await;
    assert_eq!(ended, json!({ "reason": "node_lost" }));
    // Nobody is left to say that zed's socket closed: its node's loss takes zed out.
    let left = event(&mut ivy, "room:stay", "participant_left").await;
    assert_eq!(left, json!({ "user": "zed", "reason": "left" }));
    // Detached: no longer on the room's channel, not in the room.
    assert_eq!(hal.err(json!({ "op": "unsubscribe", "channel": "room:durable" })).await, "not_subscribed");
    assert_eq!(hal.err(json!({ "op": "meeting.raise_hand", "room": "durable" })).await, "not_found");

    let again = hal.ok(join("durable")).await;
    assert_eq!(again["node"], live);
    assert_eq!(again["role"], "host");
    let room = &again["room"];
    assert_eq!((room["name"].as_str(), room["max_participants"].as_u64()), (Some("Weekly"), Some(2)));
    assert_eq!(room["locked"], true, "the lock survived");
    let mut bob = joined(&two, "bob", "durable:participant").await;
    assert_eq!(bob.err(join("durable")).await, "room_locked");
    hal.ok(json!({ "op": "meeting.lock", "room": "durable", "locked": false })).await;
    bob.ok(join("durable")).await;
    let mut carol = joined(&two, "carol", "durable:participant").await;
    assert_eq!(carol.err(join("durable")).await, "room_full", "the size survived");
    let (status, listed) = two.api_get("/rooms/durable").await;
    assert_eq!((status, listed["participants"].as_array().map(Vec::len)), (200, Some(2)));

    // Dora's room had nobody on the live node. Once the dead node is out of the registry, her
    // join (her app reconnected to the live node) starts it here instead of waiting on the dead.
    eventually("the dead node leaves the registry", || async {
        two.api_get("/nodes").await.1["nodes"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    // The API answers for a room of the dead node at once: there is no such room any more.
    assert_eq!(two.api_get("/rooms/spare").await.0, 404);
    let mut dora = joined(&two, "dora", "solo:host").await;
    let solo = dora.ok(join("solo")).await;
    assert_eq!((&solo["node"], solo["role"].as_str()), (&live, Some("host")));
}

/// One session per user and room: joining again from another socket (the old one lost but not
/// yet noticed, or another tab) takes the old session's place, in a locked room too; the old
/// socket is told and detached, and its closing later changes nothing.
#[tokio::test]
async fn joining_again_from_another_socket_replaces_the_old_session() {
    let hub = Hub::start(&[]);
    let mut host = joined(&hub, "hana", "twice:host,other:host").await;
    host.ok(join("twice")).await;
    host.ok(join("other")).await;
    let mut old = joined(&hub, "pat", "twice:participant,other:participant").await;
    old.ok(join("twice")).await;
    old.ok(join("other")).await;
    host.ok(json!({ "op": "meeting.lock", "room": "twice", "locked": true })).await;

    let mut new = joined(&hub, "pat", "twice:participant").await;
    let reply = new.ok(join("twice")).await;
    let users: Vec<&str> =
        reply["room"]["participants"].as_array().unwrap().iter().map(|p| p["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["hana", "pat"], "once, though the room is locked");
    let left = event(&mut old, "room:twice", "participant_left").await;
    assert_eq!(left, json!({ "user": "pat", "reason": "replaced" }));
    assert_eq!(old.err(json!({ "op": "unsubscribe", "channel": "room:twice" })).await, "not_subscribed");
    // The others see the old session leave and the new one join.
    assert_eq!(event(&mut host, "room:twice", "participant_left").await["reason"], "replaced");
    assert_eq!(event(&mut host, "room:twice", "participant_joined").await["user"], "pat");

    // The old socket closing takes it out of the other room it was in, not out of this one (its
    // rooms are left in join order, so this one would have gone first).
    drop(old);
    assert_eq!(event(&mut host, "room:other", "participant_left").await["user"], "pat");
    let (_, room) = hub.api_get("/rooms/twice").await;
    assert_eq!(room["participants"].as_array().unwrap().len(), 2);
    new.ok(json!({ "op": "meeting.raise_hand", "room": "twice" })).await;
    assert_eq!(event(&mut host, "room:twice", "hand_raised").await["user"], "pat");
    // The same socket joining twice is still an error, and changes nothing: its closing still
    // takes the user out.
    assert_eq!(new.err(join("twice")).await, "already_joined");
    drop(new);
    let left = event(&mut host, "room:twice", "participant_left").await;
    assert_eq!(left, json!({ "user": "pat", "reason": "left" }));
}

/// Redis restarted empty under a room that spans two nodes: the participant on the far node is
/// not told the room was lost, and the home writes its directory entry again, so a later join
/// from the far node still reaches the same room (not a second room of the same id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spanning_room_outlives_redis_restarting_empty() {
    let mut redis = RedisServer::start();
    let node = |_| Hub::start_node(&redis.url(), &format!("sqlite://{}", temp_path("hub.db").display()), &[]);
    let (one, two) = (node(1), node(2));
    assert_eq!(one.api_post("/rooms", json!({ "id": "steady", "name": "Steady" })).await.0, 201);
    let mut hal = joined(&one, "hal", "steady:host").await;
    let home = hal.ok(join("steady")).await["node"].clone();
    let mut bob = joined(&two, "bob", "steady:participant").await;
    assert_eq!(bob.ok(join("steady")).await["node"], home);

    redis.restart();
    eventually("the registry lists both nodes again", || async {
        two.api_get("/nodes").await.1["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let get = |key: &'static str| {
        let url = redis.url();
        async move {
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("GET").arg(key).query_async::<Option<String>>(&mut conn).await.ok()?
        }
    };
    eventually("the home writes its keys again", || async {
        let spec = get("hub:room-spec:{steady}").await.unwrap_or_default();
        get("hub:room-home:{steady}").await.as_deref() == home.as_str() && spec.contains("Steady")
    })
    .await;

    // Cross-node delivery is back once the far node has subscribed again: a probe may race that,
    // so publish until one arrives.
    let mut n = 0;
    loop {
        n += 1;
        one.publish("room:steady", json!({ "probe": n })).await;
        let got = tokio::time::timeout(Duration::from_millis(500), bob.next_of("push", "room:steady")).await;
        if got.is_ok_and(|p| p["data"]["probe"].is_number()) {
            break;
        }
        assert!(n < 60, "cross-node delivery never resumed");
    }

    let mut carol = joined(&two, "carol", "steady:participant").await;
    let reply = carol.ok(join("steady")).await;
    assert_eq!(reply["node"], home, "the same room");
    assert_eq!(reply["room"]["participants"].as_array().unwrap().len(), 3);
    // Bob is still in it, on its channel.
    bob.ok(json!({ "op": "meeting.raise_hand", "room": "steady" })).await;
    assert_eq!(event(&mut bob, "room:steady", "hand_raised").await["user"], "bob");
    assert!(!bob.pushes.iter().any(|p| p["event"] == "room_ended"), "{:?}", bob.pushes);
    assert_eq!(event(&mut hal, "room:steady", "hand_raised").await["user"], "bob");
}

/// A node holding a room shuts down (SIGTERM): before its sockets close it marks itself draining
/// and ends the room with `node_lost` on the room's channel (an offset: the home said it, not the
/// far node's watch, which a long node ttl keeps quiet here), so a participant on another node
/// joins again at once and the room starts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_node_shuts_down_ends_with_node_lost_for_everyone() {
    let redis = RedisServer::start();
    let ttl = "cluster.node_ttl=\"60s\"";
    let node = |_| Hub::start_node(&redis.url(), &format!("sqlite://{}", temp_path("hub.db").display()), &[ttl]);
    let (mut one, two) = (node(1), node(2));
    assert_eq!(one.api_post("/rooms", json!({ "id": "deploy", "name": "Deploy" })).await.0, 201);
    let mut hal = joined(&one, "hal", "deploy:host").await;
    let home = hal.ok(join("deploy")).await["node"].clone();
    let mut bob = joined(&two, "bob", "deploy:participant").await;
    let live = bob.connect_reply["node"].clone();
    assert_eq!(bob.ok(join("deploy")).await["node"], home);

    let stopping = tokio::task::spawn_blocking(move || one.terminate());
    let ended = loop {
        let p = bob.next_of("push", "room:deploy").await;
        if p["event"] == "room_ended" {
            break p;
        }
    };
    assert_eq!(ended["data"], json!({ "reason": "node_lost" }));
    assert!(ended["offset"].is_u64(), "published by the home on the room's channel: {ended}");
    let again = bob.ok(join("deploy")).await;
    assert_eq!((&again["node"], again["room"]["participants"].as_array().map(Vec::len)), (&live, Some(1)));
    assert_eq!(again["room"]["name"], "Deploy", "started again with its saved options");
    assert_eq!(stopping.await.unwrap(), Some(0), "a clean exit");
    drop(hal);
}
