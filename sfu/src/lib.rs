//! The media plane of meetings: forwarding RTP from a publisher to its subscribers without decoding it.
//!
//! Everything but [`rtc`] is sans-I/O: state machines fed with packets, feedback and the current time
//! (`now_ms`, milliseconds on any monotonic clock), that queue what must be sent. No sockets, no
//! threads, no timers; the adapter that owns the peer connections ([`rtc`], on the `webrtc` crate)
//! feeds them and carries their output. Packet types are those of the webrtc-rs `rtp` and `rtcp`
//! crates, so that adapter passes packets through unchanged.
//!
//! One concept per module:
//! - [`codec`]: where a decoder can start (keyframe detection from the payload descriptor);
//! - [`rewrite`]: one outgoing stream's SSRC, sequence numbers and timestamps across source switches;
//! - [`nack`]: the retransmission buffer of one outgoing stream, answering generic NACKs;
//! - [`keyframe`]: which layer to ask for a keyframe, and the throttle on PLI/FIR sent upstream;
//! - [`rate`]: what each simulcast layer really carries (bitrate, and whether it is sent at all);
//! - [`audio_level`]: RFC 6464 audio levels, smoothed loudness and the active-speaker choice;
//! - [`forwarder`]: one published track and its subscribers, tying the above together;
//! - [`rtc`]: the WebRTC adapter: peer connections on one UDP port, each published track read into its
//!   forwarder and its output written to the subscribers' tracks and the publisher's RTCP.
//!
//! The choice of a subscriber's simulcast layer (from bandwidth, viewport, policy) is made elsewhere
//! and given to [`forwarder::Forwarder::set_target_layer`]; this crate carries out the switch.

pub mod audio;
pub mod audio_level;
pub mod codec;
pub mod forwarder;
pub mod keyframe;
pub mod nack;
pub mod rate;
pub mod rewrite;
pub mod rtc;

pub use audio::{AudioMixer, LevelConfig, LevelSource, MixerConfig};
pub use audio_level::{ActiveSpeaker, AudioLevel, LoudnessMeter, SpeakerConfig};
pub use codec::Codec;
pub use forwarder::{AddSubscriberError, Forwarder, ForwarderConfig, Output, UnknownSubscriber};
pub use keyframe::{KeyframeRequest, KeyframeRequestKind};
pub use rate::MeasuredRate;

/// A simulcast layer of a published track: 0 is the lowest quality. A track without simulcast has only
/// [`Layer::LOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Layer(u8);

impl Layer {
    /// How many layers a track can have.
    pub const COUNT: usize = 3;
    pub const LOW: Layer = Layer(0);
    pub const MID: Layer = Layer(1);
    pub const HIGH: Layer = Layer(2);

    /// The layer with this index, if there is one (0, 1 or 2).
    pub fn new(index: u8) -> Option<Layer> {
        (usize::from(index) < Self::COUNT).then_some(Layer(index))
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// One receiver of a forwarded track, named by the caller (the adapter maps its peer connections to
/// these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(pub u64);
