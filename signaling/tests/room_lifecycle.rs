//! Joining, leaving, host controls, hands, the active speaker and time: the room as a state
//! machine, without sockets.

mod common;

use common::*;
use signaling::{
    EndReason, Input, LeaveReason, MediaCommand, Output, Reply, Role, Room, RoomError, RoomEvent, RoomOptions,
    TrackKind, ERROR_CODES,
};

#[test]
fn join_replies_with_the_room_and_tells_everyone() {
    let mut room = room();
    let out = join(&mut room, "alice", Role::Host);
    let Some(Output::Reply(Reply::Joined { role, room: snap })) = out.first() else { panic!("{out:?}") };
    assert_eq!(*role, Role::Host);
    assert_eq!(snap.participants.len(), 1, "the snapshot includes the joiner");
    assert_eq!(snap.participants[0].user, u("alice"));
    assert_eq!(out[1..], [Output::Broadcast(RoomEvent::ParticipantJoined { user: u("alice"), role: Role::Host })]);

    let out = ok(&mut room, Input::Join { user: u("bob"), role: Role::Participant }, 1_500);
    let Some(Output::Reply(Reply::Joined { room: snap, .. })) = out.first() else { panic!("{out:?}") };
    let users: Vec<_> = snap.participants.iter().map(|p| (p.user.as_str(), p.role, p.joined_at_ms)).collect();
    assert_eq!(users, [("alice", Role::Host, 0), ("bob", Role::Participant, 1_500)]);
    assert_eq!(room.len(), 2);
    assert_eq!(room.role_of(&u("bob")), Some(Role::Participant));
    assert_eq!(room.role_of(&u("carol")), None);
}

#[test]
fn the_host_option_overrides_the_grant() {
    let mut room = Room::new(RoomOptions { host: Some(u("alice")), ..options() }, 0);
    let out = join(&mut room, "alice", Role::Viewer);
    assert!(matches!(&out[0], Output::Reply(Reply::Joined { role: Role::Host, .. })));
    assert_eq!(room.role_of(&u("alice")), Some(Role::Host));
}

#[test]
fn room_full_counts_everyone_and_frees_a_place_on_leave() {
    let mut room = Room::new(RoomOptions { max_participants: 2, ..options() }, 0);
    join(&mut room, "alice", Role::Host);
    join(&mut room, "v", Role::Viewer);
    let err = room.handle(Input::Join { user: u("bob"), role: Role::Host }, 0).unwrap_err();
    assert_eq!(err, RoomError::RoomFull { max: 2 });
    assert_eq!(err.as_str(), "room_full");
    assert_eq!(err.to_string(), "the room is full (2 participants)");
    ok(&mut room, Input::Leave { user: u("v") }, 0);
    join(&mut room, "bob", Role::Participant);
}

#[test]
fn leave_tells_everyone_unsubscribes_disconnects_and_detaches() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    join(&mut room, "carol", Role::Participant);
    let mic = publish(&mut room, "bob", "mic", TrackKind::Audio);
    settle(&mut room, "alice");
    settle(&mut room, "carol");
    ok(&mut room, Input::ActiveSpeaker { user: Some(u("bob")) }, 0);

    let out = ok(&mut room, Input::Leave { user: u("bob") }, 0);
    assert_eq!(
        out,
        [
            Output::Broadcast(RoomEvent::ParticipantLeft { user: u("bob"), reason: LeaveReason::Left }),
            Output::Media(MediaCommand::Unsubscribe { user: u("alice"), track: mic.clone() }),
            Output::Media(MediaCommand::Unsubscribe { user: u("carol"), track: mic.clone() }),
            Output::Media(MediaCommand::RemoveTrack { track: mic }),
            Output::Broadcast(RoomEvent::ActiveSpeaker { user: None }),
            Output::Media(MediaCommand::DisconnectMedia { user: u("bob") }),
            Output::Detach { user: u("bob"), reason: LeaveReason::Left },
            Output::Media(MediaCommand::CreateOffer { user: u("alice") }),
            Output::Media(MediaCommand::CreateOffer { user: u("carol") }),
        ]
    );
    assert_eq!(room.role_of(&u("bob")), None);
    assert_eq!(room.snapshot().active_speaker, None);
    // A participant who left may come back (unlike a removed one).
    join(&mut room, "bob", Role::Participant);
}

