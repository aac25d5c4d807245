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
//! - **Probing up**: a receive-side estimate (a browser's REMB) never grows much past what the
//!   subscriber receives (Chromium caps it near 1.5× its incoming rate), so it can never show room
//!   for the next layer by itself. When the estimate holds at [`SelectorConfig::probe_percent`] of
//!   the current layer's rate or more (nothing is congested at the current rate) for the hold time,
//!   the selector tries the next layer: the step up is the probe. For
//!   [`SelectorConfig::probe_grace_ms`] after it, a lower estimate than the new layer needs is
//!   expected (the estimate climbs with the new incoming rate) and only a fall of the estimate below
//!   [`SelectorConfig::probe_drop_percent`] of its peak since the step (the estimator saw
//!   congestion) steps back down. A probe that fails, then or when the grace ends, doubles the hold
//!   before the next try (up to [`SelectorConfig::max_up_hold_ms`]); one that holds resets it.
//! - **Measured rates**: a layer's rate is what the publisher really sends on it when the caller
//!   knows it ([`LayerSelector::set_measured`]), else the bitrate the publisher announced (its
//!   maximum: encoders run well below it on still pictures).
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
    /// An estimate at least this share of the current layer's rate (130: 1.3×) may probe the next
    /// layer; `None` never probes (only the margin rule steps up).
    pub probe_percent: Option<u32>,
    /// How long after a probing step up a low estimate is expected.
    pub probe_grace_ms: u64,
    /// During the grace, an estimate below this share of its peak since the step ends the probe.
    pub probe_drop_percent: u32,
    /// The longest the hold grows to after failed probes.
    pub max_up_hold_ms: u64,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            up_margin_percent: 25,
            up_hold_ms: 3_000,
            probe_percent: Some(130),
            probe_grace_ms: 10_000,
            probe_drop_percent: 80,
            max_up_hold_ms: 48_000,
        }
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
    /// The estimate carried the next layer up, with the margin, for the hold time, or the selector
    /// probed it.
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
    /// What the publisher really sends on it, when known.
    measured_bps: Option<u64>,
}

impl Slot {
    fn rate(&self) -> u64 {
        self.measured_bps.unwrap_or(self.layer.bitrate_bps)
    }
}

/// A step up made as a probe, while its grace lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    from: usize,
    at_ms: u64,
    /// The highest estimate since the step.
    peak_bps: u64,
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
    /// The hold in effect: the configured one, doubled by each failed probe.
    hold_ms: u64,
    probe: Option<Probe>,
}

impl LayerSelector {
    /// A selector over `layers` (1 to [`MAX_LAYERS`], all active at first). A track without
    /// simulcast is one layer.
    pub fn new(layers: Vec<Layer>, config: SelectorConfig) -> Result<LayerSelector, LayerError> {
        if layers.is_empty() {
            return Err(LayerError::Empty);
        }
        validate_layers(&layers)?;
        let mut slots: Vec<Slot> =
            layers.into_iter().map(|layer| Slot { layer, active: true, measured_bps: None }).collect();
        slots.sort_by_key(|s| (s.layer.bitrate_bps, s.layer.width, s.layer.height));
        Ok(LayerSelector { slots, config, current: None, up_since: None, hold_ms: config.up_hold_ms, probe: None })
    }

    /// The layer being forwarded now, if one was chosen.
    pub fn current(&self) -> Option<&Layer> {
        self.current.map(|i| &self.slots[i].layer)
    }

    /// Marks a layer as sent or not sent by the publisher (a publisher drops its top layers when
    /// its own uplink or CPU is short). Takes effect at the next `update`.
    pub fn set_active(&mut self, rid: &str, active: bool) -> Result<(), LayerError> {
        self.slot_mut(rid)?.active = active;
        Ok(())
    }

    /// What the publisher sends on a layer: whether it sends it at all, and its measured bitrate
    /// (`None`: not measured yet, the announced bitrate stands in). Takes effect at the next `update`.
    pub fn set_measured(&mut self, rid: &str, active: bool, bps: Option<u64>) -> Result<(), LayerError> {
        let slot = self.slot_mut(rid)?;
        slot.active = active;
        slot.measured_bps = bps.filter(|&b| b > 0);
        Ok(())
    }

    fn slot_mut(&mut self, rid: &str) -> Result<&mut Slot, LayerError> {
        self.slots.iter_mut().find(|s| s.layer.rid == rid).ok_or_else(|| LayerError::UnknownRid(rid.into()))
    }

    /// The hold before the next step up (grown by failed probes).
    pub fn hold_ms(&self) -> u64 {
        self.hold_ms
    }

