"""How one client's connection is doing and how many frames it may get: round trips (NTP-style pings), paint-ack lag,
the frames' byte budget (flow control) and the slow-connection warning, for one Demonstrator
(server.core.demonstrator), which owns one `Connection` and gives it its clock, its event log and its `send`.

Framework-free, like the Demonstrator.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Callable

from .recorder import RecordingWriter
from .runtime import LoopConfig, Runtime
from .ticker import TICK_S

# Flow control: frames go to a client only as fast as its path delivers them, so they never queue up on a slow path
# (the socket buffer of a real path is large and is never full) and the picture stays about a round trip behind the
# game. Four rules, on every send path:
#
# - A frame with a key the participant pressed or released (the first after it) always goes, unless the client is
#   behind (the last rule): it may overdraw the byte budget, and the frames after it wait for that. The participant sees
#   what their key did as soon as the path can show it, though the frames around it are thinned.
# - Each paint ack says when the client painted the frame; its paint offset (client paint time less the server's
#   sending time: two clocks, but the same two every time) above the smallest of the last PAINT_WINDOW_S is the queue
#   that frame met on the way (plus the client's playout buffer, at most 50 ms). While the acks come (none overdue by
#   LATE_ACK_WAIT_S: a stall is not a queue) and not within STALL_GRACE_S of a stall, no frame goes while the last ack's
#   queue is over LATE_QUEUE_MS, or while the oldest frame in flight has waited over the shortest round trip plus
#   WINDOW_MS (its ack is not back yet, so no ack has said so). And while the frames go uncapped (or under a budget that
#   lets more go than the acks say arrive), an ack whose queue is over PAINT_CUT_MS caps them (below) at once: the first
#   sign of a path that carries less than the frames need, a second before the client's own measure shows it (at 48
#   kbit/s Space Invaders' frames go from 42 to 60-75 kbit/s at about 2 s, and the queue grows 0.5 s a second).
# - The client measures the downlink's queue from its frames' arrivals (the smallest arrival offset of the last 300 ms
#   above that of the last 10 s) and reports it with its pings (4 a second while it plays); the latest round trip's
#   excess over the shortest recent one counts as a queue too (a queue that stood from the first frames is invisible to
#   the arrivals). When two reports in a row exceed QUEUE_HIGH_MS (a queue that stands), the round trip's excess is at
#   least half the client's figure (the pings' answers wait in the same queue; a browser busy decoding is not a path),
#   and either the acks of the last DELIVERY_WINDOW_S say frames arrive at under BOTTLENECK of the rate they are sent at
#   (a bottleneck) or the queue is over twice QUEUE_HIGH_MS or has been over it for HIGH_REPORTS reports in a row, and
#   not within STALL_GRACE_S of an ack overdue by over ACK_GAP_S (a stall's backlog drains by itself), frames are
#   sent at most at CUT_FACTOR times that delivery rate, or less to drain the queue in about a second (down to MAX_CUT;
#   at most once per LAG_WINDOW_S; a byte budget, since one busy screen can cost ten quiet ones, each frame counted with
#   the FRAME_OVERHEAD of its Socket.IO packet). While the queue is under QUEUE_LOW_MS the budget grows by GROW_FACTOR a
#   report, by PLATEAU_GROW near the last cut's delivery rate; after LIFT_AFTER_S of that, once it is UNLIMIT times what
#   60 frames a second of the recent sizes need, it is lifted. A frame over the budget is skipped, not queued (the
#   codec's next delta is against the last frame sent, as after a drop). The ack lag (from sending a frame to the ack's
#   arrival) is not the signal: a queue on the uplink (the microphone's) delays the acks too; the paint offsets do not
#   see it.
# - A client whose oldest unacked frame is older than the RTT plus MAX_UNACKED_MS (a stalled link, a client that
#   stopped reading or painting; before any RTT sample: more than MAX_UNACKED_FRAMES frames behind) gets only every
#   PROBE_EVERY-th frame, and no `hud`, until it acks again: a hidden tab paints nothing, so acks nothing, and still
#   gets a frame to paint and ack when it comes back.
MAX_UNACKED_FRAMES = 30
#: The paint acks' rules. The thresholds stand above what jitter alone gives: with ±30 ms a direction (the stall
#: condition of scripts/bench_network.py) the client's playout buffer kept every paint offset within 30 ms of the
#: smallest, outside the stalls.
LATE_QUEUE_MS = 150.0
WINDOW_MS = 250.0
LATE_ACK_WAIT_S = 0.15
PAINT_CUT_MS = 50.0
PAINT_WINDOW_S = 10.0
MAX_UNACKED_MS = 500.0
PROBE_EVERY = 30
LAG_WINDOW_S = 0.3  # at most one cut a window
DELIVERY_WINDOW_S = 0.5
QUEUE_HIGH_MS = 120.0
QUEUE_LOW_MS = 50.0
UNLIMIT = 1.3
LIFT_AFTER_S = 2.0
CUT_FACTOR = 0.85
MAX_CUT = 0.5
HIGH_REPORTS = 4  # a second of reports while playing
GROW_FACTOR = 1.04
#: Near the delivery rate of the last cut (within a factor PLATEAU of it) the budget grows by only PLATEAU_GROW a
#: report: the path carried about that much, and at GROW_FACTOR the overshoot built a queue of 200-400 ms before the
#: next cut (48 kbit/s down: key-to-display p95 660-675 ms). Past it, it probes at GROW_FACTOR again.
PLATEAU = 0.85
PLATEAU_GROW = 1.01
BOTTLENECK = 0.85
#: An ack overdue by this much marks a stall (the acks come every 100 ms, with the microphone's chunks, or ±30 ms of
#: jitter later): at 0.25 s the stall condition's 250 ms stalls went unnoticed now and then, and their backlog was
#: taken for a queue.
ACK_GAP_S = 0.2
STALL_GRACE_S = 1.0
MIN_RATE = 1500.0  # bytes a second
#: Bytes a frame costs on the wire beyond its payload, which the byte budget counts too: Socket.IO sends a binary
#: event as two WebSocket messages, the 43-byte text packet `451-["frame",{"_placeholder":true,"num":0}]` and the
#: payload, each with its 2-4 byte header. With Space Invaders' ~90-byte frames that is a third of the bytes: a budget
#: of payload alone took a 48 kbit/s downlink for 24 kbit/s of frames and let its queue stand at 200-400 ms.
FRAME_OVERHEAD = 48
#: RTT samples kept for the smallest recent round trip (the client pings every 0.25 s while it plays)
RTT_WINDOW = 20
#: The ack lag counts as slow past the slow-RTT setting plus this (the playout and the wait for the next ack)
ACK_LAG_MARGIN_MS = 100.0
#: A slow connection counts as good again after this long below the thresholds
SLOW_CLEAR_S = 2.0
SLOW_MESSAGE = "Your connection is slow; the game may lag."
# The display's phase: a client whose frames wait for its screen's refresh (or stand a refresh behind it, after one
# late frame, since the server's ticks and the refreshes both run at 60 Hz) asks for its game's next tick to come up
# to a period later, once (`rtt`'s `slip_ms`); at most one such slip every SLIP_EVERY_S, so a client can only slow its
# own game, and only a little. See `request_slip` and client/game-worker.js `slipRequest`.
SLIP_EVERY_S = 0.5


class Connection:
    """One client's connection (see the flow-control notes above): what the Demonstrator asks before each frame
    (`next_frame`), and what it is told (paint acks, pings, the client's downlink queue)."""

    def __init__(
        self,
        rt: Runtime,
        config: LoopConfig,
        log_event: Callable[..., None],
        send: Callable[[str, object], object],
    ) -> None:
        self.rt = rt
        self.config = config
        self.log_event = log_event  # into the open episode's events.csv
        self.send = send  # to the client, when it is connected
        self.acked = -1  # the last frame the client acked painting (or, after a (re)start, the frame before)
        self.skipped_frames = 0  # frames not sent because the client lagged (MAX_UNACKED_FRAMES), this process
        self.episode_skipped = 0  # the same, this episode
        self.rtt_ms: float | None = None
        self._rtts: deque[float] = deque(maxlen=RTT_WINDOW)
        self._pings: dict[float, tuple[RecordingWriter, float]] = {}
        self._sent_at = array("d", [math.nan]) * 1024  # frame % 1024 -> clock when sent
        self._inflight: deque[tuple[int, float, int]] = deque()  # (frame, clock, bytes) sent, not acked, oldest first
        self._delivered: deque[tuple[float, int]] = deque()  # (clock, bytes) acked in the last second
        self._sent_bytes: deque[tuple[float, int]] = deque()  # (clock, bytes) sent in the last second
        self.ack_lag_ms: float | None = None
        # (clock, paint offset) of the acks of the last PAINT_WINDOW_S, offsets rising (the first is their minimum)
        self._paint_offsets: deque[tuple[float, float]] = deque()
        self.paint_queue_ms: float | None = None  # the last ack's paint offset above that minimum
        self._last_ack_at: float | None = None
        self._gap_at = -1e9
        self._low_since: float | None = None
        self._high_reports = 0  # reports in a row with the queue over QUEUE_HIGH_MS
        self.send_rate: float | None = None  # bytes a second the frames may use; None: no limit
        self._ceiling: float | None = None  # bytes a second delivered when the budget was last cut
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._cut_until = 0.0
        self.slow = False
        self._bad_since: float | None = None
        self._good_since: float | None = None
        self._slow_s = 0.0
        self._slow_periods = 0
        self._slow_checked: float | None = None
        self._slip_s = 0.0  # the extra wait before the game's next tick that the client asked for
        self._slip_at = -1e9
        self._slips = 0
        self._slip_total_s = 0.0

    def new_episode(self) -> None:
        """An episode starts at frame 0: no acks, pings, lag or slow periods of the last one count."""
        self.acked = -1
        self._pings.clear()
        self.reset_flow()
        self.slow = False
        self._bad_since = self._good_since = self._slow_checked = None
        self._slow_s = 0.0
        self._slow_periods = 0
        self.episode_skipped = 0
        self._slips = 0
        self._slip_total_s = 0.0

    def reset_flow(self) -> None:
        """Play (re)starts: frames sent before are no longer waited for."""
        self._inflight.clear()
        self._delivered.clear()
        self._sent_bytes.clear()
        self._last_ack_at = None
        self._paint_offsets.clear()
        self.paint_queue_ms = None
        self.send_rate = None
        self._ceiling = None
        self._high_reports = 0
        self._tokens = 0.0

    # --- flow control: which frames go ----------------------------------------------------------------------
    def next_frame(self, frame: int, encode: Callable[[], bytes], keyed: bool = False) -> tuple[bytes | None, bool]:
        """Frame `frame` is made: its bytes to send (`encode()`d), or None when it is skipped (not encoded); and
        whether the client is behind (then it gets no `hud` either). A `keyed` frame (the first with a key the
        participant pressed or released) goes unless the client is behind: it may overdraw the byte budget."""
        now = self.rt.clock()
        base = self.rtt_min_ms()
        if base is None:
            behind = frame - self.acked > MAX_UNACKED_FRAMES
        else:
            behind = self._oldest_unacked_ms(now) > base + MAX_UNACKED_MS
        go = not behind or frame % PROBE_EVERY == 0
        if go and not behind and not keyed and base is not None and self._late(now, base):
            go = False
        data = None
        if go and not behind and self.send_rate is not None:  # the byte budget a queue on the path leaves
            self._tokens = min(self._tokens + (now - self._tokens_at) * self.send_rate, self.send_rate * 0.05)
            if self._tokens > 0 or keyed:
                data = encode()
                self._tokens -= len(data) + FRAME_OVERHEAD  # a busy screen may overdraw: the next frames wait for it
            else:
                go = False
        self._tokens_at = now
        if go:
            if data is None:
                data = encode()
            self._sent_at[frame % len(self._sent_at)] = now
            size = len(data) + FRAME_OVERHEAD
            self._inflight.append((frame, now, size))
            self._sent_bytes.append((now, size))
        else:  # skipped, not encoded: the codec's next delta is against the last frame sent, as after a drop
            self._sent_at[frame % len(self._sent_at)] = math.nan
            self.skipped_frames += 1
            self.episode_skipped += 1
        return data, behind

    def ack(self, frame: int, client_ms: float | None = None) -> None:
        """The client acked painting `frame` (at its `client_ms`), later than the last one it acked."""
        self.acked = frame
        now = self.rt.clock()
        wait = self._ack_wait(now, self.rtt_min_ms() or 0.0)
        inflight = self._inflight
        acked_bytes = 0
        while inflight and inflight[0][0] <= frame:
            acked_bytes += inflight.popleft()[2]
        delivered = self._delivered
        delivered.append((now, acked_bytes))
        while delivered and delivered[0][0] < now - DELIVERY_WINDOW_S:
            delivered.popleft()
        sent = self._sent_at[frame % len(self._sent_at)]
        if math.isnan(sent):
            return
        lag = (now - sent) * 1000.0
        if client_ms is not None:
            self._paint_queue(now, client_ms - sent * 1000.0, wait)
        if wait > ACK_GAP_S:
            self._gap_at = now  # a stall (or a pause in painting): its backlog is no bottleneck
        self.ack_lag_ms, self._last_ack_at = lag, now

    def _paint_queue(self, now: float, offset: float, wait: float) -> None:
        """An acked frame's paint `offset` (its client paint time less its sending, ms): its excess over the smallest of
        the last PAINT_WINDOW_S is the queue it met. One over PAINT_CUT_MS caps the frames (see the notes above)."""
        offsets = self._paint_offsets
        while offsets and offsets[-1][1] >= offset:
            offsets.pop()
        offsets.append((now, offset))
        while offsets[0][0] < now - PAINT_WINDOW_S:
            offsets.popleft()
        self.paint_queue_ms = queue = offset - offsets[0][1]
        if queue <= PAINT_CUT_MS or now < self._cut_until or wait > ACK_GAP_S or now - self._gap_at < STALL_GRACE_S:
            return
        rates = self._rates(now)
        # uncapped frames, or a budget that lets more go than the path delivers (it grew past it while the queue was
        # low); under a budget that holds, the queue is the budget's to drain (a cut would only ratchet it down)
        if rates is not None and (self.send_rate is None or rates[0] < rates[1]):
            self._cut(now, queue, *rates, "paint queue")

    def downlink_queue(self, queue: float, playing: bool) -> None:
        """The client's report of the downlink's queue (ms): the frames' byte budget follows it (see above); it
        changes only while the episode plays."""
        now = self.rt.clock()
        rates = self._rates(now)
        if not playing or rates is None:
            return
        delivery, sent_1s = rates
        stalled = now - self._gap_at < STALL_GRACE_S
        # the pings' answers wait in a downlink queue too; a browser that is merely slow to decode shows no such wait
        rtt_min = self.rtt_min_ms()
        rtt_queue = self.rtt_ms - rtt_min if self.rtt_ms is not None and rtt_min is not None else None
        on_path = rtt_queue is not None and rtt_queue >= queue / 2
        # a queue that stood from the episode's first messages is invisible to the client's measure (the arrivals it
        # compares with were queued too: at 48 kbit/s the first second's 66 kbit/s of frames); the round trip's excess
        # over the smallest recent one shows it
        queue = max(queue, rtt_queue or 0.0)
        self._high_reports = self._high_reports + 1 if queue > QUEUE_HIGH_MS else 0
        standing = self._high_reports >= 2  # this report and the one before over the mark
        # a path that delivers less than it is sent, or a queue at twice the mark or over it for HIGH_REPORTS reports in
        # a row: the episode's first messages (a keyframe, the episode's description) on a path the frames alone
        # nearly fill drain for seconds
        lasting = queue > 2 * QUEUE_HIGH_MS or self._high_reports >= HIGH_REPORTS
        bottleneck = not stalled and on_path and (delivery < BOTTLENECK * sent_1s or lasting)
        if standing and bottleneck and now >= self._cut_until:
            self._cut(now, queue, delivery, sent_1s, "queue")
        if queue >= QUEUE_LOW_MS:
            self._low_since = None
        elif self.send_rate is not None:
            near = self._ceiling is not None and PLATEAU * self._ceiling <= self.send_rate <= self._ceiling / PLATEAU
            self.send_rate *= PLATEAU_GROW if near else GROW_FACTOR
            if self._low_since is None:
                self._low_since = now
            lift = now - self._low_since >= LIFT_AFTER_S
            if lift and self.send_rate > UNLIMIT * 60.0 * sent_1s / len(self._sent_bytes):
                self.send_rate = None
                self.log_event("frames unlimited")

    def _rates(self, now: float) -> tuple[float, float] | None:
        """(bytes a second the acks of the last DELIVERY_WINDOW_S say arrived, bytes sent in the last second), or None
        when none was sent in it."""
        delivered, sent = self._delivered, self._sent_bytes
        while delivered and delivered[0][0] < now - DELIVERY_WINDOW_S:
            delivered.popleft()
        while sent and sent[0][0] < now - 1.0:
            sent.popleft()
        if not sent:
            return None
        # the bytes acked after the window's first ack, over the time since it (the first's bytes came before it); after
        # a stall its backlog's acks come at once (a high rate)
        delivery = 0.0
        if len(delivered) > 1:
            delivery = (sum(b for _, b in delivered) - delivered[0][1]) / max(now - delivered[0][0], 0.1)
        return delivery, float(sum(b for _, b in sent))

    def _cut(self, now: float, queue: float, delivery: float, sent_1s: float, what: str) -> None:
        """A queue of `queue` ms on the path: frames may use CUT_FACTOR of the delivery rate, or less to drain it in
        about a second (down to MAX_CUT)."""
        self._ceiling = min(delivery, self.send_rate or delivery)
        factor = min(CUT_FACTOR, max(MAX_CUT, 1.0 - queue / 1000.0))
        self.send_rate = max(MIN_RATE, factor * self._ceiling)
        self._cut_until = now + LAG_WINDOW_S
        self.log_event(
            "frames limited",
            detail=f"{self.send_rate * 8 / 1000:.0f} kbit/s: {what} {queue:.0f} ms, delivered "
            f"{delivery * 8 / 1000:.0f} of {sent_1s * 8 / 1000:.0f} kbit/s sent",
        )

    def rtt_min_ms(self) -> float | None:
        return min(self._rtts) if self._rtts else None

    # --- the display's phase -----------------------------------------------------------------------------------
    def request_slip(self, ms: float, playing: bool) -> bool:
        """The client asks for its game's next tick `ms` (0 < ms <= one period) later than its schedule, so that its
        frames are ready just before its screen's refresh: granted (True) at most once every SLIP_EVERY_S while
        playing."""
        now = self.rt.clock()
        if not playing or not 0.0 < ms <= TICK_S * 1000.0 or now - self._slip_at < SLIP_EVERY_S:
            return False
        self._slip_at = now
        self._slip_s = ms / 1000.0
        return True

    def pop_slip(self) -> float:
        """The slip (s) for the game's next deadline, once (the Ticker asks after each tick)."""
        slip, self._slip_s = self._slip_s, 0.0
        if slip:
            self._slips += 1
            self._slip_total_s += slip
        return slip

    # --- NTP-style round trips, how slow the connection is -----------------------------------------------------
    def ping(self, client_ms: float | None, w: RecordingWriter | None) -> dict:
        """The client's `rtt` ping, sent at `client_ms`: answered with when the server got it (the ms of `w`, the
        open episode's writer)."""
        server_ms = round(w.server_ms(), 3) if w is not None and not w.closed else None
        if client_ms is not None and server_ms is not None and w is not None:
            self._pings[client_ms] = (w, server_ms)
            while len(self._pings) > 16:
                del self._pings[next(iter(self._pings))]
        return {"server_ms": server_ms}

    def rtt_sample(self, client_send_ms: float, client_recv_ms: float, w: RecordingWriter | None) -> None:
        """The client had the answer to its ping sent at `client_send_ms` at `client_recv_ms`: a round trip sample,
        recorded (rtt.csv) when the ping was answered in this episode (`w`, the open episode's writer)."""
        rtt = client_recv_ms - client_send_ms
        if not 0.0 <= rtt < 60_000.0:
            return
        self.rtt_ms = rtt
        self._rtts.append(rtt)
        entry = self._pings.pop(client_send_ms, None)
        if entry is not None and entry[0] is w and w is not None and not w.closed:
            w.append_rtt(entry[1], client_send_ms, client_recv_ms)

    def status(self) -> dict:
        """What the monitor shows live (/api/admin/sessions)."""
        return {
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 1),
            "rtt_min_ms": None if not self._rtts else round(min(self._rtts), 1),
            "ack_lag_ms": None if self.ack_lag_ms is None else round(self.ack_lag_ms, 1),
            "paint_queue_ms": None if self.paint_queue_ms is None else round(self.paint_queue_ms, 1),
            "send_kbps": None if self.send_rate is None else round(self.send_rate * 8 / 1000, 1),
            "skipped_frames": self.episode_skipped,
            "connection_slow": self.slow,
            "slow_s": round(self._slow_s, 1),
        }

    def _late(self, now: float, base: float) -> bool:
        """Hold frames back: while acks still come (a queue on the path, not a stall), the last ack's frame met over
        LATE_QUEUE_MS of queue, or the oldest frame not yet acked has waited over the shortest round trip plus
        WINDOW_MS (see the flow-control notes above)."""
        if self._ack_wait(now, base) > LATE_ACK_WAIT_S or now - self._gap_at < STALL_GRACE_S:
            return False
        if self._oldest_unacked_ms(now) > base + WINDOW_MS:
            return True
        return bool(self._inflight) and (self.paint_queue_ms or 0.0) > LATE_QUEUE_MS

    def _ack_wait(self, now: float, base: float) -> float:
        """How long (s) the next ack is overdue: since the last one, or since it was due, when that is later (the
        frames before were all acked, or none went): the oldest frame in flight's sending plus `base` (the shortest
        round trip, ms) plus the queue the last ack showed (frames held back for a queue, then sent into it, are not a
        stall's)."""
        if not self._inflight or self._last_ack_at is None:
            return 0.0
        due = self._inflight[0][1] + (base + (self.paint_queue_ms or 0.0)) / 1000.0
        return now - max(self._last_ack_at, due)

    def _oldest_unacked_ms(self, now: float) -> float:
        return (now - self._inflight[0][1]) * 1000.0 if self._inflight else 0.0

    def check(self, playing: bool) -> bool:
        """While playing: warn the participant (and log it) after `slow_for_s` of a slow connection; True (end the
        episode as a technical failure) after `drop_after_slow_s` of it, when that is set."""
        cfg = self.config
        now = self.rt.clock()
        last, self._slow_checked = self._slow_checked, now
        if not playing:
            self._bad_since = self._good_since = None
            return False
        if self.slow and last is not None:
            self._slow_s += now - last
        lag = self.ack_lag_ms or 0.0
        if self._last_ack_at is not None and now - self._last_ack_at > 0.3:
            lag = max(lag, self._oldest_unacked_ms(now))
        # a slow round trip, late paint acks, or a downlink that cannot carry every frame
        bad = (
            (self.rtt_ms or 0.0) > cfg.slow_rtt_ms
            or lag > cfg.slow_rtt_ms + ACK_LAG_MARGIN_MS
            or self.send_rate is not None
        )
        if bad:
            self._good_since = None
            if self._bad_since is None:
                self._bad_since = now
            if not self.slow and now - self._bad_since >= cfg.slow_for_s:
                self.slow = True
                self._slow_periods += 1
                detail = f"rtt {self.rtt_ms or 0:.0f} ms, ack lag {lag:.0f} ms"
                self.log_event("connection slow", detail=detail)
                self.send("connection", {"slow": True, "message": SLOW_MESSAGE, "rtt_ms": self.rtt_ms})
            return bool(cfg.drop_after_slow_s and now - self._bad_since >= cfg.drop_after_slow_s)
        self._bad_since = None
        if self.slow:
            if self._good_since is None:
                self._good_since = now
            if now - self._good_since >= SLOW_CLEAR_S:
                self.slow = False
                self.log_event("connection ok")
                self.send("connection", {"slow": False, "rtt_ms": self.rtt_ms})
        return False

    def meta(self) -> dict:
        """The episode's connection, for its meta.json."""
        cfg = self.config
        return {
            "slow_rtt_ms": cfg.slow_rtt_ms,
            "slow_for_s": cfg.slow_for_s,
            "drop_after_slow_s": cfg.drop_after_slow_s,
            "slow_periods": self._slow_periods,
            "slow_s": round(self._slow_s, 1),
            "frames_not_sent": self.episode_skipped,
            "display_slips": self._slips,
            "display_slip_ms": round(self._slip_total_s * 1000.0, 1),
        }