#[test]
fn remove_notifies_the_target_first_and_bars_it() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "mallory", Role::Participant);
    let out = ok(&mut room, Input::Remove { by: Some(u("alice")), target: u("mallory") }, 0);
    assert_eq!(
        out,
        [
            Output::Notify { to: u("mallory"), event: RoomEvent::Removed { by: Some(u("alice")) } },
            Output::Broadcast(RoomEvent::ParticipantLeft { user: u("mallory"), reason: LeaveReason::Removed }),
            Output::Media(MediaCommand::DisconnectMedia { user: u("mallory") }),
            Output::Detach { user: u("mallory"), reason: LeaveReason::Removed },
        ]
    );
    let again = room.handle(Input::Join { user: u("mallory"), role: Role::Participant }, 0);
    assert_eq!(again, Err(RoomError::Removed));

    // The server API removes without being in the room.
    join(&mut room, "bob", Role::Participant);
    let out = ok(&mut room, Input::Remove { by: None, target: u("bob") }, 0);
    assert_eq!(out[0], Output::Notify { to: u("bob"), event: RoomEvent::Removed { by: None } });
}

#[test]
fn lock_lets_only_hosts_in() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    let out = ok(&mut room, Input::Lock { by: Some(u("alice")) }, 0);
    assert_eq!(out, [Output::Broadcast(RoomEvent::LockChanged { locked: true, by: Some(u("alice")) })]);
    assert!(room.is_locked());
    assert_eq!(ok(&mut room, Input::Lock { by: None }, 0), [], "locking a locked room changes nothing");
    assert_eq!(room.handle(Input::Join { user: u("bob"), role: Role::Participant }, 0), Err(RoomError::RoomLocked));
    assert_eq!(room.handle(Input::Join { user: u("v"), role: Role::Viewer }, 0), Err(RoomError::RoomLocked));
    join(&mut room, "carol", Role::Host);
    let out = ok(&mut room, Input::Unlock { by: None }, 0);
    assert_eq!(out, [Output::Broadcast(RoomEvent::LockChanged { locked: false, by: None })]);
    assert_eq!(ok(&mut room, Input::Unlock { by: Some(u("carol")) }, 0), []);
    join(&mut room, "bob", Role::Participant);
}

#[test]
fn a_participant_joining_again_replaces_its_old_session_even_in_a_locked_full_room() {
    let mut room = Room::new(RoomOptions { max_participants: 2, ..options() }, 0);
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    let mic = publish(&mut room, "bob", "mic", TrackKind::Audio);
    settle(&mut room, "alice");
    ok(&mut room, Input::Lock { by: Some(u("alice")) }, 0);
    let out = ok(&mut room, Input::Replace { user: u("bob"), role: Role::Participant }, 5);
    // The old session goes as a leave does (its track with it), then the new one joins.
    let left = out.iter().position(|o| {
        *o == Output::Broadcast(RoomEvent::ParticipantLeft { user: u("bob"), reason: LeaveReason::Replaced })
    });
    let detached = out.iter().position(|o| *o == Output::Detach { user: u("bob"), reason: LeaveReason::Replaced });
    let joined = out.iter().position(|o| matches!(o, Output::Reply(Reply::Joined { role: Role::Participant, .. })));
    let announced = out.iter().position(|o| {
        *o == Output::Broadcast(RoomEvent::ParticipantJoined { user: u("bob"), role: Role::Participant })
    });
    assert!(out.contains(&Output::Media(MediaCommand::RemoveTrack { track: mic })), "{out:?}");
    assert!(out.contains(&Output::Media(MediaCommand::DisconnectMedia { user: u("bob") })), "{out:?}");
    match (left, detached, joined, announced) {
        (Some(l), Some(d), Some(j), Some(a)) => assert!(l < d && d < j && j < a, "{out:?}"),
        _ => panic!("{out:?}"),
    }
    assert_eq!(room.len(), 2);
    assert_eq!(room.role_of(&u("bob")), Some(Role::Participant));
    // Only someone in the room can be replaced; a plain second join is still refused.
    let err = room.handle(Input::Replace { user: u("carol"), role: Role::Participant }, 0).unwrap_err();
    assert_eq!(err.as_str(), "not_in_room");
    assert_eq!(room.handle(Input::Join { user: u("bob"), role: Role::Participant }, 0), Err(RoomError::AlreadyJoined));
}

