#!/usr/bin/env python3
"""A meeting participant on aiortc, independent of the hub's own WebRTC stack, for the tests.

It speaks the hub protocol over WebSocket (docs/protocol.md and its meeting ops): connect with a
token, join a room, announce its tracks with `meeting.publish` and offer them on its publisher
connection, answer the server's offers on its subscriber connection, and count the frames it
decodes from every remote track. Its camera video is VP8, or H.264 with --video-codec h264 (the
publisher connection then offers nothing else). Each video frame it sends carries its index as a
row of black and white blocks, which a receiver reads back from the first frame it decodes.

Standard output carries one JSON object per line, each with an "event":
  joined {user, role, participants}      after `meeting.join`
  published {track, cid, kind}           a track announced (the server's reply)
  publisher_answer                       the server's answer to our offer was applied
  subscriber_offer {tracks}              a server offer was answered; tracks: its msid stream ids
  state {pc, state}                      connection state changes of either connection
  sending {track, kind, codec, fmtp}     one of our tracks sent its first frame, in that codec
  keyframe_request {track, frame}        the hub asked for a keyframe of our video (PLI or FIR);
                                         frame: the index of the last frame sent then
  keyframe {track, frame, requested}     our video sent a keyframe (frame: its index, from 0);
                                         requested: a keyframe request came since the last one
  track {track, kind, user, msid, mid}   a remote track began (track: the room's track id)
  first_frame {track, kind, codecs, index}  its first decoded frame; codecs: those of the RTP
                                         packets received so far (retransmissions aside); index:
                                         the sender's index read from a video frame (null if
                                         unreadable, or for audio)
  frames {track, kind, count}            it reached --frames decoded frames
  done {tracks}                          every expected track reached --frames (see --expect)
  room {name, data}                      a room event (participant_joined, track_muted, ...)
  muted {track, muted}                   the reply to a mute command
  mix {on}                               the reply to a mix command
  tones {track, levels}                  the reply to a tones command; levels: hz -> dBFS (the
                                         amplitude of that sine component, 0 for full scale)
  counts {tracks, sent}                  the reply to a counts command
  reached {track, count, tracks}         the reply to a wait command
  error {op, code, message}              a request failed (the peer carries on)
  fatal {reason}                         the peer gives up; it exits with status 1 (2: deadline)
  bye {tracks}                           the peer leaves; it exits with status 0
`tracks` maps room track ids to {kind, user, frames, codecs}; `sent` maps our own room track ids
to {kind, codec, frames, requests, keyframes: [{frame, requested}]} (keyframes of video only).

Standard input takes one JSON command per line:
  {"cmd":"quit"}                                   leave and exit 0 (end of input does the same)
  {"cmd":"counts"}
  {"cmd":"wait","track":"t2","frames":N}          answer when that track has decoded N frames
  {"cmd":"wait","kind":"audio","frames":N}        ... the first remote track of that kind
  {"cmd":"mute","kind":"video","muted":true}       meeting.mute on our own track of that kind
  {"cmd":"publish","kind":"video"}                 announce and offer one more track
  {"cmd":"mix","on":true}                          meeting.mix: receive the room's audio mix
  {"cmd":"tones","track":"mix","hz":[400,1000],"frames":N}
                                                   answer, once that track has decoded N more
                                                   frames, with the level of each frequency in
                                                   its last second of decoded audio

ICE stays on loopback: aioice's host addresses are replaced by 127.0.0.1 and no STUN server is
configured, so every candidate pair is 127.0.0.1 to the hub's media port.
"""

import argparse
import asyncio
import collections
import fractions
import json
import math
import struct
import sys
import time
import traceback

import aioice.ice
import av
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_PTIME, MediaStreamError
from aiortc.sdp import candidate_from_sdp


def _loopback_addresses(use_ipv4, use_ipv6):
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_addresses


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
    sys.stdout.flush()


class Fatal(Exception):
    """Ends the peer with a fatal event and exit status 1."""


class HubError(Exception):
    def __init__(self, op, code, message):
        super().__init__(f"{op}: {code}: {message}")
        self.op, self.code, self.message = op, code, message


# ---------------------------------------------------------------------------------------------
# Synthetic media


