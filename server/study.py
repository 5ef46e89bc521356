"""The study around the game: entry checks, consent, instructions, microphone check, practice, recorded episodes,
and the outcome handed back to the recruiting platform (completed, declined, screened out, technical failure).

A participant's progress lives in a JSON file in the spool's study directory (server.spool), so a reload, a
reconnect or a server restart returns them to where they were. Outcomes are also appended to the study log (the
spool's `study_log`, one JSON object a line), which is all that is kept of a participant who declines or is screened
out. `StudyFlow` holds the transitions between the stages; no Flask here: the socket handlers call it with the
participant ID of their connection.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .core.format import PARTICIPANT_RE
from .errors import BadMessage
from .games import Game, resolve_game
from .spool import STUDY_LOG

CONSENT, INSTRUCTIONS, MICCHECK, PRACTICE, EPISODES, DONE, DECLINED = (
    "consent",
    "instructions",
    "miccheck",
    "practice",
    "episodes",
    "done",
    "declined",
)
SCREENED, FAILED = "screened", "failed"
FREE = "free"  # no study: microphone check, then play as many episodes as you like
ORDER = (CONSENT, INSTRUCTIONS, MICCHECK, PRACTICE, EPISODES, DONE)
#: the stages that end the study, and the outcome (its code and URL) each hands back to the recruiting platform
OUTCOME_OF = {DONE: "completed", DECLINED: "declined", SCREENED: "screened", FAILED: "failed"}

#: why an entry check failed; the page explains each (client/checks.js)
ENTRY_REASONS = ("insecure", "browser", "window", "refresh", "rtt")
#: why a participant could not go on (`failure` event, or the server could not record)
FAILURE_REASONS = ("microphone", "server")

log = logging.getLogger(__name__)

DEFAULT_SPEECH_INSTRUCTION = (
    'While you play, say "yes" out loud when you think your last move was good and "no" '
    "when it was bad. You may also say what you are trying to do."
)


@dataclass(frozen=True)
class Outcome:
    """An outcome's code for the recruiting platform and where to send the participant ({code} in the URL is
    replaced by the code); empty strings when the researcher set none."""

    code: str = ""
    url: str = ""

    def public(self, kind: str, code: str | None = None) -> dict:
        code = code if code is not None else self.code
        return {"kind": kind, "code": code or None, "url": self.url.replace("{code}", code or "") or None}


def render_markdown(text: str) -> str:
    """The consent text as HTML. CommonMark without raw HTML (a `<script>` in the file is shown, not run), and
    markdown-it's link check drops javascript: and data: links: the page inserts this HTML as it is."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).render(text)


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
    consent_html: str = ""
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)
    max_rtt_ms: float = 250.0
    min_refresh_hz: float = 50.0
    min_window: tuple[int, int] = (800, 520)
    allow_repeat: bool = False

    def outcome(self, kind: str, code: str | None = None) -> dict:
        return self.outcomes.get(kind, Outcome()).public(kind, code)

    def thresholds(self) -> dict:
        return {
            "max_rtt_ms": self.max_rtt_ms,
            "min_refresh_hz": self.min_refresh_hz,
            "min_window": list(self.min_window),
        }


class StudyLog:
    """The study's outcomes, one JSON object a line (the spool's `study_log`, beside the progress records):
    appended, never rewritten, so it also holds participants who have no record (declined, screened out)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, participant: str, recruitment: dict | None = None, **fields: object) -> None:
        line = {"t": round(time.time(), 3), "event": event, "participant": participant}
        line.update({k: v for k, v in (recruitment or {}).items() if v})
        line.update(fields)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        log.info("study: %s", json.dumps(line))

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]


def entry_failures(measured: Mapping, reported: list[str], cfg: StudyConfig) -> list[str]:
    """Why the participant's browser cannot take part: what the page reported (secure context, features) and the
    thresholds applied here to what it measured, so the settings decide, not the page. Order of ENTRY_REASONS."""
    reasons = {r for r in reported if r in ENTRY_REASONS}

    def number(key: str) -> float | None:
        v = measured.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    rtt, hz = number("rtt_ms"), number("refresh_hz")
    if rtt is None or rtt > cfg.max_rtt_ms:
        reasons.add("rtt")
    if hz is None or hz < cfg.min_refresh_hz:
        reasons.add("refresh")
    window = measured.get("window")
    size = window if isinstance(window, list) and len(window) == 2 else [None, None]
    w, h = (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else -1.0 for v in size)
    if w < cfg.min_window[0] or h < cfg.min_window[1]:
        reasons.add("window")
    return [r for r in ENTRY_REASONS if r in reasons]


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

    def archive(self, pid: str) -> None:
        """Set a finished record aside (as `<pid>.<n>.done.json`) so the participant can start again."""
        p = self._path(pid)
        n = 1
        while p.with_name(f"{pid}.{n}.done.json").exists():
            n += 1
        os.replace(p, p.with_name(f"{pid}.{n}.done.json"))

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
