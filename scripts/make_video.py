"""Export a trajectory as a video with its speech and game sound, re-simulated and verified frame by frame.

    python scripts/make_video.py --key TRAJ_ID [--store ./recordings] [--out FILE] [--format mp4|mov]
                                 [--stereo] [--overlay] [--scale 2] [--jobs N]

Writes <TRAJ_ID>_final.mp4 (H.264 + AAC, exactly 60 fps) in the working directory unless --out says otherwise.
Exits 0 on success, 1 when the trajectory does not verify or ffmpeg fails, 2 for a bad or unknown ID or a missing
file. With --jobs N (default: all cores) a trajectory of a minute or more is encoded in up to N segments at once,
joined without re-encoding. See server/video/ for what is in the picture and the sound.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from server.errors import (
    AtariSpeechError,
    InvalidTrajectoryId,
    ReplayDivergence,
    TrajectoryNotFound,
)
from server.parallel import add_jobs_arguments
from server.settings_sources import add_store_arguments, store_settings
from server.store.base import file_path, store_scheme
from server.video import CONTAINERS, DEFAULT_SCALE, X264_PRESETS, default_output, export_video, output_size


class ProgressBar:
    """A one-line bar on stderr: redrawn in place on a terminal, every 10% otherwise."""

    def __init__(self, label: str, stream=sys.stderr) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self.t0 = time.perf_counter()
        self.last_draw = 0.0
        self.last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        frac = done / total if total else 1.0
        if self.tty:
            if now - self.last_draw < 0.1 and done < total:
                return
            self.last_draw = now
        else:
            decile = int(frac * 10)
            if decile == self.last_decile:
                return
            self.last_decile = decile
        width = 30
        fill = int(round(frac * width))
        rate = done / (now - self.t0) if now > self.t0 else 0.0
        line = (
            f"{self.label} [{'#' * fill}{'.' * (width - fill)}] {frac * 100:5.1f}% "
            f"{done}/{total} frames, {rate:.0f} frames/s"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--key", required=True, metavar="TRAJ_ID", help="the trajectory ID, e.g. mspacman_1QQ3LEWANF_1")
    add_store_arguments(p)
    p.add_argument("--out", default=None, help="output file (default: <TRAJ_ID>_final.<format> here)")
    p.add_argument(
        "--format",
        choices=sorted(CONTAINERS),
        default=None,
        help="container (default: from --out's extension, else mp4)",
    )
    p.add_argument("--stereo", action="store_true", help="speech on the left channel, game sound on the right")
    p.add_argument("--overlay", action="store_true", help="frame, score and action in a strip below the game")
    default_size = "{}x{}".format(*output_size(DEFAULT_SCALE, overlay=False))
    p.add_argument(
        "--scale",
        type=int,
        default=DEFAULT_SCALE,
        help=f"Atari pixel height in video pixels, 1-8 (default {DEFAULT_SCALE}: {default_size}, about 10x real time "
        "on one core; 4: 1280x840, sharp at full screen, about 3x)",
    )
    p.add_argument(
        "--preset",
        choices=X264_PRESETS,
        default="ultrafast",
        help="x264 preset (default ultrafast: about 2x faster than veryfast; flat Atari frames stay small anyway)",
    )
    p.add_argument("--speech-gain", type=float, default=1.0)
    p.add_argument("--game-gain", type=float, default=1.0)
    add_jobs_arguments(p)
    args = p.parse_args(argv)

    try:
        settings = store_settings(args)
        root = file_path(settings.store)
        if store_scheme(settings.store) == "file" and not root.is_dir():
            print(f"error: the store directory {root} does not exist (--store or $STORE_URL)", file=sys.stderr)
            return 2
        store = settings.open_store()
    except (AtariSpeechError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    container = args.format
    out = Path(args.out) if args.out else default_output(args.key, container or "mp4")
    if out.is_dir():
        out = out / default_output(args.key, container or "mp4").name
    try:
        result = export_video(
            store,
            args.key,
            out,
            container=container,
            scale=args.scale,
            stereo=args.stereo,
            overlay=args.overlay,
            speech_gain=args.speech_gain,
            game_gain=args.game_gain,
            preset=args.preset,
            progress=None if args.quiet else ProgressBar(args.key),
            jobs=args.jobs,
            setup=settings.open_store,
        )
    except (InvalidTrajectoryId, TrajectoryNotFound) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ReplayDivergence as e:
        print(f"error: not exported, the trajectory does not verify: {e}", file=sys.stderr)
        return 1
    except AtariSpeechError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"{result.path}: {result.frames} frames, {result.seconds:.2f} s, {result.width}x{result.height}, "
        f"written in {result.elapsed_s:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
