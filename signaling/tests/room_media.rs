//! Publishing, subscribing, renegotiation, muting and what the media plane is told.

mod common;

use common::*;
use signaling::{
    IceCandidate, Input, MediaCommand, Output, PeerTarget, Reply, Role, Room, RoomEvent, RoomOptions, TrackKind,
};

#[test]
fn publish_names_the_track_announces_it_and_subscribes_the_others() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    join(&mut room, "v", Role::Viewer);
    let layers = vec![layer("f", 1280, 720, 1500), layer("q", 320, 180, 150), layer("h", 640, 360, 500)];
    let out = ok(
        &mut room,
        Input::PublishTrack { user: u("bob"), cid: "cam".into(), kind: TrackKind::Video, layers, muted: false },
        0,
    );
    let sorted = vec![layer("q", 320, 180, 150), layer("h", 640, 360, 500), layer("f", 1280, 720, 1500)];
    let sub = |user: &str| MediaCommand::Subscribe { user: u(user), track: t("t1"), max_width: None, max_height: None };
    assert_eq!(
        out,
        [
            Output::Reply(Reply::Published { track: t("t1"), cid: "cam".into() }),
            Output::Media(MediaCommand::AddTrack {
                user: u("bob"),
                track: t("t1"),
                cid: "cam".into(),
                kind: TrackKind::Video,
                layers: sorted.clone(),
            }),
            Output::Broadcast(RoomEvent::TrackPublished {
                user: u("bob"),
                track: t("t1"),
                kind: TrackKind::Video,
                muted: false,
                layers: vec!["q".into(), "h".into(), "f".into()],
            }),
            Output::Media(sub("alice")),
            Output::Media(MediaCommand::CreateOffer { user: u("alice") }),
            Output::Media(sub("v")),
            Output::Media(MediaCommand::CreateOffer { user: u("v") }),
        ]
    );
    let info = &room.snapshot().participants[1].tracks[0];
    assert_eq!((info.id.as_str(), info.cid.as_str(), info.layers.clone()), ("t1", "cam", sorted));
    // Ids are the room's, in order, whoever publishes.
    assert_eq!(publish(&mut room, "alice", "cam", TrackKind::Video), t("t2"));
    assert_eq!(publish(&mut room, "bob", "mic", TrackKind::Audio), t("t3"));
}

#[test]
fn a_late_joiner_is_subscribed_to_what_exists() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    let mic = publish(&mut room, "alice", "mic", TrackKind::Audio);
    let cam = publish(&mut room, "alice", "cam", TrackKind::Video);
    let out = join(&mut room, "bob", Role::Participant);
    assert_eq!(
        media(&out),
        [
            MediaCommand::Subscribe { user: u("bob"), track: mic, max_width: None, max_height: None },
            MediaCommand::Subscribe { user: u("bob"), track: cam, max_width: None, max_height: None },
            MediaCommand::CreateOffer { user: u("bob") },
        ]
    );
    assert_eq!(offers(&join(&mut room, "carol", Role::Participant)), [u("carol")]);
    // Into an empty room (or one without tracks) there is nothing to offer.
    let mut empty = self::room();
    assert_eq!(media(&join(&mut empty, "alice", Role::Host)), []);
}

#[test]
fn one_offer_at_a_time_and_changes_meanwhile_fold_into_one_more() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    let out = ok(&mut room, publish_input("bob", "mic", TrackKind::Audio), 0);
    assert_eq!(offers(&out), [u("alice")]);
    // Two more tracks while alice's answer is outstanding: no new offer yet.
    assert_eq!(offers(&ok(&mut room, publish_input("bob", "cam", TrackKind::Video), 0)), []);
    let screen = publish(&mut room, "bob", "screen", TrackKind::Screen);
    assert_eq!(offers(&ok(&mut room, Input::UnpublishTrack { user: u("bob"), track: screen }, 0)), []);
    // The answer is applied, then one offer covers everything that changed.
    let out = ok(&mut room, Input::Answer { user: u("alice"), sdp: "answer-1".into() }, 0);
    assert_eq!(
        media(&out),
        [
            MediaCommand::ApplyAnswer { user: u("alice"), sdp: "answer-1".into() },
            MediaCommand::CreateOffer { user: u("alice") },
        ]
    );
    let out = ok(&mut room, Input::Answer { user: u("alice"), sdp: "answer-2".into() }, 0);
    assert_eq!(media(&out), [MediaCommand::ApplyAnswer { user: u("alice"), sdp: "answer-2".into() }]);
    // Stable now: the next change offers at once.
    assert_eq!(offers(&ok(&mut room, publish_input("bob", "screen2", TrackKind::Screen), 0)), [u("alice")]);
}

