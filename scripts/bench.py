"""Capacity benchmark: how many demonstrators a server process holds at 60 fps while it records keys and speech.

    python scripts/bench.py                      # the full run (both transport paths: about twice 6 to 9 minutes)
    python scripts/bench.py --quick              # a smoke run
    python scripts/bench.py --sessions 32,64 --duration 15 --codecs xor --async-modes eventlet --procs 1
    python scripts/bench.py --write docs/benchmarks.md   # also replace that file's "Capacity" section

The library is benchmark.run (its docstring says what is measured and when a step holds). The report is printed;
`--write PATH` also writes it to PATH under "Capacity", keeping the file's other sections.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from benchmark import doc
from benchmark.loadgen import SEND_INTERVAL_S
from benchmark.run import DEFAULT_SESSIONS, QUICK_SESSIONS, Options, run
from benchmark.servers import PATHS
from benchmark.tables import SECTION, profile_text


def _names(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


def options(argv: list[str]) -> tuple[Options, Path | None]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--sessions",
        help="demonstrators per server process, raised in this order until 60 fps breaks "
        f"(default: xor {DEFAULT_SESSIONS['xor']}, jpeg {DEFAULT_SESSIONS['jpeg']})",
    )
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per step (default 15)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of play before the episodes restart")
    p.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds after the restart before measuring (every session restarting at once is a burst of "
        "episode closes and starts the measured window should not include)",
    )
    p.add_argument("--codecs", default="xor,jpeg")
    p.add_argument("--async-modes", default="eventlet,gevent")
    p.add_argument("--procs", default="1,2", help="server processes (one per core); 2 or more run behind nginx")
    p.add_argument("--multi-codecs", default="xor", help="codecs also measured with several processes")
    p.add_argument(
        "--paths",
        default=",".join(PATHS),
        help="the server's transport paths, each configuration run with each: fast (the eventlet fast path) and "
        "plain (socketio.emit, FAST_PATH=0) (default fast,plain)",
    )
    p.add_argument("--game", default="spaceinvaders")
    p.add_argument("--no-audio", action="store_true", help="demonstrators without a microphone (for comparison)")
    p.add_argument(
        "--client-interval",
        type=float,
        default=SEND_INTERVAL_S,
        help="seconds between a client's paint-ack batches and microphone chunks (the browser: 0.1)",
    )
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SESSIONS} per process, 5 s windows: a smoke run")
    p.add_argument("--no-stop", action="store_true", help="run every step even after 60 fps broke")
    p.add_argument(
        "--attempts",
        type=int,
        default=2,
        help="tries of a step that broke while its server core was slow (default 2; 1: never again)",
    )
    p.add_argument("--no-probe", action="store_true", help="do not watch the cores' speed (scripts/core_speed.py)")
    p.add_argument("--profile", action="store_true", help="sample the servers with py-spy during every window")
    p.add_argument("--profile-dir", default=None, help="where py-spy's collapsed stacks go (default: a temp dir)")
    p.add_argument("--keep", default=None, help="keep the stores and logs in this directory")
    p.add_argument("--write", default=None, metavar="PATH", help="also write the report to PATH (docs/benchmarks.md)")
    p.add_argument("--no-write", action="store_true", help=argparse.SUPPRESS)  # the default now; older commands
    args = p.parse_args(argv)
    if args.quick:
        args.sessions = args.sessions or QUICK_SESSIONS
        args.duration, args.warmup = min(args.duration, 5.0), min(args.warmup, 1.0)
    paths = _names(args.paths)
    if not paths or set(paths) - set(PATHS):
        p.error(f"--paths: one or more of {','.join(PATHS)}")
    profile_dir = None
    if args.profile:
        profile_dir = Path(args.profile_dir or tempfile.mkdtemp(prefix="bench-profile-"))
    opts = Options(
        sessions=[int(x) for x in _names(args.sessions)] if args.sessions else None,
        duration=args.duration,
        warmup=args.warmup,
        settle=args.settle,
        codecs=_names(args.codecs),
        async_modes=_names(args.async_modes),
        procs=tuple(int(x) for x in _names(args.procs)),
        multi_codecs=_names(args.multi_codecs),
        paths=paths,
        game=args.game,
        audio=not args.no_audio,
        client_interval=args.client_interval,
        no_stop=args.no_stop,
        attempts=args.attempts,
        probe=not args.no_probe,
        profile_dir=profile_dir,
        keep=Path(args.keep) if args.keep else None,
    )
    return opts, Path(args.write) if args.write else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts, write = options(argv)
    command = "python scripts/bench.py" + ("" if not argv else " " + shlex.join(argv))
    body, rows = run(opts, command, quote_from=write or doc.DOC)
    print(body)
    if opts.profile_dir is not None:
        print(profile_text(rows))
    if write is not None:
        doc.write_section(write, SECTION, body, first=True)
        print(f"\nwritten to {write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