#[test]
fn a_room_can_start_locked() {
    let mut room = Room::new(RoomOptions { locked: true, ..options() }, 0);
    assert!(room.snapshot().locked);
    assert_eq!(room.handle(Input::Join { user: u("bob"), role: Role::Participant }, 0), Err(RoomError::RoomLocked));
    join(&mut room, "alice", Role::Host);
}

#[test]
fn end_tells_everyone_disconnects_and_closes_last() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    publish(&mut room, "bob", "mic", TrackKind::Audio);
    let out = ok(&mut room, Input::End { by: Some(u("alice")) }, 0);
    assert_eq!(
        out,
        [
            Output::Broadcast(RoomEvent::RoomEnded { reason: EndReason::Host, by: Some(u("alice")) }),
            Output::Media(MediaCommand::DisconnectMedia { user: u("alice") }),
            Output::Detach { user: u("alice"), reason: LeaveReason::Ended },
            Output::Media(MediaCommand::DisconnectMedia { user: u("bob") }),
            Output::Detach { user: u("bob"), reason: LeaveReason::Ended },
            Output::Media(MediaCommand::CloseRoom),
        ]
    );
    assert_eq!(room.ended(), Some(EndReason::Host));
    let snap = room.snapshot();
    assert_eq!((snap.ended, snap.participants.len()), (Some(EndReason::Host), 0));
    assert_eq!(room.next_timeout(), None);

    // Nothing more happens; the media plane's late reports and ticks are not errors.
    for input in [
        Input::Join { user: u("carol"), role: Role::Host },
        Input::Leave { user: u("bob") },
        Input::End { by: None },
        Input::RaiseHand { user: u("bob") },
    ] {
        assert_eq!(room.handle(input, 1), Err(RoomError::RoomEnded));
    }
    assert_eq!(ok(&mut room, Input::Tick, 10_000_000), []);
    assert_eq!(ok(&mut room, Input::ActiveSpeaker { user: Some(u("bob")) }, 1), []);
}

#[test]
fn the_api_ends_a_room() {
    let mut room = room();
    join(&mut room, "bob", Role::Participant);
    let out = ok(&mut room, Input::End { by: None }, 0);
    assert_eq!(out[0], Output::Broadcast(RoomEvent::RoomEnded { reason: EndReason::Api, by: None }));
    assert_eq!(out.last(), Some(&Output::Media(MediaCommand::CloseRoom)));
    assert_eq!(room.ended(), Some(EndReason::Api));
}

#[test]
fn a_stopping_node_ends_its_rooms_as_lost() {
    let mut room = room();
    join(&mut room, "bob", Role::Participant);
    let out = ok(&mut room, Input::NodeStopping, 0);
    assert_eq!(out[0], Output::Broadcast(RoomEvent::RoomEnded { reason: EndReason::NodeLost, by: None }));
    assert!(out.contains(&Output::Detach { user: u("bob"), reason: LeaveReason::Ended }), "{out:?}");
    assert_eq!(out.last(), Some(&Output::Media(MediaCommand::CloseRoom)));
    assert_eq!(room.handle(Input::NodeStopping, 0), Err(RoomError::RoomEnded));
}

#[test]
fn hands_go_up_in_order_and_hosts_can_lower_them() {
    let mut room = room();
    for (user, role) in [("alice", Role::Host), ("bob", Role::Participant), ("carol", Role::Viewer)] {
        join(&mut room, user, role);
    }
    assert_eq!(
        ok(&mut room, Input::RaiseHand { user: u("carol") }, 0),
        [Output::Broadcast(RoomEvent::HandRaised { user: u("carol") })]
    );
    ok(&mut room, Input::RaiseHand { user: u("bob") }, 0);
    assert_eq!(ok(&mut room, Input::RaiseHand { user: u("bob") }, 0), [], "raising a raised hand changes nothing");
    assert_eq!(room.snapshot().hands, [u("carol"), u("bob")]);
    assert!(room.snapshot().participants[1].hand_raised);

    let out = ok(&mut room, Input::LowerHand { user: u("bob"), target: None }, 0);
    assert_eq!(out, [Output::Broadcast(RoomEvent::HandLowered { user: u("bob"), by: None })]);
    assert_eq!(ok(&mut room, Input::LowerHand { user: u("bob"), target: None }, 0), []);
    // Naming oneself as the target is lowering one's own hand.
    ok(&mut room, Input::RaiseHand { user: u("bob") }, 0);
    let out = ok(&mut room, Input::LowerHand { user: u("bob"), target: Some(u("bob")) }, 0);
    assert_eq!(out, [Output::Broadcast(RoomEvent::HandLowered { user: u("bob"), by: None })]);

    assert_eq!(room.handle(Input::LowerHand { user: u("bob"), target: Some(u("carol")) }, 0), Err(RoomError::NotHost));
    let out = ok(&mut room, Input::LowerHand { user: u("alice"), target: Some(u("carol")) }, 0);
    assert_eq!(out, [Output::Broadcast(RoomEvent::HandLowered { user: u("carol"), by: Some(u("alice")) })]);
    assert!(room.snapshot().hands.is_empty());

    // A raised hand leaves with its participant; a new raise goes to the back.
    ok(&mut room, Input::RaiseHand { user: u("carol") }, 0);
    ok(&mut room, Input::RaiseHand { user: u("alice") }, 0);
    ok(&mut room, Input::RaiseHand { user: u("bob") }, 0);
    ok(&mut room, Input::Leave { user: u("carol") }, 0);
    assert_eq!(room.snapshot().hands, [u("alice"), u("bob")]);
}

