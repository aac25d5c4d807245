//! Simulcast layer choice and keyframe-request throttling, as pure state machines.
//!
//! A publisher sends up to [`MAX_LAYERS`] encodings of one video track (rids such as `q`, `h`,
//! `f`). For each (subscriber, track) pair the media plane keeps one [`LayerSelector`] and calls
//! [`LayerSelector::update`] whenever the subscriber's requested size, its bandwidth estimate or
//! the clock changes. The selector promises:
//!
//! - **Never larger than asked**: it sends the smallest active layer that covers the requested
//!   size (the size the client renders at; a smaller layer would be upscaled), or the largest
//!   active layer when none covers it.
//! - **Down at once**: when the estimate no longer carries the current layer's bitrate, or the
//!   requested size shrinks, it switches down in the same call.
//! - **Up slowly**: it steps up one layer at a time, and only after the estimate has exceeded the
//!   next layer's bitrate by [`SelectorConfig::up_margin_percent`] for
//!   [`SelectorConfig::up_hold_ms`] without a break. Estimates swing by 10–20 % from one report
//!   to the next; without the margin and the hold a subscriber near a threshold would flap
//!   between layers and pay a keyframe each time.
//! - **Every switch needs a keyframe** on the new layer ([`LayerSwitch::needs_keyframe`]): a
//!   decoder cannot start a new stream mid-GOP. Throttling the requests is the media plane's
//!   job (`sfu::keyframe`).
//!
//! Bandwidth is per track: when a subscriber receives several tracks, the caller divides the
//! subscriber's estimate between them before calling `update`.
//!
//! Time is the caller's monotonic clock in milliseconds (`now_ms`); nothing here reads a clock.

use serde::{Deserialize, Serialize};

/// At most this many simulcast layers per video track.
pub const MAX_LAYERS: usize = 3;

/// At most this many bytes in a rid (RFC 8851 allows any length; browsers use one or two).
pub const MAX_RID_BYTES: usize = 16;

/// One simulcast encoding of a video track, as the publisher announces it.
///
/// ```json
/// {"rid":"h","width":640,"height":360,"bitrate_bps":500000}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub rid: String,
    pub width: u32,
    pub height: u32,
    /// The encoder's target (maximum) bitrate for this layer.
    pub bitrate_bps: u64,
}

/// Why a set of layers was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    #[error("at most {MAX_LAYERS} simulcast layers, got {0}")]
    TooMany(usize),
    #[error("a selector needs at least one layer")]
    Empty,
    #[error("rid must be 1-{MAX_RID_BYTES} bytes")]
    BadRid,
    #[error("rid {0:?} appears twice")]
    DuplicateRid(String),
    #[error("layer {0:?} has a zero width, height or bitrate")]
    Zero(String),
    #[error("no layer with rid {0:?}")]
    UnknownRid(String),
}

/// Checks a publisher's layer list: at most [`MAX_LAYERS`], distinct non-empty rids, no zero
/// width, height or bitrate. An empty list is valid here (a track without simulcast).
pub fn validate_layers(layers: &[Layer]) -> Result<(), LayerError> {
    if layers.len() > MAX_LAYERS {
        return Err(LayerError::TooMany(layers.len()));
    }
    for (i, layer) in layers.iter().enumerate() {
        if layer.rid.is_empty() || layer.rid.len() > MAX_RID_BYTES {
            return Err(LayerError::BadRid);
        }
        if layers[..i].iter().any(|l| l.rid == layer.rid) {
            return Err(LayerError::DuplicateRid(layer.rid.clone()));
        }
        if layer.width == 0 || layer.height == 0 || layer.bitrate_bps == 0 {
            return Err(LayerError::Zero(layer.rid.clone()));
        }
    }
    Ok(())
}

/// Tuning of a [`LayerSelector`]. `Default` gives the values the crate documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorConfig {
    /// How far above the next layer's bitrate the estimate must be to step up: 25 means 1.25×.
    pub up_margin_percent: u32,
    /// How long the estimate must stay above that mark before stepping up.
    pub up_hold_ms: u64,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig { up_margin_percent: 25, up_hold_ms: 3_000 }
    }
}

/// What a subscriber asks for and can take, for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Constraints {
    /// The width the subscriber renders the track at; `None` means no limit.
    pub max_width: Option<u32>,
    /// The height the subscriber renders the track at; `None` means no limit.
    pub max_height: Option<u32>,
    /// The share of the subscriber's estimated downlink available to this track.
    pub available_bps: u64,
}

/// Why the selector switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchReason {
    /// The first choice for this subscriber.
    Initial,
    /// The requested size shrank below the current layer.
    Size,
    /// The estimate no longer carries the current layer.
    BandwidthDown,
    /// The estimate carried the next layer up, with the margin, for the hold time.
    StepUp,
    /// The publisher stopped sending the current layer (or every layer: `to` is none).
    LayerActivity,
}

/// A change of the layer forwarded to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSwitch {
    pub from: Option<String>,
    /// `None` when the publisher sends no layer at all: forward nothing.
    pub to: Option<String>,
    pub reason: SwitchReason,
}

