"""Payload parsing without a server: every malformed payload is a BadMessage with its code, good ones parse."""

import math

import pytest

from server.errors import AtariSpeechError, AudioRejected, BadMessage
from server.web import messages as msg

GAMES = ("spaceinvaders", "breakout")

NOT_OBJECTS = ["spaceinvaders", 7, 1.5, True, [1, 2], b"\x00"]


def code_of(fn, *args) -> str:
    with pytest.raises(BadMessage) as e:
        fn(*args)
    assert e.value.message and str(e.value) == e.value.message
    return e.value.code


def test_the_error_tree():
    assert issubclass(BadMessage, AtariSpeechError) and issubclass(AudioRejected, BadMessage)
    e = AudioRejected("too long", code="audio_too_large")
    assert (e.code, e.message) == ("audio_too_large", "too long")
    assert AudioRejected("rate").code == "audio_rejected"


@pytest.mark.parametrize("payload", NOT_OBJECTS)
@pytest.mark.parametrize(
    "parse", [msg.parse_rejoin, msg.parse_hello, msg.parse_audio_status, msg.parse_consent, msg.parse_mic_ok]
)
def test_object_events_refuse_anything_but_an_object(parse, payload):
    assert code_of(parse, payload) == "bad_payload"


@pytest.mark.parametrize("payload", NOT_OBJECTS)
def test_start_refuses_anything_but_an_object(payload):
    assert code_of(msg.parse_start, payload, GAMES) == "bad_payload"


def test_start():
    s = msg.parse_start(None, GAMES)
    assert s == msg.Start(None, {}, None)
    s = msg.parse_start({"game": "breakout", "participant": "../../P-1", "client": {"ua": "x"}}, GAMES)
    assert s.game.name == "breakout" and s.participant == "P1" and s.client == {"ua": "x"}
    assert msg.parse_start({"participant": 42, "client": None}, GAMES) == msg.Start(None, {}, None)


@pytest.mark.parametrize(
    "payload, code",
    [
        ({"game": "notagame"}, "unknown_game"),
        ({"game": "pong"}, "unknown_game"),  # a real ROM, but not offered
        ({"game": ["spaceinvaders"]}, "unknown_game"),
        ({"game": 5}, "unknown_game"),
        ({"game": "x" * 65}, "unknown_game"),
        ({"game": "../../etc/passwd"}, "unknown_game"),
        ({"client": "x"}, "bad_payload"),
        ({"client": [1]}, "bad_payload"),
        ({"client": {"blob": "x" * 5000}}, "bad_payload"),
    ],
)
def test_start_refusals(payload, code):
    assert code_of(msg.parse_start, payload, GAMES) == code


def test_unknown_game_names_what_is_offered():
    with pytest.raises(BadMessage) as e:
        msg.parse_start({"game": "pong"}, GAMES)
    assert "spaceinvaders, breakout" in e.value.message


@pytest.mark.parametrize("token", [None, 12, "", "A" * 65, ["t"], {"t": 1}])
def test_rejoin_needs_a_token(token):
    assert code_of(msg.parse_rejoin, {"session": token}) == "bad_payload"
    assert msg.parse_hello({"session": token}).session is None  # hello ignores it


def test_rejoin_and_hello():
    assert msg.parse_rejoin({"session": "abc"}) == "abc"
    assert msg.parse_hello({"session": "abc", "participant": "P 7!"}) == msg.Hello("abc", "P7")
    assert msg.parse_hello(None) == msg.Hello(None, None)


GOOD_KEY = {"seq": 3, "t": 12.5, "key": "LEFT", "down": True}


def test_key():
    assert msg.parse_key(GOOD_KEY) == msg.Key(3, 12.5, "LEFT", True)
    assert isinstance(msg.parse_key({**GOOD_KEY, "t": 12}).t, float)
    assert msg.parse_key({**GOOD_KEY, "seq": 2**53}).seq == 2**53


@pytest.mark.parametrize(
    "change",
    [
        {"seq": "1"},
        {"seq": -1},
        {"seq": 1.0},
        {"seq": True},
        {"seq": 2**53 + 1},
        {"seq": None},
        {"t": math.nan},
        {"t": math.inf},
        {"t": "1"},
        {"t": False},
        {"key": "ESCAPE"},
        {"key": "left"},
        {"key": "L" * 200_000},
        {"key": None},
        {"down": "yes"},
        {"down": 1},
        {"down": None},
    ],
)
def test_key_refusals(change):
    assert code_of(msg.parse_key, {**GOOD_KEY, **change}) == "bad_payload"


@pytest.mark.parametrize("payload", [None, [1, 2, 3], b"\x00\x01binary", "LEFT", 5, {}])
def test_key_refuses_non_keys(payload):
    assert code_of(msg.parse_key, payload) == "bad_payload"


