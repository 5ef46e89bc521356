// The game's connection and screen, in a dedicated Worker (client/app.js starts it; docs/design.md, "The client").
// Chromium's main thread holds WebSocket messages back for some milliseconds after each key event from the keyboard
// (on a 2-core machine, 2-6% of frames arrived more than 4 ms late, by up to 17 ms), and every late frame cost a
// refresh of latency. A Worker's socket and its requestAnimationFrame are not held back (docs/benchmarks.md, "Real
// networks"). So the Socket.IO connection lives here: this worker decodes the frames, shows one per display refresh
// on the page's canvas (an OffscreenCanvas), sends the keys, paint acks, pings and microphone chunks, and hands every
// other server event to the page. Messages with the page: see `onmessage` below and `post` calls.
"use strict";
importScripts("/static/vendor/socket.io.min.js", "/static/vendor/fflate.min.js", "/static/codec.js");

const ACK_INTERVAL_MS = 100, FRAME_MS = 1000 / 60, PING_PLAYING_MS = 250, STATS_MS = 100;
// The playout buffer (see paint): frames are shown one per display refresh, each at its arrival offset's recent
// minimum plus a small buffer for the jitter of the recent arrivals (its 90th percentile, at most MAX_BUFFER_MS).
const MAX_BUFFER_MS = 50, PLAYOUT_WINDOW = 120, MAX_QUEUED = 120;

const post = (msg, transfer) => self.postMessage(msg, transfer || []);
let clockOffsetMs = 0; // this worker's performance.now() to the page's client clock (app.js clientNow)
const clientNow = () => performance.now() + clockOffsetMs;
let canvas = null, ctx = null;

const state = {
  playing: false, codec: "xor", width: 160, height: 210, lut: null, indices: null, image: null,
  lastDecoded: -1, lastPainted: -1, queue: [], acks: [], paintedCount: 0, skippedCount: 0, paintedMessages: 0,
  paintedWhileHeld: 0, framesReceived: 0, shown: [], fpsTimes: [], decodeChain: Promise.resolve(),
  rtt: null, rttMin: null, rttMedian: null, lastPing: null, lastAudioAt: -1e9,
  mic: { level: null, held_s: null, held: 0 }, // the page's microphone, as it last said (`mic` message)
};

let socket = null;
function connect() {
  socket = io({ transports: ["websocket"], reconnectionDelay: 500, reconnectionDelayMax: 3000 });
  socket.onAny((name, ...args) => { // every server event goes to the page, in order; some are looked at here first
    if (name === "frame") return;
    if (name === "episode") startEpisode(args[0]);
    if (name === "episode_end" || name === "session_taken") { state.playing = false; postStats(); }
    if (name === "error" && args[0] && args[0].code === "unknown_session") state.playing = false;
    post({ t: "event", name, args });
  });
  socket.on("connect", () => post({ t: "event", name: "connect", args: [], connected: true }));
  socket.on("disconnect", (reason) => post({ t: "event", name: "disconnect", args: [reason], connected: false }));
  socket.on("frame", (buf) => {
    state.framesReceived++;
    state.decodeChain = state.decodeChain.then(() => decodeFrame(buf)).catch((e) => console.error(e));
  });
}

function startEpisode(ep) {
  state.codec = ep.codec; state.width = ep.width; state.height = ep.height;
  if (canvas) { canvas.width = ep.width; canvas.height = ep.height; state.image = ctx.createImageData(ep.width, ep.height); }
  state.lut = FrameCodec.paletteLut(ep.palette);
  state.indices = null;
  state.queue = []; resetPlayout();
  state.playing = true;
}

// --- the playout -----------------------------------------------------------------------------------------------
// `shift`: how much later than frame * FRAME_MS the server's ticks now come, from the slips it granted
// (slipRequest); `slips`: granted ones whose first frame has not arrived yet, [from, ms]; `waits`: the shown frames'
// [ready offset, refresh offset, queue stood behind] since frame `waitsFrom` (slipRequest).
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
  if (state.codec === "jpeg") {
    if (ctx) ctx.drawImage(item.picture, 0, 0);
    else post({ t: "picture", frame: item.frame, bitmap: item.picture }, [item.picture]);
  } else if (state.lut) {
    const a = item.picture, lut = state.lut;
    const px = ctx ? new Uint32Array(state.image.data.buffer) : new Uint32Array(a.length);
    for (let i = 0; i < a.length; i++) px[i] = lut[a[i]];
    if (ctx) ctx.putImageData(state.image, 0, 0);
    else post({ t: "picture", frame: item.frame, width: state.width, height: state.height, rgba: px.buffer }, [px.buffer]);
  }
  const t = now + clockOffsetMs;
  state.acks.push([item.frame, t]);
  state.shown.push([item.frame, t]);
  state.paintedCount++;
  state.lastPainted = item.frame;
  state.fpsTimes.push(now);
}

// One frame per display refresh, in order: the oldest frame that is due. One frame behind is let be (a jitter
// buffer, in effect: the display's phase control drains it when it stands, slipRequest); further behind (a backlog
// after a stall or a clump), every other frame is skipped until the backlog is gone: the picture speeds through it
// at twice the rate rather than jumping. A worker's requestAnimationFrame comes once per refresh of the page's
// display (where a browser lacks it, a timer at 60 Hz stands in).
const nextRefresh = typeof self.requestAnimationFrame === "function"
  ? (f) => self.requestAnimationFrame(f) : (f) => setTimeout(() => f(performance.now()), FRAME_MS);
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
  nextRefresh(paint);
}