impl LayerSwitch {
    /// Whether the publisher must be asked for a keyframe on `to` (always, unless `to` is none):
    /// the subscriber's decoder cannot start on the new layer without one.
    pub fn needs_keyframe(&self) -> bool {
        self.to.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    layer: Layer,
    active: bool,
}

/// Chooses the layer of one track forwarded to one subscriber. See the module documentation for
/// the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSelector {
    /// Ascending by bitrate (then by size): index order is quality order.
    slots: Vec<Slot>,
    config: SelectorConfig,
    current: Option<usize>,
    /// The layer the estimate has been good enough to step up to, and since when.
    up_since: Option<(usize, u64)>,
}

impl LayerSelector {
    /// A selector over `layers` (1 to [`MAX_LAYERS`], all active at first). A track without
    /// simulcast is one layer.
    pub fn new(layers: Vec<Layer>, config: SelectorConfig) -> Result<LayerSelector, LayerError> {
        if layers.is_empty() {
            return Err(LayerError::Empty);
        }
        validate_layers(&layers)?;
        let mut slots: Vec<Slot> = layers.into_iter().map(|layer| Slot { layer, active: true }).collect();
        slots.sort_by_key(|s| (s.layer.bitrate_bps, s.layer.width, s.layer.height));
        Ok(LayerSelector { slots, config, current: None, up_since: None })
    }

    /// The layer being forwarded now, if one was chosen.
    pub fn current(&self) -> Option<&Layer> {
        self.current.map(|i| &self.slots[i].layer)
    }

    /// Marks a layer as sent or not sent by the publisher (a publisher drops its top layers when
    /// its own uplink or CPU is short). Takes effect at the next `update`.
    pub fn set_active(&mut self, rid: &str, active: bool) -> Result<(), LayerError> {
        let slot =
            self.slots.iter_mut().find(|s| s.layer.rid == rid).ok_or_else(|| LayerError::UnknownRid(rid.into()))?;
        slot.active = active;
        Ok(())
    }

    /// Re-evaluates the choice; returns the switch to make, if any.
    pub fn update(&mut self, want: Constraints, now_ms: u64) -> Option<LayerSwitch> {
        let active: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].active).collect();
        let Some(&lowest) = active.first() else {
            self.up_since = None;
            let from = self.current.take()?;
            return Some(self.switch(Some(from), None, SwitchReason::LayerActivity));
        };
        let ceiling = self.ceiling(&active, want);
        // The best layer the estimate carries now, without margin: the floor for stepping down.
        let fits = active
            .iter()
            .copied()
            .filter(|&i| i <= ceiling && self.slots[i].layer.bitrate_bps <= want.available_bps)
            .max()
            .unwrap_or(lowest);

        let (to, reason) = match self.current {
            None => (fits, SwitchReason::Initial),
            Some(cur) if !self.slots[cur].active => (fits, SwitchReason::LayerActivity),
            Some(cur) if cur > ceiling => (fits, SwitchReason::Size),
            Some(cur) if cur > fits => (fits, SwitchReason::BandwidthDown),
            Some(cur) => match self.step_up(&active, cur, ceiling, want, now_ms) {
                Some(next) => (next, SwitchReason::StepUp),
                None => return None,
            },
        };
        self.up_since = None;
        if self.current == Some(to) {
            return None;
        }
        let from = self.current.replace(to);
        Some(self.switch(from, Some(to), reason))
    }

    /// The smallest active layer covering the requested size, else the largest active one.
    fn ceiling(&self, active: &[usize], want: Constraints) -> usize {
        let largest = *active.last().expect("caller checked non-empty");
        if want.max_width.is_none() && want.max_height.is_none() {
            return largest;
        }
        let covers = |i: &usize| {
            let l = &self.slots[*i].layer;
            want.max_width.is_none_or(|w| l.width >= w) && want.max_height.is_none_or(|h| l.height >= h)
        };
        active.iter().copied().find(covers).unwrap_or(largest)
    }

    /// Advances the step-up timer; returns the next layer once it has held long enough.
    fn step_up(
        &mut self,
        active: &[usize],
        cur: usize,
        ceiling: usize,
        want: Constraints,
        now_ms: u64,
    ) -> Option<usize> {
        let next = active.iter().copied().find(|&i| i > cur && i <= ceiling);
        let good = next.filter(|&n| {
            let needed = self.slots[n].layer.bitrate_bps.saturating_mul(100 + u64::from(self.config.up_margin_percent));
            want.available_bps.saturating_mul(100) >= needed
        });
        let Some(next) = good else {
            self.up_since = None;
            return None;
        };
        match self.up_since {
            Some((layer, since)) if layer == next => {
                (now_ms.saturating_sub(since) >= self.config.up_hold_ms).then_some(next)
            }
            _ => {
                self.up_since = Some((next, now_ms));
                (self.config.up_hold_ms == 0).then_some(next)
            }
        }
    }

    fn switch(&self, from: Option<usize>, to: Option<usize>, reason: SwitchReason) -> LayerSwitch {
        let rid = |i: usize| self.slots[i].layer.rid.clone();
        LayerSwitch { from: from.map(rid), to: to.map(rid), reason }
    }
}

#[cfg(test)]
mod tests;
