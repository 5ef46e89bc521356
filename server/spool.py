"""The spool: the local directory trajectories are written to while they run, and wait in until they are uploaded.

This module is the only one that knows its layout:

    <root>/<traj_id>/                a trajectory: being written, closed, or left open by a killed server
    <root>/<traj_id>/.lock           held (flock) by the process writing it
    <root>/<traj_id>/.uploaded       uploaded and kept (--keep-spool)
    <root>/.scratch/<traj_id>/       an unrecorded practice round, deleted when it ends
    <root>/.study/<participant>.json a participant's progress (server.study.Participants)
    <root>/.uploaded-index           the IDs uploaded from this spool, one a line (so no ID is used twice)
    <root>/.upload-status.json       the uploader's last failure of each trajectory
    <root>/.live/<host>-<pid>.json   a server process's live participants (the study monitor), rewritten every
                                     second or two; a file not rewritten for LIVE_STALE_S is a dead process's

With the local store the spool is the store's own directory; with S3 it is `--spool` (settings.open_spool()).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from .core import format as fmt
from .core.files import file_digests, truncate_partial_line, utc_now, write_json_atomic
from .core.reader import count_frames, local_metas, read_events_file, read_meta_file
from .core.speech import finish_game_audio
from .core.wav import repair_wav

#: Held (flock) by the process writing a trajectory; not a recorded file.
LOCK = ".lock"
SCRATCH = ".scratch"
STUDY = ".study"
STUDY_LOG = "log.jsonl"  # in STUDY, beside the progress records
UPLOADED_INDEX = ".uploaded-index"
STATUS_FILE = ".upload-status.json"
KEPT_MARKER = ".uploaded"
LIVE = ".live"
#: A live file older than this belongs to a process that is gone (they are rewritten every second or two).
LIVE_STALE_S = 10.0
PROCESS_ID_RE = re.compile(r"[A-Za-z0-9-]{1,80}")


def process_id() -> str:
    """This server process among those sharing a spool: `<host>-<pid>`."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


