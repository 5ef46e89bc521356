"""The benchmarks' library; scripts/ holds their command lines.

- loadgen: simulated demonstrators in one asyncio process (scripts/loadgen.py)
- run: the capacity benchmark, configuration by configuration and step by step (scripts/bench.py)
- ladder: when a step holds, and which step comes next
- servers: the server processes of a step (behind nginx when several), py-spy on them
- recordings: what the benchmark reads of the trajectories its steps recorded (frames.csv, events.csv)
- tables: the capacity report
- doc: docs/benchmarks.md, a section at a time
- probe: how fast each core runs a fixed workload, second by second (scripts/core_speed.py)
- nginx: deploy/nginx.conf on loopback (also tests/test_nginx.py)
- parts: timers around the parts of a loaded server's tick (scripts/tick_parts.py)
- replay: re-simulation and video export speed (scripts/bench_replay.py)
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: the servers run from it, and deploy/ and docs/ are in it
