//! One published audio track's level per packet: the RFC 6464 extension if the packet has it, else
//! the level of its decoded Opus payload.
//!
//! Contract:
//! - A packet carrying the extension under [`LevelConfig::extension_id`] gives that byte, unchanged
//!   (V flag included) and nothing is decoded. Any other packet with a payload is decoded (mono,
//!   48 kHz, whatever the sender's channels) and gives [`super::level_of_pcm`] of its PCM.
//! - Decoding is bounded by a token bucket: `max_decodes_per_second`, up to `burst` at once. A packet
//!   over the budget gives no level (the meters treat the hole as they treat loss); at 50 packets a
//!   second, the default budget of 100 decodes every packet.
//! - The decoder is made on the first packet that needs it, so tracks that always carry the extension
//!   never hold one. Skipped packets look like loss to it, which libopus conceals.
//! - A payload libopus refuses is counted in [`LevelStats::bad_packets`] and gives no level. An empty
//!   payload (padding) gives none and is not counted.

use rtp::packet::Packet;

use super::{level_of_pcm, MAX_PACKET_SAMPLES, SAMPLE_RATE};
use crate::audio_level::AudioLevel;

/// How a [`LevelSource`] reads levels. [`LevelConfig::new`] fills in defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelConfig {
    /// The publisher's extension id for `urn:ietf:params:rtp-hdrext:ssrc-audio-level`, if negotiated.
    pub extension_id: Option<u8>,
    /// Sustained decoding rate allowed (packets a second).
    pub max_decodes_per_second: u32,
    /// Decodes allowed in a burst above that rate.
    pub burst: u32,
    /// Decoded levels at or below this (louder) get the V flag.
    pub voice_threshold_dbov: u8,
}

impl LevelConfig {
    /// 100 decodes a second (every packet at 10 ms or longer frames), bursts of 10, V at 50 -dBov
    /// (the default speech threshold of [`crate::SpeakerConfig`]).
    pub fn new(extension_id: Option<u8>) -> Self {
        LevelConfig { extension_id, max_decodes_per_second: 100, burst: 10, voice_threshold_dbov: 50 }
    }
}

/// What a [`LevelSource`] did with the packets it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelStats {
    /// Levels read from the header extension.
    pub from_extension: u64,
    /// Payloads decoded into a level.
    pub decoded: u64,
    /// Payloads not decoded for the rate bound.
    pub skipped: u64,
    /// Payloads libopus refused.
    pub bad_packets: u64,
}

/// The level of one published audio track's packets.
pub struct LevelSource {
    config: LevelConfig,
    decoder: Option<opus::Decoder>,
    pcm: Vec<i16>,
    /// Decodes available now, in thousandths (refilled at `max_decodes_per_second` per 1000 ms).
    tokens_milli: u64,
    refilled_ms: Option<u64>,
    stats: LevelStats,
}

impl std::fmt::Debug for LevelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelSource")
            .field("config", &self.config)
            .field("decoding", &self.decoder.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

impl LevelSource {
    pub fn new(config: LevelConfig) -> Self {
        LevelSource {
            tokens_milli: u64::from(config.burst) * 1000,
            config,
            decoder: None,
            pcm: Vec::new(),
            refilled_ms: None,
            stats: LevelStats::default(),
        }
    }

    pub fn config(&self) -> &LevelConfig {
        &self.config
    }

    pub fn stats(&self) -> LevelStats {
        self.stats
    }

    /// The level of `packet` received at `now_ms`, if it has one (see the module's contract).
    pub fn level(&mut self, packet: &Packet, now_ms: u64) -> Option<AudioLevel> {
        if let Some(level) = self.config.extension_id.and_then(|id| AudioLevel::from_header(&packet.header, id)) {
            self.stats.from_extension += 1;
            return Some(level);
        }
        if packet.payload.is_empty() {
            return None;
        }
        if !self.take_token(now_ms) {
            self.stats.skipped += 1;
            return None;
        }
        let decoder = match &mut self.decoder {
            Some(d) => d,
            None => match opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono) {
                Ok(d) => self.decoder.insert(d),
                // Only an allocation failure in libopus can get here; the packet then has no level.
                Err(_) => return None,
            },
        };
        self.pcm.resize(MAX_PACKET_SAMPLES, 0);
        match decoder.decode(&packet.payload, &mut self.pcm, false) {
            Ok(n) => {
                self.stats.decoded += 1;
                Some(level_of_pcm(&self.pcm[..n.min(self.pcm.len())], self.config.voice_threshold_dbov))
            }
            Err(_) => {
                self.stats.bad_packets += 1;
                None
            }
        }
    }

    fn take_token(&mut self, now_ms: u64) -> bool {
        let cap = u64::from(self.config.burst.max(1)) * 1000;
        if let Some(at) = self.refilled_ms {
            let elapsed = now_ms.saturating_sub(at);
            self.tokens_milli =
                self.tokens_milli.saturating_add(elapsed.saturating_mul(u64::from(self.config.max_decodes_per_second)));
            self.tokens_milli = self.tokens_milli.min(cap);
        }
        self.refilled_ms = Some(now_ms.max(self.refilled_ms.unwrap_or(0)));
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}
