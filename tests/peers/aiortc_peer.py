#!/usr/bin/env python3
"""A meeting participant on aiortc, independent of the hub's own WebRTC stack, for the tests.

It speaks the hub protocol over WebSocket (docs/protocol.md and its meeting ops): connect with a
token, join a room, announce its tracks with `meeting.publish` and offer them on its publisher
connection, answer the server's offers on its subscriber connection, and count the frames it
decodes from every remote track.

Standard output carries one JSON object per line, each with an "event":
  joined {user, role, participants}      after `meeting.join`
  published {track, cid, kind}           a track announced (the server's reply)
  publisher_answer                       the server's answer to our offer was applied
  subscriber_offer {tracks}              a server offer was answered; tracks: its msid stream ids
  state {pc, state}                      connection state changes of either connection
  track {track, kind, user, msid, mid}   a remote track began (track: the room's track id)
  first_frame {track, kind}              its first decoded frame
  frames {track, kind, count}            it reached --frames decoded frames
  done {tracks}                          every expected track reached --frames (see --expect)
  room {name, data}                      a room event (participant_joined, track_muted, ...)
  muted {track, muted}                   the reply to a mute command
  counts {tracks}                        the reply to a counts command
  reached {track, count, tracks}         the reply to a wait command
  error {op, code, message}              a request failed (the peer carries on)
  fatal {reason}                         the peer gives up; it exits with status 1 (2: deadline)
  bye {tracks}                           the peer leaves; it exits with status 0
`tracks` maps room track ids to {kind, user, frames}.

Standard input takes one JSON command per line:
  {"cmd":"quit"}                                   leave and exit 0 (end of input does the same)
  {"cmd":"counts"}
  {"cmd":"wait","track":"t2","frames":N}          answer when that track has decoded N frames
  {"cmd":"wait","kind":"audio","frames":N}        ... the first remote track of that kind
  {"cmd":"mute","kind":"video","muted":true}       meeting.mute on our own track of that kind
  {"cmd":"publish","kind":"video"}                 announce and offer one more track

ICE stays on loopback: aioice's host addresses are replaced by 127.0.0.1 and no STUN server is
configured, so every candidate pair is 127.0.0.1 to the hub's media port.
"""

import argparse
import asyncio
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
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
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


class PatternVideo(VideoStreamTrack):
    """A moving luma ramp, 30 frames a second, so that every frame differs from the last."""

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

    def __init__(self):
        super().__init__()
        # 400 Hz fits 8 whole periods in a frame, so every frame carries the same samples.
        self.pcm = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 400 * i / self.RATE))) for i in range(self.SAMPLES)
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


def prefer(transceiver, kind):
    """VP8 for video (with its retransmission format), Opus for audio."""
    wanted = {"video": ("video/VP8", "video/rtx"), "audio": ("audio/opus",)}[kind]
    codecs = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType in wanted]
    transceiver.setCodecPreferences(codecs)


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
            t: {"kind": r.kind, "user": self.users.get(t), "frames": r.frames} for t, r in sorted(self.remotes.items())
        }

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
                track = ToneAudio() if kind == "audio" else PatternVideo(self.args.width, self.args.height)
                try:
                    reply = await self.hub.request("meeting.publish", room=self.room, cid=track.id, kind=kind)
                except HubError as e:
                    track.stop()
                    emit("error", op=e.op, code=e.code, message=e.message)
                    continue
                self.local[kind] = track
                self.own[kind] = reply["track"]
                emit("published", track=reply["track"], cid=reply.get("cid"), kind=kind)
                prefer(self.publisher.addTransceiver(track, direction="sendonly"), kind)
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
        emit("track", track=room_track, kind=track.kind, user=self.users.get(room_track), msid=remote.msid, mid=mid)
        self.advance()
        self.spawn(self.count(track, remote), f"reading {room_track}")

    async def count(self, track, remote):
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                emit("ended", track=remote.id, kind=remote.kind, frames=remote.frames)
                return
            remote.frames += 1
            self.advance()
            if remote.frames == 1:
                emit("first_frame", track=remote.id, kind=remote.kind)
            if remote.frames == self.args.frames:
                emit("frames", track=remote.id, kind=remote.kind, count=remote.frames)
                self.check_done()

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
                emit("counts", tracks=self.table())
            elif name == "wait":
                self.spawn(self.wait_frames(cmd), "wait")
            elif name == "mute":
                await self.mute(cmd["kind"], bool(cmd.get("muted", True)))
            elif name == "publish":
                self.spawn(self.publish([cmd["kind"]]), f"publishing {cmd['kind']}")
            else:
                raise Fatal(f"unknown command: {line!r}")

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
