"""Benchmark: headless Chromium plays through the network emulator under a table of conditions (library:
benchmark.network, benchmark.netem).

    python scripts/bench_network.py [--seconds 30] [--audio-format pcm16k] [--only 1,3] [--keys cdp|page]
        [--write docs/benchmarks.md]

Per condition: frames visible, paint interval p50/p99/max, stalls over 50 and 100 ms, key-to-display latency
p50/p95/max (the loader's, from the files), keys and audio recorded against sent and captured, frames the server did
not send, whether the participant was warned, and whether the recording verifies. `--write PATH` also writes the
table to PATH under "Real networks", keeping the file's other sections.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmark import doc
from benchmark.network import CONDITIONS, SECTION, run, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="episode length per condition (default 30)")
    p.add_argument("--audio-format", default="pcm16k", choices=("pcm48", "pcm16k"))
    p.add_argument("--only", default="", help="comma-separated condition numbers (1-based) to run")
    p.add_argument(
        "--keys",
        default="cdp",
        choices=("cdp", "page"),
        help="cdp: keys pressed through Playwright (DevTools input events); page: the same key script run inside the "
        "page (benchmark.network.play)",
    )
    p.add_argument("--keep", default=None, help="keep the recordings in this directory")
    p.add_argument("--write", default=None, metavar="PATH", help="also write the table to PATH (docs/benchmarks.md)")
    args = p.parse_args(argv)
    chosen = [CONDITIONS[int(i) - 1] for i in args.only.split(",") if i.strip()] or list(CONDITIONS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        rows = run(chosen, args.seconds, work, args.audio_format, keys=args.keys)
    body = table(rows)
    print(body)
    for r in rows:
        for note in r.notes:
            print(f"{r.condition}: {note}", file=sys.stderr)
    if args.write:
        doc.write_section(Path(args.write), SECTION, body)
        print(f"\nwritten to {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
