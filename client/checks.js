// Entry checks, run before the consent form (and before free play): what this browser and connection can do, measured
// here and judged by the server against its settings (--max-rtt-ms, --min-refresh-hz, --min-window). Protocol:
// the `entry_checks` event in docs/protocol.md.
"use strict";
window.EntryChecks = (() => {
  // What the client uses. In an insecure context the browser hides the microphone and AudioWorklet whatever the
  // browser: that is the "insecure" reason, not a missing feature.
  const FEATURES = {
    WebSocket: () => typeof WebSocket === "function",
    DecompressionStream: () => typeof DecompressionStream === "function",
    requestAnimationFrame: () => typeof requestAnimationFrame === "function",
    Worker: () => typeof Worker === "function",
    sessionStorage: () => { try { return !!window.sessionStorage; } catch (e) { return false; } },
    AudioContext: () => typeof AudioContext === "function",
    AudioWorklet: () => typeof AudioWorkletNode === "function", // secure contexts only
    getUserMedia: () => !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia), // secure contexts only
  };
  const SECURE_ONLY = new Set(["AudioWorklet", "getUserMedia"]);

  function missingFeatures() {
    const secure = window.isSecureContext === true;
    return Object.keys(FEATURES).filter((name) => !(secure === false && SECURE_ONLY.has(name)) && !FEATURES[name]());
  }

  // Frames the display shows a second, from requestAnimationFrame over about `ms` (its callbacks come once per
  // display refresh while the page is visible): from the median interval between them, so that a few refreshes the
  // page missed while it was busy loading do not fail a 60 Hz display (they did, at 43 Hz, on a loaded machine),
  // while a display that refreshes slowly (30 Hz, power saving, a background tab) shows in every interval.
  function refreshRate(ms = 1000) {
    return new Promise((resolve) => {
      const times = [];
      const tick = (t) => {
        times.push(t);
        if (t - times[0] < ms) { requestAnimationFrame(tick); return; }
        const gaps = times.slice(1).map((v, i) => v - times[i]).sort((a, b) => a - b);
        resolve(1000 / gaps[gaps.length >> 1]);
      };
      requestAnimationFrame(tick);
    });
  }

  // Round trips to the server with the `rtt` event (acknowledged at once), one after another; the median.
  async function roundTrips(socket, n = 7, timeoutMs = 3000) {
    const probes = [];
    for (let i = 0; i < n; i++) {
      const rtt = await new Promise((resolve) => {
        const t0 = performance.now();
        const timer = setTimeout(() => resolve(null), timeoutMs);
        socket.emit("rtt", {}, () => { clearTimeout(timer); resolve(performance.now() - t0); });
      });
      if (rtt !== null) probes.push(Math.round(rtt * 10) / 10);
    }
    const sorted = [...probes].sort((a, b) => a - b);
    return { median: sorted.length ? sorted[Math.floor(sorted.length / 2)] : null, probes };
  }

  // Everything measured, and the reasons this page found by itself (the server adds the thresholds' verdicts).
  async function run(socket) {
    const [hz, rtt] = await Promise.all([refreshRate(), roundTrips(socket)]);
    const missing = missingFeatures();
    const measured = {
      refresh_hz: Math.round(hz * 10) / 10,
      rtt_ms: rtt.median,
      rtt_probes_ms: rtt.probes,
      window: [window.innerWidth, window.innerHeight],
      screen: [window.screen.width, window.screen.height],
      device_pixel_ratio: window.devicePixelRatio,
      user_agent: navigator.userAgent,
      secure_context: window.isSecureContext === true,
      missing_features: missing,
    };
    const reasons = [];
    if (!measured.secure_context) reasons.push("insecure");
    if (missing.length) reasons.push("browser");
    return { measured, reasons };
  }

  // What the participant reads for each reason: what to change.
  function explain(reason, checks, measured) {
    const https = location.href.replace(/^http:/, "https:");
    switch (reason) {
      case "insecure":
        return { text: "This page was opened over an insecure connection (http://), so your browser will not let it use the microphone. Open the study link that starts with https:// instead:", link: https };
      case "browser":
        return { text: `Your browser lacks what the study needs (${(measured.missing_features || []).join(", ")}). Open this link in a current Chrome, Edge or Firefox on a computer.` };
      case "window": {
        const [w, h] = checks.min_window;
        return { text: `The browser window is too small to play (it is ${measured.window[0]}x${measured.window[1]}, the game needs at least ${w}x${h}). Make the window larger or full screen (F11), or use a computer with a larger screen. The check runs again when you resize the window.` };
      }
      case "refresh":
        return { text: `Your display refreshes ${Math.round(measured.refresh_hz)} times a second; the game needs at least ${Math.round(checks.min_refresh_hz)}. Plug in your laptop (power saving slows the display), close other programs and tabs, keep this tab in front, then check again.` };
      case "rtt":
        return { text: `Your connection to our server is too slow (${measured.rtt_ms == null ? "no answer" : Math.round(measured.rtt_ms) + " ms"} for a round trip; the game needs at most ${Math.round(checks.max_rtt_ms)} ms). Use a wired connection or a faster network, pause downloads and video calls, then check again.` };
      default:
        return { text: reason };
    }
  }

  return { run, missingFeatures, refreshRate, roundTrips, explain };
})();
