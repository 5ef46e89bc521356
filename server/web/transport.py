"""How the server's events reach a browser: the plain path, `Sender(socketio)`, the game loop's
`send(event, sid, data, on_drop=None)` through python-socketio's public API only.

It is the reference for every async mode (eventlet with the fast path off, gevent, threading); the fast path
(server/web/fastpath/, eventlet only) writes the same bytes another way. The bytes on the wire are ordinary
Socket.IO v5 / Engine.IO v4 messages either way.

A frame is two Engine.IO messages (the Socket.IO header, then the binary attachment); its header is pre-built once
and both are queued with `send_packet`. Every other event goes through `socketio.emit`. Queuing never waits for the
client, so the game never waits; a congested client's frames are not queued without bound either: the game skips
sending frames (and `hud`) to a client whose paint acks lag too far behind, and caps the frames' bytes at what a
bottlenecked downlink delivers (server/core/connection.py, "Flow control"), on every path.
"""

from __future__ import annotations

from collections.abc import Callable

#: Events sent only if the socket takes them at once (the next one supersedes them), like frames: the score line.
BEST_EFFORT = frozenset({"hud"})
#: Socket.IO's header for a binary `frame` event with one attachment; it never changes.
FRAME_HEADER = '51-["frame",{"_placeholder":true,"num":0}]'


class Sender:
    """`send(event, sid, data, on_drop=None) -> bool` for the game loop. A frame that is not delivered (nobody is
    there) calls `on_drop()`; any event returns False if nobody is there. `flush_frames()` writes the frames held
    so far (the plain path holds none)."""

    def __init__(self, socketio) -> None:
        from engineio import packet as eio_packet

        self.socketio = socketio
        self.server = socketio.server
        self.eio = self.server.eio
        self.frame_header = eio_packet.Packet(eio_packet.MESSAGE, FRAME_HEADER)

    def __call__(self, event: str, sid: str, data: object, on_drop: Callable[[], None] | None = None) -> bool:
        eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            if on_drop is not None:
                on_drop()
            return False
        return self.deliver(event, sid, eio_sid, data, on_drop)

    def deliver(self, event: str, sid: str, eio_sid: str, data: object, on_drop: Callable[[], None] | None) -> bool:
        """Queue the event on python-engineio's queue for the client (never waits)."""
        if event == "frame":
            from engineio import packet as eio_packet

            self.eio.send_packet(eio_sid, self.frame_header)
            self.eio.send_packet(eio_sid, eio_packet.Packet(eio_packet.MESSAGE, data))
            return True
        self.socketio.emit(event, data, to=sid)
        return True

    def flush_frames(self) -> None:
        """Write the frames held so far (the Ticker's long passes write as they go); the plain path holds none."""
