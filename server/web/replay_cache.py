"""The replay cache. The first request for a trajectory re-simulates it completely (verifying every frame, as
scripts/verify.py does) in a worker thread (`runtime.run_blocking`, so the game loops of an eventlet or gevent
server keep ticking), and keeps every screen as a codec message, XOR-delta with a keyframe every 60 frames, in an
LRU cache bounded by bytes. Why this and not an emulator with periodic cloneState snapshots:
- verification needs the whole re-simulation anyway (the page must say where a trajectory diverges before it plays),
  and at 10-15k frames/s with encoding that is about 3 s for 10 minutes, once;
- afterwards a screens request is byte slicing plus at most 59 XOR/inflate steps to make its first keyframe (well
  under a millisecond), instead of holding an emulator per trajectory, a lock around it (one emulator cannot serve
  two requests), and 90 ms of ROM loading whenever one is evicted;
- the memory is small: deltas are 200-300 bytes and keyframes 1-2 KB, so 10 minutes (36,000 frames) is about
  10-20 MB, where independent zlib screens would be 50 MB and raw screens 1.2 GB;
- no restoreState subtleties (stale screen until the next act, sticky actions' last action not in the state).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..core import format as fmt
from ..core.actions import ACTION_NAMES
from ..core.alignment import FPS, speech_segments
from ..core.codec import FLAG_KEYFRAME, HEADER, XorDeflateCodec, XorDeflateDecoder
from ..core.emulator import AUDIO_SAMPLES_PER_FRAME, GAME_AUDIO_RATE, SCREEN_HEIGHT, SCREEN_WIDTH
from ..core.palette import NTSC_PALETTE
from ..core.reader import Frames, read_frames, read_meta, read_wav
from ..core.replay import replay
from ..dataset import schema
from ..dataset.trajectory import annotation_info, read_words
from ..errors import ReplayDivergence, ReplayHTTPError, TrajectoryNotFound
from ..store import Store
from ..video import PIXEL_ASPECT

KEYFRAME_INTERVAL = 60
CACHE_BYTES = 256 * 1024 * 1024
LENGTH = struct.Struct("<I")


@dataclass
class ReplayEntry:
    """One re-simulated trajectory: its screens as codec messages and the JSON the page loads."""

    traj_id: str
    stamp: str
    meta: dict
    frames: Frames
    verified: object  # True or a dict describing the divergence
    messages: list[bytes] = field(default_factory=list)
    info_json: bytes = b""
    nbytes: int = 0  # what the cache counts: screens (with Python's per-object overhead) and the JSON

    @property
    def available(self) -> int:
        return len(self.messages)

    def screen(self, k: int) -> np.ndarray:
        """The palette-index screen of frame k, decoded from the keyframe before it."""
        k0 = k - k % KEYFRAME_INTERVAL
        decoder = XorDeflateDecoder(SCREEN_HEIGHT, SCREEN_WIDTH)
        for m in self.messages[k0 : k + 1]:
            screen = decoder.decode(m)[2]
        return screen

    def screens_payload(self, start: int, count: int) -> bytes:
        """Length-prefixed codec messages of frames start..start+count-1; the first one is a keyframe."""
        first = self.messages[start]
        if not first[4] & FLAG_KEYFRAME:
            first = HEADER.pack(start, FLAG_KEYFRAME) + zlib.compress(self.screen(start).tobytes(), 1)
        parts = [LENGTH.pack(len(first)), first]
        for m in self.messages[start + 1 : start + count]:
            parts.append(LENGTH.pack(len(m)))
            parts.append(m)
        return b"".join(parts)


def _nan_to_none(a: np.ndarray, as_int: bool) -> list:
    return [None if math.isnan(v) else (int(v) if as_int else round(float(v), 3)) for v in a.tolist()]


def _stamp(store: Store, traj_id: str) -> tuple[str, dict]:
    """A fingerprint of the trajectory's files (meta.json's bytes, frames.csv's size and mtime, and the bytes of
    speech_annotations.json when it is there: annotated after it was cached, a trajectory is built again)."""
    try:
        raw = store.get(f"{traj_id}/{fmt.META}")
    except KeyError:
        raise TrajectoryNotFound(f"no trajectory {traj_id!r} in {store.url}") from None
    h = hashlib.sha256(raw)
    try:
        st = store.local_path(f"{traj_id}/{fmt.FRAMES}").stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    except (KeyError, OSError, ValueError):
        pass
    try:
        h.update(b"annotation:" + store.get(f"{traj_id}/{schema.SPEECH_ANNOTATIONS}"))
    except KeyError:
        pass  # not annotated
    return h.hexdigest(), json.loads(raw)


def build_entry(store: Store, traj_id: str, stamp: str) -> ReplayEntry:
    """Re-simulate and verify the whole trajectory, keeping every screen (runs in a worker thread)."""
    meta = read_meta(store, traj_id)
    frames = read_frames(store, traj_id)
    codec = XorDeflateCodec()
    messages: list[bytes] = []
    verified: object = True
    try:
        for rf in replay(store, traj_id):
            if rf.step.frame % KEYFRAME_INTERVAL == 0:
                codec.force_keyframe()
            messages.append(codec.encode(rf.step.frame, rf.screen()))
    except ReplayDivergence as e:
        verified = {
            "diverged_at": e.frame,
            "field": e.field,
            "expected": str(e.expected),
            "actual": str(e.actual),
            "message": str(e),
        }
    entry = ReplayEntry(traj_id, stamp, meta, frames, verified, messages)
    entry.info_json = json.dumps(_info(store, entry), separators=(",", ":")).encode()
    entry.nbytes = sum(len(m) for m in messages) + 40 * len(messages) + len(entry.info_json)
    return entry


def _info(store: Store, entry: ReplayEntry) -> dict:
    c, meta = entry.frames, entry.meta
    speech = None
    if store.exists(f"{entry.traj_id}/{fmt.SPEECH}"):
        sm = meta.get("speech") or {}
        rate = sm.get("rate") or _wav_rate(store, entry.traj_id)
        speech = {
            "rate": rate,
            "samples": sm.get("samples"),
            "segments": [[f, round(s, 3)] for f, s in speech_segments(c["speech_sample"], rate)],
        }
    game_audio = None
    if store.exists(f"{entry.traj_id}/{fmt.GAME_AUDIO}"):
        game_audio = {"rate": GAME_AUDIO_RATE, "samples_per_frame": AUDIO_SAMPLES_PER_FRAME}
    return {
        "traj_id": entry.traj_id,
        "meta": meta,
        "n_frames": len(c),
        "frames_available": entry.available,
        "verified": entry.verified,
        "frames": {
            "frame": c["frame"].tolist(),
            "score": c["score"].tolist(),
            "reward": c["reward"].tolist(),
            "action": c["action"].tolist(),
            "keys": c["keys"].tolist(),
            "terminal": c["terminal"].tolist(),
            "lives": c["lives"].tolist(),
            "display_ms": _nan_to_none(c["display_ms"], False),
            "speech_sample": _nan_to_none(c["speech_sample"], True),
        },
        "width": SCREEN_WIDTH,
        "height": SCREEN_HEIGHT,
        "pixel_aspect": PIXEL_ASPECT,
        "fps": FPS,
        "palette": NTSC_PALETTE.reshape(-1).tolist(),
        "action_names": {str(k): v for k, v in ACTION_NAMES.items()},
        "keyframe_interval": KEYFRAME_INTERVAL,
        "speech": speech,
        "game_audio": game_audio,
        **_annotation(store, entry.traj_id),
    }


def _annotation(store: Store, traj_id: str) -> dict:
    """The speech annotation's words (speech_words.csv) and what made them (speech_annotations.json); null each when
    the trajectory is not annotated (`scripts/annotate_speech.py`)."""
    words = read_words(store, traj_id)
    about = annotation_info(store, traj_id)
    summary = None
    if about is not None:
        options = about.get("options") or {}
        recogniser = about.get("recogniser") or {}
        summary = {
            "engine": recogniser.get("engine") or options.get("engine"),
            "model": recogniser.get("model") or options.get("model"),
            "mode": about.get("mode"),
            "keywords": options.get("keywords") or [],
            "created_utc": about.get("created_utc"),
        }
    return {
        "words": None
        if words is None
        else [
            {
                "word": w.word,
                "start_frame": w.start_frame,
                "end_frame": w.end_frame,
                "keyword": w.keyword,
                "confidence": None if math.isnan(w.confidence) else round(w.confidence, 3),
            }
            for w in words
        ],
        "annotation": summary,
    }


def _wav_rate(store: Store, traj_id: str) -> int:
    wav = read_wav(store, traj_id, fmt.SPEECH)
    return wav[0] if wav is not None else 0


class ReplayCache:
    """Re-simulated trajectories, least recently used evicted beyond `max_bytes`; one build per ID at a time."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, ReplayEntry] = OrderedDict()
        self._building: dict[str, threading.Event] = {}
        self._lock = threading.Lock()  # guards the two dicts only; never held while building
        self.builds = 0

    def get(self, store: Store, traj_id: str, run_blocking=None, revalidate: bool = True) -> ReplayEntry:
        """The entry for a trajectory, re-simulating it if it is new or its files changed."""
        fmt.validate_traj_id(traj_id)
        while True:
            with self._lock:
                entry = self._entries.get(traj_id)
            if entry is not None and not revalidate:
                with self._lock:
                    self._entries.move_to_end(traj_id)
                return entry
            stamp, meta = _stamp(store, traj_id)
            if meta.get("status") == fmt.STATUS_RECORDING:
                raise ReplayHTTPError(409, f"{traj_id} is still being recorded; replay it after its episode ends")
            if entry is not None and entry.stamp == stamp:
                with self._lock:
                    self._entries.move_to_end(traj_id)
                return entry
            with self._lock:
                event = self._building.get(traj_id)
                mine = event is None
                if mine:
                    event = self._building[traj_id] = threading.Event()
            assert event is not None
            if not mine:
                event.wait(600)
                continue  # built by another request (or failed there): look again
            try:
                run = run_blocking or (lambda fn, *a: fn(*a))
                entry = run(build_entry, store, traj_id, stamp)
                self.builds += 1
                with self._lock:
                    self._entries[traj_id] = entry
                    self._entries.move_to_end(traj_id)
                    self._evict()
                return entry
            finally:
                with self._lock:
                    self._building.pop(traj_id, None)
                event.set()

    def _evict(self) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        while total > self.max_bytes and len(self._entries) > 1:
            _, old = self._entries.popitem(last=False)
            total -= old.nbytes
