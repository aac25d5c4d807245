//! Helpers shared by the room tests: short constructors and output filters.

#![allow(dead_code)]

use signaling::{
    Input, Layer, MediaCommand, Output, Reply, Role, Room, RoomEvent, RoomOptions, TrackId, TrackKind, UserId,
};

pub fn u(name: &str) -> UserId {
    UserId::from(name)
}

pub fn t(id: &str) -> TrackId {
    TrackId::from(id)
}

pub fn options() -> RoomOptions {
    RoomOptions::new("standup".into())
}

pub fn room() -> Room {
    Room::new(options(), 0)
}

/// Applies an input that must succeed.
pub fn ok(room: &mut Room, input: Input, now_ms: u64) -> Vec<Output> {
    match room.handle(input.clone(), now_ms) {
        Ok(out) => out,
        Err(e) => panic!("{input:?} failed: {e}"),
    }
}

pub fn join(room: &mut Room, user: &str, role: Role) -> Vec<Output> {
    ok(room, Input::Join { user: u(user), role }, 0)
}

pub fn publish_input(user: &str, cid: &str, kind: TrackKind) -> Input {
    Input::PublishTrack { user: u(user), cid: cid.into(), kind, layers: Vec::new(), muted: false }
}

/// Publishes and returns the room's id for the track.
pub fn publish(room: &mut Room, user: &str, cid: &str, kind: TrackKind) -> TrackId {
    published(&ok(room, publish_input(user, cid, kind), 0))
}

pub fn published(out: &[Output]) -> TrackId {
    match out.first() {
        Some(Output::Reply(Reply::Published { track, .. })) => track.clone(),
        other => panic!("expected a Published reply first, got {other:?}"),
    }
}

/// Answers the outstanding offer on `user`'s subscriber connection, and any that follows.
pub fn settle(room: &mut Room, user: &str) {
    loop {
        let out = ok(room, Input::Answer { user: u(user), sdp: "v=0".into() }, 0);
        if !out.iter().any(|o| matches!(o, Output::Media(MediaCommand::CreateOffer { .. }))) {
            return;
        }
    }
}

pub fn broadcasts(out: &[Output]) -> Vec<RoomEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

pub fn media(out: &[Output]) -> Vec<MediaCommand> {
    out.iter()
        .filter_map(|o| match o {
            Output::Media(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

pub fn offers(out: &[Output]) -> Vec<UserId> {
    media(out)
        .into_iter()
        .filter_map(|m| match m {
            MediaCommand::CreateOffer { user } => Some(user),
            _ => None,
        })
        .collect()
}

pub fn layer(rid: &str, width: u32, height: u32, kbps: u64) -> Layer {
    Layer { rid: rid.into(), width, height, bitrate_bps: kbps * 1000 }
}
