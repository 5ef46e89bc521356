"""The online-study browser runs in the background (see conftest.py): one thread runs each module in turn by
pytest in a process of its own, and `result(module)` waits for its outcome."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = ("online_study.py", "caddy_study.py")
TIMEOUT_S = 900

_results: dict[str, subprocess.CompletedProcess | BaseException] = {}
_done = {m: threading.Event() for m in MODULES}
_procs: list[subprocess.Popen] = []
_started = False


def _run_all(work: Path) -> None:
    for module in MODULES:
        try:
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(work / module)]
            proc = subprocess.Popen(
                [*cmd, str(HERE / module)], cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            _procs.append(proc)
            out, err = proc.communicate(timeout=TIMEOUT_S)
            _results[module] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        except BaseException as e:  # reported by the test that waits for it
            _results[module] = e
        finally:
            _done[module].set()


def start_for(items) -> None:
    """Start the runs if test_browser_online.py is among the collected tests."""
    if any(Path(str(item.fspath)).name == "test_browser_online.py" for item in items):
        _start()


def _start() -> None:
    """Start the runs (once)."""
    global _started
    if _started:
        return
    _started = True
    work = Path(tempfile.mkdtemp(prefix="online-runs-"))
    threading.Thread(target=_run_all, args=(work,), daemon=True).start()


def result(module: str) -> subprocess.CompletedProcess:
    """Wait for the module's run (starting the runs now if nothing did) and return its outcome."""
    _start()
    if not _done[module].wait(2 * TIMEOUT_S):
        raise TimeoutError(f"{module} did not finish")
    r = _results[module]
    if isinstance(r, BaseException):
        raise r
    return r


def stop() -> None:
    for proc in _procs:
        if proc.poll() is None:
            proc.kill()
