"""The capacity benchmark's report and the nginx configuration it renders (no server: scripts/bench.py --quick and
tests/test_nginx.py run the real thing)."""

import sys

import numpy as np
from helpers import ROOT

from benchmark import doc, ladder, loadgen, run, tables
from benchmark import parts as tick_parts
from benchmark import probe as core_speed
from benchmark.nginx import DEPLOY_CONF, balanced_sources, ip_hash_backend, render_conf

REPLAY = """## Replay and video export

Measured by `python scripts/bench_replay.py`.

| trajectory | length | frames | re-simulation (verify) | video export | export speed | file |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| Pong | 10.0 min | 36000 | 2.25 s (16,034 frames/s) | 70 s | 510 frames/s (8.5x real time) | 30 MB |
"""


def test_the_capacity_section_is_replaced_and_the_replay_section_kept(tmp_path):
    write_section = doc.write_section
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n" + REPLAY)
    write_section(path, "Capacity", "first run", first=True)
    write_section(path, "Capacity", "second run", first=True)
    text = path.read_text()
    assert text.count("## Capacity") == 1 and "second run" in text and "first run" not in text
    assert text.index("## Capacity") < text.index("## Replay and video export")
    assert REPLAY.strip() in text


def test_the_ladder_climbs_until_a_step_breaks_then_narrows_the_break_down():
    def rows(*steps):
        return [{"per_proc": n, "holds": ok} for n, ok in steps]

    assert ladder.next_steps(rows((32, True)), [40, 48]) == [40, 48]  # climbing
    # broke at 72 with 64 held: try 68; then stop, 4 apart
    assert ladder.next_steps(rows((64, True), (72, False)), []) == [68]
    assert ladder.next_steps(rows((64, True), (72, False), (68, True)), []) == []
    assert ladder.next_steps(rows((64, True), (72, False), (68, False)), []) == []
    # two processes: broke at the first step (32), held at half of it (16): 24, then 28 or 20
    assert ladder.next_steps(rows((32, False)), [40]) == [16]
    assert ladder.next_steps(rows((32, False), (16, True)), []) == [24]
    assert ladder.next_steps(rows((32, False), (16, True), (24, True)), []) == [28]
    assert ladder.next_steps(rows((32, False), (16, True), (24, False)), []) == [20]
    assert ladder.next_steps(rows((32, False), (16, True), (24, False), (20, True)), []) == []
    # nothing holds: halve down to 8, never below
    assert ladder.next_steps(rows((16, False), (8, False)), []) == []
    assert ladder.next_steps(rows((12, False)), []) == []
    # a step that held above the break (noise) does not count as the floor
    assert ladder.next_steps(rows((56, True), (64, False), (72, True)), []) == [60]


def test_a_step_that_broke_while_its_core_was_slow_is_run_again_and_only_its_last_try_counts():
    broke_slow = {"per_proc": 64, "holds": False, "slow_seconds": 3}
    assert ladder.run_again(broke_slow, [broke_slow], attempts=2)
    assert not ladder.run_again(broke_slow, [broke_slow], attempts=1)  # --attempts 1: never again
    assert not ladder.run_again(broke_slow, [dict(broke_slow), broke_slow], attempts=2)  # tried twice already
    assert not ladder.run_again({**broke_slow, "slow_seconds": 0}, [broke_slow], attempts=2)  # the server's own break
    assert not ladder.run_again({**broke_slow, "holds": True}, [broke_slow], attempts=2)

    def row(n, ok, **kw):
        return {
            "config": "1 proc, eventlet, xor",
            "per_proc": n,
            "sessions": n,
            "holds": ok,
            "fps_mean": 60.0,
            "fps_min": 60.0,
            "interval_p99": 19.0 if ok else 22.0,
            **kw,
        }

    rows = [row(56, True), row(64, False, slow_seconds=4, superseded=True), row(64, True)]
    assert ladder.next_steps(rows, [72]) == [72]  # the ladder goes on as if 64 had held the first time
    text = tables.capacity(rows + [row(72, False)])
    assert "| 1 proc, eventlet, xor | 64 | 64 | 72 per core" in text and "**met**" in text
    assert "**no**, run again" in tables.tables(
        [
            {
                **rows[1],
                "server_cpu_pct": 90,
                "cpu_per_session_pct": 1.4,
                "cpu_us_per_frame": 230,
                "bytes_per_frame": 92,
                "down_kBps": 8,
                "up_kBps": 99,
                "record_kBps": 8000,
                "loadgen_cpu_pct": 20,
                "loop_lag_p99": 1.2,
                "procs": 1,
            }
        ]
    )