    /// Re-evaluates the choice; returns the switch to make, if any.
    pub fn update(&mut self, want: Constraints, now_ms: u64) -> Option<LayerSwitch> {
        let active: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].active).collect();
        let Some(&lowest) = active.first() else {
            self.up_since = None;
            self.probe = None;
            let from = self.current.take()?;
            return Some(self.switch(Some(from), None, SwitchReason::LayerActivity));
        };
        let ceiling = self.ceiling(&active, want);
        // The best layer the estimate carries now, without margin: the floor for stepping down.
        let fits = active
            .iter()
            .copied()
            .filter(|&i| i <= ceiling && self.slots[i].rate() <= want.available_bps)
            .max()
            .unwrap_or(lowest);

        let probing = self.probe_state(want.available_bps, now_ms);
        let (to, reason) = match self.current {
            None => (fits, SwitchReason::Initial),
            Some(cur) if !self.slots[cur].active => (fits, SwitchReason::LayerActivity),
            Some(cur) if cur > ceiling => (fits, SwitchReason::Size),
            Some(cur) => match probing {
                ProbeState::Failed(from) => {
                    self.probe_failed();
                    (fits.min(from), SwitchReason::BandwidthDown)
                }
                ProbeState::Trying => return None,
                ProbeState::None | ProbeState::Held if cur > fits => {
                    if probing == ProbeState::Held {
                        self.probe_failed();
                    }
                    (fits, SwitchReason::BandwidthDown)
                }
                ProbeState::None | ProbeState::Held => {
                    if probing == ProbeState::Held {
                        self.hold_ms = self.config.up_hold_ms;
                    }
                    match self.step_up(&active, cur, ceiling, want, now_ms) {
                        Some((next, probe)) => {
                            if probe {
                                self.probe = Some(Probe { from: cur, at_ms: now_ms, peak_bps: want.available_bps });
                            }
                            (next, SwitchReason::StepUp)
                        }
                        None => return None,
                    }
                }
            },
        };
        if reason != SwitchReason::StepUp {
            self.probe = None;
        }
        self.up_since = None;
        if self.current == Some(to) {
            return None;
        }
        let from = self.current.replace(to);
        Some(self.switch(from, Some(to), reason))
    }

    /// Where the probe in progress stands at `now_ms` with estimate `available_bps`; a probe whose
    /// grace is over is done with (`Held`: the caller judges it by the normal rules this once).
    fn probe_state(&mut self, available_bps: u64, now_ms: u64) -> ProbeState {
        let Some(probe) = &mut self.probe else { return ProbeState::None };
        if self.current.is_none_or(|cur| cur <= probe.from) {
            self.probe = None;
            return ProbeState::None;
        }
        if now_ms.saturating_sub(probe.at_ms) >= self.config.probe_grace_ms {
            self.probe = None;
            return ProbeState::Held;
        }
        probe.peak_bps = probe.peak_bps.max(available_bps);
        let floor = probe.peak_bps / 100 * u64::from(self.config.probe_drop_percent);
        if available_bps < floor {
            let from = probe.from;
            self.probe = None;
            return ProbeState::Failed(from);
        }
        ProbeState::Trying
    }

    fn probe_failed(&mut self) {
        self.hold_ms = self.hold_ms.saturating_mul(2).min(self.config.max_up_hold_ms.max(self.config.up_hold_ms));
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

    /// Advances the step-up timer; returns the next layer once it has held long enough, and
    /// whether the step is a probe (the estimate does not carry that layer with the margin).
    fn step_up(
        &mut self,
        active: &[usize],
        cur: usize,
        ceiling: usize,
        want: Constraints,
        now_ms: u64,
    ) -> Option<(usize, bool)> {
        let next = active.iter().copied().find(|&i| i > cur && i <= ceiling);
        let available = u128::from(want.available_bps) * 100;
        let carried = next.filter(|&n| {
            available >= u128::from(self.slots[n].rate()) * u128::from(100 + self.config.up_margin_percent)
        });
        let probed = next.filter(|_| {
            self.config.probe_percent.is_some_and(|p| available >= u128::from(self.slots[cur].rate()) * u128::from(p))
        });
        let Some(next) = carried.or(probed) else {
            self.up_since = None;
            return None;
        };
        let probe = carried.is_none();
        match self.up_since {
            Some((layer, since)) if layer == next => {
                (now_ms.saturating_sub(since) >= self.hold_ms).then_some((next, probe))
            }
            _ => {
                self.up_since = Some((next, now_ms));
                (self.hold_ms == 0).then_some((next, probe))
            }
        }
    }

    fn switch(&self, from: Option<usize>, to: Option<usize>, reason: SwitchReason) -> LayerSwitch {
        let rid = |i: usize| self.slots[i].layer.rid.clone();
        LayerSwitch { from: from.map(rid), to: to.map(rid), reason }
    }
}

/// Where a probing step up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeState {
    /// No probe in progress.
    None,
    /// Within its grace, the estimate still climbing or level.
    Trying,
    /// The estimate fell during the grace: back to this layer (or lower).
    Failed(usize),
    /// The grace just ended: the normal rules judge whether the layer stays.
    Held,
}

#[cfg(test)]
mod tests;