def test_paint_acks():
    assert msg.parse_paint_acks([[0, 1], (5, 2.5)]) == [(0, 1.0, True), (5, 2.5, True)]
    assert msg.parse_paint_acks([[0, 1, 1], [1, 2, 0], [2, 3, False]]) == [
        (0, 1.0, True),
        (1, 2.0, False),
        (2, 3.0, False),
    ]
    assert msg.parse_paint_acks([]) == []
    assert len(msg.parse_paint_acks([[0, 1.0]] * msg.MAX_PAINT_ACKS)) == msg.MAX_PAINT_ACKS


@pytest.mark.parametrize(
    "payload",
    [
        {"frame": 1},
        None,
        "0,1",
        [[1, 2, 3]],
        [[1, 2, 0, 0]],
        [["a", 2]],
        [[-1, 2]],
        [[1.0, 2]],
        [[True, 2]],
        [[1, math.nan]],
        [[1, "2"]],
        [1, 2],
        [[1]],
        [[0, 1.0]] * (msg.MAX_PAINT_ACKS + 1),
    ],
)
def test_paint_ack_refusals(payload):
    assert code_of(msg.parse_paint_acks, payload) == "bad_payload"


GOOD_AUDIO = {"seq": 0, "first_sample": 0, "t": 10.0, "rate": 48000, "pcm": b"\x00\x00" * 10}


def test_audio():
    c = msg.parse_audio(GOOD_AUDIO)
    assert c == msg.AudioChunk(0, 0, 10.0, 48000, b"\x00\x00" * 10, None)
    c = msg.parse_audio({**GOOD_AUDIO, "pcm": bytearray(b"\x01\x02"), "painted": [[3, 4]]})
    assert type(c.pcm) is bytes and c.painted == [(3, 4.0, True)]
    assert msg.parse_audio({**GOOD_AUDIO, "painted": []}).painted == []


@pytest.mark.parametrize(
    "change",
    [
        {"seq": -1},
        {"seq": "0"},
        {"first_sample": -5},
        {"first_sample": 2**53 + 1},
        {"first_sample": 0.5},
        {"t": math.nan},
        {"t": None},
        {"rate": 48000.0},
        {"rate": "48000"},
        {"rate": False},
        {"pcm": "AAAA"},
        {"pcm": [0, 0]},
        {"pcm": None},
        {"painted": [[1, 2, 3]]},
        {"painted": None},
    ],
)
def test_audio_refusals(change):
    assert code_of(msg.parse_audio, {**GOOD_AUDIO, **change}) == "bad_payload"


@pytest.mark.parametrize("payload", [None, [], b"\x00\x00", "pcm"])
def test_audio_refuses_non_objects(payload):
    assert code_of(msg.parse_audio, payload) == "bad_payload"


def test_audio_status():
    for state in msg.AUDIO_STATES:
        assert msg.parse_audio_status({"state": state}) == state
    for bad in (None, "", "STALLED", 1, ["stalled"]):
        assert code_of(msg.parse_audio_status, {"state": bad}) == "bad_payload"
    assert code_of(msg.parse_audio_status, None) == "bad_payload"  # no payload: no state


def test_rtt_never_refuses():
    assert msg.parse_rtt({"rtt_ms": 12, "mic_level": 0.5})[:2] == (12.0, 0.5)
    assert msg.parse_rtt({"rtt_ms": -1, "mic_level": 1.5})[:2] == (None, None)
    assert msg.parse_rtt({"rtt_ms": 1e6, "mic_level": math.nan})[:2] == (None, None)
    assert msg.parse_rtt({"rtt_ms": True, "mic_level": "0.5"})[:2] == (None, None)
    ping = msg.parse_rtt({"t": 5.5, "last": [1, 2.5], "queue_ms": 40, "slip_ms": 6.5})
    assert ping == (None, None, 5.5, (1.0, 2.5), 40.0, None, 6.5)
    bad = {"t": "x", "last": [1, "2"], "queue_ms": -1, "slip_ms": -3}
    assert msg.parse_rtt(bad) == (None, None, None, None, None, None, None)
    for slip in (0, math.inf, "5", True):
        assert msg.parse_rtt({"slip_ms": slip}).slip_ms is None
    for payload in (None, 1, "x", [1], b""):
        assert msg.parse_rtt(payload) == (None, None, None, None, None, None, None)


def test_consent_and_mic_ok():
    assert msg.parse_consent({"accept": True}) is True
    for v in (1, "true", "yes", None, [True]):
        assert msg.parse_consent({"accept": v}) is False
    assert msg.parse_consent(None) is False
    assert msg.parse_mic_ok({"audio": {"label": "USB"}}) == {"label": "USB"}
    assert msg.parse_mic_ok({"audio": {"label": "x" * 5000}}) is None
    assert msg.parse_mic_ok({"audio": "USB"}) is None
    assert msg.parse_mic_ok(None) is None
