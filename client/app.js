// Thin client: shows frames the server renders, sends held keys and paint acks. Protocol: docs/protocol.md.
"use strict";
(() => {
  const KEYMAP = {
    ArrowUp: "UP", ArrowDown: "DOWN", ArrowLeft: "LEFT", ArrowRight: "RIGHT", " ": "FIRE", Spacebar: "FIRE",
    w: "UP", s: "DOWN", a: "LEFT", d: "RIGHT", W: "UP", S: "DOWN", A: "LEFT", D: "RIGHT",
  };
  const PIXEL_ASPECT = 2; // Atari pixels are about twice as wide as tall
  const ACK_INTERVAL_MS = 100;

  const $ = (id) => document.getElementById(id);
  const canvas = $("screen");
  const ctx = canvas.getContext("2d", { alpha: false });
  const overlay = $("overlay"), overlayText = $("overlay-text"), startBtn = $("start");
  const statusEl = $("status"), scoreEl = $("score"), messageEl = $("message"), titleEl = $("title");

  const params = new URLSearchParams(location.search);
  const participant = params.get("PROLIFIC_PID") || params.get("workerId") || params.get("pid") || undefined;

  const micEl = $("mic"), micMeter = $("mic-meter");
  const check = {
    section: $("miccheck"), enable: $("mic-enable"), level: $("mic-level"), test: $("mic-test"),
    playback: $("mic-playback"), status: $("mic-status"), cont: $("mic-continue"),
  };
  const SILENT_PEAK = 0.02, SILENT_RMS = 0.002, STALL_MS = 1500;

  const state = {
    traj_id: null, playing: false, session: sessionStorage.getItem("atari-session"),
    width: 160, height: 210, lut: null, indices: null, image: null,
    lastDecoded: -1, lastPainted: -1, unpainted: [], acks: [], paintedCount: 0, framesReceived: 0,
    seq: 0, held: new Set(), fpsTimes: [], rtt: null, decodeChain: Promise.resolve(), codec: "xor",
    countdownTimer: null, score: 0, errors: [],
    micPassed: false, micTest: null, audioSeq: 0, audioSent: 0, micStalled: false, audioErrors: 0,
  };
  window.__atari = state; // read by the browser tests

  const socket = io({ transports: ["websocket"], reconnectionDelay: 500, reconnectionDelayMax: 3000 });

  function setStatus() {
    const conn = socket.connected ? "connected" : "disconnected";
    const now = performance.now();
    state.fpsTimes = state.fpsTimes.filter((t) => now - t < 1000);
    const fps = state.fpsTimes.length;
    const rtt = state.rtt == null ? "–" : `${Math.round(state.rtt)} ms`;
    statusEl.textContent = `${conn} · ${fps} fps · latency ${rtt}`;
  }

  function showOverlay(text, withButton, cls) {
    overlay.classList.remove("hidden");
    overlayText.textContent = text;
    overlayText.className = cls || "";
    startBtn.hidden = !withButton;
    startBtn.disabled = !withButton || !socket.connected;
  }
  function hideOverlay() { overlay.classList.add("hidden"); }
  function message(text) { messageEl.textContent = text || ""; }

  function fitCanvas() {
    const availW = window.innerWidth - 32, availH = window.innerHeight - 140;
    let s = Math.floor(Math.min(availW / (state.width * PIXEL_ASPECT), availH / state.height));
    s = Math.max(1, s);
    canvas.style.width = `${state.width * PIXEL_ASPECT * s}px`;
    canvas.style.height = `${state.height * s}px`;
  }
  window.addEventListener("resize", fitCanvas);

  function buildPalette(paletteBytes) {
    const p = new Uint8Array(paletteBytes);
    const lut = new Uint32Array(256);
    for (let v = 0; v < 256; v++) {
      const i = (v >> 1) * 3;
      lut[v] = (255 << 24) | (p[i + 2] << 16) | (p[i + 1] << 8) | p[i]; // little-endian RGBA
    }
    return lut;
  }

  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  async function decodeFrame(buf) {
    const view = new DataView(buf);
    const frame = view.getUint32(0, true), flags = view.getUint8(4);
    const payload = new Uint8Array(buf, 5);
    if (state.codec === "jpeg") {
      const bmp = await createImageBitmap(new Blob([payload], { type: "image/jpeg" }));
      state.bitmap = bmp;
    } else {
      const data = await inflate(payload);
      if (flags & 1) state.indices = data;
      else if (state.indices) { const a = state.indices; for (let i = 0; i < a.length; i++) a[i] ^= data[i]; }
      else return; // delta before any keyframe: wait for the next keyframe
    }
    state.lastDecoded = frame;
    state.unpainted.push(frame);
  }

  function paint(now) {
    if (state.unpainted.length) {
      if (state.codec === "jpeg" && state.bitmap) ctx.drawImage(state.bitmap, 0, 0);
      else if (state.indices && state.lut) {
        const px = new Uint32Array(state.image.data.buffer), a = state.indices, lut = state.lut;
        for (let i = 0; i < a.length; i++) px[i] = lut[a[i]];
        ctx.putImageData(state.image, 0, 0);
      }
      // Every frame decoded since the last paint became visible (or was superseded) at this paint.
      for (const f of state.unpainted) state.acks.push([f, now]);
      state.paintedCount += state.unpainted.length;
      state.lastPainted = state.unpainted[state.unpainted.length - 1];
      state.unpainted = [];
      state.fpsTimes.push(now);
    }
    requestAnimationFrame(paint);
  }
  requestAnimationFrame(paint);

  setInterval(() => {
    if (state.acks.length && socket.connected) { socket.emit("painted", state.acks); state.acks = []; }
  }, ACK_INTERVAL_MS);
  setInterval(() => {
    const t0 = performance.now();
    if (socket.connected) socket.emit("rtt", t0, () => { state.rtt = performance.now() - t0; });
    setStatus();
  }, 1000);

  // --- server events ----------------------------------------------------------------------------------
  socket.on("connect", () => {
    message("");
    setStatus();
    if (state.session && state.traj_id) socket.emit("rejoin", { session: state.session });
    else showOverlay(state.traj_id ? "Press Start for the next episode." : "Press Start to play.", true);
  });
  socket.on("disconnect", () => {
    setStatus();
    if (state.playing) showOverlay("Connection lost. Reconnecting…\nThe game is paused.", false);
  });
  socket.on("episode", (ep) => {
    state.traj_id = ep.traj_id; state.session = ep.session; state.codec = ep.codec;
    sessionStorage.setItem("atari-session", ep.session);
    state.width = ep.width; state.height = ep.height;
    canvas.width = ep.width; canvas.height = ep.height;
    state.image = ctx.createImageData(ep.width, ep.height);
    state.lut = buildPalette(ep.palette);
    state.indices = null;
    state.playing = true;
    titleEl.textContent = ep.title || ep.game;
    fitCanvas();
    if (!ep.resumed) { hideOverlay(); message(""); }
  });
  socket.on("frame", (buf) => {
    state.framesReceived++;
    state.decodeChain = state.decodeChain.then(() => decodeFrame(buf)).catch((e) => console.error(e));
  });
  socket.on("hud", (h) => { state.score = h.score; scoreEl.textContent = `Score ${h.score}`; });
  socket.on("paused", (p) => {
    showOverlay(p.reason === "disconnect" ? "Connection lost. Reconnecting…" : "Paused.\nCome back to this tab to continue.", false);
  });
  socket.on("countdown", (c) => {
    let n = Math.round(c.seconds);
    clearInterval(state.countdownTimer);
    const tickDown = () => {
      if (n <= 0) { clearInterval(state.countdownTimer); hideOverlay(); return; }
      showOverlay(String(n), false, "countdown"); n--;
    };
    tickDown();
    state.countdownTimer = setInterval(tickDown, 1000);
  });
  socket.on("episode_end", (e) => {
    state.playing = false; releaseAll();
    const why = { "game over": "Game over", "time limit": "Time is up", quit: "Stopped" }[e.reason] || "Episode ended";
    showOverlay(`${why}. Score ${e.score}.\nPress Start for the next episode.`, true);
  });
  socket.on("audio_status", (a) => {
    if (!a.ok) { micEl.className = "mic stalled"; message(a.message); } else { micEl.className = "mic live"; message(""); }
  });
  socket.on("error", (e) => {
    state.errors.push(e);
    if (e.event === "audio") { state.audioErrors++; console.warn("audio refused:", e.message); return; }
    if (e.code === "unknown_session") { state.traj_id = null; state.playing = false; showOverlay("Press Start to play.", true); }
    if (e.code === "full") showOverlay("The server is full, try again later.", false);
    message(e.message || String(e));
  });

  // --- input ------------------------------------------------------------------------------------------
  function sendKey(key, down) {
    if (!state.playing) return;
    socket.emit("key", { seq: state.seq++, t: performance.now(), key, down });
  }
  function releaseAll() { for (const k of state.held) sendKey(k, false); state.held.clear(); }

  window.addEventListener("keydown", (e) => {
    const key = KEYMAP[e.key];
    if (!key) return;
    e.preventDefault();
    if (e.repeat || state.held.has(key)) return;
    state.held.add(key);
    sendKey(key, true);
  });
  window.addEventListener("keyup", (e) => {
    const key = KEYMAP[e.key];
    if (!key) return;
    e.preventDefault();
    if (!state.held.has(key)) return;
    state.held.delete(key);
    sendKey(key, false);
  });
  document.addEventListener("visibilitychange", () => {
    if (!state.playing) return;
    if (document.hidden) { releaseAll(); socket.emit("pause"); }
    else socket.emit("resume");
  });

  // --- microphone: the check page, then chunks to the server while an episode is open -----------------------
  function micStatus(text, kind) { check.status.textContent = text; check.status.className = `mic-status ${kind || ""}`; }

  Mic.onChunk((c) => {
    check.level.value = c.rms; micMeter.value = c.rms;
    if (state.micTest) {
      state.micTest.chunks.push(new Int16Array(c.pcm.slice(0)));
      state.micTest.peak = Math.max(state.micTest.peak, c.peak);
      state.micTest.sumSq += c.rms * c.rms; state.micTest.n++;
    }
    if (state.playing && socket.connected) {
      socket.emit("audio", { seq: state.audioSeq++, first_sample: c.firstSample, t: c.t, rate: Mic.rate, pcm: c.pcm });
      state.audioSent++;
    }
  });
  Mic.onTrackEvent = (ev) => {
    if (ev === "mute" || ev === "ended") {
      micEl.className = "mic stalled";
      micStatus(ev === "mute" ? "Your microphone is muted. Unmute it (check a mute switch or your system's sound settings)." :
        "Your microphone was disconnected. Plug it back in and reload the page.", "bad");
      message(ev === "mute" ? "Your microphone is muted." : "Your microphone was disconnected.");
    } else message("");
    if (state.playing) socket.emit("audio_status", { state: ev === "mute" ? "muted" : ev === "unmute" ? "unmuted" : "ended" });
  };

  check.enable.addEventListener("click", async () => {
    check.enable.disabled = true;
    micStatus("Starting the microphone…");
    try {
      await Mic.start();
      micEl.className = "mic live";
      check.test.disabled = false;
      micStatus(`Microphone on: ${Mic.track.label || "default device"} at ${Mic.rate} Hz. Now record a test.`);
    } catch (err) {
      check.enable.disabled = false;
      micStatus(err.help || String(err), "bad");
    }
  });

  check.test.addEventListener("click", () => {
    check.test.disabled = true; check.cont.disabled = true;
    state.micTest = { chunks: [], peak: 0, sumSq: 0, n: 0 };
    let left = 3;
    micStatus(`Recording… speak now (${left})`);
    const timer = setInterval(() => {
      left--;
      if (left > 0) { micStatus(`Recording… speak now (${left})`); return; }
      clearInterval(timer);
      const t = state.micTest; state.micTest = null;
      const rms = t.n ? Math.sqrt(t.sumSq / t.n) : 0;
      window.__atari.micTestResult = { peak: t.peak, rms, chunks: t.chunks.length };
      check.test.disabled = false;
      if (!t.chunks.length) {
        micStatus("No audio arrived from the microphone. Check that it is plugged in and selected as the input device, then try again.", "bad");
        return;
      }
      check.playback.src = URL.createObjectURL(Mic.wav(t.chunks, Mic.rate));
      check.playback.hidden = false;
      if (t.peak < SILENT_PEAK || rms < SILENT_RMS) {
        micStatus("We could not hear you: the recording is silent. Check that the microphone is not muted (a switch on the headset, or your system's sound settings), that the right input device is selected, and speak closer to it. Then record the test again.", "bad");
        return;
      }
      state.micPassed = true;
      check.cont.disabled = false;
      micStatus("We can hear you. Listen to the playback if you like, then continue.", "good");
    }, 1000);
  });

  check.cont.addEventListener("click", () => {
    if (!state.micPassed) return;
    check.section.hidden = true;
    $("game").hidden = false;
    fitCanvas();
    showOverlay(state.traj_id ? "Press Start for the next episode." : "Press Start to play.", true);
  });

  setInterval(() => { // a microphone that stops delivering audio is reported (silence is not)
    if (!Mic.stream || !state.playing) return;
    const stalled = performance.now() - Mic.lastChunkAt > STALL_MS;
    if (stalled && !state.micStalled) {
      state.micStalled = true; micEl.className = "mic stalled";
      message("Your microphone stopped sending audio. Check that it is connected and not muted.");
      socket.emit("audio_status", { state: "stalled" });
    } else if (!stalled && state.micStalled) {
      state.micStalled = false; micEl.className = "mic live"; message("");
      socket.emit("audio_status", { state: "resumed" });
    }
  }, 500);

  startBtn.addEventListener("click", () => {
    startBtn.disabled = true;
    socket.emit("start", {
      participant,
      client: { user_agent: navigator.userAgent, screen: [window.screen.width, window.screen.height],
        audio: Mic.stream ? Mic.info() : null },
    });
    canvas.focus();
  });
  fitCanvas();
  setStatus();
})();
