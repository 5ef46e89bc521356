"""What the frame codec's zlib level costs and saves: bytes and encode time a frame, level by level, for one game.

    python scripts/codec_levels.py --game spaceinvaders --frames 1800 --levels 1,6,9

Plays the game with a few actions (the same every run), then encodes every frame (`--every 1`) or every other one
(`--every 2`, as a capped client gets them) with the `xor` codec at each level, and prints the mean, p99 and largest
frame, the frames' bit rate at 60 (or 30) frames a second with Socket.IO's packet around each, and the encode time a
frame on this core against an ALE step's (the same run).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from server.core.codec import XorDeflateCodec
from server.core.connection import FRAME_OVERHEAD
from server.core.emulator import EmulatorSession
from server.games import resolve_game


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--game", default="spaceinvaders")
    p.add_argument("--frames", type=int, default=1800)
    p.add_argument("--levels", default="1,6,9")
    p.add_argument("--every", type=int, default=1, help="encode every n-th frame (2: a capped client's)")
    args = p.parse_args(argv)
    emu = EmulatorSession(resolve_game(args.game).rom, 1, 0.0)
    rng = np.random.default_rng(0)
    screens, t = [], time.process_time()
    for i in range(args.frames):
        emu.step(int(rng.choice([0, 1, 3, 4, 11, 12])) if i % 10 == 0 else 0)
        screens.append(emu.screen().copy())
    step_us = (time.process_time() - t) / args.frames * 1e6
    print(f"{args.game}, {args.frames} frames, every {args.every}: ALE step + screen {step_us:.0f} us")
    for level in (int(x) for x in args.levels.split(",")):
        codec, t = XorDeflateCodec(level), time.process_time()
        sizes = np.array([len(codec.encode(i, s)) for i, s in enumerate(screens[:: args.every])])
        us = (time.process_time() - t) / len(sizes) * 1e6
        deltas = sizes[1:]
        kbps = (deltas.mean() + FRAME_OVERHEAD) * 8 * 60 / args.every / 1000
        p99 = np.percentile(deltas, 99)
        print(
            f"level {level}: keyframe {sizes[0]} B; deltas mean {deltas.mean():.1f} B, p99 {p99:.0f},"
            f" max {deltas.max()}; {kbps:.1f} kbit/s; {us:.1f} us a frame ({us / step_us:.2f} of a step)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
