"""deploy/Caddyfile in front of the server: Caddy (Debian's package) with its internal CA (`tls internal`, as a real
domain would get a Let's Encrypt certificate), reached by headless Chromium at study.example.org over HTTPS. A
participant goes through the study to the completion code, the game's WebSocket running through Caddy."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest
from browser_util import CHROMIUM, CHROMIUM_ARGS, pass_mic_check

CADDY = shutil.which("caddy")
if CADDY is None:
    pytest.skip("needs Debian's caddy (apt-get install -y caddy; scripts/test.sh installs it)", allow_module_level=True)
if not CHROMIUM.exists():
    pytest.skip(f"browser test needs Debian's chromium at {CHROMIUM}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser test needs the playwright package")
pytest.importorskip("cryptography", reason="the SPKI hash of Caddy's certificate needs cryptography")
expect = sync_api.expect

from helpers import ROOT, ServerProcess, free_port  # noqa: E402
from tls_util import STUDY_HOST, spki_hash  # noqa: E402

CODE = "CADDY42"


class Caddy:
    """`caddy run` on deploy/Caddyfile with the test's ports, its internal CA and a private data directory."""

    def __init__(self, tmp, upstream_port: int) -> None:
        self.https_port, http_port = free_port(), free_port()
        options = "\n".join(
            [
                "admin off",
                "default_bind 127.0.0.1",
                f"http_port {http_port}",
                f"https_port {self.https_port}",
                "skip_install_trust",  # the test trusts the certificate by its key, in the browser only
            ]
        )
        env = {
            **os.environ,
            "HOME": str(tmp),
            "XDG_DATA_HOME": str(tmp / "data"),
            "XDG_CONFIG_HOME": str(tmp / "config"),
            "CADDY_OPTIONS": options,
            "CADDY_TLS": "tls internal",
            "STUDY_DOMAIN": STUDY_HOST,
            "STUDY_UPSTREAM": f"127.0.0.1:{upstream_port}",
        }
        self.log_path = tmp / "caddy.log"
        self._log = open(self.log_path, "w")
        cmd = [CADDY, "run", "--config", str(ROOT / "deploy" / "Caddyfile"), "--adapter", "caddyfile"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.leaf = self._wait_for_certificate()

    def _wait_for_certificate(self, timeout: float = 30.0) -> bytes:
        """The certificate Caddy serves for the study's name (issued by its internal CA at start-up), DER."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"caddy exited:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.https_port), timeout=2) as raw:
                    with ctx.wrap_socket(raw, server_hostname=STUDY_HOST) as tls:
                        der = tls.getpeercert(binary_form=True)
                        if der:
                            return der
            except (OSError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"caddy served no certificate:\n{self.log_path.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def test_a_study_through_caddy_with_automatic_https(tmp_path):
    store = tmp_path / "store"
    server = ServerProcess(store, "--study", "--practice", "0", "--play-time", "2", "--completion-code", CODE)
    caddy = None
    try:
        assert "without TLS" not in server.log()  # behind a proxy on loopback: no warning
        caddy = Caddy(tmp_path, server.port)
        args = [
            *CHROMIUM_ARGS,
            f"--host-resolver-rules=MAP {STUDY_HOST} 127.0.0.1",
            f"--ignore-certificate-errors-spki-list={spki_hash(caddy.leaf)}",
        ]
        url = f"https://{STUDY_HOST}:{caddy.https_port}/?PROLIFIC_PID=CADDY1&STUDY_ID=S1&SESSION_ID=X1"
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
            try:
                page = browser.new_page(viewport={"width": 1366, "height": 657})
                page.goto(url)
                assert page.evaluate("() => window.isSecureContext") is True
                expect(page.locator("#consent")).to_be_visible(timeout=15_000)
                page.locator("#consent-accept").click()
                page.locator("#instr-done").click()
                pass_mic_check(page, expect)
                page.locator("#start").click()
                page.wait_for_function(
                    "() => window.__atari.playing && window.__atari.paintedCount > 30", timeout=10_000
                )
                expect(page.locator("#outcome[data-kind=completed]")).to_be_visible(timeout=20_000)
                expect(page.locator("#code")).to_have_text(CODE)
                transport = page.evaluate("() => window.__atari.audioSent")
                assert transport > 5, transport
            finally:
                browser.close()
    finally:
        if caddy is not None:
            caddy.stop()
        server.stop()
    (meta_path,) = store.glob("*_CADDY1_*/meta.json")
    meta = json.loads(meta_path.read_text())
    assert meta["status"] == "complete" and meta["client"]["recruitment"]["session_id"] == "X1", meta
    assert meta["timing"]["painted_frames"] > 60, meta["timing"]
