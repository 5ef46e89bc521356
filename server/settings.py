"""The one Settings dataclass: defaults, then environment variables, then the command line."""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, UnknownGame
from .games import resolve_game
from .store.base import Store, file_path, store_scheme

if TYPE_CHECKING:
    from .spool import Spool

ASYNC_MODES = ("eventlet", "gevent", "threading")
CODECS = ("xor", "jpeg")


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
    """Under eventlet, write events straight to the WebSocket (server/web/fastpath.py); off: python-socketio's emit."""
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
    max_attachments: int = 1
    """Binary attachments one Socket.IO event may carry (the protocol's `audio` has one); more closes the connection."""
    audio_rate_max: float = 1.2
    """Audio one connection may send, as a multiple of real time, measured over `audio_rate_window_s`."""
    audio_rate_window_s: float = 3.0
    """The window of `audio_rate_max`: a client may catch up this much audio after a stall."""
    preload_emulators: int | None = None
    """Emulators loaded per game at start-up (in the background), so no start loads a ROM; None: max_demonstrators."""
    secret_key: str = field(default="", repr=False)
    """Flask secret key; generated at start-up when empty."""
    log_level: str = "INFO"
    """Python logging level."""

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
            object.__setattr__(self, "_token_generated", True)
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
        return getattr(self, "_token_generated", False)

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


def _split_games(value: str) -> tuple[str, ...]:
    return tuple(g.strip() for g in value.split(",") if g.strip())


def _bool(value: str) -> bool:
    """0/1/false/true (and no/yes, off/on), as FAST_PATH takes them."""
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 0, 1, false or true")


