//! The room mix: several published audio tracks summed into one Opus stream, for participants who only
//! listen (they receive one track instead of one per speaker). Sources are keyed by `K` (the adapter's
//! track ids); nobody is left out of the mix (no exclude-self: a listener publishes nothing).
//!
//! Contract:
//! - **Sources.** [`AudioMixer::add_source`] gives a track its own Opus decoder (48 kHz, in the mix's
//!   channels) and playout buffer; [`AudioMixer::on_rtp`] decodes each packet on arrival into that
//!   buffer. Packets older than the last one decoded (by sequence number) are dropped as late; a gap
//!   of up to [`MixerConfig::max_concealed_frames`] packets is filled by libopus's concealment so the
//!   source keeps its timing; a longer jump (or a sequence restart) starts afresh. Payloads libopus
//!   refuses are counted and skipped.
//! - **Playout.** A source is mixed once it holds [`MixerConfig::jitter_frames`] frames of 20 ms; it
//!   then gives one frame a tick until it runs dry (an underrun: it refills before it is mixed again).
//!   Its buffer holds at most [`MixerConfig::max_buffered_frames`]: beyond that the oldest samples go,
//!   which bounds memory and latency when a sender's clock runs fast or the mixer is not driven.
//! - **Ticks.** [`AudioMixer::mix`] does one tick when it is due ([`AudioMixer::next_mix_ms`]; the
//!   first call starts the clock), every 20 ms. A tick sums one frame of every playing source in
//!   `i32` and clips to `i16` (saturating: loud overlaps distort, never wrap around), encodes it
//!   (Opus, VoIP mode) and returns it as RTP: the mixer's SSRC and payload type, no extensions,
//!   sequence numbers +1 a packet, timestamps +960 a tick. A tick with no playing source sends
//!   nothing (the timestamp still advances, as in DTX) and the next packet has the marker bit, as
//!   does the first. A caller more than 100 ms late skips the missed ticks (timestamps advance, the
//!   marker is set) instead of sending them in a burst.
//! - **Channels.** Mono by default: meeting voices are mono, and a mono Opus stream is valid under the
//!   `opus/48000/2` every browser negotiates (it is played on both ears). [`MixerConfig::stereo`] makes
//!   a stereo stream of the sources decoded in stereo.
//!
//! Driving it (the adapter does this on a 20 ms timer):
//!
//! ```
//! use sfu::audio::{AudioMixer, MixerConfig};
//! # use rtp::packet::Packet;
//!
//! let mut mixer: AudioMixer<u64> = AudioMixer::new(MixerConfig::new(0x4D1C, 111)).unwrap();
//! mixer.add_source(7).unwrap();
//! # let packet = Packet::default();
//! // Each packet read from track 7:
//! let _level = mixer.on_rtp(&7, &packet);
//! // On each timer tick at `now`:
//! # let now = 0;
//! while mixer.next_mix_ms().is_none_or(|due| due <= now) {
//!     if let Some(packet) = mixer.mix(now) { /* write `packet` to the listeners' mix track */ }
//! }
//! ```

use std::collections::VecDeque;

use bytes::Bytes;
use rtp::header::Header;
use rtp::packet::Packet;

use super::{level_of_pcm, FRAME_SAMPLES, MAX_PACKET_SAMPLES, SAMPLE_RATE};
use crate::audio_level::AudioLevel;

const FRAME_MS: u64 = 20;
/// A caller this late skips ticks instead of catching up.
const MAX_LAG_MS: u64 = 100;
/// A sequence number this far behind the last is a restarted stream, not a late packet.
const RESTART_DISTANCE: i32 = 3_000;
/// Opus's largest packet.
const MAX_OPUS_BYTES: usize = 1_275;

