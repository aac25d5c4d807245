//! The room state machine: `handle(input, now_ms)` in, a list of outputs back.

use std::collections::BTreeSet;

use crate::error::RoomError;
use crate::ids::{RoomId, TrackId, UserId};
use crate::input::Input;
use crate::model::{EndReason, IceCandidate, LeaveReason, PeerTarget, Role, TrackKind};
use crate::output::{MediaCommand, Output, Reply, RoomEvent};
use crate::participant::{Participant, Subscription, Track};
use crate::simulcast::{validate_layers, Layer};
use crate::snapshot::RoomSnapshot;

/// Participants per room unless the options say otherwise.
pub const DEFAULT_MAX_PARTICIPANTS: u32 = 100;
/// How long a room may stay empty before a `Tick` ends it, unless the options say otherwise.
pub const DEFAULT_EMPTY_TIMEOUT_MS: u64 = 5 * 60 * 1000;
/// Tracks per participant unless the options say otherwise (a camera, a microphone, a screen
/// and its audio, with room to spare).
pub const DEFAULT_MAX_TRACKS_PER_PARTICIPANT: u32 = 8;
/// The longest `cid` a client may give a track.
pub const MAX_CID_BYTES: usize = 64;
/// The largest SDP accepted (the hub's frames are smaller anyway).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// How to create a room. Fields other than `id` are optional, with the defaults above.
/// Serialized, it is what a cluster keeps of a room to start it again on another node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomOptions {
    pub id: RoomId,
    /// A display name for listings.
    pub name: Option<String>,
    /// Counts every participant, viewers included.
    pub max_participants: u32,
    /// This user is a host whatever role its grant carries.
    pub host: Option<UserId>,
    /// Start locked: only hosts may join until a host unlocks it.
    pub locked: bool,
    /// The room ends at this time (the caller's clock, in ms).
    pub expires_at_ms: Option<u64>,
    /// End the room once it has been empty this long (counted from creation too); `None` keeps
    /// an empty room until it expires or is ended.
    pub empty_timeout_ms: Option<u64>,
    /// Subscribe every participant to every other participant's tracks as they appear. Without
    /// it, participants choose with `Subscribe`.
    pub auto_subscribe: bool,
    pub max_tracks_per_participant: u32,
}

impl RoomOptions {
    pub fn new(id: RoomId) -> RoomOptions {
        RoomOptions {
            id,
            name: None,
            max_participants: DEFAULT_MAX_PARTICIPANTS,
            host: None,
            locked: false,
            expires_at_ms: None,
            empty_timeout_ms: Some(DEFAULT_EMPTY_TIMEOUT_MS),
            auto_subscribe: true,
            max_tracks_per_participant: DEFAULT_MAX_TRACKS_PER_PARTICIPANT,
        }
    }
}

/// One meeting. See the crate documentation for the contract of [`Room::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    options: RoomOptions,
    created_at_ms: u64,
    locked: bool,
    ended: Option<EndReason>,
    /// In join order; rooms are small enough that a scan beats a map.
    participants: Vec<Participant>,
    /// Removed users may not join again.
    removed: BTreeSet<UserId>,
    active_speaker: Option<UserId>,
    empty_since_ms: Option<u64>,
    tracks_issued: u64,
    hands_raised: u64,
}

impl Room {
    pub fn new(options: RoomOptions, now_ms: u64) -> Room {
        Room {
            locked: options.locked,
            options,
            created_at_ms: now_ms,
            ended: None,
            participants: Vec::new(),
            removed: BTreeSet::new(),
            active_speaker: None,
            empty_since_ms: Some(now_ms),
            tracks_issued: 0,
            hands_raised: 0,
        }
    }

    pub fn id(&self) -> &RoomId {
        &self.options.id
    }

    pub fn options(&self) -> &RoomOptions {
        &self.options
    }

    /// Why the room ended, once it has; the hub then drops it.
    pub fn ended(&self) -> Option<EndReason> {
        self.ended
    }

    pub fn is_locked(&self) -> bool {
        self.locked
    }

