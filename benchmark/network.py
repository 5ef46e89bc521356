"""Real networks: headless Chromium plays through the network emulator (benchmark.netem) under a table of conditions,
and each recording is measured from its own files (scripts/bench_network.py; tests/test_browser_network.py).

Per condition: one episode with scripted keys and Chromium's fake microphone (a tone that comes and goes). The page
is loaded and the microphone checked on a clear path; the condition is switched on just before Start (so a thin
downlink does not spend the episode loading the page), and off again once the episode has closed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
import urllib.request
import wave
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from benchmark import ROOT
from benchmark.netem import Link, Proxy, link_from
from benchmark.nginx import free_port

SECTION = "Real networks"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@dataclass(frozen=True)
class Condition:
    """A path between the browser and the server; jitter is +- on each direction."""

    name: str
    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    up_kbps: float | None = None
    down_kbps: float | None = None
    stall_every_s: float | None = None
    stall_ms: float = 0.0

    def links(self) -> tuple[Link, Link]:
        """(up, down)."""
        return (
            link_from(self.rtt_ms, self.jitter_ms, self.up_kbps, self.stall_every_s, self.stall_ms),
            link_from(self.rtt_ms, self.jitter_ms, self.down_kbps, self.stall_every_s, self.stall_ms),
        )


CONDITIONS = (
    Condition("loopback"),
    Condition("100 ms RTT, ±20 ms", 100, 20),
    Condition("150 ms RTT, ±30 ms, 250 ms stall every 5 s", 150, 30, stall_every_s=5.0, stall_ms=250),
    Condition("600 kbit/s up, 100 ms RTT", 100, up_kbps=600),
    Condition("1 Mbit/s up, 100 ms RTT", 100, up_kbps=1000),
    Condition("48 kbit/s down, 100 ms RTT", 100, down_kbps=48),
)


def tone_wav(path: Path, seconds: float = 20.0, rate: int = 48000) -> Path:
    """A 440 Hz tone, on 0.6 s and off 0.4 s, for the fake microphone (loud enough for the microphone check)."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * ((t % 1.0) < 0.6)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


class Server:
    """`python -m server` on loopback, from this checkout."""

    def __init__(self, store: Path, *args: str) -> None:
        self.port = free_port()
        self.store = Path(store)
        self.store.mkdir(parents=True, exist_ok=True)
        self.log_path = self.store.parent / f"server-{self.port}.log"
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "server", "--port", str(self.port), "--store", str(self.store), *args]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def launch(playwright, wav: Path):
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
    )


#: What the page reports after an episode (window.__atari, see client/app.js).
PAGE_STATE = """() => { const a = window.__atari; return {
  traj_id: a.traj_id, errors: a.errors, keys: a.keyLog, shown: a.shownLog, skipped: a.skippedCount,
  audio_captured: a.audioCaptured, audio_rate: a.audioRate, slow_seen: a.slowSeen, audio_sent: a.audioSent,
  upload_seen: a.uploadSeen }; }"""

#: A demonstrator's keys: (key, held ms, gap ms), repeated until the episode ends.
KEY_SCRIPT = (("ArrowLeft", 180, 120), ("Space", 90, 160), ("ArrowRight", 220, 100), ("Space", 60, 240))


def pass_mic_check(page, timeout_ms: int = 20_000) -> None:
    page.locator("#mic-enable").click()
    page.wait_for_function("() => !document.getElementById('mic-test').disabled", timeout=timeout_ms)
    page.locator("#mic-test").click()
    page.wait_for_function("() => !!window.__atari.micTestResult", timeout=timeout_ms)
    page.wait_for_function("() => !document.getElementById('mic-continue').disabled", timeout=timeout_ms)
    page.locator("#mic-continue").click()
    page.wait_for_function("() => !document.getElementById('start').disabled", timeout=timeout_ms)


#: The key script run inside the page (`play(keys="page")`): the same keys and times as KEY_SCRIPT, dispatched as
#: KeyboardEvents to the page's own listeners by its own timers.
PAGE_KEYS = """(script) => {
  let i = 0;
  const step = () => {
    const a = window.__atari;
    if (!a.playing || a.stopping) return;
    const [key, hold, gap] = script[i++ % script.length];
    window.dispatchEvent(new KeyboardEvent("keydown", { key }));
    setTimeout(() => { window.dispatchEvent(new KeyboardEvent("keyup", { key })); setTimeout(step, gap); }, hold);
  };
  step();
}"""
KEY_NAMES = {"Space": " "}  # KeyboardEvent.key of Playwright's key names


