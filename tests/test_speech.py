"""Speech alignment through the real server: a synthetic client with a click at a known time, lost, duplicated and
reordered chunks, and audio clocks that run fast or slow against the paint clock."""

import json
import threading
import time

import numpy as np
import pytest
from helpers import ScriptedDemonstrator, ServerProcess, read_csv

from server.core import format as fmt
from server.core.wav import read_wav

RATE = 48000
CHUNK = 4800  # 100 ms
FRAME_MS = 1000 / 60
T0 = 5000.0  # client ms when frame 0 is painted
S_START = 123_456  # the client began capturing before this episode
CLICK_LEN = 48


class SyntheticSpeaker(ScriptedDemonstrator):
    """Acks frame f as painted at T0 + f/60 s and streams microphone chunks whose clock may drift."""

    def __init__(self, url, skew=0.0, click_ms=1000.0, lose=(), duplicate=(), swap=()):
        super().__init__(url, decode=False, ack=False)
        self.skew = skew
        self.click_ms = click_ms
        self.lose, self.duplicate, self.swap = set(lose), set(duplicate), set(swap)
        self.t_audio0 = T0 - 500.0  # capture of chunk 0 began half a second before frame 0 was painted
        self.click_sample = round((click_ms - self.t_audio0) * RATE * (1 + skew) / 1000)  # relative to S_START
        self.next_chunk = 0
        self.held_back = None

    def t_of(self, rel_sample):
        """Paint-clock ms when the sample was captured: the audio clock runs (1 + skew) times fast."""
        return self.t_audio0 + rel_sample * 1000 / (RATE * (1 + self.skew))

    def chunk(self, k):
        rel = k * CHUNK
        pcm = np.zeros(CHUNK, dtype="<i2")
        i = self.click_sample - rel
        if -CLICK_LEN < i < CHUNK:
            pcm[max(i, 0) : max(0, min(CHUNK, i + CLICK_LEN))] = 20000
        return {"seq": k, "first_sample": S_START + rel, "t": self.t_of(rel), "rate": RATE, "pcm": pcm.tobytes()}

    def pump(self, painted_ms):
        """Send every chunk captured before this paint-clock time (as a real client would, about 100 ms late)."""
        while self.t_of((self.next_chunk + 1) * CHUNK) <= painted_ms:
            k = self.next_chunk
            self.next_chunk += 1
            if k in self.lose:
                continue
            if k in self.swap and self.held_back is None:
                self.held_back = self.chunk(k)  # sent after the next one
                continue
            self.sio.emit("audio", self.chunk(k))
            if k in self.duplicate:
                self.sio.emit("audio", self.chunk(k))
            if self.held_back is not None and self.held_back["seq"] != k:
                self.sio.emit("audio", self.held_back)
                self.held_back = None

    def play(self, frames):
        """Ack the frames that came, by their numbers (the server's flow control skips frames to a client that falls
        behind, as this one may in a loaded process), until frame `frames - 1` was on screen; then stop."""
        seen = 0
        while True:
            self.wait_frames(seen + 1, timeout=30)
            got = self.frames[seen:]
            seen += len(got)
            self.sio.emit("painted", [[f, T0 + f * FRAME_MS] for f in got])
            self.pump(T0 + (got[-1] + 1) * FRAME_MS)
            if got[-1] + 1 >= frames:
                return self.stop_episode(timeout=30)
            time.sleep(0.03)