def test_the_core_speed_of_a_window_counts_its_slow_and_unsampled_seconds():
    t = 1000.0
    samples = []
    for second, us in enumerate([80, 81, 79, 80, 82, 110, 100, None, 80]):
        if us is not None:
            samples += [(t + second + i / 10, us + (i % 3)) for i in range(10)]
    samples = np.array(samples)
    ref = core_speed.reference(samples)
    assert 79 <= ref <= 80  # the fastest second
    got = core_speed.window_figures(samples, t + 2, t + 9, ref)
    assert got["seconds"] == 7 and got["slow_seconds"] == 2 and got["unsampled_seconds"] == 1  # 110 and 100 (>= 96)
    assert 80 <= got["us_per_step"] <= 82
    assert core_speed.window_figures(samples, t, t + 5, None)["slow_seconds"] == 0  # no reference yet: none slow


def test_the_cores_are_judged_only_where_the_server_has_them_to_itself(tmp_path):
    probes = core_speed.CoreProbes([0, 1], tmp_path)  # not started: the samples are written here
    for cpu, slow in ((0, 130), (1, 80)):
        lines = [f"{100 + s + i / 10:.4f} {80 if s < 5 else slow}\n" for s in range(10) for i in range(10)]
        probes.path(cpu).write_text("".join(lines))
    got = run.probed_cores(probes, {0}, {1}, 105.0, 110.0)
    assert set(got) == {0} and got[0]["slow_seconds"] == 5 and got[0]["reference_us"] == 80
    assert run.probed_cores(probes, {1}, {0}, 105.0, 110.0)[1]["slow_seconds"] == 0
    assert run.probed_cores(probes, {0, 1}, {0, 1}, 105.0, 110.0) is None  # two processes share with the load
    assert run.probed_cores(None, {0}, {1}, 105.0, 110.0) is None  # --no-probe


def test_the_core_probe_steps_emulators_at_idle_priority(tmp_path):
    """The probe shares the server's core during the benchmark: it must only run when the core is otherwise idle."""
    import os
    import time

    cpu = sorted(os.sched_getaffinity(0))[0]
    with core_speed.CoreProbes([cpu], tmp_path) as probes:
        pid = probes.procs[cpu].pid
        deadline = time.monotonic() + 30
        while probes.samples(cpu).shape[0] < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert os.sched_getaffinity(pid) == {cpu}
        samples = probes.samples(cpu)
    assert samples.shape[0] >= 5 and (samples[:, 1] > 1).all()  # microseconds of CPU per emulator step
    assert (np.diff(samples[:, 0]) > 0.05).all()  # about every 0.1 s, not a busy loop
    assert probes.procs[cpu].returncode is not None  # stopped with the context


