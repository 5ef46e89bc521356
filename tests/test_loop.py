"""The game loop's episode lifecycle, driven tick by tick with a real emulator and a recording runtime."""

import json

import pytest
from helpers import read_csv

from server.core import format as fmt
from server.core.demonstrator import ENDING, IDLE, PAUSED, PLAYING, Demonstrator
from server.core.pool import EmulatorPool
from server.core.replay import verify
from server.core.runtime import LoopConfig, Runtime
from server.core.ticker import TickPhases
from server.games import resolve_game
from server.spool import Spool
from server.store import open_store


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def make(tmp_path):
    sent = []
    clock = FakeClock()

    def factory(game="pong", **cfg):
        rt = Runtime(
            send=lambda ev, sid, data, on_drop=None: sent.append((ev, data)), sleep=lambda s: None, clock=clock
        )
        spool = Spool(tmp_path / "store")
        return Demonstrator("sid1", "tok", "P1", resolve_game(game), LoopConfig(**cfg), spool, EmulatorPool(0.0), rt)

    factory.sent = sent
    factory.clock = clock
    factory.store = tmp_path / "store"
    return factory


def test_game_over_ends_the_episode_and_it_verifies(make):
    d = make("pong")
    traj = d.start_episode()
    while d.state == PLAYING:  # NOOP until the computer wins 21-0
        d.tick()
    assert d.state == ENDING
    meta = d.finish_episode(fmt.STATUS_COMPLETE, d._end_reason)
    assert meta["end_reason"] == "game over" and meta["final_score"] == -21
    rows = read_csv(make.store / traj / fmt.FRAMES)
    assert rows[-1]["terminal"] == "1" and int(rows[-1]["score"]) == -21
    assert verify(open_store(str(make.store)), traj) == len(rows)
    assert (
        "episode_end",
        {
            "traj_id": traj,
            "reason": "game over",
            "score": -21,
            "frames": len(rows),
            "status": "complete",
            "practice": False,
            "recorded": True,
        },
    ) in make.sent


def test_time_limit_ends_after_that_much_play(make):
    d = make("spaceinvaders", episode_time_limit_s=2.0)
    d.start_episode()
    n = 0
    while d.state == PLAYING:
        d.tick()
        n += 1
    assert n == 120 and d._end_reason == "time limit"


def test_next_episode_gets_the_next_id_and_a_fresh_seed(make):
    d = make("spaceinvaders")
    first = d.start_episode()
    for _ in range(10):
        d.tick()
    d.stop()
    d.finish_episode(fmt.STATUS_COMPLETE, fmt.QUIT)
    assert d.state == IDLE
    second = d.start_episode()
    assert (first, second) == ("spaceinvaders_P1_1", "spaceinvaders_P1_2")
    seeds = [json.loads((make.store / t / fmt.META).read_text())["ale"]["seed"] for t in (first, second)]
    assert seeds[0] != seeds[1]


def test_pause_releases_keys_and_resume_counts_down(make):
    d = make("spaceinvaders", resume_countdown_s=3.0)
    traj = d.start_episode()
    d.key_event(0, 10.0, "LEFT", True)
    d.tick()
    d.pause()
    assert d.state == PAUSED and d.held == set()
    d.resume()
    assert ("countdown", {"seconds": 3.0, "frame": 1}) in make.sent
    d.finish_episode(fmt.STATUS_INTERRUPTED, fmt.QUIT)
    kinds = [(e["event"], e["detail"]) for e in read_csv(make.store / traj / fmt.EVENTS)]
    assert ("pause", "") in kinds and ("keys released", "LEFT") in kinds and ("resume", "countdown 3s") in kinds


def test_keys_are_latched_in_seq_order_and_stale_events_ignored(make):
    d = make("spaceinvaders")
    traj = d.start_episode()
    # arrive out of order within one tick: up(1) before down(0)
    d.key_event(1, 20.0, "LEFT", False)
    d.key_event(0, 10.0, "LEFT", True)
    d.tick()
    assert d.held == set()
    d.key_event(2, 30.0, "RIGHT", True)
    d.tick()
    # a late, older event for RIGHT must not undo the newer one
    d.key_event(3, 40.0, "FIRE", True)
    d.key_event(1, 15.0, "RIGHT", False)
    d.tick()
    assert d.held == {"RIGHT", "FIRE"}
    d.finish_episode(fmt.STATUS_COMPLETE, fmt.QUIT)
    rows = read_csv(make.store / traj / fmt.FRAMES)
    assert [r["action"] for r in rows] == ["0", "3", "11"]


