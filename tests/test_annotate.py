"""Speech annotation: espeak-ng says yes and no at known times through the real server; pocketsphinx finds them on the
frames that were on screen; per-frame activity, energy and pitch; the loader and T-REX pairs carry the results."""

import json
import sys

import numpy as np
import pytest
from helpers import read_csv
from helpers import run_annotate_cli as run_cli
from trex_recordings import RATE, copy_store, server_recordings, true_frame

from server.dataset import Dataset, load, prosody, schema
from server.store import open_store

pytest.importorskip("pocketsphinx", reason="pip install -r requirements-dev.txt (pocketsphinx) for annotation")


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    rec = server_recordings(tmp_path_factory)
    if not rec.talk.spoken:
        pytest.skip("espeak-ng and sox are needed to speak the test words (apt-get install espeak-ng sox)")
    d = copy_store(rec, tmp_path_factory.mktemp("annotate") / "store")
    # whisper tiny.en: pocketsphinx's model mishears espeak-ng's default voice (its "no" as "the"); both engines
    # are tested on several voices in test_annotate_engines.py
    out = run_cli("--store", str(d), "--all", "--keywords", "yes,no", "--engine", "whisper")
    assert out.returncode == 0, out.stdout + out.stderr
    return rec, d, open_store(str(d)), out.stdout


def test_keywords_start_within_three_frames_of_the_truth(annotated):
    rec, d, store, _ = annotated
    rows = read_csv(d / rec.talker / schema.SPEECH_WORDS)
    assert list(rows[0]) == list(schema.WORD_COLUMNS)
    rows = [r for r in rows if r["keyword"] == "1"]
    assert [r["word"] for r in rows] == [w for w, _, _ in rec.talk.words]
    assert [w.word for w in load(store, rec.talker).words if w.keyword] == [r["word"] for r in rows]
    for r, (word, first, last) in zip(rows, rec.talk.words, strict=True):
        assert abs(int(r["start_frame"]) - true_frame(first)) <= 3, (word, r, true_frame(first))
        assert abs(int(r["end_frame"]) - true_frame(last)) <= 6, (word, r, true_frame(last))
        lead = 500 * RATE // 1000  # speech.wav's sample 0 is the talk's sample captured when frame 0 was painted
        assert float(r["start_s"]) == pytest.approx((first - lead) / RATE, abs=0.05)
        assert 0 <= float(r["confidence"]) <= 1


def test_segments_and_per_frame_features(annotated):
    rec, d, store, _ = annotated
    traj = load(store, rec.talker)
    assert len(traj.segments) == len(rec.talk.words)
    for seg, (_, first, last) in zip(traj.segments, rec.talk.words, strict=True):
        assert seg.start_frame - 3 <= true_frame(first) and true_frame(last) <= seg.end_frame + 3
    n = len(traj)
    assert traj.voiced.shape == traj.energy_db.shape == traj.pitch_hz.shape == (n,)
    inside = np.zeros(n, bool)
    near = np.zeros(n, bool)
    for _, first, last in rec.talk.words:
        inside[true_frame(first) + 2 : true_frame(last) - 2] = True
        near[max(0, true_frame(first) - 15) : true_frame(last) + 15] = True
    assert traj.voiced[inside].mean() >= 0.8
    assert traj.voiced[~near].mean() <= 0.05
    assert np.median(traj.energy_db[inside]) > np.median(traj.energy_db[~near]) + 30
    f0 = traj.pitch_hz[inside & traj.voiced]
    assert np.isfinite(f0).mean() > 0.5 and 70 <= np.nanmedian(f0) <= 250  # espeak-ng's default voice
    assert np.all(np.isnan(traj.pitch_hz[~traj.voiced]))
    rows = read_csv(d / rec.talker / schema.SPEECH_FRAMES)
    assert list(rows[0]) == list(schema.FRAME_FEATURE_COLUMNS) and len(rows) == n


