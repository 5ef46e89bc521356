"""Exports of server-recorded trajectories: the Atari Grand Challenge layout read the way T-REX's code reads it, and
Minari datasets read with minari's own loader."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT
from PIL import Image
from trex_recordings import copy_store, offline_trajectory, server_recordings, sticky_server_recording

from server.core.emulator import EmulatorSession
from server.dataset import TrexPreprocessing, load, rgb_frames, trex_observations
from server.dataset.observations import gray_resize, mask_cells, trex_mask
from server.store import open_store


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    rec = server_recordings(tmp_path_factory)
    d = copy_store(rec, tmp_path_factory.mktemp("export") / "store")
    return rec, d, open_store(str(d))


def run_export(*args, env=None):
    out = subprocess.run(
        [sys.executable, "scripts/export.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


# --- Atari Grand Challenge, read as agc/dataset.py and T-REX's agc_demos.py read it -----------------------------


def agc_load_trajectories(data_path: Path, dialect: str = "v1") -> dict:
    """AtariDataset.load_trajectories: skip the metadata and header lines, parse five columns.

    The terminal column as each reader parses it: AGC v1 (agc/dataset.py of August 2017) and T-REX's fork of agc
    compare with "True"; AGC v2 (October 2017) calls int() on it.
    """
    parse_terminal = {"v1": lambda c: int("True" == c), "v2": lambda c: int(c)}[dialect]
    trajectories = {}
    for game in os.listdir(data_path / "trajectories"):
        trajectories[game] = {}
        for traj in os.listdir(data_path / "trajectories" / game):
            cur = []
            with open(data_path / "trajectories" / game / traj) as f:
                for i, line in enumerate(f):
                    if i > 1:
                        c = line.rstrip("\n").replace(" ", "").split(",")
                        cur.append(
                            {
                                "frame": int(c[0]),
                                "reward": int(c[1]),
                                "score": int(c[2]),
                                "terminal": parse_terminal(c[3]),
                                "action": int(c[4]),
                            }
                        )
            trajectories[game][int(traj.split(".txt")[0])] = cur
    return trajectories


def trex_max_skip_and_warp(trajectory_dir: Path) -> list[np.ndarray]:
    """agc_demos.MaxSkipAndWarpFrames: max of every 3rd and 4th screen of 4, grayscale, 84x84."""
    num_frames = len(os.listdir(trajectory_dir))
    skip = 4
    out = []
    buf = [None, None]
    for i in range(num_frames):
        if i % skip == skip - 2:
            buf[0] = np.asarray(Image.open(trajectory_dir / f"{i}.png").convert("RGB"))
        if i % skip == skip - 1:
            buf[1] = np.asarray(Image.open(trajectory_dir / f"{i}.png").convert("RGB"))
            out.append(gray_resize(np.maximum(buf[0], buf[1])))
    return out


@pytest.fixture(scope="module")
def agc(rec, tmp_path_factory):
    r, d, store = rec
    out = tmp_path_factory.mktemp("agc")
    stdout = run_export("--format", "agc", "--store", str(d), "--out", str(out), "--game", "spaceinvaders")
    assert "wrote 3 trajectories" in stdout
    with open(out / "index.csv", newline="") as f:
        index = {row["traj_id"]: int(row["n"]) for row in csv.DictReader(f)}
    return out, index


def test_agc_trajectories_read_back_as_frames_csv(rec, agc):
    r, d, store = rec
    out, index = agc
    data = agc_load_trajectories(out)
    assert set(data) == {"spaceinvaders"} and set(data["spaceinvaders"]) == set(index.values())
    for traj_id, n in index.items():
        traj = load(store, traj_id, speech=False)
        got = data["spaceinvaders"][n]
        assert (out / "trajectories" / "spaceinvaders" / f"{n}.txt").read_text().split("\n")[:2] == [
            traj_id,
            "frame,reward,score,terminal,action",
        ]
        assert [g["frame"] for g in got] == list(range(len(traj)))
        assert [g["action"] for g in got] == traj.actions.tolist()
        assert [g["reward"] for g in got] == traj.rewards.tolist()
        assert [g["score"] for g in got] == traj.scores.tolist()
        assert [g["terminal"] for g in got] == traj.terminals.astype(int).tolist()
        assert len(os.listdir(out / "screens" / "spaceinvaders" / str(n))) == len(traj)


def test_agc_screens_are_the_frames_and_give_trex_its_observations(rec, agc):
    r, d, store = rec
    out, index = agc
    n = index[r.talker]
    shots = out / "screens" / "spaceinvaders" / str(n)
    rgb = rgb_frames(store, r.talker, 0, 200)
    for i in (0, 1, 57, 199):
        np.testing.assert_array_equal(np.asarray(Image.open(shots / f"{i}.png")), rgb[i])
    frames = np.stack(trex_max_skip_and_warp(shots))
    ours = trex_observations(store, r.talker, TrexPreprocessing(mask=False), cache_dir=None).frames
    np.testing.assert_array_equal(frames, ours)
    masked = frames.copy()
    masked[:, mask_cells(trex_mask("spaceinvaders"))] = 0
    np.testing.assert_array_equal(masked, trex_observations(store, r.talker, cache_dir=None).frames)


def test_agc_export_adds_to_an_existing_directory_without_renumbering(rec, agc, tmp_path):
    r, d, store = rec
    out = tmp_path / "agc"
    run_export("--format", "agc", "--store", str(d), "--out", str(out), r.mute)
    run_export("--format", "agc", "--store", str(d), "--out", str(out), r.mute, r.talker)
    with open(out / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["n"], row["traj_id"]) for row in rows] == [("1", r.mute), ("2", r.talker)]


def test_agc_screens_are_rgb_pngs_pil_reads_back(tmp_path):
    """The export's own PNG writer (zlib directly, see server/dataset/png.py): 8-bit RGB, whatever the level."""
    from server.dataset.png import RgbPng, write_file

    emu = EmulatorSession("space_invaders", 1, sound=False)
    for a in range(60):
        emu.step(a % 18)
    noise = np.random.default_rng(3).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    for level in (0, 1, 9):
        png = RgbPng(210, 160, level)
        for rgb in (emu.screen_rgb(), noise, np.zeros_like(noise)):
            write_file(str(tmp_path / "x.png"), png.encode(rgb))
            with Image.open(tmp_path / "x.png") as im:
                assert (im.format, im.mode, im.size) == ("PNG", "RGB", (160, 210))
                np.testing.assert_array_equal(np.asarray(im), rgb)
    with pytest.raises(ValueError):
        png.encode(np.zeros((84, 84, 3), np.uint8))