def test_an_unrecorded_practice_round_leaves_nothing_in_the_store(make):
    d = make("spaceinvaders")
    ended = []
    d.on_episode_end = lambda dem, meta: ended.append(meta)
    d.start_episode(practice=True, time_limit_s=1.0, record=False)
    while d.state == PLAYING:
        d.tick()
    d.finish_episode(fmt.STATUS_COMPLETE, d._end_reason)
    assert ended[0]["practice"] is True and ended[0]["frames"] == 60
    assert [p.name for p in make.store.iterdir() if not p.name.startswith(".")] == []
    assert list((make.store / ".scratch").iterdir()) == []
    assert d.start_episode() == "spaceinvaders_P1_1"  # the first recorded episode is number 1


def test_tick_phases_spread_demonstrators_over_the_period():
    phases = TickPhases(period=16.0)
    got = [phases.claim(i) for i in range(4)]
    assert got[:2] == [0.0, 8.0] and sorted(got) == [0.0, 4.0, 8.0, 12.0]  # the middle of the widest gap
    phases.release(1)
    assert phases.claim("new") == 8.0  # a departed demonstrator's slot is the widest gap again
    for k in range(4, 16):
        phases.claim(k)
    spaced = sorted(phases._taken.values())
    assert spaced == [float(i) for i in range(16)]
    # the next tick on a phase is never earlier than now and less than one period away
    for now in (0.0, 3.0, 100.5, 1e6 + 0.25):
        for p in spaced:
            t = phases.next_deadline(now, p)
            assert now <= t < now + 16.0 and (t - p) % 16.0 == 0


@pytest.fixture
def cohort(tmp_path):
    """Demonstrators sharing one runtime (one process's Ticker), on a fake clock; `log` records emulator steps and
    sends in the order they happen."""
    log = []
    clock = FakeClock()
    rt = Runtime(
        send=lambda ev, sid, data, on_drop=None: log.append((ev, sid)),
        sleep=lambda s: None,
        clock=clock,
        flush=lambda: log.append(("flush", None)),
    )
    spool = Spool(tmp_path / "store")
    pool = EmulatorPool(0.0)

    def make_one(i, game="spaceinvaders"):
        d = Demonstrator(f"sid{i}", f"tok{i}", f"P{i}", resolve_game(game), LoopConfig(), spool, pool, rt)
        d.emu = pool.acquire(d.game.rom)
        step = d.emu.step

        def logged_step(action, _sid=d.sid, _step=step):
            log.append(("step", _sid))
            return _step(action)

        d.emu.step = logged_step
        return d

    make_one.rt, make_one.clock, make_one.log, make_one.store = rt, clock, log, tmp_path / "store"
    return make_one


def test_the_ticker_steps_every_due_game_before_sending_any_frame(cohort):
    games = [cohort(i) for i in range(3)]
    for d in games:
        d.start_episode()
    cohort.log.clear()
    cohort.rt.ticker.tick_due(cohort.clock.t + 1 / 60)  # every phase lies within one period: all three are due
    steps = [e for e in cohort.log if e[0] == "step"]
    frames = [e for e in cohort.log if e[0] == "frame"]
    assert len(steps) == 3 and len(frames) == 3
    assert cohort.log.index(frames[0]) > cohort.log.index(steps[-1])  # the emulators ran back to back
    assert [sid for _, sid in steps] == [sid for _, sid in frames]  # frames go out in deadline order
    assert all(d.frame == 1 for d in games)


