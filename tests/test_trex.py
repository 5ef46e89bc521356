"""T-REX on scripted Space Invaders players of different skill: pairs are sampled as T-REX samples them, and the
example script learns a reward that ranks held-out demonstrations' snippets well above chance."""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT
from trex_recordings import offline_trajectory

from server.core.emulator import EmulatorSession
from server.dataset import Dataset
from server.store import open_store

SKILLS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # share of 32-frame blocks in which the player sweeps and fires
TORCH_HINT = "PyTorch is optional: pip install -r requirements-trex.txt (or requirements-dev.txt) to run this test"


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """Twelve complete trajectories, two per skill level, up to 30 s each, written with the core library."""
    store = tmp_path_factory.mktemp("trex") / "store"
    emu = EmulatorSession("space_invaders", 0, sound=False)
    n = 0
    for p in SKILLS:
        for _ in range(2):
            n += 1
            offline_trajectory(
                store, "spaceinvaders", "space_invaders", "BOT", n, seed=1000 + n, p_active=p, max_frames=1800, emu=emu
            )
    return store


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One observation cache for the module: the trajectories are re-simulated once."""
    return tmp_path_factory.mktemp("trex_cache")


def test_scores_rise_with_skill(demos):
    infos = {t.traj_id: t for t in Dataset(open_store(str(demos)), cache_dir=None).trajectories()}
    scores = [infos[f"spaceinvaders_BOT_{n}"].final_score for n in range(1, 2 * len(SKILLS) + 1)]
    by_level = np.array(scores).reshape(len(SKILLS), 2).mean(axis=1)
    assert by_level[0] == 0 and by_level[-1] > by_level[1]
    assert np.corrcoef(by_level, SKILLS)[0, 1] > 0.8


def test_pairs_are_sampled_as_trex_samples_them(demos, cache):
    ds = Dataset(open_store(str(demos)), cache_dir=cache)
    ranked = ds.ranked_demonstrations("spaceinvaders")
    assert [d.final_score for d in ranked] == sorted(d.final_score for d in ranked)
    pairs = ds.trex_pairs(300, (50, 100), rng=np.random.default_rng(0), game="spaceinvaders")
    used = set()
    for p in pairs:
        better, worse = p.better, p.worse
        assert better.score > worse.score and better.rank > worse.rank
        assert better.start >= worse.start  # the progress prior
        assert better.length == worse.length and 50 <= better.length < 100
        assert better.obs.shape == (len(range(0, better.length, 2)), 84, 84, 4)
        for s in p.snippets:
            assert s.start + s.length <= len(ds.observations(s.traj_id))
        used |= {better.traj_id, worse.traj_id}
    assert 0.35 < np.mean([p.label for p in pairs]) < 0.65
    assert len(used) == len(ranked)
    # the same seed gives the same pairs
    again = ds.trex_pairs(5, (50, 100), rng=np.random.default_rng(0), game="spaceinvaders")
    assert [(p.label, p.better.start, p.worse.start) for p in again] == [
        (p.label, p.better.start, p.worse.start) for p in pairs[:5]
    ]


def test_the_example_learns_a_reward_that_ranks_held_out_demonstrations(demos, cache, tmp_path):
    pytest.importorskip("torch", reason=TORCH_HINT)
    metrics = tmp_path / "metrics.json"
    out = subprocess.run(
        [
            sys.executable,
            "scripts/train_trex.py",
            "--store",
            str(demos),
            "--game",
            "spaceinvaders",
            "--train-pairs",
            "300",
            "--test-pairs",
            "200",
            "--threads",
            "1",
            "--snippet-min",
            "10",
            "--snippet-max",
            "20",
            "--epochs",
            "2",
            "--batch",
            "8",
            "--lr",
            "3e-4",
            "--cache-dir",
            str(cache),
            "--save",
            str(tmp_path / "reward.pt"),
            "--metrics",
            str(metrics),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(metrics.read_text())
    print(out.stdout)
    assert set(result["train_demonstrations"]).isdisjoint(result["test_demonstrations"])
    assert result["held_out_accuracy"] >= 0.7, out.stdout
    assert (tmp_path / "reward.pt").stat().st_size > 0


def test_the_example_without_torch_says_how_to_install_it():
    code = (
        "import sys, runpy; sys.modules['torch'] = None; sys.argv = ['train_trex.py']; "
        "runpy.run_path('scripts/train_trex.py', run_name='__main__')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "pip install" in out.stderr
