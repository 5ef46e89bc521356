"""The network emulator (benchmark/netem.py) by itself: delay, byte order under jitter, the bandwidth cap, stalls."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from benchmark.netem import Link, Proxy


@pytest.fixture
def echo():
    """A TCP echo server on loopback; yields its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def pump(c=conn) -> None:
                with c:
                    while data := c.recv(65536):
                        c.sendall(data)

            threading.Thread(target=pump, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(20)
    return s


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = s.recv(n - len(out))
        assert data, "connection closed early"
        out += data
    return out


def test_round_trip_is_delayed(echo):
    with Proxy(("127.0.0.1", echo), up=Link(delay_ms=40), down=Link(delay_ms=40)) as p, _connect(p.port) as s:
        rtts = []
        for _ in range(5):
            t0 = time.monotonic()
            s.sendall(b"ping")
            assert _recv_exactly(s, 4) == b"ping"
            rtts.append((time.monotonic() - t0) * 1000)
    assert min(rtts) >= 79, rtts  # never early; an upper bound would be a speed assertion


def test_jitter_keeps_byte_order(echo):
    payload = bytes(range(256)) * 400  # 100 KB in small writes, each segment jittered independently
    link = Link(delay_ms=20, jitter_ms=15, seed=1)
    with Proxy(("127.0.0.1", echo), up=link, down=Link(delay_ms=20, jitter_ms=15, seed=2)) as p, _connect(p.port) as s:
        for i in range(0, len(payload), 500):
            s.sendall(payload[i : i + 500])
        assert _recv_exactly(s, len(payload)) == payload


def test_bandwidth_cap_is_respected(echo):
    kbps, size = 400.0, 40_000  # 0.8 s at the cap
    with Proxy(("127.0.0.1", echo), up=Link(kbps=kbps, queue_bytes=8192)) as p, _connect(p.port) as s:
        t0 = time.monotonic()
        s.sendall(b"x" * size)
        _recv_exactly(s, size)
        took = time.monotonic() - t0
        assert p.stats["up"]["bytes_out"] == size
    assert took >= size * 8 / (kbps * 1000) * 0.95, took  # never faster than the cap


def test_queue_is_bounded_and_stalls_hold_bytes():
    link = Link(kbps=80, queue_bytes=4096)
    now = 0.0
    free = last = 0.0
    for _ in range(10):  # ten segments back to back: each leaves one serialisation time after the one before
        t, free = link.release_time(now, free, last, 1000, epoch=0.0)
        assert t >= last
        last = t
    assert abs(free - 10 * 1000 * 8 / 80_000) < 1e-9
    stall = Link(stall_every_s=5.0, stall_ms=250)
    t, _ = stall.release_time(4.9, 0.0, 0.0, 100, epoch=0.0)  # due inside the stall (4.75-5 s): held to its end
    assert t == pytest.approx(5.0)
    t, _ = stall.release_time(4.5, 0.0, 0.0, 100, epoch=0.0)
    assert t == pytest.approx(4.5)
