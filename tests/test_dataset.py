"""The dataset loader on trajectories recorded through the real server: arrays, speech, observations, caching."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, read_csv
from trex_recordings import copy_store, server_recordings

from server.core import format as fmt
from server.core.emulator import EmulatorSession, EmulatorSpec
from server.core.reader import read_meta
from server.core.wav import read_wav
from server.dataset import Dataset, TrexPreprocessing, load, rgb_frames, trex_observations
from server.dataset import observations as obs_mod
from server.dataset.observations import gray_resize, mask_cells, trex_mask
from server.store import open_store


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    rec = server_recordings(tmp_path_factory)
    store_dir = copy_store(rec, tmp_path_factory.mktemp("dataset") / "store")
    return rec, open_store(str(store_dir)), store_dir


def test_listing_has_scores_lengths_status_and_speech(rec):
    r, store, d = rec
    infos = {t.traj_id: t for t in Dataset(store, cache_dir=None).trajectories("spaceinvaders")}
    assert set(infos) == {r.talker, r.idler, r.mute}
    for tid, t in infos.items():
        rows = read_csv(d / tid / fmt.FRAMES)
        assert t.status == "complete" and t.end_reason == "quit" and t.complete and not t.game_over
        assert t.frames == len(rows) == r.frames[tid]
        assert t.final_score == int(rows[-1]["score"])
    assert infos[r.talker].speech_seconds == pytest.approx(r.frames[r.talker] / 60, abs=0.1)
    assert infos[r.idler].speech_seconds > 0 and infos[r.mute].speech_seconds == 0
    assert infos[r.talker].final_score > 0  # the firing player hit something


@pytest.mark.parametrize("who", ["talker", "idler", "mute"])
def test_arrays_match_frames_csv(rec, who):
    r, store, d = rec
    tid = getattr(r, who)
    traj = load(store, tid)
    rows = read_csv(d / tid / fmt.FRAMES)
    assert len(traj) == len(rows)
    col = lambda name, f=int: np.array([f(x[name]) for x in rows])  # noqa: E731
    np.testing.assert_array_equal(traj.actions, col("action"))
    np.testing.assert_array_equal(traj.rewards, col("reward"))
    np.testing.assert_array_equal(traj.scores, col("score"))
    np.testing.assert_array_equal(traj.lives, col("lives"))
    np.testing.assert_array_equal(traj.terminals, col("terminal") == 1)
    np.testing.assert_array_equal(traj.keys, [x["keys"] for x in rows])
    np.testing.assert_allclose(traj.server_ms, col("server_ms", float))
    np.testing.assert_allclose(traj.display_ms, col("display_ms", float))
    assert traj.actions.dtype == np.uint8 and traj.terminals.dtype == bool
    assert np.array_equal(np.cumsum(traj.rewards), traj.scores)
    if who == "mute":
        assert traj.speech is None and np.all(traj.speech_sample == -1)
    else:
        np.testing.assert_array_equal(traj.speech_sample, col("speech_sample"))
        rate, wav = read_wav(d / tid / fmt.SPEECH)
        assert traj.speech_rate == rate == 48000
        np.testing.assert_array_equal(traj.speech, wav)
        frames = np.arange(len(traj))
        np.testing.assert_array_equal(traj.frame_of_sample(traj.speech_sample), frames)
        # the waveform of a frame is what was captured while it was on screen: 1/60 s of audio
        assert traj.speech_between(10, 10).size == 800
    assert traj.words == [] and traj.voiced is None  # not annotated yet


def test_speech_holds_the_streamed_signal_where_the_paint_clock_puts_it(rec):
    r, store, _ = rec
    traj = load(store, r.talker)
    word, first, _ = r.talk.words[0]
    lead = int(500 * 48)  # speech.wav starts with the sample captured when frame 0 was painted
    np.testing.assert_array_equal(traj.speech[first - lead : first - lead + 4800], r.talk.pcm[first : first + 4800])


def test_rgb_observations_are_the_resimulated_screens(rec):
    r, store, _ = rec
    meta = read_meta(store, r.talker)
    traj = load(store, r.talker, speech=False)
    emu = EmulatorSession(meta["ale"]["rom_id"], EmulatorSpec.from_json(meta["ale"]).seed, sound=False)
    got = rgb_frames(store, r.talker, 100, 140)
    assert got.shape == (40, 210, 160, 3) and got.dtype == np.uint8
    for f in range(140):
        emu.step(int(traj.actions[f]))
        if f >= 100:
            np.testing.assert_array_equal(got[f - 100], emu.screen_rgb())


def test_trex_preprocessing_shapes_pooling_and_masking(rec, tmp_path):
    r, store, _ = rec
    n = r.frames[r.talker]
    o = trex_observations(store, r.talker, TrexPreprocessing(), cache_dir=None)
    k = n // 4
    assert o.frames.shape == (k, 84, 84) and o.frames.dtype == np.uint8
    stacks = o.stacks
    assert stacks.shape == (k - 3, 84, 84, 4) and len(o) == k - 3
    for j in (0, 7, k - 4):
        for i in range(4):
            np.testing.assert_array_equal(stacks[j][..., i], o.frames[j + i])
    assert o.frame_span(0) == (0, 15) and o.frame_span(5) == (20, 35)

    # frame k is the max of the RGB screens of frames 4k+2 and 4k+3, then grayscale and area-resized
    rgb = rgb_frames(store, r.talker, 0, 4 * 31)
    unmasked = trex_observations(store, r.talker, TrexPreprocessing(mask=False), cache_dir=None).frames
    for kk in (0, 12, 30):
        expect = gray_resize(np.maximum(rgb[4 * kk + 2], rgb[4 * kk + 3]))
        np.testing.assert_array_equal(unmasked[kk], expect)
    # the score rows are black after masking, and they held the score before
    assert trex_mask("spaceinvaders")
    assert np.all(o.frames[:, :10, :] == 0)
    assert unmasked[:, :10, :].max() > 0
    np.testing.assert_array_equal(o.frames[:, 10:, :], unmasked[:, 10:, :])


def test_masks_cover_what_trex_masks_in_each_study_game():
    # T-REX's mask_score: rows of the 84x84 frame blacked out at the top / bottom
    expected = {
        "spaceinvaders": (10, 0),
        "mspacman": (0, 15),
        "revenge": (10, 0),
        "enduro": (0, 14),
        "seaquest": (12, 16),
    }
    for game, (top, bottom) in expected.items():
        cells = mask_cells(trex_mask(game))
        rows = cells.all(axis=1)
        assert cells.any(axis=1).sum() == rows.sum() == top + bottom, game  # whole rows only
        assert rows[:top].all() and not rows[top : 84 - bottom].any() and rows[84 - bottom :].all(), game
    assert trex_mask("pong") == ()  # not in the catalogue's T-REX list: nothing masked


def test_area_resize_averages_each_cells_share_of_the_screen():
    img = np.zeros((210, 160, 3), np.uint8)
    img[:, :, :] = 200
    assert np.all(gray_resize(img) == 200)
    img = np.zeros((210, 160, 3), np.uint8)
    img[2, 0] = 255  # white (luma 255); row 2 is half inside output row 0 (rows 0..2.5) and half inside row 1
    out = gray_resize(img).astype(float)
    luma = 255.0
    w = 160 / 84
    assert out[0, 0] == pytest.approx(round(0.5 * luma / (2.5 * w)), abs=1)
    assert out[1, 0] == pytest.approx(round(0.5 * luma / (2.5 * w)), abs=1)
    assert out[2:, :].max() == 0 and out[:, 1:].max() == 0


def test_second_load_comes_from_the_cache(rec, tmp_path, monkeypatch):
    r, store, _ = rec
    cache = tmp_path / "cache"
    first = trex_observations(store, r.idler, TrexPreprocessing(), cache)
    files = sorted(p.name for p in (cache / r.idler).iterdir())
    assert len([f for f in files if f.endswith(".npy")]) == 1

    def no_replay(*a, **k):
        raise AssertionError("re-simulated although cached")

    monkeypatch.setattr(obs_mod, "resimulate", no_replay)
    second = trex_observations(store, r.idler, TrexPreprocessing(), cache)
    assert isinstance(second.frames, np.memmap)
    np.testing.assert_array_equal(first.frames, second.frames)
    monkeypatch.undo()
    # other parameters are another entry
    other = trex_observations(store, r.idler, TrexPreprocessing(mask=False), cache)
    assert len(list((cache / r.idler).glob("*.npy"))) == 2
    assert not np.array_equal(other.frames, first.frames)


def test_ranking_and_pairs(rec, tmp_path):
    r, store, _ = rec
    ds = Dataset(store, cache_dir=tmp_path / "cache")
    demos = ds.ranked_demonstrations("spaceinvaders")
    assert [d.traj_id for d in demos][-1] == r.talker  # worst first
    assert [d.final_score for d in demos] == sorted(d.final_score for d in demos)
    assert ds.ranked_demonstrations("spaceinvaders", require_game_over=True) == []  # all three were quit
    pairs = ds.trex_pairs(40, (10, 20), rng=1, game="spaceinvaders")
    assert len(pairs) == 40 and {p.label for p in pairs} == {0, 1}
    for p in pairs:
        assert p.better.traj_id == r.talker and p.worse.score < p.better.score
        assert p.better.start >= p.worse.start and p.better.length == p.worse.length
        assert 10 <= p.better.length < 20
        for s in p.snippets:
            assert s.obs.shape == (len(range(0, s.length, 2)), 84, 84, 4)
            assert s.first_frame == 4 * s.start and s.last_frame == 4 * (s.start + (s.length - 1) // 2 * 2) + 15
            np.testing.assert_array_equal(s.obs[0], ds.observations(s.traj_id).stacks[s.start])


def test_the_loader_imports_no_web_stack():
    code = (
        "import sys; import server.dataset, server.dataset.annotate, server.dataset.export; "
        "bad = [m for m in ('flask', 'flask_socketio', 'socketio', 'engineio', 'eventlet', 'gevent') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
