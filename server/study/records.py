"""What a study keeps: participants' progress records (`Participants`) and the log of outcomes (`StudyLog`)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from ..core.format import PARTICIPANT_RE
from .config import CONSENT

log = logging.getLogger("server.study")


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