def test_a_long_pass_has_its_held_frames_written_every_few_games(cohort):
    """The web layer holds a pass's frames and writes them when the pass ends; a pass of many games (the Ticker fell
    behind) has them written every FLUSH_EVERY games, so the first ones do not wait for all the others."""
    from server.core.ticker import FLUSH_EVERY

    games = [cohort(i) for i in range(2 * FLUSH_EVERY + 1)]
    for d in games:
        d.start_episode()
    cohort.log.clear()
    cohort.rt.ticker.tick_due(cohort.clock.t + 1 / 60)
    order = [ev for ev, _ in cohort.log if ev in ("frame", "flush")]
    assert order == (["frame"] * FLUSH_EVERY + ["flush"]) * 2 + ["frame"]
    cohort.log.clear()
    short = [cohort(100 + i) for i in range(FLUSH_EVERY)]
    for d in games:
        d.pause("test")
    for d in short:
        d.start_episode()
    cohort.log.clear()
    cohort.rt.ticker.tick_due(cohort.clock.t + 2 / 60)
    assert [ev for ev, _ in cohort.log if ev in ("frame", "flush")] == ["frame"] * FLUSH_EVERY  # written at its end


def test_a_failed_write_in_a_long_pass_loses_frames_not_games(cohort):
    """If writing the held frames fails mid-pass, every game of the pass still gets its tick and its next deadline
    (a game left out of the Ticker's schedule would freeze for good)."""
    from server.core.ticker import FLUSH_EVERY

    def failing_flush():
        raise RuntimeError("the writer broke")

    cohort.rt.ticker.flush = failing_flush
    games = [cohort(i) for i in range(2 * FLUSH_EVERY + 1)]
    for d in games:
        d.start_episode()
    for k in (1, 2):
        cohort.rt.ticker.tick_due(cohort.clock.t + k / 60)
        assert [d.frame for d in games] == [k] * len(games)
    assert all(d.state == "playing" for d in games)


def test_ticker_deadlines_are_absolute_and_a_paused_game_is_skipped(cohort):
    a, b = cohort(0), cohort(1)
    a.start_episode()
    b.start_episode()
    clock, ticker = cohort.clock, cohort.rt.ticker
    period = 1 / 60
    # passes that come late by up to 0.6 of a period still give one frame per period: no drift
    for k in range(1, 121):
        clock.t = k * period + (0.6 * period if k % 3 == 0 else 0.0)
        ticker.tick_due(clock.t)
    assert (a.frame, b.frame) == (120, 120)
    b.pause()
    for k in range(121, 131):
        clock.t = k * period
        ticker.tick_due(clock.t)
    assert (a.frame, b.frame) == (130, 120)
    # play resumes (what the countdown's end does): one frame per period again, though its old deadline is still
    # queued
    b._play()
    b._play()
    for k in range(131, 141):
        clock.t = k * period
        ticker.tick_due(clock.t)
    assert (a.frame, b.frame) == (140, 130)


def test_a_slip_the_client_asks_for_delays_its_games_ticks_once_and_loses_no_frame(cohort):
    """The display's phase (client/game-worker.js slipRequest): the client asks for its game's next tick a few ms
    later; that game's ticks come that much later from then on, one per period, and the other games' do not move."""
    a, b = cohort(0), cohort(1)
    a.start_episode()
    b.start_episode()
    clock, ticker = cohort.clock, cohort.rt.ticker
    period = 1 / 60
    clock.t = period
    ticker.tick_due(clock.t)
    assert (a.frame, b.frame) == (1, 1)
    assert a.conn.request_slip(10.0, a.playing)
    assert not a.conn.request_slip(5.0, a.playing)  # at most one every SLIP_EVERY_S
    ticker.tick_due(clock.t + period)  # frame 1's tick: frame 2 comes 10 ms later than its schedule
    assert a.frame == 2
    due_a = [e for e in ticker._due if e[3] is a][0][0]
    due_b = [e for e in ticker._due if e[3] is b][0][0]
    assert due_a - (due_b - b._phase + a._phase) == pytest.approx(0.010)
    for k in range(3, 120):  # passes at 0.7 of each period: the slipped game still gets exactly one frame a period
        clock.t = k * period + 0.7 * period
        ticker.tick_due(clock.t)
    assert (a.frame, b.frame) == (119, 119)
    assert a.conn.meta()["display_slips"] == 1 and a.conn.meta()["display_slip_ms"] == 10.0
    assert b.conn.meta()["display_slips"] == 0
    # a slip is at most a period, only while playing, and later asks are rate-limited by the game's clock
    clock.t += 1.0
    for bad in (0.0, -1.0, 17.0, 1e9):
        assert not a.conn.request_slip(bad, True)
    assert not a.conn.request_slip(5.0, False)
    assert a.conn.request_slip(16.0, True)


