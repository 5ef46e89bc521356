"""The Socket.IO namespace's dispatch without a server: errors, the flood limit, the study events."""

from types import SimpleNamespace

from server.core.registry import Registry
from server.core.storehealth import StoreHealth
from server.games import resolve_game
from server.monitor import LiveParticipants
from server.study import Participants, StudyConfig, StudyFlow
from server.web.guard import ConnectionGuard, FloodLimiter, declared_attachments
from server.web.sockets import GameNamespace


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make_namespace(tmp_path, study=False, per_s=400):
    sent, closed = [], []
    state = SimpleNamespace(
        registry=Registry(4),
        runtime=SimpleNamespace(send=lambda event, sid, data: sent.append((event, sid, data))),
        settings=SimpleNamespace(
            max_messages_per_s=per_s, games=("spaceinvaders",), audio_rate_max=1.2, audio_rate_window_s=3.0
        ),
        storage=StoreHealth(tmp_path / "probe"),
        live=LiveParticipants(),
    )
    state.flow = StudyFlow(
        StudyConfig(enabled=study), Participants(tmp_path), "spaceinvaders", lambda: resolve_game("spaceinvaders")
    )
    ns = GameNamespace(state, closed.append, lambda fn: None)
    return ns, sent, closed


def errors(sent):
    return [(sid, data["code"], data["event"]) for event, sid, data in sent if event == "error"]


def test_flood_limiter_counts_per_second_and_per_client():
    clock = Clock()
    lim = FloodLimiter(3, clock)
    assert [lim.count("a") for _ in range(4)] == [1, 2, 3, 4]
    assert lim.count("b") == 1
    clock.t += 0.99
    assert lim.count("a") == 5
    clock.t += 0.01
    assert lim.count("a") == 1  # a new second
    lim.forget("a")
    assert lim.count("a") == 1


def test_errors_go_to_the_sender_with_the_event(tmp_path):
    ns, sent, _ = make_namespace(tmp_path)
    assert ns.trigger_event("connect", "S1", {}, None) is True
    ns.trigger_event("key", "S1", {"seq": 0, "t": 1.0, "key": "LEFT", "down": True})
    ns.trigger_event("key", "S1", "LEFT")
    ns.trigger_event("stop", "S1")
    ns.trigger_event("frobnicate" * 10, "S1", 1)
    ns.trigger_event(7, "S1", 1)
    ns.trigger_event("start", "S2", {"game": "pong"})
    ns.trigger_event("rejoin", "S2", {"session": "nope"})
    ns.trigger_event("instructions_done", "S2")
    assert errors(sent) == [
        ("S1", "no_session", "key"),
        ("S1", "bad_payload", "key"),
        ("S1", "no_session", "stop"),
        ("S1", "unknown_event", ("frobnicate" * 10)[:40]),
        ("S1", "unknown_event", "7"),
        ("S2", "unknown_game", "start"),
        ("S2", "unknown_session", "rejoin"),
        ("S2", "no_participant", "instructions_done"),
    ]


def test_a_failing_handler_is_an_internal_error_not_a_crash(tmp_path):
    ns, sent, _ = make_namespace(tmp_path)
    ns.registry.by_sid["S1"] = SimpleNamespace(gone=False, log_event=lambda *a, **k: 1 / 0)
    ns.trigger_event("audio_status", "S1", {"state": "muted"})
    assert errors(sent) == [("S1", "internal", "audio_status")]


def test_rtt_is_acknowledged_and_updates_the_session(tmp_path):
    ns, _, _ = make_namespace(tmp_path)
    assert ns.trigger_event("rtt", "S1", {"rtt_ms": 5}) == {"server_ms": None}  # no session: still acknowledged
    d = ns.registry.by_sid["S1"] = SimpleNamespace(rtt_ms=None, mic_level=0.2, ping=lambda t: {"server_ms": t})
    assert ns.trigger_event("rtt", "S1", {"rtt_ms": 12.5, "mic_level": "loud", "t": 7}) == {"server_ms": 7.0}
    assert (d.rtt_ms, d.mic_level) == (12.5, 0.2)


def test_a_flooding_client_is_told_once_and_its_engineio_connection_closed_once():
    told, closed = [], []
    guard = ConnectionGuard(5, lambda sid, data: told.append((sid, data["code"])), closed.append, clock=Clock())
    assert [guard.admit("E1") for _ in range(8)] == [True] * 5 + [False] * 3
    assert closed == ["E1"] and told == [("E1", "flood")]
    assert guard.admit("E2")  # others carry on
    guard.forget("E1")
    assert guard.admit("E1")  # a new connection may reuse nothing, but a forgotten id starts afresh


def test_the_guard_counts_undecodable_packets_and_refuses_many_attachments(caplog):
    told, closed, handled = [], [], []

    def handle(eio_sid, data):
        handled.append(data)
        raise ValueError("bad json")

    guard = ConnectionGuard(100, lambda sid, data: told.append(data["code"]), closed.append, clock=Clock())
    on_message = guard.wrap_message(handle)
    for _ in range(50):
        on_message("E1", "42[")
    assert len(handled) == 50 and closed == []
    assert sum("cannot decode" in r.message for r in caplog.records) == 1  # one line, not fifty tracebacks
    on_message("E1", "59999999999-[]")
    assert closed == ["E1"] and told == ["too_many_attachments"] and len(handled) == 50
    guard.forget("E1")
    assert any("50 undecodable packets" in r.message for r in caplog.records)
    assert [declared_attachments(p) for p in ("51-[", "42[", "52-/x,[", "5-[", 7)] == [1, 0, 2, 0, 0]


def test_the_study_events(tmp_path):
    ns, sent, _ = make_namespace(tmp_path, study=True)
    ns.trigger_event("hello", "S1", {"participant": "P-9"})
    ns.trigger_event("consent", "S1", {"accept": True})
    ns.trigger_event("instructions_done", "S1")
    ns.trigger_event("consent", "S2", {"accept": True})
    states = [(sid, data["stage"]) for event, sid, data in sent if event == "study_state"]
    assert states == [("S1", "consent"), ("S1", "instructions"), ("S1", "miccheck")]
    assert errors(sent) == [("S2", "no_participant", "consent")]
    ns.trigger_event("disconnect", "S1", "transport close")
    assert "S1" not in ns.participant_of
