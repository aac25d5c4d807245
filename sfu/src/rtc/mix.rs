//! A room mix: one [`AudioMixer`] over published audio tracks, ticked every 20 ms by its own task,
//! writing to one outgoing track that every listener's connection binds, each under its own label.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::time::MissedTickBehavior;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecParameters, RTPCodecType};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalContext, TrackLocalWriter};

use super::engine::opus_capability;
use super::{lock, MediaError, PeerRole, TrackId};
use crate::audio::{AudioMixer, MixerConfig};

/// A room mix, named by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MixId(pub u64);

/// The mixer's tick.
const TICK: Duration = Duration::from_millis(20);
/// Packets one tick may send: the mixer skips ticks when more than 100 ms late, so it never has
/// more than five due; this only bounds the loop.
const MAX_PACKETS_PER_TICK: usize = 8;
/// Published tracks one mix sums (each costs a decoder and up to 200 ms of PCM).
pub const MAX_MIX_SOURCES: usize = 32;

pub(super) struct Mix {
    pub(super) mixer: Mutex<AudioMixer<TrackId>>,
    /// Shared by every listener: `TrackLocalStaticRTP` writes each packet to all its bindings,
    /// rewriting SSRC and payload type to each one's.
    pub(super) track: Arc<TrackLocalStaticRTP>,
}

impl Mix {
    /// A mix and its ticking task, which ends once the mix is dropped.
    pub(super) fn start(id: MixId) -> Result<Arc<Mix>, MediaError> {
        let mut random = RandomState::new().build_hasher();
        random.write_u64(id.0);
        let bits = random.finish();
        // Opus's payload type as the node registers it; each listener's binding rewrites it anyway.
        let mut config = MixerConfig::new(bits as u32, 111);
        // RFC 3550: random initial sequence number and timestamp.
        config.first_sequence = (bits >> 32) as u16;
        config.first_timestamp = (bits >> 16) as u32;
        let mixer = AudioMixer::new(config).map_err(MediaError::Mixer)?;
        let name = format!("mix-{}", id.0);
        let track = Arc::new(TrackLocalStaticRTP::new(opus_capability(PeerRole::Subscriber), name.clone(), name));
        let mix = Arc::new(Mix { mixer: Mutex::new(mixer), track });
        tokio::spawn(tick(Arc::downgrade(&mix)));
        Ok(mix)
    }

    /// The mix's track as one listener sees it: `label` as both the stream and the track id of its
    /// `msid`.
    pub(super) fn labeled(&self, label: &str) -> Arc<dyn TrackLocal + Send + Sync> {
        Arc::new(Labeled { shared: self.track.clone(), label: label.to_owned() })
    }
}

/// Mixes every 20 ms; the mixer's lock is held only to mix, the packets are written after.
async fn tick(mix: Weak<Mix>) {
    let epoch = Instant::now();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut packets = Vec::with_capacity(MAX_PACKETS_PER_TICK);
    loop {
        ticks.tick().await;
        let Some(mix) = mix.upgrade() else { return };
        let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        {
            let mut mixer = lock(&mix.mixer);
            for _ in 0..MAX_PACKETS_PER_TICK {
                if mixer.next_mix_ms().is_some_and(|due| due > now) {
                    break;
                }
                packets.extend(mixer.mix(now));
            }
        }
        for packet in packets.drain(..) {
            // Errors are one listener's transport (not yet connected, closing); the others got it.
            let _ = mix.track.write_rtp(&packet).await;
        }
    }
}

/// The shared mix track under one listener's label: binding and unbinding go to the shared track,
/// which keeps one binding per listener's sender.
struct Labeled {
    shared: Arc<TrackLocalStaticRTP>,
    label: String,
}

#[async_trait]
impl TrackLocal for Labeled {
    async fn bind(&self, t: &TrackLocalContext) -> webrtc::error::Result<RTCRtpCodecParameters> {
        self.shared.bind(t).await
    }

    async fn unbind(&self, t: &TrackLocalContext) -> webrtc::error::Result<()> {
        self.shared.unbind(t).await
    }

    fn id(&self) -> &str {
        &self.label
    }

    fn rid(&self) -> Option<&str> {
        None
    }

    fn stream_id(&self) -> &str {
        &self.label
    }

    fn kind(&self) -> RTPCodecType {
        RTPCodecType::Audio
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