#[test]
fn unpublish_tells_everyone_and_renegotiates_subscribers() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    let cam = publish(&mut room, "bob", "cam", TrackKind::Video);
    settle(&mut room, "alice");
    let out = ok(&mut room, Input::UnpublishTrack { user: u("bob"), track: cam.clone() }, 0);
    assert_eq!(
        out,
        [
            Output::Broadcast(RoomEvent::TrackUnpublished { user: u("bob"), track: cam.clone() }),
            Output::Media(MediaCommand::Unsubscribe { user: u("alice"), track: cam.clone() }),
            Output::Media(MediaCommand::RemoveTrack { track: cam.clone() }),
            Output::Media(MediaCommand::CreateOffer { user: u("alice") }),
        ]
    );
    assert!(room.snapshot().participants[1].tracks.is_empty());
    // The cid is free again, under a new track id.
    assert_eq!(publish(&mut room, "bob", "cam", TrackKind::Video), t("t2"));
}

#[test]
fn explicit_subscriptions_without_auto_subscribe() {
    let mut room = Room::new(RoomOptions { auto_subscribe: false, ..options() }, 0);
    join(&mut room, "alice", Role::Host);
    let mic = publish(&mut room, "alice", "mic", TrackKind::Audio);
    let cam = publish(&mut room, "alice", "cam", TrackKind::Video);
    let out = join(&mut room, "bob", Role::Participant);
    assert_eq!(media(&out), [], "nothing until bob asks");
    assert_eq!(offers(&ok(&mut room, publish_input("bob", "mic", TrackKind::Audio), 0)), []);

    let subscribe = |tracks: Vec<_>, size: Option<(u32, u32)>| Input::Subscribe {
        user: u("bob"),
        tracks,
        max_width: size.map(|s| s.0),
        max_height: size.map(|s| s.1),
    };
    let sub = |track: &signaling::TrackId, size: Option<(u32, u32)>| MediaCommand::Subscribe {
        user: u("bob"),
        track: track.clone(),
        max_width: size.map(|s| s.0),
        max_height: size.map(|s| s.1),
    };
    let out = ok(&mut room, subscribe(vec![mic.clone(), cam.clone()], Some((640, 360))), 0);
    assert_eq!(
        media(&out),
        [sub(&mic, Some((640, 360))), sub(&cam, Some((640, 360))), MediaCommand::CreateOffer { user: u("bob") }]
    );
    settle(&mut room, "bob");
    // A new size on a subscribed track: the media plane is told, no renegotiation.
    assert_eq!(media(&ok(&mut room, subscribe(vec![cam.clone()], Some((320, 180))), 0)), [sub(&cam, Some((320, 180)))]);
    assert_eq!(media(&ok(&mut room, subscribe(vec![cam.clone()], Some((320, 180))), 0)), [], "same size: nothing");
    assert_eq!(media(&ok(&mut room, subscribe(vec![], None), 0)), []);

    let out = ok(&mut room, Input::Unsubscribe { user: u("bob"), tracks: vec![mic.clone(), mic.clone()] }, 0);
    assert_eq!(
        media(&out),
        [
            MediaCommand::Unsubscribe { user: u("bob"), track: mic.clone() },
            MediaCommand::CreateOffer { user: u("bob") }
        ]
    );
    // Not subscribed (or one's own track): nothing to do.
    assert_eq!(ok(&mut room, Input::Unsubscribe { user: u("bob"), tracks: vec![mic] }, 0), []);
    assert_eq!(ok(&mut room, Input::Unsubscribe { user: u("bob"), tracks: vec![t("t3")] }, 0), []);
}

#[test]
fn auto_subscribed_tracks_take_a_size_without_renegotiation() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    let cam = publish(&mut room, "alice", "cam", TrackKind::Video);
    settle(&mut room, "bob");
    let out = ok(
        &mut room,
        Input::Subscribe { user: u("bob"), tracks: vec![cam.clone()], max_width: Some(320), max_height: None },
        0,
    );
    assert_eq!(
        media(&out),
        [MediaCommand::Subscribe { user: u("bob"), track: cam, max_width: Some(320), max_height: None }]
    );
}