    pub fn len(&self) -> usize {
        self.participants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// The role of a participant, or `None` if `user` is not in the room. The hub's rule for
    /// channel `room:{id}` is "participants only": this is the check.
    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        self.index(user).map(|i| self.participants[i].role)
    }

    /// The time (ms) by which the hub should send `Tick`, if any.
    pub fn next_timeout(&self) -> Option<u64> {
        if self.ended.is_some() {
            return None;
        }
        let empty = match (self.empty_since_ms, self.options.empty_timeout_ms) {
            (Some(since), Some(timeout)) => Some(since.saturating_add(timeout)),
            _ => None,
        };
        [self.options.expires_at_ms, empty].into_iter().flatten().min()
    }

    pub fn snapshot(&self) -> RoomSnapshot {
        let mut hands: Vec<(u64, &UserId)> =
            self.participants.iter().filter_map(|p| p.hand.map(|h| (h, &p.user))).collect();
        hands.sort();
        RoomSnapshot {
            id: self.options.id.clone(),
            name: self.options.name.clone(),
            max_participants: self.options.max_participants,
            locked: self.locked,
            ended: self.ended,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.options.expires_at_ms,
            active_speaker: self.active_speaker.clone(),
            auto_subscribe: self.options.auto_subscribe,
            participants: self.participants.iter().map(Participant::info).collect(),
            hands: hands.into_iter().map(|(_, u)| u.clone()).collect(),
        }
    }

