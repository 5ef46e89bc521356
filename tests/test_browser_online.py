"""The online study in headless Chromium, over HTTPS at a host name (online_study.py), and through Caddy
(caddy_study.py), each run by pytest in a process of its own.

Run inside the whole suite's process, the first case of online_study.py failed and the module's teardown then hung
with the main thread inside an eventlet hub, twice in CI's order of modules; the same modules passed in every other
order and on their own. A process of its own gives Playwright a thread no earlier test has touched. The cases are
the same real browser, server, TLS and Caddy; their output is shown when one fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("module", ["online_study.py", "caddy_study.py"])
def test_the_online_study_passes_in_a_process_of_its_own(module, tmp_path):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "pt")]
    r = subprocess.run([*cmd, str(HERE / module)], cwd=HERE.parent, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
