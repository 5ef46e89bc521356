// Thin client: shows frames the server renders, sends held keys and paint acks. Protocol: docs/protocol.md.
"use strict";
(() => {
  const KEYMAP = {
    ArrowUp: "UP", ArrowDown: "DOWN", ArrowLeft: "LEFT", ArrowRight: "RIGHT", " ": "FIRE", Spacebar: "FIRE",
    w: "UP", s: "DOWN", a: "LEFT", d: "RIGHT", W: "UP", S: "DOWN", A: "LEFT", D: "RIGHT",
  };
  const PIXEL_ASPECT = 2; // Atari pixels are about twice as wide as tall
  // Audio is kept in the page and sent only when keys and acks are not waiting (nothing waits in the worker, as it
  // reports; client/game-worker.js holds a chunk back itself too while something does), at most AUDIO_PACE times
  // real time (the server caps a connection's audio at 1.2x), and with a few chunks in flight: fewer when their
  // acknowledgements come back later than the round trip (a queue on the uplink).
  const AUDIO_PACE = 1.15, AUDIO_WINDOW_MAX = 6, AUDIO_QUEUE_MS = 80;

  const $ = (id) => document.getElementById(id);
  const canvas = $("screen");
  const overlay = $("overlay"), overlayText = $("overlay-text"), startBtn = $("start");
  const statusEl = $("status"), scoreEl = $("score"), messageEl = $("message"), titleEl = $("title");

  const params = new URLSearchParams(location.search);
  let participant = params.get("PROLIFIC_PID") || params.get("workerId") || params.get("pid") ||
    localStorage.getItem("atari-participant") || undefined;
  const recruitment = Study.recruitment(params); // the platform's study and session IDs (study.js)
  const SECTIONS = ["entry", "consent", "instructions", "miccheck", "game", "outcome"];
  function showSection(name) {
    for (const id of SECTIONS) $(id).hidden = id !== name;
    document.body.classList.toggle("in-game", name === "game");
    if (name !== "game") $("finish").hidden = true;
  }

  const micEl = $("mic"), micMeter = $("mic-meter");
  const check = {
    section: $("miccheck"), enable: $("mic-enable"), level: $("mic-level"), test: $("mic-test"),
    playback: $("mic-playback"), status: $("mic-status"), cont: $("mic-continue"),
  };
  const SILENT_PEAK = 0.02, SILENT_RMS = 0.002, STALL_MS = 1500;

  const state = {
    traj_id: null, playing: false, session: sessionStorage.getItem("atari-session"),
    width: 160, height: 210,
    // the worker's counters (its `stats`), and the frames it showed: [frame, client ms]
    lastDecoded: -1, lastPainted: -1, paintedCount: 0, skippedCount: 0, paintedMessages: 0, paintedWhileHeld: 0,
    framesReceived: 0, fps: 0, shownLog: [], waiting: 0,
    keyLog: [], stopping: false, slow: false,
    audioFormat: "pcm48", audioRate: null, audioQueue: [], audioInflight: 0, audioWindow: 2, audioTokens: 0,
    audioRefill: 0, audioHeld: 0, audioCaptured: 0, audioDone: true, captureUntil: null, uploadTotal: 0,
    uploadSeen: false, slowSeen: false, rttMin: null, rttMedian: null,
    seq: 0, held: new Set(), rtt: null,
    countdownTimer: null, score: 0, errors: [],
    study: null, micPassed: false, micTest: null, audioSeq: 0, audioSent: 0, micStalled: false, audioErrors: 0,
  };
  window.__atari = state; // read by the browser tests

  // A reload in the middle of an episode resumes it (the server keeps the episode for this tab's session token).
  // The new page carries on where the old one stopped so that the server sees one continuous client: the client
  // clock (ms since the tab's first page loaded, not since this page loaded), the key and audio chunk numbers
  // (the server ignores numbers it has seen), and the microphone's sample numbering (see audioSample below).
  const carried = (() => {
    try { return JSON.parse(sessionStorage.getItem("atari-client")) || {}; } catch (e) { return {}; }
  })();
  const clockOrigin = typeof carried.origin === "number" ? carried.origin : performance.timeOrigin;
  const clockOffsetMs = performance.timeOrigin - clockOrigin; // 0 on the tab's first page
  const clientNow = () => performance.now() + clockOffsetMs;
  state.clientNow = clientNow;
  Mic.clockOffsetMs = clockOffsetMs;
  if (Number.isInteger(carried.seq)) state.seq = carried.seq;
  if (Number.isInteger(carried.audioSeq)) state.audioSeq = carried.audioSeq;
  const audioClock = { base: null, rate: null, lastFirst: null, lastT: null, next: 0 };
  const SETTLE_CHUNKS = 2; // a new AudioContext's first chunks carry unreliable timestamps: not sent
  function saveClient() {
    sessionStorage.setItem("atari-client", JSON.stringify({
      origin: clockOrigin, seq: state.seq, audioSeq: state.audioSeq,
      audio: audioClock.lastT !== null ? { rate: audioClock.rate, lastFirst: audioClock.lastFirst,
        lastT: audioClock.lastT, next: audioClock.next } : carried.audio,
    }));
  }
  window.addEventListener("pagehide", saveClient);
  // A new AudioContext counts samples from 0 again: number them on from the previous page's capture, placed by
  // time after that page's last chunk (the reload's gap becomes silence), never below what that page numbered.
  // Null while the capture settles.
  function audioSample(c) {
    if (audioClock.base === null) {
      if (Mic.chunks <= SETTLE_CHUNKS) return null;
      const prev = carried.audio;
      audioClock.rate = Mic.rate;
      audioClock.base = 0;
      if (prev && prev.rate === Mic.rate && [prev.lastFirst, prev.lastT, prev.next].every(Number.isFinite)) {
        const first = Math.max(prev.next, Math.round(prev.lastFirst + ((c.t - prev.lastT) * Mic.rate) / 1000));
        audioClock.base = first - c.firstSample;
      }
    }
    const first = c.firstSample + audioClock.base;
    audioClock.lastFirst = first; audioClock.lastT = c.t;
    audioClock.next = first + c.pcm.byteLength / 2;
    return first;
  }

  // The connection and the canvas live in a Worker (client/game-worker.js: the frames, the playout, keys, acks and
  // pings there, off this thread, which Chromium holds up after key events). `socket` is its stand-in here: `on`,
  // `emit` (with an acknowledgement callback last, as Socket.IO's), `connected`.
  const worker = new Worker("/static/game-worker.js");
  const socket = (() => {
    const handlers = new Map(), answers = new Map();
    let nextId = 0;
    return {
      connected: false,
      on(name, fn) { if (!handlers.has(name)) handlers.set(name, []); handlers.get(name).push(fn); },
      emit(name, ...args) {
        const msg = { t: "emit", name, args };
        if (typeof args[args.length - 1] === "function") { msg.id = nextId++; answers.set(msg.id, args.pop()); }
        worker.postMessage(msg);
      },
      dispatch(name, args) { for (const fn of handlers.get(name) || []) fn(...args); },
      answer(id, args) { const fn = answers.get(id); answers.delete(id); if (fn) fn(...args); },
    };
  })();
  const snapshots = new Map();
  let snapshotId = 0;
  // The canvas's pixels and the frame they show, read together in the worker (for the tests).
  state.snapshot = () => new Promise((resolve) => {
    if (pageCtx) { // the page draws: read here
      resolve({ frame: state.pageDrawn, rgba: Array.from(pageCtx.getImageData(0, 0, canvas.width, canvas.height).data) });
      return;
    }
    snapshots.set(++snapshotId, resolve);
    worker.postMessage({ t: "snapshot", id: snapshotId });
  });
  // Where the browser cannot hand the canvas to a worker (no OffscreenCanvas: Safari before 16.4), the worker sends
  // each frame to show as pixels, and the page draws them as they come (a few ms later than the worker's refresh).
  let pageCtx = null;
  function drawPicture(m) {
    if (m.bitmap) pageCtx.drawImage(m.bitmap, 0, 0);
    else {
      if (canvas.width !== m.width || canvas.height !== m.height) { canvas.width = m.width; canvas.height = m.height; }
      pageCtx.putImageData(new ImageData(new Uint8ClampedArray(m.rgba), m.width, m.height), 0, 0);
    }
    state.pageDrawn = m.frame;
  }
  worker.onmessage = (e) => {
    const m = e.data;
    switch (m.t) {
      case "event":
        if (m.connected !== undefined) socket.connected = m.connected;
        socket.dispatch(m.name, m.args);
        break;
      case "ack": socket.answer(m.id, m.args); break;
      case "rtt": state.rtt = m.rtt; state.rttMin = m.rttMin; state.rttMedian = m.rttMedian; break;
      case "waiting": state.waiting = m.waiting; break;
      case "stats":
        for (const k of ["paintedCount", "skippedCount", "lastPainted", "lastDecoded", "framesReceived",
          "paintedMessages", "paintedWhileHeld", "fps"]) state[k] = m[k];
        for (const s of m.shown) if (state.shownLog.length < 200000) state.shownLog.push(s);
        break;
      case "picture": drawPicture(m); break;
      case "snapshot": {
        const resolve = snapshots.get(m.id);
        snapshots.delete(m.id);
        if (resolve) resolve({ frame: m.frame, rgba: Array.from(new Uint8ClampedArray(m.rgba)) });
        break;
      }
    }
  };
  worker.onerror = (e) => { state.errors.push({ message: e.message }); message(`The game could not start: ${e.message}`); };
  if (typeof canvas.transferControlToOffscreen === "function") {
    const offscreen = canvas.transferControlToOffscreen();
    worker.postMessage({ t: "init", canvas: offscreen, clockOrigin }, [offscreen]);
  } else {
    pageCtx = canvas.getContext("2d", { alpha: false });
    worker.postMessage({ t: "init", canvas: null, clockOrigin });
  }

  function setStatus() {
    const conn = socket.connected ? "connected" : "disconnected";
    const fps = state.fps;
    const rtt = state.rtt == null ? "–" : `${Math.round(state.rtt)} ms`;
    const held = state.audioHeld > 5 ? ` · ${state.audioHeld} audio chunks waiting` : "";
    statusEl.textContent = `${conn} · ${fps} fps · latency ${rtt}${held}`;
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
  // The slow-connection warning has a line of its own (the message line is the microphone's).
  const slowEl = document.createElement("p");
  slowEl.id = "connection-warning"; slowEl.className = "message"; slowEl.hidden = true;
  slowEl.setAttribute("role", "status");
  messageEl.after(slowEl);

  // The game fills the window below the header, less the help line: any scale, not whole steps only (whole steps
  // left a 1366x657 window's game at 64% of its height); image-rendering: pixelated keeps the pixels crisp.
  function fitCanvas() {
    const header = document.querySelector("header").offsetHeight, help = $("help").offsetHeight;
    const availW = window.innerWidth - 24, availH = window.innerHeight - header - help - 24;
    const s = Math.max(0.5, Math.min(availW / (state.width * PIXEL_ASPECT), availH / state.height));
    canvas.style.width = `${Math.floor(state.width * PIXEL_ASPECT * s)}px`;
    canvas.style.height = `${Math.floor(state.height * s)}px`;
  }
  window.addEventListener("resize", fitCanvas);

  setInterval(setStatus, 1000);

  // --- audio out: keys first ------------------------------------------------------------------------------------
  function heldSeconds() { // microphone audio waiting in the page
    return state.audioQueue.reduce((n, c) => n + c.pcm.byteLength / 2, 0) / (state.audioRate || 16000);
  }
  function pumpAudio() {
    const now = performance.now(), q = state.audioQueue;
    const rate = (state.audioRate || 48000) * 2; // bytes a second of real time
    state.audioTokens = Math.min(state.audioTokens + (now - state.audioRefill) * rate * AUDIO_PACE / 1000,
      q.length ? q[0].pcm.byteLength : rate / 10);
    state.audioRefill = now;
    state.audioHeld = 0;
    while (q.length && socket.connected) {
      const c = q[0];
      if (state.waiting > 0 || state.audioInflight >= Math.floor(state.audioWindow) ||
        state.audioTokens < c.pcm.byteLength) { state.audioHeld = q.length; break; }
      q.shift();
      state.audioTokens -= c.pcm.byteLength;
      const sentAt = performance.now();
      state.audioInflight++;
      socket.emit("audio", c, () => {
        state.audioInflight--;
        // never fewer in flight than real time needs over this round trip; more while they come back promptly
        const took = performance.now() - sentAt, rtt = state.rttMedian == null ? 0 : state.rttMedian;
        const floor = Math.ceil(rtt / 100) + 1;
        if (took > rtt + AUDIO_QUEUE_MS) state.audioWindow = Math.max(floor, state.audioWindow - 0.5);
        else state.audioWindow = Math.min(Math.max(AUDIO_WINDOW_MAX, floor), state.audioWindow + 0.25);
        pumpAudio();
      });
      state.audioSent++;
    }
    if (state.stopping && !state.audioDone) {
      const left = q.length, total = Math.max(state.uploadTotal, 1);
      if (state.uploadTotal > 0 && left) {
        state.uploadSeen = true;
        showOverlay(`Saving your speech… ${Math.round(100 * (1 - left / total))}%`, false);
      }
      if (!left && state.audioInflight === 0 && (state.captureUntil === null || clientNow() > state.captureUntil)) {
        state.audioDone = true;
        socket.emit("audio_done");
      }
    }
  }
  setInterval(pumpAudio, 20);
  setInterval(() => { // what the worker's pings and acks need to know of the microphone
    worker.postMessage({ t: "mic", level: Mic.stream ? Mic.level : null, held_s: Mic.stream ? heldSeconds() : null,
      held: state.audioHeld });
  }, 100);

  // --- server events ----------------------------------------------------------------------------------
  socket.on("connect", () => {
    message("");
    setStatus();
    socket.emit("hello", { participant, session: state.session || undefined, recruitment: recruitment || undefined });
  });

  function fmtTime(s) { s = Math.max(0, Math.round(s)); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; }
  const duration = Study.duration;

  function startPrompt() {
    const st = state.study;
    if (!st || st.stage === "free") return state.traj_id ? "Press Start for the next episode." : "Press Start to play.";
    if (st.stage === "practice") return `Practice round: ${duration(st.practice_s)}, not recorded.\nPress Start when you are ready.`;
    const p = st.progress, n = p.episodes_done + 1;
    const left = p.remaining_s != null ? `${duration(p.remaining_s)} of play left` : `episode ${n} of ${p.episodes_total}`;
    return `Recorded play: episode ${n}, ${left}.\nRemember to talk while you play. Press Start.`;
  }

  function renderProgress() {
    const st = state.study, el = $("progress");
    if (!st || !st.progress || !["practice", "episodes"].includes(st.stage)) { el.hidden = true; return; }
    const p = st.progress;
    el.hidden = false;
    el.textContent = st.stage === "practice" ? "Practice round (not recorded)" :
      `Episode ${p.episodes_done + (state.playing ? 1 : 0) || 1}` +
      (p.remaining_s != null ? ` · ${fmtTime(p.remaining_s)} of play left` : ` of ${p.episodes_total}`);
  }

  // The pages around the game are study.js's; the game's stages are shown here.
  const ui = {
    socket, showSection, recruitment,
    checked: () => sessionStorage.getItem("atari-checked") === "1",
    setChecked: () => sessionStorage.setItem("atari-checked", "1"),
  };
  Study.init(ui);
  socket.on("study_state", (st) => {
    state.study = st;
    if (st.participant) { participant = st.participant; localStorage.setItem("atari-participant", st.participant); }
    renderProgress();
    if (state.playing) return; // a resumed episode keeps the game on screen
    if (Study.render(ui, st)) return;
    switch (st.stage) {
      case "practice": case "episodes":
        if (!Mic.stream) { showSection("miccheck"); micStatus("Turn the microphone back on to continue."); break; }
        showSection("game"); fitCanvas(); showOverlay((state.lastEnd ? state.lastEnd + "\n" : "") + startPrompt(), true); break;
      default: // free play: microphone check once, then the game
        if (state.micPassed) { showSection("game"); fitCanvas(); showOverlay(startPrompt(), true); }
        else showSection("miccheck");
    }
  });
  socket.on("disconnect", () => {
    setStatus();
    if (state.playing) showOverlay("Connection lost. Reconnecting…\nThe game is paused.", false);
  });
  socket.on("episode", (ep) => {
    state.traj_id = ep.traj_id; state.session = ep.session; state.resumed = !!ep.resumed;
    sessionStorage.setItem("atari-session", ep.session);
    document.cookie = `atari_session=${ep.session}; path=/; SameSite=Strict`; // lets a reload past a full server
    state.width = ep.width; state.height = ep.height;
    if (!ep.resumed) { // a resumed episode still wants the audio held here
      state.audioQueue = []; state.downsampler = null; state.audioCaptured = 0; state.slowSeen = false;
    }
    state.audioFormat = ep.audio_format || "pcm48";
    state.playing = true; state.stopping = false; state.captureUntil = null; state.audioDone = true;
    titleEl.textContent = ep.title || ep.game;
    if (ep.keys) $("help").textContent = `${ep.keys} Switching to another tab pauses the game.`;
    showSection("game");
    $("finish").hidden = !!(state.study && state.study.stage !== "free"); // free play ends an episode by itself
    fitCanvas();
    renderProgress();
    if (!ep.resumed) { hideOverlay(); message(""); }
    else if (!Mic.stream) { // a reload in the middle of an episode: the microphone must come back too
      Mic.start().then(() => { if (Mic.ctx.state !== "running") message("Click anywhere to turn the microphone back on."); })
        .catch((err) => message(err.help || String(err)));
    }
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
  // The server stopped stepping (game over, time limit, stop): the audio still held here goes up before it closes
  // the episode (it waits for `audio_done`, bounded by a setting), with a progress indicator when there is much.
  socket.on("stopping", () => {
    releaseAll();
    state.stopping = true;
    if (!Mic.stream || !state.audioRate) return;
    state.captureUntil = clientNow() + 150; // the chunk that covers the last frame's paint is still captured
    state.audioDone = false;
    const held = heldSeconds();
    state.uploadTotal = held > 1 ? state.audioQueue.length : 0;
    socket.emit("audio_pending", { seconds: held });
  });
  socket.on("connection", (c) => {
    state.slow = !!c.slow;
    if (c.slow) state.slowSeen = true;
    slowEl.textContent = c.slow ? c.message || "Your connection is slow; the game may lag." : "";
    slowEl.hidden = !c.slow;
  });
  socket.on("episode_end", (e) => {
    state.playing = false; state.stopping = false; releaseAll();
    state.audioQueue = []; state.uploadTotal = 0;
    const why = { "game over": "Game over", "time limit": "Time is up", quit: "Finished" }[e.reason] || "Episode ended";
    $("finish").hidden = true;
    state.lastEnd = `${e.practice ? "Practice over" : why}. Score ${e.score}.`;
    if (e.reason === "storage_error") { showOverlay(state.storageError || "The recording could not be saved.", false); return; }
    showOverlay(`${state.lastEnd}\nPress Start for the next episode.`, true);
  });
  socket.on("session_taken", (e) => {  // another tab (or a reload) took this session over: this tab stops
    state.playing = false; releaseAll(); state.traj_id = null;
    showOverlay(e.message || "This game continues in another tab.", false);
  });
  socket.on("storage_error", (e) => {  // the server cannot save recordings: the episode_end follows
    state.storageError = e.message;
    message(e.message);
  });
  socket.on("audio_status", (a) => {
    if (!a.ok) { micEl.className = "mic stalled"; message(a.message); } else { micEl.className = "mic live"; message(""); }
  });
  socket.on("error", (e) => {
    if (e.event === "key" && e.code === "no_episode") return; // a key pressed as the episode closed: nothing to say
    state.errors.push(e);
    if (e.event === "audio") { state.audioErrors++; console.warn("audio refused:", e.message); return; }
    if (e.code === "unknown_session") { state.traj_id = null; state.playing = false; showOverlay(startPrompt(), true); }
    if (e.code === "full") showOverlay("The server is full, try again later.", false);
    if (e.code === "storage_error") showOverlay(e.message, true);
    message(e.message || String(e));
  });

  // --- input ------------------------------------------------------------------------------------------
  function sendKey(key, down) {
    if (!state.playing || state.stopping) return;
    const k = { seq: state.seq++, t: clientNow(), key, down };
    if (state.keyLog.length < 100000) state.keyLog.push(k);
    socket.emit("key", k);
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
    const firstSample = audioSample(c);
    check.level.value = c.rms; micMeter.value = c.rms;
    if (state.micTest) {
      state.micTest.chunks.push(new Int16Array(c.pcm.slice(0)));
      state.micTest.peak = Math.max(state.micTest.peak, c.peak);
      state.micTest.sumSq += c.rms * c.rms; state.micTest.n++;
    }
    // Queued in the page while an episode is open (also while the connection is down), sent by pumpAudio.
    const open = state.playing && (!state.stopping || (state.captureUntil !== null && c.t <= state.captureUntil));
    if (open && firstSample !== null) {
      let pcm = c.pcm, rate = Mic.rate, first = firstSample;
      if (state.audioFormat === "pcm16k" && Mic.rate % 16000 === 0) {
        const factor = Mic.rate / 16000;
        if (!state.downsampler || state.downsampler.factor !== factor) state.downsampler = Mic.downsampler(factor);
        pcm = state.downsampler.push(new Int16Array(c.pcm)).buffer;
        rate = 16000; first = Math.floor(firstSample / factor);
      }
      state.audioRate = rate;
      state.audioCaptured += pcm.byteLength / 2;
      state.audioQueue.push({ seq: state.audioSeq++, first_sample: first, t: c.t, rate, pcm });
      pumpAudio();
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
    if (state.study && state.study.stage !== "free") { socket.emit("mic_ok", { audio: Mic.info() }); return; }
    showSection("game");
    fitCanvas();
    showOverlay(startPrompt(), true);
  });
  document.addEventListener("click", () => { if (Mic.ctx && Mic.ctx.state === "suspended") Mic.ctx.resume(); });

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

  // In a study the microphone shows only when it needs attention: stopped (above), or silent for a while while the
  // participant plays. A microphone that stopped offers the way out: the failure outcome (study.js).
  const QUIET_MS = 20000;
  let quietSince = null;
  setInterval(() => {
    const silent = state.playing && Mic.stream && Mic.level < SILENT_RMS;
    quietSince = silent ? (quietSince ?? performance.now()) : null;
    const quiet = quietSince !== null && performance.now() - quietSince > QUIET_MS;
    if (quiet && !state.micQuiet) {
      state.micQuiet = true; micEl.className = "mic stalled";
      message("We cannot hear you. Check that your microphone is not muted, and talk while you play.");
    } else if (!quiet && state.micQuiet) {
      state.micQuiet = false;
      if (!state.micStalled) { micEl.className = "mic live"; message(""); }
    }
    const broken = state.micStalled || (Mic.track && Mic.track.readyState === "ended");
    $("give-up").hidden = !(state.study && state.study.stage !== "free" && broken);
  }, 1000);

  startBtn.addEventListener("click", () => {
    startBtn.disabled = true;
    socket.emit("start", {
      participant,
      client: { user_agent: navigator.userAgent, screen: [window.screen.width, window.screen.height],
        audio: Mic.stream ? Mic.info() : null, entry_checks: Study.measured() || undefined },
    });
    canvas.focus();
  });
  $("finish").addEventListener("click", () => { if (state.playing) socket.emit("stop"); });
  fitCanvas();
  setStatus();
})();
