//! The wire messages: every JSON example in the crate's documentation decodes to its type and
//! encodes back to the same JSON, names match tags, and requests become the right inputs.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};
use signaling::messages::{self, ChatMessage, ClientMsg, ServerMsg, OP_NAMES};
use signaling::{
    EndReason, IceCandidate, Input, Layer, LeaveReason, PeerTarget, Reply, Role, RoomEvent, TrackKind, UserId,
    ERROR_CODES,
};

/// The ```json blocks of a source file's doc comments.
fn json_examples(source: &str) -> Vec<String> {
    let mut examples = Vec::new();
    let mut current: Option<String> = None;
    for line in source.lines() {
        let line = line.trim_start();
        let Some(doc) = line.strip_prefix("///").or_else(|| line.strip_prefix("//!")) else { continue };
        let doc = doc.trim();
        match (&mut current, doc) {
            (None, "```json") => current = Some(String::new()),
            (Some(_), "```") => examples.push(current.take().unwrap()),
            (Some(text), _) => text.push_str(doc),
            (None, _) => {}
        }
    }
    examples
}

/// Whether `value` decodes as `T` and encodes back to itself.
fn round_trips<T: Serialize + DeserializeOwned>(value: &Value) -> bool {
    serde_json::from_value::<T>(value.clone()).is_ok_and(|t| serde_json::to_value(t).unwrap() == *value)
}

fn check_example(example: &str) {
    let value: Value = serde_json::from_str(example).unwrap_or_else(|e| panic!("not JSON ({e}): {example}"));
    let fits = if let Some(op) = value.get("op").and_then(Value::as_str) {
        let mut body = value.clone();
        body.as_object_mut().unwrap().remove("id");
        if op == "publish" {
            assert_eq!(value["event"], messages::CHAT_EVENT);
            round_trips::<ChatMessage>(&value["data"])
        } else {
            round_trips::<ClientMsg>(&body)
        }
    } else if value.get("type").and_then(Value::as_str) == Some("reply") {
        round_trips::<Reply>(&value["data"])
    } else if value.get("type").and_then(Value::as_str) == Some("error") {
        ERROR_CODES.contains(&value["code"].as_str().unwrap())
    } else if value.get("event").is_some() {
        round_trips::<ServerMsg>(&value) || round_trips::<RoomEvent>(&value)
    } else {
        round_trips::<Layer>(&value) || round_trips::<IceCandidate>(&value)
    };
    assert!(fits, "the example does not round-trip through its type: {example}");
}

#[test]
fn every_documented_example_is_exact() {
    let sources = [
        include_str!("../src/messages.rs"),
        include_str!("../src/output.rs"),
        include_str!("../src/model.rs"),
        include_str!("../src/simulcast.rs"),
    ];
    let examples: Vec<String> = sources.iter().flat_map(|s| json_examples(s)).collect();
    assert!(examples.len() >= 20, "found only {} examples", examples.len());
    for example in &examples {
        check_example(example);
    }
    // Every op has an example.
    for op in OP_NAMES {
        assert!(examples.iter().any(|e| e.contains(&format!("\"op\":\"{op}\"")) || documented_alongside(op)), "{op}");
    }
}

/// Ops whose example is given by a sibling sharing the same body type.
fn documented_alongside(op: &str) -> bool {
    ["meeting.leave", "meeting.answer", "meeting.raise_hand"].contains(&op)
}