def test_trajectories_without_words_or_speech(annotated):
    rec, d, store, stdout = annotated
    assert f"{rec.mute}: no speech, skipped" in stdout
    assert not (d / rec.mute / schema.SPEECH_WORDS).exists()
    idle = load(store, rec.idler)
    assert idle.words == [] and idle.segments == [] and not idle.voiced.any()
    assert np.all(idle.energy_db == prosody.SILENCE_DB)  # the idler's microphone sent digital silence


def test_provenance_file(annotated):
    rec, d, store, _ = annotated
    info = json.loads((d / rec.talker / schema.SPEECH_ANNOTATIONS).read_text())
    assert info["schema"] == schema.ANNOTATION_SCHEMA == 2
    assert info["mode"] == "keywords" and info["options"]["keywords"] == ["yes", "no"]
    assert info["recogniser"]["engine"] == "whisper" and info["keywords"] == len(rec.talk.words)
    import hashlib

    for name, digest in info["files"].items():
        assert hashlib.sha256((d / rec.talker / name).read_bytes()).hexdigest() == digest["sha256"]
    meta = json.loads((d / rec.talker / "meta.json").read_text())
    assert info["speech_sha256"] == meta["files"]["speech.wav"]["sha256"]
    assert set(meta["files"]).isdisjoint(schema.ANNOTATION_FILES)  # the recording itself is untouched


def test_every_word_mode_finds_the_words_too(annotated, tmp_path):
    rec, d, _, _ = annotated
    from server.dataset.annotate import AnnotateOptions, annotate

    store = open_store(str(tmp_path / "store"))
    for p in (d / rec.talker).iterdir():
        if p.name not in schema.ANNOTATION_FILES:
            store.put(f"{rec.talker}/{p.name}", p.read_bytes())
    info = annotate(store, rec.talker, AnnotateOptions(engine="whisper"))
    assert info["mode"] == "words"
    words = load(store, rec.talker).words
    hits = 0
    for word, first, _ in rec.talk.words:
        hits += any(w.word == word and abs(w.start_frame - true_frame(first)) <= 3 for w in words)
    assert hits == len(rec.talk.words), words
    assert not any(w.word not in ("yes", "no") for w in words), words  # nothing else was said


def test_pairs_carry_the_words_said_during_their_snippets(annotated, tmp_path):
    rec, _, store, _ = annotated
    ds = Dataset(store, cache_dir=tmp_path / "cache")
    pairs = ds.trex_pairs(30, (60, 80), rng=3, game="spaceinvaders", stride=1)
    talker_words = load(store, rec.talker).words
    seen = 0
    for p in pairs:
        s = p.better
        assert s.traj_id == rec.talker
        expect = [w for w in talker_words if s.first_frame <= w.start_frame <= s.last_frame]
        assert s.words == expect
        assert s.voiced.shape == (s.last_frame - s.first_frame + 1,)
        seen += bool(s.words)
    assert seen > 0


def test_energy_of_known_signals():
    rate = 16000
    t = np.arange(rate) / rate
    sine = 32767 * np.sin(2 * np.pi * 440 * t)
    e = prosody.energy_db(sine, np.array([0, 4000]), np.array([4000, 4000]))
    assert e[0] == pytest.approx(-3.0, abs=0.1) and e[1] == prosody.SILENCE_DB


def test_resampling_keeps_time_and_tone():
    x = np.sin(2 * np.pi * 300 * np.arange(48000) / 48000)
    y = prosody.resample(x, 48000, 16000)
    assert y.size == 16000
    np.testing.assert_allclose(y[100:-100], np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)[100:-100], atol=0.01)


def test_missing_pocketsphinx_gives_the_install_hint(monkeypatch):
    from server.dataset import annotate

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(ImportError, match="pip install"):
        annotate.Annotator(annotate.AnnotateOptions(keywords=("yes",)))
