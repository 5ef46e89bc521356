"""A light load generator: many simulated demonstrators in one asyncio process.

    python scripts/loadgen.py --url http://127.0.0.1:5000 --sessions 32 --duration 20 [--cpu 1]   # its command line

Each session speaks Engine.IO 4 / Socket.IO 5 over a small hand-written WebSocket client (an asyncio Protocol; no
client library), so one frame costs the generator a few microseconds and one core drives hundreds of sessions.
A session plays as the browser client does (client/app.js, client/mic.js): `start`, then keys held and released at
a person's pace (about four key events a second), a 100 ms microphone chunk of 48 kHz PCM16 every 100 ms, the paint
acks of every frame received batched every 100 ms, and an `rtt` ping with an acknowledgement every second. Frames
are not decoded (the server's work is what is measured); their arrival times are kept per episode, so the frame
interval, the achieved frame rate and, with the server's events.csv, the key-to-frame latency can be computed.

`run_step` is the benchmark's unit (benchmark.run): connect N sessions, warm up, restart every episode (so the
measured trajectories start after every ROM was loaded), measure for a window, stop, and return what each session
saw. All times are `time.monotonic()` in milliseconds, the clock the server also uses on this machine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import time
from array import array
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

KEYS = ("UP", "DOWN", "LEFT", "RIGHT", "FIRE")
AUDIO_RATE = 48000
SEND_INTERVAL_S = 0.1  # client/game-worker.js ACK_INTERVAL_MS; client/mic.js sends 100 ms microphone chunks
FRAME_EVENT = b'["frame",'


def now_ms() -> float:
    return time.monotonic() * 1000.0


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client-to-server WebSocket frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if n:
        key = (mask * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    return head + mask + payload


def _fill_placeholders(obj, attachments: list[bytes]):
    if isinstance(obj, dict):
        if obj.get("_placeholder") is True and isinstance(obj.get("num"), int):
            return attachments[obj["num"]]
        return {k: _fill_placeholders(v, attachments) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill_placeholders(v, attachments) for v in obj]
    return obj


@dataclass
class Episode:
    """What one session saw of one trajectory: the arrival time (ms) of every frame, NaN if never seen."""

    traj_id: str
    codec: str
    started_ms: float
    arrivals: array = field(default_factory=lambda: array("d"))
    end: dict | None = None


class Session(asyncio.Protocol):
    """One simulated demonstrator on one WebSocket connection."""

    def __init__(
        self,
        index: int,
        url: str,
        participant: str,
        game: str | None = None,
        seed: int = 0,
        keys_per_s: float = 4.0,
        audio: bool = True,
        interval_s: float = SEND_INTERVAL_S,
    ) -> None:
        parts = urlsplit(url)
        self.index = index
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.path = (parts.path.rstrip("/") or "") + "/socket.io/?EIO=4&transport=websocket"
        self.participant = participant
        self.game = game
        self.rng = random.Random(seed)
        self.keys_per_s = keys_per_s
        self.audio_on = audio
        self.interval_s = interval_s
        self.chunk = round(AUDIO_RATE * interval_s)
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._frag: bytearray | None = None
        self._frag_op = 0
        self._upgraded = False
        self._pending: list | None = None  # [event data, attachments wanted, attachments]
        self._frame_next = False
        loop = asyncio.get_running_loop()
        self.connected = loop.create_future()
        self.closed = loop.create_future()
        self._episode_waiters: list[asyncio.Future] = []
        self._end_waiters: list[asyncio.Future] = []
        self.episodes: list[Episode] = []
        self.errors: list[dict] = []
        self.seq = 0
        self.audio_seq = 0
        self.audio_first = 0
        self.audio_t0 = now_ms()
        self._acks: list[list] = []
        self.held: set[str] = set()
        # counters (the benchmark reads them at the window's edges)
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.frames = 0
        self.frame_bytes = 0
        self.keys_sent = 0
        self._tasks: list[asyncio.Task] = []
        self.playing = False
        self.autostart = True
        self._restart: asyncio.TimerHandle | None = None
        self._starting: asyncio.Future | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: {self.origin}\r\nUser-Agent: scripts/loadgen.py\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc) -> None:
        self.transport = None
        for fut in (self.connected, *self._episode_waiters, *self._end_waiters):
            if not fut.done():
                fut.set_exception(ConnectionError(f"session {self.index}: connection closed ({exc})"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        t = now_ms()
        self.rx_bytes += len(data)
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                self._fail(f"WebSocket upgrade refused: {status.decode(errors='replace')}")
                return
            del buf[: end + 4]
            self._upgraded = True
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, ln = buf[pos], buf[pos + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln, hdr = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if n - pos < hdr + ln:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + ln])
            pos += hdr + ln
            op = b0 & 0x0F
            if op == 0:  # continuation
                if self._frag is None:
                    continue
                self._frag += payload
                if b0 & 0x80:
                    payload, op, self._frag = bytes(self._frag), self._frag_op, None
                else:
                    continue
            elif not b0 & 0x80 and op in (1, 2):
                self._frag, self._frag_op = bytearray(payload), op
                continue
            if op == 2:
                self._on_binary(payload, t)
            elif op == 1:
                self._on_text(payload)
            elif op == 9:
                self._send(10, payload)
            elif op == 8:
                if self.transport is not None:
                    self.transport.close()
                break
        del buf[:pos]

    # --- Engine.IO / Socket.IO ---------------------------------------------------------------------
    def _on_binary(self, payload: bytes, t: float) -> None:
        if self._frame_next:
            self._frame_next = False
            frame = int.from_bytes(payload[:4], "little")
            self.frames += 1
            self.frame_bytes += len(payload)
            if self.episodes:
                a = self.episodes[-1].arrivals
                if frame == len(a):
                    a.append(t)
                elif frame > len(a):
                    a.extend([float("nan")] * (frame - len(a)))
                    a.append(t)
            self._acks.append([frame, round(t, 3)])
            return
        if self._pending is not None:
            self._pending[2].append(payload)
            if len(self._pending[2]) == self._pending[1]:
                data, _, att = self._pending
                self._pending = None
                self._dispatch(_fill_placeholders(data, att))

    def _on_text(self, payload: bytes) -> None:
        kind = payload[:1]
        if kind == b"4":
            p = payload[1:2]
            if p == b"5":  # binary event: "5<n>-<json>"
                dash = payload.index(b"-")
                body = payload[dash + 1 :]
                if body.startswith(FRAME_EVENT):
                    self._frame_next = True
                    return
                self._pending = [json.loads(body), int(payload[2:dash]), []]
            elif p == b"2":
                body = payload[2:]
                i = 0
                while body[i : i + 1].isdigit():
                    i += 1
                self._dispatch(json.loads(body[i:]))
            elif p == b"0":
                if not self.connected.done():
                    self.connected.set_result(None)
            elif p == b"4":
                self._fail(f"Socket.IO connection refused: {payload[2:].decode(errors='replace')}")
            elif p == b"1":
                self._fail("disconnected by the server")
        elif kind == b"2":
            self._send(1, b"3")  # pong
        elif kind == b"0":
            self._send(1, b"40")  # Engine.IO open -> Socket.IO connect to the default namespace
        elif kind == b"1":
            self._fail("Engine.IO close")

    def _dispatch(self, msg: list) -> None:
        event = msg[0]
        data: Any = msg[1] if len(msg) > 1 else None
        if event == "episode":
            self.episodes.append(Episode(data["traj_id"], data.get("codec", ""), now_ms()))
            self.playing = True
            self._wake(self._episode_waiters, data)
        elif event == "episode_end":
            self.playing = False
            if self.episodes and data.get("traj_id") == self.episodes[-1].traj_id:
                self.episodes[-1].end = data
            if not self._end_waiters and self.autostart:  # game over: the demonstrator presses Start again
                self._restart = asyncio.get_running_loop().call_later(0.5, self._send_start)
            self._wake(self._end_waiters, data)
        elif event == "error":
            self.errors.append(data)
            if data.get("event") == "start":
                for fut in self._episode_waiters:
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"start refused: {data}"))
                self._episode_waiters.clear()

    @staticmethod
    def _wake(waiters: list, value) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(value)
        waiters.clear()

    def _fail(self, reason: str) -> None:
        self.errors.append({"code": "transport", "message": reason})
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            data = ws_frame(opcode, payload)
            self.tx_bytes += len(data)
            self.transport.write(data)

    def emit(self, event: str, data=None, ack_id: int | None = None) -> None:
        args = [event] if data is None else [event, data]
        self._send(
            1,
            b"42"
            + (str(ack_id).encode() if ack_id is not None else b"")
            + json.dumps(args, separators=(",", ":")).encode(),
        )

    def emit_binary(self, event: str, data: dict, key: str, blob: bytes) -> None:
        """An event with one binary attachment at data[key] (Socket.IO BINARY_EVENT: never base64)."""
        body = json.dumps([event, {**data, key: {"_placeholder": True, "num": 0}}], separators=(",", ":"))
        self._send(1, b"451-" + body.encode())
        self._send(2, blob)

    # --- playing --------------------------------------------------------------------------------------
    async def connect(self, source: str | None = None, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, self.host, self.port, local_addr=(source, 0) if source else None)
        await asyncio.wait_for(asyncio.shield(self.connected), timeout)

    def _send_start(self) -> asyncio.Future:
        self._restart = None
        fut = asyncio.get_running_loop().create_future()
        self._episode_waiters.append(fut)
        payload: dict = {
            "participant": self.participant,
            "client": {
                "user_agent": "scripts/loadgen.py",
                "audio": {
                    "sample_rate": AUDIO_RATE,
                    "channel_count": 1,
                    "echo_cancellation": False,
                    "device_label": "synthetic",
                },
            },
        }
        if self.game:
            payload["game"] = self.game
        self.emit("start", payload)
        self._starting = fut
        return fut

    async def start(self, timeout: float = 30.0) -> dict:
        return await asyncio.wait_for(self._send_start(), timeout)

    async def stop(self, timeout: float = 30.0) -> dict | None:
        """End the running episode and wait for its files to close; None if no episode was running."""
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if self._starting is not None and not self._starting.done():
            await asyncio.wait_for(asyncio.shield(self._starting), timeout)
        if not self.playing:
            return None
        fut = asyncio.get_running_loop().create_future()
        self._end_waiters.append(fut)
        self.release_keys()
        self._flush_acks()
        self.emit("stop")
        return await asyncio.wait_for(fut, timeout)

    def begin_play(self, pcm: np.ndarray) -> None:
        """Keys, microphone and paint acks, as the browser sends them, until `close`."""
        self._tasks = [asyncio.ensure_future(self._pump(pcm)), asyncio.ensure_future(self._press_keys())]

    def key(self, key: str, down: bool) -> None:
        self.emit("key", {"seq": self.seq, "t": round(now_ms(), 3), "key": key, "down": down})
        self.seq += 1
        self.keys_sent += 1
        (self.held.add if down else self.held.discard)(key)

    def release_keys(self) -> None:
        for k in sorted(self.held):
            self.key(k, False)

    async def _press_keys(self) -> None:
        """Press a key, hold it 80-600 ms, release it; sometimes two at once (about keys_per_s events a second)."""
        rng = self.rng
        weights = (1, 1, 3, 3, 4)  # LEFT, RIGHT and FIRE most, as in most of the study's games
        while True:
            await asyncio.sleep(rng.expovariate(self.keys_per_s / 2))
            k = rng.choices(KEYS, weights)[0]
            if k in self.held:
                continue
            self.key(k, True)
            await asyncio.sleep(rng.uniform(0.08, 0.6))
            if k in self.held:
                self.key(k, False)

    def _flush_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, []
            self.emit("painted", acks)

    async def _pump(self, pcm: np.ndarray) -> None:
        """Every 100 ms (interval_s): the microphone chunks now due, carrying the paint acks (as the browser does; on
        their own when no chunk went out for two intervals); every second an `rtt` ping."""
        await asyncio.sleep(self.rng.uniform(0, self.interval_s))
        chunk = self.chunk
        per_s = round(1 / self.interval_s)
        ticks = 0
        nbuf = pcm.size
        last_audio = -1e12
        while True:
            if self.audio_on:
                t = now_ms()
                while self.audio_t0 + (self.audio_first + chunk) * 1000.0 / AUDIO_RATE <= t:
                    off = self.audio_first % (nbuf - chunk)
                    chunk_t = self.audio_t0 + self.audio_first * 1000.0 / AUDIO_RATE
                    data: dict[str, Any] = {
                        "seq": self.audio_seq,
                        "first_sample": self.audio_first,
                        "t": round(chunk_t, 3),
                        "rate": AUDIO_RATE,
                    }
                    if self._acks:  # as the browser does: the paint acks ride along with a microphone chunk
                        data["painted"], self._acks = self._acks, []
                    self.emit_binary("audio", data, "pcm", pcm[off : off + chunk].tobytes())
                    self.audio_seq += 1
                    self.audio_first += chunk
                    last_audio = t
            if now_ms() - last_audio >= 2000.0 * self.interval_s:
                self._flush_acks()  # no microphone chunk for a while (none at all with --no-audio): on their own
            ticks += 1
            if ticks % per_s == 0:
                self.emit("rtt", {"rtt_ms": 1.0, "mic_level": 0.1}, ack_id=ticks // per_s)
            await asyncio.sleep(self.interval_s)

    def close(self) -> None:
        self.autostart = False
        if self._restart is not None:
            self._restart.cancel()
        for t in self._tasks:
            t.cancel()
        if self.transport is not None:
            self._send(8, b"\x03\xe8")
            self.transport.close()


def speech_like_pcm(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Synthetic 'speech': bursts of a voiced tone with noise, 48 kHz PCM16 (what the microphone sends)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    envelope = (np.sin(2 * np.pi * 1.5 * t) > 0.2).astype(np.float64)
    voice = 6000 * np.sin(2 * np.pi * 140 * t) * envelope + rng.normal(0, 400, t.size)
    return voice.clip(-32768, 32767).astype("<i2")


class LoopLag:
    """How late this event loop wakes up (the load generator's own health: it must not be the bottleneck)."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period = period_s
        self.lags = array("f")
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.period)
            self.lags.append((time.monotonic() - t - self.period) * 1000.0)

    def p99(self) -> float:
        return float(np.percentile(np.frombuffer(self.lags, dtype=np.float32), 99)) if len(self.lags) else 0.0


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process from /proc (psutil is not needed)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class StepResult:
    """What a step's sessions saw; window_ms is (start, end) on the monotonic clock in ms."""

    sessions: list[Session]
    refused: list[str]
    window_ms: tuple[float, float]
    counters: dict
    loadgen_cpu_s: float
    loop_lag_p99_ms: float