def _window(value: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT`, e.g. 800x520."""
    w, sep, h = value.lower().partition("x")
    if not sep:
        raise ValueError(f"{value!r} is not WIDTHxHEIGHT (e.g. 800x520)")
    return int(w), int(h)


def _opt_float(value: str) -> float | None:
    return None if value.strip().lower() in ("", "none", "0", "off") else float(value)


# environment variable -> (field, parser)
ENVIRONMENT: dict[str, tuple[str, object]] = {
    "HOST": ("host", str),
    "PORT": ("port", int),
    "ROM": ("games", _split_games),
    "GAMES": ("games", _split_games),
    "S3_BUCKET": ("store", lambda v: f"s3://{v}"),  # the old system's name; STORE_URL below wins
    "STORE_URL": ("store", str),
    "SPOOL_DIR": ("spool", str),
    "CACHE_DIR": ("cache", str),
    "S3_ENDPOINT_URL": ("s3_endpoint_url", str),
    "AMAZON_REGION": ("s3_region", str),  # the old system's name
    "KEEP_SPOOL": ("keep_spool", lambda v: v.strip().lower() in ("1", "true", "yes", "on")),
    "ASYNC_MODE": ("async_mode", str),
    "FAST_PATH": ("fast_path", _bool),
    "CODEC": ("codec", str),
    "REPEAT_ACTION_PROBABILITY": ("repeat_action_probability", float),
    "EPISODE_TIME_LIMIT": ("episode_time_limit_s", _opt_float),
    "MAX_DEMONSTRATORS": ("max_demonstrators", int),
    "SECRET_KEY": ("secret_key", str),
    "RESEARCHER_TOKEN": ("researcher_token", str),
    "STUDY": ("study", lambda v: v.strip().lower() in ("1", "true", "yes", "on")),
    "CONSENT_FILE": ("consent_file", str),
    "SPEECH_INSTRUCTION": ("speech_instruction", str),
    "COMPLETION_CODE": ("completion_code", str),
    "LOG_LEVEL": ("log_level", str),
    "PRELOAD_EMULATORS": ("preload_emulators", int),
    "TLS_CERTFILE": ("certfile", str),
    "TLS_KEYFILE": ("keyfile", str),
    "MAX_RTT_MS": ("max_rtt_ms", float),
    "MIN_REFRESH_HZ": ("min_refresh_hz", float),
    "MIN_WINDOW": ("min_window", _window),
    "COMPLETION_URL": ("completion_url", str),
    "DECLINED_CODE": ("declined_code", str),
    "DECLINED_URL": ("declined_url", str),
    "SCREENED_CODE": ("screened_code", str),
    "SCREENED_URL": ("screened_url", str),
    "FAILURE_CODE": ("failure_code", str),
    "FAILURE_URL": ("failure_url", str),
    "ALLOW_REPEAT": ("allow_repeat", _bool),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve Atari games to demonstrators and record every frame, key and audio sample.",
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--game", dest="games", type=_split_games, help="the game (or a comma-separated list)")
    p.add_argument("--games", dest="games", type=_split_games, help="games assigned to demonstrators in turn")
    p.add_argument("--store", help="directory, file:// URL or s3://BUCKET/PREFIX for recordings (default ./recordings)")
    p.add_argument("--spool", help="local spool directory when the store is S3 (default ./spool)")
    p.add_argument("--cache", help="local cache of trajectories read from S3 (default ./cache)")
    p.add_argument("--s3-endpoint-url", dest="s3_endpoint_url", help="S3-compatible server URL (MinIO, moto)")
    p.add_argument("--s3-region", dest="s3_region", help="S3 region (default: the AWS chain's, else us-east-1)")
    p.add_argument(
        "--keep-spool",
        dest="keep_spool",
        action="store_const",
        const=True,
        help="keep spooled files after their upload is verified",
    )
    p.add_argument("--upload-drain", dest="upload_drain_s", type=float)
    p.add_argument("--async-mode", dest="async_mode", choices=ASYNC_MODES)
    p.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_const",
        const=False,
        help="send through python-socketio's emit even under eventlet (the plain path every async mode has)",
    )
    p.add_argument("--codec", choices=CODECS)
    p.add_argument("--sticky", "--repeat-action-probability", dest="repeat_action_probability", type=float)
    p.add_argument(
        "--episode-time-limit",
        dest="episode_time_limit_s",
        type=_opt_float,
        help="seconds of play per episode (default: none)",
    )
    p.add_argument("--max-demonstrators", dest="max_demonstrators", type=int)
    p.add_argument("--resume-countdown", dest="resume_countdown_s", type=float)
    p.add_argument("--reconnect-grace", dest="reconnect_grace_s", type=float)
    p.add_argument("--log-level", dest="log_level")
    p.add_argument(
        "--study",
        dest="study",
        action="store_const",
        const=True,
        help="run the study flow (consent, instructions, microphone check, practice, episodes, code)",
    )
    p.add_argument("--consent-file", dest="consent_file")
    p.add_argument(
        "--speech-instruction",
        dest="speech_instruction",
        help='what to tell demonstrators to say, e.g. "Say only YES or NO."',
    )
    p.add_argument("--practice", dest="practice_s", type=float, help="practice seconds (0: none)")
    p.add_argument("--record-practice", dest="record_practice", action="store_const", const=True)
    p.add_argument("--play-time", dest="study_play_s", type=float, help="recorded play per participant, seconds")
    p.add_argument("--episodes", dest="study_episodes", type=int, help="a fixed number of recorded episodes instead")
    p.add_argument("--completion-code", dest="completion_code")
    p.add_argument("--max-messages-per-s", dest="max_messages_per_s", type=int)
    p.add_argument(
        "--preload-emulators",
        dest="preload_emulators",
        type=int,
        help="emulators loaded per game before the server listens (default: --max-demonstrators)",
    )
    online = p.add_argument_group("going online (README: Running a study)")
    online.add_argument("--certfile", help="TLS certificate chain (PEM): serve HTTPS and WSS (with --keyfile)")
    online.add_argument("--keyfile", help="TLS private key (PEM)")
    online.add_argument("--max-rtt-ms", dest="max_rtt_ms", type=float, help="entry check: largest round trip (250)")
    online.add_argument("--min-refresh-hz", dest="min_refresh_hz", type=float, help="entry check: display Hz (50)")
    online.add_argument("--min-window", dest="min_window", type=_window, help="entry check: WIDTHxHEIGHT (800x520)")
    online.add_argument(
        "--completion-url",
        dest="completion_url",
        help="where a participant who completed is sent; {code} is replaced by the code, e.g. "
        "https://app.prolific.com/submissions/complete?cc={code}",
    )
    for kind, what in (
        ("declined", "declined consent"),
        ("screened", "was screened out"),
        ("failure", "hit a failure"),
    ):
        online.add_argument(f"--{kind}-code", dest=f"{kind}_code", help=f"the code of a participant who {what}")
        online.add_argument(f"--{kind}-url", dest=f"{kind}_url", help=f"where a participant who {what} is sent")
    online.add_argument(
        "--allow-repeat",
        dest="allow_repeat",
        action="store_const",
        const=True,
        help="let a participant ID that completed take part again",
    )
    return p


def _from_environment(environ: Mapping[str, str], only: Sequence[str] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, (field_name, parse) in ENVIRONMENT.items():
        if (only is None or field_name in only) and name in environ and environ[name] != "":
            try:
                values[field_name] = parse(environ[name])  # type: ignore[operator]
            except ValueError as e:
                raise ConfigError(f"environment variable {name}={environ[name]!r}: {e}") from None
    return values


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, overridden by environment variables, overridden by command-line flags."""
    values = _from_environment(os.environ if environ is None else environ)
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    for f in fields(Settings):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return replace(Settings(), **values) if values else Settings()


#: The settings that say where recordings are; the scripts take them as the server does.
STORE_FIELDS = ("store", "spool", "cache", "s3_endpoint_url", "s3_region")


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    """The server's store options, for the scripts: the same flags, environment variables and defaults."""
    p.add_argument(
        "--store",
        help="directory, file:// URL or s3://BUCKET/PREFIX (default: $STORE_URL, s3://$S3_BUCKET, else ./recordings)",
    )
    p.add_argument("--spool", help="local spool directory of an S3 store (default: $SPOOL_DIR, else ./spool)")
    p.add_argument("--cache", help="local cache of trajectories read from S3 (default: $CACHE_DIR, else ./cache)")
    p.add_argument(
        "--s3-endpoint-url",
        "--endpoint-url",
        dest="s3_endpoint_url",
        help="S3-compatible server URL, e.g. MinIO (default: $S3_ENDPOINT_URL)",
    )
    p.add_argument("--s3-region", dest="s3_region", help="S3 region (default: $AMAZON_REGION, else AWS_REGION)")


def store_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings of the store options parsed by `add_store_arguments`, over the environment, over the defaults.
    `.open_store()` opens that store; a bad value raises ConfigError."""
    values = _from_environment(os.environ if environ is None else environ, only=STORE_FIELDS)
    for name in STORE_FIELDS:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return replace(Settings(), **values)


def script_store_settings(p: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    """`store_settings` for a script: a bad setting exits through `p.error` with the reason."""
    from .errors import AtariSpeechError

    try:
        return store_settings(args)
    except AtariSpeechError as e:
        p.error(str(e))


def open_script_store(p: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings | None = None) -> Store:
    """The store a script's options name (or `settings`, already read); a bad setting exits through `p.error`."""
    from .errors import AtariSpeechError

    settings = settings or script_store_settings(p, args)
    try:
        return settings.open_store()
    except AtariSpeechError as e:
        p.error(str(e))


def add_traj_id_arguments(p: argparse.ArgumentParser, all_help: str = "every trajectory in the store") -> None:
    """TRAJ_ID ... and --all, for the scripts that work on trajectories (read back by `script_traj_ids`)."""
    p.add_argument("traj_ids", nargs="*", metavar="TRAJ_ID")
    p.add_argument("--all", action="store_true", help=all_help)


def script_traj_ids(p: argparse.ArgumentParser, args: argparse.Namespace, store: Store) -> list[str]:
    """The trajectories a script names: its TRAJ_IDs, then every one in the store with --all; at least one."""
    from .core.reader import list_ids

    ids = list(args.traj_ids)
    if args.all:
        ids += list_ids(store)
    if not ids:
        p.error("name at least one TRAJ_ID, or --all")
    return ids
