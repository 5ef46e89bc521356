"""Capacity benchmark: how many demonstrators a server process holds at 60 fps while it records keys and speech.

    python scripts/bench.py                      # the full run (6 to 9 minutes on 2 cores)
    python scripts/bench.py --quick              # a smoke run (about 1.5 minutes)
    python scripts/bench.py --sessions 32,64 --duration 15 --codecs xor --async-modes eventlet --procs 1

For every configuration (frame codec x async mode x server processes) it starts `python -m server` (one process
per core, each pinned to its own core; with two or more, behind deploy/nginx.conf with ip_hash), then raises the
number of simulated demonstrators per process step by step until 60 fps breaks (when the first step already
breaks, it halves the number, down to 8, to find what holds), then narrows the break down between the most that
held and the least that broke to 4 per process (`--no-stop` runs every step instead). The demonstrators come from
scripts/loadgen.py: one asyncio process, pinned to another core than the server when there is one, every session
sending keys, paint acks and 48 kHz microphone audio as the browser does. Per step it reports:

- achieved frames per second per session (mean, min) and the frame interval p50/p99/max, from the arrival time
  of every frame at the client; and the server's own tick intervals from frames.csv `server_ms` in the window;
- key-to-frame latency p50/p99: the client's send time of each key (its `t`, on the machine's monotonic clock) to
  the arrival of the frame the server applied it on (events.csv `frame`);
- server CPU per session (/proc/<pid>/stat utime+stime over the window), bytes per frame and per second each way,
  the recording write rate (growth of the store's files), and the load generator's own CPU and loop lag.

A step holds when the mean rate rounds to 60.0 fps, no session falls under 59.5 fps, and the p99 frame interval
is under 20 ms. The table is printed and written to docs/benchmarks.md under "Capacity" with the machine and the
command (other sections of that file, such as "Replay and video export" from scripts/bench_replay.py, are kept,
and their figures are quoted). `--profile` samples each server with py-spy during each window and prints the
functions where the time goes.

The machine's own speed is watched too (scripts/core_speed.py: a probe on each core that only runs when the core is
otherwise idle): a shared virtual machine has stretches of seconds in which a core runs everything about 1.5 times
slower, and a server near its capacity falls behind in them. Each step reports how many seconds of its window the
server's core was slow (when the server has its cores to itself: with several processes the load generator shares
them, and the probe cannot tell its load from the machine's). A step that broke with a slow second in its window
is run again (`--attempts`, 2 in all by default); the tables keep every attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import loadgen  # noqa: E402
from core_speed import CoreProbes  # noqa: E402
from nginx_local import LocalNginx, balanced_sources, ensure_nginx, free_port  # noqa: E402

SECTION = "Capacity"
REPLAY_SECTION = "Replay and video export"
DOC = ROOT / "docs" / "benchmarks.md"
BISECT_TO = 4  # per process: how closely the break is narrowed down between two steps of the ladder
DEFAULT_SESSIONS = {"xor": "32,40,48,56,64,72", "jpeg": "8,12,16,24"}  # per server process
QUICK_SESSIONS = "8"
GOAL_PER_CORE = 64


@dataclass(frozen=True)
class Config:
    procs: int
    async_mode: str
    codec: str

    @property
    def label(self) -> str:
        return f"{self.procs} proc{'s' if self.procs > 1 else ''}, {self.async_mode}, {self.codec}"


def holds(row: dict) -> bool:
    return (
        round(row["fps_mean"], 1) >= 60.0
        and row["fps_min"] >= 59.5
        and row.get("interval_p99", 1e9) < 20.0
        and not row["refused"]
    )


# --- processes ------------------------------------------------------------------------------------------
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
            ]
            log = open(logs / f"server-{port}.log", "w")
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                    preexec_fn=lambda c=cpu: os.sched_setaffinity(0, {c}),
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
        self.exe = shutil.which("py-spy")
        if not self.exe:
            raise SystemExit("--profile needs py-spy: pip install py-spy")
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


# --- one step --------------------------------------------------------------------------------------------
def read_events(path: Path) -> list[tuple[int, float]]:
    """(frame applied on, client send ms) of every key event the server applied."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["event"] == "key" and not row["detail"] and row["client_ms"]:
                out.append((int(row["frame"]), float(row["client_ms"])))
    return out


