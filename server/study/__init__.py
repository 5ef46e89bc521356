"""The study around the game: entry checks, consent, instructions, microphone check, practice, recorded episodes,
and the outcome handed back to the recruiting platform (completed, declined, screened out, technical failure).

A participant's progress lives in a JSON file in the spool's study directory (server.spool), so a reload, a
reconnect or a server restart returns them to where they were. Outcomes are also appended to the study log (the
spool's `study_log`, one JSON object a line), which is all that is kept of a participant who declines or is screened
out. `StudyFlow` holds the transitions between the stages; no Flask here: the socket handlers call it with the
participant ID of their connection.
"""

from .config import (
    CONSENT,
    DECLINED,
    DEFAULT_SPEECH_INSTRUCTION,
    DONE,
    ENTRY_REASONS,
    EPISODES,
    FAILED,
    FAILURE_REASONS,
    FREE,
    INSTRUCTIONS,
    MICCHECK,
    ORDER,
    OUTCOME_OF,
    PRACTICE,
    SCREENED,
    Outcome,
    StudyConfig,
    entry_failures,
    render_markdown,
)
from .flow import (
    EpisodePlan,
    StudyFlow,
    completion_code,
    finished,
    next_stage,
    public_state,
    record_episode,
    remaining_s,
)
from .records import Participants, StudyLog

__all__ = [
    "CONSENT",
    "DECLINED",
    "DEFAULT_SPEECH_INSTRUCTION",
    "DONE",
    "ENTRY_REASONS",
    "EPISODES",
    "EpisodePlan",
    "FAILED",
    "FAILURE_REASONS",
    "FREE",
    "INSTRUCTIONS",
    "MICCHECK",
    "ORDER",
    "OUTCOME_OF",
    "Outcome",
    "PRACTICE",
    "Participants",
    "SCREENED",
    "StudyConfig",
    "StudyFlow",
    "StudyLog",
    "completion_code",
    "entry_failures",
    "finished",
    "next_stage",
    "public_state",
    "record_episode",
    "remaining_s",
    "render_markdown",
]
