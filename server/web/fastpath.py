"""The eventlet fast path: every patch of a library's private internals, behind one `install(socketio, ...)`.

`install` returns the game loop's sender. Under eventlet, with the fast path on (`Settings.fast_path`, FAST_PATH,
`--no-fast-path`) and the library versions it was written against (WRITTEN_AGAINST, pinned in requirements.txt),
that is a `DirectSender`; otherwise the plain `transport.Sender` (python-socketio's public API), with one log line
saying why. Either way the bytes on the wire are the same, and a congested client has its frames dropped without
the game ever waiting (see transport.py).

What the fast path patches, and why:

- Under eventlet, an event goes straight to the client's WebSocket from the task that sends it: its Engine.IO
  messages are packed into one buffer and written with one `send()` under the WebSocket's own send lock
  (`ws._sendlock`, the lock Engine.IO's writer task takes too, so whole messages never interleave; packed as
  `ws._pack_message` packs them). Python-engineio would instead put each message on the client's queue and wake that
  client's writer task, which writes them one system call each: with a frame being two messages (the Socket.IO
  header, then the binary attachment) that was 2 queue hand-offs, 2 task switches, a timer and 2 system calls per
  frame, about a tenth of the server's time per demonstrator.
- A frame (or the score line, `hud`) is never allowed to stall the game. If the client's socket buffer is full (a slow
  or congested link), the frame is dropped (`send` returns False) and the game carries on at 60 Hz; the codec then
  encodes the next frame against the last one the client received, so no keyframe is needed. The recording is not
  affected: every frame is logged; a dropped one simply gets no paint ack (its `display_ms` is interpolated).
- Everything else (Engine.IO's pings, Socket.IO acks, any client still on HTTP long-polling) goes through
  python-engineio's queue as usual (the plain path).

Frames produced in one pass of eventlet's hub over its due timers (the game loops whose tick is due) are written
together at the end of that pass (`FrameBatch`, which wraps the hub's `fire_timers`), not one by one between ticks:
each write to a local peer (the load generator, nginx) wakes it, and back-to-back writes share that wake-up. Under
load, when ticks queue up behind one another, that saved about a tenth of the server's CPU; with one tick per pass
nothing changes. A long pass of the Ticker writes what it holds every few games (`send.flush_frames`), so no frame
waits long for the rest of its pass. A frame sent outside such a pass (a resume's keyframe) is written at once, and
any other event first writes the frames held before it.

Nothing the game loop sends ever waits for a client (the Ticker steps every game of the process from one task, so a
wait for one congested client would stall them all): a frame or `hud` the client has no room for is dropped, the rest
of a message the socket took only part of is written by a green thread of its own, and an event that must arrive
(`audio_status`, sent from inside a pass) goes from a green thread of its own after that pass's frames.

`refuse_permessage_deflate()` turns off eventlet's WebSocket compression
(`WebSocketWSGI._negotiate_permessage_deflate`): frames are zlib already and speech is PCM that hardly compresses, so
deflating every message both ways cost CPU for nothing (browsers offer it, and eventlet accepts at level 6).

`fast_unmask()` replaces `RFC6455WebSocket._apply_mask`: eventlet unmasks every byte a client sends with a Python
generator: 2.4 ms (more under load) for each 100 ms microphone chunk, most of the server's time once demonstrators
talk. The same XOR, done on whole arrays (`rfc6455.unmask`).

Python-engineio keeps the WebSocket object local to its handler; `remember_websockets()` wraps that handler
(`Socket._websocket_handler`) to keep a reference on the Engine.IO socket while it is open.

Reading, eventlet's WebSocket asks its socket for each part of a message separately (2 header bytes, the length,
the 4-byte mask, the payload), and a Socket.IO event with a binary attachment is two messages: about ten `recv`
system calls for one microphone chunk. `ReadAhead` (installed on each WebSocket by the same wrapper) reads whatever
has arrived in one call and hands it out in the pieces asked for.

Not a speed trick, but a patch of a private method all the same, so it lives here and is installed on every path:
`guard_reserved_events()` wraps python-socketio's `Server._handle_event` to drop client events named connect or
disconnect.

tests/test_fastpath.py checks that the patched libraries still have the shapes this module was written against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from .rfc6455 import text_message, unmask, ws_message
from .transport import BEST_EFFORT, Sender

log = logging.getLogger(__name__)

#: The library versions (pinned in requirements.txt) whose private internals this module patches.
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
        _cap_eventlet_messages(max_bytes)
        return
    want = {"simple-websocket": SIMPLE_WEBSOCKET, "python-engineio": WRITTEN_AGAINST["python-engineio"]}
    if any(versions.get(k, v) != v for k, v in want.items()):
        log.warning("WebSocket messages are not limited before they are joined: %s", versions)
        return
    _cap_simple_websocket_messages(eio, max_bytes)


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


def _cap_eventlet_messages(max_bytes: int) -> None:
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


def _cap_simple_websocket_messages(eio, max_bytes: int) -> None:
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


# --- eventlet's WebSocket: writing ------------------------------------------------------------------------------
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

        fire_timers.frame_batch = self  # type: ignore[attr-defined]  # another sender in this process wraps this one
        hub.fire_timers = fire_timers


class DirectSender(Sender):
    """The plain `Sender`, but events for a client on eventlet's WebSocket are written straight to it (see the
    module's docstring); a frame that is not delivered calls `on_drop()`, at once or when its batch is written.
    `flush_frames()` writes the frames held so far."""

    def __init__(self, socketio) -> None:
        from eventlet.hubs import get_hub

        super().__init__(socketio)
        self.batch = FrameBatch()
        self.batch.around_timers(get_hub())

    def deliver(self, event: str, sid: str, eio_sid: str, data: object, on_drop: Callable[[], None] | None) -> bool:
        ws = _direct_websocket(self.eio, eio_sid)
        if ws is None:
            return super().deliver(event, sid, eio_sid, data, on_drop)
        try:
            return self.send_direct(ws, event, data, on_drop)
        except OSError as e:  # the connection is going away; its disconnect handler pauses the game
            log.debug("send to %s failed: %s", sid, e)
            if event == "frame" and on_drop is not None:
                on_drop()
            return False

    def flush_frames(self) -> None:
        if len(self.batch):
            self.batch.flush()

    def engineio_messages(self, event: str, data: object) -> list:
        from engineio import packet as eio_packet
        from socketio import packet as sio_packet

        encoded = self.server.packet_class(sio_packet.EVENT, namespace="/", data=[event, data]).encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, p).encode() for p in parts]

    def send_direct(self, ws, event: str, data, on_drop) -> bool:
        batch = self.batch
        if event == "frame":
            if batch.active:
                batch.add(ws, frame_packer(ws, self.frame_header, data), on_drop)
                return True
            if write_frame(ws, self.frame_header, data):
                return True
            if on_drop is not None:
                on_drop()
            return False
        messages = self.engineio_messages(event, data)
        if event not in BEST_EFFORT and batch.active:
            # An event that must arrive, sent from inside a pass of the game loop (the Ticker), which must never wait
            # for one client's room: it goes from a green thread of its own, which runs after this pass's frames.
            from eventlet import spawn_n

            spawn_n(_send_or_log, ws, event, messages)
            return True
        if len(batch):
            batch.flush()  # the frames held so far go first: events arrive in the order they were sent
        if event in BEST_EFFORT:
            return write_now(ws, lambda: b"".join(ws._pack_message(m) for m in messages))
        return _write_blocking(ws, messages)


def _send_or_log(ws, event: str, messages: list) -> None:
    try:
        _write_blocking(ws, messages)
    except OSError as e:  # the connection is going away; its disconnect handler pauses the game
        log.debug("sending %s failed: %s", event, e)


def _write_blocking(ws, messages: list) -> bool:
    lock = ws._sendlock
    lock.acquire()  # any other event must arrive: wait for room if need be
    try:  # packed under the lock: with permessage-deflate, packing order is wire order
        ws.socket.sendall(b"".join(ws._pack_message(m) for m in messages))
    finally:
        lock.release()
    return True


def write_frame(ws, header, data: bytes) -> bool:
    """Write one frame event (its Socket.IO header and binary attachment) to eventlet's WebSocket `ws` now, or not at
    all: False if the socket is busy or its buffer is full. Never waits for the client."""
    return write_now(ws, frame_packer(ws, header, data))


def frame_packer(ws, header, data: bytes):
    """What `write_now` writes for one frame event: its Socket.IO header and binary attachment as WebSocket messages."""

    def pack() -> bytes:
        if ws.extensions.get("permessage-deflate"):  # packing compresses: eventlet's own, every time, in order
            return ws._pack_message(header.encode()) + ws._pack_message(data)
        return text_message(header.encode()) + ws_message(data)

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