async def run_step(
    url: str,
    n: int,
    duration_s: float,
    warmup_s: float = 3.0,
    settle_s: float = 1.0,
    game: str | None = None,
    tag: str = "L",
    sources: list[str] | None = None,
    on_window=None,
    keys_per_s: float = 4.0,
    audio: bool = True,
    interval_s: float = SEND_INTERVAL_S,
    seed: int = 0,
    connect_concurrency: int = 8,
    phase_timeout_s: float = 60.0,
) -> StepResult:
    """Play n sessions: connect and start, warm up, restart every episode, measure `duration_s`, stop.

    `on_window(edge)` is called with "start" and "end" at the window's edges (the benchmark reads the server's CPU
    time and the store's size there). `sources` are local addresses to connect from, one per session in turn (a
    proxy with ip_hash spreads loopback clients only if they come from different addresses). A session that cannot
    join, restart or stop within `phase_timeout_s` (an overloaded server) is reported in `refused`.
    """
    pcm = speech_like_pcm(seed=seed)
    lag = LoopLag()
    sessions = [
        Session(
            i,
            url,
            f"{tag}s{i}",
            game=game,
            seed=seed * 100_003 + i,
            keys_per_s=keys_per_s,
            audio=audio,
            interval_s=interval_s,
        )
        for i in range(n)
    ]
    refused: list[str] = []
    sem = asyncio.Semaphore(connect_concurrency)

    async def join(s: Session) -> None:
        async with sem:
            await s.connect(sources[s.index % len(sources)] if sources else None)
            await s.start(timeout=20)
        s.begin_play(pcm)

    async def roll(s: Session) -> None:
        # restart the episode: the measured trajectory begins after every emulator was loaded
        await asyncio.sleep(s.rng.uniform(0, 0.5))
        await s.stop(timeout=20)
        await s.start(timeout=20)

    async def phase(what: str, fn, group: list[Session]) -> list[Session]:
        """Run fn on every session at once; those that fail or overrun are reported, closed and left out."""
        tasks = {asyncio.ensure_future(fn(s)): s for s in group}
        done, pending = await asyncio.wait(tasks, timeout=phase_timeout_s)
        ok = []
        for task, s in tasks.items():
            if task in pending:
                task.cancel()
                refused.append(f"session {s.index} ({what}): no answer within {phase_timeout_s:g} s")
            elif task.exception() is not None:
                refused.append(f"session {s.index} ({what}): {task.exception()!r}")
            else:
                ok.append(s)
                continue
            s.close()
        return ok

    try:
        live = await phase("start", join, sessions)
        await asyncio.sleep(warmup_s)
        live = await phase("restart", roll, live)
        await asyncio.sleep(settle_s)
        cpu0 = cpu_seconds()
        if on_window:
            on_window("start")
        t0 = now_ms()
        c0 = _counters(live)
        await asyncio.sleep(duration_s)
        t1 = now_ms()
        c1 = _counters(live)
        if on_window:
            on_window("end")
        cpu = cpu_seconds() - cpu0
        counters = {k: c1[k] - c0[k] for k in c0}
        counters["sessions"] = len(live)
        await phase("stop", lambda s: s.stop(timeout=20), live)
    finally:
        lag.task.cancel()
        for s in sessions:
            s.close()
    await asyncio.sleep(0.2)
    return StepResult(
        sessions=[s for s in sessions if s.episodes],
        refused=refused,
        window_ms=(t0, t1),
        counters=counters,
        loadgen_cpu_s=cpu,
        loop_lag_p99_ms=lag.p99(),
    )