/// How the mix is made. [`MixerConfig::new`] fills in defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixerConfig {
    /// The SSRC of the mix stream.
    pub ssrc: u32,
    /// Its payload type (the adapter's binding rewrites it to what each listener negotiated).
    pub payload_type: u8,
    /// The sequence number and RTP timestamp of the first packet (random, per RFC 3550).
    pub first_sequence: u16,
    pub first_timestamp: u32,
    /// Stereo mix instead of mono.
    pub stereo: bool,
    /// Target bitrate of the encoder.
    pub bitrate_bps: i32,
    /// Frames a source buffers before it is mixed (at start and after each underrun).
    pub jitter_frames: usize,
    /// Frames a source may hold; the oldest go beyond.
    pub max_buffered_frames: usize,
    /// The longest gap in a source's sequence numbers that is concealed.
    pub max_concealed_frames: usize,
    /// Levels [`AudioMixer::on_rtp`] reports at or below this (louder) get the V flag.
    pub voice_threshold_dbov: u8,
}

impl MixerConfig {
    /// Mono at 32 kbit/s, sequence and timestamp from 0, 40 ms of jitter buffer, at most 200 ms held,
    /// gaps up to 3 packets concealed.
    pub fn new(ssrc: u32, payload_type: u8) -> Self {
        MixerConfig {
            ssrc,
            payload_type,
            first_sequence: 0,
            first_timestamp: 0,
            stereo: false,
            bitrate_bps: 32_000,
            jitter_frames: 2,
            max_buffered_frames: 10,
            max_concealed_frames: 3,
            voice_threshold_dbov: 50,
        }
    }

    fn channels(&self) -> usize {
        if self.stereo {
            2
        } else {
            1
        }
    }

