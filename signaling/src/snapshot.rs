//! A room as the server API lists it and as a joiner first sees it.

use serde::{Deserialize, Serialize};

use crate::ids::{RoomId, TrackId, UserId};
use crate::model::{EndReason, Role, TrackKind};
use crate::simulcast::Layer;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    pub id: RoomId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub max_participants: u32,
    pub locked: bool,
    /// Set once the room has ended (its participants are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<EndReason>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_speaker: Option<UserId>,
    /// Whether the room subscribes every participant to every other's tracks; shown only when it
    /// does not (participants then choose with `meeting.subscribe`).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub auto_subscribe: bool,
    /// In join order.
    pub participants: Vec<ParticipantInfo>,
    /// Raised hands, first raised first.
    pub hands: Vec<UserId>,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub user: UserId,
    pub role: Role,
    pub joined_at_ms: u64,
    pub hand_raised: bool,
    /// In publish order.
    pub tracks: Vec<TrackInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: TrackId,
    pub cid: String,
    pub kind: TrackKind,
    pub muted: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Layer>,
}