def server_ms_column(path: Path) -> np.ndarray:
    """frames.csv's server_ms (when each step ran, ms since the episode opened), indexed by frame."""
    with open(path) as f:
        head = f.readline().rstrip("\n").split(",")
        col = head.index("server_ms")
        return np.array([float(line.split(",")[col]) for line in f], dtype=np.float64)


def server_figures(res: loadgen.StepResult, store: Path) -> dict:
    """Tick intervals of the frames the clients got inside the window (frames.csv server_ms), and key-to-frame
    latency from events.csv joined with frame arrivals."""
    t0, t1 = res.window_ms
    p50s, p99s, maxes, lat = [], [], [], []
    for s in res.sessions:
        for ep in s.episodes:
            d = store / ep.traj_id
            a = np.frombuffer(ep.arrivals, dtype=np.float64)
            seen = a[~np.isnan(a)]
            if not seen.size or seen[-1] < t0 or seen[0] > t1:
                continue  # an episode outside the window (the warm-up one)
            try:
                server_ms = server_ms_column(d / "frames.csv")
            except (OSError, ValueError):
                continue
            frames = np.flatnonzero((a >= t0) & (a <= t1))
            frames = frames[frames < server_ms.size]
            if frames.size > 1:
                ticks = np.diff(server_ms[frames[0] : frames[-1] + 1])
                p50s.append(float(np.percentile(ticks, 50)))
                p99s.append(float(np.percentile(ticks, 99)))
                maxes.append(float(ticks.max()))
            if (d / "events.csv").exists():
                for frame, sent in read_events(d / "events.csv"):
                    if t0 <= sent <= t1 and frame < a.size and not np.isnan(a[frame]):
                        lat.append(a[frame] - sent)
    out: dict = {}
    if p99s:
        out.update(
            tick_p50=float(np.median(p50s)),
            tick_p99_median=float(np.median(p99s)),
            tick_p99_worst=float(np.max(p99s)),
            tick_max=float(np.max(maxes)),
        )
    if lat:
        out.update(key_p50=float(np.percentile(lat, 50)), key_p99=float(np.percentile(lat, 99)), keys=len(lat))
    return out


def probed_cores(
    probes: CoreProbes | None, server_cpus: set[int], loadgen_cpus: set[int], t0: float, t1: float
) -> dict[int, dict] | None:
    """The probe's figures for the window on each server core; None where the load generator shares a server core
    (the probe then reads slow for that load as well as the machine's: 5-15 of 15 seconds of every two-process step
    it was tried on)."""
    if probes is None or server_cpus & loadgen_cpus:
        return None
    return {cpu: f for cpu, f in probes.window(t0, t1).items() if cpu in server_cpus}