# A video frame's index, drawn in it: one square per bit along the top, most significant first.
STAMP_BITS = 16
STAMP_BLOCK = 16
# The RTP ticks between two frames of a VideoStreamTrack (its pts count them from 0).
FRAME_TICKS = int(VIDEO_PTIME * VIDEO_CLOCK_RATE)


def stamp_row(n):
    return b"".join(bytes([235 if n >> (STAMP_BITS - 1 - i) & 1 else 16]) * STAMP_BLOCK for i in range(STAMP_BITS))


def read_stamp(frame):
    """The index drawn in a decoded frame, or None when a square is neither clearly black nor white."""
    if frame.width < STAMP_BITS * STAMP_BLOCK or frame.height < STAMP_BLOCK:
        return None
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    luma = bytes(plane)
    row = (STAMP_BLOCK // 2) * plane.line_size
    n = 0
    for i in range(STAMP_BITS):
        value = luma[row + i * STAMP_BLOCK + STAMP_BLOCK // 2]
        if 70 < value < 180:
            return None
        n = n << 1 | (value >= 180)
    return n


class PatternVideo(VideoStreamTrack):
    """A moving luma ramp, 30 frames a second, so that every frame differs from the last, with the
    frame's index stamped along the top (when the width holds the stamp)."""

    def __init__(self, width, height):
        super().__init__()
        self.width, self.height = width, height
        self.ramp = bytes(range(256)) * (width // 256 + 3)
        self.chroma = [bytes([96]), bytes([160])]
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for index, plane in enumerate(frame.planes):
            stride = plane.line_size
            rows = plane.buffer_size // stride
            if index == 0:
                data = b"".join(
                    self.ramp[(self.n * 4 + y) % 256 : (self.n * 4 + y) % 256 + stride] for y in range(rows)
                )
                if self.width >= STAMP_BITS * STAMP_BLOCK and rows >= STAMP_BLOCK:
                    data = bytearray(data)
                    stamp = stamp_row(self.n)
                    for y in range(STAMP_BLOCK):
                        data[y * stride : y * stride + len(stamp)] = stamp
            else:
                data = self.chroma[index - 1] * (stride * rows)
            plane.update(data)
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


class ToneAudio(MediaStreamTrack):
    """A 400 Hz sine, 48 kHz mono, in 20 ms frames paced by the clock."""

    kind = "audio"
    RATE = 48000
    SAMPLES = 960

    def __init__(self, hz=400):
        super().__init__()
        # A multiple of 50 Hz fits whole periods in a frame (400 Hz: 8), so every frame carries the
        # same samples.
        self.pcm = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / self.RATE))) for i in range(self.SAMPLES)
        )
        self.start = None
        self.pts = 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.time()
        else:
            self.pts += self.SAMPLES
            await asyncio.sleep(self.start + self.pts / self.RATE - time.time())
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self.pcm)
        frame.sample_rate = self.RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


# ---------------------------------------------------------------------------------------------
# SDP helpers


def tone_level(samples, hz, rate=48000):
    """The amplitude of the `hz` sine component of `samples` (s16), in dB of full scale (Goertzel)."""
    if not samples:
        return None
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    amplitude = 2 * math.sqrt(max(power, 0.0)) / len(samples) / 32768
    return round(20 * math.log10(max(amplitude, 1e-9)), 1)


def mono_samples(frame):
    """The first channel of a decoded audio frame (packed s16, as aiortc's Opus decoder gives)."""
    data = bytes(frame.planes[0])
    samples = struct.unpack(f"<{len(data) // 2}h", data)
    channels = len(frame.layout.channels)
    return samples[::channels]


def sections(sdp):
    """Media sections of an SDP that send, as (mid, msid stream id, msid track id, kind)."""
    found = []
    current = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            current = {"kind": line[2:].split(" ", 1)[0], "mid": None, "msid": None, "sends": True}
            found.append(current)
        elif current is None:
            continue
        elif line.startswith("a=mid:"):
            current["mid"] = line[len("a=mid:") :].strip()
        elif line.startswith("a=msid:"):
            current["msid"] = line[len("a=msid:") :].strip()
        elif line in ("a=sendonly", "a=sendrecv", "a=recvonly", "a=inactive"):
            current["sends"] = line in ("a=sendonly", "a=sendrecv")
    out = []
    for s in found:
        if s["sends"]:
            stream, _, track = (s["msid"] or "").partition(" ")
            out.append((s["mid"], stream or None, track or None, s["kind"]))
    return out