def lock_trajectory(directory: Path) -> int | None:
    """An exclusive flock on `<directory>/.lock`, held while a trajectory is written; None if another process holds
    it. Several server processes share one store directory (one per core behind nginx): a process starting up must
    not close another live process's open episodes as interrupted. The kernel drops the lock of a killed process."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unlock_trajectory(directory: Path, fd: int) -> None:
    """Remove the lock file, then release the lock (in that order, so no one locks a file about to vanish)."""
    try:
        os.unlink(directory / LOCK)
    except FileNotFoundError:
        pass
    os.close(fd)


class Spool:
    """One spool directory (created if missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    # --- where things go -----------------------------------------------------------------------------------------
    def trajectory_dir(self, traj_id: str, recorded: bool = True) -> Path:
        """Where a trajectory is written: in the spool, or in the scratch area when it is not recorded."""
        return (self.root if recorded else self.root / SCRATCH) / fmt.validate_traj_id(traj_id)

    @property
    def study_dir(self) -> Path:
        """The directory of participants' progress files."""
        return self.root / STUDY

    @property
    def study_log(self) -> Path:
        """The study's log of outcomes (server.study.StudyLog)."""
        return self.root / STUDY / STUDY_LOG

    def probe_path(self) -> Path:
        """A file this process may write to test whether the spool takes data (after a write error)."""
        return self.root / f".storage-probe-{os.getpid()}"

    def reserved(self, traj_id: str) -> bool:
        """Whether a trajectory ID is taken: spooled, or already uploaded from this spool (known offline, so an S3
        outage does not matter), so a new episode never overwrites one."""
        return (self.root / traj_id).exists() or traj_id in self.uploaded_ids()

    # --- what is in it -------------------------------------------------------------------------------------------
    def metas(self) -> list[dict]:
        """meta.json of every spooled trajectory (open, closed or waiting for upload)."""
        return [meta for _, meta in local_metas(self.root)]

    def closed(self) -> list[Path]:
        """Spooled trajectories that are closed (complete or interrupted) and not yet uploaded, oldest first."""
        out = [
            d
            for d, meta in local_metas(self.root)
            if not (d / KEPT_MARKER).exists() and meta.get("status") in (fmt.STATUS_COMPLETE, fmt.STATUS_INTERRUPTED)
        ]
        return sorted(out, key=lambda d: d.stat().st_mtime)

    def recording(self) -> list[str]:
        """IDs of spooled trajectories still in `recording` state (open now, or left open by a crash)."""
        return [d.name for d, meta in local_metas(self.root) if meta.get("status") == fmt.STATUS_RECORDING]

    # --- the uploader's bookkeeping ------------------------------------------------------------------------------
    def uploaded_ids(self) -> set[str]:
        """The IDs uploaded from this spool."""
        p = self.root / UPLOADED_INDEX
        return set(p.read_text().split()) if p.exists() else set()

    def finish_upload(self, d: Path, keep: bool = False) -> None:
        """A trajectory is safely uploaded: note its ID, then delete its directory (or mark it kept)."""
        with open(self.root / UPLOADED_INDEX, "a") as f:
            f.write(d.name + "\n")
        if keep:
            (d / KEPT_MARKER).write_text(utc_now() + "\n")
        else:
            shutil.rmtree(d)

    def upload_status(self) -> dict:
        """The uploader's last failure of each trajectory still waiting ({} when none failed)."""
        p = self.root / STATUS_FILE
        return json.loads(p.read_text()) if p.exists() else {}

    def write_upload_status(self, failures: dict) -> None:
        """Replace the upload status file."""
        tmp = self.root / (STATUS_FILE + ".tmp")
        tmp.write_text(json.dumps(failures, indent=2))
        os.replace(tmp, self.root / STATUS_FILE)

    def upload_states(self) -> dict[str, dict]:
        """Where each trajectory in the spool stands: `recording`, `waiting` (closed, not uploaded yet), `failing`
        (with `error` and `attempts`: the uploader's last failure) or `uploaded` (kept with --keep-spool); and
        every ID of the uploaded index as `uploaded`."""
        out: dict[str, dict] = {i: {"state": "uploaded"} for i in self.uploaded_ids()}
        failures = self.upload_status()
        for d, meta in local_metas(self.root):
            if (d / KEPT_MARKER).exists():
                out[d.name] = {"state": "uploaded"}
            elif meta.get("status") == fmt.STATUS_RECORDING:
                out[d.name] = {"state": "recording"}
            elif d.name in failures:
                f = failures[d.name]
                out[d.name] = {"state": "failing", "error": f.get("error"), "attempts": f.get("attempts")}
            else:
                out[d.name] = {"state": "waiting"}
        return out

    # --- live participants of every process sharing this spool (the study monitor) -------------------------------
    def live_path(self, process_id: str) -> Path:
        if not PROCESS_ID_RE.fullmatch(process_id):
            raise ValueError(f"invalid process ID {process_id[:80]!r}")
        return self.root / LIVE / f"{process_id}.json"

    def publish_live(self, process_id: str, snapshot: dict) -> None:
        """Replace this process's live file (atomically: a reader sees the old one or the new one)."""
        p = self.live_path(process_id)
        p.parent.mkdir(exist_ok=True)
        write_json_atomic(p, snapshot)

    def remove_live(self, process_id: str) -> None:
        self.live_path(process_id).unlink(missing_ok=True)

    def live_snapshots(self, max_age_s: float = LIVE_STALE_S, now: float | None = None) -> list[dict]:
        """The live files of the processes still running (rewritten within `max_age_s`); a stale one is ignored."""
        out = []
        now = time.time() if now is None else now
        for p in sorted((self.root / LIVE).glob("*.json")):
            try:
                if now - p.stat().st_mtime > max_age_s:
                    continue
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # vanished or being replaced: the next poll sees it
                continue
        return out

    # --- crash recovery ------------------------------------------------------------------------------------------
    def recover_interrupted(self) -> list[str]:
        """Close every trajectory a killed server left in `recording` state as `interrupted`. Returns their IDs.

        Trajectories another live process is writing (its lock is held) are left alone."""
        recovered = []
        for d, meta in local_metas(self.root):
            if meta.get("status") != fmt.STATUS_RECORDING:
                continue
            fd = lock_trajectory(d)
            if fd is None:
                continue  # a live server process is recording it
            try:
                now = read_meta_file(d / fmt.META)  # it may have been closed while we took the lock
                if now is not None and now.get("status") == fmt.STATUS_RECORDING:
                    _recover(d, now)
                    recovered.append(d.name)
            finally:
                unlock_trajectory(d, fd)
        return recovered

    def remove_abandoned(self) -> list[str]:
        """Delete the practice rounds in the scratch area that no live process is writing (left by a crash)."""
        removed: list[str] = []
        scratch = self.root / SCRATCH
        if not scratch.is_dir():
            return removed
        for d in sorted(p for p in scratch.iterdir() if p.is_dir()):
            fd = lock_trajectory(d)
            if fd is None:
                continue
            try:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
            finally:
                os.close(fd)
        return removed

    # --- a participant's right to be forgotten ---------------------------------------------------------------------
    def participant_files(self, participant: str) -> list[Path]:
        """Everything of one participant in the spool: their trajectories (recorded and scratch) and progress."""
        if not fmt.PARTICIPANT_RE.fullmatch(participant):
            raise ValueError(f"invalid participant ID {participant[:80]!r}")
        dirs = list(self.root.iterdir()) + list((self.root / SCRATCH).glob("*"))
        out = sorted(d for d in dirs if d.is_dir() and fmt.participant_of(d.name) == participant)
        progress = self.study_dir / f"{participant}.json"
        return out + [progress] if progress.exists() else out

    def delete_participant(self, participant: str) -> list[Path]:
        """Delete everything of one participant in the spool; returns what was deleted."""
        paths = self.participant_files(participant)
        for p in paths:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        return paths


_COMPLETE_REASONS = (fmt.GAME_OVER, fmt.TIME_LIMIT, fmt.QUIT)


def _end_reason_logged(d: Path) -> str | None:
    """The reason of the last `end` (else `stop`) event in events.csv: the episode had ended before the kill."""
    found: dict[str, str] = {}
    for row in read_events_file(d / fmt.EVENTS):
        if row.get("event") in ("end", "stop") and row.get("detail"):
            found[row["event"]] = row["detail"]
    return found.get("end") or found.get("stop")


def _recover(d: Path, meta: dict) -> None:
    """Make a killed writer's files consistent and mark its meta.json interrupted."""
    frames_csv = d / fmt.FRAMES
    for p in (frames_csv, d / fmt.EVENTS):
        if p.exists():
            truncate_partial_line(p)
    repair_wav(d / fmt.SPEECH, sample_bytes=2)
    if repair_wav(d / fmt.GAME_AUDIO, sample_bytes=None):
        finish_game_audio(d / fmt.GAME_AUDIO)
    for stray in d.glob("*.tmp"):  # a rewrite the kill cut short (the file it was replacing is whole)
        stray.unlink()
    frames, score = count_frames(frames_csv)
    ended = _end_reason_logged(d)
    meta.update(
        {
            # an episode that had ended (game over, time limit, quit: every frame is written before its end event)
            # keeps its end; one the kill cut short is interrupted
            "status": fmt.STATUS_COMPLETE if ended in _COMPLETE_REASONS else fmt.STATUS_INTERRUPTED,
            "end_reason": ended or fmt.SERVER_STOP,
            "recovered": True,
            "end_utc": utc_now(),
            "frames": frames,
            "final_score": score,
            "files": file_digests(d),
        }
    )
    write_json_atomic(d / fmt.META, meta)
