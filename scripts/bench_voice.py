"""What counting voice activity costs the game process: CPU per 100 ms microphone chunk, against a bare ALE step.

    python scripts/bench_voice.py            # docs/benchmarks.md, "Voice activity"

Both are measured in this process on the same core, one after the other, so their ratio holds when the machine's
speed drifts. The audio is the load generator's synthetic speech (loud all the time: every 20 ms frame goes to the
detector, the worst case) and silence (every frame below the -60 dBFS gate).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import webrtcvad

from benchmark.loadgen import speech_like_pcm
from server.core.emulator import EmulatorSession
from server.core.voice import VoiceActivity


def per_chunk_us(pcm: np.ndarray, rate: int, repeat: int) -> float:
    step = rate // 10
    v = VoiceActivity(rate)
    n = 0
    t0 = time.process_time()
    for _ in range(repeat):
        for i in range(0, pcm.size - step + 1, step):
            v.add(pcm[i : i + step].tobytes())
            n += 1
    return (time.process_time() - t0) / n * 1e6


def detector_at_48k_us(pcm: np.ndarray, repeat: int) -> float:
    """For comparison: WebRTC's detector given the 48 kHz chunks directly (its own resampler), five 20 ms frames a
    chunk, as the first form of server/core/voice.py did."""
    vad, n, frame = webrtcvad.Vad(2), 0, 960
    t0 = time.process_time()
    for _ in range(repeat):
        for i in range(0, pcm.size - 4800 + 1, 4800):
            b = pcm[i : i + 4800].tobytes()
            for k in range(0, 2 * 4800, 2 * frame):
                vad.is_speech(b[k : k + 2 * frame], 48000)
            n += 1
    return (time.process_time() - t0) / n * 1e6


def ale_step_us(steps: int) -> float:
    emu = EmulatorSession("space_invaders", seed=0, sound=False)
    emu.reset(0)
    t0 = time.process_time()
    for k in range(steps):
        emu.step(k % 6)
    return (time.process_time() - t0) / steps * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20, help="passes over 3 s of audio per case (default 20)")
    args = p.parse_args(argv)
    speech48 = speech_like_pcm(seconds=3.0)
    cases = [
        ("48 kHz speech (every frame to the detector)", speech48, 48000),
        ("16 kHz speech", speech48[::3].copy(), 16000),
        ("48 kHz silence", np.zeros_like(speech48), 48000),
    ]
    ale = ale_step_us(6000)
    print("| audio | CPU per 100 ms chunk | per second of audio | in bare ALE steps |")
    print("| --- | ---: | ---: | ---: |")
    for name, pcm, rate in cases:
        us = per_chunk_us(pcm, rate, args.repeat)
        print(f"| {name} | {us:.1f} µs | {us * 10 / 1000:.2f} ms | {us / ale:.2f} |")
    us = detector_at_48k_us(speech48, args.repeat)
    print(f"| 48 kHz speech, the detector's own 48 kHz path | {us:.1f} µs | {us / 100:.2f} ms | {us / ale:.2f} |")
    print(f"\nbare ALE step (Space Invaders, no sound) on the same core: {ale:.1f} µs (60 a second per game)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
