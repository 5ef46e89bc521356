"""How fast each core of this machine runs a fixed emulator workload, second by second.

    python scripts/core_speed.py --duration 30      # check a machine before a study (or a benchmark)

A shared virtual machine does not give the same speed all the time. On the machine docs/benchmarks.md was measured
on, each core runs the same emulator steps about 1.5 times slower for stretches of one to five seconds, about a third
of the time, the two cores independently. A server at 85% of a core needs 130% of it during such a stretch, and its
games fall behind: the benchmark's p99 frame interval then says more about the machine than about the server.

A probe (one process per core, pinned to it: `python -m benchmark.probe OUT`) steps 8 Space Invaders emulators once
every 0.1 s and writes the CPU time a step took (its thread's CPU time, so being preempted does not count; a slow core
does). The probe runs under SCHED_IDLE: it only gets the core when nothing else wants it, so it never delays a server
sharing the core, and costs under 1% of it. The capacity benchmark (benchmark.run) runs one on each server core
during its steps and reports, per step, how many seconds of the measured window the core was slow (a second's median
step 1.2 times the core's fastest second or more).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EMULATORS = 8
INTERVAL_S = 0.1
SLOW_FACTOR = 1.2  # a second is slow when its median step takes this many times the reference or more


def probe(out: Path, interval_s: float = INTERVAL_S, emulators: int = EMULATORS) -> None:
    """The probe's loop (in its own process, pinned by the caller): one line `monotonic_s us_per_step` per round,
    until SIGTERM, or until its parent is gone (a benchmark killed outright leaves no probe running)."""
    from ale_py import ALEInterface, LoggerMode, roms

    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed: the lowest priority there is instead
        os.nice(19)
    ALEInterface.setLoggerMode(LoggerMode.Error)
    emus = []
    for i in range(emulators):
        ale = ALEInterface()
        ale.setInt("random_seed", i)
        ale.setFloat("repeat_action_probability", 0.0)
        ale.loadROM(str(roms.get_rom_path("space_invaders")))
        ale.reset_game()
        emus.append(ale)
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 18, 1024)]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    parent = os.getppid()
    k = 0
    with open(out, "w", buffering=1) as f:
        nxt = time.monotonic()
        while not stop and os.getppid() == parent:
            t, c = time.monotonic(), time.thread_time()
            for ale in emus:
                ale.act(actions[k % len(actions)])
                k += 1
                if ale.game_over():
                    ale.reset_game()
            f.write(f"{t:.4f} {(time.thread_time() - c) / len(emus) * 1e6:.2f}\n")
            nxt = max(nxt + interval_s, time.monotonic())  # a round the probe missed (core busy) is not made up
            time.sleep(max(nxt - time.monotonic(), 0.0))


def per_second(samples: np.ndarray, t0: float | None = None, t1: float | None = None) -> np.ndarray:
    """Median step time (us) of each whole second in [t0, t1) (all samples when not given); a second without samples
    (the core never idle enough for the probe) is NaN."""
    if samples.size == 0:
        return np.empty(0)
    t0 = samples[0, 0] if t0 is None else t0
    t1 = samples[-1, 0] if t1 is None else t1
    n = int((t1 - t0) // 1.0)
    out = np.full(n, np.nan)
    idx = ((samples[:, 0] - t0) // 1.0).astype(int)
    for s in range(n):
        v = samples[idx == s, 1]
        if v.size:
            out[s] = np.median(v)
    return out


def reference(samples: np.ndarray) -> float | None:
    """A core's fast speed: its fastest second (per-second median) over everything the probe saw. Like timeit's
    best of several runs: a fixed workload does not run faster than the hardware allows, only slower."""
    sec = per_second(samples)
    sec = sec[~np.isnan(sec)]
    return float(sec.min()) if sec.size else None


def window_figures(samples: np.ndarray, t0: float, t1: float, ref: float | None) -> dict:
    """For one measured window: the median step (us), the seconds it spans, how many were slow, and how many had no
    sample at all (the core fully busy: counted apart, as that is the load, not the machine)."""
    sec = per_second(samples, t0, t1)
    seen = sec[~np.isnan(sec)]
    slow = int((seen >= SLOW_FACTOR * ref).sum()) if ref else 0
    return {
        "us_per_step": float(np.median(seen)) if seen.size else float("nan"),
        "seconds": int(sec.size),
        "slow_seconds": slow,
        "unsampled_seconds": int(np.isnan(sec).sum()),
        "reference_us": ref,
    }


def load(path: Path) -> np.ndarray:
    """The samples written so far: (n, 2) of monotonic seconds and us per step."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    try:
                        rows.append((float(parts[0]), float(parts[1])))
                    except ValueError:
                        pass  # a line being written
    except FileNotFoundError:
        pass
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


class CoreProbes:
    """One probe process per core in `cpus`, while the context is open."""

    def __init__(self, cpus: list[int], out_dir: Path) -> None:
        self.cpus = list(cpus)
        self.out_dir = out_dir
        self.procs: dict[int, subprocess.Popen] = {}

    def path(self, cpu: int) -> Path:
        return self.out_dir / f"core{cpu}.txt"

    def start(self) -> CoreProbes:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for cpu in self.cpus:
            self.procs[cpu] = subprocess.Popen(
                [sys.executable, "-m", "benchmark.probe", str(self.path(cpu))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=functools.partial(os.sched_setaffinity, 0, {cpu}),
            )
        return self

    def samples(self, cpu: int) -> np.ndarray:
        return load(self.path(cpu))

    def window(self, t0: float, t1: float) -> dict[int, dict]:
        """window_figures for every core, each against its own reference so far."""
        out = {}
        for cpu in self.cpus:
            s = self.samples(cpu)
            out[cpu] = window_figures(s, t0, t1, reference(s))
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> CoreProbes:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def watch(cpus: list[int], duration_s: float) -> str:
    """Probe `cpus` for `duration_s` and describe every second of each (scripts/core_speed.py)."""
    with tempfile.TemporaryDirectory(prefix="core-speed-") as tmp, CoreProbes(cpus, Path(tmp)) as probes:
        time.sleep(duration_s + 1.5)  # the probes load their ROMs first
        results = {cpu: probes.samples(cpu) for cpu in cpus}
    lines = [
        f"{EMULATORS} Space Invaders emulators stepped every {INTERVAL_S:g} s on each core; per second: the median "
        f"CPU time of a step (us); * marks a slow second ({SLOW_FACTOR:g}x the core's fastest second or more)"
    ]
    for cpu, s in results.items():
        ref = reference(s)
        if ref is None:
            lines.append(f"CPU {cpu}: no samples")
            continue
        sec = per_second(s)
        slow = int((sec >= SLOW_FACTOR * ref).sum())
        lines.append(f"CPU {cpu}: fastest second {ref:.0f} us, {slow} of {sec.size} seconds slow")
        lines.append(
            "  " + " ".join("–" if np.isnan(v) else f"{v:.0f}{'*' if v >= SLOW_FACTOR * ref else ''}" for v in sec)
        )
    return "\n".join(lines)


if __name__ == "__main__":  # one probe: CoreProbes starts it pinned to its core
    probe(Path(sys.argv[1]))