// --- to the server ---------------------------------------------------------------------------------------------
// Microphone chunks wait here while keys or acks wait in the socket (its bufferedAmount): keys first. The page paces
// the chunks and keeps a few in flight (client/app.js pumpAudio); this is the last gate before the socket.
const audioOut = [];
function wsBuffered() {
  const t = socket && socket.io && socket.io.engine && socket.io.engine.transport;
  return t && t.ws ? t.ws.bufferedAmount : 0;
}
function sendAudio() {
  while (audioOut.length && socket.connected && wsBuffered() === 0) {
    const [c, id] = audioOut.shift();
    if (state.acks.length) { c.painted = state.acks; state.acks = []; } // the acks ride along
    socket.emit("audio", c, (...answer) => post({ t: "ack", id, args: answer }));
    state.lastAudioAt = performance.now();
  }
}
setInterval(sendAudio, 10);
let lastWaiting = -1;
setInterval(() => { // the page's audio pacing sees what waits here too: 0 when nothing does
  const waiting = wsBuffered() + audioOut.length; // bytes in the socket, chunks at the gate
  if (waiting !== lastWaiting) { lastWaiting = waiting; post({ t: "waiting", waiting }); }
}, 20);

// Paint acks ride along with the microphone's chunks (every 100 ms while it records); on their own when no
// chunk has gone out for a while (no microphone, it stalled, or audio is held back for the keys).
setInterval(() => {
  if (!state.acks.length || !socket || !socket.connected) return;
  const held = state.mic.held > 0 || audioOut.length > 0;
  if (performance.now() - state.lastAudioAt < 2 * ACK_INTERVAL_MS && !held) return;
  socket.emit("painted", state.acks); state.acks = []; state.paintedMessages++;
  if (held) state.paintedWhileHeld++;
}, ACK_INTERVAL_MS);

// NTP-style round trips: each ping carries its send time and the previous ping's (send, answer) pair, which the
// server records with the time it received that ping (rtt.csv).
const rtts = [];
function ping() {
  if (!socket || !socket.connected) return;
  const t0 = clientNow();
  const msg = { rtt_ms: state.rtt, mic_level: state.mic.level, t: t0, last: state.lastPing };
  const queue = state.playing ? downlinkQueueMs() : null;
  if (queue !== null) msg.queue_ms = queue;
  // audio held back: the server then waits for `audio_done` after it stops an episode
  if (state.mic.held_s !== null) msg.held_s = state.mic.held_s;
  const slip = state.playing ? slipRequest() : null;
  if (slip !== null) { msg.slip_ms = slip; playout.waits = []; }
  socket.emit("rtt", msg, (answer) => {
    if (slip !== null && answer && Number.isInteger(answer.slip_from)) slipGranted(answer.slip_from, slip);
    const t2 = clientNow();
    state.rtt = t2 - t0; state.lastPing = [t0, t2];
    rtts.push(state.rtt); if (rtts.length > 20) rtts.shift();
    state.rttMin = Math.min(...rtts);
    state.rttMedian = rtts.slice().sort((x, y) => x - y)[rtts.length >> 1];
    post({ t: "rtt", rtt: state.rtt, rttMin: state.rttMin, rttMedian: state.rttMedian });
  });
}
function pinger() {
  ping();
  setTimeout(pinger, state.playing ? PING_PLAYING_MS : 1000);
}

// What the page shows and the tests read (window.__atari): the counters, and the frames shown since the last report.
function postStats() {
  const now = performance.now();
  state.fpsTimes = state.fpsTimes.filter((t) => now - t < 1000);
  post({
    t: "stats", paintedCount: state.paintedCount, skippedCount: state.skippedCount, lastPainted: state.lastPainted,
    lastDecoded: state.lastDecoded, framesReceived: state.framesReceived, paintedMessages: state.paintedMessages,
    paintedWhileHeld: state.paintedWhileHeld, fps: state.fpsTimes.length, shown: state.shown,
  });
  state.shown = [];
}

self.onmessage = (e) => {
  const m = e.data;
  switch (m.t) {
    case "init": // the page's canvas (null where the browser cannot hand it over: then `picture`s for the page to
      // draw) and clock; then the connection
      clockOffsetMs = performance.timeOrigin - m.clockOrigin;
      if (m.canvas) {
        canvas = m.canvas;
        ctx = canvas.getContext("2d", { alpha: false });
        state.image = ctx.createImageData(canvas.width, canvas.height);
      }
      connect();
      pinger();
      setInterval(postStats, STATS_MS);
      nextRefresh(paint);
      break;
    case "emit": // an event for the server, with an id when the page wants its acknowledgement
      if (m.name === "audio") { audioOut.push([m.args[0], m.id]); sendAudio(); break; }
      if (m.id === undefined) socket.emit(m.name, ...m.args);
      else socket.emit(m.name, ...m.args, (...answer) => post({ t: "ack", id: m.id, args: answer }));
      break;
    case "mic":
      state.mic = { level: m.level, held_s: m.held_s, held: m.held };
      break;
    case "snapshot": { // the canvas's pixels and the frame they show, read together (for the tests)
      const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      post({ t: "snapshot", id: m.id, frame: state.lastPainted, rgba: d.buffer }, [d.buffer]);
      break;
    }
  }
};