def test_a_failing_tick_interrupts_only_that_game(cohort):
    bad, good = cohort(0), cohort(1)
    traj = bad.start_episode()
    good.start_episode()

    def broken(action):
        raise RuntimeError("emulator fault")

    bad.emu.step = broken
    ticker = cohort.rt.ticker
    for k in range(1, 11):
        cohort.clock.t = k / 60
        ticker.tick_due(cohort.clock.t)
    assert good.frame == 10 and good.state == PLAYING
    assert bad.frame == 0 and bad.state == ENDING
    meta = bad.finish_episode(bad._end_status, bad._end_reason)  # what its own task does next (it may block)
    assert (meta["status"], meta["end_reason"]) == ("interrupted", "server error")
    assert json.loads((cohort.store / traj / fmt.META).read_text())["status"] == "interrupted"


def test_a_games_own_task_wakes_rarely_while_it_plays_and_on_time_for_its_countdown(cohort):
    d = cohort(0)
    clock, wakes = cohort.clock, []

    def sleep(s):  # the fake clock moves by what the task asked to sleep
        wakes.append((clock.t, d.state))
        clock.t += s
        if clock.t > 3.0:
            d.gone = True

    d.rt.sleep = sleep
    d.start_episode()
    d.pause()
    d.resume()  # a 3 s countdown from t=0 (LoopConfig's default)
    d._countdown_end = 0.35
    d.run()
    played_at = next(t for t, state in wakes if state == PLAYING)
    assert played_at == pytest.approx(0.35)  # the countdown ends on time, not at the next 20 or 100 ms step
    playing = [t for t, state in wakes if state == PLAYING]
    assert len(playing) <= 28  # 2.65 s of play: a wake every 0.1 s, not every 20 ms (the Ticker does the ticks)


def test_the_ticker_keeps_ticking_after_a_pass_fails(cohort, monkeypatch):
    d = cohort(0)
    d.start_episode()
    ticker, clock = cohort.rt.ticker, cohort.clock
    real = ticker.tick_due
    calls = []

    def flaky(now):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("a bug outside any game's tick")
        real(now)

    class Stop(Exception):
        pass

    def sleep(s):
        clock.t += s
        if clock.t > 1.0:
            raise Stop

    monkeypatch.setattr(ticker, "tick_due", flaky)
    with pytest.raises(Stop):
        ticker.run(sleep)
    assert d.frame >= 55 and d.state == PLAYING  # about a second of frames after the failed pass


def test_a_client_whose_acks_lag_has_frames_skipped_and_what_it_gets_decodes_exactly(tmp_path):
    """On every path: past MAX_UNACKED_FRAMES without an ack, frames and `hud` are skipped (not encoded), one frame in
    PROBE_EVERY still goes; once the acks catch up every frame goes again, each delta against the last frame sent."""
    import numpy as np

    from server.core.codec import XorDeflateDecoder
    from server.core.connection import MAX_UNACKED_FRAMES, PROBE_EVERY

    sent = []
    rt = Runtime(send=lambda ev, sid, data, on_drop=None: sent.append((ev, data)), sleep=lambda s: None)
    spool = Spool(tmp_path / "store")
    d = Demonstrator("sid1", "tok", "P1", resolve_game("pong"), LoopConfig(), spool, EmulatorPool(0.0), rt)
    d.start_episode()
    screens = {}
    for _ in range(100):
        d.tick()
        screens[d.frame - 1] = d.emu.screen().copy()
    frames = [int.from_bytes(data[:4], "little") for ev, data in sent if ev == "frame"]
    assert frames == list(range(MAX_UNACKED_FRAMES + 1)) + list(range(2 * PROBE_EVERY, 100, PROBE_EVERY))
    assert max(data["frame"] for ev, data in sent if ev == "hud") <= MAX_UNACKED_FRAMES
    assert d.skipped_frames == 100 - len(frames)
    d.painted([(frames[-1], 1000.0), (500, 1001.0)])  # an ack of a frame not sent yet (an old episode's) is ignored
    for _ in range(20):
        d.tick()
        screens[d.frame - 1] = d.emu.screen().copy()
    frames = [int.from_bytes(data[:4], "little") for ev, data in sent if ev == "frame"]
    assert frames[-21:] == [90, *range(100, 120)]  # caught up with the probe of frame 90: every frame goes again
    decoder = XorDeflateDecoder()
    for ev, data in sent:
        if ev == "frame":
            frame, _, screen = decoder.decode(data)
            assert np.array_equal(screen, screens[frame]), frame


