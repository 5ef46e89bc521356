// Thin client: shows frames the server renders, sends held keys and paint acks. Protocol: docs/protocol.md.
"use strict";
(() => {
  const KEYMAP = {
    ArrowUp: "UP", ArrowDown: "DOWN", ArrowLeft: "LEFT", ArrowRight: "RIGHT", " ": "FIRE", Spacebar: "FIRE",
    w: "UP", s: "DOWN", a: "LEFT", d: "RIGHT", W: "UP", S: "DOWN", A: "LEFT", D: "RIGHT",
  };
  const PIXEL_ASPECT = 2; // Atari pixels are about twice as wide as tall
  const ACK_INTERVAL_MS = 100;
  const FRAME_MS = 1000 / 60;
  // The playout buffer (see paint): frames are shown one per display refresh, each at its arrival offset's recent
  // minimum plus a small buffer for the jitter of the recent arrivals (its 90th percentile, at most MAX_BUFFER_MS).
  const MAX_BUFFER_MS = 50, PLAYOUT_WINDOW = 120, MAX_QUEUED = 120;
  // Audio is kept in the page and sent only when keys and acks are not waiting (the socket's bufferedAmount is 0),
  // at most AUDIO_PACE times real time (the server caps a connection's audio at 1.2x), and with a few chunks in
  // flight: fewer when their acknowledgements come back later than the round trip (a queue on the uplink).
  const AUDIO_PACE = 1.15, AUDIO_WINDOW_MAX = 6, AUDIO_QUEUE_MS = 80, PING_PLAYING_MS = 250;

  const $ = (id) => document.getElementById(id);
  const canvas = $("screen");
  const ctx = canvas.getContext("2d", { alpha: false });
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
    width: 160, height: 210, lut: null, indices: null, image: null,
    lastDecoded: -1, lastPainted: -1, queue: [], acks: [], paintedCount: 0, skippedCount: 0, paintedMessages: 0,
    paintedWhileHeld: 0,
    lastAudioAt: -1e9, framesReceived: 0, shownLog: [], keyLog: [], stopping: false, slow: false,
    audioFormat: "pcm48", audioRate: null, audioQueue: [], audioInflight: 0, audioWindow: 2, audioTokens: 0,
    audioRefill: 0, audioHeld: 0, audioCaptured: 0, audioDone: true, captureUntil: null, uploadTotal: 0,
    uploadSeen: false, slowSeen: false, rttMin: null, rttMedian: null, lastPing: null,
    seq: 0, held: new Set(), fpsTimes: [], rtt: null, decodeChain: Promise.resolve(), codec: "xor",
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

  const socket = io({ transports: ["websocket"], reconnectionDelay: 500, reconnectionDelayMax: 3000 });

  function setStatus() {
    const conn = socket.connected ? "connected" : "disconnected";
    const now = performance.now();
    state.fpsTimes = state.fpsTimes.filter((t) => now - t < 1000);
    const fps = state.fpsTimes.length;
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

  function buildPalette(paletteBytes) {
    const p = new Uint8Array(paletteBytes);
    const lut = new Uint32Array(256);
    for (let v = 0; v < 256; v++) {
      const i = (v >> 1) * 3;
      lut[v] = (255 << 24) | (p[i + 2] << 16) | (p[i + 1] << 8) | p[i]; // little-endian RGBA
    }
    return lut;
  }

  // The playout's state. `shift`: how much later than frame * FRAME_MS the server's ticks now come, from the slips it
  // granted (slipRequest); `slips`: granted ones whose first frame has not arrived yet, [from, ms]; `waits`: the shown
  // frames' [ready offset, refresh offset, queue stood behind] since frame `waitsFrom` (slipRequest).
  const playout = {};
  function resetPlayout() {
    Object.assign(playout, { offsets: [], base: null, bufferMs: 0, arrivals: [], shift: 0, slips: [], waits: [] });
    Object.assign(playout, { waitsFrom: 0, drainedAt: -1e9 });
  }
  resetPlayout();
  // The downlink's queue, as the frames' arrivals see it: the smallest arrival offset of the last 300 ms above the
  // smallest of the last 10 s (jitter comes and goes; a queue stands). Sent with the pings: the server's frame rate
  // follows it (server/core/connection.py).
  function downlinkQueueMs() {
    const a = playout.arrivals, now = performance.now();
    if (a.length < 10) return null;
    let longMin = Infinity, recentMin = Infinity;
    for (const [t, d] of a) { longMin = Math.min(longMin, d); if (t > now - 300) recentMin = Math.min(recentMin, d); }
    return recentMin === Infinity ? null : recentMin - longMin;
  }

  // When frame `frame`, arrived now, is due on screen: its arrival offset (arrival - frame * FRAME_MS) against the
  // smallest of the recent ones, plus a buffer as deep as the recent arrivals' jitter (90th percentile, capped).
  function dueTime(frame, arrived) {
    while (playout.slips.length && playout.slips[0][0] <= frame) playout.shift += playout.slips.shift()[1];
    const d = arrived - frame * FRAME_MS - playout.shift;
    if (playout.base === null || Math.abs(d - playout.base) > 1000) resetPlayout(); // a pause, a reconnect
    const w = playout.offsets, a = playout.arrivals;
    a.push([arrived, d]);
    while (a.length && a[0][0] < arrived - 10000) a.shift();
    w.push([frame, d]);
    while (w.length && w[0][0] <= frame - PLAYOUT_WINDOW) w.shift();
    let base = Infinity;
    for (const [, v] of w) base = Math.min(base, v);
    const spread = w.map(([, v]) => v - base).sort((x, y) => x - y);
    playout.base = base;
    playout.bufferMs = Math.min(MAX_BUFFER_MS, spread[Math.floor(0.9 * (spread.length - 1))] || 0);
    return frame * FRAME_MS + playout.shift + base + playout.bufferMs;
  }

  // The display's phase. The server's ticks and the screen's refreshes both run at 60 Hz, so where the frames land
  // between two refreshes stays put: a frame ready just after a refresh waits most of a period for the next, every
  // frame, and after one late frame the queue stands a refresh behind for good (one refresh has nothing new, the next
  // has two). From the last SLIP_FRAMES shown frames (each one's ready time and the refresh that showed it, against
  // its nominal time: frame * FRAME_MS + shift) the page finds the first refresh at or after all but the latest
  // (1 - SLIP_QUANTILE) of the frames' ready times plus SLIP_MARGIN_MS, and asks the server (`rtt`'s `slip_ms`) to
  // make its next tick that much later than its schedule, once, when that is SLIP_MIN_MS or more: the frames are then
  // ready just before a refresh. A queue that stood a refresh behind for most of them (after a late frame) is drained
  // by a slip of a whole period instead (one refresh then has nothing new), rather than by skipping a frame; at most
  // once every DRAIN_EVERY_MS, so that on a path (or a machine) whose jitter keeps a refresh of backlog standing, the
  // game is not slowed: that backlog is then its jitter buffer.
  const SLIP_MARGIN_MS = 2, SLIP_MIN_MS = 1.5, SLIP_FRAMES = 120, SLIP_QUANTILE = 0.98, DRAIN_EVERY_MS = 10000;
  function slipRequest() {
    const w = playout.waits; // [ready offset, refresh offset, queue stood behind]
    if (w.length < SLIP_FRAMES) return null;
    let x = 0, y = 0; // the refreshes' phase: a circular mean, as it may lie either side of a period's edge
    for (const [, h] of w) { x += Math.cos(2 * Math.PI * h / FRAME_MS); y += Math.sin(2 * Math.PI * h / FRAME_MS); }
    const grid = (Math.atan2(y, x) / (2 * Math.PI) + 1) * FRAME_MS % FRAME_MS;
    const need = w.map((e) => e[0]).sort((a, b) => a - b)[Math.floor(SLIP_QUANTILE * (w.length - 1))] + SLIP_MARGIN_MS;
    let slip = grid + FRAME_MS * Math.ceil((need - grid) / FRAME_MS) - need; // 0 <= slip < FRAME_MS
    const now = performance.now();
    if (slip < SLIP_MIN_MS && w.filter((e) => e[2]).length > w.length / 2 && now - playout.drainedAt > DRAIN_EVERY_MS) {
      slip = FRAME_MS; // a standing queue: drained by one refresh without a new frame
      playout.drainedAt = now;
    }
    return slip >= SLIP_MIN_MS ? Math.floor(slip * 10) / 10 : null;
  }
  function slipGranted(from, ms) { // frames from `from` on come `ms` later; waits before then no longer tell
    playout.slips.push([from, ms]);
    playout.waits = [];
    playout.waitsFrom = from + 2;
  }

  async function decodeFrame(buf) {
    const view = new DataView(buf);
    const frame = view.getUint32(0, true), flags = view.getUint8(4);
    const payload = new Uint8Array(buf, 5);
    let picture;
    if (state.codec === "jpeg") {
      picture = await createImageBitmap(new Blob([payload], { type: "image/jpeg" }));
    } else {
      const key = (flags & 1) !== 0, w = state.width, h = state.height;
      if (!key && !state.indices) return; // delta before any keyframe: wait for the next keyframe
      const part = FrameCodec.zlibPart(payload, key, h);
      const data = part ? FrameCodec.inflateSync(part) : null;
      if (key && (!state.indices || state.indices.length !== w * h)) state.indices = new Uint8Array(w * h);
      FrameCodec.apply(state.indices, payload, key, w, h, data);
      picture = state.indices.slice(); // the codec state moves on; the queued frame keeps its own screen
    }
    state.lastDecoded = frame;
    const ready = performance.now(), due = dueTime(frame, ready); // (dueTime moves playout.shift on)
    state.queue.push({ frame, picture, ready, due, nominal: frame * FRAME_MS + playout.shift });
    while (state.queue.length > MAX_QUEUED) skip(state.queue.shift(), performance.now());
  }

  function skip(item, now) { // never on screen: acked as superseded at `now`
    state.acks.push([item.frame, now + clockOffsetMs, 0]);
    state.skippedCount++;
  }

  function show(item, now) {
    if (state.codec === "jpeg") ctx.drawImage(item.picture, 0, 0);
    else if (state.lut && state.image) {
      const px = new Uint32Array(state.image.data.buffer), a = item.picture, lut = state.lut;
      for (let i = 0; i < a.length; i++) px[i] = lut[a[i]];
      ctx.putImageData(state.image, 0, 0);
    }
    const t = now + clockOffsetMs;
    state.acks.push([item.frame, t]);
    if (state.shownLog.length < 200000) state.shownLog.push([item.frame, t]);
    state.paintedCount++;
    state.lastPainted = item.frame;
    state.fpsTimes.push(now);
  }

  // One frame per display refresh, in order: the oldest frame that is due. One frame behind is let be (a jitter
  // buffer, in effect: the display's phase control drains it when it stands, slipRequest); further behind (a backlog
  // after a stall or a clump), every other frame is skipped until the backlog is gone: the picture speeds through it
  // at twice the rate rather than jumping.
  function paint(now) {
    const q = state.queue;
    let due = 0;
    while (due < q.length && q[due].due <= now + FRAME_MS / 2) due++;
    if (due >= 3) skip(q.shift(), now);
    if (due >= 1) {
      const item = q.shift(), w = playout.waits;
      if (item.frame >= playout.waitsFrom) {
        w.push([item.ready - item.nominal, now - item.nominal, due >= 2]);
        if (w.length > SLIP_FRAMES) w.shift();
      }
      show(item, now);
    }
    requestAnimationFrame(paint);
  }
  requestAnimationFrame(paint);

  // Paint acks ride along with the microphone's chunks (every 100 ms while it records); on their own when no
  // chunk has gone out for a while (no microphone, it stalled, or audio is held back for the keys).
  setInterval(() => {
    if (!state.acks.length || !socket.connected) return;
    if (performance.now() - state.lastAudioAt < 2 * ACK_INTERVAL_MS && !state.audioHeld) return;
    socket.emit("painted", state.acks); state.acks = []; state.paintedMessages++;
    if (state.audioHeld) state.paintedWhileHeld++;
  }, ACK_INTERVAL_MS);

  // NTP-style round trips: each ping carries its send time and the previous ping's (send, answer) pair, which the
  // server records with the time it received that ping (rtt.csv).
  const rtts = [];
  function ping() {
    if (!socket.connected) return;
    const t0 = clientNow();
    const msg = { rtt_ms: state.rtt, mic_level: Mic.stream ? Mic.level : null, t: t0, last: state.lastPing };
    const queue = state.playing ? downlinkQueueMs() : null;
    if (queue !== null) msg.queue_ms = queue;
    // audio held back: the server then waits for `audio_done` after it stops an episode
    if (Mic.stream) msg.held_s = heldSeconds();
    const slip = state.playing ? slipRequest() : null;
    if (slip !== null) { msg.slip_ms = slip; playout.waits = []; }
    socket.emit("rtt", msg,
      (answer) => {
        if (slip !== null && answer && Number.isInteger(answer.slip_from)) slipGranted(answer.slip_from, slip);
        const t2 = clientNow();
        state.rtt = t2 - t0; state.lastPing = [t0, t2];
        rtts.push(state.rtt); if (rtts.length > 20) rtts.shift();
        state.rttMin = Math.min(...rtts);
        state.rttMedian = rtts.slice().sort((x, y) => x - y)[rtts.length >> 1];
      });
  }
  (function pinger() {
    ping();
    setTimeout(pinger, state.playing ? PING_PLAYING_MS : 1000);
  })();
  setInterval(setStatus, 1000);

  // --- audio out: keys first ------------------------------------------------------------------------------------
  function heldSeconds() { // microphone audio waiting in the page
    return state.audioQueue.reduce((n, c) => n + c.pcm.byteLength / 2, 0) / (state.audioRate || 16000);
  }
  function wsBuffered() {
    const t = socket.io && socket.io.engine && socket.io.engine.transport;
    return t && t.ws ? t.ws.bufferedAmount : 0;
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
      if (wsBuffered() > 0 || state.audioInflight >= Math.floor(state.audioWindow) ||
        state.audioTokens < c.pcm.byteLength) { state.audioHeld = q.length; break; }
      q.shift();
      state.audioTokens -= c.pcm.byteLength;
      if (state.acks.length) { c.painted = state.acks; state.acks = []; }
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
      state.audioSent++; state.lastAudioAt = performance.now();
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
    state.traj_id = ep.traj_id; state.session = ep.session; state.codec = ep.codec; state.resumed = !!ep.resumed;
    sessionStorage.setItem("atari-session", ep.session);
    document.cookie = `atari_session=${ep.session}; path=/; SameSite=Strict`; // lets a reload past a full server
    state.width = ep.width; state.height = ep.height;
    canvas.width = ep.width; canvas.height = ep.height;
    state.image = ctx.createImageData(ep.width, ep.height);
    state.lut = buildPalette(ep.palette);
    state.indices = null;
    state.queue = []; resetPlayout();
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
