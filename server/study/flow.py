"""The study as a state machine: `StudyFlow` moves a participant's record from stage to stage."""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BadMessage
from ..games import Game, resolve_game
from ..spool import STUDY_LOG
from .config import (
    CONSENT,
    DECLINED,
    DONE,
    EPISODES,
    FAILED,
    FREE,
    INSTRUCTIONS,
    MICCHECK,
    ORDER,
    OUTCOME_OF,
    PRACTICE,
    SCREENED,
    StudyConfig,
    entry_failures,
)
from .records import Participants, StudyLog

log = logging.getLogger("server.study")


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
        if rec["stage"] == PRACTICE:
            rec["stage"] = EPISODES
        return rec
    rec["episodes"] += 1
    rec["play_s"] = round(rec["play_s"] + frames / 60.0, 3)
    if traj_id:
        rec["trajectories"].append(traj_id)
    if rec["stage"] != EPISODES:  # ended by a failure meanwhile: counted, but the outcome stays
        return rec
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
            "checks": cfg.thresholds(),
        }
    out: dict = {
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
        "checks": cfg.thresholds(),
    }
    if rec["stage"] == CONSENT:
        out["consent_text"] = cfg.consent_text
        out["consent_html"] = cfg.consent_html
    if rec["stage"] == DONE:
        out["code"] = rec["code"]
    if rec["stage"] in OUTCOME_OF:
        out["outcome"] = cfg.outcome(OUTCOME_OF[rec["stage"]], rec["code"] if rec["stage"] == DONE else None)
    if rec["stage"] == FAILED:
        out["reason"] = rec.get("failure")
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
    stage raises BadMessage. Before consent nothing is stored but the study log's line of an outcome: what the page
    measured and where the participant came from wait in memory (`pending`) until they consent.
    """

    #: participants who said hello but have not consented yet, remembered (recruitment, entry checks) at most
    MAX_PENDING = 10_000

    def __init__(
        self,
        cfg: StudyConfig,
        participants: Participants,
        first_game: str,
        next_game: Callable[[], Game],
        episode_time_limit_s: float | None = None,
        study_log: StudyLog | None = None,
    ) -> None:
        self.cfg = cfg
        self.participants = participants
        self.first_game = first_game  # shown before a participant has a game of their own
        self.next_game = next_game  # assigns a consenting participant's game
        self.episode_time_limit_s = episode_time_limit_s
        self.log = study_log or StudyLog(participants.dir / STUDY_LOG)
        self.pending: OrderedDict[str, dict] = OrderedDict()

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

    def _pending(self, pid: str) -> dict:
        p = self.pending.pop(pid, None) or {}
        self.pending[pid] = p
        while len(self.pending) > self.MAX_PENDING:
            self.pending.popitem(last=False)
        return p

    def _fresh(self, pid: str) -> dict:
        fresh = {"participant": pid, "stage": CONSENT, "episodes": 0, "play_s": 0.0, "code": None}
        return public_state(fresh, self.cfg, resolve_game(self.first_game))

    def hello(self, pid: str | None, recruitment: dict | None = None) -> dict:
        """Where this participant is (a new one sees the consent form; nothing is stored before consent). A
        participant who completed is told so (`already: true`), unless repeats are allowed: then they start over."""
        if not self.enabled or pid is None:
            return self.view(None)
        if recruitment:
            self._pending(pid)["recruitment"] = recruitment
        rec = self.participants.load(pid)
        if rec is None:
            return self._fresh(pid)
        if rec["stage"] == DONE and self.cfg.allow_repeat:
            self.participants.archive(pid)
            return self._fresh(pid)
        view = self.view(rec)
        if rec["stage"] == DONE:
            view["already"] = True
        return view

    def entry_checks(self, pid: str | None, measured: dict, reported: list[str], give_up: bool) -> dict:
        """The page's entry checks, before consent. Passed: the measurements wait for the consent (then they go into
        the record and every trajectory's meta.json). Failed: the page explains what to change (`entry.reasons`);
        `give_up` (nothing can be changed) is the screened-out outcome, of which only the reasons are logged."""
        reasons = entry_failures(measured, reported, self.cfg)
        if pid is None or not self.enabled:
            return {**self.view(None), "entry": {"ok": not reasons, "reasons": reasons}}
        rec = self.participants.load(pid)
        if rec is not None:  # consented already: the checks are behind them
            return self.view(rec)
        pending = self._pending(pid)
        if not reasons:
            pending["entry_checks"] = measured
            return {**self._fresh(pid), "entry": {"ok": True, "reasons": []}}
        if not give_up:
            return {**self._fresh(pid), "entry": {"ok": False, "reasons": reasons}}
        self.pending.pop(pid, None)
        self.log.write("screened", pid, pending.get("recruitment"), reasons=reasons)
        return {"stage": SCREENED, "reasons": reasons, "outcome": self.cfg.outcome("screened")}

    def consent(self, pid: str | None, accept: bool) -> dict:
        """consent -> instructions (the record is created, with the participant's game), or declined (no record)."""
        if not self.enabled or pid is None:
            raise BadMessage("no_participant", "send hello first")
        rec = self.participants.load(pid)
        if rec is not None:
            return self.view(rec)
        pending = self.pending.pop(pid, None) or {}
        if not accept:
            self.log.write("declined", pid, pending.get("recruitment"))
            return {"stage": DECLINED, "outcome": self.cfg.outcome("declined")}
        rec = self.participants.get_or_create(pid, self.next_game().name)
        rec["stage"] = INSTRUCTIONS
        rec["consented"] = time.time()
        for key in ("recruitment", "entry_checks"):
            if pending.get(key):
                rec[key] = pending[key]
        self.participants.save(rec)
        self.log.write("consented", pid, rec.get("recruitment"), game=rec["game"])
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

    def fail(self, pid: str | None, reason: str) -> dict:
        """A technical failure the participant cannot get past (the microphone stopped, the server cannot record):
        the failure outcome. A study already over keeps its outcome."""
        rec = self.record(pid)
        if rec["stage"] not in OUTCOME_OF:
            rec["stage"] = FAILED
            rec["failure"] = reason
            rec["failed"] = time.time()
            self.participants.save(rec)
            self.log.write("failed", rec["participant"], rec.get("recruitment"), reason=reason)
        return self.view(rec)

    def client_info(self, pid: str | None) -> dict:
        """What meta.json's `client` carries from the study: where the participant came from and what the entry
        checks measured."""
        rec = self.participants.load(pid) if pid else None
        return {k: rec[k] for k in ("recruitment", "entry_checks") if rec and rec.get(k)}

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
        before = rec["stage"]
        rec = record_episode(rec, self.cfg, practice, frames, traj_id)
        self.participants.save(rec)
        if rec["stage"] == DONE and before != DONE:
            self.log.write("completed", pid, rec.get("recruitment"), code=rec["code"], trajectories=rec["trajectories"])
        return self.view(rec)
