"""The guards: patches of private methods that are not speed tricks, installed on every path by `install()`.

Not a speed trick, but a patch of a private method all the same, so it lives here and is installed on every path:
`guard_reserved_events()` wraps python-socketio's `Server._handle_event` to drop client events named connect or
disconnect. `count_every_packet()` wraps python-engineio's `Socket.receive` so that the connection guard
(server/web/guard.py) counts every Engine.IO packet a client sends.
"""

from __future__ import annotations

import logging

#: The package's logger, as before the split: one name for every fast-path log line.
log = logging.getLogger(__package__)


# --- python-socketio --------------------------------------------------------------------------------------------
def guard_reserved_events(server) -> None:
    """A client may send an event *named* connect or disconnect; python-socketio would hand it to the real connect
    and disconnect handlers with shifted arguments (found by tests/test_fuzz.py). Such events are dropped
    (idempotent; wraps `server._handle_event`)."""
    original = server._handle_event
    if getattr(original, "guards_reserved_events", False):
        return

    def guarded(eio_sid, namespace, id, data):
        if isinstance(data, list) and data and data[0] in ("connect", "disconnect", "connect_error"):
            log.info("dropped a client event named %r", data[0])
            return None
        return original(eio_sid, namespace, id, data)

    guarded.guards_reserved_events = True  # type: ignore[attr-defined]
    server._handle_event = guarded


# --- python-engineio: every packet counted ----------------------------------------------------------------------
def count_every_packet() -> None:
    """Every Engine.IO packet a client sends (a Socket.IO message, an attachment, a ping, an upgrade, ...) goes
    through its server's connection guard (`eio.connection_guard.admit`, server/web/guard.py) before python-engineio
    handles it; a packet the guard refuses is dropped. Wraps `engineio.socket.Socket.receive` (idempotent)."""
    from engineio import exceptions as eio_exceptions
    from engineio import socket as eio_socket

    original = eio_socket.Socket.receive
    if getattr(original, "counts_packets", False):
        return

    def receive(self, pkt):
        guard = getattr(self.server, "connection_guard", None)
        if self.closed or (guard is not None and not guard.admit(self.sid)):
            # ends python-engineio's read loop for this client now (it closes the connection after writing what is
            # queued, the `error` included); dropping the packets instead kept reading a client that never stops
            raise eio_exceptions.SocketIsClosedError()
        return original(self, pkt)

    receive.counts_packets = True  # type: ignore[attr-defined]
    eio_socket.Socket.receive = receive
