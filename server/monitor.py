"""The study monitor's data: where every participant is, over every process sharing the spool (no Flask here).

Each server process keeps `LiveParticipants` (who said hello, their stage and since when, who declined; one log line
per stage change) and publishes `snapshot()` of it, with its demonstrators' frame rate and latency, as a small JSON
file in the spool every second or two (`Spool.publish_live`). `/api/monitor` (server/web/admin.py) merges this
process's snapshot, the other processes' files and the participants' progress records into `monitor_view()`: the
funnel and one row per participant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from .core.demonstrator import COUNTDOWN, ENDING, PLAYING
from .study import CONSENT, DECLINED, DONE, EPISODES, FREE, INSTRUCTIONS, MICCHECK, PRACTICE

log = logging.getLogger("server.study")

SCREENED_OUT = "screened_out"  # set by the entry checks (issue 18) as a record's stage or outcome
DROPPED = "dropped"

#: The funnel, in order: how many reached each step (the last three are ways out).
FUNNEL = ("entered", "consented", "miccheck", "practice", "playing", "completed", "declined", "screened_out", "dropped")
_REACHED = {CONSENT: 0, INSTRUCTIONS: 1, MICCHECK: 2, PRACTICE: 3, EPISODES: 4, FREE: 4, DONE: 5}
_STEP_INDEX = {"entered": 0, "consented": 1, "miccheck": 2, "practice": 3, "playing": 4, "completed": 5}
#: Statuses nobody is stuck in: the participant is finished one way or another.
_FINAL = ("completed", "declined", SCREENED_OUT, DROPPED)
#: Forget a participant who left this long ago (their record, if they consented, stays on disk).
FORGET_AFTER_S = 24 * 3600.0


class LiveParticipants:
    """This process's participants since start-up, by participant ID: stage, since when, last seen, connected."""

    def __init__(self) -> None:
        self.by_pid: dict[str, dict] = {}

    def stage(self, pid: str, stage: str, now: float | None = None) -> None:
        """The participant is at `stage` (what their page was just told); a change is logged and timed."""
        now = time.time() if now is None else now
        p = self.by_pid.get(pid)
        if p is None:
            p = self.by_pid[pid] = {"stage": None, "since": now, "active": now, "entered": now}
        if p["stage"] != stage:
            log.info("participant %s: %s -> %s", pid, p["stage"] or "entered", stage)
            p["stage"], p["since"] = stage, now
        p["active"] = p["last_seen"] = now
        p["connected"] = True

    def active(self, pid: str, now: float | None = None) -> None:
        """The participant did something that counts as progress (an episode started or ended)."""
        p = self.by_pid.get(pid)
        if p is not None:
            p["active"] = p["last_seen"] = time.time() if now is None else now

    def disconnected(self, pid: str, now: float | None = None) -> None:
        p = self.by_pid.get(pid)
        if p is not None:
            p["connected"] = False
            p["last_seen"] = time.time() if now is None else now

    def prune(self, now: float) -> None:
        gone = [k for k, p in self.by_pid.items() if not p.get("connected") and now - p["last_seen"] > FORGET_AFTER_S]
        for pid in gone:
            del self.by_pid[pid]


def snapshot(process: str, live: LiveParticipants, demonstrators: Iterable, now: float | None = None) -> dict:
    """This process's participants as the monitor needs them (what `Spool.publish_live` writes)."""
    now = time.time() if now is None else now
    live.prune(now)
    rows: dict[str, dict] = {
        pid: {
            "participant": pid,
            "stage": p["stage"],
            "since": p["since"],
            "active": p["active"],
            "last_seen": p["last_seen"],
            "connected": p.get("connected", False),
        }
        for pid, p in live.by_pid.items()
    }
    for d in demonstrators:
        if d.gone:
            continue
        row = rows.setdefault(
            d.participant,
            {"participant": d.participant, "stage": FREE, "since": now, "active": now, "last_seen": now},
        )
        playing = d.state in (PLAYING, COUNTDOWN, ENDING)
        row.update(
            {
                "connected": d.connected,
                "last_seen": now if d.connected else row["last_seen"],
                "game": d.game.name,
                "traj_id": d.traj_id if d.writer is not None else None,
                "episode_state": d.state if d.connected else "disconnected",
                "practice": d.practice,
                "in_episode": playing,
                # while playing: the frame rate the Ticker achieved, and the client's round trip (its `rtt` event)
                "fps": round(d.measured_fps(), 1) if playing else None,
                "rtt_ms": round(d.rtt_ms, 1) if playing and d.rtt_ms is not None else None,
                "ack_lag_ms": d.connection_status().get("ack_lag_ms") if playing else None,
                # seconds of voice activity in this episode so far (server.core.voice)
                "voiced_s": _voiced_seconds(d) if playing else None,
                "mic_level": d.mic_level,
            }
        )
        if playing:
            row["active"] = now
    return {"process": process, "updated": now, "participants": list(rows.values())}


