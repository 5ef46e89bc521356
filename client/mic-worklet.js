// Runs on the audio thread: turns the microphone into PCM16 mono chunks of about 100 ms.
// Each chunk carries the index of its first sample (counted since capture began) and the context frame at which
// that sample was processed, so the main thread can put it on the performance.now() clock.
class MicChunker extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunkSamples = Math.round(sampleRate * ((options.processorOptions || {}).chunkMs || 100) / 1000);
    this.buf = new Int16Array(this.chunkSamples);
    this.fill = 0;
    this.captured = 0; // samples since capture began
    this.chunkFirst = 0;
    this.chunkFrame = 0;
    this.sumSq = 0;
    this.peak = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true; // no input connected yet
    const ch = input[0], nch = input.length;
    for (let i = 0; i < ch.length; i++) {
      if (this.fill === 0) {
        this.chunkFirst = this.captured;
        this.chunkFrame = currentFrame + i;
      }
      let sum = ch[i];
      for (let c = 1; c < nch; c++) sum += input[c][i]; // a stereo device is mixed down to mono
      const v = Math.max(-1, Math.min(1, sum / nch));
      this.buf[this.fill++] = v < 0 ? v * 0x8000 : v * 0x7fff;
      this.sumSq += v * v;
      const a = Math.abs(v);
      if (a > this.peak) this.peak = a;
      this.captured++;
      if (this.fill === this.chunkSamples) {
        const pcm = this.buf.buffer;
        this.port.postMessage({
          firstSample: this.chunkFirst, frame: this.chunkFrame, pcm,
          rms: Math.sqrt(this.sumSq / this.chunkSamples), peak: this.peak,
        }, [pcm]);
        this.buf = new Int16Array(this.chunkSamples);
        this.fill = 0;
        this.sumSq = 0;
        this.peak = 0;
      }
    }
    return true;
  }
}
registerProcessor("mic-chunker", MicChunker);
