"""Word times by forced alignment: a transcript aligned to the audio with pocketsphinx's alignment mode.

`Decoder.set_align_text` (pocketsphinx 5) builds a search that must go through the given words in order, with
optional silence between them; the best path's word segmentation gives each word's start and end to 10 ms. Words
not in pocketsphinx's dictionary (numbers, names) cannot be aligned: they keep the engine's times, marked as not
aligned. Given whisper tiny.en's transcript, aligned words start within 20 ms of the truth (espeak-ng and Piper
voices, scripts/bench_speech.py), where whisper's own times were off by up to 0.5 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from .asr import PS_FRAME_S, RATE, Heard, _pocketsphinx


@dataclass(frozen=True)
class Aligned:
    word: str
    start_s: float
    end_s: float
    confidence: float  # the engine's
    aligned: bool  # the times come from forced alignment (else: the engine's)


class Aligner:
    def __init__(self) -> None:
        ps = _pocketsphinx()
        self.decoder = ps.Decoder(samprate=RATE, loglevel="FATAL", cmn="batch")

    def reset(self) -> None:
        """As made, for the next trajectory: the feature extraction (its noise estimate) re-initialised."""
        self.decoder.reinit_feat()

    def known(self, word: str) -> bool:
        return self.decoder.lookup_word(word) is not None

    def align(self, pcm16k: np.ndarray, words: list[Heard]) -> list[Aligned] | None:
        """Times of `words` (in order) in this audio, seconds from its start; None when they cannot be aligned."""
        text = [w.word for w in words if self.known(w.word)]
        if not text:
            return []
        d = self.decoder
        try:
            d.set_align_text(" ".join(text))
            d.start_utt()
            d.process_raw(np.asarray(pcm16k, "<i2").tobytes(), False, True)
            d.end_utt()
        except RuntimeError:
            return None
        found = d.seg()
        if found is None:
            return None  # no path through the whole transcript at all (pocketsphinx 5 then has no segmentation)
        segs = [
            (re.sub(r"\(\d+\)$", "", s.word), s.start_frame * PS_FRAME_S, (s.end_frame + 1) * PS_FRAME_S)
            for s in found
            if not s.word.startswith(("<", "[", "+"))
        ]
        if [s[0] for s in segs] != text:
            return None  # the search did not reach the end of the transcript
        it = iter(segs)
        return [
            Aligned(w.word, *next(it)[1:], w.confidence, True)
            if self.known(w.word)
            else Aligned(w.word, w.start_s, w.end_s, w.confidence, False)
            for w in words
        ]


def unaligned(words: list[Heard], offset_s: float = 0.0) -> list[Aligned]:
    return [Aligned(w.word, w.start_s + offset_s, w.end_s + offset_s, w.confidence, False) for w in words]


def shift(words: list[Aligned], offset_s: float) -> list[Aligned]:
    return [replace(w, start_s=w.start_s + offset_s, end_s=w.end_s + offset_s) for w in words]