#[test]
fn active_speaker_changes_are_broadcast_once() {
    let mut room = room();
    join(&mut room, "alice", Role::Host);
    join(&mut room, "bob", Role::Participant);
    let steps: &[(Option<&str>, bool)] = &[
        (Some("bob"), true),
        (Some("bob"), false),
        (Some("alice"), true),
        // Left already, or never here: the media plane raced a departure.
        (Some("ghost"), false),
        (None, true),
        (None, false),
    ];
    for &(user, broadcast) in steps {
        let user = user.map(u);
        let out = ok(&mut room, Input::ActiveSpeaker { user: user.clone() }, 0);
        let expected = if broadcast { vec![Output::Broadcast(RoomEvent::ActiveSpeaker { user })] } else { vec![] };
        assert_eq!(out, expected);
    }
}

#[test]
fn expiry_by_tick_and_refusal_in_between() {
    let mut room = Room::new(RoomOptions { expires_at_ms: Some(60_000), empty_timeout_ms: None, ..options() }, 1_000);
    assert_eq!(room.next_timeout(), Some(60_000));
    join(&mut room, "alice", Role::Host);
    assert_eq!(ok(&mut room, Input::Tick, 59_999), []);
    // Past the expiry but before the tick: refused, unchanged.
    let before = room.clone();
    assert_eq!(room.handle(Input::Join { user: u("bob"), role: Role::Host }, 60_000), Err(RoomError::RoomEnded));
    assert_eq!(room.handle(Input::RaiseHand { user: u("alice") }, 60_001), Err(RoomError::RoomEnded));
    assert_eq!(room, before);
    let out = ok(&mut room, Input::Tick, 60_002);
    assert_eq!(
        out,
        [
            Output::Broadcast(RoomEvent::RoomEnded { reason: EndReason::Expired, by: None }),
            Output::Media(MediaCommand::DisconnectMedia { user: u("alice") }),
            Output::Detach { user: u("alice"), reason: LeaveReason::Ended },
            Output::Media(MediaCommand::CloseRoom),
        ]
    );
    assert_eq!(room.ended(), Some(EndReason::Expired));
}

#[test]
fn empty_rooms_close_after_the_timeout() {
    let mut room = Room::new(RoomOptions { empty_timeout_ms: Some(10_000), ..options() }, 5_000);
    // Counted from creation: nobody came.
    assert_eq!(room.next_timeout(), Some(15_000));
    ok(&mut room, Input::Join { user: u("alice"), role: Role::Host }, 14_000);
    assert_eq!(room.next_timeout(), None, "occupied and no expiry: no deadline");
    assert_eq!(ok(&mut room, Input::Tick, 20_000), []);
    ok(&mut room, Input::Leave { user: u("alice") }, 30_000);
    assert_eq!(room.next_timeout(), Some(40_000));
    assert_eq!(ok(&mut room, Input::Tick, 39_999), []);
    // Someone came back in time: the clock stops again.
    ok(&mut room, Input::Join { user: u("alice"), role: Role::Host }, 39_999);
    ok(&mut room, Input::Leave { user: u("alice") }, 40_000);
    assert_eq!(ok(&mut room, Input::Tick, 49_999), []);
    let out = ok(&mut room, Input::Tick, 50_000);
    assert_eq!(
        out,
        [
            Output::Broadcast(RoomEvent::RoomEnded { reason: EndReason::Empty, by: None }),
            Output::Media(MediaCommand::CloseRoom)
        ]
    );
    assert_eq!(room.ended(), Some(EndReason::Empty));
}

