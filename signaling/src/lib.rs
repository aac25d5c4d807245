//! Meetings without I/O: room and participant state machines and the signaling messages.
