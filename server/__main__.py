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
    from .settings import load_settings

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
    if settings.token_generated():
        log.warning("researcher token (set RESEARCHER_TOKEN to choose your own): %s", settings.researcher_token)
        scheme = "https" if settings.tls() else "http"
        log.info(
            "admin page: %s://%s:%d/admin?token=%s", scheme, settings.host, settings.port, settings.researcher_token
        )
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
        closed = state.registry.shutdown()
        if closed:
            log.info("closed %d open episodes as interrupted: %s", len(closed), ", ".join(closed))
        if uploader is not None:
            _drain_uploader(uploader, state.spool, settings.upload_drain_s, log)
        log.info("stopped")
    return 0


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
    ]
    if settings.s3_endpoint_url:
        cmd += ["--endpoint-url", settings.s3_endpoint_url]
    if settings.s3_region:
        cmd += ["--region", settings.s3_region]
    if settings.keep_spool:
        cmd.append("--keep-spool")
    return subprocess.Popen(cmd)


def _drain_uploader(proc, spool, timeout_s: float, log) -> None:
    """Give the uploader a moment to send what was just closed; what is left goes up at the next start."""
    import time

    deadline = time.monotonic() + timeout_s
    while spool.closed() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    left = spool.closed()
    if left:
        log.warning(
            "%d trajectories wait in the spool for upload at the next start: %s",
            len(left),
            ", ".join(d.name for d in left),
        )
    proc.terminate()
    try:
        proc.wait(5)
    except Exception:
        proc.kill()


if __name__ == "__main__":
    sys.exit(main())