def rtpmaps(sdp):
    """Each media section's payload types and their mime types, by mid."""
    maps = {}
    current = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
            current = {}
        elif current is None:
            continue
        elif line.startswith("a=mid:"):
            maps[line[len("a=mid:") :].strip()] = current
        elif line.startswith("a=rtpmap:"):
            pt, _, name = line[len("a=rtpmap:") :].partition(" ")
            current[int(pt)] = f"{kind}/{name.split('/', 1)[0]}"
    return maps


def prefer(transceiver, kind, video_codec):
    """For video `video_codec` alone (vp8 or h264: each H.264 profile aiortc has) with its
    retransmission format; Opus for audio."""
    wanted = {"video": (f"video/{video_codec}", "video/rtx"), "audio": ("audio/opus",)}[kind]
    codecs = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() in wanted]
    transceiver.setCodecPreferences(codecs)


def h264_nal_types(payload):
    """The NAL unit types an H.264 RTP payload carries (RFC 6184: single unit, STAP-A, FU-A start)."""
    if not payload:
        return []
    nal = payload[0] & 0x1F
    if nal == 24:
        types, at = [], 1
        while at + 2 < len(payload):
            types.append(payload[at + 2] & 0x1F)
            at += 2 + int.from_bytes(payload[at : at + 2], "big")
        return types
    if nal == 28:
        return [payload[1] & 0x1F] if len(payload) > 1 and payload[1] & 0x80 else []
    return [nal]


def is_keyframe(mime_type, payloads):
    """Whether an encoded frame's RTP payloads hold an H.264 IDR slice or a VP8 key frame."""
    mime = mime_type.lower()
    if mime == "video/h264":
        return any(5 in h264_nal_types(p) for p in payloads)
    if mime == "video/vp8" and payloads:
        # The frame tag's first bit (RFC 6386 section 9.1) is 0 in a key frame.
        descriptor, rest = VpxPayloadDescriptor.parse(payloads[0])
        return descriptor.partition_start == 1 and descriptor.partition_id == 0 and bool(rest) and rest[0] & 1 == 0
    return False


# ---------------------------------------------------------------------------------------------
# What aiortc does not report


def watch_rtp(on_sent, on_keyframe_request, on_received):
    """Wraps three internal methods of aiortc 1.x, to observe its RTP without changing it: the
    encoded frames a sender sends (on_sent(sender, codec, frame)), the keyframe requests (PLI or
    FIR) it is given (on_keyframe_request(sender)), and the payload type of each RTP packet a
    receiver is given (on_received(receiver, payload_type))."""
    next_encoded_frame = RTCRtpSender._next_encoded_frame
    send_keyframe = RTCRtpSender._send_keyframe
    handle_rtp_packet = RTCRtpReceiver._handle_rtp_packet

    async def _next_encoded_frame(self, codec):
        encoded = await next_encoded_frame(self, codec)
        if encoded is not None:
            on_sent(self, codec, encoded)
        return encoded

    def _send_keyframe(self):
        on_keyframe_request(self)
        send_keyframe(self)

    async def _handle_rtp_packet(self, packet, arrival_time_ms):
        on_received(self, packet.payload_type)
        await handle_rtp_packet(self, packet, arrival_time_ms)

    RTCRtpSender._next_encoded_frame = _next_encoded_frame
    RTCRtpSender._send_keyframe = _send_keyframe
    RTCRtpReceiver._handle_rtp_packet = _handle_rtp_packet


# ---------------------------------------------------------------------------------------------
# The hub connection