def test_a_probe_whose_parent_died_stops(tmp_path):
    """A benchmark killed outright (no chance to stop its probes) must not leave them running for good."""
    import os
    import subprocess
    import time

    code = (
        f"import os, time; from benchmark import probe; "
        f"from pathlib import Path; p = probe.CoreProbes([{sorted(os.sched_getaffinity(0))[0]}], "
        f"Path({str(tmp_path)!r})).start(); print(p.procs[p.cpus[0]].pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    samples = tmp_path / next(iter(os.listdir(tmp_path)), "core0.txt")
    deadline = time.monotonic() + 30
    while not (samples.exists() and samples.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert samples.read_text().count("\n") >= 2  # the probe is running
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as f:  # reaped by init, or a zombie left for it
            if f.read().split(") ", 1)[1].startswith("Z"):
                break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        raise AssertionError("the probe outlived its parent")


def test_replay_figures_are_quoted_not_measured(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n" + REPLAY)
    quoted = tables.replay_figures(path)
    assert "16,034 frames/s" in quoted and "8.5x real time" in quoted and "30 MB" not in quoted
    assert "not measured yet" in tables.replay_figures(tmp_path / "missing.md")


def test_a_step_holds_only_at_60_fps_with_p99_under_20_ms():
    row = {"fps_mean": 59.97, "fps_min": 59.8, "interval_p99": 19.0, "refused": []}
    assert ladder.holds(row)
    assert not ladder.holds({**row, "interval_p99": 20.5})
    assert not ladder.holds({**row, "fps_mean": 59.9})
    assert not ladder.holds({**row, "refused": ["session 3: full"]})


def test_client_websocket_frames_are_masked():
    payload = b'42["key",{}]' * 20
    frame = loadgen.ws_frame(1, payload)
    assert frame[0] == 0x81 and frame[1] == 0x80 | 126
    mask, body = frame[4:8], frame[8:]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload


def test_the_rendered_config_has_the_ports_and_a_private_prefix(tmp_path):
    conf = render_conf(DEPLOY_CONF.read_text(), "127.0.0.1:18080", ["127.0.0.1:1001", "127.0.0.1:1002"], tmp_path)
    assert "listen 127.0.0.1:18080;" in conf and "listen 80;" not in conf
    assert "server 127.0.0.1:1001;" in conf and "server 127.0.0.1:1002;" in conf and "127.0.0.1:5001;" not in conf
    assert conf.startswith("daemon off;") and f"pid {tmp_path / 'nginx.pid'};" in conf
    assert f"proxy_temp_path {tmp_path / 'tmp' / 'proxy'};" in conf


def test_balanced_sources_alternate_between_backends():
    sources = balanced_sources(2, 8)
    assert len(set(sources)) == 8
    assert [ip_hash_backend(a, 2) for a in sources] == [0, 1] * 4


def test_every_part_the_tick_profiler_times_exists():
    """scripts/tick_parts.py wraps these by name; a rename would otherwise only show when someone profiles."""
    import importlib

    for module, cls, name in tick_parts.PARTS:
        owner = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        assert callable(getattr(owner, name)), (module, cls, name)


def test_the_tick_profiler_runs_and_sees_every_part():
    """scripts/tick_parts.py end to end, briefly: it once counted frames by a method the Ticker no longer called and
    reported 0 frames/s; every part it times must be called while demonstrators play."""
    import os
    import re
    import subprocess

    cpus = sorted(os.sched_getaffinity(0))
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "tick_parts.py"),
            "--sessions",
            "2",
            "--duration",
            "2",
            "--server-cpu",
            str(cpus[0]),
            "--loadgen-cpu",
            str(cpus[-1]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    frames = float(re.search(r"([\d.]+) frames/s", out.stdout).group(1))
    assert frames > 60, out.stdout  # two demonstrators at 60 fps
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[3:] if line.strip()}
    for _module, cls, name in tick_parts.PARTS:
        label = f"{cls}.{name}" if cls else name
        assert label in rows and float(rows[label][1]) > 0, (label, out.stdout)
    assert re.search(r"^gc gen0: ", out.stdout, re.M), out.stdout


def test_the_tick_profiler_times_the_collectors_pauses_by_generation():
    """Each collection stops every game of the process: tick_parts reports them by generation, from gc.callbacks."""
    import gc
    import re

    pauses = tick_parts.GcPauses()
    pauses.install()
    try:
        before = pauses.mark()
        garbage = [[i] for i in range(20000)]  # something for the collector to walk
        for _ in range(3):
            gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
    del garbage
    assert len(pauses.pauses[0]) - before[0] >= 3 and len(pauses.pauses[2]) - before[2] >= 1
    assert all(p >= 0 for p in pauses.pauses[2]) and max(pauses.pauses[2]) > 0
    lines = pauses.lines(before, wall=2.0)
    assert lines[0].startswith("gc gen0: ") and "/s, pause mean " in lines[0]
    assert re.match(r"gc gen2: [\d.]+/s, pause mean [\d.]+ ms, max [\d.]+ ms$", lines[2]), lines
    after = pauses.mark()
    gc.collect(0)  # uninstalled: not counted
    assert pauses.mark() == after
    assert pauses.lines(after, wall=1.0)[0] == "gc gen0: no collection"


def test_every_configuration_runs_with_the_fast_and_the_plain_path_side_by_side():
    """The plain path (socketio.emit) is the reference: the benchmark measures it beside the fast path in one run."""
    opts = run.Options(codecs=("xor",), async_modes=("eventlet", "gevent"), procs=(1,), multi_codecs=())
    got = run.configs(opts)
    assert [c.label for c in got] == [
        "1 proc, eventlet, xor, fast path",
        "1 proc, eventlet, xor, plain path",
        "1 proc, gevent, xor, fast path",
        "1 proc, gevent, xor, plain path",
    ]
    assert [c.env() for c in got[:2]] == [{"FAST_PATH": "1"}, {"FAST_PATH": "0"}]  # the server's fast_path setting
    only = run.configs(run.Options(codecs=("xor",), async_modes=("eventlet",), procs=(1,), paths=("plain",)))
    assert [c.path for c in only] == ["plain"]


def test_the_benchmark_reads_a_trajectorys_server_ms_and_applied_keys(tmp_path):
    """benchmark.recordings is the benchmark's one reader of frames.csv and events.csv."""
    from benchmark import recordings

    (tmp_path / "frames.csv").write_text("frame,server_ms,reward\n0,0.5,0\n1,17.1,0\n2,33.9,1\n")
    assert recordings.server_ms(tmp_path).tolist() == [0.5, 17.1, 33.9]
    assert recordings.key_events(tmp_path) == []  # no events.csv
    (tmp_path / "events.csv").write_text(
        "frame,event,detail,client_ms\n3,key,,1000.5\n4,key,stale,1001.0\n5,start,,\n6,key,,1002.25\n"
    )
    assert recordings.key_events(tmp_path) == [(3, 1000.5), (6, 1002.25)]


def test_the_pipeline_table_gives_real_time_multiples_bytes_per_hour_and_scaling(tmp_path):
    from benchmark.pipeline import Step, Study, Timing, report

    store = tmp_path / "store"
    (store / "t").mkdir(parents=True)
    (store / "t" / "frames.csv").write_bytes(b"x" * 1000)
    study = Study(store, ["t"], 36000, 60.0)  # 10 minutes of play
    steps = [
        Step("verify", {1: Timing(4.0, 4.0), 2: Timing(2.5, 4.4)}),
        Step("videos, 1280x840", {1: Timing(60, 60, 6 * 10**6), 2: Timing(30, 61, 6 * 10**6)}),
    ]
    table = report(study, steps, [1, 2], "python scripts/bench_pipeline.py --minutes 10")
    verify = next(line for line in table.splitlines() if line.startswith("| verify"))
    assert "| 150x | 150x |" in verify and "| 1.60x |" in verify and "≥ 150x per core" in verify
    videos = next(line for line in table.splitlines() if line.startswith("| videos"))
    assert "| 10x |" in videos and "| 2.00x |" in videos and "36 MB" in videos and "≥ 10x" in videos
    assert "36000 frames = 10.0 minutes of play" in table
