"""Benchmark: speech annotation accuracy, timing and speed on a test set with known truth.

    PYTHONPATH=. python scripts/bench_speech.py [--snr 20,10,5] [--engines pocketsphinx,whisper] [--voices N]
    PYTHONPATH=. python scripts/bench_speech.py --engines whisper --window-s 10   # whisper's window, seconds

Builds its own test set (server/dataset/synth.py): espeak-ng voices of several accents and pitches and Piper's neural
`joe` voice say short yes/no feedback ("yes", "no, not that way", "yes, nice shot") and commentary without a
keyword ("watch out for the bombs"), 1.5-2.5 s apart, in a random order. The track is mixed with Space Invaders'
own sound (the emulator played by a random player) plus white noise of equal power, the two together scaled to 20,
10 and 5 dB below the speech (active speech level). Each engine then annotates the 16 kHz track exactly as
annotate_speech.py does (VAD, utterances, open-vocabulary recognition, forced alignment), with `--keywords yes,no`.

Prints, per engine and SNR: keyword precision, recall and F1 (a reported keyword is right when the same word starts
within 0.3 s of a said one), onset error of the matched keywords (median and p95, ms and 60 Hz frames), word error
rate of the whole transcript against the text said, and speed as a multiple of real time (CPU time of the process,
one thread: the audio's duration over the seconds spent in VAD, recognition and alignment; prosody not included).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from server.dataset import synth
from server.dataset.annotate import AnnotateOptions, Annotator
from server.dataset.asr import normalise
from server.dataset.utterances import recognise, segments_from_flags, utterances, vad_flags

RATE = 16000
KEYWORDS = ("yes", "no")
FEEDBACK = ("yes", "no", "yes, nice shot", "no, not that way", "yes, good", "no, stop")
COMMENTARY = (
    "watch out for the bombs",
    "shoot the one on the left",
    "move to the right",
    "that was close",
    "go back under the shield",
)


def build_track(voices: list[str], seed: int = 0) -> tuple[np.ndarray, list[tuple[str, float]], list[str]]:
    """Clean speech (float64 at RATE), the keywords said with their onsets, and every word said in order."""
    rng = np.random.default_rng(seed)
    items = [(text, v) for v in voices for text in FEEDBACK] + [
        (COMMENTARY[i % len(COMMENTARY)], v) for i, v in enumerate(voices)
    ]
    order = rng.permutation(len(items))
    clips, t = [], 1.0
    for k in order:
        text, voice = items[k]
        clip = synth.say(text, voice, RATE)
        clips.append((t, text, clip))
        t += clip.size / RATE + rng.uniform(1.5, 2.5)
    x = np.zeros(int((t + 0.5) * RATE))
    keywords, said = [], []
    for t0, text, clip in clips:
        i = int(round(t0 * RATE))
        x[i : i + clip.size] += clip
        words = normalise(text)
        said += words
        if words[0] in KEYWORDS:
            keywords.append((words[0], t0))
    return x, keywords, said


def mix(x: np.ndarray, interference: np.ndarray, snr_db: float) -> np.ndarray:
    active = np.abs(x) > 0
    return synth.to_int16(x + synth.scale_to_snr(synth.power(x[active]), interference, snr_db))


def wer(ref: list[str], hyp: list[str]) -> float:
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return float(d[-1]) / max(len(ref), 1)


def score(words, keywords: list[tuple[str, float]], said: list[str]) -> dict:
    reported = [(w.word, w.start_s) for w in words if w.word in KEYWORDS]
    used = set()
    errors = []
    for word, t in keywords:
        best = None
        for j, (rw, rt) in enumerate(reported):
            if j not in used and rw == word and abs(rt - t) <= 0.3 and (best is None or abs(rt - t) < best[1]):
                best = (j, abs(rt - t))
        if best is not None:
            used.add(best[0])
            errors.append(best[1])
    tp = len(used)
    p = tp / len(reported) if reported else 1.0
    r = tp / len(keywords)
    e = np.array(errors) * 1000
    return {
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "onset_median_ms": float(np.median(e)) if e.size else float("nan"),
        "onset_p95_ms": float(np.percentile(e, 95)) if e.size else float("nan"),
        "wer": wer(said, [w.word for w in words]),
    }


def run(annotator: Annotator, x16: np.ndarray) -> tuple[list, float]:
    opts = annotator.opts
    t0 = time.process_time()
    flags, n = vad_flags(x16, opts.vad_mode, opts.vad)
    units = utterances(segments_from_flags(flags, n, opts), x16.size, opts)
    words = recognise(x16, units, annotator.engine, annotator.aligner, opts)
    return words, time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--snr", default="20,10,5", help="signal-to-noise ratios in dB")
    p.add_argument("--engines", default="pocketsphinx,whisper")
    p.add_argument("--voices", type=int, default=len(synth.ESPEAK_VOICES) + 1, help="how many voices (Piper first)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window-s", type=float, default=AnnotateOptions.window_s, help="whisper's window (seconds)")
    args = p.parse_args(argv)

    voices = (["piper"] if synth.have_piper() else []) + list(synth.ESPEAK_VOICES)
    voices = voices[: args.voices]
    t_build = time.monotonic()
    x, keywords, said = build_track(voices, args.seed)
    game = synth.game_sound(x.size / RATE + 1, RATE, seed=args.seed)[: x.size]
    noise = np.random.default_rng(args.seed).normal(0, 1, x.size)
    interference = game + synth.scale_to_snr(synth.power(game), noise, 0.0)
    print(
        f"test set: {x.size / RATE:.0f} s, voices {', '.join(voices)}; {len(keywords)} keywords, {len(said)} words "
        f"(built in {time.monotonic() - t_build:.0f} s); {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    print()
    print("| engine | SNR dB | keyword P / R / F1 | onset median / p95 ms (frames) | WER | x real time |")
    print("| --- | ---: | --- | --- | ---: | ---: |")
    for name in args.engines.split(","):
        annotator = Annotator(AnnotateOptions(keywords=KEYWORDS, engine=name, window_s=args.window_s))
        for snr in (float(s) for s in args.snr.split(",")):
            x16 = mix(x, interference, snr)
            words, cpu = run(annotator, x16)
            s = score(words, keywords, said)
            med, p95 = s["onset_median_ms"], s["onset_p95_ms"]
            print(
                f"| {name} | {snr:g} | {s['precision']:.2f} / {s['recall']:.2f} / {s['f1']:.2f} "
                f"| {med:.0f} / {p95:.0f} ({med * 0.06:.1f} / {p95 * 0.06:.1f}) | {s['wer'] * 100:.0f}% "
                f"| {x16.size / RATE / cpu:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
