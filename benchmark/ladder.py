"""The capacity benchmark's ladder: when a step holds, which step comes next, and which attempts count."""

from __future__ import annotations

BISECT_TO = 4  # per process: how closely the break is narrowed down between two steps of the ladder
GOAL_PER_CORE = 64


def holds(row: dict) -> bool:
    return (
        round(row["fps_mean"], 1) >= 60.0
        and row["fps_min"] >= 59.5
        and row.get("interval_p99", 1e9) < 20.0
        and not row["refused"]
    )


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
