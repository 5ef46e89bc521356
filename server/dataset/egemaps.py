"""openSMILE's eGeMAPS functionals per word and per speech segment: an option (`--egemaps`), not a dependency.

eGeMAPS (the extended Geneva Minimalistic Acoustic Parameter Set, Eyben et al. 2016) version 02, functionals level:
88 statistics (means, coefficients of variation, percentiles, slopes, rates) of F0, loudness, jitter, shimmer, HNR,
formants, spectral slopes and more over an interval, as openSMILE's Python package (PyPI `opensmile`) computes them
from the 16 kHz speech the annotator already has (soxr). An interval shorter than openSMILE's 60 ms analysis window
gives no frame: NaN features, written empty (and one under about 0.1 s has too few frames to trust: a 70 ms vowel
came out an octave high).

openSMILE is audEERING's, under the audEERING Research License Agreement (the package's LICENSE and its License
field; its PyPI classifier "MIT" is wrong): free for private, research and educational use, that is any
non-commercial purpose (teaching, academic research, personal experimentation) and commercial research aimed at
publication; any other commercial use, and any use of it or of features extracted with it in a product, needs a
commercial licence from audEERING. So it is in requirements-opensmile.txt, not in requirements.txt or
requirements-trex.txt, and it is imported only when the option is used.
"""

from __future__ import annotations

import warnings

import numpy as np

from .asr import package_version

FEATURE_SET = "eGeMAPSv02"
FEATURE_LEVEL = "Functionals"
LICENCE = (
    "openSMILE (PyPI opensmile) is audEERING's, under the audEERING Research License Agreement: free for private, "
    "research and educational (non-commercial) use only; other commercial use, and any use of it or of features "
    "extracted with it in a product, needs a commercial licence from audEERING"
)
INSTALL_HINT = f"--egemaps needs openSMILE: pip install -r requirements-opensmile.txt. {LICENCE}."


class Egemaps:
    """An eGeMAPSv02 functionals extractor (openSMILE loaded once; each interval is analysed on its own)."""

    def __init__(self) -> None:
        try:
            import opensmile
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        self.smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, FEATURE_SET),
            feature_level=getattr(opensmile.FeatureLevel, FEATURE_LEVEL),
        )
        self.names: tuple[str, ...] = tuple(self.smile.feature_names)

    def features(self, pcm: np.ndarray, rate: int, ranges: list[tuple[int, int]]) -> np.ndarray:
        """(len(ranges), 88) float64: the functionals of each [start, end) sample range of int16 `pcm`; NaN rows
        for ranges openSMILE finds too short (it warns, and is silenced here)."""
        x = np.asarray(pcm, np.int16).astype(np.float32) / 32768.0  # openSMILE scales [-1, 1) back to int16
        out = np.full((len(ranges), len(self.names)), np.nan)
        for i, (a, b) in enumerate(ranges):
            a, b = max(0, a), min(x.size, b)
            if b <= a:
                continue
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Segment too short")
                row = self.smile.process_signal(x[a:b], rate)
            out[i] = row.to_numpy(np.float64)[0]
        return out

    def provenance(self) -> dict:
        return {
            "package": "opensmile",
            "version": package_version("opensmile"),
            "feature_set": FEATURE_SET,
            "feature_level": FEATURE_LEVEL,
            "features": len(self.names),
            "licence": LICENCE,
        }
