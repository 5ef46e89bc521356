"""Where a loaded server's time goes, part by part: timers around the parts of the tick and of the receive path.

    python scripts/tick_parts.py --sessions 64 --duration 10

Starts a server (pinned to CPU 0, a temporary local store) with wall-clock timers around the emulator step, the frame
codec, sending, the socket write, the recorder and the handling of incoming messages, drives it with the load
generator (pinned to CPU 1), and prints, for a window in the middle of the run, the server's CPU per frame and each
part's time per frame, calls per second and time per call. The timers themselves cost a few percent, so the total is
a little higher than `scripts/bench.py` reports. Parts nest (the tick contains the step, the codec and the send).
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (module, class or None, attribute): the parts timed.
PARTS = [
    ("server.core.loop", "Demonstrator", "tick"),
    ("server.core.emulator", "EmulatorSession", "step"),
    ("server.core.codec", "XorDeflateCodec", "encode"),
    ("server.core.loop", "Demonstrator", "send"),
    ("server.web.transport", None, "_send_some"),
    ("server.core.recorder", "RecordingWriter", "append_step"),
    ("server.core.recorder", "RecordingWriter", "append_game_audio"),
    ("server.core.recorder", "RecordingWriter", "flush"),
    ("engineio.socket", "Socket", "receive"),
    ("server.core.loop", "Demonstrator", "audio_chunk"),
    ("server.core.loop", "Demonstrator", "painted"),
]


def _instrument() -> None:
    """In the server process: wrap every part, and report on SIGUSR1 (first signal: start, second: end and exit)."""
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

    def report(*_):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        if not start:
            start.update(t=clock(), cpu=cpu, spent=dict(spent), calls=dict(calls))
            return
        wall = clock() - start["t"]
        ticks = calls["Demonstrator.tick"] - start["calls"].get("Demonstrator.tick", 0)
        cpu = cpu - start["cpu"]
        lines = [f"window {wall:.1f} s: server CPU {cpu / wall * 100:.0f}% of a core, {ticks / wall:.0f} frames/s, "
                 f"{cpu / max(ticks, 1) * 1e6:.0f} us of CPU per frame",
                 f"{'part':32s} {'us/frame':>9s} {'calls/s':>9s} {'us/call':>8s}"]
        for label in sorted(spent, key=lambda k: start["spent"].get(k, 0) - spent[k]):
            d = spent[label] - start["spent"].get(label, 0)
            n = calls[label] - start["calls"].get(label, 0)
            lines.append(f"{label:32s} {d / max(ticks, 1) * 1e6:9.1f} {n / wall:9.0f} {d / max(n, 1) * 1e6:8.1f}")
        Path(os.environ["TICK_PARTS_OUT"]).write_text("\n".join(lines) + "\n")
        os._exit(0)

    signal.signal(signal.SIGUSR1, report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--port", type=int, default=5097)
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--loadgen-cpu", default="1")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tick-parts-") as tmp:
        out = Path(tmp) / "parts.txt"
        env = {**os.environ, "TICK_PARTS_OUT": str(out), "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen(
            ["taskset", "-c", args.server_cpu, sys.executable, __file__, "--as-server", "--port", str(args.port),
             "--store", str(Path(tmp) / "store"), "--max-demonstrators", str(args.sessions + 8)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(4)
            warmup, settle = 4.0, 3.0
            load = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "loadgen.py"), "--url", f"http://127.0.0.1:{args.port}",
                 "--sessions", str(args.sessions), "--duration", str(args.duration + 2 * settle), "--warmup",
                 str(warmup), "--cpu", args.loadgen_cpu], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
            # the sessions join (about 1 s per 16), warm up and restart; the window sits inside the measured part
            time.sleep(args.sessions / 16 + warmup + 2 * settle)
            server.send_signal(signal.SIGUSR1)
            time.sleep(args.duration)
            server.send_signal(signal.SIGUSR1)
            server.wait(timeout=30)
            load.wait(timeout=120)
        finally:
            if server.poll() is None:
                server.kill()
        if not out.exists():
            print("the server did not report (see its output by running it by hand)", file=sys.stderr)
            return 1
        print(f"{args.sessions} demonstrators, server on CPU {args.server_cpu}, load generator on CPU "
              f"{args.loadgen_cpu}")
        print(out.read_text(), end="")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--as-server":
        import runpy

        sys.argv = ["server", *sys.argv[2:]]
        _instrument()
        runpy.run_module("server", run_name="__main__")
    else:
        sys.exit(main())
