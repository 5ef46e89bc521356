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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _patch(_async_mode_from_argv(argv))

    import logging
    import signal

    from .app import create_app
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
    app, socketio = create_app(settings)
    state = app.extensions["atari"]

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    log.info("serving %s on http://%s:%d (store %s, async mode %s, codec %s, max %d demonstrators)",
             ",".join(settings.games), settings.host, settings.port, state.store.url, settings.async_mode,
             settings.codec, settings.max_demonstrators)
    try:
        serve(app, socketio, settings)
    except KeyboardInterrupt:
        pass
    finally:
        closed = state.registry.shutdown()
        if closed:
            log.info("closed %d open episodes as interrupted: %s", len(closed), ", ".join(closed))
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
