// The replay page: a trajectory re-simulated on the server (verified frame by frame), with its speech and game sound.
//
// Sync. Both sounds are laid on the game's 60 fps timeline: game_audio.wav is 512 samples a frame already, and the
// speech is cut into the segments the server sends (speech.segments: [frame, speech sample] pairs, the same cut the
// video export uses), so timeline second t is frame t*60 in both. While playing, the Web Audio clock (the context
// time being heard now, from getOutputTimestamp) drives the frame index: frame = start frame + heard time * 60 *
// speed. Speeds other than 1x change both sources' playbackRate, so the sound plays faster or slower with its pitch
// (no time stretching). Without audio (no files, or the context cannot run) performance.now() drives it instead.
//
// Words. When the trajectory's speech is annotated (scripts/annotate_speech.py), info.words holds speech_words.csv's
// words with the frames on screen while they were said: a band under the waveform shows a tick at each word's start
// and its text where it fits, and the strip under the timeline lists them all (a click seeks to the word).
//
// Screens come from /api/replay/<id>/screens in chunks: uint32 LE length + one `xor` codec message per frame, the
// first a keyframe. They are decoded by codec.js (DecompressionStream) and kept as palette indices (33,600 bytes a
// frame).
"use strict";
const REPLAY_TOKEN = new URLSearchParams(location.search).get("token");
// The researcher token (from this page's URL) goes with every API request.
const authFetch = (url) => fetch(url, REPLAY_TOKEN ? { headers: { Authorization: `Bearer ${REPLAY_TOKEN}` } } : {});

