"""How the server's events reach a browser: `make_sender(socketio)` gives the game loop its `send(event, sid, data)`.

The bytes on the wire are ordinary Socket.IO v5 / Engine.IO v4 WebSocket messages; what differs is the path:

- Under eventlet, an event goes straight to the client's WebSocket from the task that sends it: its Engine.IO
  messages are packed into one buffer and written with one `send()` under the WebSocket's own send lock (the lock
  Engine.IO's writer task takes too, so whole messages never interleave). Python-engineio would instead put each
  message on the client's queue and wake that client's writer task, which writes them one system call each: with a
  frame being two messages (the Socket.IO header, then the binary attachment) that was 2 queue hand-offs, 2 task
  switches, a timer and 2 system calls per frame, about a tenth of the server's time per demonstrator.
- A frame (or the score line, `hud`) is never allowed to stall the game. If the client's socket buffer is full (a slow
  or congested link), the frame is dropped (`send` returns False) and the game carries on at 60 Hz; the codec then
  encodes the next frame against the last one the client received, so no keyframe is needed. The recording is not
  affected: every frame is logged; a dropped one simply gets no paint ack (its `display_ms` is interpolated).
- Everything else (Engine.IO's pings, Socket.IO acks, any client still on HTTP long-polling, other async modes)
  goes through python-engineio's queue as usual. For those, a frame's two messages are pre-built once.

Frames produced in one pass of eventlet's hub over its due timers (the game loops whose tick is due) are written
together at the end of that pass (`FrameBatch`), not one by one between ticks: each write to a local peer (the load
generator, nginx) wakes it, and back-to-back writes share that wake-up. Under load, when ticks queue up behind one
another, that saved about a tenth of the server's CPU; with one tick per pass nothing changes. A long pass of the
Ticker writes what it holds every few games (`send.flush_frames`), so no frame waits long for the rest of its pass.
A frame sent outside such a pass (a resume's keyframe) is written at once, and any other event first writes the
frames held before it.

Nothing the game loop sends ever waits for a client (the Ticker steps every game of the process from one task, so a
wait for one congested client would stall them all): a frame or `hud` the client has no room for is dropped, the rest
of a message the socket took only part of is written by a green thread of its own, and an event that must arrive
(`audio_status`, sent from inside a pass) goes from a green thread of its own after that pass's frames.

`no_permessage_deflate()` turns off eventlet's WebSocket compression: frames are zlib already and speech is PCM that
hardly compresses, so deflating every message both ways cost CPU for nothing (browsers offer it, and eventlet accepts
at level 6).

Python-engineio keeps the WebSocket object local to its handler; `remember_websockets()` wraps that handler (a
private method, checked by tests/test_server.py) to keep a reference on the Engine.IO socket while it is open.

Reading, eventlet's WebSocket asks its socket for each part of a message separately (2 header bytes, the length,
the 4-byte mask, the payload), and a Socket.IO event with a binary attachment is two messages: about ten `recv`
system calls for one microphone chunk. `ReadAhead` (installed on each WebSocket by the same wrapper) reads whatever
has arrived in one call and hands it out in the pieces asked for.
"""

from __future__ import annotations

import functools
import logging
import struct

log = logging.getLogger(__name__)

#: Events sent only if the socket takes them at once (the next one supersedes them), like frames: the score line.
BEST_EFFORT = frozenset({"hud"})
#: Socket.IO's header for a binary `frame` event with one attachment; it never changes.
FRAME_HEADER = '51-["frame",{"_placeholder":true,"num":0}]'


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

    handler.remembers_ws = True
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


def no_permessage_deflate() -> None:
    """Refuse the permessage-deflate WebSocket extension under eventlet (a private method, checked by a test)."""
    from eventlet.websocket import WebSocketWSGI

    WebSocketWSGI._negotiate_permessage_deflate = lambda self, extensions: None


def _direct_websocket(eio_server, eio_sid):
    """The client's WebSocket if events may be written to it directly (eventlet's, connected, upgrade done)."""
    sock = eio_server.sockets.get(eio_sid)
    ws = getattr(sock, "ws", None) if sock is not None else None
    if ws is None or sock.closed or not sock.upgraded or sock.upgrading or not hasattr(ws, "_sendlock"):
        return None
    return ws


