"""Where a loaded server's time goes, part by part: timers around the parts of the tick and of the receive path.

    python scripts/tick_parts.py --sessions 64 --duration 10

Starts a server (`python -m benchmark.parts SERVER-ARGS`: the server with the timers installed; pinned to CPU 0, a
temporary local store) with wall-clock timers around the emulator step, the frame codec, sending, the socket write,
the recorder and the handling of incoming messages, drives it with the load generator (pinned to CPU 1), and prints,
for the benchmark's measured window (`benchmark.loadgen.run_step`), the server's CPU per frame and each part's time
per frame, calls per second and time per call. The timers themselves cost a few percent, so the total is a little
higher than `scripts/bench.py` reports. Parts nest: a pass of the Ticker (`tick_due`) holds the games' `step` (keys,
emulator) and `_after_step` (recorder, codec, send). Last, the garbage collector's pauses by generation: each one
stops every game of the process, so they show in the p99 frame interval although they cost little CPU.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark import ROOT
from benchmark.loadgen import run_step
from benchmark.nginx import free_port
from benchmark.servers import wait_ready

#: (module, class or None, attribute): the parts timed.
PARTS = [
    ("server.core.ticker", "Ticker", "tick_due"),
    ("server.core.demonstrator", "Demonstrator", "step"),
    ("server.core.demonstrator", "Demonstrator", "_after_step"),
    ("server.core.emulator", "EmulatorSession", "step"),
    ("server.core.codec", "XorDeflateCodec", "encode"),
    ("server.core.demonstrator", "Demonstrator", "send"),
    ("server.web.fastpath.writing", None, "_send_some"),
    ("server.core.recorder", "RecordingWriter", "append_step"),
    ("server.core.recorder", "RecordingWriter", "append_game_audio"),
    ("server.core.recorder", "RecordingWriter", "flush"),
    ("engineio.socket", "Socket", "receive"),
    ("server.core.demonstrator", "Demonstrator", "audio_chunk"),
    ("server.core.demonstrator", "Demonstrator", "painted"),
]


class GcPauses:
    """The garbage collector's pauses by generation, from `gc.callbacks`, while it is `installed`."""

    def __init__(self, clock=time.perf_counter) -> None:
        self.clock = clock
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started: float | None = None

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = self.clock()
        elif self._started is not None:
            self.pauses[info["generation"]].append(self.clock() - self._started)
            self._started = None

    def mark(self) -> dict[int, int]:
        return {g: len(p) for g, p in self.pauses.items()}

    def lines(self, since: dict[int, int], wall: float) -> list[str]:
        """One line per generation for the pauses after `since` (a `mark()`), over `wall` seconds."""
        out = []
        for g, p in self.pauses.items():
            new = p[since.get(g, 0) :]
            if not new:
                out.append(f"gc gen{g}: no collection")
                continue
            out.append(
                f"gc gen{g}: {len(new) / wall:.1f}/s, pause mean {sum(new) / len(new) * 1e3:.2f} ms, "
                f"max {max(new) * 1e3:.2f} ms"
            )
        return out


def _instrument() -> None:
    """In the server process: wrap every part, and report on SIGUSR1 (first signal: the window starts, second: it
    ends and the report is written)."""
    import importlib
    import resource

    clock = time.perf_counter
    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()

    for module, cls, name in PARTS:
        owner = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        original = getattr(owner, name)
        label = f"{cls}.{name}" if cls else name

        def timed(*args, _original=original, _label=label, **kwargs):
            t = clock()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_label] += clock() - t
                calls[_label] += 1

        setattr(owner, name, timed)

    start: dict = {}
    gc_pauses = GcPauses(clock)
    gc_pauses.install()

    def report(*_):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        if not start:
            start.update(t=clock(), cpu=cpu, spent=dict(spent), calls=dict(calls), gc=gc_pauses.mark())
            return
        wall = clock() - start["t"]
        ticks = calls["EmulatorSession.step"] - start["calls"].get("EmulatorSession.step", 0)  # one per frame
        cpu = cpu - start["cpu"]
        lines = [
            f"window {wall:.1f} s: server CPU {cpu / wall * 100:.0f}% of a core, {ticks / wall:.0f} frames/s, "
            f"{cpu / max(ticks, 1) * 1e6:.0f} us of CPU per frame",
            f"{'part':32s} {'us/frame':>9s} {'calls/s':>9s} {'us/call':>8s}",
        ]
        for label in sorted(spent, key=lambda k: start["spent"].get(k, 0) - spent[k]):
            d = spent[label] - start["spent"].get(label, 0)
            n = calls[label] - start["calls"].get(label, 0)
            lines.append(f"{label:32s} {d / max(ticks, 1) * 1e6:9.1f} {n / wall:9.0f} {d / max(n, 1) * 1e6:8.1f}")
        lines += ["", *gc_pauses.lines(start["gc"], wall)]
        Path(os.environ["TICK_PARTS_OUT"]).write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, report)


def profile(sessions: int = 64, duration_s: float = 10.0, server_cpu: int = 0, loadgen_cpu: int = 1) -> str | None:
    """Run an instrumented server under `sessions` demonstrators and return its report (None, with the server's log
    on stderr, when it did not report)."""
    with tempfile.TemporaryDirectory(prefix="tick-parts-") as tmp:
        out, log_path, port = Path(tmp) / "parts.txt", Path(tmp) / "server.log", free_port()
        env = {**os.environ, "TICK_PARTS_OUT": str(out), "PYTHONWARNINGS": "ignore"}
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmark.parts",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--store",
                    str(Path(tmp) / "store"),
                    "--max-demonstrators",
                    str(sessions + 8),
                    "--log-level",
                    "WARNING",
                    "--max-connects-per-s",
                    "0",  # the load generator's sessions all connect from 127.0.0.1 at once
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: os.sched_setaffinity(0, {server_cpu}),
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, server, log_path)
            os.sched_setaffinity(0, {loadgen_cpu})  # this process is the load generator
            # the window is the benchmark's: after the warm-up, the restart of every episode and a settling time
            asyncio.run(
                run_step(
                    url,
                    sessions,
                    duration_s,
                    warmup_s=4.0,
                    settle_s=3.0,
                    on_window=lambda edge: server.send_signal(signal.SIGUSR1),
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
        if not out.exists():
            print(f"the server did not report:\n{log_path.read_text()}", file=sys.stderr)
            return None
        return f"{sessions} demonstrators, server on CPU {server_cpu}, load generator on CPU {loadgen_cpu}\n" + (
            out.read_text()
        )


if __name__ == "__main__":  # the server, with the timers: profile() starts it as `python -m benchmark.parts ARGS`
    import runpy

    sys.argv = ["server", *sys.argv[1:]]
    _instrument()
    runpy.run_module("server", run_name="__main__")
