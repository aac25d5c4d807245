//! What nodes send each other through Redis: MessagePack envelopes naming the origin node.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{bus::BusMessage, errors::CloseReason, protocol::ClientInfo, protocol::Publication};

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The node that sent it.
    pub origin: String,
    /// True when the origin has *not* delivered it locally and waits for its own copy (history
    /// channels in Redis modes: the offset, and so the order, is only known in Redis).
    pub echo: bool,
    pub msg: WireMsg,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum WireMsg {
    Pub { channel: String, offset: u64, event: String, data: Value, from: Option<String> },
    Join { channel: String, info: ClientInfo },
    Leave { channel: String, info: ClientInfo },
    Disconnect { user: String, code: u16 },
    Ban { user: String, until: Option<u64> },
    Unban { user: String },
    Node { to: String, from: String, payload: Value },
}

impl WireMsg {
    pub fn from_bus(msg: &BusMessage) -> WireMsg {
        match msg {
            BusMessage::Publication(p) => WireMsg::Pub {
                channel: p.channel.to_string(),
                offset: p.offset,
                event: p.event.clone(),
                data: p.data.clone(),
                from: p.from.clone(),
            },
            BusMessage::Join { channel, info } => WireMsg::Join { channel: channel.to_string(), info: info.clone() },
            BusMessage::Leave { channel, info } => WireMsg::Leave { channel: channel.to_string(), info: info.clone() },
            BusMessage::DisconnectUser { user, reason } => {
                WireMsg::Disconnect { user: user.clone(), code: reason.code() }
            }
            BusMessage::Ban { user, until } => WireMsg::Ban { user: user.clone(), until: *until },
            BusMessage::Unban { user } => WireMsg::Unban { user: user.clone() },
            BusMessage::Node { to, from, payload } => {
                WireMsg::Node { to: to.to_string(), from: from.to_string(), payload: (**payload).clone() }
            }
        }
    }

    pub fn into_bus(self) -> Option<BusMessage> {
        Some(match self {
            WireMsg::Pub { channel, offset, event, data, from } => BusMessage::Publication(Arc::new(Publication::new(
                Arc::from(channel.as_str()),
                offset,
                event,
                data,
                from,
            ))),
            WireMsg::Join { channel, info } => BusMessage::Join { channel: Arc::from(channel.as_str()), info },
            WireMsg::Leave { channel, info } => BusMessage::Leave { channel: Arc::from(channel.as_str()), info },
            WireMsg::Disconnect { user, code } => {
                BusMessage::DisconnectUser { user, reason: CloseReason::from_code(code)? }
            }
            WireMsg::Ban { user, until } => BusMessage::Ban { user, until },
            WireMsg::Unban { user } => BusMessage::Unban { user },
            WireMsg::Node { to, from, payload } => BusMessage::Node {
                to: Arc::from(to.as_str()),
                from: Arc::from(from.as_str()),
                payload: Arc::new(payload),
            },
        })
    }
}

/// The MessagePack body of an envelope. On the wire it follows `<offset>:`, a decimal prefix that
/// the history script writes (the offset is known only inside Redis); `0:` for messages without.
pub fn encode_body(env: &Envelope) -> Vec<u8> {
    rmp_serde::to_vec_named(env).expect("envelopes encode")
}

pub fn encode(env: &Envelope) -> Vec<u8> {
    let mut out = b"0:".to_vec();
    out.extend_from_slice(&encode_body(env));
    out
}

/// Decodes a wire message; the prefix offset, when not 0, is the publication's offset.
pub fn decode(bytes: &[u8]) -> Option<Envelope> {
    let colon = bytes.iter().take(21).position(|b| *b == b':')?;
    let offset: u64 = std::str::from_utf8(&bytes[..colon]).ok()?.parse().ok()?;
    let mut env: Envelope = rmp_serde::from_slice(&bytes[colon + 1..]).ok()?;
    if let WireMsg::Pub { offset: o, .. } = &mut env.msg {
        if offset > 0 {
            *o = offset;
        }
    }
    Some(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_offset_wins_and_garbage_is_rejected() {
        let env = Envelope {
            origin: "n1".into(),
            echo: true,
            msg: WireMsg::Pub { channel: "c".into(), offset: 0, event: "e".into(), data: Value::Null, from: None },
        };
        let mut bytes = b"42:".to_vec();
        bytes.extend(encode_body(&env));
        match decode(&bytes).unwrap().msg {
            WireMsg::Pub { offset, .. } => assert_eq!(offset, 42),
            other => panic!("{other:?}"),
        }
        assert!(decode(b"").is_none());
        assert!(decode(b"x:1").is_none());
        assert!(decode(b"12").is_none());
        assert!(decode(&encode(&env)).is_some());
    }
}