class FrameBatch:
    """Frames held during a pass of the hub over its due timers, written when the pass ends (`flush`)."""

    def __init__(self) -> None:
        self.active = False
        self._items: list = []  # (ws, pack, on_drop)
        self._sockets: set[int] = set()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, ws, pack, on_drop) -> None:
        if id(ws) in self._sockets:  # a second frame for one client (a game catching up): the first goes now
            self.flush()
        self._items.append((ws, pack, on_drop))
        self._sockets.add(id(ws))

    def flush(self) -> None:
        items, self._items = self._items, []
        self._sockets.clear()
        for ws, pack, on_drop in items:
            try:
                written = write_now(ws, pack)
            except OSError:  # the connection is going away; its disconnect handler pauses the game
                written = False
            if not written and on_drop is not None:
                on_drop()

    def around_timers(self, hub) -> None:
        """Hold frames while `hub` fires its due timers, and write them when it is done (idempotent).

        The writing runs in a green thread of its own, as a timer's callback would: the hub's own loop must never
        raise or wait (`write_now` does not wait: it drops a frame the client has no room for, and hands the rest of
        one the socket took only part of to a green thread of its own)."""
        import greenlet

        original = hub.fire_timers
        if getattr(original, "frame_batch", None) is self:
            return

        def flush_logged():
            try:
                self.flush()
            except Exception:  # never into the hub's loop
                log.exception("writing a batch of frames failed")

        def fire_timers(when):
            self.active = True
            try:
                return original(when)
            finally:
                self.active = False
                if self._items:
                    greenlet.greenlet(flush_logged, parent=hub.greenlet).switch()

        fire_timers.frame_batch = self  # another batch (another sender in this process) wraps this one in turn
        hub.fire_timers = fire_timers


def make_sender(socketio, direct: bool = True):
    """`send(event, sid, data, on_drop=None) -> bool` for the game loop. A frame that is not delivered (the client's
    link is congested, or nobody is there) calls `on_drop()`, at once or when its batch is written; other events
    return False if nobody is there. `send.flush_frames()` writes the frames held so far."""
    from engineio import packet as eio_packet
    from socketio import packet as sio_packet

    server = socketio.server
    eio = server.eio
    frame_header = eio_packet.Packet(eio_packet.MESSAGE, FRAME_HEADER)
    batch = FrameBatch()
    if direct:
        from eventlet.hubs import get_hub

        batch.around_timers(get_hub())

    def engineio_messages(event: str, data: object) -> list:
        encoded = server.packet_class(sio_packet.EVENT, namespace="/", data=[event, data]).encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, p).encode() for p in parts]

    def send_direct(ws, event: str, data: object, on_drop) -> bool:
        if event == "frame":
            if batch.active:
                batch.add(ws, frame_packer(ws, frame_header, data), on_drop)
                return True
            if write_frame(ws, frame_header, data):
                return True
            if on_drop is not None:
                on_drop()
            return False
        messages = engineio_messages(event, data)
        if event not in BEST_EFFORT and batch.active:
            # An event that must arrive, sent from inside a pass of the game loop (the Ticker), which must never wait
            # for one client's room: it goes from a green thread of its own, which runs after this pass's frames.
            from eventlet import spawn_n

            spawn_n(send_or_log, ws, event, messages)
            return True
        if len(batch):
            batch.flush()  # the frames held so far go first: events arrive in the order they were sent
        if event in BEST_EFFORT:
            return write_now(ws, lambda: b"".join(ws._pack_message(m) for m in messages))
        return write_blocking(ws, messages)

    def send_or_log(ws, event: str, messages: list) -> None:
        try:
            write_blocking(ws, messages)
        except OSError as e:  # the connection is going away; its disconnect handler pauses the game
            log.debug("sending %s failed: %s", event, e)

    def write_blocking(ws, messages: list) -> bool:
        lock = ws._sendlock
        lock.acquire()  # any other event must arrive: wait for room if need be
        try:  # packed under the lock: with permessage-deflate, packing order is wire order
            ws.socket.sendall(b"".join(ws._pack_message(m) for m in messages))
        finally:
            lock.release()
        return True

    def send(event: str, sid: str, data: object, on_drop=None) -> bool:
        eio_sid = server.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            if on_drop is not None:
                on_drop()
            return False
        ws = _direct_websocket(eio, eio_sid) if direct else None
        if ws is not None:
            try:
                return send_direct(ws, event, data, on_drop)
            except OSError as e:  # the connection is going away; its disconnect handler pauses the game
                log.debug("send to %s failed: %s", sid, e)
                if event == "frame" and on_drop is not None:
                    on_drop()
                return False
        if event == "frame":
            eio.send_packet(eio_sid, frame_header)
            eio.send_packet(eio_sid, eio_packet.Packet(eio_packet.MESSAGE, data))
            return True
        socketio.emit(event, data, to=sid)
        return True

    send.flush_frames = lambda: batch.flush() if len(batch) else None  # the Ticker's long passes write as they go
    return send


