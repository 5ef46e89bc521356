"""A screenshot of the study monitor (/admin) with participants in every kind of stage, for the docs.

    python scripts/screenshot_monitor.py                  # -> docs/screenshots/monitor.png
    python scripts/screenshot_monitor.py --out /tmp/m.png

Starts `python -m server --study` on a free loopback port with a scratch store, walks five scripted participants
(python-socketio, as a browser would) to different stages (completed, practising, stuck at the microphone check, at
the consent form, declined), and photographs the monitor in headless Chromium (Playwright with Debian's
/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import socketio

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "screenshot-token"
CHROMIUM = "/usr/bin/chromium"


class Participant:
    """A scripted participant: the study's events, paint acks, and nothing else."""

    def __init__(self, url: str, pid: str) -> None:
        self.pid = pid
        self.states: list[dict] = []
        self.frames: list[int] = []
        self.ends = 0
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("study_state", self.states.append)
        self.sio.on("frame", self._frame)
        self.sio.on("episode_end", self._end)
        self.sio.connect(url, transports=["websocket"], wait_timeout=10)

    def _frame(self, data: bytes) -> None:
        self.frames.append(int.from_bytes(data[:4], "little"))
        if len(self.frames) % 6 == 0:
            self.sio.emit("painted", [[f, 0.0] for f in self.frames[-6:]])

    def _end(self, _data: dict) -> None:
        self.ends += 1

    def wait(self, cond, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.pid}: stuck at {self.states[-1:]}")
            time.sleep(0.02)

    def ask(self, event: str, payload: dict | None = None) -> dict:
        n = len(self.states)
        self.sio.emit(event, payload or {})
        self.wait(lambda: len(self.states) > n)
        return self.states[-1]

    def play(self, stop_after_frames: int | None = None) -> None:
        """Start the next game; stop it after some frames, or leave it running (None)."""
        ends, n = self.ends, len(self.frames)
        self.sio.emit("start", {})
        self.wait(lambda: len(self.frames) > n + (stop_after_frames or 30))
        if stop_after_frames is not None:
            self.sio.emit("stop")
            self.wait(lambda: self.ends > ends and self.states[-1]["stage"] != "practice")

    def to_stage(self, stage: str) -> None:
        view = self.ask("hello", {"participant": self.pid})
        while view["stage"] != stage:
            s = view["stage"]
            if s == "consent":
                view = self.ask("consent", {"accept": stage != "declined"})
            elif s == "instructions":
                view = self.ask("instructions_done")
            elif s == "miccheck":
                view = self.ask("mic_ok", {"audio": {"sample_rate": 48000}})
            elif s in ("practice", "episodes"):
                n = len(self.states)
                self.play(stop_after_frames=60 if s == "practice" else None)
                self.wait(lambda n=n: len(self.states) > n, 60)
                view = self.states[-1]
            else:
                break


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots" / "monitor.png"))
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "server", "--port", str(port), "--store", f"{tmp}/store", "--study"]
        cmd += ["--practice", "60", "--play-time", "2", "--stuck-after-s", "3", "--games", "pong,mspacman"]
        cmd += ["--preload-emulators", "2"]
        env = {**os.environ, "RESEARCHER_TOKEN": TOKEN, "PYTHONWARNINGS": "ignore"}
        with open(f"{tmp}/server.log", "w") as log:
            server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        people: list[Participant] = []
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError(Path(f"{tmp}/server.log").read_text()) from None
                    time.sleep(0.2)
            plan = [
                ("5F3A9CB2DONE", "done"),
                ("6A01B7PRACTISING", "practice"),
                ("61C2MICCHECK", "miccheck"),
                ("5E77CONSENT", "consent"),
                ("60D4DECLINED", "declined"),
            ]
            threads = []
            for pid, stage in plan:
                part = Participant(url, pid)
                people.append(part)
                threads.append(threading.Thread(target=part.to_stage, args=(stage,)))
                threads[-1].start()
            for t in threads:
                t.join(120)
            people[1].play()  # the practising participant is in the middle of the practice round
            people[1].sio.emit("rtt", {"rtt_ms": 38.0})
            time.sleep(4.5)  # long enough at the microphone check to be highlighted as stuck
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 760})
                page.goto(f"{url}/admin?token={TOKEN}")
                page.wait_for_selector("#trajectories tr[data-traj]", timeout=20_000)
                page.wait_for_selector("tr.stuck", timeout=20_000)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.out, full_page=True)
                browser.close()
        finally:
            for part in people:
                try:
                    part.sio.disconnect()
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
            server.terminate()
            server.wait(30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
