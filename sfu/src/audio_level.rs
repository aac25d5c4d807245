//! Audio levels (RFC 6464) and the active speaker.
//!
//! - [`AudioLevel::from_header`] reads the client-to-mixer audio level header extension under the id
//!   negotiated for `urn:ietf:params:rtp-hdrext:ssrc-audio-level`: one byte, `V` (voice activity, set
//!   by the sender's VAD) and the level in -dBov, 0 the loudest and 127 silence. The RTP header's
//!   RFC 8285 extension block (one-byte or two-byte form) is already split by the `rtp` crate.
//! - [`LoudnessMeter`] smooths one participant's levels: an exponential average (time constant
//!   `smoothing_ms`) of the linear amplitude `10^(-level/20)`. Time without packets beyond `gap_ms`
//!   counts as silence (Opus DTX and muted tracks send little or nothing), so a participant who stops
//!   sending fades out instead of staying loud.
//! - [`ActiveSpeaker`] picks the loudest participant with hysteresis: a challenger replaces the
//!   current speaker only after being the loudest, and louder than the current speaker by
//!   `switch_ratio`, at every [`ActiveSpeaker::poll`] for `switch_after_ms`. With no current speaker
//!   the first one loud enough is taken at once. When everyone is quiet the last speaker stays (the
//!   main tile keeps its face); only removing that participant clears it.
//!
//! All of it is pure: levels and polls carry the time, and the caller polls (every 100–200 ms).

use rtp::header::Header;

/// One packet's RFC 6464 audio level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The level in -dBov: 0 is the loudest possible, 127 silence.
    pub level: u8,
    /// The sender's voice activity flag.
    pub voice: bool,
}

impl AudioLevel {
    /// Reads the extension byte `|V| level |`.
    pub fn from_byte(b: u8) -> Self {
        AudioLevel { level: b & 0x7F, voice: b & 0x80 != 0 }
    }

    /// The audio level carried in `header` under extension id `ext_id`, if present.
    pub fn from_header(header: &Header, ext_id: u8) -> Option<Self> {
        if !header.extension {
            return None;
        }
        let ext = header.extensions.iter().find(|e| e.id == ext_id)?;
        ext.payload.first().map(|&b| Self::from_byte(b))
    }

    /// Linear amplitude relative to full scale: 1.0 at 0 dBov.
    pub fn amplitude(self) -> f32 {
        10f32.powf(-f32::from(self.level) / 20.0)
    }
}

/// Tuning of [`LoudnessMeter`] and [`ActiveSpeaker`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakerConfig {
    /// Time constant of the smoothing.
    pub smoothing_ms: u64,
    /// Longer than this without a packet counts as silence.
    pub gap_ms: u64,
    /// The quietest level (in -dBov) that counts as speech once smoothed.
    pub min_level_dbov: u8,
    /// Count a packet as silence when its V flag is clear (only when the sender negotiated `vad=on`).
    pub use_voice_activity: bool,
    /// How much louder (linear amplitude) a challenger must be than the current speaker.
    pub switch_ratio: f32,
    /// How long the challenger must stay so before it becomes the speaker.
    pub switch_after_ms: u64,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            smoothing_ms: 300,
            gap_ms: 100,
            min_level_dbov: 50,
            use_voice_activity: false,
            switch_ratio: 1.5,
            switch_after_ms: 500,
        }
    }
}

impl SpeakerConfig {
    fn threshold(&self) -> f32 {
        AudioLevel { level: self.min_level_dbov.min(127), voice: true }.amplitude()
    }

    fn decay(&self, ms: u64) -> f32 {
        (-(ms as f32) / self.smoothing_ms.max(1) as f32).exp()
    }
}

/// Packets of Opus are 20 ms; the first observation counts for one.
const NOMINAL_FRAME_MS: u64 = 20;

/// One participant's smoothed loudness.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoudnessMeter {
    value: f32,
    at_ms: Option<u64>,
}

impl LoudnessMeter {
    pub fn observe(&mut self, level: AudioLevel, now_ms: u64, config: &SpeakerConfig) {
        let x = if config.use_voice_activity && !level.voice { 0.0 } else { level.amplitude() };
        let dt = match self.at_ms {
            Some(at) => now_ms.saturating_sub(at),
            None => NOMINAL_FRAME_MS,
        };
        self.value *= config.decay(dt.saturating_sub(config.gap_ms));
        self.value += (x - self.value) * (1.0 - config.decay(dt.min(config.gap_ms)));
        self.at_ms = Some(now_ms.max(self.at_ms.unwrap_or(0)));
    }

