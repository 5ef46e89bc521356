"""Screenshots of every page a participant sees, at 1366x768, into docs/screenshots/ (the README shows the main ones).

    python scripts/screenshots.py [--out docs/screenshots]

Runs `python -m server --study` on loopback (and a second one with --max-rtt-ms 0 for a failed entry check) and
drives Debian's headless Chromium (Playwright) with its fake microphone through the study: the entry checks (and
what a participant reads when one fails: plain HTTP at a host name, a slow connection), consent, instructions, the
microphone check, the game, and the outcomes (completed, declined, screened out, already completed). The PNGs are
reduced to a 64-colour palette to stay small.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
HOST = "study.example.org"  # a name that is not localhost, for the insecure-connection page
VIEWPORT: Any = {"width": 1366, "height": 768}  # Playwright's ViewportSize
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(store: Path, *args: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "server", "--port", str(port), "--store", str(store), "--study", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


def _shrink(path: Path) -> None:
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = p.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        study, port = _server(
            Path(tmp) / "store",
            "--game",
            "mspacman",
            "--practice",
            "20",
            "--play-time",
            "600",
            "--completion-code",
            "C1234ABC",
            "--completion-url",
            "https://app.prolific.com/submissions/complete?cc={code}",
            "--declined-code",
            "CDECLINE",
        )
        slow, slow_port = _server(Path(tmp) / "slow", "--max-rtt-ms", "0", "--screened-code", "CSCREEN")
        done, done_port = _server(
            Path(tmp) / "done", "--practice", "0", "--play-time", "2", "--completion-code", "C1234ABC"
        )
        base = f"http://127.0.0.1:{port}/?PROLIFIC_PID=%s&STUDY_ID=S1&SESSION_ID=X1"
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport=VIEWPORT)

                def shot(name: str) -> None:
                    page.wait_for_timeout(300)
                    path = args.out / f"{name}.png"
                    page.screenshot(path=str(path))
                    shots.append(path)

                def visit(url: str, wait_for: str, name: str) -> None:
                    page.goto(url)
                    expect(page.locator(wait_for).first).to_be_visible(timeout=15_000)
                    shot(name)

                def click(button: str, wait_for: str, name: str) -> None:
                    page.locator(button).click()
                    expect(page.locator(wait_for)).to_be_visible(timeout=5_000)
                    shot(name)

                visit(f"http://{HOST}:{port}/?PROLIFIC_PID=SHOT0", "#entry-reasons li", "01-entry-insecure")
                visit(
                    f"http://127.0.0.1:{slow_port}/?PROLIFIC_PID=SHOT1", "#entry-reasons li", "02-entry-slow-connection"
                )
                click("#entry-giveup", "#outcome", "03-outcome-screened")
                visit(base % "SHOT2", "#consent", "04-consent")
                click("#consent-decline", "#outcome", "05-outcome-declined")

                page.goto(base % "SHOT3")
                expect(page.locator("#consent")).to_be_visible(timeout=15_000)
                page.locator("#consent-accept").click()
                expect(page.locator("#instructions")).to_be_visible(timeout=5_000)
                shot("06-instructions")
                page.locator("#instr-done").click()
                page.locator("#mic-enable").click()
                expect(page.locator("#mic-test")).to_be_enabled(timeout=10_000)
                page.locator("#mic-test").click()
                expect(page.locator("#mic-continue")).to_be_enabled(timeout=10_000)
                shot("07-microphone-check")
                page.locator("#mic-continue").click()
                expect(page.locator("#start")).to_be_enabled(timeout=5_000)
                shot("08-game-start")
                page.locator("#start").click()
                page.wait_for_function("() => window.__atari.paintedCount > 200", timeout=15_000)
                page.keyboard.down("ArrowLeft")
                page.wait_for_timeout(1500)
                page.keyboard.up("ArrowLeft")
                shot("09-game-playing")

                page.goto(f"http://127.0.0.1:{done_port}/?PROLIFIC_PID=SHOT4")
                expect(page.locator("#consent")).to_be_visible(timeout=15_000)
                page.locator("#consent-accept").click()
                page.locator("#instr-done").click()
                page.locator("#mic-enable").click()
                expect(page.locator("#mic-test")).to_be_enabled(timeout=10_000)
                page.locator("#mic-test").click()
                expect(page.locator("#mic-continue")).to_be_enabled(timeout=10_000)
                page.locator("#mic-continue").click()
                page.locator("#start").click()
                expect(page.locator("#outcome")).to_be_visible(timeout=20_000)
                shot("10-outcome-completed")
                page.reload()
                expect(page.locator("#outcome")).to_be_visible(timeout=15_000)
                shot("11-outcome-already-completed")
                browser.close()
        finally:
            for proc in (study, slow, done):
                proc.terminate()
                proc.wait(20)
    for path in shots:
        _shrink(path)
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
