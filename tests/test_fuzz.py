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
    server = ServerProcess(base / "store", "--max-messages-per-s", "100000")
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
