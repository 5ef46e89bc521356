"""The capacity benchmark's report: the markdown tables, the summary of what held, and the text around them."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np

from benchmark.ladder import GOAL_PER_CORE, counted

SECTION = "Capacity"
REPLAY_SECTION = "Replay and video export"


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
    want = [
        i
        for i, h in enumerate(head)
        if i == 0 or "re-simulation" in h or "speed" in h or h == "length" or h.startswith("video size")
    ]
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


def report(rows: list[dict], command: str, machine_line: str, elapsed_s: float, layout: str, quote_from: Path) -> str:
    """The whole Capacity section; the replay figures are quoted from `quote_from` (docs/benchmarks.md)."""
    return "\n".join(
        [
            f"Measured by `{command}` on {machine_line}, {os.getloadavg()[0]:.1f} at the end; {layout}; "
            f"{elapsed_s / 60:.1f} minutes in all.",
            "",
            "Every simulated demonstrator plays Space Invaders as the browser client does: about four key events a "
            "second, and 48 kHz PCM16 microphone audio in 100 ms chunks carrying the paint acks, so every session "
            "records frames.csv, events.csv, speech.wav, speech_sync.csv and game_audio.wav. A step *holds* when the "
            "mean rate rounds to 60.0 fps, no session falls below 59.5 fps and the p99 frame interval at the client is "
            'under 20 ms; the goal is 64 demonstrators per core. Rows labelled "fast path" ran the server\'s '
            'eventlet fast path; "plain path" the plain `socketio.emit` path (`FAST_PATH=0` in its environment).',
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
            replay_figures(quote_from),
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
