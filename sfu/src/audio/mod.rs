//! Audio that must be decoded: levels of publishers that send no RFC 6464 extension, and the room mix.
//!
//! Everything else in this crate forwards payloads untouched; this module runs libopus (through the
//! `opus` crate) on them, still sans-I/O: packets and `now_ms` in, levels and packets out.
//!
//! - [`LevelSource`] (in `decode_level`): one published audio track's level per packet, in the unit of
//!   [`AudioLevel`] (-dBov, 0 loudest, 127 silence): the packet's RFC 6464 extension when it carries
//!   one, else the RMS of its decoded PCM, so [`crate::LoudnessMeter`] and [`crate::ActiveSpeaker`]
//!   take both alike. Decoding is bounded by a token bucket.
//! - [`AudioMixer`] (in `mix`): one stream of the sum of several published audio tracks, for
//!   participants who only listen. Each source has its own decoder and a bounded playout buffer;
//!   [`AudioMixer::mix`] makes one 20 ms Opus frame per tick as RTP with the mixer's own SSRC,
//!   sequence numbers and timestamps.
//!
//! Bad payloads (libopus refuses them) are counted and skipped, never a panic: publishers are not
//! trusted. Memory is bounded per track: one decoder (about 26 KB at 48 kHz stereo) and, in the
//! mixer, at most [`MixerConfig::max_buffered_frames`] frames of PCM.

mod decode_level;
mod mix;

pub use decode_level::{LevelConfig, LevelSource, LevelStats};
pub use mix::{AudioMixer, MixerConfig, MixerError, MixerStats, SourceStats};

use crate::audio_level::AudioLevel;

/// Opus in WebRTC always runs its RTP clock (and here its PCM) at 48 kHz.
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples per channel in 20 ms at 48 kHz: the mixer's frame and its RTP timestamp step.
pub const FRAME_SAMPLES: usize = 960;

/// The longest Opus packet: 120 ms at 48 kHz, per channel.
pub(crate) const MAX_PACKET_SAMPLES: usize = 5_760;

/// The RFC 6464 level of PCM samples (interleaved channels alike): the RMS relative to full scale in
/// -dBov, rounded, 127 for digital silence and anything quieter. A full-scale square wave is 0, a
/// full-scale sine 3. `voice` is set when the level is at most `voice_threshold_dbov` (there is no VAD
/// here, only loudness).
pub fn level_of_pcm(samples: &[i16], voice_threshold_dbov: u8) -> AudioLevel {
    let level = if samples.is_empty() {
        127
    } else {
        let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        let rms = (sum / samples.len() as f64).sqrt() / 32_768.0;
        if rms <= 0.0 {
            127
        } else {
            // Clamped to 0..=127 first, so the cast is exact.
            (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
        }
    };
    AudioLevel { level, voice: level <= voice_threshold_dbov }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_known_signals() {
        assert_eq!(level_of_pcm(&[], 50).level, 127);
        assert_eq!(level_of_pcm(&[0; 960], 50).level, 127);
        assert_eq!(level_of_pcm(&[i16::MIN, i16::MIN], 50).level, 0);
        let sine: Vec<i16> =
            (0..960).map(|i| (32_767.0 * (i as f64 * 2.0 * std::f64::consts::PI / 48.0).sin()) as i16).collect();
        assert_eq!(level_of_pcm(&sine, 50), AudioLevel { level: 3, voice: true });
        let quiet: Vec<i16> = sine.iter().map(|s| s / 1000).collect();
        assert_eq!(level_of_pcm(&quiet, 50), AudioLevel { level: 63, voice: false });
        // One LSB of noise is -90 dBov or so: still a level, not silence.
        assert!((88..=92).contains(&level_of_pcm(&[1, -1, 1, -1], 50).level));
    }
}
