"""The study around the game: consent, instructions, microphone check, practice, recorded episodes, completion code.

A participant's progress lives in a JSON file in the spool's study directory (server.spool), so a reload, a
reconnect or a server restart returns them to where they were. No Flask here: the socket handlers call these functions.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path

from .core.format import PARTICIPANT_RE

CONSENT, INSTRUCTIONS, MICCHECK, PRACTICE, EPISODES, DONE, DECLINED = (
    "consent",
    "instructions",
    "miccheck",
    "practice",
    "episodes",
    "done",
    "declined",
)
FREE = "free"  # no study: microphone check, then play as many episodes as you like
ORDER = (CONSENT, INSTRUCTIONS, MICCHECK, PRACTICE, EPISODES, DONE)

DEFAULT_SPEECH_INSTRUCTION = (
    'While you play, say "yes" out loud when you think your last move was good and "no" '
    "when it was bad. You may also say what you are trying to do."
)


@dataclass(frozen=True)
class StudyConfig:
    """What the researcher set (a slice of Settings)."""

    enabled: bool = False
    consent_text: str = ""
    speech_instruction: str = DEFAULT_SPEECH_INSTRUCTION
    practice_s: float = 60.0
    record_practice: bool = False
    play_s: float = 600.0
    episodes: int | None = None
    completion_code: str | None = None


class Participants:
    """Participants' progress as small JSON files, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, pid: str) -> Path:
        if not PARTICIPANT_RE.fullmatch(pid):
            raise ValueError(f"invalid participant ID {pid[:80]!r}")
        return self.dir / f"{pid}.json"

    def load(self, pid: str) -> dict | None:
        p = self._path(pid)
        return json.loads(p.read_text()) if p.exists() else None

    def save(self, rec: dict) -> None:
        p = self._path(rec["participant"])
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(rec, indent=2))
        os.replace(tmp, p)

    def delete(self, pid: str) -> bool:
        p = self._path(pid)
        if p.exists():
            p.unlink()
            return True
        return False

    def get_or_create(self, pid: str, game: str) -> dict:
        rec = self.load(pid)
        if rec is None:
            rec = {
                "participant": pid,
                "game": game,
                "stage": CONSENT,
                "created": time.time(),
                "play_s": 0.0,
                "episodes": 0,
                "practice_done": False,
                "trajectories": [],
                "code": None,
            }
        return rec


def next_stage(rec: dict, cfg: StudyConfig) -> str:
    stage = rec["stage"]
    if stage == MICCHECK and cfg.practice_s <= 0:
        return EPISODES
    i = ORDER.index(stage)
    return ORDER[min(i + 1, len(ORDER) - 1)]


def finished(rec: dict, cfg: StudyConfig) -> bool:
    if cfg.episodes is not None:
        return rec["episodes"] >= cfg.episodes
    return rec["play_s"] >= cfg.play_s - 0.5


def remaining_s(rec: dict, cfg: StudyConfig) -> float | None:
    """Seconds of recorded play left (None when the study counts episodes instead)."""
    if cfg.episodes is not None:
        return None
    return max(0.0, cfg.play_s - rec["play_s"])


def completion_code(rec: dict, cfg: StudyConfig) -> str:
    if cfg.completion_code:
        return cfg.completion_code
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))


def record_episode(rec: dict, cfg: StudyConfig, practice: bool, frames: int, traj_id: str | None) -> dict:
    """Count a finished episode; move to the next stage when the practice or the study is done."""
    if practice:
        rec["practice_done"] = True
        rec["stage"] = EPISODES
        return rec
    rec["episodes"] += 1
    rec["play_s"] = round(rec["play_s"] + frames / 60.0, 3)
    if traj_id:
        rec["trajectories"].append(traj_id)
    if finished(rec, cfg):
        rec["stage"] = DONE
        rec["code"] = rec.get("code") or completion_code(rec, cfg)
        rec["completed"] = time.time()
    return rec


def public_state(rec: dict | None, cfg: StudyConfig, game) -> dict:
    """What the page needs to show the participant's current step."""
    if not cfg.enabled or rec is None:
        return {
            "stage": FREE,
            "game": {"name": game.name, "title": game.title, "goal": game.goal, "keys": game.keys},
            "speech_instruction": cfg.speech_instruction,
        }
    out = {
        "stage": rec["stage"],
        "participant": rec["participant"],
        "game": {"name": game.name, "title": game.title, "goal": game.goal, "keys": game.keys},
        "speech_instruction": cfg.speech_instruction,
        "practice_s": cfg.practice_s,
        "progress": {
            "episodes_done": rec["episodes"],
            "episodes_total": cfg.episodes,
            "play_s": rec["play_s"],
            "play_s_total": None if cfg.episodes is not None else cfg.play_s,
            "remaining_s": remaining_s(rec, cfg),
        },
    }
    if rec["stage"] == CONSENT:
        out["consent_text"] = cfg.consent_text
    if rec["stage"] == DONE:
        out["code"] = rec["code"]
    return out