class Hub:
    def __init__(self, ws, on_push):
        self.ws = ws
        self.on_push = on_push
        self.next_id = 1
        self.pending = {}
        self.closing = False  # set before we close the socket ourselves

    async def read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg.get("type") in ("reply", "error"):
                    waiter = self.pending.pop(msg.get("id"), None)
                    if waiter is None:
                        raise Fatal(f"answer to no request: {msg}")
                    waiter.set_result(msg)
                else:
                    self.on_push(msg)
        except websockets.ConnectionClosed as e:
            if not self.closing:
                raise Fatal(f"the hub closed the socket: {e}") from None
        if not self.closing:
            raise Fatal("the hub closed the socket")

    async def request(self, op, **fields):
        rid = self.next_id
        self.next_id += 1
        waiter = asyncio.get_running_loop().create_future()
        self.pending[rid] = waiter
        await self.ws.send(json.dumps({"id": rid, "op": op, **fields}))
        msg = await waiter
        if msg["type"] == "error":
            raise HubError(op, msg.get("code"), msg.get("message"))
        return msg.get("data") or {}


# ---------------------------------------------------------------------------------------------
# The participant


class Remote:
    def __init__(self, track_id, kind, msid, mid):
        self.id, self.kind, self.msid, self.mid = track_id, kind, msid, mid
        self.frames = 0
        self.payload_types = set()  # of the RTP packets received
        self.recent = collections.deque(maxlen=50)  # audio: the last second of decoded samples


class Sent:
    """One of our tracks as its sender sends it."""

    def __init__(self, kind):
        self.kind = kind
        self.codec = None
        self.frames = 0
        self.last = None  # the index of the last frame sent
        self.requests = 0
        self.asked = False  # a keyframe request came since the last keyframe
        self.keyframes = []


