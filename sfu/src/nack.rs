//! The retransmission buffer of one outgoing stream, answering generic NACKs (RFC 4585 §6.2.1).
//!
//! Contract:
//! - It holds the last `capacity` packets *as they were sent* (already rewritten: outgoing SSRC,
//!   sequence number and timestamp), keyed by outgoing sequence number; a retransmission is
//!   byte-for-byte the original, sent again on the same SSRC (no RTX encapsulation, RFC 4588).
//! - A sequence number is answered only while it is among the `capacity` newest (by 16-bit distance
//!   from the newest stored) and was stored at most `max_age_ms` ago; anything else has fallen out and is
//!   ignored without error. Packets the stream never sent (upstream losses) are not here either: they
//!   are repaired by a keyframe, which the receiver asks for with a PLI.
//! - A packet is sent again at most once per `min_resend_interval_ms`, so a burst of NACKs naming the
//!   same packet (receivers repeat them until it arrives) costs one retransmission per interval.
//! - Storage is allocated once; storing a packet keeps a reference to its payload, never a copy.

use bytes::Bytes;
use rtcp::transport_feedbacks::transport_layer_nack::NackPair;
use rtp::header::Header;
use rtp::packet::Packet;

/// Sizes and limits of a [`RetransmitBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// Packets kept; rounded up to a power of two, at most 32 768. 0 disables retransmission.
    pub capacity: usize,
    /// Older packets are not sent again: the receiver has given up on them.
    pub max_age_ms: u64,
    /// The least time between two retransmissions of one packet.
    pub min_resend_interval_ms: u64,
}

impl Default for RetransmitConfig {
    /// 512 packets: about one second of a 4–5 Mbit/s video stream.
    fn default() -> Self {
        RetransmitConfig { capacity: 512, max_age_ms: 1500, min_resend_interval_ms: 50 }
    }
}

impl RetransmitConfig {
    /// No retransmission (audio, whose receivers conceal losses instead).
    pub fn disabled() -> Self {
        RetransmitConfig { capacity: 0, ..Self::default() }
    }
}

/// What is needed to send a packet again exactly as it was sent: the header fields the forwarder sets,
/// and the payload (shared).
#[derive(Debug, Clone)]
struct Entry {
    seq: u16,
    ssrc: u32,
    timestamp: u32,
    payload_type: u8,
    marker: bool,
    payload: Bytes,
    stored_at_ms: u64,
    resent_at_ms: Option<u64>,
}

/// A ring of sent packets by outgoing sequence number.
#[derive(Debug, Clone)]
pub struct RetransmitBuffer {
    slots: Vec<Option<Entry>>,
    newest: Option<u16>,
    config: RetransmitConfig,
}

impl RetransmitBuffer {
    pub fn new(config: RetransmitConfig) -> Self {
        let capacity = if config.capacity == 0 { 0 } else { config.capacity.next_power_of_two().min(1 << 15) };
        RetransmitBuffer { slots: vec![None; capacity], newest: None, config: RetransmitConfig { capacity, ..config } }
    }

    /// The number of packets kept.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Stores a packet as it was sent. Only the fields a forwarded packet carries are kept: marker,
    /// payload type, sequence number, timestamp, SSRC and payload (no CSRC, no header extensions).
    pub fn insert(&mut self, packet: &Packet, now_ms: u64) {
        let cap = self.slots.len();
        if cap == 0 {
            return;
        }
        let seq = packet.header.sequence_number;
        match self.newest {
            Some(newest) => {
                let ahead = seq.wrapping_sub(newest) as i16;
                if ahead > 0 {
                    if ahead as usize >= cap {
                        self.slots.iter_mut().for_each(|s| *s = None);
                    }
                    self.newest = Some(seq);
                } else if usize::from(newest.wrapping_sub(seq)) >= cap {
                    return;
                }
            }
            None => self.newest = Some(seq),
        }
        self.slots[usize::from(seq) & (cap - 1)] = Some(Entry {
            seq,
            ssrc: packet.header.ssrc,
            timestamp: packet.header.timestamp,
            payload_type: packet.header.payload_type,
            marker: packet.header.marker,
            payload: packet.payload.clone(),
            stored_at_ms: now_ms,
            resent_at_ms: None,
        });
    }

