"""The connection guard: every Engine.IO packet a client sends is counted before python-socketio decodes it.

One client must never hurt another (issue 20). The guard sits below Socket.IO, on the Engine.IO connection:

- **Rate.** Every Engine.IO packet is counted (`admit`): decoded or not, events with reserved names, namespace
  connects (`40`), pings and binary attachments alike (`count_every_packet` in server/web/fastpath/guards.py calls
  `admit` from python-engineio's `Socket.receive`; without it the guard counts the Socket.IO messages it sees). A
  client past `max_messages_per_s` gets one `flood` error and its Engine.IO connection is closed, not just its
  namespace: a re-sent `40` finds nothing to connect to. Its episode waits for a rejoin like after any disconnect.
- **Attachments.** A binary event declares how many attachments follow; python-socketio would wait for (and hold)
  up to 9,999,999,999 of them. More than `max_attachments` closes the connection before any is buffered.
- **Bad packets.** A packet python-socketio cannot decode (`42[`, a wrong type, an attachment nobody announced) used to
  log a traceback each: 5,000 of them wrote 16 MB of log and froze every game for 4.5 s. Now the first of each kind
  from a client is one log line, and the count of the rest is logged when the client leaves.

- **Connection churn.** A client that opens connection after connection, each under the message limit (500 bad
  packets each, hundreds of connections a second), is held back before its packets: every client address has a
  bucket of `CONNECT_BURST_S` seconds' worth of `max_connects_per_s` new connections, refilled at that rate; past it,
  python-engineio answers the handshake 401 (`wrap_connect`), and the browser's Socket.IO client tries again within
  a few seconds. The address is the peer's, or behind a proxy in `--trusted-proxy` the one it appended to
  X-Forwarded-For: without that setting every participant behind the proxy shares one bucket. Why 3 s deep: with
  12 s (120 connections at once) the churn attack of scripts/bench_abuse.py still pushed a bystander's tick p99 to
  29 ms; with 3 s, 23.5 ms (docs/benchmarks.md).

The message size is capped lower still, in the WebSocket itself (fastpath.cap_message_size): a fragmented message is
refused once its parts add up to more than the limit, before the rest is read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Binary attachments the protocol uses in one event (`audio` carries one); a client declaring more is disconnected.
MAX_ATTACHMENTS = 1
#: Exceptions a malformed packet raises inside python-socketio (decoding, reassembly): logged as one line each.
PACKET_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, UnicodeError)


#: How many seconds of `max_connects_per_s` one address may open at once (its bucket's depth).
CONNECT_BURST_S = 3.0
#: Addresses remembered at most; beyond it the full (idle) buckets are forgotten.
MAX_ADDRESSES = 10_000


class ConnectRate:
    """New connections per client address: a token bucket of `burst` connections refilled at `per_s` a second."""

    def __init__(self, per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s, self.burst, self.clock = per_s, burst, clock
        self._buckets: dict[str, list[float]] = {}  # address -> [tokens, when]

    def allow(self, addr: str) -> bool:
        if self.per_s <= 0:
            return True
        now = self.clock()
        b = self._buckets.get(addr)
        if b is None:
            if len(self._buckets) >= MAX_ADDRESSES:
                self._forget_idle(now)
            b = self._buckets[addr] = [self.burst, now]
        b[0], b[1] = min(self.burst, b[0] + (now - b[1]) * self.per_s), now
        if b[0] < 1.0:
            return False
        b[0] -= 1.0
        return True

    def _forget_idle(self, now: float) -> None:
        full = [a for a, (tokens, t) in self._buckets.items() if tokens + (now - t) * self.per_s >= self.burst]
        for a in full:
            del self._buckets[a]


def client_address(environ: dict, trusted_proxies: tuple[str, ...] = ()) -> str:
    """The peer's address; behind a trusted proxy, the client address it appended (X-Forwarded-For's last entry,
    else X-Real-IP). From anyone else those headers are not believed: a client could name a new address each time."""
    peer = str(environ.get("REMOTE_ADDR") or "")
    if peer and peer in trusted_proxies:
        forwarded = [a.strip() for a in str(environ.get("HTTP_X_FORWARDED_FOR") or "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-1]
        real = str(environ.get("HTTP_X_REAL_IP") or "").strip()
        if real:
            return real
    return peer


class FloodLimiter:
    """Counts each client's messages in one-second windows."""

    def __init__(self, per_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.clock = clock
        self._windows: dict[str, list] = {}

    def count(self, sid: str) -> int:
        """Count one message of `sid`; returns how many it has sent in the current second, this one included."""
        now = self.clock()
        w = self._windows.setdefault(sid, [now, 0])
        if now - w[0] >= 1.0:
            w[0], w[1] = now, 0
        w[1] += 1
        return w[1]

    def forget(self, sid: str) -> None:
        self._windows.pop(sid, None)


def declared_attachments(data: object) -> int:
    """The number of binary attachments a Socket.IO packet header announces (`51-[...`: 1); 0 for other packets.
    Parsed as python-socketio parses it (at most 10 digits before the dash)."""
    if not isinstance(data, str) or data[:1] not in ("5", "6"):
        return 0
    dash = data.find("-", 1, 13)
    digits = data[1:dash] if dash > 1 else ""
    return int(digits) if digits.isdigit() else 0


class ConnectionGuard:
    """Counts and checks every Engine.IO packet of every client (see the module's docstring).

    `notify(eio_sid, data)` sends an `error` event to a client (if it has joined the namespace); `close(eio_sid)`
    closes its Engine.IO connection (run in a task of its own: closing waits for the client's writer)."""

    def __init__(
        self,
        per_s: int,
        notify: Callable[[str, dict], Any],
        close: Callable[[str], Any],
        max_attachments: int = MAX_ATTACHMENTS,
        clock: Callable[[], float] = time.monotonic,
        connects_per_s: float = 0.0,
        trusted_proxies: tuple[str, ...] = (),
    ) -> None:
        self.limiter = FloodLimiter(per_s, clock)
        self.connects = ConnectRate(connects_per_s, connects_per_s * CONNECT_BURST_S, clock)
        self.trusted_proxies = tuple(trusted_proxies)
        self.refused_connects: dict[str, int] = {}  # address -> handshakes refused since its last log line
        self.notify = notify
        self._close = close
        self.max_attachments = max_attachments
        self.counts_packets = False  # set when fastpath.count_every_packet calls `admit` for every Engine.IO packet
        self.closing: set[str] = set()
        self.bad: dict[str, dict[str, int]] = {}  # eio_sid -> kind -> bad packets
        self.refused = 0  # connections closed by the guard, since start

    # --- counting -------------------------------------------------------------------------------------------
    def admit(self, eio_sid: str) -> bool:
        """Count one packet of `eio_sid`; False if it must be dropped (over the limit, or its connection is closing)."""
        if eio_sid in self.closing:
            return False
        if self.limiter.count(eio_sid) <= self.limiter.per_s:
            return True
        self.refuse(eio_sid, "flood", "too many messages: this connection is closed")
        return False

    def refuse(self, eio_sid: str, code: str, message: str) -> None:
        """Tell the client why (an `error` with `event` `*`) and close its Engine.IO connection (once)."""
        if eio_sid in self.closing:
            return
        self.closing.add(eio_sid)
        self.refused += 1
        log.warning("client %s: %s; its connection is closed", eio_sid, message)
        try:
            self.notify(eio_sid, {"code": code, "message": message, "event": "*"})
        finally:
            self._close(eio_sid)

    # --- python-engineio's handlers, wrapped ----------------------------------------------------------------
    def wrap_message(self, handle: Callable[[str, object], Any]) -> Callable[[str, object], Any]:
        """The Engine.IO `message` handler around python-socketio's (`handle`)."""

        def on_message(eio_sid: str, data: object) -> Any:
            if not self.counts_packets and not self.admit(eio_sid):
                return None
            if eio_sid in self.closing:
                return None
            if declared_attachments(data) > self.max_attachments:
                self.refuse(
                    eio_sid,
                    "too_many_attachments",
                    f"a message may carry at most {self.max_attachments} binary attachment(s)",
                )
                return None
            try:
                return handle(eio_sid, data)
            except PACKET_ERRORS as e:
                self.bad_packet(eio_sid, e)
            return None

        return on_message

    def wrap_connect(self, handle: Callable[..., Any]) -> Callable[..., Any]:
        """The Engine.IO `connect` handler around python-socketio's: an address past its connection rate is refused
        (False: python-engineio answers the handshake 401), with one log line per address until it is let in again."""

        def on_connect(eio_sid: str, environ: dict, *args: Any) -> Any:
            addr = client_address(environ, self.trusted_proxies)
            if not self.connects.allow(addr):
                n = self.refused_connects.get(addr, 0) + 1
                self.refused_connects[addr] = n
                if n == 1:
                    log.warning("address %s opens connections too fast: refusing them for a while", addr)
                return False
            n = self.refused_connects.pop(addr, 0)
            if n:
                log.warning("address %s: %d connections were refused", addr, n)
            return handle(eio_sid, environ, *args)

        return on_connect

    def wrap_disconnect(self, handle: Callable[..., Any]) -> Callable[..., Any]:
        """The Engine.IO `disconnect` handler around python-socketio's: forget the client, log its bad packets."""

        def on_disconnect(eio_sid: str, *args: Any) -> Any:
            try:
                return handle(eio_sid, *args)
            finally:
                self.forget(eio_sid)

        return on_disconnect

    def bad_packet(self, eio_sid: str, e: BaseException) -> None:
        """One log line for the first bad packet of each kind from a client; the rest are counted."""
        kind = type(e).__name__
        kinds = self.bad.setdefault(eio_sid, {})
        kinds[kind] = kinds.get(kind, 0) + 1
        if kinds[kind] == 1:
            log.warning(
                "client %s sent a packet the server cannot decode (%s: %s); more of this kind are counted, not logged",
                eio_sid,
                kind,
                str(e)[:100],
            )

    def forget(self, eio_sid: str) -> None:
        self.limiter.forget(eio_sid)
        self.closing.discard(eio_sid)
        for kind, n in self.bad.pop(eio_sid, {}).items():
            if n > 1:
                log.warning("client %s sent %d undecodable packets (%s) in all", eio_sid, n, kind)


def install_guard(
    socketio,
    per_s: int,
    max_attachments: int = MAX_ATTACHMENTS,
    connects_per_s: float = 0.0,
    trusted_proxies: tuple[str, ...] = (),
) -> ConnectionGuard:
    """A `ConnectionGuard` on this Flask-SocketIO server's Engine.IO server, through python-engineio's public `on`
    (its `message` and `disconnect` handlers wrap python-socketio's). Returns it; `eio.connection_guard` is it too."""
    server = socketio.server
    eio = server.eio

    def notify(eio_sid: str, data: dict) -> None:
        sid = server.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is not None:
            server.emit("error", data, to=sid, namespace="/")

    def close(eio_sid: str) -> None:
        socketio.start_background_task(_disconnect_quietly, eio, eio_sid)

    guard = ConnectionGuard(
        per_s, notify, close, max_attachments, connects_per_s=connects_per_s, trusted_proxies=trusted_proxies
    )
    eio.on("connect", guard.wrap_connect(eio.handlers["connect"]))
    eio.on("message", guard.wrap_message(eio.handlers["message"]))
    eio.on("disconnect", guard.wrap_disconnect(eio.handlers["disconnect"]))
    eio.connection_guard = guard
    return guard


def _disconnect_quietly(eio, eio_sid: str) -> None:
    try:
        eio.disconnect(eio_sid)
    except Exception as e:  # already gone
        log.debug("closing %s: %s", eio_sid, e)