#[test]
fn the_nearest_deadline_wins_and_none_without_either() {
    let both = RoomOptions { expires_at_ms: Some(7_000), empty_timeout_ms: Some(5_000), ..options() };
    assert_eq!(Room::new(both.clone(), 0).next_timeout(), Some(5_000));
    assert_eq!(Room::new(both, 3_000).next_timeout(), Some(7_000));
    let neither = RoomOptions { empty_timeout_ms: None, ..options() };
    let mut room = Room::new(neither, 0);
    assert_eq!(room.next_timeout(), None);
    assert_eq!(ok(&mut room, Input::Tick, u64::MAX), []);
    // Expiry beats the empty timeout when both are due.
    let mut room = Room::new(RoomOptions { expires_at_ms: Some(100), empty_timeout_ms: Some(100), ..options() }, 0);
    ok(&mut room, Input::Tick, 100);
    assert_eq!(room.ended(), Some(EndReason::Expired));
}

/// One setup per case, the input, and the error it must get; the room must not change.
#[test]
fn every_error_has_its_code_and_changes_nothing() {
    let setup = || {
        let mut room = Room::new(RoomOptions { max_participants: 4, max_tracks_per_participant: 2, ..options() }, 0);
        join(&mut room, "host", Role::Host);
        join(&mut room, "bob", Role::Participant);
        join(&mut room, "viewer", Role::Viewer);
        publish(&mut room, "bob", "mic", TrackKind::Audio); // t1
        room
    };
    let full = || {
        let mut room = setup();
        join(&mut room, "dave", Role::Participant);
        room
    };
    let locked = || {
        let mut room = setup();
        ok(&mut room, Input::Lock { by: None }, 0);
        room
    };
    let removed = || {
        let mut room = setup();
        ok(&mut room, Input::Remove { by: None, target: u("bob") }, 0);
        room
    };
    let ended = || {
        let mut room = setup();
        ok(&mut room, Input::End { by: None }, 0);
        room
    };
    let two_tracks = || {
        let mut room = setup();
        publish(&mut room, "bob", "cam", TrackKind::Video);
        room
    };
    let stable = || {
        let mut room = setup();
        settle(&mut room, "host");
        room
    };
    let video = |layers| Input::PublishTrack {
        user: u("bob"),
        cid: "cam".into(),
        kind: TrackKind::Video,
        layers,
        muted: false,
    };
    let four = vec![layer("a", 1, 1, 1), layer("b", 2, 2, 2), layer("c", 3, 3, 3), layer("d", 4, 4, 4)];
    let sdp = |user: &str, sdp: &str| Input::Answer { user: u(user), sdp: sdp.into() };

    let cases: Vec<(Room, Input, RoomError)> = vec![
        (full(), Input::Join { user: u("eve"), role: Role::Participant }, RoomError::RoomFull { max: 4 }),
        (locked(), Input::Join { user: u("eve"), role: Role::Participant }, RoomError::RoomLocked),
        (setup(), Input::Lock { by: Some(u("bob")) }, RoomError::NotHost),
        (setup(), Input::Unlock { by: Some(u("viewer")) }, RoomError::NotHost),
        (setup(), Input::End { by: Some(u("bob")) }, RoomError::NotHost),
        (setup(), Input::Remove { by: Some(u("bob")), target: u("host") }, RoomError::NotHost),
        (setup(), Input::HostMute { by: Some(u("bob")), target: u("host"), track: None }, RoomError::NotHost),
        (setup(), Input::LowerHand { user: u("bob"), target: Some(u("host")) }, RoomError::NotHost),
        (setup(), publish_input("viewer", "mic", TrackKind::Audio), RoomError::ViewerCannotPublish),
        (setup(), Input::Offer { user: u("viewer"), sdp: "v=0".into() }, RoomError::ViewerCannotPublish),
        (
            setup(),
            Input::Candidate {
                user: u("viewer"),
                target: signaling::PeerTarget::Publisher,
                candidate: signaling::IceCandidate {
                    candidate: String::new(),
                    sdp_mid: None,
                    sdp_mline_index: None,
                    username_fragment: None,
                },
            },
            RoomError::ViewerCannotPublish,
        ),
        (ended(), Input::RaiseHand { user: u("bob") }, RoomError::RoomEnded),
        (setup(), Input::Leave { user: u("eve") }, RoomError::NotInRoom),
        (setup(), Input::RaiseHand { user: u("eve") }, RoomError::NotInRoom),
        (setup(), Input::Lock { by: Some(u("eve")) }, RoomError::NotInRoom),
        (setup(), Input::Offer { user: u("eve"), sdp: "v=0".into() }, RoomError::NotInRoom),
        (
            setup(),
            Input::Subscribe { user: u("eve"), tracks: vec![], max_width: None, max_height: None },
            RoomError::NotInRoom,
        ),
        (setup(), Input::Join { user: u("bob"), role: Role::Participant }, RoomError::AlreadyJoined),
        (removed(), Input::Join { user: u("bob"), role: Role::Host }, RoomError::Removed),
        (setup(), Input::UnpublishTrack { user: u("bob"), track: t("t9") }, RoomError::UnknownTrack),
        (setup(), Input::UnpublishTrack { user: u("host"), track: t("t1") }, RoomError::UnknownTrack),
        (setup(), Input::SetMuted { user: u("host"), track: t("t1"), muted: true }, RoomError::UnknownTrack),
        (setup(), Input::HostMute { by: None, target: u("bob"), track: Some(t("t9")) }, RoomError::UnknownTrack),
        (
            setup(),
            Input::Subscribe { user: u("host"), tracks: vec![t("t1"), t("t9")], max_width: None, max_height: None },
            RoomError::UnknownTrack,
        ),
        (setup(), Input::Unsubscribe { user: u("host"), tracks: vec![t("t1"), t("t9")] }, RoomError::UnknownTrack),
        (setup(), Input::Remove { by: None, target: u("eve") }, RoomError::UnknownParticipant),
        (
            setup(),
            Input::HostMute { by: Some(u("host")), target: u("eve"), track: None },
            RoomError::UnknownParticipant,
        ),
        (setup(), Input::LowerHand { user: u("host"), target: Some(u("eve")) }, RoomError::UnknownParticipant),
        (setup(), publish_input("bob", "mic", TrackKind::Audio), RoomError::TrackAlreadyPublished),
        (two_tracks(), publish_input("bob", "screen", TrackKind::Screen), RoomError::TooManyTracks { max: 2 }),
        (
            setup(),
            publish_input("host", "", TrackKind::Audio),
            RoomError::InvalidTrack("cid must be 1-64 bytes".into()),
        ),
        (
            setup(),
            publish_input("host", &"x".repeat(65), TrackKind::Audio),
            RoomError::InvalidTrack("cid must be 1-64 bytes".into()),
        ),
        (
            setup(),
            Input::PublishTrack {
                user: u("host"),
                cid: "mic".into(),
                kind: TrackKind::Audio,
                layers: vec![layer("q", 1, 1, 1)],
                muted: false,
            },
            RoomError::InvalidTrack("audio has no simulcast layers".into()),
        ),
        (setup(), video(four), RoomError::InvalidTrack("at most 3 simulcast layers, got 4".into())),
        (
            setup(),
            video(vec![layer("q", 320, 180, 150), layer("q", 640, 360, 500)]),
            RoomError::InvalidTrack("rid \"q\" appears twice".into()),
        ),
        (
            setup(),
            Input::Subscribe { user: u("bob"), tracks: vec![t("t1")], max_width: None, max_height: None },
            RoomError::OwnTrack,
        ),
        (setup(), Input::Offer { user: u("bob"), sdp: String::new() }, RoomError::InvalidSdp("empty")),
        (stable(), sdp("host", &"a".repeat(64 * 1024 + 1)), RoomError::InvalidSdp("larger than 64 KiB")),
        (stable(), sdp("host", "v=0"), RoomError::UnexpectedAnswer),
        // Bob has published but nobody offered to him: no track to receive yet.
        (setup(), sdp("bob", "v=0"), RoomError::UnexpectedAnswer),
    ];

    let mut seen = std::collections::BTreeSet::new();
    for (mut room, input, expected) in cases {
        let before = room.clone();
        let got = room.handle(input.clone(), 0);
        assert_eq!(got, Err(expected.clone()), "{input:?}");
        assert_eq!(room, before, "{input:?} changed the room although it failed");
        seen.insert(expected.as_str());
    }
    let all: std::collections::BTreeSet<_> = ERROR_CODES.iter().copied().collect();
    assert_eq!(all.len(), ERROR_CODES.len(), "codes are unique");
    assert_eq!(seen, all, "every code is exercised");
}
