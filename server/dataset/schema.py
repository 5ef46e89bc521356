"""Files the annotator adds next to a recording (schema 2; see docs/format.md). Schema 1 files are unchanged."""

from __future__ import annotations

#: The schema that adds the annotation files (the recorder's own files are those of schema 1).
ANNOTATION_SCHEMA = 2

SPEECH_WORDS = "speech_words.csv"
SPEECH_SEGMENTS = "speech_segments.csv"
SPEECH_FRAMES = "speech_frames.csv"
SPEECH_ANNOTATIONS = "speech_annotations.json"
ANNOTATION_FILES = (SPEECH_WORDS, SPEECH_SEGMENTS, SPEECH_FRAMES, SPEECH_ANNOTATIONS)
#: Written only with --egemaps (openSMILE's eGeMAPSv02 functionals, server/dataset/egemaps.py); removed when a
#: trajectory is annotated again without it.
SPEECH_WORDS_EGEMAPS = "speech_words_egemaps.csv"
SPEECH_SEGMENTS_EGEMAPS = "speech_segments_egemaps.csv"
EGEMAPS_FILES = (SPEECH_WORDS_EGEMAPS, SPEECH_SEGMENTS_EGEMAPS)

WORD_COLUMNS = (
    "word",
    "start_frame",
    "end_frame",
    "start_s",
    "end_s",
    "confidence",
    "keyword",  # 1: one of the --keywords (0 for every other word said, and for all words without --keywords)
    "aligned",  # 1: the times come from forced alignment; 0: the engine's own (a word not in the dictionary)
    "duration_s",
    "f0_mean_hz",
    "f0_max_hz",
    "intensity_db",
    "jitter",
    "shimmer",
)
SEGMENT_COLUMNS = ("start_frame", "end_frame", "start_s", "end_s")
FRAME_FEATURE_COLUMNS = ("frame", "voiced", "energy_db", "pitch_hz", "intensity_db", "hnr_db")
#: The first columns of the eGeMAPS files; openSMILE's 88 feature columns follow, named as openSMILE names them.
#: `word_index` (`segment_index`) is the row's 0-based row number in speech_words.csv (speech_segments.csv).
EGEMAPS_WORD_KEYS = ("word_index", "word", "start_frame", "end_frame")
EGEMAPS_SEGMENT_KEYS = ("segment_index", "start_frame", "end_frame")