#[test]
fn self_mute_is_signalled_and_enforced() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    let mic = publish(&mut room, "alice", "mic", TrackKind::Audio);
    let cam = publish(&mut room, "alice", "cam", TrackKind::Video);
    let mute = |track: &signaling::TrackId, muted| Input::SetMuted { user: u("alice"), track: track.clone(), muted };
    let event = |track: &signaling::TrackId, muted| {
        Output::Broadcast(RoomEvent::TrackMuted {
            user: u("alice"),
            track: track.clone(),
            muted,
            forced: false,
            by: None,
        })
    };

    let out = ok(&mut room, mute(&mic, true), 0);
    assert_eq!(out, [event(&mic, true), Output::Media(MediaCommand::StopForwarding { track: mic.clone() })]);
    assert_eq!(ok(&mut room, mute(&mic, true), 0), [], "muting a muted track changes nothing");
    assert!(room.snapshot().participants[0].tracks[0].muted);
    // Audio resumes without a keyframe; video needs one.
    let out = ok(&mut room, mute(&mic, false), 0);
    assert_eq!(out, [event(&mic, false), Output::Media(MediaCommand::ResumeForwarding { track: mic.clone() })]);
    assert_eq!(ok(&mut room, mute(&mic, false), 0), []);
    ok(&mut room, mute(&cam, true), 0);
    let out = ok(&mut room, mute(&cam, false), 0);
    assert_eq!(
        out,
        [
            event(&cam, false),
            Output::Media(MediaCommand::ResumeForwarding { track: cam.clone() }),
            Output::Media(MediaCommand::RequestKeyframe { track: cam }),
        ]
    );
}

#[test]
fn publishing_muted_stops_forwarding_from_the_start() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    let out = ok(
        &mut room,
        Input::PublishTrack {
            user: u("alice"),
            cid: "mic".into(),
            kind: TrackKind::Audio,
            layers: vec![],
            muted: true,
        },
        0,
    );
    assert_eq!(out[2], Output::Media(MediaCommand::StopForwarding { track: t("t1") }));
    assert!(matches!(&out[3], Output::Broadcast(RoomEvent::TrackPublished { muted: true, .. })));
}

#[test]
fn hosts_and_the_api_mute_others() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    let mic = publish(&mut room, "bob", "mic", TrackKind::Audio);
    let cam = publish(&mut room, "bob", "cam", TrackKind::Video);
    let forced = |track: &signaling::TrackId, by: Option<&str>| {
        Output::Broadcast(RoomEvent::TrackMuted {
            user: u("bob"),
            track: track.clone(),
            muted: true,
            forced: true,
            by: by.map(u),
        })
    };

    let out = ok(&mut room, Input::HostMute { by: Some(u("alice")), target: u("bob"), track: Some(mic.clone()) }, 0);
    assert_eq!(out, [forced(&mic, Some("alice")), Output::Media(MediaCommand::StopForwarding { track: mic.clone() })]);
    // All tracks: only those not muted yet.
    let out = ok(&mut room, Input::HostMute { by: None, target: u("bob"), track: None }, 0);
    assert_eq!(out, [forced(&cam, None), Output::Media(MediaCommand::StopForwarding { track: cam.clone() })]);
    assert_eq!(ok(&mut room, Input::HostMute { by: None, target: u("bob"), track: None }, 0), []);
    // Bob may unmute himself again.
    ok(&mut room, Input::SetMuted { user: u("bob"), track: mic, muted: false }, 0);

    // A host muting itself this way is an ordinary mute.
    let own = publish(&mut room, "alice", "mic", TrackKind::Audio);
    let out = ok(&mut room, Input::HostMute { by: Some(u("alice")), target: u("alice"), track: None }, 0);
    assert_eq!(
        out[0],
        Output::Broadcast(RoomEvent::TrackMuted { user: u("alice"), track: own, muted: true, forced: false, by: None })
    );
}

#[test]
fn offers_and_candidates_go_to_the_media_plane() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "v", Role::Viewer);
    let out = ok(&mut room, Input::Offer { user: u("alice"), sdp: "offer".into() }, 0);
    assert_eq!(out, [Output::Media(MediaCommand::AcceptOffer { user: u("alice"), sdp: "offer".into() })]);
    let candidate = IceCandidate {
        candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    for (user, target) in
        [("alice", PeerTarget::Publisher), ("alice", PeerTarget::Subscriber), ("v", PeerTarget::Subscriber)]
    {
        let out = ok(&mut room, Input::Candidate { user: u(user), target, candidate: candidate.clone() }, 0);
        assert_eq!(
            out,
            [Output::Media(MediaCommand::AddCandidate { user: u(user), target, candidate: candidate.clone() })]
        );
    }
}

#[test]
fn viewers_receive_but_never_publish() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "v", Role::Viewer);
    let cam = publish(&mut room, "alice", "cam", TrackKind::Video);
    ok(&mut room, Input::Subscribe { user: u("v"), tracks: vec![cam], max_width: Some(320), max_height: Some(180) }, 0);
    settle(&mut room, "v");
    ok(&mut room, Input::RaiseHand { user: u("v") }, 0);
    assert!(room.snapshot().participants[1].tracks.is_empty());
}

