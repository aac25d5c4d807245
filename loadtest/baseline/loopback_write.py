#!/usr/bin/env python3
"""Machine floor for a fan-out write (docs/benchmarks.md): what one small write() to one of many
loopback TCP sockets costs the *sending* process, when the reader is another process in epoll.

One process accepts SOCKETS connections and writes a FRAME-byte frame to each in turn at RATE
writes/s for SECONDS; a child process reads them with epoll. Prints the sender's CPU per write.
With `udp`, the child binds SOCKETS UDP sockets instead and the sender sends one DATAGRAM-byte
datagram (an SFU's video packet) to each in turn from one socket: the floor of a forwarded RTP
packet's send, before any SRTP. Bounded: fixed duration, the reader stops by itself. Loopback only.

    python3 loadtest/baseline/loopback_write.py [RATE] [SOCKETS] [tcp|udp]
"""
import os
import resource
import selectors
import socket
import sys
import time

RATE = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
SOCKETS = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
SECONDS = 5
FRAME = b"x" * 120
DATAGRAM = b"v" * 1100
UDP = len(sys.argv) > 3 and sys.argv[3] == "udp"


def drain(sel):
    """The reading child: reads whatever arrives until the run is over, then exits."""
    end = time.time() + SECONDS + 3
    while time.time() < end:
        for key, _ in sel.select(0.5):
            try:
                key.fileobj.recv(65536)
            except BlockingIOError:
                pass
    os._exit(0)


def udp_floor():
    """The `udp` mode: the child reports its sockets' ports on a pipe, then reads until done."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        sel = selectors.EpollSelector()
        ports = []
        for _ in range(SOCKETS):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", 0))
            u.setblocking(False)
            sel.register(u, selectors.EVENT_READ)
            ports.append(u.getsockname()[1])
        os.write(write_end, (",".join(map(str, ports)) + "\n").encode())
        drain(sel)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        targets = [("127.0.0.1", int(p)) for p in pipe.readline().strip().split(",")]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return child, lambda i: sender.sendto(DATAGRAM, targets[i % SOCKETS])



def tcp_floor():
    """The default mode: the child connects SOCKETS times and reads with epoll."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    addr = listener.getsockname()
    child = os.fork()
    if child == 0:
        listener.close()
        sel = selectors.EpollSelector()
        for _ in range(SOCKETS):
            c = socket.create_connection(addr)
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
        drain(sel)
    conns = []
    for _ in range(SOCKETS):
        s, _ = listener.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(s)
    return child, lambda i: conns[i % SOCKETS].send(FRAME)


pid, send = udp_floor() if UDP else tcp_floor()
time.sleep(0.5)
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
sent = 0
while time.perf_counter() - t0 < SECONDS:
    due = int((time.perf_counter() - t0) * RATE)
    while sent < due:
        send(sent)
        sent += 1
    time.sleep(0.001)
r1 = resource.getrusage(resource.RUSAGE_SELF)
user = r1.ru_utime - r0.ru_utime
system = r1.ru_stime - r0.ru_stime
print(f"{SOCKETS} {'udp' if UDP else 'tcp'} sockets, {RATE} writes/s: {sent} writes, sender CPU {(user + system) / sent * 1e6:.1f} µs "
      f"per write (kernel {system / sent * 1e6:.1f} µs)")
os.waitpid(pid, 0)
