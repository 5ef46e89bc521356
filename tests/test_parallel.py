"""`--jobs`: the researcher commands over a process pool give the same report and the same files as one process."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT
from trex_recordings import copy_store, server_recordings

from server.parallel import progress_bar, run_jobs


def run_script(script: str, *args: str, env: dict | None = None) -> str:
    out = subprocess.run(
        [sys.executable, f"scripts/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == "", out.stderr  # no progress bar when stderr is not a terminal
    return out.stdout


def tree(d: Path) -> dict[str, str]:
    """Every file under d (relative path -> sha256)."""
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return server_recordings(tmp_path_factory)


def _pid(_ctx, item: int) -> tuple[int, int]:
    return item * item, os.getpid()


def _fail(_ctx, item: int) -> int:
    if item == 3:
        raise ValueError("three")
    return item


def test_run_jobs_uses_worker_processes_and_keeps_the_order():
    out = list(run_jobs(_pid, range(8), jobs=2, quiet=True))
    assert [item for item, _ in out] == list(range(8))
    assert [r[0] for _, r in out] == [i * i for i in range(8)]
    pids = {r[1] for _, r in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    serial = list(run_jobs(_pid, range(3), jobs=1, quiet=True))
    assert {r[1] for _, r in serial} == {os.getpid()}
    with pytest.raises(ValueError, match="three"):
        list(run_jobs(_fail, range(6), jobs=2, quiet=True))
    with pytest.raises(ValueError):
        list(run_jobs(_pid, range(2), jobs=0))


def _blas_threads(_ctx, _item: int) -> list[int]:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_each_worker_runs_one_blas_thread():
    """Two workers with OpenBLAS's default thread per core each oversubscribed the cores: two jobs of T-REX
    observations took 1.5x the CPU of one (docs/benchmarks.md)."""
    out = list(run_jobs(_blas_threads, range(4), jobs=2, quiet=True))
    assert all(threads == [1] * len(threads) and threads for _, threads in out), out


def test_progress_bar_only_on_a_terminal(monkeypatch):
    assert progress_bar(10, "x").disable  # pytest's stderr is not a terminal
    assert progress_bar(10, "x", quiet=True).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress_bar(10, "verify")
    assert not bar.disable and bar.fp is not None and bar.total == 10
    bar.close()
    assert progress_bar(10, "x", quiet=True).disable


def test_verify_jobs_2_reports_as_jobs_1(rec):
    one = run_script("verify.py", "--all", "--store", str(rec.store), "--jobs", "1")
    two = run_script("verify.py", "--all", "--store", str(rec.store), "--jobs", "2")
    assert one == two
    assert "3 verified, 0 failed" in one


def test_observations_jobs_2_writes_what_jobs_1_writes(rec, tmp_path):
    for jobs in ("1", "2"):
        out = run_script(
            "observations.py", "--all", "--store", str(rec.store), "--cache-dir", str(tmp_path / jobs), "--jobs", jobs
        )
        assert out.count("observations (") == 3
    assert tree(tmp_path / "1") == tree(tmp_path / "2")
    assert len([p for p in tree(tmp_path / "1") if p.endswith(".npy")]) == 3


def test_agc_export_jobs_2_writes_what_jobs_1_writes(rec, tmp_path):
    for jobs in ("1", "2"):
        run_script(
            "export.py", "--format", "agc", "--store", str(rec.store), "--out", str(tmp_path / jobs), "--jobs", jobs
        )
    one, two = tree(tmp_path / "1"), tree(tmp_path / "2")
    assert one == two
    assert len([p for p in one if p.startswith("trajectories/")]) == 3


@pytest.mark.parametrize("observations", ["trex", "rgb"])
def test_minari_export_jobs_2_writes_what_jobs_1_writes(rec, tmp_path, observations):
    """Both are built in the workers: T-REX observations, and RGB screens compressed there (gzip, the default)."""
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("minari")
    arrays = {}
    for jobs in ("1", "2"):
        run_script(
            "export.py",
            "--format",
            "minari",
            "--store",
            str(rec.store),
            "--dataset-id",
            "atari-speech/spaceinvaders/jobs-v0",
            "--minari-dir",
            str(tmp_path / jobs),
            "--observations",
            observations,
            "--cache-dir",
            str(tmp_path / f"cache-{jobs}"),
            "--jobs",
            jobs,
        )
        (path,) = (tmp_path / jobs).rglob("main_data.hdf5")
        with h5py.File(path) as f:
            arrays[jobs] = {name: f[name][()] for name in _datasets(f, h5py)}
            if observations == "rgb":  # as the gzip filter would store them: one screen a chunk
                obs = f["episode_0/observations"]
                assert obs.compression == "gzip" and obs.chunks == (1, 210, 160, 3)
    assert sorted(arrays["1"]) == sorted(arrays["2"])
    assert any(k.endswith("observations") for k in arrays["1"])
    if observations == "trex":
        assert tree(tmp_path / "cache-1") == tree(tmp_path / "cache-2")  # observations made in the workers
    for k, a in arrays["1"].items():
        np.testing.assert_array_equal(a, arrays["2"][k], err_msg=k)


def _datasets(f, h5py) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def test_annotation_jobs_2_writes_what_jobs_1_writes(rec, tmp_path):
    pytest.importorskip("pocketsphinx")
    files = {}
    for jobs in ("1", "2"):
        store = copy_store(rec, tmp_path / jobs)
        out = run_script("annotate_speech.py", "--all", "--store", str(store), "--keywords", "yes,no", "--jobs", jobs)
        assert f"{rec.mute}: no speech, skipped" in out
        files[jobs] = {}
        for p in sorted(store.rglob("speech_*")):
            data = p.read_bytes()
            if p.suffix == ".json":
                info = json.loads(data)
                info.pop("created_utc")
                data = json.dumps(info, sort_keys=True).encode()
            files[jobs][str(p.relative_to(store))] = data
    assert files["1"] == files["2"]
    assert sum(p.endswith("speech_words.csv") for p in files["1"]) == 2
    shutil.rmtree(tmp_path)