#[test]
fn inputs_and_outputs_cross_the_bus_as_json() {
    let mut room = room();
    let inputs = vec![
        Input::Join { user: u("alice"), role: Role::Host },
        Input::Join { user: u("bob"), role: Role::Participant },
        Input::PublishTrack {
            user: u("bob"),
            cid: "cam".into(),
            kind: TrackKind::Video,
            layers: vec![layer("q", 320, 180, 150), layer("f", 1280, 720, 1500)],
            muted: false,
        },
        Input::Subscribe { user: u("alice"), tracks: vec![t("t1")], max_width: Some(640), max_height: None },
        Input::HostMute { by: Some(u("alice")), target: u("bob"), track: None },
        Input::SetMuted { user: u("bob"), track: t("t1"), muted: false },
        Input::RaiseHand { user: u("bob") },
        Input::ActiveSpeaker { user: Some(u("bob")) },
        Input::Remove { by: None, target: u("bob") },
        Input::Tick,
        Input::End { by: Some(u("alice")) },
    ];
    for input in inputs {
        let json = serde_json::to_string(&input).unwrap();
        let back: Input = serde_json::from_str(&json).unwrap();
        assert_eq!(back, input, "{json}");
        for output in ok(&mut room, back, 0) {
            let json = serde_json::to_string(&output).unwrap();
            assert_eq!(serde_json::from_str::<Output>(&json).unwrap(), output, "{json}");
        }
    }
    let tick: serde_json::Value = serde_json::to_value(Input::Tick).unwrap();
    assert_eq!(tick, serde_json::json!({"input": "tick"}));
    let join: Input = serde_json::from_str(r#"{"input":"join","user":"carol","role":"viewer"}"#).unwrap();
    assert_eq!(join, Input::Join { user: u("carol"), role: Role::Viewer });
}

#[test]
fn a_meeting_from_start_to_end() {
    // Three people, a viewer, simulcast video, renegotiation, a host action and the end.
    let mut room = Room::new(RoomOptions { max_participants: 4, ..options() }, 0);
    join(&mut room, "alice", Role::Host);
    let a_mic = publish(&mut room, "alice", "mic", TrackKind::Audio);
    join(&mut room, "bob", Role::Participant);
    settle(&mut room, "bob");
    let b_cam = published(&ok(
        &mut room,
        Input::PublishTrack {
            user: u("bob"),
            cid: "cam".into(),
            kind: TrackKind::Video,
            layers: vec![layer("q", 320, 180, 150), layer("h", 640, 360, 500), layer("f", 1280, 720, 1500)],
            muted: false,
        },
        0,
    ));
    settle(&mut room, "alice");
    join(&mut room, "v", Role::Viewer);
    settle(&mut room, "v");
    ok(
        &mut room,
        Input::Subscribe { user: u("v"), tracks: vec![b_cam.clone()], max_width: Some(320), max_height: Some(180) },
        0,
    );
    ok(&mut room, Input::HostMute { by: Some(u("alice")), target: u("bob"), track: Some(b_cam.clone()) }, 0);
    let snap = room.snapshot();
    let tracks: Vec<_> =
        snap.participants.iter().flat_map(|p| p.tracks.iter().map(|t| (t.id.clone(), t.muted))).collect();
    assert_eq!(tracks, [(a_mic, false), (b_cam, true)]);
    let out = ok(&mut room, Input::End { by: Some(u("alice")) }, 0);
    assert_eq!(out.iter().filter(|o| matches!(o, Output::Detach { .. })).count(), 3);
    assert_eq!(out.last(), Some(&Output::Media(MediaCommand::CloseRoom)));
}

#[test]
fn renegotiate_from_the_media_plane_offers_once_per_answer() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    // Stable: the media plane's change gets an offer at once.
    let out = ok(&mut room, Input::Renegotiate { user: u("bob") }, 0);
    assert_eq!(offers(&out), [u("bob")]);
    // An offer is out: folded into one more after the answer.
    assert!(offers(&ok(&mut room, Input::Renegotiate { user: u("bob") }, 0)).is_empty());
    assert!(offers(&ok(&mut room, Input::Renegotiate { user: u("bob") }, 0)).is_empty());
    let out = ok(&mut room, Input::Answer { user: u("bob"), sdp: "answer".into() }, 0);
    assert_eq!(offers(&out), [u("bob")]);
    // A user who left, or an ended room: nothing to do, no error.
    assert!(ok(&mut room, Input::Renegotiate { user: u("nobody") }, 0).is_empty());
    ok(&mut room, Input::End { by: None }, 0);
    assert_eq!(room.handle(Input::Renegotiate { user: u("bob") }, 0), Ok(Vec::new()));
}