def run_one(
    cfg: Config,
    servers: Servers,
    n_per_proc: int,
    args,
    store: Path,
    tag: str,
    profiler: Profiler | None,
    probes: CoreProbes | None = None,
) -> dict:
    n = n_per_proc * cfg.procs
    marks: dict = {}

    def on_window(edge: str) -> None:
        marks[edge] = {
            "machine_cpu": machine_cpu_seconds(),
            "server_cpu": sum(loadgen.cpu_seconds(p) for p in servers.pids()),
            "nginx_cpu": sum(loadgen.cpu_seconds(p) for p in servers.nginx.pids()) if servers.nginx else 0,
            "store": store_bytes(store),
            "t": time.monotonic(),
        }
        if edge == "start" and profiler is not None:
            profiler.start(servers.pids(), f"{tag}", args.duration)
        if edge == "end" and cfg.procs > 1:
            marks["split"] = servers.demonstrators()

    sources = balanced_sources(cfg.procs, n) if cfg.procs > 1 else None
    res = asyncio.run(
        loadgen.run_step(
            servers.url,
            n,
            args.duration,
            warmup_s=args.warmup,
            settle_s=args.settle,
            game=None,
            tag=tag,
            sources=sources,
            on_window=on_window,
            audio=not args.no_audio,
            interval_s=args.client_interval,
        )
    )
    secs = marks["end"]["t"] - marks["start"]["t"]
    c = res.counters
    live = max(c["sessions"], 1)
    row = {
        "config": cfg.label,
        "procs": cfg.procs,
        "async_mode": cfg.async_mode,
        "codec": cfg.codec,
        "per_proc": n_per_proc,
        "sessions": n,
        "refused": res.refused,
        **loadgen.client_figures(res),
        **server_figures(res, store),
    }
    server_cpu = marks["end"]["server_cpu"] - marks["start"]["server_cpu"]
    row.update(
        server_cpu_pct=100 * server_cpu / secs / cfg.procs,  # per process, % of its core
        cpu_per_session_pct=100 * server_cpu / secs / live,
        cpu_us_per_frame=1e6 * server_cpu / max(c["frames"], 1),
        nginx_cpu_pct=100 * (marks["end"]["nginx_cpu"] - marks["start"]["nginx_cpu"]) / secs,
        loadgen_cpu_pct=100 * res.loadgen_cpu_s / secs,
        loop_lag_p99=res.loop_lag_p99_ms,
        bytes_per_frame=c["frame_bytes"] / max(c["frames"], 1),
        down_kBps=c["rx_bytes"] / secs / live / 1000,
        up_kBps=c["tx_bytes"] / secs / live / 1000,
        record_kBps=(marks["end"]["store"] - marks["start"]["store"]) / secs / 1000,
        split=marks.get("split"),
    )
    ours = server_cpu + res.loadgen_cpu_s + marks["end"]["nginx_cpu"] - marks["start"]["nginx_cpu"]
    row["other_cpu_pct"] = max(0.0, 100 * ((marks["end"]["machine_cpu"] - marks["start"]["machine_cpu"]) - ours) / secs)
    row["holds"] = holds(row)
    cores = probed_cores(probes, servers.cpus, os.sched_getaffinity(0), marks["start"]["t"], marks["end"]["t"])
    if cores is not None:
        row["cores"] = cores
        row["slow_seconds"] = max((f["slow_seconds"] for f in cores.values()), default=0)
    if profiler is not None:
        raws = profiler.finish()
        row["profile"], row["profile_samples"] = top_functions(raws)
        row["profile_files"] = [str(r) for r in raws]
    if args.keep:  # every frame's arrival time, per trajectory, for a closer look
        np.savez_compressed(
            store.parent / f"arrivals-{tag}.npz",
            window_ms=np.array(res.window_ms),
            **{ep.traj_id: np.frombuffer(ep.arrivals, dtype=np.float64) for s in res.sessions for ep in s.episodes},
        )
    else:  # the step's recordings were measured: free the disk
        for d in store.iterdir():
            if d.is_dir() and not d.name.startswith("."):
                shutil.rmtree(d, ignore_errors=True)
    return row


def run_again(row: dict, rows: list[dict], attempts: int) -> bool:
    """Whether a step is run again: it broke, its server core was slow for a second or more of its window (the
    machine, not the server), and it has had fewer than `attempts` tries."""
    tries = sum(1 for r in rows if r["per_proc"] == row["per_proc"])
    return not row["holds"] and row.get("slow_seconds", 0) > 0 and tries < attempts


def counted(rows: list[dict]) -> list[dict]:
    """The attempts that count: all but those run again (`superseded`)."""
    return [r for r in rows if not r.get("superseded")]


def next_steps(rows: list[dict], queue: list[int]) -> list[int]:
    """The steps still to run, after the last of `rows`: up the ladder (`queue`) until a step breaks; then, when
    nothing held yet, half of it (down to 8 per process); else the midpoint between the most that held below the
    break and the least that broke, until those are BISECT_TO per process apart. An attempt that was run again
    (`superseded`) does not count."""
    rows = counted(rows)
    broke = [r["per_proc"] for r in rows if not r["holds"]]
    if not broke:
        return queue
    tried = {r["per_proc"] for r in rows}
    low_break = min(broke)
    held = [r["per_proc"] for r in rows if r["holds"] and r["per_proc"] < low_break]
    if not held:
        lower = low_break // 2
        return [lower] if lower >= 8 and lower not in tried else []
    top = max(held)
    mid = (top + low_break) // 2 // BISECT_TO * BISECT_TO
    return [mid] if low_break - top > BISECT_TO and top < mid and mid not in tried else []


