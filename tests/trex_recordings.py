"""Recordings for the dataset, annotation, export and T-REX tests.

`server_recordings()` records a few trajectories through the real server once per test session (a Space Invaders
player who fires and talks, one who idles, one without a microphone); every test module copies the store it needs.
`offline_trajectory()` writes a trajectory with the core library alone (RecordingWriter + EmulatorSession), as fast as
the emulator runs, for tests that need many long episodes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from helpers import ScriptedDemonstrator, ServerProcess

from server.core import format as fmt
from server.core.actions import keys_label, keys_to_action
from server.core.emulator import EmulatorSession
from server.core.recorder import RecordingWriter
from server.core.wav import read_wav

RATE = 48000
CHUNK = 4800  # 100 ms
FRAME_MS = 1000 / 60
T0 = 5000.0  # client ms when frame 0 is painted
AUDIO_LEAD_MS = 500.0  # capture began this long before frame 0 was painted
S_START = 77_000  # the client's sample counter when this episode's capture began

#: (word, seconds after frame 0 was painted) said by the talking player
SPOKEN = [("yes", 1.5), ("no", 3.5), ("yes", 5.5), ("no", 7.5), ("no", 9.0)]
TALK_FRAMES = 660


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def espeak_word(word: str, rate: int = RATE) -> np.ndarray:
    """A word spoken by espeak-ng at `rate`, trimmed to where the sound starts and ends."""
    with tempfile.TemporaryDirectory() as d:
        raw, wav = Path(d) / "raw.wav", Path(d) / "word.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), word], check=True)
        subprocess.run(["sox", str(raw), "-r", str(rate), "-b", "16", "-c", "1", str(wav)], check=True)
        r, a = read_wav(wav)
    assert r == rate
    loud = np.nonzero(np.abs(a.astype(np.int32)) > 300)[0]
    return a[loud[0] : loud[-1] + 1].astype(np.int16)


@dataclass
class Talk:
    """The microphone signal the talking player streams, and where each word is in it."""

    pcm: np.ndarray  # int16 at RATE, sample 0 captured at client time T0 - AUDIO_LEAD_MS
    words: list[tuple[str, int, int]]  # (word, first sample, last sample) in pcm
    spoken: bool  # real words (espeak-ng), or tone bursts when espeak-ng is missing


def make_talk(seconds: float = 13.0) -> Talk:
    rng = np.random.default_rng(7)
    pcm = rng.normal(0, 20, int(seconds * RATE))  # a quiet room
    words = []
    spoken = have_espeak()
    for word, t in SPOKEN:
        start = int((t * 1000 + AUDIO_LEAD_MS) * RATE / 1000)
        if spoken:
            clip = espeak_word(word).astype(np.float64)
        else:
            n = int(0.3 * RATE)
            clip = 8000 * np.sin(2 * np.pi * 150 * np.arange(n) / RATE)
        pcm[start : start + clip.size] += clip
        words.append((word, start, start + clip.size - 1))
    return Talk(np.clip(np.round(pcm), -32768, 32767).astype(np.int16), words, spoken)


def true_frame(sample_in_talk: int) -> int:
    """The frame on screen when a sample of the streamed signal was captured."""
    t_ms = T0 - AUDIO_LEAD_MS + sample_in_talk * 1000 / RATE
    return int((t_ms - T0) // FRAME_MS)


class Player(ScriptedDemonstrator):
    """Acks frame f as painted at T0 + f/60 s, presses scripted keys, and streams a microphone signal if given."""

    def __init__(self, url: str, script: list[tuple[int, str, bool]], pcm: np.ndarray | None = None) -> None:
        super().__init__(url, decode=False, ack=False)  # (messages are handled in order: see helpers.py)
        self.script = list(script)
        self.pcm = pcm
        self.next_chunk = 0

    def _pump(self, painted_ms: float) -> None:
        if self.pcm is None:
            return
        t_audio0 = T0 - AUDIO_LEAD_MS
        while (self.next_chunk + 1) * CHUNK <= self.pcm.size:
            rel = self.next_chunk * CHUNK
            if t_audio0 + (rel + CHUNK) * 1000 / RATE > painted_ms:
                break
            self.sio.emit(
                "audio",
                {
                    "seq": self.next_chunk,
                    "first_sample": S_START + rel,
                    "t": t_audio0 + rel * 1000 / RATE,
                    "rate": RATE,
                    "pcm": self.pcm[rel : rel + CHUNK].tobytes(),
                },
            )
            self.next_chunk += 1

    def play(self, frames: int) -> dict:
        """Ack the frames that came, by their numbers (flow control skips frames to a client that falls behind, as
        this one may in a loaded process), press the keys due, until frame `frames - 1` was on screen; then stop."""
        seen = 0
        script = sorted(self.script)
        while True:
            self.wait_frames(seen + 1, timeout=30)
            got = self.frames[seen:]
            seen += len(got)
            self.sio.emit("painted", [[f, T0 + f * FRAME_MS] for f in got])
            shown = got[-1] + 1
            while script and script[0][0] <= shown:
                _, key, down = script.pop(0)
                self.key(key, down)
            self._pump(T0 + shown * FRAME_MS)
            if shown >= frames:
                return self.stop_episode(timeout=30)
            time.sleep(0.02)


def _fire_and_move(frames: int) -> list[tuple[int, str, bool]]:
    """Hold FIRE in bursts while sweeping left and right."""
    script = []
    for f in range(10, frames - 20, 40):
        script += [(f, "FIRE", True), (f + 12, "FIRE", False)]
    for k, f in enumerate(range(20, frames - 20, 120)):
        key = "RIGHT" if k % 2 == 0 else "LEFT"
        script += [(f, key, True), (f + 90, key, False)]
    return script


@dataclass
class ServerRecordings:
    store: Path
    talker: str  # fires, moves and says SPOKEN
    idler: str  # presses nothing but a little LEFT; talks too (silence)
    mute: str  # no microphone
    talk: Talk
    frames: dict[str, int]


_CACHE: dict[str, ServerRecordings] = {}


def play_together(server: ServerProcess, players: dict[str, tuple[Player, int]]) -> dict[str, dict]:
    """Every player plays its frames at once (a thread each), then the server stops; the episodes' end messages."""
    ends: dict[str, object] = {}
    try:
        for name, (p, _) in players.items():
            p.start(participant=name.upper())

        def run(name):
            try:
                ends[name] = players[name][0].play(players[name][1])
            except Exception as e:  # reported below
                ends[name] = e

        threads = [threading.Thread(target=run, args=(n,)) for n in players]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for p, _ in players.values():
            p.close()
        server.stop()
    for end in ends.values():
        if isinstance(end, Exception):
            raise end
    return ends  # type: ignore[return-value]


