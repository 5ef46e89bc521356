"""Random and malformed payloads to every socket event and route, for a bounded time (hypothesis).

No crash, no file written outside the store, and the demonstrator playing meanwhile keeps 60 Hz.
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from helpers import ROOT, ScriptedDemonstrator, ServerProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.web.sockets import GameNamespace

# every event the server handles, the reserved names, and names it does not handle
EVENTS = [*sorted(GameNamespace.EVENTS), "connect", "disconnect", "message", "json", "error", "frame"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=True)
    | st.text(max_size=50)
    | st.binary(max_size=200),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
key_like = st.fixed_dictionaries(
    {},
    optional={
        "seq": json_values | st.integers(-5, 10**6),
        "t": json_values | st.floats(),
        "key": st.sampled_from(["LEFT", "RIGHT", "UP", "DOWN", "FIRE", "left", "", "../"]) | st.text(max_size=5),
        "down": json_values,
        "first_sample": json_values | st.integers(-5, 10**12),
        "rate": st.integers(-1, 200_000) | json_values,
        "pcm": st.binary(max_size=4000) | json_values,
        "session": st.text(max_size=70),
        "participant": st.text(max_size=70),
        "game": st.text(max_size=20) | st.sampled_from(["spaceinvaders", "pong", "../../etc"]),
        "accept": json_values,
    },
)
ROUTES = [
    "/",
    "/static/",
    "/api/trajectories/",
    "/api/admin/sessions",
    "/admin",
    "/replay/",
    "/healthz",
    "/api/replay/",
]


def snapshot(*roots):
    files = set()
    for root in roots:
        for p in root.rglob("*"):
            if (
                p.is_file()
                and ".git" not in p.parts
                and "__pycache__" not in p.parts
                and ".pytest_cache" not in p.parts
                and ".hypothesis" not in p.parts
            ):
                files.add(p)
    return files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    before = snapshot(ROOT, base)
    server = ServerProcess(base / "store", "--max-messages-per-s", "100000", "--preload-emulators", "1")
    good = ScriptedDemonstrator(server.url)
    good.start(participant="STEADY")
    fuzzer = ScriptedDemonstrator(server.url, decode=False, ack=False)
    yield {
        "server": server,
        "good": good,
        "fuzzer": fuzzer,
        "base": base,
        "before": before,
        "t0": time.monotonic(),
        "n0": len(good.frames),
    }
    good.close()
    fuzzer.close()
    server.stop()


def _fuzzer(world):
    f = world["fuzzer"]
    if not f.sio.connected:  # an oversize message closes the connection: open another
        f.close()
        world["fuzzer"] = f = ScriptedDemonstrator(world["server"].url, decode=False, ack=False)
    return f


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(event=st.sampled_from(EVENTS) | st.text(max_size=30), payload=key_like | json_values)
def test_socket_events_survive_random_payloads(world, event, payload):
    f = _fuzzer(world)
    try:
        f.sio.emit(event, payload)
    except Exception:
        pass  # the client library refuses some payloads itself; the server never sees them


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ROUTES), tail=st.text(max_size=40), query=st.text(max_size=40))
def test_routes_survive_random_paths(world, route, tail, query):
    url = world["server"].url + route + urllib.parse.quote(tail, safe="/%.") + "?" + urllib.parse.quote(query)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    assert status < 500, url


RAW_PACKETS = st.sampled_from(
    [
        "",  # truncated: nothing at all
        "4",  # an empty Socket.IO message
        "42",  # an event with no payload
        "42[",  # truncated JSON
        '42["key"',
        "9",  # an Engine.IO type that does not exist
        "5",  # an upgrade after the upgrade
        "6",
        "2",
        "43",  # an ack nobody asked for
        "47",  # a Socket.IO type that does not exist
        "41/x,",  # leave a namespace never joined
        '42/nowhere,["start",{}]',  # the wrong namespace
        '40/admin,{"token":1}',
        '451-["audio",{"_placeholder":true,"num":5}]',  # a placeholder past the attachments
        '459999999999-["audio",{"_placeholder":true,"num":0}]',  # a 10-digit attachment count
        '4599999999999-["audio",{}]',  # 11 digits
        "4" + "9" * 200,  # an absurd ack id
        '42["connect",{}]',
        '42["disconnect"]',
    ]
)


def _raw(world):
    import websocket

    url = world["server"].url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, timeout=5)
    ws.recv()
    ws.send("40")
    return ws


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    packets=st.lists(RAW_PACKETS | st.text(max_size=30).map(lambda t: "4" + t), min_size=1, max_size=8),
    flood=st.integers(1, 200),
    fragments=st.integers(1, 4),
)
def test_raw_engineio_and_socketio_packets_and_floods_of_them(world, packets, flood, fragments):
    """Raw packets a library client never sends, over a raw WebSocket: singly, fragmented, and in floods."""
    import websocket

    try:
        ws = _raw(world)
        for p in packets:
            data = p.encode()
            step = max(1, len(data) // fragments)
            parts = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
            for i, part in enumerate(parts):
                opcode = websocket.ABNF.OPCODE_TEXT if i == 0 else websocket.ABNF.OPCODE_CONT
                ws.send_frame(websocket.ABNF.create_frame(part, opcode, fin=int(i == len(parts) - 1)))
        for _ in range(flood):
            ws.send(packets[-1])
        ws.close()
    except (websocket.WebSocketException, OSError):
        pass  # the server closed the connection: what some of these must get


def test_after_the_fuzzing(world):
    server, good = world["server"], world["good"]
    time.sleep(1)
    assert server.proc.poll() is None and server.health()["ok"]
    assert good.errors == [] and good.sio.connected
    elapsed = time.monotonic() - world["t0"]
    end = good.stop_episode()
    meta = json.loads((server.store / end["traj_id"] / "meta.json").read_text())
    # the server stepped the demonstrator's game at 60 Hz throughout (its own clock, not this busy test process's)
    assert meta["timing"]["interval_ms_mean"] == pytest.approx(1000 / 60, abs=0.5)
    assert end["frames"] >= 60 * elapsed * 0.95
    assert "Traceback" not in server.log()
    after = snapshot(ROOT, world["base"])
    outside = {p for p in after - world["before"] if server.store not in p.parents and p != server.log_path}
    assert outside == set(), sorted(outside)[:10]