def run_config(
    cfg: Config,
    steps: list[int],
    args,
    cpus: dict,
    tmp: Path,
    profiler: Profiler | None,
    probes: CoreProbes | None = None,
) -> list[dict]:
    store = tmp / "store"
    store.mkdir(parents=True, exist_ok=True)
    server_cpus = cpus["servers"]
    servers = Servers(cfg, store, tmp / "logs", server_cpus, max(steps) + 8, args.game)
    rows: list[dict] = []
    queue = list(steps)
    try:
        while queue:
            n = queue.pop(0)
            tag = f"{cfg.codec}{cfg.async_mode[:2]}{cfg.procs}n{n}"
            t = time.monotonic()
            row = run_one(cfg, servers, n, args, store, tag, profiler, probes)
            rows.append(row)
            print(f"  {n:4d}/proc: {fmt_row_short(row)}  ({time.monotonic() - t:.0f} s)", file=sys.stderr)
            if run_again(row, rows, args.attempts):
                row["superseded"] = True
                queue.insert(0, n)
                print(
                    f"  the server's core was slow for {row['slow_seconds']} s of the window: running {n} again",
                    file=sys.stderr,
                )
                continue
            if args.no_stop:
                continue
            queue = next_steps(rows, queue)
            if any(not r["holds"] for r in rows):  # narrowing a break down
                what = f"trying {queue[0]}" if queue else "next configuration"
                print(f"  {'held' if row['holds'] else '60 fps broke'} at {n} per process: {what}", file=sys.stderr)
    finally:
        servers.stop()
    return sorted(rows, key=lambda r: r["per_proc"])


def fmt_row_short(r: dict) -> str:
    g = {
        k: r.get(k, float("nan"))
        for k in ("interval_p99", "interval_max", "tick_p99_median", "tick_p99_worst", "key_p50")
    }
    return (
        f"fps {r['fps_mean']:.2f}/{r['fps_min']:.1f}, interval p99 {g['interval_p99']:.1f} ms, "
        f"max {g['interval_max']:.0f} ms, server tick p99 {g['tick_p99_median']:.1f}/{g['tick_p99_worst']:.1f} ms, "
        f"key p50 {g['key_p50']:.1f} ms, "
        f"server {r['server_cpu_pct']:.0f}% ({r['cpu_per_session_pct']:.2f}%/session, "
        f"{r['cpu_us_per_frame']:.0f} us/frame), "
        f"loadgen {r['loadgen_cpu_pct']:.0f}% lag {r['loop_lag_p99']:.1f} ms, others {r['other_cpu_pct']:.0f}%"
        + (f", core slow {core_text(r)}" if r.get("cores") else "")
        + ("" if r["holds"] else "  BREAKS")
        + (f"  refused {len(r['refused'])}: {r['refused'][0]}" if r["refused"] else "")
    )


# --- report ----------------------------------------------------------------------------------------------
def _f(v, spec: str = ".1f") -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def core_text(r: dict) -> str:
    """The server cores' speed over the window: slow seconds of the window, and the median probe step."""
    cores = r.get("cores") or {}
    if not cores:
        return "–"
    return ", ".join(
        f"{f['slow_seconds']} of {f['seconds']} s ({_f(f['us_per_step'], '.0f')} µs)" for _, f in sorted(cores.items())
    )


def held_text(r: dict) -> str:
    if r["holds"]:
        return "yes"
    return "**no**, run again" if r.get("superseded") else "**no**"


