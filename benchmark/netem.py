"""A userspace network emulator: an asyncio TCP proxy with per-direction delay and jitter, stalls and bandwidth caps.

Each direction of each connection is a bottleneck link:

- bytes read from the sender are cut into segments (at most `SEGMENT` bytes, a TCP segment's size);
- with a bandwidth cap, a segment leaves the bottleneck after the segments before it, `len / rate` later
  (serialisation), and the bytes waiting there are bounded (`queue_bytes`): past that the proxy stops reading, so
  the sender's own socket buffer fills, as behind a real bottleneck;
- each segment is then delayed by `delay_ms` plus a uniform jitter of +-`jitter_ms`, but never delivered before the
  segment ahead of it (TCP keeps byte order: a late segment holds up the ones behind it, head-of-line);
- a stall (`stall_ms` every `stall_every_s`) holds every segment due within it until it ends.

`Link` is one direction's conditions (changeable while the proxy runs); `Proxy` runs the proxy on its own thread
(tests, scripts/bench_network.py); `python -m benchmark.netem` is its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import socket
import threading
import time
from dataclasses import dataclass, field

SEGMENT = 1448


@dataclass
class Link:
    """One direction's conditions. Fields may be changed while the proxy runs (they apply to new bytes)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    kbps: float | None = None
    queue_bytes: int = 64 * 1024
    stall_every_s: float | None = None
    stall_ms: float = 0.0
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self.rng.seed(self.seed)

    def release_time(self, now: float, link_free: float, last: float, size: int, epoch: float) -> tuple[float, float]:
        """(when this segment is delivered, when the bottleneck is free again), in seconds on the proxy's clock."""
        start = max(now, link_free)
        free = start + (size * 8 / (self.kbps * 1000.0) if self.kbps else 0.0)
        jitter = self.rng.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        t = max(free + max(self.delay_ms + jitter, 0.0) / 1000.0, last)
        if self.stall_every_s and self.stall_ms > 0:
            period, length = self.stall_every_s, self.stall_ms / 1000.0
            phase = (t - epoch) % period
            if phase > period - length:  # stalls are the last `length` of each period
                t += period - phase
        return t, free


def link_from(
    rtt_ms: float, jitter_ms: float, kbps: float | None, stall_every_s: float | None, stall_ms: float
) -> Link:
    """One direction of a path with this round trip (split evenly between the directions)."""
    return Link(delay_ms=rtt_ms / 2.0, jitter_ms=jitter_ms, kbps=kbps, stall_every_s=stall_every_s, stall_ms=stall_ms)


class _Pipe:
    """One direction of one connection."""

    def __init__(self, link: Link, reader, writer, epoch: float, stats: dict, entry: dict | None = None) -> None:
        self.link, self.reader, self.writer, self.epoch, self.stats = link, reader, writer, epoch, stats
        self.entry = entry  # this connection's line of Proxy.connection_log (the down direction counts its bytes)
        self.queue: collections.deque = collections.deque()
        self.queued = 0
        self.link_free = 0.0
        self.last = 0.0
        self.room = asyncio.Event()
        self.room.set()
        self.ready = asyncio.Event()
        self.eof = False

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.room.wait()
                data = await self.reader.read(65536)
                if not data:
                    break
                for i in range(0, len(data), SEGMENT):
                    seg = data[i : i + SEGMENT]
                    t, self.link_free = self.link.release_time(
                        loop.time(), self.link_free, self.last, len(seg), self.epoch
                    )
                    self.last = t
                    self.queue.append((t, seg))
                    self.queued += len(seg)
                self.stats["bytes_in"] += len(data)
                if self.entry is not None:
                    self.entry["down_bytes"] += len(data)
                self.ready.set()
                if self.queued >= self.link.queue_bytes:
                    self.room.clear()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof = True
            self.ready.set()

    async def write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self.queue:
                    if self.eof:
                        break
                    self.ready.clear()
                    await self.ready.wait()
                    continue
                t, seg = self.queue[0]
                wait = t - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                out = []
                while self.queue and self.queue[0][0] <= loop.time():  # everything due goes in one write
                    out.append(self.queue.popleft()[1])
                data = b"".join(out)
                self.writer.write(data)
                await self.writer.drain()
                self.queued -= len(data)
                self.stats["bytes_out"] += len(data)
                if self.queued < self.link.queue_bytes:
                    self.room.set()
            if self.writer.can_write_eof():
                self.writer.write_eof()
        except (ConnectionError, OSError):
            pass


