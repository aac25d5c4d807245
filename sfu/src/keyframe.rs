//! Keyframe requests sent to the publisher: which layer to ask, and how often.
//!
//! Rules:
//! - **On a switch**, ask the layer the subscriber switches *to*: only that layer's keyframe lets the
//!   switch happen ([`layer_for_switch`]). A subscriber that stays waiting keeps asking, within the
//!   throttle, so a lost request does not leave it waiting for the publisher's periodic keyframe.
//! - **A subscriber's PLI or FIR** asks the layer it waits for if it waits for one, else the layer it
//!   receives ([`layer_for_subscriber_request`]). Subscribers never talk to the publisher directly:
//!   every request goes through the throttle, so a hundred subscribers losing the same packet cost the
//!   publisher one keyframe.
//! - **Throttle** ([`KeyframeThrottle`]): per layer of the published track, the first request passes,
//!   then at most one per `interval_ms`; requests in between are dropped, not delayed (the keyframe
//!   already asked for answers them).
//! - A request names the SSRC the publisher sends the layer on. FIR (RFC 5104 §4.3.1) carries a command
//!   sequence number per media SSRC, increased with each new request; PLI (RFC 4585 §6.3.1) carries none.

use crate::Layer;
use rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

/// Which feedback message the publisher understands (`nack pli` or `ccm fir` in its SDP); PLI unless
/// only FIR was negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyframeRequestKind {
    #[default]
    Pli,
    Fir,
}

/// A keyframe request to send to the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeRequest {
    Pli { media_ssrc: u32 },
    Fir { media_ssrc: u32, seq_nr: u8 },
}

impl KeyframeRequest {
    /// The SSRC of the publisher's stream this asks a keyframe of.
    pub fn media_ssrc(&self) -> u32 {
        match *self {
            KeyframeRequest::Pli { media_ssrc } | KeyframeRequest::Fir { media_ssrc, .. } => media_ssrc,
        }
    }

    /// The RTCP packet, sent from `sender_ssrc` (the SFU's SSRC on the publisher's connection; 0 is what
    /// browsers accept when there is none).
    pub fn to_rtcp(&self, sender_ssrc: u32) -> Box<dyn rtcp::packet::Packet + Send + Sync> {
        match *self {
            KeyframeRequest::Pli { media_ssrc } => Box::new(PictureLossIndication { sender_ssrc, media_ssrc }),
            KeyframeRequest::Fir { media_ssrc, seq_nr } => Box::new(FullIntraRequest {
                sender_ssrc,
                media_ssrc,
                fir: vec![FirEntry { ssrc: media_ssrc, sequence_number: seq_nr }],
            }),
        }
    }
}

/// The layer to ask a keyframe of when a subscriber's target changes: the new target, unless it is
/// already the layer being forwarded or the subscriber is paused.
pub fn layer_for_switch(current: Option<Layer>, target: Option<Layer>) -> Option<Layer> {
    target.filter(|&t| current != Some(t))
}

/// The layer a subscriber's PLI or FIR is about: the one it waits for, else the one it receives.
pub fn layer_for_subscriber_request(current: Option<Layer>, target: Option<Layer>) -> Option<Layer> {
    layer_for_switch(current, target).or(current.filter(|_| target.is_some()))
}

/// Per-layer rate limit on keyframe requests to the publisher, and their FIR sequence numbers.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    kind: KeyframeRequestKind,
    interval_ms: u64,
    last_ms: [Option<u64>; Layer::COUNT],
    fir_seq: [u8; Layer::COUNT],
}

impl KeyframeThrottle {
    pub fn new(kind: KeyframeRequestKind, interval_ms: u64) -> Self {
        KeyframeThrottle { kind, interval_ms, last_ms: [None; Layer::COUNT], fir_seq: [0; Layer::COUNT] }
    }

    /// A request for `layer` (sent by the publisher on `media_ssrc`), or `None` when one was let through
    /// less than the interval ago.
    pub fn request(&mut self, layer: Layer, media_ssrc: u32, now_ms: u64) -> Option<KeyframeRequest> {
        let i = layer.index();
        if self.last_ms[i].is_some_and(|t| now_ms.saturating_sub(t) < self.interval_ms) {
            return None;
        }
        self.last_ms[i] = Some(now_ms);
        Some(match self.kind {
            KeyframeRequestKind::Pli => KeyframeRequest::Pli { media_ssrc },
            KeyframeRequestKind::Fir => {
                self.fir_seq[i] = self.fir_seq[i].wrapping_add(1);
                KeyframeRequest::Fir { media_ssrc, seq_nr: self.fir_seq[i] }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_layer() {
        assert_eq!(layer_for_switch(Some(Layer::LOW), Some(Layer::HIGH)), Some(Layer::HIGH));
        assert_eq!(layer_for_switch(Some(Layer::HIGH), Some(Layer::HIGH)), None);
        assert_eq!(layer_for_switch(Some(Layer::HIGH), None), None);
        assert_eq!(layer_for_switch(None, Some(Layer::LOW)), Some(Layer::LOW));
        assert_eq!(layer_for_subscriber_request(Some(Layer::LOW), Some(Layer::HIGH)), Some(Layer::HIGH));
        assert_eq!(layer_for_subscriber_request(Some(Layer::MID), Some(Layer::MID)), Some(Layer::MID));
        assert_eq!(layer_for_subscriber_request(None, None), None);
    }

    #[test]
    fn fir_numbers_each_new_request() {
        let mut t = KeyframeThrottle::new(KeyframeRequestKind::Fir, 100);
        assert_eq!(t.request(Layer::LOW, 9, 0), Some(KeyframeRequest::Fir { media_ssrc: 9, seq_nr: 1 }));
        assert_eq!(t.request(Layer::LOW, 9, 50), None);
        assert_eq!(t.request(Layer::LOW, 9, 100), Some(KeyframeRequest::Fir { media_ssrc: 9, seq_nr: 2 }));
        // Layers are throttled apart.
        assert_eq!(t.request(Layer::HIGH, 11, 100), Some(KeyframeRequest::Fir { media_ssrc: 11, seq_nr: 1 }));
    }
}