#[test]
fn op_names_and_event_names_match_the_tags() {
    let room = || "r".into();
    let msgs = [
        ClientMsg::Join(messages::RoomRef { room: room() }),
        ClientMsg::Leave(messages::RoomRef { room: room() }),
        ClientMsg::Offer(messages::Sdp { room: room(), sdp: "x".into() }),
        ClientMsg::Answer(messages::Sdp { room: room(), sdp: "x".into() }),
        ClientMsg::Candidate(messages::Candidate {
            room: room(),
            target: PeerTarget::Subscriber,
            candidate: candidate(),
        }),
        ClientMsg::Publish(messages::Publish {
            room: room(),
            cid: "c".into(),
            kind: TrackKind::Audio,
            layers: vec![],
            muted: false,
        }),
        ClientMsg::Unpublish(messages::TrackRef { room: room(), track: "t1".into() }),
        ClientMsg::Mute(messages::Mute { room: room(), track: "t1".into(), muted: true }),
        ClientMsg::Subscribe(messages::Subscribe { room: room(), tracks: vec![], max_width: None, max_height: None }),
        ClientMsg::Unsubscribe(messages::Unsubscribe { room: room(), tracks: vec![] }),
        ClientMsg::HostMute(messages::HostMute { room: room(), user: "b".into(), track: None }),
        ClientMsg::Remove(messages::Remove { room: room(), user: "b".into() }),
        ClientMsg::Lock(messages::Lock { room: room(), locked: true }),
        ClientMsg::End(messages::RoomRef { room: room() }),
        ClientMsg::RaiseHand(messages::RoomRef { room: room() }),
        ClientMsg::LowerHand(messages::LowerHand { room: room(), user: None }),
        ClientMsg::Mix(messages::Mix { room: room(), on: true }),
    ];
    let ops: Vec<&str> = msgs.iter().map(ClientMsg::op).collect();
    assert_eq!(ops, OP_NAMES);
    for msg in &msgs {
        assert_eq!(serde_json::to_value(msg).unwrap()["op"], msg.op());
        assert_eq!(msg.room().as_str(), "r");
    }

    let user = || UserId::from("bob");
    let events = [
        RoomEvent::ParticipantJoined { user: user(), role: Role::Viewer },
        RoomEvent::ParticipantLeft { user: user(), reason: LeaveReason::Removed },
        RoomEvent::TrackPublished {
            user: user(),
            track: "t1".into(),
            kind: TrackKind::Screen,
            muted: false,
            layers: vec![],
        },
        RoomEvent::TrackUnpublished { user: user(), track: "t1".into() },
        RoomEvent::TrackMuted { user: user(), track: "t1".into(), muted: true, forced: false, by: None },
        RoomEvent::HandRaised { user: user() },
        RoomEvent::HandLowered { user: user(), by: None },
        RoomEvent::ActiveSpeaker { user: None },
        RoomEvent::LockChanged { locked: true, by: None },
        RoomEvent::RoomEnded { reason: EndReason::Expired, by: None },
        RoomEvent::Removed { by: None },
    ];
    for event in &events {
        assert_eq!(serde_json::to_value(event).unwrap()["event"], event.name());
    }
    let server = [
        ServerMsg::Answer { room: room(), sdp: "x".into() },
        ServerMsg::Offer { room: room(), sdp: "x".into() },
        ServerMsg::Candidate { room: room(), target: PeerTarget::Publisher, candidate: candidate() },
        ServerMsg::Error { room: room(), code: "media_failed".into(), message: "m".into() },
    ];
    for msg in &server {
        assert_eq!(serde_json::to_value(msg).unwrap()["event"], msg.name());
    }
}

fn candidate() -> IceCandidate {
    IceCandidate { candidate: String::new(), sdp_mid: None, sdp_mline_index: None, username_fragment: None }
}

