"""Hostile clients against a server on loopback while a well-behaved demonstrator plays and talks (issue 20).

Each attack runs for a bounded time in threads of this process; meanwhile the bystander (a python-socketio client
that decodes nothing, acks its paints and sends 16 kHz speech in 100 ms chunks with the acks riding along, as the
browser does) plays one episode per attack. The figures per attack: what the attacker sent, the bystander's frames a
second as received, the p99 and longest interval between its ticks as the server measured them (meta.json's
`timing`, free of this process's own scheduling), the server's peak and settled RSS, whether the bystander's
trajectory verifies, and what became of the attacker. `scripts/bench_abuse.py` is the command.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class Server:
    def __init__(self, store: Path, port: int, *args: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.store = store
        self.log = open(store.parent / "server.log", "w")
        cmd = [sys.executable, "-m", "server", "--port", str(port), "--store", str(store), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.health()["emulators_idle"] >= 20:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not start")

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/healthz", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


class Player:
    """The bystander: plays, acks paints, talks (16 kHz PCM16, 100 ms chunks, acks riding along)."""

    def __init__(self, url: str, talk: bool = True) -> None:
        import socketio

        self.sio = socketio.Client(reconnection=False)
        self.times: list[float] = []
        self.ends: list[dict] = []
        self.episodes: list[dict] = []
        self.errors: list[dict] = []
        self.events: list[str] = []
        self._acks: list[list] = []
        self._lock = threading.Lock()
        self.talk = talk
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        sio = self.sio
        sio.on("frame", self._frame)
        sio.on("episode", self.episodes.append)
        sio.on("episode_end", self.ends.append)
        sio.on("error", self.errors.append)
        sio.on("*", lambda event, data=None: self.events.append(event))
        sio.connect(url, transports=["websocket"], wait_timeout=10)

    def _frame(self, data: bytes) -> None:
        with self._lock:
            self.times.append(time.monotonic())
            self._acks.append([int.from_bytes(data[:4], "little"), (time.monotonic() - self._t0) * 1000])

    def start(self) -> dict:
        n = len(self.episodes)
        self.sio.emit("start", {"participant": "BYSTANDER"})
        deadline = time.monotonic() + 15
        while len(self.episodes) == n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"start refused: {self.errors}")
            time.sleep(0.01)
        self._stop.clear()
        threading.Thread(target=self._talk, daemon=True).start()
        return self.episodes[-1]

    def _talk(self) -> None:
        seq, first, rate = 0, 0, 16000
        pcm = (b"\x10\x00\xf0\xff" * 800)[: rate // 10 * 2]
        next_t = time.monotonic()
        while not self._stop.is_set() and self.sio.connected:
            with self._lock:
                acks, self._acks = self._acks, []
            if self.talk:
                t = (time.monotonic() - self._t0) * 1000
                self.sio.emit(
                    "audio", {"seq": seq, "first_sample": first, "t": t, "rate": rate, "pcm": pcm, "painted": acks}
                )
                seq, first = seq + 1, first + rate // 10
            elif acks:
                self.sio.emit("painted", acks)
            next_t += 0.1
            time.sleep(max(0.0, next_t - time.monotonic()))

    def stop(self) -> dict:
        self._stop.set()
        n = len(self.ends)
        self.sio.emit("stop")
        deadline = time.monotonic() + 15
        while len(self.ends) == n and time.monotonic() < deadline:
            time.sleep(0.02)
        if len(self.ends) == n:  # the server closed this connection (an attacker's), or never ended the episode
            return {"reason": "no episode_end: " + ("disconnected" if not self.sio.connected else "timed out")}
        return self.ends[-1]

    def close(self) -> None:
        self._stop.set()
        self.sio.disconnect()


def raw_ws(url: str, join: bool = True):
    import websocket

    ws = websocket.create_connection(url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket")
    ws.recv()
    if join:
        ws.send("40")
        ws.recv()
    return ws


# --- attacks: (url, stop_event) -> (inputs sent, outcome) ----------------------------------------------------------
def _until_closed(send: Callable[[], int], stop: threading.Event) -> tuple[int, bool]:
    n = 0
    try:
        while not stop.is_set():
            n += send()
    except Exception:
        return n, True
    return n, False


def attack_fragments(url: str, stop: threading.Event, conns: int = 6) -> tuple[str, str]:
    import websocket

    part = 256 * 1024
    results = []

    def one() -> None:
        ws = raw_ws(url)
        ws.send_frame(websocket.ABNF.create_frame(b"4" + b"x" * (part - 1), websocket.ABNF.OPCODE_TEXT, fin=0))
        results.append(
            _until_closed(
                lambda: (
                    ws.send_frame(websocket.ABNF.create_frame(b"x" * part, websocket.ABNF.OPCODE_CONT, fin=0)) or part
                ),
                stop,
            )
        )

    _run_all([one] * conns)
    sent = sum(n for n, _ in results) + part * conns
    closed = sum(c for _, c in results)
    return f"{conns} x fragmented message, {sent / 1e6:.0f} MB", f"{closed}/{conns} closed by the server"


def attack_attachments(url: str, stop: threading.Event) -> tuple[str, str]:
    ws = raw_ws(url)
    ws.send('459999999999-["audio",{"_placeholder":true,"num":0}]')
    n, closed = _until_closed(lambda: bool(ws.send_binary(b"\0" * 1_000_000)), stop)
    return f"10^10 attachments announced, {n} x 1 MB sent", "closed by the server" if closed else "still open"


def _flood(url: str, stop: threading.Event, packet: str, then: list[str] | None = None) -> tuple[int, bool, list]:
    ws = raw_ws(url)
    n, closed = _until_closed(lambda: bool(ws.send(packet)), stop)
    got = []
    if not closed:
        for p in then or []:
            ws.send(p)
    try:
        ws.settimeout(1)
        while True:
            got.append(ws.recv())
    except Exception:
        pass
    return n, closed, got


def attack_flood_reconnect(url: str, stop: threading.Event) -> tuple[str, str]:
    ws = raw_ws(url)
    n = 0
    for _ in range(1000):
        ws.send('42["rtt",{}]')
        n += 1
    started = False
    try:
        ws.send("40")
        ws.send('42["start",{}]')
        ws.settimeout(2)
        while True:
            m = ws.recv()
            if not m:
                break
            started = started or m.startswith('42["episode"')
    except Exception:
        pass
    return f"{n} rtt, then 40 + start", "start accepted" if started else "closed; no new sid"


def attack_storm(url: str, stop: threading.Event) -> tuple[str, str]:
    n, closed, _ = _flood(url, stop, "42[")
    return f"{n} x 42[", "closed by the server" if closed else "still open"


def attack_reserved(url: str, stop: threading.Event) -> tuple[str, str]:
    n, closed, _ = _flood(url, stop, '42["connect",{}]')
    return f"{n} x event named connect", "closed by the server" if closed else "still open"


def attack_raw_mix(url: str, stop: threading.Event) -> tuple[str, str]:
    """Truncated, wrong-type and wrong-namespace packets, 500 per connection, connection after connection."""
    packets = ["4", "9", "5", "6", "2", "42", '42/x,["start"]', "43", "41", "44{", '451-["key",{}]', "4" + "9" * 50]
    sent = closes = 0
    while not stop.is_set():
        try:
            ws = raw_ws(url)
            for i in range(500):
                ws.send(packets[i % len(packets)])
                sent += 1
            ws.close()
        except Exception:
            closes += 1
    return f"{sent} malformed Engine.IO/Socket.IO packets", f"{closes} connections refused or closed by the server"


def attack_audio(url: str, stop: threading.Event) -> tuple[str, str]:
    p = Player(url, talk=False)
    p.start()
    seq, rate, chunk = 0, 48000, 24000
    pcm = b"\0" * (2 * chunk)
    closed = False
    while not stop.is_set() and seq < 20000:
        try:
            p.sio.emit("audio", {"seq": seq, "first_sample": seq * chunk, "t": 0.0, "rate": rate, "pcm": pcm})
        except Exception:  # socketio's BadNamespaceError: the server closed this connection
            closed = True
            break
        seq += 1
        time.sleep(0.001)
    refused = sum(1 for e in p.errors if e.get("code") == "audio_rate")
    end = {"reason": "connection closed by the server"} if closed else p.stop()
    p.close()
    return (
        f"{seq * len(pcm) / 1e6:.0f} MB of audio ({seq * 0.5:.0f} s) in {seq} chunks",
        f"{refused} refused (audio_rate); {end['reason']}",
    )


def attack_start_burst(url: str, stop: threading.Event, n: int = 20) -> tuple[str, str]:
    players: list[Player] = []
    _run_all([lambda: players.append(Player(url, talk=False))] * n)
    _run_all([p.start for p in players])
    stop.wait()
    for p in players:
        p.close()
    return f"{n} starts at once", f"{sum(1 for p in players if p.episodes)} started"


def attack_squat(url: str, stop: threading.Event, n: int = 32) -> tuple[str, str]:
    def squat() -> None:
        p = Player(url, talk=False)
        try:
            p.sio.emit("start", {})
            time.sleep(0.2)
        finally:
            p.sio.disconnect()

    _run_all([squat] * n)
    time.sleep(0.5)
    p = Player(url, talk=False)
    try:
        p.start()
        outcome = "next participant admitted"
    except TimeoutError:
        outcome = "next participant refused: " + ",".join(e.get("code", "?") for e in p.errors)
    p.close()
    stop.wait()
    return f"{n} start-and-leave", outcome


def _run_all(fns) -> None:
    threads = [threading.Thread(target=f, daemon=True) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


ATTACKS: dict[str, Callable[[str, threading.Event], tuple[str, str]]] = {
    "fragmented 150 MB messages": attack_fragments,
    "10-digit attachment count": attack_attachments,
    "flood, then 40 + start": attack_flood_reconnect,
    "5000 x 42[": attack_storm,
    "events named connect": attack_reserved,
    "malformed raw packets": attack_raw_mix,
    "audio at 37 MB/s": attack_audio,
    "20 starts at once": attack_start_burst,
    "32 start-and-leave": attack_squat,
}


@dataclass
class Row:
    attack: str
    sent: str = ""
    fps: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    verified: bool = False
    outcome: str = ""
    extra: dict = field(default_factory=dict)


def run(seconds: float = 8.0, only: list[str] | None = None, settle_s: float = 3.0) -> list[Row]:
    from server.core.replay import verify
    from server.store import open_store

    base = Path(tempfile.mkdtemp(prefix="abuse-"))
    server = Server(base / "store", free_port(), "--max-demonstrators", "32")
    rows = []
    try:
        for name in ATTACKS:
            if only and not any(o in name for o in only):
                continue
            player = Player(server.url)
            ep = player.start()
            time.sleep(1.0)
            rss0 = rss_mb(server.proc.pid)
            peak = [rss0]
            # the attacker is a process of its own, as it would be on another machine: its threads do not share
            # this process's interpreter with the bystander's client
            stop = ATTACKER.Event()
            results = ATTACKER.Queue()
            attacker = ATTACKER.Process(target=_attack, args=(name, server.url, stop, results), daemon=True)
            n0, t0 = len(player.times), time.monotonic()
            attacker.start()
            while time.monotonic() - t0 < seconds:
                peak.append(rss_mb(server.proc.pid))
                time.sleep(0.1)
            stop.set()
            result: list[tuple[str, str]] = []
            try:
                result.append(results.get(timeout=30))
            except queue.Empty:
                pass
            attacker.join(5)
            if attacker.is_alive():
                attacker.terminate()
            fps = (len(player.times) - n0) / (time.monotonic() - t0)
            end = player.stop()
            player.close()
            meta = json.loads((server.store / ep["traj_id"] / "meta.json").read_text())
            try:
                verified = verify(open_store(str(server.store)), ep["traj_id"]) == end["frames"]
            except Exception:
                verified = False
            time.sleep(settle_s)
            sent, outcome = result[0] if result else ("?", "attack did not finish")
            rows.append(
                Row(
                    name,
                    sent,
                    round(fps, 1),
                    meta["timing"].get("interval_ms_p99", 0.0),
                    meta["timing"].get("interval_ms_max", 0.0),
                    round(max(peak) - rss0, 1),
                    round(rss_mb(server.proc.pid) - rss0, 1),
                    verified,
                    outcome,
                )
            )
            print(table(rows[-1:], header=not rows[:-1]), flush=True)
    finally:
        server.stop()
    return rows


#: Attackers run in processes started afresh (not forked from this one, which holds the bystander's client threads).
ATTACKER = multiprocessing.get_context("spawn")


def _attack(name: str, url: str, stop, results) -> None:
    results.put(ATTACKS[name](url, stop))


def table(rows: list[Row], header: bool = True) -> str:
    lines = []
    if header:
        lines.append(
            "| attack | inputs sent | bystander fps | tick p99 ms | longest tick ms | RSS peak +MB | RSS after +MB "
            "| bystander verifies | outcome |"
        )
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        lines.append(
            f"| {r.attack} | {r.sent} | {r.fps} | {r.p99_ms} | {r.max_ms} | {r.rss_peak_mb} | {r.rss_after_mb} "
            f"| {'yes' if r.verified else 'NO'} | {r.outcome} |"
        )
    return "\n".join(lines)
