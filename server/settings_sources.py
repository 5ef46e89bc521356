"""Where the one Settings comes from: the environment variables (`ENVIRONMENT`), the server's command line
(`build_parser`) and `load_settings`, which lays them over the defaults; and the scripts' store options."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from .errors import ConfigError
from .settings import ASYNC_MODES, AUDIO_FORMATS, CODECS, Settings
from .store.base import Store


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
    "TRUST_LOOPBACK": ("trust_loopback", _bool),
    "TRUSTED_PROXIES": ("trusted_proxies", lambda v: tuple(a.strip() for a in v.split(",") if a.strip())),
    "STUCK_AFTER_S": ("stuck_after_s", float),
    "DRAIN_TIMEOUT_S": ("upload_drain_s", float),
    "AUDIO_FORMAT": ("audio_format", str),
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
    p.add_argument(
        "--drain-timeout-s",
        "--upload-drain",
        dest="upload_drain_s",
        type=float,
        help="at a stop, how long to wait for closed trajectories to reach S3 (default 10)",
    )
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
    p.add_argument("--log-level", dest="log_level", help="DEBUG, INFO (default), WARNING or ERROR")
    p.add_argument(
        "--trust-loopback",
        dest="trust_loopback",
        action="store_const",
        const=True,
        help="single-user laptop: requests from this machine reach the researcher pages without the token",
    )
    p.add_argument(
        "--trusted-proxy",
        dest="trusted_proxies",
        type=lambda v: tuple(a.strip() for a in v.split(",") if a.strip()),
        help="reverse proxy address(es) whose X-Forwarded-Proto is believed (comma-separated)",
    )
    p.add_argument(
        "--stuck-after-s",
        dest="stuck_after_s",
        type=float,
        help="the monitor highlights a participant in one stage longer than this (default 300)",
    )
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
    p.add_argument("--max-connects-per-s", dest="max_connects_per_s", type=float)
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
    p.add_argument(
        "--audio-format", dest="audio_format", choices=AUDIO_FORMATS, help="microphone upload: pcm48 or pcm16k"
    )
    p.add_argument("--slow-rtt-ms", dest="slow_rtt_ms", type=float, help="RTT counted as slow (default 250)")
    p.add_argument("--slow-for-s", dest="slow_for_s", type=float, help="seconds slow before the warning (default 5)")
    p.add_argument(
        "--drop-after-slow-s",
        dest="drop_after_slow_s",
        type=_opt_float,
        help="end an episode as a technical failure after this many seconds slow (default: never)",
    )
    p.add_argument("--end-upload-max-s", dest="end_upload_max_s", type=float)
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
    return Settings(**values)  # built once: a second pass would find the generated token set (token_generated)


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
