"""The study around the game: consent, instructions, microphone check, practice, recorded episodes, completion code.

A participant's progress lives in a JSON file in the spool's study directory (server.spool), so a reload, a
reconnect or a server restart returns them to where they were. `StudyFlow` holds the transitions between the stages;
no Flask here: the socket handlers call it with the participant ID of their connection.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .core.format import PARTICIPANT_RE
from .errors import BadMessage
from .games import Game, resolve_game

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

    def all(self) -> list[tuple[dict, float]]:
        """Every stored record with its file's modification time (the study monitor)."""
        out = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                out.append((json.loads(p.read_text()), p.stat().st_mtime))
            except (OSError, ValueError):  # being replaced, or deleted meanwhile
                continue
        return out

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


@dataclass(frozen=True)
class EpisodePlan:
    """The participant's next game: whose, which, and Demonstrator.start_episode's arguments."""

    participant: str
    game: str
    practice: bool
    time_limit_s: float | None
    record: bool = True


class StudyFlow:
    """The study's stages as explicit transitions on the stored progress records.

    Each transition takes the participant ID the connection said hello with (None before `hello`), saves the record
    when the stage changes, and returns what the page shows next (`public_state`). A message that does not fit the
    stage raises BadMessage.
    """

    def __init__(
        self,
        cfg: StudyConfig,
        participants: Participants,
        first_game: str,
        next_game: Callable[[], Game],
        episode_time_limit_s: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.participants = participants
        self.first_game = first_game  # shown before a participant has a game of their own
        self.next_game = next_game  # assigns a consenting participant's game
        self.episode_time_limit_s = episode_time_limit_s

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def view(self, rec: dict | None) -> dict:
        """The page's view of a record (no study, or no record: free play)."""
        return public_state(rec, self.cfg, resolve_game(rec["game"] if rec else self.first_game))

    def record(self, pid: str | None) -> dict:
        """The participant's stored record; BadMessage before hello and consent."""
        rec = self.participants.load(pid) if pid else None
        if rec is None:
            raise BadMessage("no_participant", "send hello (and accept the consent) first")
        return rec

    def hello(self, pid: str | None) -> dict:
        """Where this participant is (a new one sees the consent form; nothing is stored before consent)."""
        if not self.enabled or pid is None:
            return self.view(None)
        rec = self.participants.load(pid)
        if rec is None:
            fresh = {"participant": pid, "stage": CONSENT, "episodes": 0, "play_s": 0.0, "code": None}
            return public_state(fresh, self.cfg, resolve_game(self.first_game))
        return self.view(rec)

    def consent(self, pid: str | None, accept: bool) -> dict:
        """consent -> instructions (the record is created, with the participant's game), or declined (no record)."""
        if not self.enabled or pid is None:
            raise BadMessage("no_participant", "send hello first")
        rec = self.participants.load(pid)
        if rec is not None:
            return self.view(rec)
        if not accept:
            return {"stage": DECLINED}
        rec = self.participants.get_or_create(pid, self.next_game().name)
        rec["stage"] = INSTRUCTIONS
        rec["consented"] = time.time()
        self.participants.save(rec)
        return self.view(rec)

    def instructions_done(self, pid: str | None) -> dict:
        """instructions -> miccheck; at any other stage nothing changes."""
        rec = self.record(pid)
        if rec["stage"] == INSTRUCTIONS:
            rec["stage"] = next_stage(rec, self.cfg)
            self.participants.save(rec)
        return self.view(rec)

    def mic_ok(self, pid: str | None, audio: dict | None) -> dict:
        """miccheck -> practice (or episodes when there is no practice), keeping the microphone's description."""
        rec = self.record(pid)
        if rec["stage"] == MICCHECK:
            if audio is not None:
                rec["audio"] = audio
            rec["stage"] = next_stage(rec, self.cfg)
            self.participants.save(rec)
        return self.view(rec)

    def plan_episode(self, pid: str | None) -> EpisodePlan:
        """The practice round or the next recorded episode; BadMessage at a stage without a game."""
        rec = self.record(pid)
        if rec["stage"] not in (PRACTICE, EPISODES):
            raise BadMessage("wrong_stage", f"there is no game to start at the {rec['stage']} step")
        if rec["stage"] == PRACTICE:
            return EpisodePlan(rec["participant"], rec["game"], True, self.cfg.practice_s, self.cfg.record_practice)
        limit = remaining_s(rec, self.cfg)
        cap = self.episode_time_limit_s
        if cap:
            limit = min(limit, cap) if limit is not None else cap
        return EpisodePlan(rec["participant"], rec["game"], False, limit)

    def episode_ended(self, pid: str, practice: bool, frames: int, traj_id: str | None) -> dict | None:
        """practice -> episodes; episodes -> done once the study's play time or episode count is reached."""
        rec = self.participants.load(pid)
        if rec is None:  # deleted meanwhile (the researcher's delete script)
            return None
        rec = record_episode(rec, self.cfg, practice, frames, traj_id)
        self.participants.save(rec)
        return self.view(rec)
