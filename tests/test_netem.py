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


def test_connection_log_says_when_each_connection_opened_and_what_it_carried(echo):
    with Proxy(("127.0.0.1", echo)) as p:
        before = time.time()
        with _connect(p.port) as s:
            s.sendall(b"x" * 5000)
            _recv_exactly(s, 5000)
        (entry,) = p.connection_log
        assert before - 0.5 <= entry["epoch_wall"] <= time.time()
        assert entry["down_bytes"] == 5000  # the echo's bytes, target to client


def _episode(stall_ends_ms, seconds=12.0, latency_ms=80.0, catchup_frames=0, freeze_again=False):
    """frames stepped every 1/60 s, painted `latency_ms` later; each stall holds the frames that reach the path in it
    and releases them at its end, after which the client shows every other one for `catchup_frames` frames."""
    import numpy as np

    n = int(seconds * 60)
    server_ms = np.arange(n) * 1000 / 60
    paint = server_ms + latency_ms
    shown = np.ones(n, dtype=bool)
    for end in stall_ends_ms:
        held = (server_ms + 50 >= end - 250) & (server_ms + 50 < end)  # one way 50 ms
        paint[held] = end + latency_ms
        first = int(np.flatnonzero(server_ms + 50 >= end)[0])
        for i in range(first, first + catchup_frames, 2):
            shown[i] = False
        if freeze_again:
            late = (server_ms >= end + 300) & (server_ms < end + 400)
            paint[late] = end + 400 + latency_ms
    return server_ms, paint, shown


def test_stall_figures_count_frames_outside_the_stalls_and_the_catch_up():
    import numpy as np

    from benchmark.network import stall_figures

    ends = np.array([5000.0, 10000.0])
    server_ms, paint, shown = _episode(ends, catchup_frames=30)
    visible, catchup, again = stall_figures(server_ms, paint, shown, ends, 250.0, 50.0)
    assert visible == 1.0  # every skipped frame was in a catch-up window
    assert 0.0 <= catchup < 0.1  # the held frames are painted at the stall's end; the next one is on time
    assert again == 0
    assert shown.mean() < 1.0
    # a client that skips frames outside the stalls, and freezes again after one
    shown[100:130:2] = False
    server_ms, paint, _ = _episode(ends, freeze_again=True)
    visible, catchup, again = stall_figures(server_ms, paint, shown, ends, 250.0, 50.0)
    assert visible < 0.99
    assert again == 2  # one freeze again after each stall