def _play_acked(d, clock, frames, lag_s=0.1, queue_ms=None, pending=None):
    """Tick `frames` frames, each painted (and its ack at the server) `lag_s` after it was sent (the fake clock moves
    1/60 s a tick); report the downlink queue every 15 frames when given. The frames still on their way (`pending`,
    [(frame, painted at)]) are returned, to be passed on."""
    pending = [] if pending is None else pending
    for _ in range(frames):
        d.tick()
        clock.t += 1 / 60
        pending.append((d.frame - 1, clock.t - 1 / 60 + lag_s))
        due = [(f, t) for f, t in pending if t <= clock.t]
        if due:
            d.painted([(f, t * 1000.0) for f, t in due])
            pending = pending[len(due) :]
        if queue_ms is not None and d.frame % 15 == 0:
            d.downlink_queue(queue_ms)
    return pending


def test_a_standing_downlink_queue_caps_the_frames_and_a_clear_path_lifts_it(make):
    d = make("spaceinvaders")
    d.start_episode()
    d.rtt_sample(0.0, 100.0)
    _play_acked(d, make.clock, 120, queue_ms=0.0)
    assert d.send_rate is None and d.conn.episode_skipped == 0  # a clear path: every frame goes
    # the client reports a standing queue while the acks say frames arrive slower than they are sent, and the pings'
    # answers wait in it too
    d.rtt_sample(1000.0, 1300.0)
    for _ in range(4):
        d.conn._delivered.clear()
        d.conn._delivered.append((make.clock.t - 0.5, 100))
        d.downlink_queue(300.0)
        make.clock.t += 0.35
    assert d.send_rate is not None
    _play_acked(d, make.clock, 120, queue_ms=300.0)
    assert d.conn.episode_skipped > 0 and d.connection_status()["skipped_frames"] == d.conn.episode_skipped
    d.rtt_sample(2000.0, 2100.0)  # the queue is gone, from the round trips too: the budget grows back and is lifted
    _play_acked(d, make.clock, 60 * 20, queue_ms=0.0)
    assert d.send_rate is None


def test_a_queue_only_the_round_trips_show_caps_the_frames(make):
    """A queue that stood from the episode's first messages: the client's arrivals cannot show it (it reports 0),
    the round trips do (300 ms over the smallest), and it stands at over twice the mark although the path delivers
    what it is sent (the frames alone nearly fill it): the budget is cut, deep enough to drain it."""
    d = make("spaceinvaders")
    d.start_episode()
    d.rtt_sample(0.0, 100.0)
    _play_acked(d, make.clock, 60, queue_ms=0.0)
    assert d.send_rate is None
    d.rtt_sample(1000.0, 1400.0)
    _play_acked(d, make.clock, 30, queue_ms=0.0)
    assert d.send_rate is not None


def test_a_queue_over_the_mark_for_a_second_caps_the_frames_though_delivery_keeps_up(make):
    """150 ms over the smallest round trip (over the mark, under twice it), delivered as fast as sent: a queue that
    stands, not one that grows. One report over the mark is not enough; a second of them is."""
    from server.core.connection import HIGH_REPORTS

    d = make("spaceinvaders")
    d.start_episode()
    d.rtt_sample(0.0, 100.0)
    _play_acked(d, make.clock, 60, queue_ms=0.0)
    d.rtt_sample(1000.0, 1250.0)
    _play_acked(d, make.clock, 15 * (HIGH_REPORTS - 1), queue_ms=0.0)  # frames acked as fast as they are sent
    assert d.send_rate is None
    _play_acked(d, make.clock, 15, queue_ms=0.0)
    assert d.send_rate is not None


def test_the_byte_budget_counts_what_a_frame_costs_on_the_wire(make):
    """Socket.IO's packet around each frame is a third of a small frame's bytes on the wire: the budget counts it."""
    from server.core.connection import FRAME_OVERHEAD

    d = make("spaceinvaders")
    d.start_episode()
    d.rtt_sample(0.0, 100.0)
    make.sent.clear()
    _play_acked(d, make.clock, 30, queue_ms=0.0)
    frames = [data for ev, data in make.sent if ev == "frame"]
    assert len(frames) == 30
    assert sum(b for _, b in d.conn._sent_bytes) == sum(len(f) for f in frames) + 30 * FRAME_OVERHEAD


