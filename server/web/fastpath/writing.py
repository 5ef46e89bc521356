"""Eventlet's WebSocket, writing: `DirectSender`, the game loop's sender on the fast path, and what it writes with.

What it patches, and why:

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..rfc6455 import text_message, ws_message
from ..transport import BEST_EFFORT, Sender

#: The package's logger, as before the split: one name for every fast-path log line.
log = logging.getLogger(__package__)


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