(() => {
  const SPEEDS = [0.25, 0.5, 1, 2, 4, 8];
  const CHUNK = 240;            // frames per screens request (4 s at 1x, 8 MB decoded)
  const MAX_CHUNKS = 6;         // decoded chunks kept
  const AUDIO_LEAD_S = 0.05;    // sources are scheduled this far ahead so both start on the same sample
  const WORD_BAND = 22;         // CSS pixels at the bottom of the timeline for the words (when annotated)
  const WORD_COLOUR = "#9a9a9a";
  const KEYWORD_COLOUR = "#ffb000"; // replay.css's .words button.keyword too

  const $ = (id) => document.getElementById(id);
  const canvas = $("screen");
  const ctx2d = canvas.getContext("2d");
  const timeline = $("timeline");
  const tctx = timeline.getContext("2d");
  const statusEl = $("status");
  const messageEl = $("message");
  const wordsEl = $("words");

  const parts = location.pathname.split("/").filter(Boolean);
  const trajId = decodeURIComponent(parts[parts.length - 1] || "");
  const api = `/api/replay/${encodeURIComponent(trajId)}`;

  const st = {
    trajId, info: null, n: 0, available: 0, frame: 0, drawnFrame: -1, playing: false, buffering: false,
    speedIndex: 2, speed: 1, ready: false, error: null, diverged: null,
    width: 160, height: 210, frameBytes: 160 * 210, lut: null, image: null,
    chunks: new Map(), pending: new Map(),
    actx: null, speechBuf: null, gameBuf: null, sources: [], speechGain: null, gameGain: null,
    audioMode: "none", anchorT: 0, anchorFrame: 0, waveform: null, dragging: false, resumeAfterDrag: false,
    currentWord: -1,
  };
  window.__replay = st; // for tests and the console

  // ---------------------------------------------------------------- helpers
  function fail(message) {
    st.error = message;
    messageEl.textContent = message;
    statusEl.textContent = "error";
  }

  async function fetchJson(url) {
    const r = await authFetch(url);
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) throw new Error((body && body.error) || `${url}: HTTP ${r.status}`);
    return body;
  }

  function fmtTime(frame) {
    const s = frame / 60;
    const m = Math.floor(s / 60);
    return `${m}:${(s - m * 60).toFixed(2).padStart(5, "0")}`;
  }

  function fitCanvas() {
    const aspect = (st.info && st.info.pixel_aspect) || 2;
    const availW = Math.max(320, Math.min(window.innerWidth - 32, 1000));
    const availH = Math.max(210, window.innerHeight - 300);
    // whole or half steps: pixelated scaling stays even
    const s = Math.max(1, Math.floor(2 * Math.min(availW / (st.width * aspect), availH / st.height)) / 2);
    canvas.style.width = `${st.width * aspect * s}px`;
    canvas.style.height = `${st.height * s}px`;
    const dpr = window.devicePixelRatio || 1;
    timeline.width = Math.max(100, Math.round(timeline.clientWidth * dpr));
    timeline.height = Math.max(40, Math.round(timeline.clientHeight * dpr));
    st.waveform = null;
  }

  // ---------------------------------------------------------------- screens
  function chunkOf(frame) { return Math.floor(frame / CHUNK); }

  function haveFrame(frame) { return st.chunks.has(chunkOf(frame)); }

  function loadChunk(c) {
    if (st.chunks.has(c)) return Promise.resolve(st.chunks.get(c));
    if (st.pending.has(c)) return st.pending.get(c);
    const p = (async () => {
      const start = c * CHUNK;
      const count = Math.min(CHUNK, st.available - start);
      if (count <= 0) throw new Error(`frame ${start} is not available`);
      const r = await authFetch(`${api}/screens?start=${start}&count=${count}`);
      if (!r.ok) {
        let msg = `screens ${start}+${count}: HTTP ${r.status}`;
        try { msg = (await r.json()).error || msg; } catch (e) { /* keep */ }
        throw new Error(msg);
      }
      const buf = new Uint8Array(await r.arrayBuffer());
      const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      const msgs = [];
      for (let pos = 0; pos + 4 <= buf.length;) {
        const len = dv.getUint32(pos, true);
        msgs.push(buf.subarray(pos + 4, pos + 4 + len));
        pos += 4 + len;
      }
      if (msgs.length && !(msgs[0][4] & 1)) throw new Error(`frame ${start}: a chunk must start with a keyframe`);
      const inflated = await Promise.all(msgs.map((m) => {
        const part = FrameCodec.zlibPart(m.subarray(5), (m[4] & 1) !== 0, st.height);
        return part ? FrameCodec.inflate(part) : null;
      }));
      const fb = st.frameBytes;
      const out = new Uint8Array(msgs.length * fb);
      const screen = new Uint8Array(fb);
      for (let i = 0; i < msgs.length; i++) {
        FrameCodec.apply(screen, msgs[i].subarray(5), (msgs[i][4] & 1) !== 0, st.width, st.height, inflated[i]);
        out.set(screen, i * fb);
      }
      st.chunks.set(c, out);
      while (st.chunks.size > MAX_CHUNKS) {
        // evict the chunk farthest from the playhead
        const here = chunkOf(st.frame);
        let far = -1, dist = -1;
        for (const k of st.chunks.keys()) if (Math.abs(k - here) > dist) { dist = Math.abs(k - here); far = k; }
        st.chunks.delete(far);
      }
      return out;
    })();
    st.pending.set(c, p);
    p.then(() => st.pending.delete(c), () => st.pending.delete(c));
    return p;
  }

  function prefetch(frame) {
    const c = chunkOf(frame);
    const ahead = st.speed >= 4 ? 3 : 2;
    for (let k = c; k <= c + ahead && k * CHUNK < st.available; k++) {
      if (!st.chunks.has(k) && !st.pending.has(k)) loadChunk(k).catch((e) => fail(e.message));
    }
  }

  function paint(frame) {
    const chunk = st.chunks.get(chunkOf(frame));
    if (!chunk) return false;
    const fb = st.frameBytes;
    const off = (frame - chunkOf(frame) * CHUNK) * fb;
    const idx = chunk.subarray(off, off + fb);
    const px = new Uint32Array(st.image.data.buffer);
    const lut = st.lut;
    for (let k = 0; k < fb; k++) px[k] = lut[idx[k]];
    ctx2d.putImageData(st.image, 0, 0);
    st.drawnFrame = frame;
    return true;
  }

  // ---------------------------------------------------------------- audio
  async function loadAudio() {
    const info = st.info;
    if (!info.speech && !info.game_audio) return;
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return;
    const actx = new AC();
    st.actx = actx;
    st.speechGain = actx.createGain();
    st.gameGain = actx.createGain();
    st.speechGain.connect(actx.destination);
    st.gameGain.connect(actx.destination);
    const decode = async (name) => {
      const r = await authFetch(`${api}/${name}`);
      if (!r.ok) throw new Error(`${name}: HTTP ${r.status}`);
      return actx.decodeAudioData(await r.arrayBuffer());
    };
    const [speech, game] = await Promise.all([
      info.speech ? decode("speech.wav").catch((e) => { console.warn(e); return null; }) : null,
      info.game_audio ? decode("game_audio.wav").catch((e) => { console.warn(e); return null; }) : null,
    ]);
    st.gameBuf = game;
    if (speech) st.speechBuf = alignSpeech(speech, info.speech);
  }

  // Lay the decoded speech on the frame timeline: segment j starts at frame f_j with speech sample s_j (in the
  // file's own rate) and plays at 1x until the next segment's frame.
  function alignSpeech(decoded, speech) {
    const rc = decoded.sampleRate;
    const scale = rc / speech.rate;
    const src = decoded.getChannelData(0);
    const total = Math.ceil(st.n * rc / 60);
    const out = st.actx.createBuffer(1, Math.max(1, total), rc);
    const dst = out.getChannelData(0);
    const segs = speech.segments && speech.segments.length ? speech.segments : [[0, 0]];
    for (let j = 0; j < segs.length; j++) {
      const f0 = segs[j][0];
      const f1 = j + 1 < segs.length ? segs[j + 1][0] : st.n;
      const d0 = Math.round(f0 * rc / 60);
      const d1 = Math.min(total, Math.round(f1 * rc / 60));
      let s0 = Math.round(segs[j][1] * scale);
      let d = d0;
      if (s0 < 0) { d -= s0; s0 = 0; }
      const len = Math.min(d1 - d, src.length - s0);
      if (len > 0) dst.set(src.subarray(s0, s0 + len), d);
    }
    return out;
  }

  function audioReady() {
    return st.actx && st.actx.state === "running" && (st.speechBuf || st.gameBuf);
  }

  // the context time being heard now
  function audioNow() {
    const actx = st.actx;
    if (actx.getOutputTimestamp) {
      const ts = actx.getOutputTimestamp();
      if (ts.contextTime > 0 && ts.performanceTime > 0) {
        return ts.contextTime + Math.max(0, performance.now() - ts.performanceTime) / 1000;
      }
    }
    return actx.currentTime - (actx.outputLatency || 0);
  }

  function stopSources() {
    for (const s of st.sources) {
      try { s.stop(); } catch (e) { /* already stopped */ }
      s.disconnect();
    }
    st.sources = [];
  }

  function setGains() {
    if (!st.actx) return;
    st.speechGain.gain.value = $("speech-on").checked ? 1 : 0;
    st.gameGain.gain.value = $("game-on").checked ? 1 : 0;
  }

  // ---------------------------------------------------------------- transport
  function startClock(frame) {
    stopSources();
    st.anchorFrame = frame;
    if (audioReady()) {
      st.audioMode = "webaudio";
      const when = st.actx.currentTime + AUDIO_LEAD_S;
      st.anchorT = when;
      for (const [buf, gain] of [[st.speechBuf, st.speechGain], [st.gameBuf, st.gameGain]]) {
        if (!buf) continue;
        const offset = frame / 60;
        if (offset >= buf.duration) continue;
        const s = st.actx.createBufferSource();
        s.buffer = buf;
        s.playbackRate.value = st.speed;
        s.connect(gain);
        s.start(when, offset);
        st.sources.push(s);
      }
    } else {
      st.audioMode = "clock";
      st.anchorT = performance.now() / 1000;
    }
  }

  function clockFrame() {
    const now = st.audioMode === "webaudio" ? audioNow() : performance.now() / 1000;
    return st.anchorFrame + Math.max(0, now - st.anchorT) * 60 * st.speed;
  }

  async function play() {
    if (!st.ready || st.playing) return;
    if (st.actx && st.actx.state !== "running") {
      try { await st.actx.resume(); } catch (e) { /* plays without sound */ }
    }
    if (st.frame >= st.n - 1) st.frame = 0;
    st.playing = true;
    st.buffering = false;
    startClock(st.frame);
    updateButtons();
  }

  function pause() {
    if (!st.playing) return;
    if (!st.buffering) st.frame = Math.min(st.n - 1, Math.floor(clockFrame()));
    st.playing = false;
    st.buffering = false;
    stopSources();
    updateButtons();
  }

  function toggle() { if (st.playing) pause(); else play(); }

  function seek(frame) {
    frame = Math.max(0, Math.min(st.n - 1, Math.round(frame)));
    st.frame = frame;
    prefetch(frame);
    if (st.playing && !st.buffering) startClock(frame);
  }

  function step(delta) {
    if (!st.ready) return;
    pause();
    seek(st.frame + delta);
  }

  function setSpeed(index) {
    index = Math.max(0, Math.min(SPEEDS.length - 1, index));
    const wasPlaying = st.playing && !st.buffering;
    if (wasPlaying) st.frame = Math.min(st.n - 1, Math.floor(clockFrame()));
    st.speedIndex = index;
    st.speed = SPEEDS[index];
    $("speed").value = String(st.speed);
    $("r-speed").textContent = `${st.speed}x`;
    if (wasPlaying) startClock(st.frame);
  }

  function updateButtons() {
    $("play").textContent = st.playing ? "Pause" : "Play";
  }

  // ---------------------------------------------------------------- timeline
  function buildWaveform() {
    const w = timeline.width, h = timeline.height;
    const off = document.createElement("canvas");
    off.width = w; off.height = h;
    const g = off.getContext("2d");
    g.fillStyle = "#181818";
    g.fillRect(0, 0, w, h);
    // the waveform, rewards and lives above, the words (if any) in a band below
    const dpr = window.devicePixelRatio || 1;
    const band = st.info.words ? Math.min(Math.round(h / 3), Math.round(WORD_BAND * dpr)) : 0;
    const wh = h - band;
    const mid = wh * 0.55, amp = wh * 0.4;
    if (st.speechBuf) {
      const data = st.speechBuf.getChannelData(0);
      const per = data.length / w;
      g.fillStyle = "#5b8fd9";
      for (let x = 0; x < w; x++) {
        const a = Math.floor(x * per), b = Math.max(a + 1, Math.floor((x + 1) * per));
        let lo = 0, hi = 0;
        // a column summarises up to ~hundreds of thousands of samples: stride through long ones
        const stride = Math.max(1, Math.floor((b - a) / 4000));
        for (let i = a; i < b && i < data.length; i += stride) {
          const v = data[i];
          if (v < lo) lo = v; else if (v > hi) hi = v;
        }
        g.fillRect(x, mid - hi * amp, 1, Math.max(1, (hi - lo) * amp));
      }
    } else {
      g.fillStyle = "#666";
      g.font = `${Math.round(wh * 0.18)}px system-ui, sans-serif`;
      g.fillText(st.info && st.info.speech ? "loading speech…" : "no speech recorded", 8, mid);
    }
    const f = st.info.frames;
    const xOf = (i) => (st.n > 1 ? i / (st.n - 1) : 0) * (w - 1);
    for (let i = 0; i < st.n; i++) {
      const r = f.reward[i];
      if (r !== 0) {
        g.fillStyle = r > 0 ? "#6d6" : "#f66";
        g.fillRect(Math.round(xOf(i)), 0, Math.max(1, Math.round(w / 800)), wh * 0.16);
      }
      if (i > 0 && f.lives[i] < f.lives[i - 1]) {
        g.fillStyle = "#f66";
        g.fillRect(Math.round(xOf(i)), wh * 0.84, Math.max(2, Math.round(w / 400)), wh * 0.16);
      }
    }
    if (band) drawWords(g, w, wh, band, xOf);
    if (st.diverged) {
      g.fillStyle = "rgba(255, 60, 60, 0.35)";
      const x = xOf(st.diverged.diverged_at);
      g.fillRect(x, 0, w - x, h);
    }
    st.waveform = off;
  }

  // A tick at each word's start frame (a thin bar over its frames) and its text to the right of the tick where the
  // label fits without overlapping another; keywords in their colour, labelled first so no other word hides one.
  function drawWords(g, w, top, band, xOf) {
    const words = st.info.words;
    g.fillStyle = "#202020";
    g.fillRect(0, top, w, band);
    const px = Math.max(9, Math.round(band * 0.6));
    const tickW = Math.max(1, Math.round(band / 22));
    const barH = Math.max(2, Math.round(band / 8));
    const keywords = [], others = [];
    words.forEach((word, i) => (word.keyword ? keywords : others).push(i));
    for (const i of others.concat(keywords)) { // keywords' ticks drawn over the others'
      const word = words[i];
      const x = Math.round(xOf(word.start_frame));
      const x1 = Math.round(xOf(Math.max(word.start_frame, word.end_frame)));
      g.fillStyle = word.keyword ? KEYWORD_COLOUR : WORD_COLOUR;
      g.fillRect(x, top, tickW, band);
      g.globalAlpha = 0.5;
      g.fillRect(x, top, Math.max(tickW, x1 - x + 1), barH);
      g.globalAlpha = 1;
    }
    g.font = `${px}px system-ui, sans-serif`;
    g.textBaseline = "alphabetic";
    const base = top + band - Math.round(band * 0.2);
    const gap = Math.round(px * 0.4);
    const placed = []; // [left, right) of the labels drawn
    for (const i of keywords.concat(others)) { // keywords labelled first, then the rest left to right
      const word = words[i];
      const left = Math.round(xOf(word.start_frame)) + tickW + 1;
      const right = left + Math.ceil(g.measureText(word.word).width);
      if (right > w || placed.some(([a, b]) => left < b + gap && a < right + gap)) continue;
      placed.push([left, right]);
      g.fillStyle = word.keyword ? KEYWORD_COLOUR : "#ccc";
      g.fillText(word.word, left, base);
    }
  }

  function drawTimeline() {
    if (!st.info) return;
    if (!st.waveform) buildWaveform();
    const w = timeline.width, h = timeline.height;
    tctx.drawImage(st.waveform, 0, 0);
    if (st.diverged) return;
    const x = Math.round((st.n > 1 ? st.frame / (st.n - 1) : 0) * (w - 1));
    tctx.fillStyle = "#fff";
    tctx.fillRect(x - 1, 0, 2, h);
  }

  function frameAt(ev) {
    const r = timeline.getBoundingClientRect();
    const frac = Math.max(0, Math.min(1, (ev.clientX - r.left) / r.width));
    return frac * (st.n - 1);
  }

  timeline.addEventListener("pointerdown", (ev) => {
    if (!st.ready) return;
    timeline.setPointerCapture(ev.pointerId);
    st.dragging = true;
    st.resumeAfterDrag = st.playing;
    if (st.playing) pause();
    seek(frameAt(ev));
  });
  timeline.addEventListener("pointermove", (ev) => { if (st.dragging) seek(frameAt(ev)); });
  const endDrag = (ev) => {
    if (!st.dragging) return;
    st.dragging = false;
    seek(frameAt(ev));
    if (st.resumeAfterDrag) play();
  };
  timeline.addEventListener("pointerup", endDrag);
  timeline.addEventListener("pointercancel", endDrag);

  // ---------------------------------------------------------------- the words strip
  function renderWords() {
    const words = st.info.words;
    wordsEl.replaceChildren();
    if (!words) {
      const note = document.createElement("span"), cmd = document.createElement("code");
      cmd.textContent = `python scripts/annotate_speech.py ${st.trajId}`;
      note.append("not annotated: ", cmd);
      wordsEl.append(note);
      wordsEl.classList.add("empty");
      return;
    }
    const a = st.info.annotation;
    const about = document.createElement("span");
    about.className = "words-about";
    const mode = a && a.mode === "keywords" ? `, keywords ${a.keywords.join(", ")}` : "";
    about.textContent = a ? `words (${a.engine}${mode}):` : "words:";
    wordsEl.append(about);
    if (!words.length) about.textContent += " none heard";
    words.forEach((word, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = word.keyword ? "word keyword" : "word";
      b.dataset.frame = String(word.start_frame);
      b.dataset.index = String(i);
      b.textContent = word.word;
      const conf = word.confidence === null ? "" : `, confidence ${word.confidence}`;
      b.title = `frames ${word.start_frame}-${word.end_frame} (${fmtTime(word.start_frame)})${conf}`;
      wordsEl.append(b);
    });
  }

  // the word being said at `frame` (-1 when none): the last one starting at or before it, if it has not ended
  function wordAt(frame) {
    const words = st.info.words;
    if (!words) return -1;
    let lo = 0, hi = words.length; // first word starting after frame
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (words[m].start_frame <= frame) lo = m + 1; else hi = m;
    }
    return lo > 0 && words[lo - 1].end_frame >= frame ? lo - 1 : -1;
  }

  function markWord(frame) {
    const i = wordAt(frame);
    if (i === st.currentWord) return;
    const old = wordsEl.querySelector("button.current");
    if (old) old.classList.remove("current");
    st.currentWord = i;
    if (i < 0) return;
    const b = wordsEl.querySelector(`button[data-index="${i}"]`);
    if (!b) return;
    b.classList.add("current");
    if (b.offsetTop < wordsEl.scrollTop || b.offsetTop + b.offsetHeight > wordsEl.scrollTop + wordsEl.clientHeight) {
      wordsEl.scrollTop = b.offsetTop - wordsEl.clientHeight / 3; // keep it in view without scrolling the page
    }
  }

  wordsEl.addEventListener("mousedown", (e) => {
    if (e.target.closest("button")) e.preventDefault(); // keep focus (and Space) off the words
  });
  wordsEl.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-frame]");
    if (b && st.ready) seek(Number(b.dataset.frame));
  });

  // ---------------------------------------------------------------- readout and the render loop
  let shownFrame = -1;
  function updateReadout() {
    if (!st.info || st.frame === shownFrame) return;
    shownFrame = st.frame;
    const f = st.info.frames, i = st.frame;
    $("r-frame").textContent = `${i} / ${st.n - 1}`;
    $("r-time").textContent = fmtTime(i);
    $("r-score").textContent = String(f.score[i]);
    $("r-reward").textContent = f.reward[i] ? (f.reward[i] > 0 ? `+${f.reward[i]}` : String(f.reward[i])) : "0";
    const a = f.action[i];
    $("r-action").textContent = `${st.info.action_names[String(a)] || "?"} (${a})`;
    $("r-keys").textContent = f.keys[i] || "none";
    $("r-lives").textContent = String(f.lives[i]);
    markWord(i);
  }

  function tick() {
    if (st.playing && !st.buffering) {
      const fr = Math.min(st.n - 1, Math.floor(clockFrame()));
      if (fr >= st.n - 1) {
        st.frame = fr;
        st.playing = false;
        stopSources();
        updateButtons();
      } else if (!haveFrame(fr)) {
        // the picture is not here yet: hold the sound and the clock until it is
        st.buffering = true;
        stopSources();
        st.frame = fr;
        statusEl.textContent = "buffering…";
        loadChunk(chunkOf(fr)).then(() => {
          if (st.playing && st.buffering) {
            st.buffering = false;
            statusEl.textContent = "ready";
            startClock(st.frame);
          }
        }).catch((e) => { fail(e.message); pause(); });
      } else {
        st.frame = fr;
        prefetch(fr);
      }
    }
    if (st.ready && st.frame !== st.drawnFrame) {
      if (!paint(st.frame)) prefetch(st.frame);
    }
    updateReadout();
    drawTimeline();
    requestAnimationFrame(tick);
  }

  // ---------------------------------------------------------------- controls
  for (const id of ["play", "step-back", "step-fwd"]) {
    $(id).addEventListener("mousedown", (e) => e.preventDefault()); // keep focus (and Space) off the buttons
  }
  $("play").addEventListener("click", toggle);
  $("step-back").addEventListener("click", () => step(-1));
  $("step-fwd").addEventListener("click", () => step(1));
  $("speed").addEventListener("change", (e) => {
    setSpeed(SPEEDS.indexOf(Number(e.target.value)));
    e.target.blur();
  });
  $("speech-on").addEventListener("change", setGains);
  $("game-on").addEventListener("change", setGains);
  document.addEventListener("keydown", (e) => {
    if (!st.ready || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === " " || e.code === "Space") { e.preventDefault(); toggle(); }
    else if (e.key === "ArrowRight") { e.preventDefault(); step(1); }
    else if (e.key === "ArrowLeft") { e.preventDefault(); step(-1); }
    else if (e.key === "]") { e.preventDefault(); setSpeed(st.speedIndex + 1); }
    else if (e.key === "[") { e.preventDefault(); setSpeed(st.speedIndex - 1); }
  });
  window.addEventListener("resize", fitCanvas);

  // ---------------------------------------------------------------- start
  async function main() {
    $("traj").textContent = trajId;
    document.title = `Replay ${trajId}`;
    statusEl.textContent = "re-simulating and verifying…";
    let info;
    try {
      info = await fetchJson(api);
    } catch (e) {
      fail(e.message);
      return;
    }
    st.info = info;
    st.n = info.n_frames;
    st.available = info.frames_available;
    st.width = info.width;
    st.height = info.height;
    st.frameBytes = info.width * info.height;
    st.lut = FrameCodec.paletteLut(info.palette);
    st.image = ctx2d.createImageData(info.width, info.height);
    canvas.width = info.width;
    canvas.height = info.height;
    if (info.words) timeline.classList.add("with-words");
    fitCanvas();
    renderWords();
    if (info.verified !== true) {
      const d = info.verified;
      st.diverged = d;
      const box = $("diverged");
      box.textContent = `Replay diverged at frame ${d.diverged_at} (${d.field}): ${d.message}\n` +
        "The log does not re-simulate, so it is not played.";
      box.hidden = false;
      $("verified").textContent = "does not verify";
      $("verified").className = "verified bad";
      timeline.classList.add("disabled");
      statusEl.textContent = "diverged";
      requestAnimationFrame(tick);
      return;
    }
    $("verified").textContent = `verified, ${st.n} frames`;
    $("verified").className = "verified ok";
    if (st.n === 0) { fail("this trajectory has no frames"); return; }
    requestAnimationFrame(tick);
    statusEl.textContent = "loading screens and sound…";
    try {
      await Promise.all([loadChunk(0), loadAudio().catch((e) => console.warn("audio:", e))]);
    } catch (e) {
      fail(e.message);
      return;
    }
    setGains();
    st.waveform = null;
    st.ready = true;
    for (const id of ["play", "step-back", "step-fwd", "speed"]) $(id).disabled = false;
    statusEl.textContent = "ready";
  }

  main();
})();
