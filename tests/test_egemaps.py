"""openSMILE's eGeMAPS functionals (`--egemaps`): a synthetic vowel's F0 in semitones and loudness following a gain
step; an interval too short gives empty fields; through the real annotation of a recorded trajectory, one row per
word and per segment and the provenance naming openSMILE and its licence; without the option, no such files (and
stale ones removed); a missing opensmile names the install command and the licence."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import math
import sys

import numpy as np
import pytest
from helpers import glottal_vowel, read_csv, run_annotate_cli
from trex_recordings import copy_store, server_recordings

from server.dataset import schema

needs_opensmile = pytest.mark.skipif(
    importlib.util.find_spec("opensmile") is None,
    reason="opensmile is not installed (pip install -r requirements-opensmile.txt; research use only)",
)
F0 = "F0semitoneFrom27.5Hz_sma3nz_amean"
LOUDNESS = "loudness_sma3_amean"


def _pcm(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


@pytest.fixture(scope="module")
def smile():
    from server.dataset.egemaps import Egemaps

    return Egemaps()


@needs_opensmile
def test_the_feature_set_is_egemaps_v02_functionals(smile):
    assert len(smile.names) == 88 and F0 in smile.names and LOUDNESS in smile.names
    info = smile.provenance()
    assert info["package"] == "opensmile" and info["version"] == "2.6.0"
    assert (info["feature_set"], info["feature_level"], info["features"]) == ("eGeMAPSv02", "Functionals", 88)
    assert "research" in info["licence"] and "audEERING" in info["licence"]


@needs_opensmile
@pytest.mark.parametrize("f0", [120.0, 220.0])
def test_egemaps_f0_of_a_synthetic_vowel_in_semitones(smile, f0):
    x = _pcm(glottal_vowel(f0, 1.0))
    row = smile.features(x, 16000, [(0, x.size), (4000, 12000)])
    for values in row:
        got = values[smile.names.index(F0)]
        assert got == pytest.approx(12 * math.log2(f0 / 27.5), abs=0.5), (f0, got)


@needs_opensmile
def test_egemaps_loudness_rises_with_a_20_db_gain_step(smile):
    x = glottal_vowel(150.0, 1.0)
    x[:8000] *= 0.1  # the first half 20 dB quieter
    quiet, loud = smile.features(_pcm(x), 16000, [(0, 8000), (8000, 16000)])
    i = smile.names.index(LOUDNESS)
    assert loud[i] > 2 * quiet[i] > 0, (quiet[i], loud[i])
    level = smile.names.index("equivalentSoundLevel_dBp")
    assert loud[level] - quiet[level] == pytest.approx(20.0, abs=0.5)
    assert quiet[smile.names.index(F0)] == pytest.approx(loud[smile.names.index(F0)], abs=0.2)  # the same pitch


@needs_opensmile
def test_an_interval_too_short_gives_empty_fields(smile):
    from server.dataset.annotate import Annotation, annotation_files
    from server.dataset.trajectory import Word

    x = _pcm(glottal_vowel(120.0, 1.0))
    feats = smile.features(x, 16000, [(1000, 1500), (0, 16000)])  # 31 ms (under openSMILE's 60 ms window), 1 s
    assert np.isnan(feats[0]).all() and np.isfinite(feats[1]).sum() > 80
    words = [Word("a", 3, 4, 0.06, 0.094, 0.9), Word("vowel", 0, 59, 0.0, 1.0, 0.9)]
    z = np.zeros(60)
    ann = Annotation(words, [(0, 59, 0.0, 1.0)], np.ones(60, bool), z, z, z, z)
    ann.egemaps_names, ann.egemaps_words, ann.egemaps_segments = smile.names, feats, feats[1:]
    files = annotation_files(ann)
    rows = _rows(files[schema.SPEECH_WORDS_EGEMAPS])
    assert rows[0] == [*schema.EGEMAPS_WORD_KEYS, *smile.names]
    assert rows[1][:4] == ["0", "a", "3", "4"] and rows[1][4:] == [""] * 88
    assert rows[2][:4] == ["1", "vowel", "0", "59"] and float(rows[2][4 + smile.names.index(F0)]) == pytest.approx(
        25.5, abs=0.5
    )
    segs = _rows(files[schema.SPEECH_SEGMENTS_EGEMAPS])
    assert segs[0][:3] == list(schema.EGEMAPS_SEGMENT_KEYS) and segs[1][:3] == ["0", "0", "59"]
    ann.egemaps_words = ann.egemaps_segments = None
    assert set(annotation_files(ann)).isdisjoint(schema.EGEMAPS_FILES)  # no option, no files


def test_missing_opensmile_names_the_install_command_and_the_licence(monkeypatch):
    from server.dataset import annotate

    monkeypatch.setitem(sys.modules, "opensmile", None)
    with pytest.raises(ImportError, match=r"pip install -r requirements-opensmile\.txt") as e:
        annotate.Annotator(annotate.AnnotateOptions(egemaps=True))
    assert "research" in str(e.value) and "audEERING" in str(e.value)
    out = run_annotate_cli("--help")
    assert "--egemaps" in out.stdout and "research" in out.stdout and "requirements-opensmile.txt" in out.stdout


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    pytest.importorskip("pocketsphinx", reason="pip install -r requirements-dev.txt (pocketsphinx) for annotation")
    if importlib.util.find_spec("opensmile") is None:
        pytest.skip("opensmile is not installed (pip install -r requirements-opensmile.txt; research use only)")
    rec = server_recordings(tmp_path_factory)
    if not rec.talk.spoken:
        pytest.skip("espeak-ng and sox are needed to speak the test words (apt-get install espeak-ng sox)")
    d = copy_store(rec, tmp_path_factory.mktemp("egemaps") / "store")
    out = run_annotate_cli("--store", str(d), "--all", "--egemaps", "--jobs", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    return rec, d


def test_egemaps_rows_for_every_word_and_segment_of_a_recording(annotated):
    rec, d = annotated
    talker = d / rec.talker
    words, segments = read_csv(talker / schema.SPEECH_WORDS), read_csv(talker / schema.SPEECH_SEGMENTS)
    ew, es = read_csv(talker / schema.SPEECH_WORDS_EGEMAPS), read_csv(talker / schema.SPEECH_SEGMENTS_EGEMAPS)
    assert words and segments and len(ew) == len(words) and len(es) == len(segments)
    assert list(ew[0])[:4] == list(schema.EGEMAPS_WORD_KEYS) and len(ew[0]) == 4 + 88 and F0 in ew[0]
    assert list(es[0])[:3] == list(schema.EGEMAPS_SEGMENT_KEYS) and len(es[0]) == 3 + 88
    for i, (w, e) in enumerate(zip(words, ew, strict=True)):
        assert (e["word_index"], e["word"], e["start_frame"], e["end_frame"]) == (
            str(i),
            w["word"],
            w["start_frame"],
            w["end_frame"],
        )
    for i, (s, e) in enumerate(zip(segments, es, strict=True)):
        assert (e["segment_index"], e["start_frame"], e["end_frame"]) == (str(i), s["start_frame"], s["end_frame"])
    # espeak-ng's default voice speaks at about 100-200 Hz: 22-35 semitones above 27.5 Hz
    f0 = [float(e[F0]) for e in es if e[F0]]
    assert len(f0) == len(es) and all(20 < v < 37 for v in f0), f0
    assert all(float(e[LOUDNESS]) > 0 for e in es)
    info = json.loads((talker / schema.SPEECH_ANNOTATIONS).read_text())
    eg = info["egemaps"]
    assert eg["package"] == "opensmile" and eg["version"] == "2.6.0" and eg["rate"] == 16000
    assert eg["feature_set"] == "eGeMAPSv02" and eg["feature_level"] == "Functionals" and "research" in eg["licence"]
    assert info["options"]["egemaps"] is True
    for name in schema.EGEMAPS_FILES:
        assert info["files"][name]["sha256"] == hashlib.sha256((talker / name).read_bytes()).hexdigest()
    assert not (d / rec.mute / schema.SPEECH_WORDS_EGEMAPS).exists()  # no speech, nothing written


def test_without_the_option_there_are_no_egemaps_files(annotated, tmp_path):
    from server.dataset.annotate import AnnotateOptions, annotate
    from server.store import open_store

    rec, d = annotated
    store = open_store(str(tmp_path / "store"))
    for p in (d / rec.talker).iterdir():
        store.put(f"{rec.talker}/{p.name}", p.read_bytes())  # annotated with --egemaps before
    info = annotate(store, rec.talker, AnnotateOptions())
    for name in schema.EGEMAPS_FILES:
        assert not store.exists(f"{rec.talker}/{name}") and name not in info["files"]
    assert "egemaps" not in info and info["options"]["egemaps"] is False