# --- Minari --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minari_dir(rec, tmp_path_factory):
    pytest.importorskip("minari", reason="pip install -r requirements-dev.txt (minari, h5py) for the Minari export")
    pytest.importorskip("h5py", reason="pip install -r requirements-dev.txt (minari, h5py) for the Minari export")
    r, d, store = rec
    path = tmp_path_factory.mktemp("minari")
    run_export(
        "--format",
        "minari",
        "--store",
        str(d),
        "--dataset-id",
        "atari-speech/spaceinvaders/human-v0",
        env={"MINARI_DATASETS_PATH": str(path)},
    )
    run_export(
        "--format",
        "minari",
        "--store",
        str(d),
        "--dataset-id",
        "atari-speech/spaceinvaders/trex-v0",
        "--observations",
        "trex",
        "--minari-dir",
        str(path),
        "--cache-dir",
        str(path / "cache"),
    )
    return path


def test_minari_rgb_dataset_loads_with_minari(rec, minari_dir, monkeypatch):
    import minari

    r, d, store = rec
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_dir))
    ds = minari.load_dataset("atari-speech/spaceinvaders/human-v0")
    assert ds.total_episodes == 3 and ds.total_steps == sum(r.frames.values())
    metas = list(ds.storage.get_episode_metadata(range(3)))
    by_traj = {m["traj_id"]: m for m in metas}
    assert set(by_traj) == {r.talker, r.idler, r.mute}
    for ep in ds.iterate_episodes():
        m = metas[ep.id]
        traj = load(store, m["traj_id"], speech=False)
        n = len(traj)
        assert ep.observations.shape == (n + 1, 210, 160, 3)
        np.testing.assert_array_equal(ep.actions, traj.actions)
        np.testing.assert_array_equal(ep.rewards, traj.rewards)
        np.testing.assert_array_equal(ep.terminations, traj.terminals)
        assert ep.truncations[-1] and not ep.truncations[:-1].any()  # they were quit, not over
        np.testing.assert_array_equal(ep.infos["score"][1:], traj.scores)
        np.testing.assert_array_equal(ep.infos["speech_sample"][1:], traj.speech_sample)
        np.testing.assert_array_equal(ep.observations[101:111], rgb_frames(store, m["traj_id"], 100, 110))
        assert m["final_score"] == traj.scores[-1]


