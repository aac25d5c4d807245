//! Newtype ids, so a user cannot be passed where a track is expected. On the wire each is a
//! plain string.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }
    };
}

string_id!(
    /// A room, as named by the server API or a token's grant: the `{id}` of channel `room:{id}`.
    RoomId
);
string_id!(
    /// A user: the token's `sub`. A user is in a room at most once.
    UserId
);
string_id!(
    /// A published track, named by the room (`t1`, `t2`, …) so it is unique in the room whatever
    /// ids clients choose; the publisher's own id for it is its `cid`.
    TrackId
);
