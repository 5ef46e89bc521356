"""Suite-wide hooks.

The online-study browser runs (tests/test_browser_online.py: online_study.py and caddy_study.py, each by pytest in
a process of its own) start in the background as soon as they are collected, so the minute they take overlaps the
admin and annotation modules that run first (functional tests with no timing in them) instead of adding to the
suite's time (in one process; under pytest-xdist, see below). test_browser_online.py then waits for each and asserts
its outcome.
"""

from __future__ import annotations

import os

import online_runs
import pytest


def pytest_collection_finish(session) -> None:
    # under pytest-xdist every worker collects every test, and only one runs test_browser_online.py: there the runs
    # start when that module asks for them (online_runs.result), while the other worker goes on with its own files
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        online_runs.start_for(session.items)


def pytest_sessionfinish(session, exitstatus) -> None:
    online_runs.stop()


# Files that drive a browser (Chromium, a page at 60 Hz, a fake microphone) run one after another on one pytest-xdist
# worker, first, while the other worker takes the rest a file at a time: two browsers at once on two cores starved
# both (a page measured its display at 43 Hz; a fake microphone drifted 0.2%). scripts/test.sh: --dist loadgroup.
BROWSER_FILES = {
    "test_admin_monitor.py",
    "test_browser.py",
    "test_browser_network.py",
    "test_browser_online.py",
    "test_browser_speech.py",
    "test_browser_study.py",
    "test_replay_page.py",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    browser = [i for i in items if i.path.name in BROWSER_FILES]
    rest = [i for i in items if i.path.name not in BROWSER_FILES]
    for item in browser:
        item.add_marker(pytest.mark.xdist_group("browser"))
    for item in rest:
        item.add_marker(pytest.mark.xdist_group(item.path.name))
    items[:] = browser + rest
