"""The researcher's pipeline at study scale: record a synthetic study through the real server, then time every step.

    python scripts/bench_pipeline.py [--minutes 60] [--sessions 12] [--jobs N] [--keep DIR] [--write docs/benchmarks.md]

Recording: one server (`python -m server`, Space Invaders) and `sessions` simulated demonstrators at once
(benchmark.loadgen.Session: the browser's protocol, paint acks, 48 kHz speech-like microphone audio), of different
skill (0.5 to 8 key events a second), each playing `minutes / sessions` minutes; a game over starts the next episode,
as a demonstrator pressing Start again. Play is real time, so recording takes about `minutes / sessions` minutes.

Steps, each run as the researcher runs it (the scripts, in a subprocess, `--quiet`) with `--jobs 1` on one core and
`--jobs N` on N cores (`on_cores`):
verify (`verify.py --all`), annotate (`annotate_speech.py --all --keywords yes,no`: pocketsphinx keyword mode),
the AGC export, the Minari export (RGB, gzip), T-REX observations (`observations.py --all`, into an empty cache) and
videos (`server.video.export_video` at its default scale, one trajectory after another with 1 job, trajectories
in parallel with N). Reported: wall time, throughput as a multiple of real time (hours of play per hour of wall
time), the same per CPU-second (all processes of the step: the steadier figure on a shared machine), output bytes per
hour of play, and the speed-up from 1 core to N.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmark import ROOT
from benchmark.loadgen import Session, speech_like_pcm
from benchmark.servers import wait_ready
from server.video.encode import DEFAULT_SCALE, output_size

SECTION = "The researcher's pipeline at study scale"
SKILLS = (0.5, 1.0, 2.0, 4.0, 8.0)  # key events a second, per demonstrator in turn
GOALS = {
    "verify": "≥ 150x per core",
    "annotate": "≥ 20x",
    "AGC export": "≥ 20x",
    "videos": "≥ 10x",
    "Minari export": "≤ 1 GB per hour",
}


@dataclass
class Study:
    store: Path
    traj_ids: list[str]
    frames: int
    recording_s: float

    @property
    def play_s(self) -> float:
        return self.frames / 60.0


@dataclass
class Timing:
    wall_s: float
    cpu_s: float
    out_bytes: int = 0


@dataclass
class Step:
    name: str
    runs: dict[int, Timing] = field(default_factory=dict)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record_study(store: Path, minutes: float, sessions: int, seed: int = 0) -> Study:
    """Record `minutes` of play in all through a real server, `sessions` demonstrators at once."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = store.parent / "server.log"
    cmd = [sys.executable, "-m", "server", "--port", str(port), "--store", str(store)]
    cmd += ["--game", "spaceinvaders", "--max-demonstrators", str(sessions + 2), "--max-connects-per-s", "0"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=_env())
    t0 = time.monotonic()
    try:
        wait_ready(url, proc, log)
        asyncio.run(_play(url, sessions, minutes * 60.0 / sessions, seed))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return study_in(store, time.monotonic() - t0)