def test_a_stall_is_not_a_bottleneck(make):
    d = make("spaceinvaders")
    d.start_episode()
    d.rtt_sample(0.0, 100.0)
    _play_acked(d, make.clock, 60)
    make.clock.t += 0.3  # no acks for 300 ms: a stall
    d.rtt_sample(1000.0, 1400.0)
    _play_acked(d, make.clock, 30, queue_ms=300.0)
    assert d.send_rate is None


def _sent_frames(make):
    return [int.from_bytes(data[:4], "little") for ev, data in make.sent if ev == "frame"]


def test_a_key_frame_goes_though_the_byte_budget_is_spent(make):
    """On a capped path the frame with the participant's key goes at once (overdrawing the budget), so the key's effect
    is on screen a path's delay later, not a budget's; the frames after it pay for it."""
    from server.core.connection import MIN_RATE

    d = make("spaceinvaders")
    d.start_episode()
    d.rtt_sample(0.0, 100.0)
    _play_acked(d, make.clock, 30)
    d.conn.send_rate, d.conn._tokens = MIN_RATE, -2000.0  # capped, the budget spent
    make.sent.clear()
    _play_acked(d, make.clock, 10)
    assert _sent_frames(make) == []
    d.key_event(0, make.clock.t * 1000.0, "FIRE", True)
    keyed = d.frame
    _play_acked(d, make.clock, 10)
    assert _sent_frames(make) == [keyed]


def test_frames_that_meet_a_growing_queue_cap_the_frames_and_hold_them_back(make):
    """The paint acks show a queue as soon as the first frame that met it is painted: PAINT_CUT_MS more on the way
    than the smallest, while the frames go uncapped, caps them at once; past LATE_QUEUE_MS no frame goes but a key's."""
    from server.core.connection import LATE_QUEUE_MS

    d = make("spaceinvaders")
    d.start_episode()
    d.rtt_sample(0.0, 100.0)
    pending = _play_acked(d, make.clock, 120, 0.06)
    assert d.send_rate is None and d.conn.episode_skipped == 0
    for lag in range(70, 260, 10):  # the path carries less than the frames: each meets 10 ms more queue
        pending = _play_acked(d, make.clock, 6, lag / 1000.0, pending=pending)
    assert d.send_rate is not None  # no client report of its queue came: the paint acks alone capped the frames
    assert d.conn.paint_queue_ms > LATE_QUEUE_MS
    make.sent.clear()
    pending = _play_acked(d, make.clock, 6, 0.25, pending=pending)
    assert _sent_frames(make) == []  # the queue is over LATE_QUEUE_MS: held back, budget or not
    d.key_event(0, make.clock.t * 1000.0, "FIRE", True)
    keyed = d.frame
    pending = _play_acked(d, make.clock, 3, 0.25, pending=pending)
    assert _sent_frames(make) == [keyed]
    # the queue stands at about 400 ms: a frame goes now and then, when those before it are acked, and its ack, that
    # long on the way, is not taken for a stall's (which would let every frame go for a second)
    make.sent.clear()
    _play_acked(d, make.clock, 120, 0.45, pending=pending)
    assert 0 < len(_sent_frames(make)) <= 10


def test_the_delivery_rate_is_what_the_acks_carried_not_one_batch_more():
    """Acks come in batches (every 100 ms, with the microphone's chunks): the rate the path delivers is the bytes
    acked after the window's first ack over the time since it. Counting the first batch too read 20-25% over the
    path, and a cut to CUT_FACTOR of that drained nothing."""
    from server.core.connection import FRAME_OVERHEAD, Connection

    clock = FakeClock()
    rt = Runtime(send=lambda *a, **k: None, sleep=lambda s: None, clock=clock)
    conn = Connection(rt, LoopConfig(), lambda *a, **k: None, lambda *a: None)
    size = 100  # bytes a frame: 60 a second, acked 6 at a time 50 ms after the last of them went
    for frame in range(300):
        conn.next_frame(frame, lambda: b"x" * size)
        clock.t += 1 / 60
        if frame % 6 == 5:
            clock.t += 0.05
            conn.ack(frame, clock.t * 1000.0)
            clock.t -= 0.05
    clock.t += 0.05
    delivery, _ = conn._rates(clock.t)
    assert delivery == pytest.approx(60 * (size + FRAME_OVERHEAD), rel=0.05)


