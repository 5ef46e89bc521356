"""The eventlet fast path: every patch of a library's private internals, behind one `install(socketio, ...)`.

`install` returns the game loop's sender. Under eventlet, with the fast path on (`Settings.fast_path`, FAST_PATH,
`--no-fast-path`) and the library versions it was written against (WRITTEN_AGAINST, pinned in requirements.txt),
that is a `DirectSender`; otherwise the plain `transport.Sender` (python-socketio's public API), with one log line
saying why. Either way the bytes on the wire are the same, and a congested client has its frames dropped without
the game ever waiting (see transport.py).

Every patch of a library's private internals lives in this package, one kind of patch a module, and is installed
only through `install()` (and `cap_message_size`, which it calls), after the version checks here:

- writing.py: `DirectSender`, events written straight to eventlet's WebSocket; `FrameBatch`, the frames of one pass
  of the hub written together; `write_now`, never waiting for a client (the why, with its measurements, is there).
- reading.py: `refuse_permessage_deflate`, `fast_unmask`, `remember_websockets` with `ReadAhead`, and the WebSocket
  message size caps.
- guards.py: `guard_reserved_events` and `count_every_packet`, installed on every path (they are not speed tricks).

tests/test_fastpath.py checks that the patched libraries still have the shapes this package was written against.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..rfc6455 import unmask
from ..transport import Sender
from .guards import count_every_packet, guard_reserved_events
from .reading import (
    ReadAhead,
    cap_eventlet_messages,
    cap_simple_websocket_messages,
    fast_unmask,
    refuse_permessage_deflate,
    remember_websockets,
)
from .writing import DirectSender, FrameBatch, frame_packer, write_frame, write_now

__all__ = [
    "SIMPLE_WEBSOCKET",
    "WRITTEN_AGAINST",
    "DirectSender",
    "FrameBatch",
    "ReadAhead",
    "cap_message_size",
    "count_every_packet",
    "fast_unmask",
    "frame_packer",
    "guard_reserved_events",
    "install",
    "installed_versions",
    "installed_versions_of",
    "refuse_permessage_deflate",
    "remember_websockets",
    "unmask",
    "version_mismatches",
    "write_frame",
    "write_now",
]

log = logging.getLogger(__name__)

#: The library versions (pinned in requirements.txt) whose private internals this package patches.
WRITTEN_AGAINST = {"python-engineio": "4.15.1", "python-socketio": "5.18.1", "eventlet": "0.41.3"}


def installed_versions() -> dict[str, str | None]:
    """The installed version of each library in WRITTEN_AGAINST (None if it is not installed)."""
    return installed_versions_of(WRITTEN_AGAINST)


def version_mismatches(versions: Mapping[str, str | None] | None = None) -> list[str]:
    """`name installed (written against v)` for each library whose installed version differs; [] if none does."""
    versions = installed_versions() if versions is None else versions
    return [
        f"{name} {versions.get(name) or 'missing'} (written against {want})"
        for name, want in WRITTEN_AGAINST.items()
        if versions.get(name) != want
    ]


def install(
    socketio,
    async_mode: str,
    enabled: bool = True,
    versions: Mapping[str, str | None] | None = None,
    max_message_bytes: int | None = None,
) -> Sender:
    """Install the patches and return the game loop's sender (`send(event, sid, data, on_drop=None) -> bool` with
    `flush_frames()`). The fast path needs eventlet, `enabled`, and the versions in WRITTEN_AGAINST (`versions`:
    the installed ones unless given); otherwise the plain path, with one log line saying why. Idempotent; the patches
    of a class stay for the life of the process.

    The guards are installed on every path (they are not speed tricks): reserved event names are dropped; with
    `max_message_bytes`, a WebSocket message is refused once its fragments add up to more (`cap_message_size`); and
    when the server has a connection guard (server/web/guard.py), every Engine.IO packet is counted
    (`count_every_packet`)."""
    mismatched = version_mismatches(versions)
    if not any(m.startswith("python-socketio ") for m in mismatched):
        guard_reserved_events(socketio.server)
    eio = socketio.server.eio
    if max_message_bytes is not None:
        cap_message_size(eio, async_mode, max_message_bytes, versions)
    guard = getattr(eio, "connection_guard", None)
    if guard is not None:
        if any(m.startswith("python-engineio ") for m in mismatched):
            log.warning("the connection guard counts Socket.IO messages only: %s", ", ".join(mismatched))
        else:
            count_every_packet()
            guard.counts_packets = True
    if async_mode != "eventlet":
        log.info("frames go the plain way (python-socketio's emit): the fast path is for eventlet, not %s", async_mode)
        return Sender(socketio)
    if not enabled:
        log.info("frames go the plain way (python-socketio's emit): the fast path is off (FAST_PATH, --no-fast-path)")
        return Sender(socketio)
    if mismatched:
        log.warning(
            "frames go the plain way (python-socketio's emit): fast path not installed for %s", ", ".join(mismatched)
        )
        return Sender(socketio)
    refuse_permessage_deflate()
    fast_unmask()
    remember_websockets()
    return DirectSender(socketio)


# --- the WebSocket's message size, on every async mode ------------------------------------------------------------
def cap_message_size(eio, async_mode: str, max_bytes: int, versions: Mapping[str, str | None] | None = None) -> None:
    """Refuse (close with 1009, which closes the Engine.IO connection) a WebSocket message larger than `max_bytes`
    once its fragments add up to more, before the rest is read. Python-engineio checks `max_http_buffer_size` only
    on the whole message, after the WebSocket has joined every continuation frame in memory (six clients sending
    fragmented 150 MB messages held 867 MB); eventlet limits each frame (to the same size), not their sum.

    Under eventlet it wraps `RFC6455WebSocket.Message.push` (a message's parts, as they are read); under gevent and
    threading (simple-websocket, whose `max_message_size` option python-engineio does not pass) it passes that
    option through the driver's WebSocket class. Version-checked; a mismatch logs one warning and leaves the libraries
    alone (each frame is still limited)."""
    if versions is None:
        versions = installed_versions_of(("eventlet", "simple-websocket", "python-engineio"))
    if async_mode == "eventlet":
        if versions.get("eventlet") != WRITTEN_AGAINST["eventlet"]:
            log.warning("WebSocket messages are limited per frame only: eventlet %s", versions.get("eventlet"))
            return
        cap_eventlet_messages(max_bytes)
        return
    want = {"simple-websocket": SIMPLE_WEBSOCKET, "python-engineio": WRITTEN_AGAINST["python-engineio"]}
    if any(versions.get(k, v) != v for k, v in want.items()):
        log.warning("WebSocket messages are not limited before they are joined: %s", versions)
        return
    cap_simple_websocket_messages(eio, max_bytes)


#: The simple-websocket version (gevent and threading's WebSocket) `cap_message_size` was written against.
SIMPLE_WEBSOCKET = "1.1.0"


def installed_versions_of(names) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
