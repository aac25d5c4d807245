//! Meetings without I/O: room and participant state machines, the signaling messages of
//! meetings, and simulcast layer choice.
//!
//! Nothing here opens a socket, spawns a task or reads a clock, and no WebRTC type appears: the
//! hub feeds a [`Room`] the requests of its participants and the reports of the media plane,
//! with the time, and carries out what the room returns. Tests drive it the same way and step
//! time by hand.
//!
//! # The model
//!
//! - A [`Room`] is created with [`RoomOptions`] (through the server API, or implicitly when a
//!   token's room grant names a room that does not exist yet) and lives on one node. Its
//!   participants each have a [`Role`] from their grant: hosts control the room, participants
//!   publish and subscribe, viewers only subscribe.
//! - Each participant has two peer connections ([`PeerTarget`]): on its *publisher* connection
//!   the client offers and the server answers; on its *subscriber* connection the server offers
//!   and the client answers. One offerer per connection means no glare. The room tracks the
//!   subscriber connection's offer/answer state so that it never has two offers outstanding and
//!   folds the changes made meanwhile into one more offer after the answer.
//! - A track is announced with `PublishTrack` and named by the room (`t1`, `t2`, …, unique in
//!   the room); the client's own id for it is its `cid`. With auto-subscribe (the default) every
//!   participant is subscribed to every other participant's tracks.
//! - Muting is signalled (an event) and enforced (the media plane stops forwarding the track).
//!   Hosts may mute others but not unmute them.
//! - [`simulcast`] chooses, per subscriber and video track, which of up to three layers to
//!   forward, and throttles keyframe requests. It is for the media plane and the hub code that
//!   drives it; the room only passes on the size each subscriber asks for.
//!
//! # The contract of [`Room::handle`]
//!
//! `handle(input, now_ms)` applies one [`Input`] and returns the [`Output`]s to carry out:
//!
//! - **All or nothing**: an input that returns an error has changed nothing, and there is
//!   nothing to carry out. The error's [`RoomError::as_str`] is the wire code.
//! - **In order**: outputs are to be carried out in the order returned. A [`Output::Reply`],
//!   when there is one, comes first; a participant's departure is broadcast before its media is
//!   disconnected and before it is [detached](Output::Detach); [`MediaCommand::CloseRoom`] is
//!   always the last output of a room.
//! - **Idempotent controls**: muting a muted track, raising a raised hand, locking a locked room
//!   and the like succeed with no outputs.
//! - **Deterministic**: the same inputs at the same times give the same outputs (participants
//!   in join order, tracks in publish order).
//! - **Time** is the caller's clock in milliseconds, never going backwards. The room never
//!   wakes itself: the hub sends [`Input::Tick`] at [`Room::next_timeout`] to expire it or close
//!   it when it has been empty too long. Requests after the expiry time and before that tick
//!   are already refused with `room_ended`.
//! - **Single-threaded**: a room is a plain value. The hub keeps each room behind one lock or
//!   in one task and sends it every input for that room, from any node (inputs are serde types
//!   for the bus).
//!
//! # Who calls what
//!
//! - The hub decodes a request frame into a [`ClientMsg`], routes it by [`ClientMsg::room`],
//!   turns it into an [`Input`] with [`ClientMsg::into_input`] (passing the grant's role) and
//!   calls [`Room::handle`]. Server-API actions build the [`Input`] directly with `by: None`.
//! - The hub publishes [`Output::Broadcast`] on `room:{id}`, pushes [`Output::Notify`] to one
//!   user, replies with [`Output::Reply`], unsubscribes [`Output::Detach`]ed users, and hands
//!   [`Output::Media`] commands to the SFU. What the SFU produces for a client (SDP, candidates)
//!   goes to it as a [`ServerMsg`]; what it observes (the active speaker) comes back as an
//!   [`Input`].
//! - The hub keeps a [`LayerSelector`] per (subscriber, video track) and tells the SFU's
//!   forwarder which layer to send; the forwarder requests (and throttles) the keyframes.

mod error;
mod ids;
mod input;
pub mod messages;
mod model;
mod output;
mod participant;
mod room;
pub mod simulcast;
mod snapshot;

pub use error::{RoomError, ERROR_CODES};
pub use ids::{RoomId, TrackId, UserId};
pub use input::Input;
pub use messages::{ClientMsg, ServerMsg};
pub use model::{EndReason, IceCandidate, LeaveReason, PeerTarget, Role, TrackKind};
pub use output::{MediaCommand, Output, Reply, RoomEvent};
pub use room::{
    Room, RoomOptions, DEFAULT_EMPTY_TIMEOUT_MS, DEFAULT_MAX_PARTICIPANTS, DEFAULT_MAX_TRACKS_PER_PARTICIPANT,
    MAX_CID_BYTES, MAX_SDP_BYTES,
};
pub use simulcast::{Constraints, Layer, LayerSelector, LayerSwitch, SelectorConfig};
pub use snapshot::{ParticipantInfo, RoomSnapshot, TrackInfo};
