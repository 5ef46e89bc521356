// The `xor` frame codec's decoder (server/core/codec.py, docs/protocol.md), shared by the game and replay pages.
// A message is uint32 LE frame number, uint8 flags (bit 0 keyframe), payload. A keyframe's payload is zlib of the
// screen (palette indices, width*height bytes). A delta frame's payload is a bitmask of the changed rows (row r is
// bit 0x80 >> (r % 8) of byte r >> 3), then zlib of those rows XORed with the previous frame's (absent if none).
"use strict";
const FrameCodec = (() => {
  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  // The same, at once: fflate (client/vendor), so that a frame is on its way to the screen the moment it arrives
  // rather than a few event-loop turns later (DecompressionStream: 0.2-7 ms, by the turns the page had to wait).
  function inflateSync(bytes) {
    return fflate.unzlibSync(bytes);
  }

  // The part of a payload to inflate, or null when there is none (a delta frame in which no row changed).
  function zlibPart(payload, keyframe, height) {
    if (keyframe) return payload;
    const maskBytes = (height + 7) >> 3;
    if (payload.length < maskBytes) throw new Error(`delta frame of ${payload.length} bytes: shorter than its row mask`);
    return payload.length > maskBytes ? payload.subarray(maskBytes) : null;
  }

  // Applies one payload to `screen` in place, given its inflated zlib part (`data`, or null).
  function apply(screen, payload, keyframe, width, height, data) {
    if (keyframe) {
      if (data.length !== width * height) throw new Error(`keyframe of ${data.length} bytes, expected ${width * height}`);
      screen.set(data);
      return;
    }
    let k = 0;
    for (let r = 0; r < height; r++) {
      if (!(payload[r >> 3] & (0x80 >> (r & 7)))) continue;
      const o = r * width, s = k * width;
      if (!data || s + width > data.length) throw new Error("delta frame: fewer row bytes than changed rows");
      for (let x = 0; x < width; x++) screen[o + x] ^= data[s + x];
      k++;
    }
  }

  // Screen byte v -> its colour as ImageData's RGBA in a little-endian Uint32Array: palette[v >> 1] (`palette`: 128 RGB
  // triples, bytes or an array of numbers).
  function paletteLut(palette) {
    const p = new Uint8Array(palette), lut = new Uint32Array(256);
    for (let v = 0; v < 256; v++) {
      const i = (v >> 1) * 3;
      lut[v] = (0xff << 24) | (p[i + 2] << 16) | (p[i + 1] << 8) | p[i];
    }
    return lut;
  }

  return { inflate, inflateSync, zlibPart, apply, paletteLut };
})();