def _nodelay(writer) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Proxy:
    """The proxy on a thread of its own: `up` is client to target, `down` target to client.

    `with Proxy(("127.0.0.1", 5000), down=Link(delay_ms=50)) as p:` listens on `p.port` (127.0.0.1)."""

    def __init__(
        self,
        target: tuple[str, int],
        up: Link | None = None,
        down: Link | None = None,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.target = target
        self.up = up or Link()
        self.down = down or Link()
        self.listen = listen
        self.port = 0
        self.connections = 0
        #: One entry a connection: `epoch_wall` (time.time() when it opened: its stalls end at epoch_wall + k *
        #: stall_every_s) and its own `down_bytes` (target to client), so a benchmark can find which connection
        #: carried a page's frames and when its stalls were.
        self.connection_log: list[dict[str, float]] = []
        self.stats: dict[str, dict[str, int]] = {
            "up": {"bytes_in": 0, "bytes_out": 0},
            "down": {"bytes_in": 0, "bytes_out": 0},
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()

    def set(self, up: Link | None = None, down: Link | None = None) -> None:
        """New conditions for bytes read from now on (open connections included)."""
        if up is not None:
            self.up.__dict__.update({k: v for k, v in up.__dict__.items() if k != "rng"})
        if down is not None:
            self.down.__dict__.update({k: v for k, v in down.__dict__.items() if k != "rng"})

    async def _handle(self, c_reader, c_writer) -> None:
        self.connections += 1
        try:
            t_reader, t_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.close()
            return
        _nodelay(c_writer)
        _nodelay(t_writer)
        epoch = asyncio.get_running_loop().time()
        entry = {"epoch_wall": time.time() - time.monotonic() + epoch, "down_bytes": 0.0}
        self.connection_log.append(entry)
        up = _Pipe(self.up, c_reader, t_writer, epoch, self.stats["up"])
        down = _Pipe(self.down, t_reader, c_writer, epoch, self.stats["down"], entry)
        tasks = [asyncio.ensure_future(x) for x in (up.read(), up.write(), down.read(), down.write())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks[1::2], return_when=asyncio.FIRST_COMPLETED)  # one side's writer finished
        finally:
            for t in tasks:
                t.cancel()
            self._tasks.difference_update(tasks)
            for w in (c_writer, t_writer):
                w.close()

    async def serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, *self.listen)
        self.port = server.sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._started.set()
        async with server:
            await self._stop.wait()
            for t in list(self._tasks):
                t.cancel()

    def start(self) -> Proxy:
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()), name="netem", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the network emulator did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmark.netem",
        description="A TCP proxy that adds delay, jitter (byte order kept), stalls and bandwidth caps per direction.",
    )
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 8000), help="HOST:PORT to listen on")
    p.add_argument("--target", type=_hostport, required=True, help="HOST:PORT to forward to (the server)")
    p.add_argument("--rtt", type=float, default=0.0, help="round trip ms, split evenly between the directions")
    p.add_argument("--jitter", type=float, default=0.0, help="+- ms of uniform jitter on each direction")
    p.add_argument("--up-kbps", type=float, help="client-to-server bandwidth cap (kbit/s)")
    p.add_argument("--down-kbps", type=float, help="server-to-client bandwidth cap (kbit/s)")
    p.add_argument("--queue-kb", type=float, default=64, help="bytes a capped direction holds before it stops reading")
    p.add_argument("--stall-every", type=float, help="a stall every this many seconds (both directions)")
    p.add_argument("--stall-ms", type=float, default=0.0, help="how long each stall lasts")
    a = p.parse_args(argv)
    links = [link_from(a.rtt, a.jitter, kbps, a.stall_every, a.stall_ms) for kbps in (a.up_kbps, a.down_kbps)]
    for link in links:
        link.queue_bytes = int(a.queue_kb * 1024)
    proxy = Proxy(a.target, up=links[0], down=links[1], listen=a.listen)
    print(f"netem: {a.listen[0]}:{a.listen[1]} -> {a.target[0]}:{a.target[1]}  up {links[0]}  down {links[1]}")
    try:
        asyncio.run(proxy.serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