def minari_episode(minari_dir, monkeypatch, dataset_id: str, traj_id: str):
    """(dataset, episode metadata, episode) of one exported trajectory."""
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_dir))
    ds = minari.load_dataset(dataset_id)
    metas = list(ds.storage.get_episode_metadata(range(ds.total_episodes)))
    i = [m["traj_id"] for m in metas].index(traj_id)
    return ds, metas[i], ds[i]


def test_minari_environment_replays_the_episode(rec, minari_dir, monkeypatch):
    r, _, _ = rec
    ds, meta, ep = minari_episode(minari_dir, monkeypatch, "atari-speech/spaceinvaders/human-v0", r.talker)
    replay_in_recovered_env(ds, ep, lambda env: env.reset(seed=int(meta["seed"])))


def test_minari_trex_dataset_holds_the_loaders_stacks(rec, minari_dir, monkeypatch):
    r, d, store = rec
    _, _, ep = minari_episode(minari_dir, monkeypatch, "atari-speech/spaceinvaders/trex-v0", r.talker)
    stacks = trex_observations(store, r.talker, cache_dir=None).stacks
    assert ep.observations.shape == stacks.shape
    np.testing.assert_array_equal(ep.observations, stacks)
    traj = load(store, r.talker, speech=False)
    assert ep.rewards.sum() == traj.rewards.sum()
    np.testing.assert_array_equal(ep.actions, traj.actions[16 : 16 + 4 * len(ep.actions) : 4])


def replay_in_recovered_env(ds, ep, reset) -> None:
    """Step the dataset's recovered environment through an episode's actions; every observation and reward equal."""
    env = ds.recover_environment()
    obs, _ = reset(env)
    np.testing.assert_array_equal(obs, ep.observations[0])
    for t, a in enumerate(ep.actions):
        obs, reward, terminated, truncated, _ = env.step(int(a))
        assert reward == ep.rewards[t], f"reward differs at step {t}"
        assert terminated == ep.terminations[t], f"terminal differs at step {t}"
        np.testing.assert_array_equal(obs, ep.observations[t + 1], err_msg=f"observation differs at step {t}")
    env.close()


def test_minari_environment_replays_a_sticky_action_episode(tmp_path, tmp_path_factory, monkeypatch):
    """Sticky actions draw from ALE's RNG every frame: only the seed Gymnasium derives for env.reset(seed=s) replays
    them. A recording made through the server with --sticky 0.25, loaded with minari's own loader."""
    pytest.importorskip("minari")
    store, traj_id = sticky_server_recording(tmp_path_factory)
    meta = load_meta_json(store, traj_id)
    assert meta["ale"]["repeat_action_probability"] == 0.25 and meta["ale"]["gym_seed"] is not None
    run_export(
        "--format", "minari", "--store", str(store), "--dataset-id", "atari-speech/spaceinvaders/sticky-v0",
        "--minari-dir", str(tmp_path / "minari"), traj_id,
    )  # fmt: skip
    ds, m, ep = minari_episode(tmp_path / "minari", monkeypatch, "atari-speech/spaceinvaders/sticky-v0", traj_id)
    assert m["seed"] == meta["ale"]["gym_seed"] and m["ale_seed"] == meta["ale"]["seed"]
    assert len(ep.actions) == meta["frames"] >= 420  # the unseeded replay diverged at step 129 of 1,465
    replay_in_recovered_env(ds, ep, lambda env: env.reset(seed=int(m["seed"])))