    /// Applies one input. On error the room is unchanged and nothing is to be done.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Result<Vec<Output>, RoomError> {
        if self.ended.is_some() {
            return match input {
                Input::Tick | Input::ActiveSpeaker { .. } | Input::Renegotiate { .. } => Ok(Vec::new()),
                _ => Err(RoomError::RoomEnded),
            };
        }
        let expired = self.options.expires_at_ms.is_some_and(|at| now_ms >= at);
        if expired && input != Input::Tick {
            // Ended in all but name: the next Tick says so to everyone.
            return Err(RoomError::RoomEnded);
        }
        let mut out = Vec::new();
        match input {
            Input::Join { user, role } => self.join(user, role, now_ms, &mut out)?,
            Input::Leave { user } => {
                let i = self.member(&user)?;
                self.depart(i, LeaveReason::Left, now_ms, &mut out);
            }
            Input::Replace { user, role } => {
                let i = self.member(&user)?;
                self.depart(i, LeaveReason::Replaced, now_ms, &mut out);
                let role = self.role_for(&user, role);
                self.enter(user, role, now_ms, &mut out);
            }
            Input::Offer { user, sdp } => self.offer(user, sdp, &mut out)?,
            Input::Answer { user, sdp } => self.answer(user, sdp, &mut out)?,
            Input::Candidate { user, target, candidate } => self.candidate(user, target, candidate, &mut out)?,
            Input::PublishTrack { user, cid, kind, layers, muted } => {
                self.publish(user, cid, kind, layers, muted, &mut out)?
            }
            Input::UnpublishTrack { user, track } => self.unpublish(&user, &track, &mut out)?,
            Input::Subscribe { user, tracks, max_width, max_height } => {
                self.subscribe(&user, tracks, Subscription { max_width, max_height }, &mut out)?
            }
            Input::Unsubscribe { user, tracks } => self.unsubscribe(&user, tracks, &mut out)?,
            Input::SetMuted { user, track, muted } => {
                let i = self.member(&user)?;
                let t = self.participants[i].track(&track).ok_or(RoomError::UnknownTrack)?;
                self.set_muted(i, t, muted, None, &mut out);
            }
            Input::HostMute { by, target, track } => self.host_mute(by, &target, track, &mut out)?,
            Input::Remove { by, target } => {
                self.authorize(&by)?;
                let i = self.index(&target).ok_or(RoomError::UnknownParticipant)?;
                self.removed.insert(target.clone());
                out.push(Output::Notify { to: target, event: RoomEvent::Removed { by } });
                self.depart(i, LeaveReason::Removed, now_ms, &mut out);
            }
            Input::Lock { by } => self.set_locked(by, true, &mut out)?,
            Input::Unlock { by } => self.set_locked(by, false, &mut out)?,
            Input::End { by } => {
                self.authorize(&by)?;
                let reason = if by.is_some() { EndReason::Host } else { EndReason::Api };
                self.end(reason, by, &mut out);
            }
            Input::NodeStopping => self.end(EndReason::NodeLost, None, &mut out),
            Input::RaiseHand { user } => {
                let i = self.member(&user)?;
                if self.participants[i].hand.is_none() {
                    self.hands_raised += 1;
                    self.participants[i].hand = Some(self.hands_raised);
                    out.push(Output::Broadcast(RoomEvent::HandRaised { user }));
                }
            }
            Input::LowerHand { user, target } => self.lower_hand(user, target, &mut out)?,
            Input::ActiveSpeaker { user } => {
                // The media plane may report a user who has just left: not an error.
                let known = user.as_ref().is_none_or(|u| self.index(u).is_some());
                if known && self.active_speaker != user {
                    self.active_speaker = user.clone();
                    out.push(Output::Broadcast(RoomEvent::ActiveSpeaker { user }));
                }
            }
            Input::Mix { user, on } => {
                let i = self.member(&user)?;
                out.push(Output::Media(MediaCommand::Mix { user, on }));
                self.renegotiate(i, &mut out);
            }
            Input::Renegotiate { user } => {
                if let Some(i) = self.index(&user) {
                    self.renegotiate(i, &mut out);
                }
            }
            Input::Tick => self.tick(now_ms, &mut out),
        }
        Ok(out)
    }

    fn index(&self, user: &UserId) -> Option<usize> {
        self.participants.iter().position(|p| &p.user == user)
    }

    fn member(&self, user: &UserId) -> Result<usize, RoomError> {
        self.index(user).ok_or(RoomError::NotInRoom)
    }

    /// `None` is the server API, trusted; a user must be a host in this room.
    fn authorize(&self, by: &Option<UserId>) -> Result<(), RoomError> {
        match by {
            None => Ok(()),
            Some(user) if self.participants[self.member(user)?].role.is_host() => Ok(()),
            Some(_) => Err(RoomError::NotHost),
        }
    }

    /// Participant index of the track's publisher.
    fn publisher_of(&self, track: &TrackId) -> Option<usize> {
        self.participants.iter().position(|p| p.track(track).is_some())
    }

    fn renegotiate(&mut self, i: usize, out: &mut Vec<Output>) {
        if self.participants[i].negotiation.changed() {
            out.push(Output::Media(MediaCommand::CreateOffer { user: self.participants[i].user.clone() }));
        }
    }

    /// Subscribes participant `i` to `track`; returns whether the subscription is new.
    fn add_subscription(&mut self, i: usize, track: &TrackId, sub: Subscription, out: &mut Vec<Output>) -> bool {
        let p = &mut self.participants[i];
        let old = p.subscriptions.insert(track.clone(), sub);
        if old != Some(sub) {
            out.push(Output::Media(MediaCommand::Subscribe {
                user: p.user.clone(),
                track: track.clone(),
                max_width: sub.max_width,
                max_height: sub.max_height,
            }));
        }
        old.is_none()
    }

    /// Unsubscribes everyone from a track that is going away and tells the media plane to drop
    /// it; returns the subscribers, whose connections need a new offer.
    fn drop_track(&mut self, track: &TrackId, out: &mut Vec<Output>) -> Vec<usize> {
        let mut affected = Vec::new();
        for (i, p) in self.participants.iter_mut().enumerate() {
            if p.subscriptions.remove(track).is_some() {
                out.push(Output::Media(MediaCommand::Unsubscribe { user: p.user.clone(), track: track.clone() }));
                affected.push(i);
            }
        }
        out.push(Output::Media(MediaCommand::RemoveTrack { track: track.clone() }));
        affected
    }

    fn join(&mut self, user: UserId, role: Role, now_ms: u64, out: &mut Vec<Output>) -> Result<(), RoomError> {
        if self.index(&user).is_some() {
            return Err(RoomError::AlreadyJoined);
        }
        if self.removed.contains(&user) {
            return Err(RoomError::Removed);
        }
        let role = self.role_for(&user, role);
        if self.locked && !role.is_host() {
            return Err(RoomError::RoomLocked);
        }
        let max = self.options.max_participants;
        if self.participants.len() >= max as usize {
            return Err(RoomError::RoomFull { max });
        }
        self.enter(user, role, now_ms, out);
        Ok(())
    }

    /// The room's `host` option makes its user a host whatever its grant says.
    fn role_for(&self, user: &UserId, granted: Role) -> Role {
        if self.options.host.as_ref() == Some(user) {
            Role::Host
        } else {
            granted
        }
    }

    /// Lets `user` in (the checks are the caller's).
    fn enter(&mut self, user: UserId, role: Role, now_ms: u64, out: &mut Vec<Output>) {
        self.participants.push(Participant::new(user.clone(), role, now_ms));
        self.empty_since_ms = None;
        out.push(Output::Reply(Reply::Joined { role, room: self.snapshot() }));
        out.push(Output::Broadcast(RoomEvent::ParticipantJoined { user, role }));
        if self.options.auto_subscribe {
            let me = self.participants.len() - 1;
            let tracks: Vec<TrackId> =
                self.participants[..me].iter().flat_map(|p| p.tracks.iter().map(|t| t.id.clone())).collect();
            for track in &tracks {
                self.add_subscription(me, track, Subscription::default(), out);
            }
            if !tracks.is_empty() {
                self.renegotiate(me, out);
            }
        }
    }

    fn depart(&mut self, i: usize, reason: LeaveReason, now_ms: u64, out: &mut Vec<Output>) {
        let p = self.participants.remove(i);
        out.push(Output::Broadcast(RoomEvent::ParticipantLeft { user: p.user.clone(), reason }));
        let mut affected = BTreeSet::new();
        for track in &p.tracks {
            affected.extend(self.drop_track(&track.id, out));
        }
        if self.active_speaker.as_ref() == Some(&p.user) {
            self.active_speaker = None;
            out.push(Output::Broadcast(RoomEvent::ActiveSpeaker { user: None }));
        }
        out.push(Output::Media(MediaCommand::DisconnectMedia { user: p.user.clone() }));
        out.push(Output::Detach { user: p.user, reason });
        for i in affected {
            self.renegotiate(i, out);
        }
        if self.participants.is_empty() {
            self.empty_since_ms = Some(now_ms);
        }
    }

    fn end(&mut self, reason: EndReason, by: Option<UserId>, out: &mut Vec<Output>) {
        out.push(Output::Broadcast(RoomEvent::RoomEnded { reason, by }));
        for p in self.participants.drain(..) {
            out.push(Output::Media(MediaCommand::DisconnectMedia { user: p.user.clone() }));
            out.push(Output::Detach { user: p.user, reason: LeaveReason::Ended });
        }
        out.push(Output::Media(MediaCommand::CloseRoom));
        self.ended = Some(reason);
        self.active_speaker = None;
        self.empty_since_ms = None;
    }

    fn tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if self.options.expires_at_ms.is_some_and(|at| now_ms >= at) {
            self.end(EndReason::Expired, None, out);
        } else if self.next_timeout().is_some_and(|at| now_ms >= at) {
            // Not expiry, so the empty timeout.
            self.end(EndReason::Empty, None, out);
        }
    }

    fn offer(&mut self, user: UserId, sdp: String, out: &mut Vec<Output>) -> Result<(), RoomError> {
        let i = self.member(&user)?;
        if !self.participants[i].role.can_publish() {
            return Err(RoomError::ViewerCannotPublish);
        }
        check_sdp(&sdp)?;
        out.push(Output::Media(MediaCommand::AcceptOffer { user, sdp }));
        Ok(())
    }

    fn answer(&mut self, user: UserId, sdp: String, out: &mut Vec<Output>) -> Result<(), RoomError> {
        let i = self.member(&user)?;
        check_sdp(&sdp)?;
        let again = self.participants[i].negotiation.answered()?;
        out.push(Output::Media(MediaCommand::ApplyAnswer { user: user.clone(), sdp }));
        if again {
            out.push(Output::Media(MediaCommand::CreateOffer { user }));
        }
        Ok(())
    }

    fn candidate(
        &mut self,
        user: UserId,
        target: PeerTarget,
        candidate: IceCandidate,
        out: &mut Vec<Output>,
    ) -> Result<(), RoomError> {
        let i = self.member(&user)?;
        if target == PeerTarget::Publisher && !self.participants[i].role.can_publish() {
            return Err(RoomError::ViewerCannotPublish);
        }
        out.push(Output::Media(MediaCommand::AddCandidate { user, target, candidate }));
        Ok(())
    }

    fn publish(
        &mut self,
        user: UserId,
        cid: String,
        kind: TrackKind,
        mut layers: Vec<Layer>,
        muted: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), RoomError> {
        let i = self.member(&user)?;
        let p = &self.participants[i];
        if !p.role.can_publish() {
            return Err(RoomError::ViewerCannotPublish);
        }
        if cid.is_empty() || cid.len() > MAX_CID_BYTES {
            return Err(RoomError::InvalidTrack(format!("cid must be 1-{MAX_CID_BYTES} bytes")));
        }
        if kind == TrackKind::Audio && !layers.is_empty() {
            return Err(RoomError::InvalidTrack("audio has no simulcast layers".into()));
        }
        validate_layers(&layers).map_err(|e| RoomError::InvalidTrack(e.to_string()))?;
        if p.tracks.iter().any(|t| t.cid == cid) {
            return Err(RoomError::TrackAlreadyPublished);
        }
        let max = self.options.max_tracks_per_participant;
        if p.tracks.len() >= max as usize {
            return Err(RoomError::TooManyTracks { max });
        }

        layers.sort_by_key(|l| (l.bitrate_bps, l.width, l.height));
        self.tracks_issued += 1;
        let track = TrackId::new(format!("t{}", self.tracks_issued));
        let rids = layers.iter().map(|l| l.rid.clone()).collect();
        self.participants[i].tracks.push(Track {
            id: track.clone(),
            cid: cid.clone(),
            kind,
            layers: layers.clone(),
            muted,
        });

        out.push(Output::Reply(Reply::Published { track: track.clone(), cid: cid.clone() }));
        out.push(Output::Media(MediaCommand::AddTrack { user: user.clone(), track: track.clone(), cid, kind, layers }));
        if muted {
            out.push(Output::Media(MediaCommand::StopForwarding { track: track.clone() }));
        }
        out.push(Output::Broadcast(RoomEvent::TrackPublished {
            user,
            track: track.clone(),
            kind,
            muted,
            layers: rids,
        }));
        if self.options.auto_subscribe {
            for j in (0..self.participants.len()).filter(|&j| j != i) {
                self.add_subscription(j, &track, Subscription::default(), out);
                self.renegotiate(j, out);
            }
        }
        Ok(())
    }

    fn unpublish(&mut self, user: &UserId, track: &TrackId, out: &mut Vec<Output>) -> Result<(), RoomError> {
        let i = self.member(user)?;
        let t = self.participants[i].track(track).ok_or(RoomError::UnknownTrack)?;
        self.participants[i].tracks.remove(t);
        out.push(Output::Broadcast(RoomEvent::TrackUnpublished { user: user.clone(), track: track.clone() }));
        for j in self.drop_track(track, out) {
            self.renegotiate(j, out);
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        user: &UserId,
        tracks: Vec<TrackId>,
        sub: Subscription,
        out: &mut Vec<Output>,
    ) -> Result<(), RoomError> {
        let i = self.member(user)?;
        for track in &tracks {
            match self.publisher_of(track) {
                None => return Err(RoomError::UnknownTrack),
                Some(j) if j == i => return Err(RoomError::OwnTrack),
                Some(_) => {}
            }
        }
        let mut added = false;
        for track in &tracks {
            added |= self.add_subscription(i, track, sub, out);
        }
        if added {
            self.renegotiate(i, out);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, user: &UserId, tracks: Vec<TrackId>, out: &mut Vec<Output>) -> Result<(), RoomError> {
        let i = self.member(user)?;
        if tracks.iter().any(|t| self.publisher_of(t).is_none()) {
            return Err(RoomError::UnknownTrack);
        }
        let mut removed = false;
        for track in tracks {
            if self.participants[i].subscriptions.remove(&track).is_some() {
                out.push(Output::Media(MediaCommand::Unsubscribe { user: user.clone(), track }));
                removed = true;
            }
        }
        if removed {
            self.renegotiate(i, out);
        }
        Ok(())
    }

    /// Mutes or unmutes track `t` of participant `i`; `forced_by` is `Some` when not its owner
    /// did it (`Some(None)`: the server API). Idempotent.
    fn set_muted(&mut self, i: usize, t: usize, muted: bool, forced_by: Option<Option<UserId>>, out: &mut Vec<Output>) {
        let p = &mut self.participants[i];
        let track = &mut p.tracks[t];
        if track.muted == muted {
            return;
        }
        track.muted = muted;
        let id = track.id.clone();
        let video = track.kind.is_video();
        out.push(Output::Broadcast(RoomEvent::TrackMuted {
            user: p.user.clone(),
            track: id.clone(),
            muted,
            forced: forced_by.is_some(),
            by: forced_by.flatten(),
        }));
        if muted {
            out.push(Output::Media(MediaCommand::StopForwarding { track: id }));
        } else {
            out.push(Output::Media(MediaCommand::ResumeForwarding { track: id.clone() }));
            if video {
                // Subscribers' decoders resume mid-stream: they need a keyframe to show anything.
                out.push(Output::Media(MediaCommand::RequestKeyframe { track: id }));
            }
        }
    }

    fn host_mute(
        &mut self,
        by: Option<UserId>,
        target: &UserId,
        track: Option<TrackId>,
        out: &mut Vec<Output>,
    ) -> Result<(), RoomError> {
        self.authorize(&by)?;
        let i = self.index(target).ok_or(RoomError::UnknownParticipant)?;
        let tracks: Vec<usize> = match &track {
            Some(track) => vec![self.participants[i].track(track).ok_or(RoomError::UnknownTrack)?],
            None => (0..self.participants[i].tracks.len()).collect(),
        };
        // A host muting itself through this path is just muting itself.
        let forced_by = (by.as_ref() != Some(target)).then_some(by);
        for t in tracks {
            self.set_muted(i, t, true, forced_by.clone(), out);
        }
        Ok(())
    }

    fn set_locked(&mut self, by: Option<UserId>, locked: bool, out: &mut Vec<Output>) -> Result<(), RoomError> {
        self.authorize(&by)?;
        if self.locked != locked {
            self.locked = locked;
            out.push(Output::Broadcast(RoomEvent::LockChanged { locked, by }));
        }
        Ok(())
    }

    fn lower_hand(&mut self, user: UserId, target: Option<UserId>, out: &mut Vec<Output>) -> Result<(), RoomError> {
        let me = self.member(&user)?;
        let target = target.unwrap_or_else(|| user.clone());
        let by = (target != user).then_some(user);
        if by.is_some() && !self.participants[me].role.is_host() {
            return Err(RoomError::NotHost);
        }
        let i = self.index(&target).ok_or(RoomError::UnknownParticipant)?;
        if self.participants[i].hand.take().is_some() {
            out.push(Output::Broadcast(RoomEvent::HandLowered { user: target, by }));
        }
        Ok(())
    }
}

fn check_sdp(sdp: &str) -> Result<(), RoomError> {
    if sdp.is_empty() {
        Err(RoomError::InvalidSdp("empty"))
    } else if sdp.len() > MAX_SDP_BYTES {
        Err(RoomError::InvalidSdp("larger than 64 KiB"))
    } else {
        Ok(())
    }
}