def play(
    browser,
    url: str,
    proxy: Proxy,
    cond: Condition,
    pid: str,
    max_s: float,
    keys: str | None = "cdp",
    during=None,
) -> dict:
    """One episode through `proxy` under `cond` (the server ends it at its time limit); the page's report.

    `keys`: "cdp" presses KEY_SCRIPT's keys through Playwright (Chrome DevTools Protocol input events, as a user's
    keyboard reaches the page, through the browser's input pipeline), "page" runs the same script inside the page
    (PAGE_KEYS), None presses nothing. While the page's own thread held the socket, each CDP key event delayed
    some frames' arrival at the page by 5-17 ms on the 2-core VM, which the in-page script did not; the game's worker
    (client/game-worker.js) is not held up (docs/benchmarks.md, "Real networks"). `during(page)` is called
    about every 200 ms (between keys with "cdp") while the episode runs."""
    if keys not in ("cdp", "page", None):
        raise ValueError(f"keys must be 'cdp', 'page' or None, not {keys!r}")
    context = browser.new_context(viewport={"width": 1024, "height": 800})
    try:
        page = context.new_page()
        proxy.set(up=Link(), down=Link())
        page.goto(f"{url}/?pid={pid}")
        pass_mic_check(page)
        up, down = cond.links()
        proxy.set(up=up, down=down)
        page.wait_for_timeout(1200)  # a few pings on the new path
        page.locator("#start").click()
        page.wait_for_function("() => window.__atari.playing", timeout=30_000)
        if keys == "page":
            page.evaluate(PAGE_KEYS, [[KEY_NAMES.get(k, k), hold, gap] for k, hold, gap in KEY_SCRIPT])
        deadline = time.monotonic() + max_s
        i = 0
        while time.monotonic() < deadline and page.evaluate("() => window.__atari.playing && !window.__atari.stopping"):
            if during is not None:
                during(page)
            if keys == "cdp":
                key, hold, gap = KEY_SCRIPT[i % len(KEY_SCRIPT)]
                page.keyboard.down(key)
                page.wait_for_timeout(hold)
                page.keyboard.up(key)
                page.wait_for_timeout(gap)
                i += 1
            else:
                page.wait_for_timeout(200)
        page.wait_for_function("() => !window.__atari.playing", timeout=(max_s + 120) * 1000)
        report = page.evaluate(PAGE_STATE)
        proxy.set(up=Link(), down=Link())
        return report
    finally:
        context.close()


@dataclass
class Row:
    """One condition's figures."""

    condition: str
    frames: int = 0
    visible: float = math.nan
    paint_p50: float = math.nan
    paint_p99: float = math.nan
    paint_max: float = math.nan
    stalls_50: int = 0
    stalls_100: int = 0
    rtt_p50: float = math.nan
    key_p50: float = math.nan
    key_p95: float = math.nan
    key_max: float = math.nan
    keys_sent: int = 0
    keys_recorded: int = 0
    audio_captured: int = 0
    audio_received: int = 0
    audio_format: str = ""
    not_sent: int = 0
    warned: bool = False
    verified: bool = False
    status: str = ""
    #: Conditions with stalls only (see stall_figures): frames visible outside the stalls and their catch-up seconds,
    #: the longest catch-up after a stall (s), and freezes over 50 ms within a second after a stall's own freeze.
    visible_outside: float = math.nan
    catchup_max_s: float = math.nan
    refreezes: int = 0
    notes: list[str] = field(default_factory=list)


