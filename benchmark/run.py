"""Capacity benchmark: how many demonstrators a server process holds at 60 fps while it records keys and speech.

    python scripts/bench.py                      # the full run (6 to 9 minutes on 2 cores per transport path)
    python scripts/bench.py --quick              # a smoke run (about 1.5 minutes per transport path)
    python scripts/bench.py --sessions 32,64 --duration 15 --codecs xor --async-modes eventlet --procs 1
    python scripts/bench.py --write docs/benchmarks.md   # also replace that file's "Capacity" section

For every configuration (frame codec x async mode x server processes x transport path) it starts `python -m server`
(one process per core, each pinned to its own core; with two or more, behind deploy/nginx.conf with ip_hash), then
raises the number of simulated demonstrators per process step by step until 60 fps breaks (when the first step
already breaks, it halves the number, down to 8, to find what holds), then narrows the break down between the most
that held and the least that broke to 4 per process (`--no-stop` runs every step instead). Each configuration runs
with the server's eventlet fast path and with the plain `socketio.emit` path (`FAST_PATH=0` in the server's
environment; `--paths`), side by side in the tables, so the price of the plain path is known. The demonstrators come
from benchmark.loadgen: one asyncio process, pinned to another core than the server when there is one, every session
sending keys, paint acks and 48 kHz microphone audio as the browser does. Per step it reports:

- achieved frames per second per session (mean, min) and the frame interval p50/p99/max, from the arrival time
  of every frame at the client; and the server's own tick intervals from frames.csv `server_ms` in the window;
- key-to-frame latency p50/p99: the client's send time of each key (its `t`, on the machine's monotonic clock) to
  the arrival of the frame the server applied it on (events.csv `frame`);
- server CPU per session (/proc/<pid>/stat utime+stime over the window), bytes per frame and per second each way,
  the recording write rate (growth of the store's files), and the load generator's own CPU and loop lag.

A step holds when the mean rate rounds to 60.0 fps, no session falls under 59.5 fps, and the p99 frame interval
is under 20 ms. The table is printed with the machine and the command; `--write PATH` also writes it to PATH
(docs/benchmarks.md) under "Capacity" (other sections of that file, such as "Replay and video export" from
scripts/bench_replay.py, are kept, and their figures are quoted). `--profile` samples each server with py-spy during
each window and prints the functions where the time goes.

The machine's own speed is watched too (benchmark.probe, scripts/core_speed.py: a probe on each core that only runs
when the core is otherwise idle): a shared virtual machine has stretches of seconds in which a core runs everything
about 1.5 times slower, and a server near its capacity falls behind in them. Each step reports how many seconds of its
window the server's core was slow (when the server has its cores to itself: with several processes the load
generator shares them, and the probe cannot tell its load from the machine's). A step that broke with a slow second
in its window is run again (`--attempts`, 2 in all by default); the tables keep every attempt.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import loadgen, recordings
from benchmark.doc import DOC
from benchmark.ladder import holds, next_steps, run_again
from benchmark.nginx import balanced_sources, ensure_nginx
from benchmark.probe import CoreProbes
from benchmark.servers import PATHS, Config, Profiler, Servers, machine_cpu_seconds, store_bytes, top_functions
from benchmark.tables import fmt_row_short, machine, report

DEFAULT_SESSIONS = {"xor": "32,40,48,56,64,72", "jpeg": "8,12,16,24"}  # per server process
QUICK_SESSIONS = "8"


@dataclass
class Options:
    """What scripts/bench.py's command line chooses (its defaults are these)."""

    sessions: list[int] | None = None  # per process, in this order; None: DEFAULT_SESSIONS for the codec
    duration: float = 15.0  # measured seconds per step
    warmup: float = 2.0  # seconds of play before the episodes restart
    # seconds after the restart before measuring (every session restarting at once is a burst of episode closes and
    # starts the measured window should not include)
    settle: float = 3.0
    codecs: tuple[str, ...] = ("xor", "jpeg")
    async_modes: tuple[str, ...] = ("eventlet", "gevent")
    procs: tuple[int, ...] = (1, 2)  # server processes (one per core); 2 or more run behind nginx
    multi_codecs: tuple[str, ...] = ("xor",)  # codecs also measured with several processes
    paths: tuple[str, ...] = PATHS  # the server's transport paths, each configuration with each
    game: str = "spaceinvaders"
    audio: bool = True  # False: demonstrators without a microphone (for comparison)
    client_interval: float = loadgen.SEND_INTERVAL_S  # between a client's paint-ack batches and microphone chunks
    no_stop: bool = False  # run every step even after 60 fps broke
    attempts: int = 2  # tries of a step that broke while its server core was slow (1: never again)
    probe: bool = True  # watch the cores' speed (benchmark.probe)
    profile_dir: Path | None = None  # sample the servers with py-spy during every window, into this directory
    keep: Path | None = None  # keep the stores and logs in this directory


