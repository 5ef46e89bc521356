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


def pytest_collection_finish(session) -> None:
    # under pytest-xdist every worker collects every test, and only one runs test_browser_online.py: there the runs
    # start when that module asks for them (online_runs.result), while the other worker goes on with its own files
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        online_runs.start_for(session.items)


def pytest_sessionfinish(session, exitstatus) -> None:
    online_runs.stop()
