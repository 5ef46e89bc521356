"""Eventlet's WebSocket, reading: the handshake, unmasking, reading ahead, and the message size caps.

`refuse_permessage_deflate()` turns off eventlet's WebSocket compression
(`WebSocketWSGI._negotiate_permessage_deflate`): frames are zlib already and speech is PCM that hardly compresses, so
deflating every message both ways cost CPU for nothing (browsers offer it, and eventlet accepts at level 6).

`fast_unmask()` replaces `RFC6455WebSocket._apply_mask`: eventlet unmasks every byte a client sends with a Python
generator: 2.4 ms (more under load) for each 100 ms microphone chunk, most of the server's time once demonstrators
talk. The same XOR, done on whole arrays (`rfc6455.unmask`).

Python-engineio keeps the WebSocket object local to its handler; `remember_websockets()` wraps that handler
(`Socket._websocket_handler`) to keep a reference on the Engine.IO socket while it is open (the writing side,
writing.py, finds the client's WebSocket there).

Reading, eventlet's WebSocket asks its socket for each part of a message separately (2 header bytes, the length,
the 4-byte mask, the payload), and a Socket.IO event with a binary attachment is two messages: about ten `recv`
system calls for one microphone chunk. `ReadAhead` (installed on each WebSocket by the same wrapper) reads whatever
has arrived in one call and hands it out in the pieces asked for.

The message size caps (`cap_eventlet_messages`, `cap_simple_websocket_messages`) are installed on every async mode by
the package's `cap_message_size`, which checks the versions first (see its docstring for why).
"""

from __future__ import annotations

from ..rfc6455 import unmask


# --- the WebSocket's message size, on every async mode ------------------------------------------------------------
def cap_eventlet_messages(max_bytes: int) -> None:
    """Under eventlet: wrap `RFC6455WebSocket.Message.push` (see `cap_message_size`; idempotent)."""
    from eventlet.websocket import FailedConnectionError, RFC6455WebSocket

    message_class = RFC6455WebSocket.Message
    original = message_class.push
    if getattr(original, "capped", None) == max_bytes:
        return
    original = getattr(original, "uncapped", original)

    def push(self, data, final=False):
        total = getattr(self, "capped_bytes", 0) + len(data)
        self.capped_bytes = total
        if total > max_bytes:
            self.data = []  # what was held goes now, not when the connection is torn down
            raise FailedConnectionError(1009, f"message larger than {max_bytes} bytes")
        return original(self, data, final)

    push.capped = max_bytes  # type: ignore[attr-defined]
    push.uncapped = original  # type: ignore[attr-defined]
    message_class.push = push


def cap_simple_websocket_messages(eio, max_bytes: int) -> None:
    """Under gevent and threading: pass `max_message_size` through the driver's WebSocket class (idempotent)."""
    drivers = eio._async
    base = drivers.get("websocket") if drivers else None
    if base is None or getattr(base, "capped", None) == max_bytes:
        return
    base = getattr(base, "uncapped", base)

    class CappedWebSocket(base):  # type: ignore[misc, valid-type]
        capped = max_bytes
        uncapped = base

        def __init__(self, handler, server):
            super().__init__(handler, server)
            self.server_args["max_message_size"] = max_bytes

    drivers["websocket"] = CappedWebSocket


# --- eventlet's WebSocket: reading ------------------------------------------------------------------------------
def remember_websockets() -> None:
    """Keep each Engine.IO socket's WebSocket as `socket.ws` while its handler runs (idempotent)."""
    from engineio import socket as eio_socket

    original = eio_socket.Socket._websocket_handler
    if getattr(original, "remembers_ws", False):
        return

    def handler(self, ws):
        self.ws = ws
        if _is_eventlet_websocket(ws):
            ws.socket = ReadAhead(ws.socket)
        try:
            return original(self, ws)
        finally:
            self.ws = None

    handler.remembers_ws = True  # type: ignore[attr-defined]
    eio_socket.Socket._websocket_handler = handler


def _is_eventlet_websocket(ws) -> bool:
    sock = getattr(ws, "socket", None)
    return hasattr(ws, "_recv_frame") and hasattr(sock, "recv") and not isinstance(sock, ReadAhead)


class ReadAhead:
    """A socket whose `recv(n)` reads up to `chunk` bytes from the real socket when it has nothing buffered, and
    returns at most `n` of what it holds. Like any `recv`, it may return fewer bytes than asked for (eventlet's
    WebSocket loops until it has a whole part), and it never waits when it holds data. Everything else (sendall,
    fd, close, ...) is the wrapped socket's."""

    __slots__ = ("_sock", "_data", "_pos", "chunk")

    def __init__(self, sock, chunk: int = 65536) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0
        self.chunk = chunk

    def recv(self, n: int) -> bytes:
        if self._pos >= len(self._data):
            data = self._sock.recv(max(n, self.chunk))
            if len(data) <= n:
                return data  # b"" (closed) included; nothing is kept
            self._data, self._pos = data, 0
        start = self._pos
        self._pos = start + n
        return self._data[start : self._pos]

    def __getattr__(self, name):
        return getattr(self._sock, name)


def fast_unmask() -> None:
    """eventlet unmasks every byte a client sends with a Python generator: 2.4 ms (more under load) for each 100 ms
    microphone chunk, most of the server's time once demonstrators talk. The same XOR, done on whole arrays."""
    from eventlet.websocket import RFC6455WebSocket

    RFC6455WebSocket._apply_mask = staticmethod(unmask)


def refuse_permessage_deflate() -> None:
    """Refuse the permessage-deflate WebSocket extension under eventlet (see the module's docstring)."""
    from eventlet.websocket import WebSocketWSGI

    WebSocketWSGI._negotiate_permessage_deflate = lambda self, extensions: None