def test_an_older_sticky_recording_replays_with_its_ale_seed(tmp_path, monkeypatch):
    """Recordings from before ale.gym_seed seeded ALE directly: `reset_to_ale_seed` replays them."""
    pytest.importorskip("minari")
    from server.dataset.export import reset_to_ale_seed

    store = tmp_path / "store"
    emu = EmulatorSession("space_invaders", 5, repeat_action_probability=0.25, sound=False)
    traj_id = offline_trajectory(store, "spaceinvaders", "space_invaders", "OLD", 1, 977, 0.8, 500, emu=emu)
    assert load_meta_json(store, traj_id)["ale"]["gym_seed"] is None
    with pytest.warns(UserWarning, match="reset_to_ale_seed"):
        from server.dataset.export import export_minari, select

        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
        export_minari(open_store(str(store)), "atari-speech/spaceinvaders/old-v0", select(open_store(str(store))))
    ds, m, ep = minari_episode(tmp_path / "minari", monkeypatch, "atari-speech/spaceinvaders/old-v0", traj_id)
    replay_in_recovered_env(ds, ep, lambda env: reset_to_ale_seed(env, m["ale_seed"]))


def load_meta_json(store, traj_id: str) -> dict:
    import json

    return json.loads((Path(store) / traj_id / "meta.json").read_text())