    /// The smoothed amplitude at `now_ms` (0.0 to 1.0).
    pub fn loudness(&self, now_ms: u64, config: &SpeakerConfig) -> f32 {
        match self.at_ms {
            Some(at) => self.value * config.decay(now_ms.saturating_sub(at).saturating_sub(config.gap_ms)),
            None => 0.0,
        }
    }
}

/// The active-speaker choice among the participants of a room, keyed by `K`.
#[derive(Debug, Clone)]
pub struct ActiveSpeaker<K> {
    config: SpeakerConfig,
    meters: Vec<(K, LoudnessMeter)>,
    current: Option<K>,
    challenger: Option<(K, u64)>,
}

impl<K: Clone + Eq> ActiveSpeaker<K> {
    pub fn new(config: SpeakerConfig) -> Self {
        ActiveSpeaker { config, meters: Vec::new(), current: None, challenger: None }
    }

    /// Records one packet's level for `who` (a participant is added by its first level).
    pub fn observe(&mut self, who: &K, level: AudioLevel, now_ms: u64) {
        let config = self.config;
        match self.meters.iter_mut().find(|(k, _)| k == who) {
            Some((_, meter)) => meter.observe(level, now_ms, &config),
            None => {
                let mut meter = LoudnessMeter::default();
                meter.observe(level, now_ms, &config);
                self.meters.push((who.clone(), meter));
            }
        }
    }

    /// Forgets a participant (left the room, or unpublished their microphone).
    pub fn remove(&mut self, who: &K) {
        self.meters.retain(|(k, _)| k != who);
        if self.current.as_ref() == Some(who) {
            self.current = None;
        }
        if self.challenger.as_ref().is_some_and(|(k, _)| k == who) {
            self.challenger = None;
        }
    }

    /// The current speaker.
    pub fn active(&self) -> Option<&K> {
        self.current.as_ref()
    }

    /// The smoothed loudness of `who` at `now_ms`.
    pub fn loudness(&self, who: &K, now_ms: u64) -> Option<f32> {
        self.meters.iter().find(|(k, _)| k == who).map(|(_, m)| m.loudness(now_ms, &self.config))
    }

    /// Re-evaluates the choice; returns the new speaker when it changed.
    pub fn poll(&mut self, now_ms: u64) -> Option<K> {
        let threshold = self.config.threshold();
        let mut loudest: Option<(&K, f32)> = None;
        for (k, m) in &self.meters {
            let v = m.loudness(now_ms, &self.config);
            if v >= threshold && loudest.is_none_or(|(_, best)| v > best) {
                loudest = Some((k, v));
            }
        }
        let Some((who, v)) = loudest else {
            self.challenger = None;
            return None;
        };
        let Some(current) = &self.current else {
            let who = who.clone();
            self.current = Some(who.clone());
            return Some(who);
        };
        if who == current {
            self.challenger = None;
            return None;
        }
        let current_v = self.loudness(current, now_ms).unwrap_or(0.0);
        if v < current_v * self.config.switch_ratio {
            self.challenger = None;
            return None;
        }
        match &self.challenger {
            Some((k, since)) if k == who => {
                if now_ms.saturating_sub(*since) >= self.config.switch_after_ms {
                    let who = who.clone();
                    self.current = Some(who.clone());
                    self.challenger = None;
                    return Some(who);
                }
            }
            _ => self.challenger = Some((who.clone(), now_ms)),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_level_converges_and_silence_fades() {
        let config = SpeakerConfig::default();
        let mut m = LoudnessMeter::default();
        let level = AudioLevel { level: 20, voice: true };
        for t in 0..100 {
            m.observe(level, t * 20, &config);
        }
        let v = m.loudness(1980, &config);
        assert!((v - level.amplitude()).abs() < 0.01 * level.amplitude(), "{v}");
        // Within the gap nothing changes; past it the value decays.
        assert_eq!(m.loudness(2080, &config), v);
        assert!(m.loudness(3000, &config) < v * 0.1);
    }
}
