"""What a study is: its stages, outcomes, entry-check thresholds and texts (`StudyConfig`, from the settings)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

CONSENT, INSTRUCTIONS, MICCHECK, PRACTICE, EPISODES, DONE, DECLINED = (
    "consent",
    "instructions",
    "miccheck",
    "practice",
    "episodes",
    "done",
    "declined",
)
SCREENED, FAILED = "screened", "failed"
FREE = "free"  # no study: microphone check, then play as many episodes as you like
ORDER = (CONSENT, INSTRUCTIONS, MICCHECK, PRACTICE, EPISODES, DONE)
#: the stages that end the study, and the outcome (its code and URL) each hands back to the recruiting platform
OUTCOME_OF = {DONE: "completed", DECLINED: "declined", SCREENED: "screened", FAILED: "failed"}

#: why an entry check failed; the page explains each (client/checks.js)
ENTRY_REASONS = ("insecure", "browser", "window", "refresh", "rtt")
#: why a participant could not go on (`failure` event, or the server could not record)
FAILURE_REASONS = ("microphone", "server")


DEFAULT_SPEECH_INSTRUCTION = (
    'While you play, say "yes" out loud when you think your last move was good and "no" '
    "when it was bad. You may also say what you are trying to do."
)


@dataclass(frozen=True)
class Outcome:
    """An outcome's code for the recruiting platform and where to send the participant ({code} in the URL is
    replaced by the code); empty strings when the researcher set none."""

    code: str = ""
    url: str = ""

    def public(self, kind: str, code: str | None = None) -> dict:
        code = code if code is not None else self.code
        return {"kind": kind, "code": code or None, "url": self.url.replace("{code}", code or "") or None}


def render_markdown(text: str) -> str:
    """The consent text as HTML. CommonMark without raw HTML (a `<script>` in the file is shown, not run), and
    markdown-it's link check drops javascript: and data: links: the page inserts this HTML as it is."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).render(text)


@dataclass(frozen=True)
class StudyConfig:
    """What the researcher set (a slice of Settings)."""

    enabled: bool = False
    consent_text: str = ""
    speech_instruction: str = DEFAULT_SPEECH_INSTRUCTION
    practice_s: float = 60.0
    record_practice: bool = False
    play_s: float = 600.0
    episodes: int | None = None
    completion_code: str | None = None
    consent_html: str = ""
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)
    max_rtt_ms: float = 250.0
    min_refresh_hz: float = 50.0
    min_window: tuple[int, int] = (800, 520)
    allow_repeat: bool = False

    def outcome(self, kind: str, code: str | None = None) -> dict:
        return self.outcomes.get(kind, Outcome()).public(kind, code)

    def thresholds(self) -> dict:
        return {
            "max_rtt_ms": self.max_rtt_ms,
            "min_refresh_hz": self.min_refresh_hz,
            "min_window": list(self.min_window),
        }


def entry_failures(measured: Mapping, reported: list[str], cfg: StudyConfig) -> list[str]:
    """Why the participant's browser cannot take part: what the page reported (secure context, features) and the
    thresholds applied here to what it measured, so the settings decide, not the page. Order of ENTRY_REASONS."""
    reasons = {r for r in reported if r in ENTRY_REASONS}

    def number(key: str) -> float | None:
        v = measured.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    rtt, hz = number("rtt_ms"), number("refresh_hz")
    if rtt is None or rtt > cfg.max_rtt_ms:
        reasons.add("rtt")
    if hz is None or hz < cfg.min_refresh_hz:
        reasons.add("refresh")
    window = measured.get("window")
    size = window if isinstance(window, list) and len(window) == 2 else [None, None]
    w, h = (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else -1.0 for v in size)
    if w < cfg.min_window[0] or h < cfg.min_window[1]:
        reasons.add("window")
    return [r for r in ENTRY_REASONS if r in reasons]