def test_minari_trex_export_keeps_every_reward_and_terminal_flag(tmp_path, monkeypatch):
    """T-REX's observations cover whole groups of 4 frames after the first 16; the steps must still hold every
    frame's reward and the game-over flag, whatever the length. Lengths N..N+3 of one game (quit, two of them with a
    reward in the last incomplete group), and two games played to game over (Space Invaders ends only on odd frames:
    lengths 1 and 3 modulo 4)."""
    pytest.importorskip("minari")
    from server.dataset.export import export_minari, select

    store = tmp_path / "store"
    emu = EmulatorSession("space_invaders", 0, sound=False)
    probe = offline_trajectory(store, "spaceinvaders", "space_invaders", "PROBE", 1, 1004, 0.6, 700, emu=emu)
    rewarded = np.nonzero(load(open_store(str(store)), probe, speech=False).rewards)[0]
    r = int(next(f for f in rewarded if f % 4 == 1 and f > 100))  # in the incomplete last group of lengths r+1, r+2
    shutil.rmtree(store / probe)
    n = r - 1
    quit_ids = [
        offline_trajectory(store, "spaceinvaders", "space_invaders", "QUIT", i, 1004, 0.6, n + i, emu=emu)
        for i in range(4)
    ]
    over_ids = [
        offline_trajectory(store, "spaceinvaders", "space_invaders", "OVER", i, seed, 0.6, 10_000, emu=emu)
        for i, seed in enumerate((1004, 1002))
    ]
    s = open_store(str(store))
    lengths = {t: len(load(s, t, speech=False)) for t in quit_ids + over_ids}
    assert [lengths[t] for t in quit_ids] == [n, n + 1, n + 2, n + 3]
    assert sorted(lengths[t] % 4 for t in over_ids) == [1, 3]
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    export_minari(s, "atari-speech/spaceinvaders/ends-v0", select(s), "trex", cache_dir=None)
    for t in quit_ids + over_ids:
        ds, _, ep = minari_episode(tmp_path / "minari", monkeypatch, "atari-speech/spaceinvaders/ends-v0", t)
        traj = load(s, t, speech=False)
        assert ep.rewards.sum() == traj.rewards.sum()
        assert ep.terminations.sum() == traj.terminals.sum() == (t in over_ids)
        assert ep.terminations[-1] == traj.terminals[-1] and ep.truncations[-1] == (not traj.terminals[-1])
        assert ep.infos["frame"][-1] == len(traj) - 1 and ep.infos["first_frame"][1] == 0
        np.testing.assert_array_equal(ep.infos["first_frame"][2:], ep.infos["frame"][1:-1] + 1)  # no frame twice
        np.testing.assert_array_equal(ep.observations, trex_observations(s, t, cache_dir=None).stacks)
    assert any(load(s, t, speech=False).rewards[4 * (lengths[t] // 4) :].any() for t in quit_ids)


@pytest.fixture(scope="module")
def agc_game_over(tmp_path_factory):
    """A Space Invaders game played to game over and a short Video Pinball trajectory, exported in both dialects."""
    from server.dataset.export import export_agc, select

    root = tmp_path_factory.mktemp("agc_dialects")
    store = root / "store"
    emu = EmulatorSession("space_invaders", 0, sound=False)
    over = offline_trajectory(store, "spaceinvaders", "space_invaders", "OVER", 1, 1004, 0.6, 10_000, emu=emu)
    pinball = offline_trajectory(store, "videopinball", "video_pinball", "PIN", 1, 3, 0.5, 120)
    s = open_store(str(store))
    outs = {}
    for dialect in ("bool", "int"):
        export_agc(s, root / dialect, select(s), terminal=dialect)
        outs[dialect] = root / dialect
    return s, over, pinball, outs


@pytest.mark.parametrize(("dialect", "reader"), [("bool", "v1"), ("int", "v2")])
def test_agc_dialects_read_by_their_readers(agc_game_over, dialect, reader):
    s, over, pinball, outs = agc_game_over
    data = agc_load_trajectories(outs[dialect], reader)
    assert set(data) == {"spaceinvaders", "pinball"}  # AGC's names: Video Pinball is "pinball"
    traj = load(s, over, speech=False)
    got = data["spaceinvaders"][1]
    assert traj.terminals[-1] and [g["terminal"] for g in got] == traj.terminals.astype(int).tolist()
    assert [g["reward"] for g in got] == traj.rewards.tolist() and [g["action"] for g in got] == traj.actions.tolist()
    assert len(data["pinball"][1]) == len(load(s, pinball, speech=False))
    assert (outs[dialect] / "screens" / "pinball" / "1" / "0.png").exists()


def test_agc_dialects_fail_with_the_other_reader(agc_game_over):
    """Why the dialect matters: v2's reader raises on True/False; v1's (and T-REX's) reads 1/0 as never terminal,
    silently, so T-REX's agc_demos.py would drop the demonstration as not played to the end."""
    _, _, _, outs = agc_game_over
    with pytest.raises(ValueError):
        agc_load_trajectories(outs["bool"], "v2")
    assert not any(g["terminal"] for g in agc_load_trajectories(outs["int"], "v1")["spaceinvaders"][1])


def test_agc_terminal_option_on_the_command_line(rec, tmp_path):
    r, d, store = rec
    run_export("--format", "agc", "--store", str(d), "--out", str(tmp_path), "--agc-terminal", "int", r.mute)
    rows = (tmp_path / "trajectories" / "spaceinvaders" / "1.txt").read_text().split("\n")
    n = r.frames[r.mute]
    assert rows[2].split(",")[3] == "0" and len(agc_load_trajectories(tmp_path, "v2")["spaceinvaders"][1]) == n


def test_minari_rgb_export_is_compressed_under_1_gb_per_hour(rec, minari_dir):
    """Raw screens are 100 KB a frame, 22 GB per hour of play; gzip in HDF5 (which minari's loader reads, see
    test_minari_rgb_dataset_loads_with_minari) must bring them under 1 GB per hour: 4.6 KB a frame at 60 Hz."""
    import h5py

    r, _, _ = rec
    path = next((minari_dir / "atari-speech/spaceinvaders/human-v0").rglob("main_data.hdf5"))
    with h5py.File(path) as f:
        assert f["episode_0/observations"].compression == "gzip"
    frames = sum(r.frames.values()) + len(r.frames)  # observations: one more than steps per episode
    assert path.stat().st_size / frames * 60 * 3600 < 1e9
