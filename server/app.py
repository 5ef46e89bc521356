"""create_app(settings) wires the store, the demonstrators' registry, the routes and the Socket.IO handlers;
start_background(app) then recovers what a killed server left, loads the ROMs and starts the endless tasks.

`python -m server` (server/__main__.py, which every test server runs) calls both, in that order.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from itertools import count

from flask import Flask
from flask_socketio import SocketIO

from .core.pool import EmulatorPool
from .core.registry import Registry
from .core.runtime import LoopConfig, Runtime
from .core.storehealth import StoreHealth
from .games import Game, resolve_game
from .monitor import LiveParticipants, snapshot
from .settings import Settings
from .spool import Spool, process_id
from .store import Store
from .study import Participants, StudyFlow
from .web import fastpath
from .web.guard import install_guard

log = logging.getLogger(__name__)

#: Largest Socket.IO message the transport accepts; larger ones close that client's connection.
MAX_MESSAGE_BYTES = 1_000_000

socketio = SocketIO()


@dataclass
class ServerState:
    """Everything the handlers share, kept in app.extensions['atari']."""

    settings: Settings
    store: Store
    registry: Registry
    pool: EmulatorPool
    runtime: Runtime
    loop_config: LoopConfig
    spool: Spool
    flow: StudyFlow = field(init=False)  # the study's stages (it draws games from next_game)
    storage: StoreHealth = field(init=False)  # whether the spool can be written (new starts are refused if not)
    assign: count = field(default_factory=count)
    recovered: list[str] = field(default_factory=list)
    started: bool = False
    live: LiveParticipants = field(default_factory=LiveParticipants)  # who is where, for the study monitor
    process_id: str = field(default_factory=process_id)  # this process among those sharing the spool

    def next_game(self) -> Game:
        """The next game of the rotation over the games this server offers."""
        return resolve_game(self.settings.games[next(self.assign) % len(self.settings.games)])


def _run_blocking_for(mode: str):
    if mode == "eventlet":
        from eventlet import tpool

        return _a_few_at_a_time(tpool.execute)
    if mode == "gevent":
        import gevent

        return _a_few_at_a_time(lambda fn, *args: gevent.get_hub().threadpool.apply(fn, args))
    return lambda fn, *args: fn(*args)


def _a_few_at_a_time(run, n: int = 2):
    """Blocking work (closing an episode's files) in a real thread, at most `n` jobs at once. Such a job holds the GIL
    part of the time; twenty of them at once (eventlet's thread pool) starved every game loop of the process for
    seconds when many episodes ended together. The semaphore is green (threading is monkey-patched), so waiting for
    it yields to the game loops."""
    slots = threading.BoundedSemaphore(n)

    def run_limited(fn, *args):
        with slots:
            return run(_in_background, fn, *args)

    return run_limited


def _in_background(fn, *args):
    """Run `fn` in this worker thread under Linux's SCHED_IDLE policy (per thread): it gets the core only when the
    game loop does not want it, and the game loop takes the core back as soon as it wakes. At the normal priority
    the scheduler gave an episode close (about 0.1 s of CPU a minute of episode) the game loop's core in 4 ms slices,
    stalling every demonstrator of the process 4 ms at a time, dozens of times per close."""
    try:
        tid = threading.get_native_id()
        if os.sched_getscheduler(tid) != os.SCHED_IDLE:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux: the normal policy
        pass
    return fn(*args)


def create_app(settings: Settings | None = None) -> tuple[Flask, SocketIO]:
    """The Flask app and its SocketIO server, wired; `start_background(app)` before serving."""
    settings = settings or Settings()
    app = Flask(__name__, static_folder=None)
    app.config["SECRET_KEY"] = settings.secret_key
    socketio.init_app(
        app,
        async_mode=settings.async_mode,
        max_http_buffer_size=MAX_MESSAGE_BYTES,
        cors_allowed_origins=None,
        ping_interval=5,
        ping_timeout=10,
        async_handlers=False,
    )  # handlers only validate and queue: no task per message
    store = settings.open_store()
    spool = settings.open_spool()
    install_guard(  # before the patches count for it
        socketio,
        settings.max_messages_per_s,
        settings.max_attachments,
        settings.max_connects_per_s,
        settings.trusted_proxies,
    )
    # The direct frame path writes WebSocket messages to the plain TCP socket itself; under the server's own TLS the
    # socket is a TLS one, so frames take Socket.IO's ordinary path (behind Caddy or nginx the process has no TLS).
    send = fastpath.install(  # every library patch, or none
        socketio, settings.async_mode, settings.fast_path and not settings.tls(), max_message_bytes=MAX_MESSAGE_BYTES
    )
    runtime = Runtime(
        send=send,
        flush=send.flush_frames,
        sleep=socketio.sleep,
        run_blocking=_run_blocking_for(settings.async_mode),
    )
    loop_config = LoopConfig(
        codec=settings.codec,
        repeat_action_probability=settings.repeat_action_probability,
        episode_time_limit_s=settings.episode_time_limit_s,
        resume_countdown_s=settings.resume_countdown_s,
        end_grace_s=settings.end_grace_s,
        audio_format=settings.audio_format,
        slow_rtt_ms=settings.slow_rtt_ms,
        slow_for_s=settings.slow_for_s,
        drop_after_slow_s=settings.drop_after_slow_s,
        end_upload_max_s=settings.end_upload_max_s,
        reconnect_grace_s=settings.reconnect_grace_s,
    )
    pool = EmulatorPool(settings.repeat_action_probability)
    state = ServerState(settings, store, Registry(settings.max_demonstrators), pool, runtime, loop_config, spool)
    participants = Participants(spool.study_dir)
    state.flow = StudyFlow(
        settings.study_config(), participants, settings.games[0], state.next_game, settings.episode_time_limit_s
    )
    state.storage = StoreHealth(spool.probe_path())
    app.extensions["atari"] = state

    from .web import admin, pages, replay
    from .web.sockets import GameNamespace

    pages.init_app(app)
    admin.init_app(app)
    replay.init_app(app)  # the replay page and its API
    socketio.on_namespace(GameNamespace(state, socketio.server.disconnect, socketio.start_background_task))
    return app, socketio


def start_background(app: Flask) -> None:
    """Before serving (once): close what a killed server left open, load the ROMs, start the flusher and the ticker."""
    state: ServerState = app.extensions["atari"]
    if state.started:
        return
    state.started = True
    state.recovered = state.spool.recover_interrupted()
    if state.recovered:
        log.warning(
            "closed %d trajectories left open by a killed server as interrupted: %s",
            len(state.recovered),
            ", ".join(state.recovered),
        )
    state.spool.remove_abandoned()  # unrecorded practice rounds of a crash (not another process's)
    roms = [resolve_game(name).rom for name in dict.fromkeys(state.settings.games)]
    for rom in roms:
        state.pool.preload(rom)
    preload = state.settings.preload_emulators
    _preload(state.pool, roms, state.registry.max if preload is None else preload)
    socketio.start_background_task(_flusher, state)
    socketio.start_background_task(_publisher, state)
    ticker = state.runtime.ticker
    assert ticker is not None  # Runtime makes one
    socketio.start_background_task(ticker.run, socketio.sleep)  # every game's ticks


def _preload(pool: EmulatorPool, roms: list[str], per_game: int) -> None:
    """Loads emulators for every game until each has `per_game` (the admission limit): a ROM load holds the GIL about
    90 ms, so a burst of starts that each loaded one froze every game of the process (20 at once: 2 s). This runs
    before the server listens, so no game waits for it (31 loads took 4.0 s here); an emulator is about 0.7 MB. With
    sticky actions every reset loads the ROM again anyway (EmulatorSession.reset)."""
    t0, loaded = time.monotonic(), 0
    more = True
    while more:
        more = False
        for rom in roms:
            if pool.top_up(rom, per_game):
                loaded += 1
                more = True
    if loaded:
        log.info("%d emulators preloaded in %.1f s (%d per game)", loaded, time.monotonic() - t0, per_game)


def _flusher(state: ServerState) -> None:
    """Writes buffered rows of every open trajectory through to its files twice a second, one writer at a time
    spread over the half second: flushing them all at once stalled every game for the whole batch (with 32
    demonstrators that alone put the p99 frame interval at 30 ms instead of 20 ms)."""
    while True:
        demonstrators = list(state.registry.by_token.values())
        if not demonstrators:
            socketio.sleep(0.5)
            continue
        pause = 0.5 / len(demonstrators)
        for d in demonstrators:
            socketio.sleep(pause)
            w = d.writer
            if w is not None and not w.closed and w.failed is None:
                try:
                    w.flush()
                except OSError as e:  # a full disk, a read-only file system, a quota: that episode ends (one log line)
                    d.storage_failed(e)


#: How often each process rewrites its live file in the spool (the monitor polls every 2 s).
PUBLISH_S = 1.5


def _publisher(state: ServerState) -> None:
    """Publishes this process's live participants in the spool, for the monitor of every process sharing it."""
    while True:
        try:
            snap = snapshot(state.process_id, state.live, list(state.registry.by_token.values()))
            # the write (about 0.8 ms with 32 demonstrators) in a worker thread, like an episode's close
            state.runtime.run_blocking(state.spool.publish_live, state.process_id, snap)
        except OSError as e:  # a full disk: the monitor shows this process's own participants only meanwhile
            log.debug("could not publish the live participants: %s", e)
        except Exception:  # noqa: BLE001 - the monitor's bookkeeping must never end this loop
            log.exception("publishing the live participants failed")
        socketio.sleep(PUBLISH_S)
