"""HTTPS and WSS served by the server itself (--certfile/--keyfile) under every async mode, and the start-up warning
of a server that other machines reach over plain HTTP (their browsers would not give the page the microphone)."""

from __future__ import annotations

import urllib.request

import pytest
from helpers import ScriptedDemonstrator, ServerProcess
from tls_util import make_certificates

from server.serve import is_loopback, plain_http_warning
from server.settings import Settings

pytest.importorskip("trustme", reason="the TLS tests make their certificates with trustme")


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A test CA and a certificate for study.example.org (and 127.0.0.1); (cafile, certfile, keyfile)."""
    c = make_certificates(tmp_path_factory.mktemp("tls"))
    return c.cafile, c.certfile, c.keyfile


@pytest.mark.parametrize("mode", ["eventlet", "gevent", "threading"])
def test_https_and_wss_under_every_async_mode(tmp_path, tls, mode):
    cafile, certfile, keyfile = tls
    server = ServerProcess(
        tmp_path / "store",
        "--async-mode",
        mode,
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
        "--episode-time-limit",
        "1",
        cafile=cafile,
    )
    try:
        assert server.url.startswith("https://")
        assert server.health()["ok"] is True  # verified against the test CA
        with pytest.raises(OSError):  # plain HTTP is not served on that port
            urllib.request.urlopen(server.url.replace("https://", "http://") + "/healthz", timeout=3)
        client = ScriptedDemonstrator(server.url, ssl_verify=False)  # WSS (python-socketio has no CA option)
        try:
            ep = client.start()
            client.wait_frames(30, timeout=20)
            end = client.wait_for(lambda: client.ends, timeout=20) or client.ends[-1]
            assert end["status"] == "complete" and ep["traj_id"] == end["traj_id"], end
        finally:
            client.close()
        assert "serving spaceinvaders on https://" in server.log()
        assert "without TLS" not in server.log()
    finally:
        server.stop()
    assert (tmp_path / "store" / ep["traj_id"] / "meta.json").exists()


def test_a_non_loopback_address_without_tls_warns_and_names_the_fix(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("study.example.org")
    assert plain_http_warning(Settings()) is None
    assert plain_http_warning(Settings(host="0.0.0.0", certfile="/etc/hostname", keyfile="/etc/hostname")) is None
    text = plain_http_warning(Settings(host="0.0.0.0"))
    assert text and "--certfile" in text and "deploy/Caddyfile" in text
    server = ServerProcess(tmp_path / "store", "--host", "0.0.0.0")
    try:
        assert "WARNING" in server.log() and "without TLS" in server.log() and "--certfile/--keyfile" in server.log()
    finally:
        server.stop()
