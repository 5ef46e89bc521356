// Microphone capture (getUserMedia + AudioWorklet, PCM16 mono) and the microphone check page.
"use strict";
window.Mic = (() => {
  const listeners = new Set();
  const mic = {
    stream: null, ctx: null, node: null, track: null, rate: null, settings: {}, lastChunkAt: 0,
    clockOffsetMs: 0, // added to performance.now(): the client clock runs from the tab's first page (app.js)
    level: 0, error: null, chunks: 0, onChunk: (fn) => listeners.add(fn), offChunk: (fn) => listeners.delete(fn),
  };

  function explain(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError")
      return "The browser was not allowed to use your microphone. Click the camera/microphone icon in the address bar, allow the microphone for this site, then reload the page.";
    if (name === "NotFoundError" || name === "OverconstrainedError")
      return "No microphone was found. Plug one in (or enable it in your system's sound settings), then reload the page.";
    if (name === "NotReadableError")
      return "Your microphone is in use by another program or blocked by the system. Close other programs using it, then reload the page.";
    return `The microphone could not be started (${name || err}). Reload the page to try again.`;
  }

  // Client ms (performance.now clock, plus clockOffsetMs) at which context frame `frame` was captured.
  function frameToClientMs(frame) {
    return frameToPerfMs(frame) + mic.clockOffsetMs;
  }
  function frameToPerfMs(frame) {
    const ctx = mic.ctx;
    const ts = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    const latencyMs = ((mic.settings.latency || 0) * 1000);
    if (ts && ts.performanceTime > 0 && ts.contextTime > 0) {
      return ts.performanceTime + (frame / ctx.sampleRate - ts.contextTime) * 1000 - latencyMs;
    }
    return performance.now() - (ctx.currentTime - frame / ctx.sampleRate) * 1000 - latencyMs;
  }

  mic.start = async () => {
    if (mic.stream) return mic;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw Object.assign(new Error("This browser cannot record audio."), { help: "Use a current Chrome, Edge or Firefox." });
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, sampleRate: 48000, echoCancellation: false, noiseSuppression: false,
          autoGainControl: false },
        video: false,
      });
    } catch (err) {
      throw Object.assign(new Error(explain(err)), { help: explain(err), cause: err });
    }
    const ctx = new AudioContext({ sampleRate: 48000, latencyHint: "interactive" });
    await ctx.audioWorklet.addModule("/static/mic-worklet.js");
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "mic-chunker", { processorOptions: { chunkMs: 100 } });
    const sink = ctx.createGain();
    sink.gain.value = 0; // keeps the graph pulled without playing the microphone back
    source.connect(node).connect(sink).connect(ctx.destination);
    if (ctx.state !== "running") await ctx.resume();
    const track = stream.getAudioTracks()[0];
    Object.assign(mic, { stream, ctx, node, track, rate: ctx.sampleRate, settings: track.getSettings() });
    node.port.onmessage = (e) => {
      const m = e.data;
      mic.chunks++;
      mic.lastChunkAt = performance.now();
      mic.level = m.rms;
      const chunk = { firstSample: m.firstSample, t: frameToClientMs(m.frame), pcm: m.pcm, rms: m.rms, peak: m.peak };
      for (const fn of listeners) fn(chunk);
    };
    for (const ev of ["mute", "unmute", "ended"]) track.addEventListener(ev, () => mic.onTrackEvent && mic.onTrackEvent(ev));
    return mic;
  };

  mic.info = () => ({
    sample_rate: mic.rate, channel_count: mic.settings.channelCount || 1,
    echo_cancellation: mic.settings.echoCancellation ?? null, noise_suppression: mic.settings.noiseSuppression ?? null,
    auto_gain_control: mic.settings.autoGainControl ?? null, device_label: mic.track ? mic.track.label : null,
    input_latency_s: mic.settings.latency ?? null, context_base_latency_s: mic.ctx ? mic.ctx.baseLatency : null,
  });

  // A low-pass filter (windowed sinc, cut at 0.9 of the new Nyquist) and every `factor`-th sample: 48 kHz to 16 kHz
  // for `--audio-format pcm16k`. `push(Int16Array)` returns the chunk's output samples; the filter's state carries
  // over from chunk to chunk, so the output is one continuous signal (delayed by the filter's 8 * factor samples).
  mic.downsampler = (factor) => {
    const N = 16 * factor + 1, M = (N - 1) / 2, fc = 0.45 / factor, h = new Float64Array(N);
    let sum = 0;
    for (let n = 0; n < N; n++) {
      const x = n - M, sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
      h[n] = sinc * (0.54 - 0.46 * Math.cos((2 * Math.PI * n) / (N - 1)));
      sum += h[n];
    }
    for (let n = 0; n < N; n++) h[n] /= sum;
    let tail = new Float64Array(N - 1), phase = 0;
    return {
      factor,
      push(x) {
        const buf = new Float64Array(tail.length + x.length);
        buf.set(tail); buf.set(x, tail.length);
        const out = [];
        let i = phase;
        for (; i < x.length; i += factor) {
          let y = 0;
          const end = N - 1 + i;
          for (let j = 0; j < N; j++) y += h[j] * buf[end - j];
          out.push(Math.max(-32768, Math.min(32767, Math.round(y))));
        }
        phase = i - x.length;
        tail = buf.slice(buf.length - (N - 1));
        return Int16Array.from(out);
      },
    };
  };

  // A PCM16 mono WAV of Int16Array chunks, for playing the test recording back.
  mic.wav = (chunks, rate) => {
    const n = chunks.reduce((a, c) => a + c.length, 0);
    const buf = new ArrayBuffer(44 + n * 2), v = new DataView(buf);
    const w = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
    w(0, "RIFF"); v.setUint32(4, 36 + n * 2, true); w(8, "WAVE"); w(12, "fmt "); v.setUint32(16, 16, true);
    v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true);
    v.setUint16(32, 2, true); v.setUint16(34, 16, true); w(36, "data"); v.setUint32(40, n * 2, true);
    let o = 44;
    for (const c of chunks) { new Int16Array(buf, o, c.length).set(c); o += c.length * 2; }
    return new Blob([buf], { type: "audio/wav" });
  };
  return mic;
})();