async def _play(url: str, n: int, seconds: float, seed: int) -> None:
    pcm = speech_like_pcm(seconds=7.0, seed=seed)
    sessions = [
        Session(i, url, f"BENCH{i}", seed=seed * 1000 + i, keys_per_s=SKILLS[i % len(SKILLS)]) for i in range(n)
    ]
    try:
        for s in sessions:
            await s.connect()
            await s.start(timeout=30)
            s.begin_play(pcm)
        await asyncio.sleep(seconds)
        await asyncio.gather(*(s.stop(timeout=60) for s in sessions))
    finally:
        for s in sessions:
            s.close()
    await asyncio.sleep(0.5)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], object]) -> Timing:
    """Wall and CPU time (this process and every child it waited for) of fn()."""
    c0, s0, t0 = _children_cpu(), _self_cpu(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    return Timing(wall, _children_cpu() - c0 + _self_cpu() - s0)


def script(name: str, *args: str) -> Callable[[], None]:
    def run() -> None:
        p = subprocess.run(
            [sys.executable, f"scripts/{name}", *args, "--quiet"],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
        )
        if p.returncode not in (0, 1):  # 1: some trajectory failed or had nothing to do (reported below)
            raise RuntimeError(f"{name} exited {p.returncode}: {p.stderr[-2000:]}")
        if p.returncode == 1:
            print(f"warning: {name}: {p.stdout[-500:]} {p.stderr[-500:]}", file=sys.stderr)

    return run


def _video_one(ctx, item: tuple[str, str, int]) -> int:
    from server.video import export_video

    traj_id, out, scale = item
    return export_video(ctx, traj_id, out, scale=scale, jobs=1).frames


def videos(store_url: str, ids: list[str], out: Path, jobs: int, scale: int = DEFAULT_SCALE) -> Callable[[], None]:
    def run() -> None:
        import functools

        from server.parallel import run_jobs
        from server.store import open_store

        out.mkdir(parents=True, exist_ok=True)
        items = [(t, str(out / f"{t}.mp4"), scale) for t in ids]
        setup = functools.partial(open_store, store_url)
        for _ in run_jobs(_video_one, items, jobs, setup, quiet=True):
            pass

    return run


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def run_steps(
    study: Study, work: Path, jobs_list: list[int], only: set[str] | None = None, video_scale: int = DEFAULT_SCALE
) -> list[Step]:
    """Time every step with each number of jobs (outputs of each run go to their own directory)."""
    store = str(study.store)
    steps: list[Step] = []

    def want(name: str) -> bool:
        return only is None or name in only

    plans: list[tuple[str, Callable[[int, Path], Callable[[], None]], Callable[[Path], int]]] = [
        ("verify", lambda j, d: script("verify.py", "--all", "--store", store, "--jobs", str(j)), lambda d: 0),
        (
            "annotate",
            lambda j, d: script(
                "annotate_speech.py", "--all", "--store", store, "--keywords", "yes,no", "--jobs", str(j)
            ),
            lambda d: sum(
                p.stat().st_size for p in Path(store).rglob("speech_*") if p.name != "speech.wav" and p.is_file()
            ),
        ),
        (
            "AGC export",
            lambda j, d: script("export.py", "--format", "agc", "--store", store, "--out", str(d), "--jobs", str(j)),
            dir_bytes,
        ),
        (
            "Minari export",
            lambda j, d: script(
                "export.py",
                "--format",
                "minari",
                "--store",
                store,
                "--dataset-id",
                "atari-speech/spaceinvaders/bench-v0",
                "--minari-dir",
                str(d),
                "--jobs",
                str(j),
                "--include-interrupted",
            ),
            dir_bytes,
        ),
        (
            "T-REX observations",
            lambda j, d: script("observations.py", "--all", "--store", store, "--cache-dir", str(d), "--jobs", str(j)),
            dir_bytes,
        ),
        ("videos", lambda j, d: videos(store, study.traj_ids, d, j, video_scale), dir_bytes),
    ]
    for name, make, size in plans:
        if not want(name):
            continue
        step = Step(name if name != "videos" else "videos, {}x{}".format(*output_size(video_scale, False)))
        for j in jobs_list:
            d = work / f"{name.replace(' ', '-')}-{j}"
            with on_cores(j):
                timing = timed(make(j, d))
            timing.out_bytes = size(d)
            step.runs[j] = timing
            print(f"{name}, {j} job(s): {timing.wall_s:.1f} s wall, {timing.cpu_s:.1f} s CPU", file=sys.stderr)
        steps.append(step)
    # The outputs are removed after every step has run, not between runs: on this VM's file system (ext4 with
    # `discard`) creating files in the seconds after tens of thousands were deleted cost 7-11 s of kernel time
    # instead of under 1 s, which the AGC export (a file per frame) measured as its own
    shutil.rmtree(work, ignore_errors=True)
    return steps


@contextlib.contextmanager
def on_cores(n: int) -> Iterator[None]:
    """This process and the processes it starts run on `n` of the cores it may use, for the block: `--jobs 1`
    is timed on one core, as the goal "2 cores at least 1.7x faster than 1" counts them (a step's helper processes,
    ffmpeg's for the videos, would otherwise give one job a second core)."""
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[:n])
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def _gb_per_hour(nbytes: int, play_s: float) -> str:
    per_hour = nbytes / (play_s / 3600)
    if not nbytes:
        return "-"
    return f"{per_hour / 1e9:.2f} GB" if per_hour >= 1e9 else f"{per_hour / 1e6:.0f} MB"