def configs(opts: Options) -> list[Config]:
    """Every configuration to measure, the paths of one set-up side by side; the multi-process ones only when nginx
    is there (or can be installed)."""
    out = [Config(1, m, c, path) for c in opts.codecs for m in opts.async_modes for path in opts.paths]
    out = out if 1 in opts.procs else []
    for n in (x for x in opts.procs if x > 1):
        out += [
            Config(n, m, c, path)
            for c in opts.codecs
            if c in opts.multi_codecs
            for m in opts.async_modes
            for path in opts.paths
        ]
    if any(c.procs > 1 for c in out):
        nginx, why = ensure_nginx()
        if nginx is None:
            print(f"skipping the multi-process runs: {why}", file=sys.stderr)
            out = [c for c in out if c.procs == 1]
    return out


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
                server_ms = recordings.server_ms(d)
            except (OSError, ValueError):
                continue
            frames = np.flatnonzero((a >= t0) & (a <= t1))
            frames = frames[frames < server_ms.size]
            if frames.size > 1:
                ticks = np.diff(server_ms[frames[0] : frames[-1] + 1])
                p50s.append(float(np.percentile(ticks, 50)))
                p99s.append(float(np.percentile(ticks, 99)))
                maxes.append(float(ticks.max()))
            for frame, sent in recordings.key_events(d):
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
    opts: Options,
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
            profiler.start(servers.pids(), f"{tag}", opts.duration)
        if edge == "end" and cfg.procs > 1:
            marks["split"] = servers.demonstrators()

    sources = balanced_sources(cfg.procs, n) if cfg.procs > 1 else None
    res = asyncio.run(
        loadgen.run_step(
            servers.url,
            n,
            opts.duration,
            warmup_s=opts.warmup,
            settle_s=opts.settle,
            game=None,
            tag=tag,
            sources=sources,
            on_window=on_window,
            audio=opts.audio,
            interval_s=opts.client_interval,
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
    if opts.keep:  # every frame's arrival time, per trajectory, for a closer look
        arrivals: dict[str, Any] = {
            ep.traj_id: np.frombuffer(ep.arrivals, dtype=np.float64) for s in res.sessions for ep in s.episodes
        }
        np.savez_compressed(store.parent / f"arrivals-{tag}.npz", window_ms=np.array(res.window_ms), **arrivals)
    else:  # the step's recordings were measured: free the disk
        for d in store.iterdir():
            if d.is_dir() and not d.name.startswith("."):
                shutil.rmtree(d, ignore_errors=True)
    return row


def run_config(
    cfg: Config,
    steps: list[int],
    opts: Options,
    cpus: dict,
    tmp: Path,
    profiler: Profiler | None,
    probes: CoreProbes | None = None,
) -> list[dict]:
    store = tmp / "store"
    store.mkdir(parents=True, exist_ok=True)
    server_cpus = cpus["servers"]
    servers = Servers(cfg, store, tmp / "logs", server_cpus, max(steps) + 8, opts.game)
    rows: list[dict] = []
    queue = list(steps)
    try:
        while queue:
            n = queue.pop(0)
            tag = f"{cfg.codec}{cfg.async_mode[:2]}{cfg.procs}{cfg.path[0]}n{n}"
            t = time.monotonic()
            row = run_one(cfg, servers, n, opts, store, tag, profiler, probes)
            rows.append(row)
            print(f"  {n:4d}/proc: {fmt_row_short(row)}  ({time.monotonic() - t:.0f} s)", file=sys.stderr)
            if run_again(row, rows, opts.attempts):
                row["superseded"] = True
                queue.insert(0, n)
                print(
                    f"  the server's core was slow for {row['slow_seconds']} s of the window: running {n} again",
                    file=sys.stderr,
                )
                continue
            if opts.no_stop:
                continue
            queue = next_steps(rows, queue)
            if any(not r["holds"] for r in rows):  # narrowing a break down
                what = f"trying {queue[0]}" if queue else "next configuration"
                print(f"  {'held' if row['holds'] else '60 fps broke'} at {n} per process: {what}", file=sys.stderr)
    finally:
        servers.stop()
    return sorted(rows, key=lambda r: r["per_proc"])


def run(opts: Options, command: str, quote_from: Path = DOC) -> tuple[str, list[dict]]:
    """Measure every configuration; the report (markdown, the replay figures quoted from `quote_from`) and the rows."""
    cpus = sorted(os.sched_getaffinity(0))
    layout_notes: list[str] = []
    machine_line = machine()
    profiler = Profiler(opts.profile_dir) if opts.profile_dir is not None else None
    tmp_root = opts.keep if opts.keep else Path(tempfile.mkdtemp(prefix="bench-"))
    rows: list[dict] = []
    started = time.monotonic()
    probes = CoreProbes(cpus, tmp_root / "core-speed").start() if opts.probe else None
    try:
        for cfg in configs(opts):
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
            steps = opts.sessions or [int(x) for x in DEFAULT_SESSIONS.get(cfg.codec, "32,64").split(",")]
            print(f"{cfg.label} ({note}): {', '.join(map(str, steps))} per process", file=sys.stderr)
            rows += run_config(
                cfg,
                steps,
                opts,
                {"servers": server_cpus},
                tmp_root / f"{cfg.codec}-{cfg.async_mode}-{cfg.procs}-{cfg.path}",
                profiler,
                probes,
            )
    finally:
        if probes is not None:
            probes.stop()
        os.sched_setaffinity(0, set(cpus))
        if not opts.keep:
            shutil.rmtree(tmp_root, ignore_errors=True)
    body = report(rows, command, machine_line, time.monotonic() - started, "; ".join(layout_notes), quote_from)
    return body, rows