def wait_closed(traj_dir: Path, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            meta = json.loads((traj_dir / "meta.json").read_text())
            if meta.get("status") not in (None, "recording"):
                return meta
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{traj_dir.name} did not close")
        time.sleep(0.2)


#: After a stall the display has this long to catch up (the issue's goal); frames sent in it count with the stall.
CATCHUP_S = 1.0
#: Frames sent this close to a stall's edges (ms) count with it (the clocks of proxy and recording differ by a few ms)
STALL_MARGIN_MS = 50.0


def stall_figures(
    server_ms: np.ndarray,
    paint_server_ms: np.ndarray,
    shown: np.ndarray,
    stall_ends_ms: np.ndarray,
    stall_ms: float,
    one_way_ms: float,
) -> tuple[float, float, int]:
    """(frames visible outside the stalls, the longest catch-up in s, freezes again) of one episode on a path that
    stalls: `server_ms` when each frame was stepped, `paint_server_ms` when it was painted (on the same episode clock;
    NaN if never), `shown`, and when each stall of the downlink ended (episode clock, ms).

    A frame counts with a stall when it reached the path during the stall or in the CATCHUP_S after it (sent up to
    `one_way_ms` earlier). Catch-up: from the stall's end to the paint of the first frame sent after it whose latency
    (paint - step) is back within two frames of the episode's median outside the stalls. Freezes again: paint
    intervals over 50 ms in the CATCHUP_S after the stall's own freeze (the interval that spans its end)."""
    arrive = server_ms + one_way_ms
    near = np.zeros(len(server_ms), dtype=bool)
    for end in stall_ends_ms:
        near |= (arrive >= end - stall_ms - STALL_MARGIN_MS) & (arrive < end + CATCHUP_S * 1000.0)
    outside = ~near
    visible = float(shown[outside].mean()) if outside.any() else math.nan
    lat = paint_server_ms - server_ms
    normal = np.nanmedian(lat[outside & shown]) if (outside & shown).any() else math.nan
    painted = shown & np.isfinite(paint_server_ms)
    paints = np.sort(paint_server_ms[painted])
    gaps = np.flatnonzero(np.diff(paints) > 50.0)  # interval i: paints[i] -> paints[i + 1]
    catchups, refreezes = [], 0
    for end in stall_ends_ms:
        after = painted & (arrive >= end) & (lat <= normal + 2 * 1000 / 60)
        if after.any():
            catchups.append((float(paint_server_ms[after].min()) - end) / 1000.0)
        own = gaps[paints[gaps + 1] >= end]
        if own.size:
            freeze_end = paints[own[0] + 1]
            again = gaps[(paints[gaps] >= freeze_end) & (paints[gaps + 1] <= freeze_end + CATCHUP_S * 1000.0)]
            refreezes += int(again.size)
    return visible, (max(catchups) if catchups else math.nan), refreezes


def measure(
    store_dir: Path, cond: Condition, page: dict, verify: bool = True, connections: list[dict] | None = None
) -> Row:
    """The figures of one episode, from its files (the loader: server.dataset) and what the page counted."""
    from server.core.replay import verify as verify_trajectory
    from server.dataset.latency import key_latencies
    from server.dataset.trajectory import load
    from server.settings import Settings

    traj_id = page["traj_id"]
    meta = wait_closed(store_dir / traj_id)
    store = Settings(store=str(store_dir)).open_store()
    traj = load(store, traj_id, speech=False)
    row = Row(cond.name, frames=len(traj), status=f"{meta['status']}/{meta['end_reason']}")
    shown = traj.shown if traj.shown is not None else ~np.isnan(traj.display_ms)
    row.visible = float(shown.mean()) if len(traj) else math.nan
    d = np.diff(traj.display_ms[shown])
    if d.size:
        row.paint_p50, row.paint_p99, row.paint_max = (float(np.percentile(d, q)) for q in (50, 99, 100))
        row.stalls_50, row.stalls_100 = int((d > 50).sum()), int((d > 100).sum())
    conn = meta.get("connection") or {}
    if cond.stall_every_s and connections:
        # the connection that carried the frames (the WebSocket's), and its stalls on the episode's clock
        epoch_wall = max(connections, key=lambda c: c["down_bytes"])["epoch_wall"]
        t0 = datetime.fromisoformat(meta["start_utc"].replace("Z", "+00:00")).timestamp()
        base, period = (epoch_wall - t0) * 1000.0, cond.stall_every_s * 1000.0  # stalls end at base + k * period
        k = np.arange(math.ceil(-base / period), math.floor((float(traj.server_ms[-1]) - base) / period) + 1)
        ends = base + k * period
        paint = traj.display_ms + float(conn.get("paint0_client_ms") or 0.0) + float(conn.get("clock_offset_ms") or 0.0)
        row.visible_outside, row.catchup_max_s, row.refreezes = stall_figures(
            np.asarray(traj.server_ms, dtype=float), paint, shown, ends, cond.stall_ms, cond.rtt_ms / 2.0
        )
    row.rtt_p50 = float((conn.get("rtt_ms") or {}).get("p50", math.nan))
    lat = key_latencies(store, traj_id)
    lat = lat[np.isfinite(lat)]
    if lat.size:
        row.key_p50, row.key_p95, row.key_max = (float(np.percentile(lat, q)) for q in (50, 95, 100))
    with open(store_dir / traj_id / "events.csv", newline="") as f:
        recorded = {int(r["seq"]) for r in csv.DictReader(f) if r["event"] == "key"}
    sent = {k["seq"] for k in page["keys"]}
    row.keys_sent, row.keys_recorded = len(sent), len(sent & recorded)
    row.audio_captured = int(page["audio_captured"] or 0)
    row.audio_received = int((meta.get("speech") or {}).get("samples_received") or 0)
    row.audio_format = meta.get("audio_format", "")
    row.not_sent = int(conn.get("frames_not_sent") or 0)
    row.warned = bool(page.get("slow_seen")) or bool(conn.get("slow_periods"))
    if verify:
        try:
            verify_trajectory(store, traj_id)
            row.verified = True
        except Exception as e:  # the table says no; the reason goes in the notes
            row.notes.append(f"verify: {e}")
    return row


def run(
    conditions,
    seconds: float,
    workdir: Path,
    audio_format: str = "pcm16k",
    server_args: tuple[str, ...] = (),
    keys: str = "cdp",
) -> list[Row]:
    """Every condition, one episode of `seconds` each, on one server and one browser (`keys`: see `play`)."""
    from playwright.sync_api import sync_playwright

    wav = tone_wav(workdir / "tone.wav")
    server = Server(
        workdir / "store", "--episode-time-limit", str(seconds), "--audio-format", audio_format, *server_args
    )
    rows = []
    try:
        with Proxy(("127.0.0.1", server.port)) as proxy, sync_playwright() as p:
            browser = launch(p, wav)
            try:
                for i, cond in enumerate(conditions):
                    n0 = len(proxy.connection_log)
                    page = play(browser, f"http://127.0.0.1:{proxy.port}", proxy, cond, f"NET{i}", seconds + 30, keys)
                    row = measure(server.store, cond, page, connections=proxy.connection_log[n0:])
                    print(json.dumps(asdict(row)), file=sys.stderr)
                    rows.append(row)
            finally:
                browser.close()
    finally:
        server.stop()
    return rows


def _f(v: float, digits: int = 0) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def table(rows: list[Row]) -> str:
    head = (
        "| condition | frames visible | outside stalls: visible / catch-up max / freezes after "
        "| paint interval p50 / p99 / max (ms) | stalls >50 / >100 ms | RTT p50 (ms) "
        "| key-to-display p50 / p95 / max (ms) | keys recorded / sent | audio received / captured | frames not sent "
        "| warned | verifies |"
    )
    lines = [head, "|" + " --- |" * 12]
    for r in rows:
        stalls = (
            "–"
            if math.isnan(r.visible_outside)
            else f"{r.visible_outside:.1%} / {_f(r.catchup_max_s, 2)} s / {r.refreezes}"
        )
        audio = f"{r.audio_received / max(r.audio_captured, 1):.1%} ({r.audio_format})" if r.audio_captured else "–"
        lines.append(
            f"| {r.condition} | {r.visible:.1%} | {stalls} "
            f"| {_f(r.paint_p50, 1)} / {_f(r.paint_p99, 1)} / {_f(r.paint_max)} "
            f"| {r.stalls_50} / {r.stalls_100} | {_f(r.rtt_p50)} | {_f(r.key_p50)} / {_f(r.key_p95)} / {_f(r.key_max)} "
            f"| {r.keys_recorded} / {r.keys_sent} | {audio} | {r.not_sent} | {'yes' if r.warned else 'no'} "
            f"| {'yes' if r.verified else 'NO'} |"
        )
    return "\n".join(lines)
