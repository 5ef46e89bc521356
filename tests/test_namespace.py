"""The Socket.IO namespace's dispatch without a server: errors, the flood limit, the study events."""

from types import SimpleNamespace

from server.core.registry import Registry
from server.games import resolve_game
from server.study import Participants, StudyConfig, StudyFlow
from server.web.sockets import FloodLimiter, GameNamespace


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
        settings=SimpleNamespace(max_messages_per_s=per_s, games=("spaceinvaders",)),
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


def test_a_flooding_client_is_told_once_and_disconnected_once(tmp_path):
    ns, sent, closed = make_namespace(tmp_path, per_s=5)
    for _ in range(20):
        ns.trigger_event("rtt", "S1", {})
    assert closed == ["S1"] and errors(sent) == [("S1", "flood", "*")]
    assert ns.trigger_event("rtt", "S2", {}) == {"server_ms": None}  # others carry on
    ns.trigger_event("disconnect", "S1", "client disconnect")
    assert ns.trigger_event("rtt", "S1", {}) == {"server_ms": None}  # a reconnect with the same sid starts afresh


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