def report(study: Study, steps: list[Step], jobs_list: list[int], command: str) -> str:
    one, n = jobs_list[0], jobs_list[-1]
    hours = study.play_s / 3600
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    when = f" in {study.recording_s:.0f} s" if study.recording_s else " (earlier: --keep)"
    lines = [
        f"`{command}` on x86_64 with {os.cpu_count()} cores, Python {sys.version.split()[0]}; the machine was shared "
        f"(load average {load:.1f} at the end), so wall times are pessimistic and the per-CPU-second column is the "
        f"steadier figure.",
        "",
        f"Study: {len(study.traj_ids)} trajectories, {study.frames} frames = {study.play_s / 60:.1f} minutes of play "
        f"(Space Invaders, demonstrators of {len(SKILLS)} skills, speech-like microphone audio), recorded through the "
        f"server{when}; the store holds {_gb_per_hour(dir_bytes(study.store), study.play_s)} "
        f"per hour of play.",
        "",
        f"| step | {one} core: wall | {one} core: x real time | per CPU-second | {n} cores: wall "
        f"| {n} cores: x real time | speed-up {one}→{n} cores | CPU {n} / {one} | output per hour of play | goal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in steps:
        goal = GOALS.get(s.name.split(",")[0], "")
        a, b = s.runs[one], s.runs.get(n, s.runs[one])
        lines.append(
            f"| {s.name} | {a.wall_s:.1f} s | {study.play_s / a.wall_s:.0f}x | {study.play_s / a.cpu_s:.0f}x "
            f"| {b.wall_s:.1f} s | {study.play_s / b.wall_s:.0f}x | {a.wall_s / b.wall_s:.2f}x "
            f"| {b.cpu_s / a.cpu_s:.2f} "
            f"| {_gb_per_hour(a.out_bytes, study.play_s)} | {goal} |"
        )
    lines += ["", f"({hours:.2f} hours of play; 'x real time' is play time / wall time.)"]
    return "\n".join(lines)


def measure(
    minutes: float,
    sessions: int,
    jobs: int,
    keep: Path | None = None,
    only: set[str] | None = None,
    video_scale: int = DEFAULT_SCALE,
) -> tuple[Study, list[Step], list[int]]:
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        store = work / "store"
        if store.exists() and any(store.iterdir()):
            study = study_in(store)
        else:
            study = record_study(store, minutes, sessions)
        print(f"recorded {len(study.traj_ids)} trajectories, {study.play_s / 60:.1f} min of play", file=sys.stderr)
        jobs_list = sorted({1, jobs})
        return study, run_steps(study, work / "out", jobs_list, only, video_scale), jobs_list
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def study_in(store: Path, recording_s: float = 0.0) -> Study:
    """The trajectories of a store (one recorded now, or earlier: `--keep`)."""
    ids, frames = [], 0
    for d in sorted(store.iterdir()):
        if (d / "meta.json").exists():
            m = json.loads((d / "meta.json").read_text())
            if m.get("frames"):
                ids.append(d.name)
                frames += int(m["frames"])
    return Study(store, ids, frames, recording_s)


def video_breakdown(store_url: str, traj_id: str, scale: int = DEFAULT_SCALE) -> list[tuple[str, float, float]]:
    """Where a video export's time goes, stage by stage on one trajectory: (stage, wall s, CPU s incl. ffmpeg).

    Each stage is run on its own (the frames are produced once and kept in memory), one x264 thread throughout. The
    stages marked "before" are what the export did until issue 23's round (three swscale passes, CRF 20, AAC's default
    coder), measured in the same run for the ratio.
    """
    import imageio_ffmpeg

    from server.core.reader import read_frames
    from server.core.replay import replay, verify
    from server.store import open_store
    from server.video import ffmpeg_command, load_sound, output_size, write_audio_wav
    from server.video.encode import AAC

    store = open_store(store_url)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    rows: list[tuple[str, float, float]] = []
    frames: list[bytes] = []

    def stage(name: str, fn: Callable[[], object]) -> None:
        t = timed(fn)
        rows.append((name, t.wall_s, t.cpu_s))

    stage("re-simulation and verification", lambda: verify(store, traj_id))
    stage(
        "re-simulation + RGB screens from ALE, as bytes",
        lambda: frames.extend(rf.emulator.screen_rgb().tobytes() for rf in replay(store, traj_id)),
    )
    raw = b"".join(frames)
    width, height = output_size(scale, False)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "a.wav"
        sound = load_sound(store, traj_id, read_frames(store, traj_id))
        stage("soundtrack (numpy, 48 kHz WAV)", lambda: write_audio_wav(wav, sound))
        cmd = ffmpeg_command(ffmpeg, None, Path(tmp) / "v.h264", "mp4", scale, False, False, threads=1)
        vf = cmd.index("-vf") + 1
        before = list(cmd)
        before[vf] = (
            "scale=out_color_matrix=bt709:out_range=tv,format=yuv444p,"
            f"scale={width}:{height}:flags=neighbor,format=yuv420p,setsar=1"
        )
        qp = before.index("-qp")
        before[qp : qp + 2] = ["-crf", "20"]
        scale_only = [*cmd[: cmd.index("-c:v")], "-f", "null", "-"]
        stage("ffmpeg: colour conversion and scaling only", lambda: subprocess.run(scale_only, input=raw, check=True))
        scale_before = [*before[: before.index("-c:v")], "-f", "null", "-"]
        stage(
            "ffmpeg: colour conversion and scaling only (before: three passes)",
            lambda: subprocess.run(scale_before, input=raw, check=True),
        )
        stage("ffmpeg: scaling + x264 (the picture)", lambda: subprocess.run(cmd, input=raw, check=True))
        stage(
            "ffmpeg: scaling + x264 (the picture; before: three passes, CRF 20)",
            lambda: subprocess.run(before, input=raw, check=True),
        )
        aac = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav), "-b:a", "128k"]
        stage("ffmpeg: AAC", lambda: subprocess.run([*aac, *AAC, str(Path(tmp) / "a.m4a")], check=True))
        stage(
            "ffmpeg: AAC (before: its default coder)",
            lambda: subprocess.run([*aac, "-c:a", "aac", str(Path(tmp) / "b.m4a")], check=True),
        )
    return rows