    /// The packet sent with this sequence number, to send again now, if it is still held and was not
    /// sent again too recently.
    pub fn retransmit(&mut self, seq: u16, now_ms: u64) -> Option<Packet> {
        let cap = self.slots.len();
        let newest = self.newest?;
        if usize::from(newest.wrapping_sub(seq)) >= cap {
            return None;
        }
        let entry = self.slots[usize::from(seq) & (cap - 1)].as_mut().filter(|e| e.seq == seq)?;
        if now_ms.saturating_sub(entry.stored_at_ms) > self.config.max_age_ms {
            return None;
        }
        if entry.resent_at_ms.is_some_and(|t| now_ms.saturating_sub(t) < self.config.min_resend_interval_ms) {
            return None;
        }
        entry.resent_at_ms = Some(now_ms);
        Some(Packet {
            header: Header {
                version: 2,
                marker: entry.marker,
                payload_type: entry.payload_type,
                sequence_number: entry.seq,
                timestamp: entry.timestamp,
                ssrc: entry.ssrc,
                ..Header::default()
            },
            payload: entry.payload.clone(),
        })
    }
}

/// The sequence numbers a generic NACK names: each pair's packet id, then one for each bit set in its
/// bitmask of following lost packets (bit i → id + i + 1).
pub fn lost_seqs(pairs: &[NackPair]) -> impl Iterator<Item = u16> + '_ {
    pairs.iter().flat_map(|pair| {
        let id = pair.packet_id;
        let bits = pair.lost_packets;
        std::iter::once(id).chain((0..16u16).filter(move |i| bits & (1 << i) != 0).map(move |i| id.wrapping_add(i + 1)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> Packet {
        Packet {
            header: Header {
                version: 2,
                sequence_number: seq,
                timestamp: u32::from(seq) * 10,
                ssrc: 7,
                ..Default::default()
            },
            payload: Bytes::from(vec![seq as u8; 3]),
        }
    }

    #[test]
    fn bitmask_expands() {
        let pairs = [NackPair { packet_id: 65534, lost_packets: 0b1000_0000_0000_0101 }];
        assert_eq!(lost_seqs(&pairs).collect::<Vec<_>>(), vec![65534, 65535, 1, 14]);
        assert_eq!(lost_seqs(&pairs).collect::<Vec<_>>(), pairs[0].packet_list());
    }

    #[test]
    fn ring_keeps_the_newest_only() {
        let mut buf = RetransmitBuffer::new(RetransmitConfig { capacity: 3, ..Default::default() });
        assert_eq!(buf.capacity(), 4);
        for seq in 65533..=65535u16 {
            buf.insert(&packet(seq), 0);
        }
        for seq in 0..=2u16 {
            buf.insert(&packet(seq), 0);
        }
        assert!(buf.retransmit(65534, 0).is_none());
        assert_eq!(buf.retransmit(65535, 0), Some(packet(65535)));
        assert_eq!(buf.retransmit(2, 0), Some(packet(2)));
        // Never sent.
        assert!(buf.retransmit(3, 0).is_none());
    }

    #[test]
    fn a_jump_clears_the_ring() {
        let mut buf = RetransmitBuffer::new(RetransmitConfig { capacity: 4, ..Default::default() });
        buf.insert(&packet(1), 0);
        buf.insert(&packet(100), 0);
        assert!(buf.retransmit(1, 0).is_none());
        // Within the window but never sent.
        assert!(buf.retransmit(97, 0).is_none());
        assert!(buf.retransmit(100, 0).is_some());
    }

    #[test]
    fn age_and_resend_interval() {
        let mut buf =
            RetransmitBuffer::new(RetransmitConfig { capacity: 8, max_age_ms: 100, min_resend_interval_ms: 20 });
        buf.insert(&packet(1), 0);
        assert!(buf.retransmit(1, 10).is_some());
        assert!(buf.retransmit(1, 29).is_none());
        assert!(buf.retransmit(1, 30).is_some());
        assert!(buf.retransmit(1, 101).is_none());
    }

    #[test]
    fn disabled_holds_nothing() {
        let mut buf = RetransmitBuffer::new(RetransmitConfig::disabled());
        buf.insert(&packet(1), 0);
        assert!(buf.retransmit(1, 0).is_none());
    }
}