    fn opus_channels(&self) -> opus::Channels {
        if self.stereo {
            opus::Channels::Stereo
        } else {
            opus::Channels::Mono
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MixerError {
    #[error("the source is already in the mix")]
    DuplicateSource,
    #[error("no such source in the mix")]
    UnknownSource,
    #[error("opus: {0}")]
    Codec(#[from] opus::Error),
}

/// What happened to one source's packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Packets decoded into the buffer.
    pub decoded: u64,
    /// Frames made up by concealment for missing packets.
    pub concealed: u64,
    /// Packets dropped for arriving after a later one.
    pub late: u64,
    /// Payloads libopus refused.
    pub bad_packets: u64,
    /// Frames' worth of samples dropped from a full buffer.
    pub overflow_frames: u64,
    /// Times the source ran dry while playing.
    pub underruns: u64,
    /// Frames mixed.
    pub mixed_frames: u64,
    /// Samples per channel held now.
    pub buffered_samples: usize,
}

/// What the mixer sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixerStats {
    /// Packets made.
    pub packets: u64,
    /// Ticks without a playing source (nothing sent).
    pub silent_ticks: u64,
    /// Ticks skipped because the caller was late.
    pub skipped_ticks: u64,
    /// Ticks whose encoding failed (nothing sent).
    pub encode_errors: u64,
}

struct Source<K> {
    key: K,
    decoder: opus::Decoder,
    /// Interleaved PCM in the mix's channels.
    pcm: VecDeque<i16>,
    playing: bool,
    last_seq: Option<u16>,
    /// Samples per channel of the last packet decoded: the size of a concealed frame.
    last_samples: usize,
    stats: SourceStats,
}

/// The room mix of sources keyed by `K`.
pub struct AudioMixer<K> {
    config: MixerConfig,
    encoder: opus::Encoder,
    sources: Vec<Source<K>>,
    /// Scratch for decoding (one packet) and summing (one frame).
    decoded: Vec<i16>,
    sum: Vec<i32>,
    frame: Vec<i16>,
    encoded: Vec<u8>,
    next_due_ms: Option<u64>,
    sequence: u16,
    timestamp: u32,
    /// The next packet starts a talkspurt (the first, or the first after silence).
    marker: bool,
    stats: MixerStats,
}

impl<K> std::fmt::Debug for AudioMixer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioMixer")
            .field("config", &self.config)
            .field("sources", &self.sources.len())
            .field("next_due_ms", &self.next_due_ms)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<K: Clone + Eq> AudioMixer<K> {
    pub fn new(config: MixerConfig) -> Result<Self, MixerError> {
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, config.opus_channels(), opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(config.bitrate_bps))?;
        let channels = config.channels();
        Ok(AudioMixer {
            encoder,
            sources: Vec::new(),
            decoded: vec![0; MAX_PACKET_SAMPLES * channels],
            sum: vec![0; FRAME_SAMPLES * channels],
            frame: vec![0; FRAME_SAMPLES * channels],
            encoded: vec![0; MAX_OPUS_BYTES],
            next_due_ms: None,
            sequence: config.first_sequence,
            timestamp: config.first_timestamp,
            marker: true,
            stats: MixerStats::default(),
            config,
        })
    }

    pub fn config(&self) -> &MixerConfig {
        &self.config
    }

    /// Adds a source (a published audio track) with its own decoder.
    pub fn add_source(&mut self, key: K) -> Result<(), MixerError> {
        if self.sources.iter().any(|s| s.key == key) {
            return Err(MixerError::DuplicateSource);
        }
        let decoder = opus::Decoder::new(SAMPLE_RATE, self.config.opus_channels())?;
        self.sources.push(Source {
            key,
            decoder,
            pcm: VecDeque::new(),
            playing: false,
            last_seq: None,
            last_samples: FRAME_SAMPLES,
            stats: SourceStats::default(),
        });
        Ok(())
    }

    /// Removes a source and what it buffered; false if it was not there.
    pub fn remove_source(&mut self, key: &K) -> bool {
        let before = self.sources.len();
        self.sources.retain(|s| &s.key != key);
        self.sources.len() != before
    }

    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    pub fn source_stats(&self, key: &K) -> Option<SourceStats> {
        self.sources
            .iter()
            .find(|s| &s.key == key)
            .map(|s| SourceStats { buffered_samples: s.pcm.len() / self.config.channels(), ..s.stats })
    }

    pub fn stats(&self) -> MixerStats {
        self.stats
    }

    /// A packet of source `key`: decoded into its buffer. Returns the level of the decoded PCM (as
    /// [`super::level_of_pcm`]), which spares a [`super::LevelSource`] a second decode; `None` for
    /// padding and for packets dropped or refused.
    pub fn on_rtp(&mut self, key: &K, packet: &Packet) -> Result<Option<AudioLevel>, MixerError> {
        let channels = self.config.channels();
        let max_concealed = self.config.max_concealed_frames;
        let cap = self.config.max_buffered_frames.max(1) * FRAME_SAMPLES * channels;
        let source = self.sources.iter_mut().find(|s| &s.key == key).ok_or(MixerError::UnknownSource)?;
        if packet.payload.is_empty() {
            return Ok(None);
        }
        let seq = packet.header.sequence_number;
        let mut lost = 0;
        if let Some(last) = source.last_seq {
            let step = i32::from(seq.wrapping_sub(last) as i16);
            if step <= 0 && step > -RESTART_DISTANCE {
                source.stats.late += 1;
                return Ok(None);
            }
            if step > 1 && (step - 1) as usize <= max_concealed {
                lost = (step - 1) as usize;
            }
        }
        // libopus conceals from its state before the next packet, so the made-up frames come first.
        for _ in 0..lost {
            let len = (source.last_samples * channels).min(self.decoded.len());
            if let Ok(n) = source.decoder.decode(&[], &mut self.decoded[..len], false) {
                source.pcm.extend(&self.decoded[..(n * channels).min(len)]);
                source.stats.concealed += 1;
            }
        }
        if lost > 0 {
            // Accounted for, even if this packet turns out bad.
            source.last_seq = Some(seq.wrapping_sub(1));
        }
        let level = match source.decoder.decode(&packet.payload, &mut self.decoded, false) {
            Ok(n) => {
                let samples = &self.decoded[..(n * channels).min(self.decoded.len())];
                source.pcm.extend(samples);
                source.last_seq = Some(seq);
                if n > 0 {
                    source.last_samples = n;
                }
                source.stats.decoded += 1;
                Some(level_of_pcm(samples, self.config.voice_threshold_dbov))
            }
            Err(_) => {
                // Left as a gap, which the next good packet conceals.
                source.stats.bad_packets += 1;
                None
            }
        };
        let excess = source.pcm.len().saturating_sub(cap);
        if excess > 0 {
            // Whole frames, so that the channels stay interleaved in step.
            let frames = excess.div_ceil(FRAME_SAMPLES * channels);
            let drop = (frames * FRAME_SAMPLES * channels).min(source.pcm.len());
            source.pcm.drain(..drop);
            source.stats.overflow_frames += frames as u64;
        }
        Ok(level)
    }

    /// When the next tick is due; `None` before the first [`AudioMixer::mix`].
    pub fn next_mix_ms(&self) -> Option<u64> {
        self.next_due_ms
    }

    /// Does the tick due at `now_ms`, if one is: the mixed packet, or `None` when nothing is due or no
    /// source is playing. Call it until [`AudioMixer::next_mix_ms`] is in the future.
    pub fn mix(&mut self, now_ms: u64) -> Option<Packet> {
        let due = *self.next_due_ms.get_or_insert(now_ms);
        if now_ms < due {
            return None;
        }
        let late = now_ms - due;
        if late >= MAX_LAG_MS {
            let skipped = late / FRAME_MS;
            self.stats.skipped_ticks += skipped;
            self.timestamp = self.timestamp.wrapping_add((skipped as u32).wrapping_mul(FRAME_SAMPLES as u32));
            self.next_due_ms = Some(due + skipped * FRAME_MS);
            self.marker = true;
        }
        self.next_due_ms = self.next_due_ms.map(|d| d + FRAME_MS);
        let timestamp = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);

        let frame_len = self.sum.len();
        let fill = self.config.jitter_frames.clamp(1, self.config.max_buffered_frames.max(1));
        self.sum.fill(0);
        let mut playing = 0;
        for source in &mut self.sources {
            if !source.playing {
                if source.pcm.len() < fill * frame_len {
                    continue;
                }
                source.playing = true;
            }
            if source.pcm.len() < frame_len {
                source.playing = false;
                source.stats.underruns += 1;
                continue;
            }
            for (acc, sample) in self.sum.iter_mut().zip(source.pcm.drain(..frame_len)) {
                *acc += i32::from(sample);
            }
            source.stats.mixed_frames += 1;
            playing += 1;
        }
        if playing == 0 {
            self.stats.silent_ticks += 1;
            self.marker = true;
            return None;
        }
        clip_into(&self.sum, &mut self.frame);
        let len = match self.encoder.encode(&self.frame, &mut self.encoded) {
            Ok(len) => len,
            Err(_) => {
                self.stats.encode_errors += 1;
                self.marker = true;
                return None;
            }
        };
        let packet = Packet {
            header: Header {
                version: 2,
                marker: self.marker,
                payload_type: self.config.payload_type,
                sequence_number: self.sequence,
                timestamp,
                ssrc: self.config.ssrc,
                ..Header::default()
            },
            payload: Bytes::copy_from_slice(&self.encoded[..len]),
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.marker = false;
        self.stats.packets += 1;
        Some(packet)
    }
}

/// Saturates each sum to `i16`.
fn clip_into(sum: &[i32], out: &mut [i16]) {
    for (o, &s) in out.iter_mut().zip(sum) {
        *o = s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let mut out = [0i16; 4];
        clip_into(&[40_000, -40_000, 32_767 + 1, -5], &mut out);
        assert_eq!(out, [i16::MAX, i16::MIN, i16::MAX, -5]);
    }
}