def test_a_budget_grown_past_the_path_is_cut_by_the_paint_acks(make):
    """A byte budget that grew while the path was clear lets more go than a busier scene's path then delivers: the
    paint acks cut it as they do uncapped frames, without waiting for the client's reports."""
    d = make("spaceinvaders")
    d.start_episode()
    d.rtt_sample(0.0, 100.0)
    pending = _play_acked(d, make.clock, 120, 0.06)
    d.conn.send_rate = 1e6  # bytes a second: far above what the frames need
    for lag in range(70, 200, 10):
        pending = _play_acked(d, make.clock, 6, lag / 1000.0, pending=pending)
    assert d.send_rate is not None and d.send_rate < 20_000


@pytest.mark.parametrize("stall_s", [0.22, 0.3])
def test_a_stalls_backlog_is_no_queue_to_hold_frames_back_for(make, stall_s):
    """A stall: no ack comes, then the stall's frames arrive at once and the client's playout paints two a refresh
    until it has caught up. Their paint offsets are as high as the stall is long, but the acks were overdue: a stall,
    no queue. No frame is held back or capped for it."""
    d = make("spaceinvaders")
    d.start_episode()
    d.rtt_sample(0.0, 100.0)
    _play_acked(d, make.clock, 120, 0.06)
    arrived: list[int] = []
    stall_end = make.clock.t + stall_s
    in_flight: list[tuple[int, float]] = []  # (frame, arrives at)
    for _ in range(120):
        d.tick()
        make.clock.t += 1 / 60
        in_flight.append((d.frame - 1, max(make.clock.t - 1 / 60 + 0.03, stall_end)))
        arrived += [f for f, t in in_flight if t <= make.clock.t]
        in_flight = [(f, t) for f, t in in_flight if t > make.clock.t]
        painted, arrived = arrived[:2], arrived[2:]  # the playout's catch-up: two a refresh
        if painted and make.clock.t >= stall_end + 0.03:  # the acks come back after the stall too
            d.painted([(f, make.clock.t * 1000.0) for f in painted])
    assert d.conn.paint_queue_ms is not None and d.conn.paint_queue_ms < 50  # caught up
    assert d.conn.episode_skipped == 0 and d.send_rate is None


def test_a_slow_connection_warns_and_can_end_the_episode(make):
    d = make("spaceinvaders", slow_rtt_ms=250.0, slow_for_s=2.0, drop_after_slow_s=4.0)
    d.start_episode()
    for _ in range(50):  # 5 s of 400 ms round trips
        d.rtt_sample(0.0, 400.0)
        _play_acked(d, make.clock, 6)
        d._check_connection()
    warnings = [data for ev, data in make.sent if ev == "connection"]
    assert warnings and warnings[0]["slow"] is True and "slow" in warnings[0]["message"]
    assert d.state == ENDING and d._end_reason == fmt.TECHNICAL_FAILURE
    meta = d.finish_episode(d._end_status, d._end_reason)
    assert meta["status"] == "interrupted" and meta["connection"]["slow_periods"] == 1
    assert meta["connection"]["slow_s"] > 0
    events = read_csv(make.store / meta["traj_id"] / fmt.EVENTS)
    assert "connection slow" in [e["event"] for e in events]


def test_a_client_that_holds_audio_is_waited_for_after_the_stop(make):
    d = make("spaceinvaders", end_grace_s=1.0, end_upload_max_s=30.0)
    d.start_episode()
    d.uploads_after_stop = True  # it said so in its pings (held_s)
    d.audio_chunk(0, 0, 0.0, 16000, b"\x00\x00" * 1600)
    _play_acked(d, make.clock, 10)
    d.stop()
    assert d.state == ENDING and d._end_at - make.clock.t > 20  # not the 1 s grace: the audio is still coming
    assert ("stopping", {"reason": "quit", "frame": d.frame}) in make.sent
    d.audio_done()
    assert d._end_at - make.clock.t <= 0.3 + 1e-9
