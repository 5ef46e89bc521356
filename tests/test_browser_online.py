"""The online study in headless Chromium, over HTTPS at a host name (online_study.py), and through Caddy
(caddy_study.py), each run by pytest in a process of its own, started in the background when the suite is collected
(conftest.py, online_runs.py): here each case waits for its run and shows its output when it failed.

Run inside the whole suite's process, the first case of online_study.py failed and the module's teardown then hung
with the main thread inside an eventlet hub, twice in CI's order of modules; the same modules passed in every other
order and on their own. A process of its own gives Playwright a thread no earlier test has touched. The cases are
the same real browser, server, TLS and Caddy.
"""

from __future__ import annotations

import online_runs
import pytest


@pytest.mark.parametrize("module", online_runs.MODULES)
def test_the_online_study_passes_in_a_process_of_its_own(module):
    r = online_runs.result(module)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