def write_frame(ws, header, data: bytes) -> bool:
    """Write one frame event (its Socket.IO header and binary attachment) to eventlet's WebSocket `ws` now, or not at
    all: False if the socket is busy or its buffer is full. Never waits for the client."""
    return write_now(ws, frame_packer(ws, header, data))


_LEN16, _LEN64 = struct.Struct("!BBH"), struct.Struct("!BBQ")


def ws_message(payload: bytes, opcode: int = 2) -> bytes:
    """`payload` as one final, unmasked, uncompressed WebSocket message (RFC 6455 5.2; opcode 1 text, 2 binary):
    what eventlet's `_pack_message` makes of it without permessage-deflate, without its generic checks."""
    first, n = 0x80 | opcode, len(payload)
    if n <= 125:
        return bytes((first, n)) + payload
    if n <= 0xFFFF:
        return _LEN16.pack(first, 126, n) + payload
    return _LEN64.pack(first, 127, n) + payload


@functools.lru_cache(maxsize=16)
def _text_message(text: str) -> bytes:
    """A text message packed once: a frame's Socket.IO header never changes."""
    return ws_message(text.encode(), opcode=1)


def frame_packer(ws, header, data: bytes):
    """What `write_now` writes for one frame event: its Socket.IO header and binary attachment as WebSocket messages."""

    def pack() -> bytes:
        if ws.extensions.get("permessage-deflate"):  # packing compresses: eventlet's own, every time, in order
            return ws._pack_message(header.encode()) + ws._pack_message(data)
        return _text_message(header.encode()) + ws_message(data)

    return pack


def write_now(ws, pack) -> bool:
    """Write the WebSocket messages `pack()` returns if the socket takes them now; False (nothing written) if another
    task is writing or the client's buffer is full. Never waits: if the socket takes only part, the rest is written by
    a green thread of its own, which holds the send lock until it is done. `pack` runs under the send lock: with
    permessage-deflate, packing order is wire order."""
    lock = ws._sendlock
    if not lock.acquire(blocking=False):
        return False
    finishing = False
    try:
        buf = pack()
        sent = _send_some(ws, buf)
        if sent == 0 and not ws.extensions.get("permessage-deflate"):
            return False  # the client's socket buffer is full: drop it, never stall the game
        if sent < len(buf):  # part of it went (or the compressor took it): the rest must follow, but not from here
            _finish_later(ws, buf[sent:], lock)
            finishing = True
        return True
    finally:
        if not finishing:
            lock.release()


def _finish_later(ws, rest: bytes, lock) -> None:
    """Write the rest of a message in a green thread of its own, which waits for the client's room and then releases
    the send lock: the caller (the game loop, or the writer of a batch of frames for many clients) goes on."""
    from eventlet import spawn_n

    def finish() -> None:
        try:
            ws.socket.sendall(rest)
        except OSError as e:  # the connection is going away; its disconnect handler pauses the game
            log.debug("finishing a message failed: %s", e)
        finally:
            lock.release()

    spawn_n(finish)


def _send_some(ws, buf: bytes) -> int:
    """Write what the socket takes now without waiting; returns the number of bytes written (0 if none)."""
    try:
        return ws.socket.fd.send(buf)
    except BlockingIOError:
        return 0