class Peer:
    def __init__(self, args):
        self.args = args
        self.room = args.room
        self.hub = None
        self.users = {}  # room track id -> user, from the join snapshot and track_published
        self.remotes = {}  # room track id -> Remote
        self.own = {}  # kind -> room track id
        self.local = {}  # kind -> MediaStreamTrack
        self.mids = {}  # subscriber mid -> (stream id, track id)
        self.rtpmaps = {}  # subscriber mid -> {payload type: mime type}, from our answers
        self.receivers = {}  # RTCRtpReceiver -> Remote
        self.sent = {}  # RTCRtpSender -> Sent
        self.pushes = asyncio.Queue()
        self.tasks = set()
        self.failure = asyncio.get_running_loop().create_future()
        self.expect = {}
        for item in filter(None, (args.expect or "").split(",")):
            kind, _, n = item.partition(":")
            self.expect[kind] = int(n or 1)
        self.done_sent = False
        self.offering = asyncio.Lock()
        self.answered = None  # a future while an offer of ours waits for its answer
        self.quit = asyncio.get_running_loop().create_future()
        # Replaced by a fresh event each time a remote track appears or decodes a frame.
        self.progress = asyncio.Event()
        config = RTCConfiguration(iceServers=[])
        self.publisher = RTCPeerConnection(config)
        self.subscriber = RTCPeerConnection(config)
        for name, pc in (("publisher", self.publisher), ("subscriber", self.subscriber)):
            self.watch_state(name, pc)
        self.subscriber.on("track", self.on_track)
        watch_rtp(self.on_sent, self.on_keyframe_request, self.on_received)

    def fail(self, reason):
        if not self.failure.done():
            self.failure.set_result(reason)

    def spawn(self, coro, what):
        async def guarded():
            try:
                await coro
            except HubError as e:
                self.fail(f"{what}: {e}")
            except Fatal as e:
                self.fail(f"{what}: {e}")
            except Exception:
                self.fail(f"{what}: {traceback.format_exc()}")

        # The loop keeps tasks only weakly (and the stdin reader only weakly refers to its own).
        task = asyncio.ensure_future(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def watch_state(self, name, pc):
        @pc.on("connectionstatechange")
        def changed():
            emit("state", pc=name, state=pc.connectionState)
            if pc.connectionState == "failed":
                self.fail(f"{name} connection failed")

    def table(self):
        return {
            t: {"kind": r.kind, "user": self.users.get(t), "frames": r.frames, "codecs": self.codecs(r)}
            for t, r in sorted(self.remotes.items())
        }

    def sent_table(self):
        return {
            self.own.get(s.kind): {
                "kind": s.kind,
                "codec": s.codec,
                "frames": s.frames,
                "requests": s.requests,
                "keyframes": s.keyframes,
            }
            for s in self.sent.values()
        }

    def codecs(self, remote):
        """The mime types of what a remote track's packets carried, retransmissions aside."""
        names = self.rtpmaps.get(remote.mid, {})
        found = {names.get(pt, f"payload type {pt}") for pt in remote.payload_types}
        return sorted(c for c in found if not c.lower().endswith("/rtx"))

    # -- signalling ----------------------------------------------------------------------------

    def on_push(self, msg):
        self.pushes.put_nowait(msg)

    async def handle_pushes(self):
        """One at a time, in arrival order: both connections see their descriptions in order."""
        while True:
            msg = await self.pushes.get()
            event, data = msg.get("event"), msg.get("data") or {}
            if msg.get("type") != "push":
                continue
            if event in ("offer", "answer", "candidate", "error") and "room" in data:
                if data["room"] != self.room:
                    continue
                if event == "answer":
                    if self.answered is None or self.answered.done():
                        raise Fatal("an answer from the hub to no offer of ours")
                    await self.publisher.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
                    self.answered.set_result(None)
                    emit("publisher_answer")
                elif event == "offer":
                    await self.answer_offer(data["sdp"])
                elif event == "candidate":
                    await self.add_candidate(data)
                else:
                    raise Fatal(f"media error from the hub: {data.get('code')}: {data.get('message')}")
            elif msg.get("channel") == f"room:{self.room}":
                if event == "track_published":
                    self.users[data["track"]] = data["user"]
                emit("room", name=event, data=data)

    async def answer_offer(self, sdp):
        for mid, stream, track, _kind in sections(sdp):
            self.mids[mid] = (stream, track)
        await self.subscriber.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await self.subscriber.setLocalDescription(await self.subscriber.createAnswer())
        self.rtpmaps.update(rtpmaps(self.subscriber.localDescription.sdp))
        await self.hub.request("meeting.answer", room=self.room, sdp=self.subscriber.localDescription.sdp)
        emit("subscriber_offer", tracks=[s for _m, s, _t, _k in sections(sdp) if s])

    async def add_candidate(self, data):
        pc = self.publisher if data["target"] == "publisher" else self.subscriber
        c = data["candidate"]
        line = c["candidate"]
        if not line:
            return
        candidate = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
        candidate.sdpMid = c.get("sdp_mid")
        candidate.sdpMLineIndex = c.get("sdp_mline_index")
        await pc.addIceCandidate(candidate)

    async def publish(self, kinds):
        """Announces each track, then offers them all at once and waits for the answer."""
        async with self.offering:
            added = []
            for kind in kinds:
                if kind in self.local:
                    raise Fatal(f"already publishing {kind}")
                track = ToneAudio(self.args.tone) if kind == "audio" else PatternVideo(self.args.width, self.args.height)
                try:
                    reply = await self.hub.request("meeting.publish", room=self.room, cid=track.id, kind=kind)
                except HubError as e:
                    track.stop()
                    emit("error", op=e.op, code=e.code, message=e.message)
                    continue
                self.local[kind] = track
                self.own[kind] = reply["track"]
                emit("published", track=reply["track"], cid=reply.get("cid"), kind=kind)
                prefer(self.publisher.addTransceiver(track, direction="sendonly"), kind, self.args.video_codec)
                added.append(kind)
            if added:
                await self.offer()

    async def offer(self):
        """One offer at a time: the next waits until the hub's answer to this one is applied."""
        await self.publisher.setLocalDescription(await self.publisher.createOffer())
        sdp = self.publisher.localDescription.sdp
        # The hub matches what arrives to the announcement by the msid's track id.
        announced = {track for _m, _s, track, _k in sections(sdp)}
        for kind, track in self.local.items():
            if track.id not in announced:
                raise Fatal(f"the {kind} track {track.id} is not in our offer's msid lines")
        self.answered = asyncio.get_running_loop().create_future()
        await self.hub.request("meeting.offer", room=self.room, sdp=sdp)
        await self.answered

    # -- receiving -----------------------------------------------------------------------------

    def on_track(self, track):
        mid = next((t.mid for t in self.subscriber.getTransceivers() if t.receiver.track is track), None)
        stream, msid_track = self.mids.get(mid, (None, None))
        room_track = stream or track.id
        remote = Remote(room_track, track.kind, f"{stream} {msid_track}", mid)
        self.remotes[room_track] = remote
        receiver = next((t.receiver for t in self.subscriber.getTransceivers() if t.receiver.track is track), None)
        if receiver is not None:
            self.receivers[receiver] = remote
        emit("track", track=room_track, kind=track.kind, user=self.users.get(room_track), msid=remote.msid, mid=mid)
        self.advance()
        self.spawn(self.count(track, remote), f"reading {room_track}")

    async def count(self, track, remote):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                emit("ended", track=remote.id, kind=remote.kind, frames=remote.frames)
                return
            remote.frames += 1
            if remote.kind == "audio":
                remote.recent.append(mono_samples(frame))
            self.advance()
            if remote.frames == 1:
                index = read_stamp(frame) if remote.kind == "video" else None
                emit("first_frame", track=remote.id, kind=remote.kind, codecs=self.codecs(remote), index=index)
            if remote.frames == self.args.frames:
                emit("frames", track=remote.id, kind=remote.kind, count=remote.frames)
                self.check_done()

    def on_received(self, receiver, payload_type):
        remote = self.receivers.get(receiver)
        if remote is not None:
            remote.payload_types.add(payload_type)

    def sending(self, sender):
        if sender not in self.sent:
            self.sent[sender] = Sent(sender.kind)
        return self.sent[sender]

    def on_sent(self, sender, codec, encoded):
        s = self.sending(sender)
        if s.codec is None:
            s.codec = codec.mimeType
            fmtp = ";".join(f"{k}={v}" for k, v in sorted(codec.parameters.items()))
            emit("sending", track=self.own.get(s.kind), kind=s.kind, codec=s.codec, fmtp=fmtp)
        s.frames += 1
        if s.kind != "video":
            return
        # Rounded: aiortc's VP8 encoder truncates some timestamps by a tick.
        s.last = round(encoded.timestamp / FRAME_TICKS)
        if is_keyframe(s.codec, encoded.payloads):
            s.keyframes.append({"frame": s.last, "requested": s.asked})
            emit("keyframe", track=self.own.get(s.kind), frame=s.last, requested=s.asked)
            s.asked = False

    def on_keyframe_request(self, sender):
        s = self.sending(sender)
        s.requests += 1
        s.asked = True
        emit("keyframe_request", track=self.own.get(s.kind), frame=s.last)

    def advance(self):
        self.progress.set()
        self.progress = asyncio.Event()

    def stop(self):
        if not self.quit.done():
            self.quit.set_result(None)

    def check_done(self):
        if self.done_sent or not self.expect:
            return
        for kind, n in self.expect.items():
            full = [r for r in self.remotes.values() if r.kind == kind and r.frames >= self.args.frames]
            if len(full) < n:
                return
        self.done_sent = True
        emit("done", tracks=self.table())
        if self.args.exit_when_done:
            self.stop()

    async def wait_frames(self, cmd):
        if "track" in cmd:
            pick = lambda: self.remotes.get(cmd["track"])  # noqa: E731
        else:
            pick = lambda: next((r for r in self.remotes.values() if r.kind == cmd["kind"]), None)  # noqa: E731
        while True:
            remote = pick()
            if remote is not None and remote.frames >= cmd["frames"]:
                emit("reached", track=remote.id, count=remote.frames, tracks=self.table())
                return
            await self.progress.wait()

    # -- commands ------------------------------------------------------------------------------

    async def commands(self):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                self.stop()
                return
            if not line.strip():
                continue
            cmd = json.loads(line)
            name = cmd.get("cmd")
            if name == "quit":
                self.stop()
                return
            elif name == "counts":
                emit("counts", tracks=self.table(), sent=self.sent_table())
            elif name == "wait":
                self.spawn(self.wait_frames(cmd), "wait")
            elif name == "mute":
                await self.mute(cmd["kind"], bool(cmd.get("muted", True)))
            elif name == "publish":
                self.spawn(self.publish([cmd["kind"]]), f"publishing {cmd['kind']}")
            elif name == "mix":
                self.spawn(self.mix(bool(cmd.get("on", True))), "mix")
            elif name == "tones":
                self.spawn(self.tones(cmd), "tones")
            else:
                raise Fatal(f"unknown command: {line!r}")

    async def mix(self, on):
        try:
            await self.hub.request("meeting.mix", room=self.room, on=on)
        except HubError as e:
            emit("error", op=e.op, code=e.code, message=e.message)
            return
        emit("mix", on=on)

    async def tones(self, cmd):
        """Waits for the track and `frames` more decoded frames, then measures the last second."""
        while cmd["track"] not in self.remotes:
            await self.progress.wait()
        remote = self.remotes[cmd["track"]]
        until = remote.frames + cmd["frames"]
        while remote.frames < until:
            await self.progress.wait()
        samples = [x for chunk in remote.recent for x in chunk]
        emit("tones", track=remote.id, levels={str(hz): tone_level(samples, hz) for hz in cmd["hz"]})

    async def mute(self, kind, muted):
        track = self.own.get(kind)
        if track is None:
            raise Fatal(f"no own {kind} track to mute")
        try:
            await self.hub.request("meeting.mute", room=self.room, track=track, muted=muted)
        except HubError as e:
            emit("error", op=e.op, code=e.code, message=e.message)
            return
        emit("muted", track=track, muted=muted)

    # -- the whole run -------------------------------------------------------------------------

    async def run(self):
        """Until a quit (exit 0) or the first failure of any task (Fatal)."""
        body = asyncio.ensure_future(self.body())
        await asyncio.wait([body, self.failure], return_when=asyncio.FIRST_COMPLETED)
        if self.failure.done():
            body.cancel()
            raise Fatal(self.failure.result())
        body.result()

    async def body(self):
        args = self.args
        async with websockets.connect(args.ws, subprotocols=["hub.json"], max_size=None) as ws:
            self.hub = Hub(ws, self.on_push)
            self.spawn(self.hub.read(), "hub socket")
            self.spawn(self.handle_pushes(), "signalling")
            me = await self.hub.request("connect", token=args.token)
            joined = await self.hub.request("meeting.join", room=self.room)
            for p in joined["room"]["participants"]:
                for t in p.get("tracks") or []:
                    self.users[t["id"]] = p["user"]
            emit(
                "joined",
                user=me.get("user"),
                role=joined.get("role"),
                participants=[p["user"] for p in joined["room"]["participants"]],
            )
            await self.publish(list(filter(None, args.publish.split(","))))
            self.spawn(self.commands(), "commands")
            await self.quit
            try:
                await asyncio.wait_for(self.hub.request("meeting.leave", room=self.room), 5)
            except HubError as e:
                emit("error", op=e.op, code=e.code, message=e.message)
            emit("bye", tracks=self.table())
            self.hub.closing = True

    async def close(self):
        for track in self.local.values():
            track.stop()
        await self.publisher.close()
        await self.subscriber.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ws", required=True, help="the hub's WebSocket URL, ws://HOST:PORT/ws")
    parser.add_argument("--token", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--publish", default="", help="kinds to publish at start: audio,video")
    parser.add_argument("--expect", default="", help="remote tracks to wait for, by kind: video:1,audio:1")
    parser.add_argument("--frames", type=int, default=30, help="decoded frames each expected track must reach")
    parser.add_argument("--exit-when-done", action="store_true", help="leave once the expectation is met")
    parser.add_argument("--deadline", type=float, default=60, help="seconds before the peer gives up (exit 2)")
    parser.add_argument("--video-codec", choices=["vp8", "h264"], default="vp8", help="what our camera video is sent in")
    parser.add_argument("--tone", type=int, default=400, help="our microphone's tone, Hz (a multiple of 50)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()

    peer = Peer(args)
    status = 0
    try:
        await asyncio.wait_for(peer.run(), args.deadline)
    except asyncio.TimeoutError:
        emit("fatal", reason=f"deadline of {args.deadline}s passed", tracks=peer.table())
        status = 2
    except (Fatal, HubError) as e:
        emit("fatal", reason=str(e), tracks=peer.table())
        status = 1
    except Exception:
        emit("fatal", reason=traceback.format_exc(), tracks=peer.table())
        status = 1
    try:
        await asyncio.wait_for(peer.close(), 5)
    except Exception:
        emit("fatal", reason="closing: " + traceback.format_exc())
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