SCENARIOS = {
    # name: (constructor kwargs, frames to play)
    "lost": (dict(click_ms=T0 + 3004.0, lose={10, 20, 29}), 400),
    "duplicated": (dict(click_ms=T0 + 3004.0, duplicate={5, 29, 30}), 400),
    "out_of_order": (dict(click_ms=T0 + 3004.0, swap={29, 12}), 400),
    "fast_clock": (dict(click_ms=T0 + 13_004.0, skew=+0.001, lose={100}), 960),
    "slow_clock": (dict(click_ms=T0 + 13_004.0, skew=-0.001, duplicate={100}), 960),
    "long": (dict(click_ms=T0 + 14_004.0), 960),  # as long as the clock scenarios, which bound the run
}


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    store = tmp_path_factory.mktemp("speech") / "store"
    server = ServerProcess(store, "--max-demonstrators", "8", "--game", "revenge")  # standing still never ends
    clients = {name: SyntheticSpeaker(server.url, **kw) for name, (kw, _) in SCENARIOS.items()}
    results = {}
    try:
        for name, c in clients.items():
            c.start(participant=name.replace("_", ""))

        def run(name):
            try:
                results[name] = clients[name].play(SCENARIOS[name][1])
            except Exception as e:
                results[name] = e

        threads = [threading.Thread(target=run, args=(n,)) for n in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        yield store, clients, results
    finally:
        for c in clients.values():
            c.close()
        server.stop()


def _load(store, end):
    d = store / end["traj_id"]
    return d, json.loads((d / fmt.META).read_text()), read_csv(d / fmt.FRAMES)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_click_maps_to_the_frame_on_screen(played, name):
    store, clients, results = played
    end = results[name]
    assert not isinstance(end, Exception), end
    c = clients[name]
    d, meta, rows = _load(store, end)
    assert meta["speech"]["rate"] == RATE
    s0 = meta["speech"]["client_sample0"]
    # speech.wav starts with the sample captured when frame 0 was painted (to within a millisecond: the anchor is
    # fixed from the first chunks, before the clock fit has a second of audio), and speech_sample says exactly which
    true_s0 = S_START + round(500 * RATE * (1 + c.skew) / 1000)
    assert abs(s0 - true_s0) <= RATE // 1000
    assert abs(s0 + int(rows[0]["speech_sample"]) - true_s0) <= 2
    click_in_wav = S_START + c.click_sample - s0
    rate, wav = read_wav(d / fmt.SPEECH)
    assert rate == RATE
    assert int(np.argmax(wav != 0)) == click_in_wav  # the click is where it was captured, gaps stayed silent
    speech_sample = np.array([int(r["speech_sample"]) for r in rows])
    assert np.all(np.diff(speech_sample) > 0)
    mapped = int(np.searchsorted(speech_sample, click_in_wav, side="right") - 1)
    truth = int((c.click_ms - T0) // FRAME_MS)
    assert abs(mapped - truth) <= 1, (mapped, truth)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_frame_has_display_and_speech_sample(played, name):
    store, _, results = played
    _, meta, rows = _load(store, results[name])
    assert all(r["display_ms"] != "" and r["speech_sample"] != "" for r in rows)
    assert float(rows[1]["display_ms"]) == pytest.approx(FRAME_MS, abs=0.01)


def test_lost_duplicate_and_reordered_chunks_are_accounted(played):
    store, _, results = played
    _, meta, _ = _load(store, results["duplicated"])
    assert meta["speech"]["duplicates"] == 3
    _, meta, _ = _load(store, results["lost"])
    assert meta["speech"]["duplicates"] == 0
    d, meta, _ = _load(store, results["out_of_order"])
    sync = read_csv(d / fmt.SPEECH_SYNC)
    seqs = [int(r["seq"]) for r in sync]
    assert seqs.index(29) > seqs.index(30) and sorted(seqs) == list(range(len(seqs)))


def test_clock_skew_is_measured(played):
    store, _, results = played
    assert _load(store, results["fast_clock"])[1]["speech"]["clock_skew_ppm"] == pytest.approx(-999, abs=20)
    assert _load(store, results["slow_clock"])[1]["speech"]["clock_skew_ppm"] == pytest.approx(1001, abs=20)


def test_16_s_of_speech_match_the_painted_duration(played):
    store, _, results = played
    d, meta, rows = _load(store, results["long"])
    assert len(rows) >= 960
    rate, wav = read_wav(d / fmt.SPEECH)
    painted_ms = float(rows[-1]["display_ms"]) + FRAME_MS
    assert abs(wav.size / rate * 1000 - painted_ms) <= 20
    assert meta["speech"]["samples"] == wav.size
    assert set(meta["files"]) >= {fmt.SPEECH, fmt.SPEECH_SYNC, fmt.GAME_AUDIO}


@pytest.mark.parametrize("n", [5000, 1, 1023])
def test_game_audio_is_finished_block_by_block_exactly_as_over_the_whole(tmp_path, n):
    """finish_game_audio streams in blocks (a 10-minute episode no longer needs 800 MB): the result must be the
    centred moving-average DC removal of the whole signal, sample for sample, across block boundaries."""
    from server.core.speech import DC_WINDOW, finish_game_audio
    from server.core.wav import wav_header

    def remove_dc(x: np.ndarray, window: int = DC_WINDOW) -> np.ndarray:
        """The definition: subtract the centred moving average of the edge-padded whole signal."""
        pad = window // 2
        c = np.concatenate(([0.0], np.cumsum(np.pad(x, (pad, window - pad), mode="edge"))))
        return x - (c[window:] - c[:-window])[: x.size] / window

    rng = np.random.default_rng(n)
    u8 = np.clip(128 + np.cumsum(rng.integers(-3, 4, n)) + rng.integers(0, 60, n), 0, 255).astype(np.uint8)
    path = tmp_path / "game_audio.wav"
    path.write_bytes(wav_header(30720, 1, 1, n) + u8.tobytes())
    _, signed = read_wav(path)
    want = np.clip(np.round(remove_dc(signed.astype(np.float64))), -32768, 32767).astype(np.int16)
    assert finish_game_audio(path, block=777) == {"rate": 30720, "samples": n}
    rate, got = read_wav(path)
    assert rate == 30720 and np.array_equal(got, want)
    assert finish_game_audio(path) == {"rate": 30720, "samples": n}  # idempotent on the 16-bit file
    assert np.array_equal(read_wav(path)[1], want)


def test_speech_samples_of_all_frames_at_once_equal_one_at_a_time(tmp_path):
    """The close computes every frame's speech sample in one array; the flusher computes them one by one. A skewed
    clock, paint times before the anchor and between samples: the two agree on every frame."""
    from server.core.speech import SpeechIngest

    ingest = SpeechIngest(tmp_path)
    pcm = np.zeros(4800, dtype="<i2").tobytes()
    for seq in range(30):  # 100 ms chunks, the client's clock 0.1% fast
        ingest.add(seq, seq * 4800, 1000.0 + seq * 100.1, 48000, pcm, now=seq * 0.1)
    ingest.set_paint0(1050.0)
    assert ingest.s0 is not None
    paint = np.concatenate(([900.0, 1000.0, 1050.0], 1050.0 + np.random.default_rng(5).uniform(0, 3000, 500)))
    assert ingest.speech_samples(paint).tolist() == [ingest.speech_sample(float(t)) for t in paint]
    ingest.close(None)
