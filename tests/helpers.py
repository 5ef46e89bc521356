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
        cmd = [sys.executable, "-m", "server", "--port", str(self.port), *args]
        if pass_store:
            cmd[5:5] = ["--store", str(self.store)]
        self._log = open(self.log_path, "w")
        full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
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
