"""Two server processes behind nginx (deploy/nginx.conf) on loopback: a session plays through the proxy, its recording
lands in the shared store and verifies, and ip_hash keeps one client address on one process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
import urllib.request

import pytest
from helpers import ScriptedDemonstrator, ServerProcess

from benchmark import loadgen
from benchmark.nginx import DEPLOY_CONF, LocalNginx, balanced_sources, ensure_nginx, render_conf
from server.core import format as fmt
from server.core.replay import verify
from server.store import open_store

TOKEN = "nginx-test-token"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    nginx, why = ensure_nginx(timeout_s=240)
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail(f"nginx is required in CI: {why}")
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("nginx")
    store = tmp / "store"
    servers: list[ServerProcess] = []
    errors: list[Exception] = []

    def boot():
        try:
            servers.append(ServerProcess(store, "--max-demonstrators", "4", env={"RESEARCHER_TOKEN": TOKEN}))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=boot) for _ in range(2)]  # both processes share one store
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    proxy = None
    try:
        assert not errors and len(servers) == 2, errors
        proxy = LocalNginx([f"127.0.0.1:{s.port}" for s in servers], tmp / "nginx", nginx=nginx, workers=1).start()
        yield proxy, servers, store
    finally:
        if proxy is not None:
            proxy.stop()
        for s in servers:
            s.stop()


def counts(servers) -> list[int]:
    return [s.health()["demonstrators"] for s in servers]


def wait_counts(servers, want, timeout=10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (got := counts(servers)) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_the_shipped_config_is_complete():
    text = DEPLOY_CONF.read_text()
    for directive in (
        "ip_hash;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection",
        "proxy_set_header Host $http_host;",
        "proxy_read_timeout",
        "tcp_nodelay on;",
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        "listen 443 ssl;",
        "ssl_certificate ",
        "ssl_certificate_key ",
        "return 301 https://$host$request_uri;",
    ):
        assert directive in text, directive


def test_the_shipped_config_with_tls_passes_nginx_t(tmp_path):
    """The shipped file as nginx reads it, with a test certificate at its ssl_certificate paths."""
    nginx, why = ensure_nginx(timeout_s=240)
    if nginx is None:
        pytest.skip(why)
    pytest.importorskip("trustme", reason="needs trustme for a test certificate")
    from tls_util import make_certificates

    certs = make_certificates(tmp_path / "tls")
    (tmp_path / "tmp").mkdir()
    conf = tmp_path / "nginx.conf"
    text = render_conf(
        DEPLOY_CONF.read_text(),
        "127.0.0.1:1",
        ["127.0.0.1:2"],
        tmp_path,
        tls=(str(certs.certfile), str(certs.keyfile)),
    )
    assert "listen 127.0.0.1:1 ssl;" in text and str(certs.keyfile) in text and "return 301" not in text
    conf.write_text(text)
    check = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_a_session_through_nginx_is_recorded_in_the_shared_store_and_verifies(stack):
    proxy, servers, store = stack
    with urllib.request.urlopen(proxy.url + "/", timeout=5) as r:
        assert r.status == 200 and "Content-Security-Policy" in r.headers
    d = ScriptedDemonstrator(proxy.url)
    try:
        ep = d.start(participant="viaNginx")
        d.wait_frames(60, timeout=20)
        d.key("FIRE", True)
        d.wait_frames(len(d.frames) + 15, timeout=20)
        d.key("FIRE", False)
        d.key("LEFT", True)
        d.wait_frames(len(d.frames) + 15, timeout=20)
        end = d.stop_episode()
    finally:
        d.close()
    assert not d.errors
    assert sorted(d.frames) == list(range(len(d.frames))) and len(d.frames) >= 90  # every frame, none twice
    assert d.screen is not None  # xor frames decoded through the proxy
    traj = end["traj_id"]
    assert traj == ep["traj_id"]
    meta = json.loads((store / traj / fmt.META).read_text())
    assert meta["status"] == fmt.STATUS_COMPLETE and meta["frames"] == end["frames"]
    assert verify(open_store(str(store)), traj) == end["frames"]
    assert wait_counts(servers, [0, 0]) == [0, 0]


def test_one_client_address_stays_on_one_process(stack):
    proxy, servers, _ = stack
    first = ScriptedDemonstrator(proxy.url)
    second = None
    try:
        first.start(participant="stickyA")
        after_one = counts(servers)
        assert sorted(after_one) == [0, 1]
        second = ScriptedDemonstrator(proxy.url)  # the same address loads the page again
        second.start(participant="stickyB")
        after_two = counts(servers)
        assert after_two == [2 * c for c in after_one]
        for d in (first, second):
            d.stop_episode()  # a dropped connection would keep its episode waiting for a reconnect
    finally:
        for d in (first, second):
            if d is not None:
                d.close()
    assert wait_counts(servers, [0, 0]) == [0, 0]


def monitor_through(proxy) -> dict:
    req = urllib.request.Request(proxy.url + "/api/monitor", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_different_client_addresses_spread_over_both_processes(stack):
    """ip_hash on the first three octets: 127.0.k.1 addresses chosen to fall on different processes do. The study
    monitor, asked through nginx (so by one of the processes), shows the demonstrators of both: each process
    publishes its live participants in the shared spool."""
    proxy, servers, _ = stack
    seen: dict = {}

    async def play():
        sessions = [loadgen.Session(i, proxy.url, f"spread{i}") for i in range(2)]
        try:
            for s, source in zip(sessions, balanced_sources(2, 2), strict=True):
                await s.connect(source)
                await s.start()
            await asyncio.sleep(0.3)
            spread = counts(servers)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                view = await asyncio.to_thread(monitor_through, proxy)
                rows = {r["participant"]: r for r in view["participants"] if r["participant"].startswith("spread")}
                if len(rows) == 2 and all(r["connected"] for r in rows.values()):
                    break
                await asyncio.sleep(0.3)
            seen.update(view=view, rows=rows)
            for s in sessions:
                await s.stop()
            return spread, [len(s.episodes[-1].arrivals) for s in sessions]
        finally:
            for s in sessions:
                s.close()

    spread, frames = asyncio.run(play())
    assert spread == [1, 1]
    assert sorted(seen["rows"]) == ["spread0", "spread1"], seen["view"]
    assert len({r["process"] for r in seen["rows"].values()}) == 2  # one on each process
    assert len(seen["view"]["processes"]) == 2 and seen["view"]["funnel"]["playing"] >= 2
    assert all(f > 0 for f in frames)
    assert wait_counts(servers, [0, 0]) == [0, 0]
