"""The processes of a capacity benchmark step: the servers (one per core, behind nginx when more than one), and
py-spy on them; what the machine and the store used.

Each server is `python -m server` with this checkout as its working directory; the transport path it uses is chosen
through its environment (`FAST_PATH=0`: the plain `socketio.emit` path, not the eventlet fast path).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchmark import ROOT
from benchmark.nginx import LocalNginx, free_port

PATHS = ("fast", "plain")  # the server's transport paths: the eventlet fast path, and plain socketio.emit


@dataclass(frozen=True)
class Config:
    procs: int
    async_mode: str
    codec: str
    path: str = "fast"

    @property
    def label(self) -> str:
        return f"{self.procs} proc{'s' if self.procs > 1 else ''}, {self.async_mode}, {self.codec}, {self.path} path"

    def env(self) -> dict[str, str]:
        """The server's environment for this path (the `fast_path` setting; a server without it ignores it)."""
        return {"FAST_PATH": "0" if self.path == "plain" else "1"}


class Servers:
    """`procs` server processes on one shared store, each pinned to its own core, behind nginx when more than one."""

    def __init__(self, cfg: Config, store: Path, logs: Path, cpus: list[int], max_per_proc: int, game: str) -> None:
        self.cfg = cfg
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.nginx: LocalNginx | None = None
        self.cpus: set[int] = set()
        logs.mkdir(parents=True, exist_ok=True)
        for i in range(cfg.procs):
            port = free_port()
            cpu = cpus[i % len(cpus)]
            self.cpus.add(cpu)
            cmd = [
                sys.executable,
                "-m",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--store",
                str(store),
                "--max-demonstrators",
                str(max_per_proc),
                "--codec",
                cfg.codec,
                "--async-mode",
                cfg.async_mode,
                "--game",
                game,
                "--log-level",
                "WARNING",
                "--max-connects-per-s",
                "0",  # the load generator's sessions all connect from 127.0.0.1 at once
            ]
            log = open(logs / f"server-{port}.log", "w")
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONWARNINGS": "ignore", **cfg.env()},
                    preexec_fn=functools.partial(os.sched_setaffinity, 0, {cpu}),
                )
            )
            self.ports.append(port)
        for port, proc in zip(self.ports, self.procs, strict=True):
            wait_ready(f"http://127.0.0.1:{port}", proc, logs / f"server-{port}.log")
        if cfg.procs > 1:
            self.nginx = LocalNginx([f"127.0.0.1:{p}" for p in self.ports], logs / "nginx", workers=1).start()
            self.url = self.nginx.url
        else:
            self.url = f"http://127.0.0.1:{self.ports[0]}"

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def demonstrators(self) -> list[int]:
        out = []
        for port in self.ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                out.append(json.loads(r.read())["demonstrators"])
        return out

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"server at {url} did not start:\n{log.read_text()}")


def machine_cpu_seconds() -> float:
    """CPU time all processes used (every core), from /proc/stat: what else ran shows as noise."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    busy = sum(int(x) for i, x in enumerate(fields[:8]) if i not in (3, 4))  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def store_bytes(store: Path) -> int:
    total = 0
    with os.scandir(store) as dirs:
        for d in dirs:
            if d.is_dir() and not d.name.startswith("."):
                with os.scandir(d.path) as files:
                    total += sum(f.stat().st_size for f in files if f.is_file())
    return total


class Profiler:
    """py-spy on every server process during a window (collapsed stacks: speedscope.app or flamegraph.pl read them)."""

    def __init__(self, out_dir: Path, rate: int = 100) -> None:
        self.out_dir = out_dir
        self.rate = rate
        exe = shutil.which("py-spy")
        if not exe:
            raise SystemExit("--profile needs py-spy: pip install py-spy")
        self.exe = exe
        self.running: list[tuple[subprocess.Popen, Path]] = []

    def start(self, pids: list[int], name: str, duration_s: float) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for i, pid in enumerate(pids):
            raw = self.out_dir / f"{name}-p{i}.txt"
            cmd = [
                self.exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(self.rate),
                "--duration",
                str(max(int(duration_s), 1)),
                "--nonblocking",
                "--format",
                "raw",
                "-o",
                str(raw),
            ]
            self.running.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw))

    def finish(self) -> list[Path]:
        out = []
        for proc, raw in self.running:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            if raw.exists():
                out.append(raw)
        self.running = []
        return out


def top_functions(raw_files: list[Path], n: int = 15) -> tuple[list[tuple[str, float, float]], int]:
    """(function, self %, inclusive %) of the sampled non-idle time, from py-spy raw (collapsed) output."""
    self_c: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for raw in raw_files:
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            c = int(count)
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            total += c
            self_c[frames[-1]] += c
            for f in set(frames):
                incl[f] += c
    rows = [(f, 100 * c / total, 100 * incl[f] / total) for f, c in self_c.most_common(n)] if total else []
    return rows, total
