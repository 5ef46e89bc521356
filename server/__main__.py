"""python -m server: serve games to demonstrators and record them (see README)."""

from __future__ import annotations

import os
import sys


def _async_mode_from_argv(argv: list[str]) -> str:
    """The async mode must be known before anything else is imported, to monkey-patch first."""
    mode = os.environ.get("ASYNC_MODE") or "eventlet"
    for i, arg in enumerate(argv):
        if arg == "--async-mode" and i + 1 < len(argv):
            mode = argv[i + 1]
        elif arg.startswith("--async-mode="):
            mode = arg.split("=", 1)[1]
    return mode


def _patch(mode: str) -> None:
    if mode == "eventlet":
        import warnings

        # The design names eventlet (measured capacity); gevent is the alternative (--async-mode gevent).
        warnings.filterwarnings("ignore", message="\\s*Eventlet is deprecated")
        import eventlet

        eventlet.monkey_patch()
    elif mode == "gevent":
        from gevent import monkey

        monkey.patch_all()


SWITCH_INTERVAL_S = 0.0005


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _patch(_async_mode_from_argv(argv))

    import logging
    import signal

    from .app import create_app, start_background
    from .errors import ConfigError
    from .serve import serve
    from .settings_sources import load_settings

    try:
        settings = load_settings(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("server")
    uploader = None
    if settings.is_s3():
        from .errors import StorageError
        from .store.s3 import S3Location, check_writable, parse_s3_url

        bucket, prefix = parse_s3_url(settings.store)
        try:
            check_writable(S3Location(bucket, prefix, settings.s3_endpoint_url, settings.s3_region))
        except StorageError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    app, socketio = create_app(settings)
    start_background(app)  # recovery, the ROMs, the flusher and the ticker
    state = app.extensions["atari"]
    import gc

    # Everything loaded so far (Flask, numpy, ALE, the emulators) lives as long as the process: keep it out of the
    # collector's full passes, which otherwise stall every game about 50 ms now and then (4 ms frozen).
    gc.collect()
    gc.freeze()
    # Episodes close in worker threads (files rewritten, digests): Python code that holds the GIL. With the default
    # 5 ms switch interval each close stalled every game of the process 5 ms at a time; 0.5 ms bounds that stall.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if settings.is_s3():
        uploader = _start_uploader(settings)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    for line in admin_banner(settings):
        print(line, file=sys.stderr, flush=True)  # like Jupyter's: on every start, whatever the flags
    from .serve import plain_http_warning

    warning = plain_http_warning(settings)
    if warning:
        log.warning(warning)
    log.info(
        "serving %s on %s://%s:%d (store %s, async mode %s, codec %s, max %d demonstrators)",
        ",".join(settings.games),
        "https" if settings.tls() else "http",
        settings.host,
        settings.port,
        state.store.url,
        settings.async_mode,
        settings.codec,
        settings.max_demonstrators,
    )
    try:
        serve(app, socketio, settings)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the drain short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("stopping: closing open episodes")
        closed = state.registry.shutdown()
        if closed:
            log.info("closed %d open episodes as interrupted: %s", len(closed), ", ".join(closed))
        state.spool.remove_abandoned()  # practice rounds' scratch files
        try:
            state.spool.remove_live(state.process_id)
        except OSError:
            pass
        if uploader is not None:
            _drain_uploader(uploader, state.spool, settings, log)
        _release_emulators(state)
        log.info("stopped")
    return 0


def admin_banner(settings) -> list[str]:
    """What the server prints at every start about the researcher's page: its URL, with the token when it was
    generated (as Jupyter does), else where the token comes from."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # listening everywhere: this machine's own address works; the researcher knows the rest
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls() else "http"
    url = f"{scheme}://{host}:{settings.port}/admin"
    if settings.token_generated():
        return [
            "Researcher monitor (open this URL once; it signs you in; set RESEARCHER_TOKEN to choose the token):",
            f"    {url}?token={settings.researcher_token}",
        ]
    return [
        "Researcher monitor (sign in with the researcher token: the RESEARCHER_TOKEN environment variable):",
        f"    {url}",
    ]


def sync_command(settings, spool_root) -> str:
    """The command that uploads what a stop left in the spool."""
    import shlex

    cmd = ["python", "scripts/sync_storage.py", "--store", settings.store, "--spool", str(spool_root)]
    if settings.s3_endpoint_url:
        cmd += ["--s3-endpoint-url", settings.s3_endpoint_url]
    if settings.s3_region:
        cmd += ["--s3-region", settings.s3_region]
    return " ".join(shlex.quote(c) for c in cmd)


def _start_uploader(settings):
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "server.uploader",
        "--store",
        settings.store,
        "--spool",
        str(settings.open_spool().root),
        "--parent-pid",
        str(os.getpid()),
        "--log-level",
        settings.log_level,
    ]
    if settings.s3_endpoint_url:
        cmd += ["--endpoint-url", settings.s3_endpoint_url]
    if settings.s3_region:
        cmd += ["--region", settings.s3_region]
    if settings.keep_spool:
        cmd.append("--keep-spool")
    # Its own session: Ctrl-C in a terminal signals the whole process group, and the uploader must outlive the
    # server's stop to send what the stop just closed. It also ignores SIGINT and SIGTERM (systemd signals every
    # process of the service). The server ends it after the drain (SIGUSR2); it ends itself when the server is gone.
    return subprocess.Popen(cmd, start_new_session=True)


def _drain_uploader(proc, spool, settings, log) -> None:
    """Wait (at most `upload_drain_s`) for the uploader to send every closed trajectory, then stop it; list what is
    left, with the command that uploads it."""
    import signal
    import time

    deadline_s = settings.upload_drain_s
    deadline = time.monotonic() + deadline_s
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGUSR1)  # try now: no backoff wait for what failed earlier
        except OSError:
            pass
    waiting = spool.closed()
    if waiting:
        log.info("uploading %d closed trajectories before stopping (at most %.0f s)", len(waiting), deadline_s)
    while spool.closed() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    left = spool.closed()
    try:
        proc.send_signal(signal.SIGUSR2)  # stop after this pass (it ignores SIGINT and SIGTERM)
        proc.wait(5)
    except Exception:  # still sending a large file: it goes up again at the next start (meta.json last)
        proc.kill()
        proc.wait(5)
    if left:
        errors = spool.upload_status()
        log.error(
            "%d trajectories were not uploaded and wait in the spool %s:%s",
            len(left),
            spool.root,
            "".join(f"\n    {d.name}" + (f" ({errors[d.name]['error']})" if d.name in errors else "") for d in left),
        )
        log.error("upload them with: %s (or start the server again)", sync_command(settings, spool.root))
    else:
        log.info("every closed trajectory is in %s", settings.store)


def _release_emulators(state) -> None:
    """Drop every emulator before the interpreter shuts down: nanobind reports an ALEInterface still alive at exit
    as leaked (about 25 lines at every stop, which read like a crash)."""
    import gc

    for d in list(state.registry.by_token.values()):
        d.release()
    state.pool.close()
    state.registry.by_token.clear()
    state.registry.by_sid.clear()
    gc.unfreeze()  # start-up froze everything alive then (gc.freeze): let the collector see it again
    gc.collect()


if __name__ == "__main__":
    sys.exit(main())