def _voiced_seconds(d) -> float | None:
    speech = d.writer.speech if d.writer is not None else None
    return speech.voiced_seconds if speech is not None else None


def _merge(snapshots: Iterable[dict]) -> dict[str, dict]:
    """One row per participant over every process: the most recently seen one wins (a participant reconnecting
    through nginx may land on another process)."""
    out: dict[str, dict] = {}
    for snap in snapshots:
        for row in snap.get("participants", []):
            pid = row.get("participant")
            if not isinstance(pid, str):
                continue
            prev = out.get(pid)
            if prev is None or (row.get("connected"), row.get("last_seen", 0)) > (
                prev.get("connected"),
                prev.get("last_seen", 0),
            ):
                out[pid] = {**row, "process": snap.get("process")}
    return out


def monitor_view(
    snapshots: Iterable[dict],
    records: Iterable[tuple[dict, float]],
    stuck_after_s: float,
    dropped_after_s: float,
    now: float | None = None,
) -> dict:
    """The funnel and the participants' rows. `records` are the progress files with their modification times (a
    participant who consented); `snapshots` the live files of every process (anyone who said hello)."""
    now = time.time() if now is None else now
    live = _merge(snapshots)
    rows: dict[str, dict] = {}
    for rec, mtime in records:
        pid = rec.get("participant")
        if not isinstance(pid, str):
            continue
        row = live.pop(pid, None) or {"participant": pid, "connected": False, "since": mtime, "active": mtime}
        row.setdefault("last_seen", mtime)
        row["last_seen"] = max(row.get("last_seen") or 0, mtime)
        row["stage"] = rec.get("stage", row.get("stage"))
        row["episodes"] = rec.get("episodes", 0)
        row["play_s"] = rec.get("play_s", 0.0)
        row["game"] = row.get("game") or rec.get("game")
        row["trajectories"] = rec.get("trajectories", [])
        row["outcome"] = rec.get("outcome") or (SCREENED_OUT if rec.get("stage") == SCREENED_OUT else None)
        row["code"] = rec.get("code")
        rows[pid] = row
    for pid, row in live.items():  # said hello, no record: before consent, declined, or free play
        rows[pid] = {**row, "episodes": row.get("episodes", 0)}
    funnel = dict.fromkeys(FUNNEL, 0)
    now_in = dict.fromkeys(FUNNEL, 0)
    for row in rows.values():
        stage = row.get("stage") or CONSENT
        outcome = row.get("outcome")
        last_seen = row.get("last_seen") or 0
        finished = stage in (DONE, DECLINED, SCREENED_OUT) or outcome == SCREENED_OUT
        if not finished and not row.get("connected") and now - last_seen > dropped_after_s:
            row["status"] = DROPPED
        elif stage == DECLINED:
            row["status"] = "declined"
        elif stage == SCREENED_OUT or outcome == SCREENED_OUT:
            row["status"] = SCREENED_OUT
        elif stage == DONE:
            row["status"] = "completed"
        elif stage in (EPISODES, FREE):
            row["status"] = "playing"
        else:
            row["status"] = {CONSENT: "entered", INSTRUCTIONS: "consented"}.get(stage, stage)
        funnel["entered"] += 1
        reached = _REACHED.get(stage, 0)
        for step, i in _STEP_INDEX.items():
            if 0 < i <= reached and not (stage == FREE and step in ("consented", "miccheck", "practice")):
                funnel[step] += 1
        for way_out in ("declined", SCREENED_OUT, DROPPED):
            if row["status"] == way_out:
                funnel[way_out] += 1
        now_in[row["status"]] = now_in.get(row["status"], 0) + 1
        row["time_in_stage_s"] = round(now - (row.get("since") or now), 1)
        idle = now - (row.get("active") or row.get("since") or now)
        row["stuck"] = row["status"] not in _FINAL and not row.get("in_episode") and idle > stuck_after_s
    ordered = sorted(rows.values(), key=lambda r: (not r.get("stuck"), -(r.get("last_seen") or 0)))
    return {"funnel": funnel, "now": now_in, "participants": ordered, "stuck_after_s": stuck_after_s}