def tables(rows: list[dict]) -> str:
    a = [
        "| configuration | per core | total | fps mean / min "
        "| frame interval p50 / p99 / max (client) | server tick p50 / p99 (median, worst) / max "
        "| key-to-frame p50 / p99 | server core slow (probe step) | holds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for r in rows:
        a.append(
            f"| {r['config']} | {r['per_proc']} | {r['sessions']} | {_f(r['fps_mean'], '.2f')} / "
            f"{_f(r['fps_min'], '.2f')} | {_f(r.get('interval_p50'))} / {_f(r.get('interval_p99'))} / "
            f"{_f(r.get('interval_max'), '.0f')} ms | {_f(r.get('tick_p50'))} / {_f(r.get('tick_p99_median'))}, "
            f"{_f(r.get('tick_p99_worst'))} / {_f(r.get('tick_max'), '.0f')} ms | {_f(r.get('key_p50'))} / "
            f"{_f(r.get('key_p99'))} ms | {core_text(r)} | {held_text(r)} |"
        )
    b = [
        "| configuration | total | server CPU per process | CPU per session (per frame) | bytes per frame "
        "| down / up per session | recording written | load generator CPU, loop lag p99 | nginx CPU "
        "| other processes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        split = f" (split {'/'.join(map(str, r['split']))})" if r.get("split") else ""
        b.append(
            f"| {r['config']} | {r['sessions']}{split} | {r['server_cpu_pct']:.0f}% | "
            f"{r['cpu_per_session_pct']:.2f}% ({r['cpu_us_per_frame']:.0f} µs) | {r['bytes_per_frame']:,.0f} B | "
            f"{r['down_kBps']:.1f} / "
            f"{r['up_kBps']:.1f} kB/s | {r['record_kBps'] / 1000:.1f} MB/s "
            f"({r['record_kBps'] / max(r['sessions'], 1):.0f} kB/s per session) | "
            f"{r['loadgen_cpu_pct']:.0f}%, {r['loop_lag_p99']:.1f} ms | "
            f"{'–' if r['procs'] == 1 else format(r['nginx_cpu_pct'], '.0f') + '%'} | "
            f"{r.get('other_cpu_pct', 0):.0f}% |"
        )
    return "\n".join(a) + "\n\n" + "\n".join(b)


def capacity(rows: list[dict]) -> str:
    rows = counted(rows)
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)
    lines = [
        "| configuration | most demonstrators per core at 60 fps, p99 < 20 ms | whole set-up | first step that broke |",
        "| --- | ---: | ---: | --- |",
    ]
    for label, rs in by.items():
        ok = [r for r in rs if r["holds"]]
        best = max(ok, key=lambda r: r["per_proc"]) if ok else None
        broke = next((r for r in rs if not r["holds"]), None)
        why = "–"
        if broke is not None:
            why = (
                f"{broke['per_proc']} per core: fps {broke['fps_mean']:.2f} (min {broke['fps_min']:.1f}), "
                f"p99 {_f(broke.get('interval_p99'))} ms"
            )
        lines.append(
            f"| {label} | {best['per_proc'] if best else '< ' + str(rs[0]['per_proc'])}"
            f"{'' if broke else ' or more'} | {best['sessions'] if best else 0} | {why} |"
        )
    met = sorted({r["config"] for r in rows if r["holds"] and r["per_proc"] >= GOAL_PER_CORE})
    best_any = max((r["per_proc"] for r in rows if r["holds"]), default=0)
    lines += [
        "",
        f"Goal, {GOAL_PER_CORE} demonstrators per core at 60.0 fps with p99 under 20 ms while recording with "
        f"speech: "
        + (
            f"**met** by {', '.join(met)}." if met else f"**not met**; the best configuration held {best_any} per core."
        ),
    ]
    return "\n".join(lines)


def replay_figures(doc: Path) -> str:
    """Quote the figures scripts/bench_replay.py wrote (not measured again here)."""
    text = doc.read_text() if doc.exists() else ""
    m = re.search(rf"^## {re.escape(REPLAY_SECTION)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    link = "[Replay and video export](#replay-and-video-export)"
    if not m:
        return (
            f"Replay and video export speed: not measured yet; `python scripts/bench_replay.py` writes the "
            f"{link} section of this file."
        )
    table = [ln for ln in m.group(1).splitlines() if ln.startswith("|")]
    if len(table) < 3:
        return f"Replay and video export speed: see {link} (scripts/bench_replay.py)."
    head = [c.strip() for c in table[0].strip("|").split("|")]
    want = [i for i, h in enumerate(head) if i == 0 or "re-simulation" in h or "speed" in h or h == "length"]
    out = [
        f"Replay and video export, quoted from {link} (scripts/bench_replay.py, measured separately):",
        "",
        "| " + " | ".join(head[i] for i in want) + " |",
        "|" + " --- |" * len(want),
    ]
    for ln in table[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) == len(head):
            out.append("| " + " | ".join(cells[i] for i in want) + " |")
    return "\n".join(out)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )


def write_section(path: Path, body: str) -> None:
    """Replace (or add, after the title) the '## Capacity' section; every other section stays as it is."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"## {SECTION}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1)
    else:
        first = re.search(r"^## ", text, re.M)
        text = (
            (text[: first.start()] + block + "\n" + text[first.start() :])
            if first
            else text.rstrip("\n") + "\n\n" + block
        )
    path.write_text(text.rstrip("\n") + "\n")


def report(rows: list[dict], command: str, machine_line: str, elapsed_s: float, layout: str) -> str:
    return "\n".join(
        [
            f"Measured by `{command}` on {machine_line}, {os.getloadavg()[0]:.1f} at the end; {layout}; "
            f"{elapsed_s / 60:.1f} minutes in all.",
            "",
            "Every simulated demonstrator plays Space Invaders as the browser client does: about four key events a "
            "second, and 48 kHz PCM16 microphone audio in 100 ms chunks carrying the paint acks, so every session "
            "records frames.csv, events.csv, speech.wav, speech_sync.csv and game_audio.wav. A step *holds* when the "
            "mean rate rounds to 60.0 fps, no session falls below 59.5 fps and the p99 frame interval at the client is "
            "under 20 ms; the goal is 64 demonstrators per core.",
            "",
            capacity(rows),
            "",
            tables(rows),
            "",
            "Frame intervals and rates are measured at the client from frame arrival times inside the measured window; "
            "server ticks are the intervals between the steps (frames.csv `server_ms`) of the frames the clients "
            "received inside the window. The window starts a few seconds (`--settle`) after every session restarted "
            "its episode at once, a burst of episode closes and starts that a real study spreads out. Key-to-frame "
            "latency runs from the key's send time to the arrival of the frame it was applied on (events.csv `frame`): "
            "it includes the wait for the next tick (0-16.7 ms). CPU is "
            'utime+stime from /proc over the window; 100% is one core. "Recording written" is the growth of the '
            "store's files over the window (speech 96 kB/s and game sound 31 kB/s per session dominate). \"Other "
            'processes" is the CPU the rest of the machine used during the window: well above 0% the figures are noisy '
            "(a process sharing the server's core delays its ticks by whole scheduler slices). With two processes the "
            "load generator and nginx share the two cores with the servers, so those rows are a lower bound of the "
            "machine's capacity. \"Server core slow\" counts the seconds of the window in which the server's core "
            "ran a fixed emulator workload (scripts/core_speed.py's probe, which only gets the core when the server "
            "leaves it idle) at least 1.2 times slower than in that core's fastest second so far, and gives the "
            "probe's "
            "median step: those seconds are the machine's, not the server's (measured only where the server has its "
            "core to itself: where the load generator shares it, the probe cannot tell that load from the machine's). "
            "A step that broke with such a second in its window was run again (up to `--attempts` tries); only its "
            "last attempt counts.",
            "",
            replay_figures(DOC),
        ]
    )


def profile_text(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if r.get("profile"):
            out.append(
                f"\n{r['config']}, {r['sessions']} sessions: {r['profile_samples']} samples "
                f"(files: {', '.join(r['profile_files'])})"
            )
            out.append(f"  {'self %':>7} {'total %':>8}  function")
            for f, s, inc in r["profile"]:
                out.append(f"  {s:7.1f} {inc:8.1f}  {f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sessions",
        help="demonstrators per server process, raised in this order until 60 fps breaks "
        f"(default: xor {DEFAULT_SESSIONS['xor']}, jpeg {DEFAULT_SESSIONS['jpeg']})",
    )
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per step (default 15)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of play before the episodes restart")
    p.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds after the restart before measuring (every session restarting at once is a burst of "
        "episode closes and starts the measured window should not include)",
    )
    p.add_argument("--codecs", default="xor,jpeg")
    p.add_argument("--async-modes", default="eventlet,gevent")
    p.add_argument("--procs", default="1,2", help="server processes (one per core); 2 or more run behind nginx")
    p.add_argument("--multi-codecs", default="xor", help="codecs also measured with several processes")
    p.add_argument("--game", default="spaceinvaders")
    p.add_argument("--no-audio", action="store_true", help="demonstrators without a microphone (for comparison)")
    p.add_argument(
        "--client-interval",
        type=float,
        default=loadgen.SEND_INTERVAL_S,
        help="seconds between a client's paint-ack batches and microphone chunks (the browser: 0.1)",
    )
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SESSIONS} per process, 5 s windows: a smoke run")
    p.add_argument("--no-stop", action="store_true", help="run every step even after 60 fps broke")
    p.add_argument(
        "--attempts",
        type=int,
        default=2,
        help="tries of a step that broke while its server core was slow (default 2; 1: never again)",
    )
    p.add_argument("--no-probe", action="store_true", help="do not watch the cores' speed (scripts/core_speed.py)")
    p.add_argument("--profile", action="store_true", help="sample the servers with py-spy during every window")
    p.add_argument("--profile-dir", default=None, help="where py-spy's collapsed stacks go (default: a temp dir)")
    p.add_argument("--keep", default=None, help="keep the stores and logs in this directory")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args(argv)
    if args.quick:
        args.sessions = args.sessions or QUICK_SESSIONS
        args.duration, args.warmup = min(args.duration, 5.0), min(args.warmup, 1.0)

    codecs = [c for c in args.codecs.split(",") if c]
    modes = [m for m in args.async_modes.split(",") if m]
    procs = [int(x) for x in args.procs.split(",") if x]
    configs = [Config(1, m, c) for c in codecs for m in modes] if 1 in procs else []
    for n in (x for x in procs if x > 1):
        configs += [Config(n, m, c) for c in codecs if c in args.multi_codecs.split(",") for m in modes]
    if any(c.procs > 1 for c in configs):
        nginx, why = ensure_nginx()
        if nginx is None:
            print(f"skipping the multi-process runs: {why}", file=sys.stderr)
            configs = [c for c in configs if c.procs == 1]

    cpus = sorted(os.sched_getaffinity(0))
    layout_notes = []
    command = "python scripts/bench.py" + ("" if not argv else " " + " ".join(argv))
    machine_line = machine()
    profiler = None
    if args.profile:
        profiler = Profiler(Path(args.profile_dir or tempfile.mkdtemp(prefix="bench-profile-")))
    tmp_root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-"))
    rows: list[dict] = []
    started = time.monotonic()
    probes = None if args.no_probe else CoreProbes(cpus, tmp_root / "core-speed").start()
    try:
        for cfg in configs:
            server_cpus = cpus[: cfg.procs] if len(cpus) >= cfg.procs else cpus
            rest = [c for c in cpus if c not in server_cpus]
            os.sched_setaffinity(0, set(rest or cpus))  # the load generator: another core when there is one
            plural = "es" if cfg.procs > 1 else ""
            note = (
                f"{cfg.procs} server process{plural} on CPU {','.join(map(str, server_cpus))} and the load "
                f"generator on CPU {','.join(map(str, rest or cpus))}"
            )
            if note not in layout_notes:
                layout_notes.append(note)
            steps = [int(x) for x in (args.sessions or DEFAULT_SESSIONS.get(cfg.codec, "32,64")).split(",")]
            print(f"{cfg.label} ({note}): {', '.join(map(str, steps))} per process", file=sys.stderr)
            rows += run_config(
                cfg,
                steps,
                args,
                {"servers": server_cpus},
                tmp_root / f"{cfg.codec}-{cfg.async_mode}-{cfg.procs}",
                profiler,
                probes,
            )
    finally:
        if probes is not None:
            probes.stop()
        os.sched_setaffinity(0, set(cpus))
        if not args.keep:
            shutil.rmtree(tmp_root, ignore_errors=True)
    body = report(rows, command, machine_line, time.monotonic() - started, "; ".join(layout_notes))
    print(body)
    if profiler is not None:
        print(profile_text(rows))
    if not args.no_write:
        write_section(DOC, body)
        print(f"\nwritten to {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
