//! A participant's state inside a room: its tracks, subscriptions, raised hand, and the
//! negotiation state of its subscriber connection.

use std::collections::BTreeMap;

use crate::error::RoomError;
use crate::ids::{TrackId, UserId};
use crate::model::{Role, TrackKind};
use crate::simulcast::Layer;
use crate::snapshot::{ParticipantInfo, TrackInfo};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Participant {
    pub user: UserId,
    pub role: Role,
    pub joined_at_ms: u64,
    /// In publish order.
    pub tracks: Vec<Track>,
    /// The room's raise counter when the hand went up: orders the hands.
    pub hand: Option<u64>,
    pub subscriptions: BTreeMap<TrackId, Subscription>,
    pub negotiation: Negotiation,
}

impl Participant {
    pub fn new(user: UserId, role: Role, now_ms: u64) -> Participant {
        Participant {
            user,
            role,
            joined_at_ms: now_ms,
            tracks: Vec::new(),
            hand: None,
            subscriptions: BTreeMap::new(),
            negotiation: Negotiation::Stable,
        }
    }

    pub fn track(&self, id: &TrackId) -> Option<usize> {
        self.tracks.iter().position(|t| &t.id == id)
    }

    pub fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            user: self.user.clone(),
            role: self.role,
            joined_at_ms: self.joined_at_ms,
            hand_raised: self.hand.is_some(),
            tracks: self.tracks.iter().map(Track::info).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Track {
    pub id: TrackId,
    pub cid: String,
    pub kind: TrackKind,
    /// Lowest quality first.
    pub layers: Vec<Layer>,
    pub muted: bool,
}

impl Track {
    pub fn info(&self) -> TrackInfo {
        TrackInfo {
            id: self.id.clone(),
            cid: self.cid.clone(),
            kind: self.kind,
            muted: self.muted,
            layers: self.layers.clone(),
        }
    }
}

/// The size a subscriber asked for on one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Subscription {
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
}

/// Offer/answer on the subscriber connection, where the server is the only offerer: at most one
/// offer is outstanding, and changes made while it is are folded into one more offer after the
/// answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negotiation {
    Stable,
    AwaitingAnswer { again: bool },
}

impl Negotiation {
    /// What the connection carries changed; returns whether to create an offer now.
    pub fn changed(&mut self) -> bool {
        match self {
            Negotiation::Stable => {
                *self = Negotiation::AwaitingAnswer { again: false };
                true
            }
            Negotiation::AwaitingAnswer { again } => {
                *again = true;
                false
            }
        }
    }

    /// The client answered; returns whether to create the next offer now. Unchanged on error.
    pub fn answered(&mut self) -> Result<bool, RoomError> {
        match *self {
            Negotiation::Stable => Err(RoomError::UnexpectedAnswer),
            Negotiation::AwaitingAnswer { again: false } => {
                *self = Negotiation::Stable;
                Ok(false)
            }
            Negotiation::AwaitingAnswer { again: true } => {
                *self = Negotiation::AwaitingAnswer { again: false };
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_folds_changes_into_one_more_offer() {
        let mut n = Negotiation::Stable;
        assert_eq!(n.answered(), Err(RoomError::UnexpectedAnswer));
        assert_eq!(n, Negotiation::Stable);
        assert!(n.changed(), "stable: offer now");
        assert!(!n.changed(), "an offer is out: wait");
        assert!(!n.changed(), "still one more offer, not two");
        assert_eq!(n.answered(), Ok(true));
        assert_eq!(n, Negotiation::AwaitingAnswer { again: false });
        assert_eq!(n.answered(), Ok(false));
        assert_eq!(n, Negotiation::Stable);
        assert_eq!(n.answered(), Err(RoomError::UnexpectedAnswer));
    }
}