#[test]
fn requests_become_inputs_for_the_sender() {
    let bob = || UserId::from("bob");
    let decode = |v: Value| -> Input {
        let msg: ClientMsg = serde_json::from_value(v).unwrap();
        assert_eq!(msg.room().as_str(), "standup");
        msg.into_input(bob(), Role::Participant)
    };
    let cases: Vec<(Value, Input)> = vec![
        (json!({"id":1,"op":"meeting.join","room":"standup"}), Input::Join { user: bob(), role: Role::Participant }),
        (json!({"op":"meeting.leave","room":"standup"}), Input::Leave { user: bob() }),
        (json!({"op":"meeting.offer","room":"standup","sdp":"o"}), Input::Offer { user: bob(), sdp: "o".into() }),
        (json!({"op":"meeting.answer","room":"standup","sdp":"a"}), Input::Answer { user: bob(), sdp: "a".into() }),
        (
            json!({"op":"meeting.candidate","room":"standup","target":"subscriber","candidate":{"candidate":""}}),
            Input::Candidate { user: bob(), target: PeerTarget::Subscriber, candidate: candidate() },
        ),
        (
            json!({"op":"meeting.publish","room":"standup","cid":"mic","kind":"audio"}),
            Input::PublishTrack {
                user: bob(),
                cid: "mic".into(),
                kind: TrackKind::Audio,
                layers: vec![],
                muted: false,
            },
        ),
        (
            json!({"op":"meeting.publish","room":"standup","cid":"mic","kind":"audio","muted":true}),
            Input::PublishTrack { user: bob(), cid: "mic".into(), kind: TrackKind::Audio, layers: vec![], muted: true },
        ),
        (
            json!({"op":"meeting.unpublish","room":"standup","track":"t1"}),
            Input::UnpublishTrack { user: bob(), track: "t1".into() },
        ),
        (
            json!({"op":"meeting.mute","room":"standup","track":"t1","muted":false}),
            Input::SetMuted { user: bob(), track: "t1".into(), muted: false },
        ),
        (
            json!({"op":"meeting.subscribe","room":"standup","tracks":["t1"],"max_height":360}),
            Input::Subscribe { user: bob(), tracks: vec!["t1".into()], max_width: None, max_height: Some(360) },
        ),
        (
            json!({"op":"meeting.unsubscribe","room":"standup","tracks":["t1"]}),
            Input::Unsubscribe { user: bob(), tracks: vec!["t1".into()] },
        ),
        (
            json!({"op":"meeting.host_mute","room":"standup","user":"carol"}),
            Input::HostMute { by: Some(bob()), target: "carol".into(), track: None },
        ),
        (
            json!({"op":"meeting.remove","room":"standup","user":"carol"}),
            Input::Remove { by: Some(bob()), target: "carol".into() },
        ),
        (json!({"op":"meeting.lock","room":"standup","locked":true}), Input::Lock { by: Some(bob()) }),
        (json!({"op":"meeting.lock","room":"standup","locked":false}), Input::Unlock { by: Some(bob()) }),
        (json!({"op":"meeting.end","room":"standup"}), Input::End { by: Some(bob()) }),
        (json!({"op":"meeting.raise_hand","room":"standup"}), Input::RaiseHand { user: bob() }),
        (json!({"op":"meeting.lower_hand","room":"standup"}), Input::LowerHand { user: bob(), target: None }),
        (
            json!({"op":"meeting.lower_hand","room":"standup","user":"carol"}),
            Input::LowerHand { user: bob(), target: Some("carol".into()) },
        ),
    ];
    for (value, input) in cases {
        assert_eq!(decode(value.clone()), input, "{value}");
    }
}

#[test]
fn malformed_requests_are_refused_by_the_decoder() {
    let bad = [
        json!({"op":"meeting.join"}),
        json!({"op":"meeting.fly","room":"standup"}),
        json!({"op":"meeting.publish","room":"standup","cid":"c","kind":"hologram"}),
        json!({"op":"meeting.lock","room":"standup"}),
        json!({"op":"meeting.candidate","room":"standup","target":"sideways","candidate":{"candidate":""}}),
        json!({"room":"standup"}),
    ];
    for value in bad {
        assert!(serde_json::from_value::<ClientMsg>(value.clone()).is_err(), "{value}");
    }
}

#[test]
fn the_error_frame_carries_the_code() {
    let err = signaling::RoomError::ViewerCannotPublish;
    let frame = json!({"type":"error","id":3,"code":err.as_str(),"message":err.to_string()});
    assert_eq!(frame["code"], "viewer_cannot_publish");
    assert_eq!(frame["message"], "viewers cannot publish");
}