def _counters(sessions: list[Session]) -> dict:
    return {
        "rx_bytes": sum(s.rx_bytes for s in sessions),
        "tx_bytes": sum(s.tx_bytes for s in sessions),
        "frames": sum(s.frames for s in sessions),
        "frame_bytes": sum(s.frame_bytes for s in sessions),
        "keys": sum(s.keys_sent for s in sessions),
        "sessions": len(sessions),
    }


def client_figures(res: StepResult) -> dict:
    """Frame rate and frame intervals inside the window, from the arrival times of every session's frames."""
    t0, t1 = res.window_ms
    fps, intervals = [], []
    for s in res.sessions:
        frames = span = 0.0
        for ep in s.episodes:
            a = np.frombuffer(ep.arrivals, dtype=np.float64)
            idx = np.flatnonzero((a >= t0) & (a <= t1))
            if idx.size < 2:
                continue
            frames += idx[-1] - idx[0]  # frame numbers count the frames exactly; arrival times give the span
            span += a[idx[-1]] - a[idx[0]]
            seen = a[idx[0] : idx[-1] + 1]
            intervals.append(np.diff(seen[~np.isnan(seen)]))
        if span > 0:
            fps.append(frames / span * 1000.0)
    iv = np.concatenate(intervals) if intervals else np.zeros(0)
    out = {
        "sessions": len(res.sessions),
        "fps_mean": float(np.mean(fps)) if fps else 0.0,
        "fps_min": float(np.min(fps)) if fps else 0.0,
    }
    if iv.size:
        out.update(
            interval_p50=float(np.percentile(iv, 50)),
            interval_p99=float(np.percentile(iv, 99)),
            interval_max=float(iv.max()),
        )
    return out


def summary(res: StepResult) -> dict:
    """client_figures plus the traffic, the generator's own health and what was refused (scripts/loadgen.py prints
    it)."""
    fig = client_figures(res)
    secs = (res.window_ms[1] - res.window_ms[0]) / 1000.0
    c = res.counters
    fig.update(
        bytes_per_frame=c["frame_bytes"] / max(c["frames"], 1),
        down_kB_per_s_per_session=c["rx_bytes"] / secs / max(c["sessions"], 1) / 1000,
        up_kB_per_s_per_session=c["tx_bytes"] / secs / max(c["sessions"], 1) / 1000,
        loadgen_cpu_pct=100 * res.loadgen_cpu_s / secs,
        loop_lag_p99_ms=res.loop_lag_p99_ms,
        refused=res.refused,
        trajectories=[e.traj_id for s in res.sessions for e in s.episodes],
    )
    return fig