def server_recordings(tmp_path_factory) -> ServerRecordings:
    """Record once per test session through a real server; later calls return the same (read-only) store."""
    if "rec" in _CACHE:
        return _CACHE["rec"]
    store = tmp_path_factory.mktemp("trex_server") / "store"
    talk = make_talk()
    server = ServerProcess(store, "--game", "spaceinvaders", "--max-demonstrators", "4")
    players = {
        "talker": (Player(server.url, _fire_and_move(TALK_FRAMES), talk.pcm), TALK_FRAMES),
        "idler": (
            Player(server.url, [(100, "LEFT", True), (140, "LEFT", False)], np.zeros(int(8 * RATE), np.int16)),
            400,
        ),
        "mute": (Player(server.url, [(30, "FIRE", True), (60, "FIRE", False), (60, "RIGHT", True)]), 300),
    }
    ends = play_together(server, players)
    ids = {name: end["traj_id"] for name, end in ends.items()}
    rec = ServerRecordings(
        store, ids["talker"], ids["idler"], ids["mute"], talk, {ids[n]: ends[n]["frames"] for n in ids}
    )
    _CACHE["rec"] = rec
    return rec


def sticky_server_recording(tmp_path_factory, frames: int = 420) -> tuple[Path, str]:
    """(store, traj_id): one Space Invaders episode recorded through a real server with `--sticky 0.25`."""
    if "sticky" in _STICKY:
        return _STICKY["sticky"]
    store = tmp_path_factory.mktemp("sticky_server") / "store"
    server = ServerProcess(store, "--game", "spaceinvaders", "--sticky", "0.25")
    player = Player(server.url, _fire_and_move(frames))
    try:
        player.start(participant="STICKY")
        end = player.play(frames)
    finally:
        player.close()
        server.stop()
    _STICKY["sticky"] = (store, end["traj_id"])
    return _STICKY["sticky"]


_STICKY: dict[str, tuple[Path, str]] = {}


def copy_store(rec: ServerRecordings, dest: Path) -> Path:
    shutil.copytree(rec.store, dest)
    return dest


# --- offline trajectories ---------------------------------------------------------------------------------------

_FIRE_ACTIONS = {(1, True): 11, (-1, True): 12, (1, False): 3, (-1, False): 4}  # RIGHTFIRE, LEFTFIRE, RIGHT, LEFT


def skilled_action(rng: np.random.Generator, frame: int, state: dict, p_active: float) -> int:
    """Space Invaders: in each 32-frame block, with probability `p_active` sweep and fire in bursts, else NOOP."""
    if frame % 32 == 0:
        state["active"] = rng.random() < p_active
    if rng.random() < 0.02:
        state["dir"] = -state.get("dir", 1)
    if not state["active"]:
        return 0
    return _FIRE_ACTIONS[(state.get("dir", 1), frame % 16 < 8)]


def offline_trajectory(
    store: Path,
    game_name: str,
    rom: str,
    participant: str,
    n: int,
    seed: int,
    p_active: float,
    max_frames: int,
    emu: EmulatorSession | None = None,
) -> str:
    """Write one complete trajectory with the recorder (no server, no client): game over or `max_frames`."""
    emu = emu or EmulatorSession(rom, seed, sound=False)
    emu.reset(seed)
    traj_id = fmt.make_traj_id(game_name, participant, n)
    writer = RecordingWriter(Path(store) / traj_id, game_audio=False)
    writer.open(
        {
            "traj_id": traj_id,
            "game": game_name,
            "ale": emu.spec.to_json(),
            "participant": participant,
            "session_id": "offline",
            "episode_index": n,
            "codec": "none",
            "episode_time_limit_s": None,
            "client": {},
        }
    )
    rng = np.random.default_rng(seed)
    state: dict = {}
    score = 0
    terminal = False
    frame = 0
    names = {v: k for k, v in _FIRE_ACTIONS.items()}
    while frame < max_frames and not terminal:
        action = skilled_action(rng, frame, state, p_active)
        held = set()
        if action in names:
            d, fire = names[action]
            held = {"RIGHT" if d > 0 else "LEFT"} | ({"FIRE"} if fire else set())
        assert keys_to_action(held) == action
        r = emu.step(action)
        score += r.reward
        terminal = r.terminal
        writer.append_step(
            frame, r.reward, score, r.terminal, action, r.lives, keys_label(held), r.ram_crc32, frame * FRAME_MS
        )
        writer.painted(frame, T0 + frame * FRAME_MS)
        frame += 1
    writer.flush(final=True)
    writer.close(fmt.STATUS_COMPLETE, fmt.GAME_OVER if terminal else fmt.TIME_LIMIT)
    return traj_id
