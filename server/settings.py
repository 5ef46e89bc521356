"""The one Settings dataclass: defaults, then environment variables, then the command line.

This module holds the dataclass (its fields, their validation, the helpers that open what they name);
`server/settings_sources.py` lays the environment and the command line over its defaults (`load_settings`)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ConfigError, UnknownGame
from .games import resolve_game
from .store.base import Store, file_path, store_scheme

if TYPE_CHECKING:
    from .spool import Spool

ASYNC_MODES = ("eventlet", "gevent", "threading")
CODECS = ("xor", "jpeg")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
AUDIO_FORMATS = ("pcm48", "pcm16k")


@dataclass(frozen=True)
class Settings:
    """Everything the server is configured with."""

    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 to accept other machines)."""
    port: int = 5000
    """TCP port."""
    games: tuple[str, ...] = ("spaceinvaders",)
    """Games, assigned to demonstrators in turn; catalogue names or ALE ROM ids."""
    store: str = "./recordings"
    """Where trajectories go: a directory path, file:// URL, or s3://BUCKET/PREFIX."""
    spool: str = "./spool"
    """With an S3 store: the local directory recordings are written to before upload."""
    cache: str = "./cache"
    """With an S3 store: where trajectories read back from S3 are kept (replay, video, dataset)."""
    s3_endpoint_url: str | None = None
    """An S3-compatible server's URL (MinIO, Ceph, moto); None for AWS."""
    s3_region: str | None = None
    """The S3 region; None for the AWS chain's own (AWS_REGION, AWS_DEFAULT_REGION), else us-east-1."""
    keep_spool: bool = False
    """Keep the spool copy of a trajectory after its upload is verified."""
    upload_drain_s: float = 10.0
    """At shutdown, how long to wait for the uploader to empty the spool (the rest goes up at the next start)."""
    async_mode: str = "eventlet"
    """eventlet (default) or gevent; threading works for a handful of demonstrators."""
    fast_path: bool = True
    """Under eventlet, write events straight to the WebSocket (server/web/fastpath/); off: python-socketio's emit."""
    codec: str = "xor"
    """Frame codec: xor (lossless palette+XOR+deflate) or jpeg."""
    repeat_action_probability: float = 0.0
    """ALE sticky-action probability, recorded with each episode."""
    episode_time_limit_s: float | None = None
    """End an episode after this many seconds of play (None: no limit)."""
    max_demonstrators: int = 32
    """Concurrent demonstrators this process admits; the next one is told the server is full."""
    resume_countdown_s: float = 3.0
    """The 3-2-1 countdown before play resumes after a pause."""
    reconnect_grace_s: float = 120.0
    """How long a dropped demonstrator's episode waits for them to come back before it closes as interrupted."""
    end_grace_s: float = 1.0
    """After game over or stop, how long the episode stays open for late paint acks and audio."""
    study: bool = False
    """Run the study flow: consent, instructions, microphone check, practice, recorded episodes, completion code."""
    consent_file: str = "study/consent.md"
    """The consent text shown first (the researcher's approved wording)."""
    speech_instruction: str = ""
    """What demonstrators are told to say; empty for the default yes/no-and-comment instruction."""
    practice_s: float = 60.0
    """Length of the practice round in seconds (0: no practice)."""
    record_practice: bool = False
    """Record the practice round like an episode."""
    study_play_s: float = 600.0
    """Recorded play per participant, in seconds, however many episodes that takes."""
    study_episodes: int | None = None
    """Instead of a play time, a fixed number of recorded episodes."""
    completion_code: str = ""
    """The code shown at the end (Prolific's study code); empty to generate one per participant."""
    researcher_token: str = field(default="", repr=False)
    """Protects /admin, /replay, the trajectory list and downloads; generated and printed at start-up if empty."""
    max_messages_per_s: int = 400
    """A client sending more Socket.IO messages than this in a second is disconnected."""
    # --- hostile and faulty input (issue 20; the message size and rate limits are above) ---------------------------
    max_connects_per_s: float = 10.0
    """New connections one client address may open a second, with a burst of 3 seconds' worth (server/web/guard.py);
    more are refused at the handshake. Behind a reverse proxy set `trusted_proxies`, or every participant shares the
    proxy's allowance. 0: no limit."""
    max_attachments: int = 1
    """Binary attachments one Socket.IO event may carry (the protocol's `audio` has one); more closes the connection."""
    audio_rate_max: float = 1.2
    """Audio one connection may send, as a multiple of real time, measured over `audio_rate_window_s`."""
    audio_rate_window_s: float = 3.0
    """The window of `audio_rate_max`: a client may catch up this much audio after a stall."""
    preload_emulators: int | None = None
    """Emulators loaded per game at start-up (in the background), so no start loads a ROM; None: max_demonstrators."""
    audio_format: str = "pcm16k"
    """How the browser sends the microphone: pcm16k (16 kHz PCM16, about 260 kbit/s; the default, see
    docs/benchmarks.md "Real networks": 48 kHz raised the round trip on a 1 Mbit/s uplink and swamped 600 kbit/s) or
    pcm48 (48 kHz, about 790 kbit/s)."""
    slow_rtt_ms: float = 250.0
    """A connection whose round trip (or paint-ack lag, less 100 ms) stays above this is slow."""
    slow_for_s: float = 5.0
    """After this long slow, the participant is told the game may lag (and it is logged)."""
    drop_after_slow_s: float | None = None
    """End the episode as a technical failure after this long slow (None: never)."""
    end_upload_max_s: float = 60.0
    """After an episode stops, how long it stays open for audio the browser could not send yet."""
    secret_key: str = field(default="", repr=False)
    """Flask secret key; generated at start-up when empty."""
    log_level: str = "INFO"
    """Python logging level (DEBUG, INFO, WARNING, ERROR), for the server and its uploader."""
    # --- the researcher's side (issue 19): sign-in, the study monitor ------------------------------------------------
    trust_loopback: bool = False
    """Let requests from this machine (no proxy header) into the researcher's pages without signing in: a single-user
    laptop only. Off, every researcher route needs the token, a Bearer header or the session cookie."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses of reverse proxies whose X-Forwarded-Proto is believed (the session cookie is Secure under TLS)."""
    stuck_after_s: float = 300.0
    """The monitor highlights a participant who has been in one stage longer than this."""
    generated_token: str = field(default="", repr=False)
    """The researcher token generated at start-up ("" when it came from RESEARCHER_TOKEN); set by the settings."""

    # --- going online: TLS, entry checks, the recruiting platform's round trip (README, "Running a study") ---------
    certfile: str = ""
    """TLS certificate chain (PEM): with `keyfile` the server speaks HTTPS and WSS itself."""
    keyfile: str = ""
    """TLS private key (PEM) of `certfile`."""
    max_rtt_ms: float = 250.0
    """Entry check: the largest median round-trip time to the server a participant may have."""
    min_refresh_hz: float = 50.0
    """Entry check: the lowest display refresh rate (the game runs at 60 Hz)."""
    min_window: tuple[int, int] = (800, 520)
    """Entry check: the smallest browser window (inner width, height in CSS pixels) the game is played in."""
    completion_url: str = ""
    """Where a participant who completed goes (after a few seconds): `{code}` is replaced by the completion code."""
    declined_code: str = ""
    """The code (and URL below) of a participant who declined consent; empty: none."""
    declined_url: str = ""
    screened_code: str = ""
    """The code (and URL below) of a participant an entry check screened out."""
    screened_url: str = ""
    failure_code: str = ""
    """The code (and URL below) of a participant who could not go on for a technical failure."""
    failure_url: str = ""
    allow_repeat: bool = False
    """Let a participant ID that already completed take the study again (otherwise they are told so)."""

    def is_s3(self) -> bool:
        return self.store.startswith("s3://")

    def open_store(self) -> Store:
        """The configured store."""
        from .store import open_store

        return open_store(self.store, cache=self.cache, endpoint_url=self.s3_endpoint_url, region=self.s3_region)

    def open_spool(self) -> Spool:
        """The local directory recordings are written to: the store's own directory, or `spool` for S3."""
        from .spool import Spool

        return Spool(self.spool if self.is_s3() else file_path(self.store))

    def __post_init__(self) -> None:
        if self.async_mode not in ASYNC_MODES:
            raise ConfigError(f"async_mode {self.async_mode!r}: choose one of {', '.join(ASYNC_MODES)}")
        if self.audio_format not in AUDIO_FORMATS:
            raise ConfigError(f"audio_format {self.audio_format!r}: choose one of {', '.join(AUDIO_FORMATS)}")
        if self.slow_rtt_ms <= 0 or self.slow_for_s < 0 or self.end_upload_max_s < 0:
            raise ConfigError("slow_rtt_ms must be positive, slow_for_s and end_upload_max_s not negative")
        if self.drop_after_slow_s is not None and self.drop_after_slow_s <= 0:
            raise ConfigError("drop_after_slow_s must be positive (or unset: never)")
        if self.codec not in CODECS:
            raise ConfigError(f"codec {self.codec!r}: choose one of {', '.join(CODECS)}")
        if not 0.0 <= self.repeat_action_probability <= 1.0:
            raise ConfigError("repeat_action_probability must be between 0 and 1")
        if self.max_demonstrators < 1:
            raise ConfigError("max_demonstrators must be at least 1")
        if self.episode_time_limit_s is not None and self.episode_time_limit_s <= 0:
            raise ConfigError("episode_time_limit_s must be positive (or unset for no limit)")
        if not self.games:
            raise ConfigError("no game configured: set --game or ROM")
        resolved = []
        for g in self.games:
            try:
                resolved.append(resolve_game(g).name)
            except UnknownGame as e:
                raise ConfigError(str(e)) from None
        object.__setattr__(self, "games", tuple(resolved))
        if not self.store.strip():
            raise ConfigError("the store is empty: set --store to a directory or s3://BUCKET/PREFIX")
        store_scheme(self.store)  # ConfigError for a scheme no store serves
        if self.store.startswith("s3://") and len(self.store) <= len("s3://"):
            raise ConfigError("the S3 store names no bucket: use --store s3://BUCKET/PREFIX (or S3_BUCKET)")
        if not self.secret_key:
            object.__setattr__(self, "secret_key", secrets.token_hex(32))
        if not self.researcher_token:
            object.__setattr__(self, "researcher_token", secrets.token_urlsafe(24))
            object.__setattr__(self, "generated_token", self.researcher_token)
        object.__setattr__(self, "log_level", self.log_level.upper())
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level {self.log_level!r}: choose one of {', '.join(LOG_LEVELS)}")
        if self.stuck_after_s <= 0 or self.upload_drain_s < 0:
            raise ConfigError("stuck_after_s must be positive and upload_drain_s 0 or more")
        if self.max_connects_per_s < 0:
            raise ConfigError("max_connects_per_s must not be negative (0: no limit)")
        if self.max_attachments < 1 or self.audio_rate_max <= 0 or self.audio_rate_window_s <= 0:
            raise ConfigError("max_attachments, audio_rate_max and audio_rate_window_s must be positive")
        if self.preload_emulators is not None and self.preload_emulators < 0:
            raise ConfigError("preload_emulators must be 0 or more")
        if self.study_episodes is not None and self.study_episodes < 1:
            raise ConfigError("study_episodes must be at least 1")
        self._check_online()

    def _check_online(self) -> None:
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("TLS needs both --certfile and --keyfile (TLS_CERTFILE, TLS_KEYFILE)")
        for flag, path in (("--certfile", self.certfile), ("--keyfile", self.keyfile)):
            if path and not os.access(path, os.R_OK):
                raise ConfigError(f"cannot read {flag} {path!r}")
        if self.max_rtt_ms < 0 or self.min_refresh_hz < 0 or min(self.min_window) < 0:
            raise ConfigError("entry-check thresholds (--max-rtt-ms, --min-refresh-hz, --min-window) must be >= 0")
        for flag, url in (
            ("--completion-url", self.completion_url),
            ("--declined-url", self.declined_url),
            ("--screened-url", self.screened_url),
            ("--failure-url", self.failure_url),
        ):
            if url and not url.startswith(("https://", "http://")):
                raise ConfigError(f"{flag} {url!r} must be an http:// or https:// URL")

    def tls(self) -> bool:
        return bool(self.certfile and self.keyfile)

    def token_generated(self) -> bool:
        """Whether the researcher token was generated at start-up (and must be shown), not set by the researcher. A
        field, not an attribute set on the side: `dataclasses.replace` keeps it."""
        return bool(self.generated_token) and self.generated_token == self.researcher_token

    def study_config(self):
        from .study import DEFAULT_SPEECH_INSTRUCTION, Outcome, StudyConfig, render_markdown

        consent = ""
        if self.study:
            try:
                consent = open(self.consent_file, encoding="utf-8").read()
            except OSError as e:
                raise ConfigError(f"cannot read the consent file {self.consent_file!r} (--consent-file): {e}") from None
        return StudyConfig(
            enabled=self.study,
            consent_text=consent,
            speech_instruction=self.speech_instruction or DEFAULT_SPEECH_INSTRUCTION,
            practice_s=self.practice_s,
            record_practice=self.record_practice,
            play_s=self.study_play_s,
            episodes=self.study_episodes,
            completion_code=self.completion_code or None,
            consent_html=render_markdown(consent),
            outcomes={
                "completed": Outcome(self.completion_code, self.completion_url),
                "declined": Outcome(self.declined_code, self.declined_url),
                "screened": Outcome(self.screened_code, self.screened_url),
                "failed": Outcome(self.failure_code, self.failure_url),
            },
            max_rtt_ms=self.max_rtt_ms,
            min_refresh_hz=self.min_refresh_hz,
            min_window=self.min_window,
            allow_repeat=self.allow_repeat,
        )
