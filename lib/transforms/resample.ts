/**
 * @internal PIL's convolution resampling (`ImagingResample` in Pillow's Resample.c) on 8-bit
 * interleaved images, bit for bit (checked against Pillow 9.4): per output pixel a filter centred
 * at `(x + 0.5) * scale`, its support widened by the scale when shrinking (antialiasing), taps
 * outside the image dropped and the weights renormalised, fixed-point weights of 22 bits, a
 * horizontal pass rounded to 8 bits then a vertical pass; nearest neighbour as PIL's
 * `ImagingScaleAffine`. torchvision's `Resize` on
 * a PIL image is exactly this. The pipeline uses it for the resizes where libvips' result is not
 * PIL's (see `libvipsMatchesPil` in pipeline.ts); libvips is faster where it is.
 */
import type { Interpolation, RawImage } from './transform';

interface Filter {
  support: number;
  at(x: number): number;
}

const BICUBIC_A = -0.5;

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

const FILTERS: Record<Exclude<Interpolation, 'nearest'>, Filter> = {
  bilinear: {
    support: 1,
    at(x) {
      x = Math.abs(x);
      return x < 1 ? 1 - x : 0;
    },
  },
  bicubic: {
    support: 2,
    at(x) {
      const a = BICUBIC_A;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
  lanczos: {
    support: 3,
    at(x) {
      return x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
    },
  },
};

const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

/** The taps of one axis: output pixel `i` reads `count[i]` inputs from `first[i]` with weights `k[i * ksize ...]`. */
interface Taps {
  first: Int32Array;
  count: Int32Array;
  ksize: number;
  k: Int32Array;
}

/** PIL's `precompute_coeffs` then `normalize_coeffs_8bpc`, in the same double arithmetic. */
function taps(inSize: number, outSize: number, filter: Filter): Taps {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const ss = 1 / filterScale;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C's (int) cast truncates toward zero before the clamp.
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const n = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let sum = 0;
    for (let x = 0; x < n; x++) {
      w[x] = filter.at((x + xmin - center + 0.5) * ss);
      sum += w[x];
    }
    for (let x = 0; x < n; x++) {
      const v = sum !== 0 ? w[x] / sum : w[x];
      k[xx * ksize + x] = Math.trunc(v < 0 ? -0.5 + v * ONE : 0.5 + v * ONE);
    }
    first[xx] = xmin;
    count[xx] = n;
  }
  return { first, count, ksize, k };
}

/** PIL's clip8: a fixed-point sum back to 0..255. */
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Resamples rows `rowFirst ..< rowFirst + rows` of `img` along x to `width` pixels. */
function horizontal(img: RawImage, rowFirst: number, rows: number, width: number, t: Taps): Uint8Array {
  const { data, width: inW, channels: C } = img;
  const out = new Uint8Array(width * rows * C);
  const { first, count, ksize, k } = t;
  let o = 0;
  for (let y = 0; y < rows; y++) {
    const row = (rowFirst + y) * inW;
    for (let xx = 0; xx < width; xx++) {
      const n = count[xx];
      const kOff = xx * ksize;
      const base = (row + first[xx]) * C;
      if (C === 3) {
        // Products and sums stay inside int32 (|k| < 2^22 and their sum is ~1), as in PIL's C.
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0, j = base; x < n; x++, j += 3) {
          const w = k[kOff + x];
          s0 += data[j] * w;
          s1 += data[j + 1] * w;
          s2 += data[j + 2] * w;
        }
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
        o += 3;
      } else {
        for (let c = 0; c < C; c++) {
          let s = HALF;
          for (let x = 0, j = base + c; x < n; x++, j += C) s += data[j] * k[kOff + x];
          out[o++] = clip8(s);
        }
      }
    }
  }
  return out;
}

/** Resamples an image of `rowLength` values per row along y. */
function vertical(data: Uint8Array, rowLength: number, height: number, t: Taps): Uint8Array {
  const out = new Uint8Array(rowLength * height);
  const { first, count, ksize, k } = t;
  let o = 0;
  for (let yy = 0; yy < height; yy++) {
    const n = count[yy];
    const kOff = yy * ksize;
    const base = first[yy] * rowLength;
    for (let i = 0; i < rowLength; i++, o++) {
      let s = HALF;
      for (let y = 0, j = base + i; y < n; y++, j += rowLength) s += data[j] * k[kOff + y];
      out[o] = clip8(s);
    }
  }
  return out;
}

/**
 * PIL's nearest-neighbour resize (`ImagingScaleAffine`): the source position starts at half a step
 * and accumulates the step, truncated, exactly as PIL's doubles do.
 */
function nearest(img: RawImage, width: number, height: number): Uint8Array {
  const { data, width: inW, height: inH, channels: C } = img;
  const sx = inW / width;
  const sy = inH / height;
  const xin = new Int32Array(width);
  for (let x = 0, xo = sx * 0.5; x < width; x++, xo += sx) xin[x] = Math.min(inW - 1, Math.trunc(xo));
  const out = new Uint8Array(width * height * C);
  let o = 0;
  for (let y = 0, yo = sy * 0.5; y < height; y++, yo += sy) {
    const row = Math.min(inH - 1, Math.trunc(yo)) * inW;
    for (let x = 0; x < width; x++) {
      const j = (row + xin[x]) * C;
      for (let c = 0; c < C; c++) out[o++] = data[j + c];
    }
  }
  return out;
}

/**
 * @internal `img` resized to `width` x `height` as PIL's `Image.resize(size, filter)` does, which is
 * what torchvision's `Resize` does to a PIL image. The input is not modified.
 *
 * @example
 * const big = resample({ data, width: 32, height: 32, channels: 3 }, 224, 224, 'bicubic');
 */
export function resample(img: RawImage, width: number, height: number, interpolation: Interpolation): RawImage {
  const C = img.channels;
  if (interpolation === 'nearest') return { data: nearest(img, width, height), width, height, channels: C };
  const filter = FILTERS[interpolation];
  const v = height !== img.height ? taps(img.height, height, filter) : undefined;
  let data = img.data;
  if (width !== img.width) {
    // As PIL: only the rows the vertical pass reads go through the horizontal pass.
    const rowFirst = v ? v.first[0] : 0;
    const rowEnd = v ? v.first[height - 1] + v.count[height - 1] : img.height;
    data = horizontal(img, rowFirst, rowEnd - rowFirst, width, taps(img.width, width, filter));
    if (v) for (let i = 0; i < height; i++) v.first[i] -= rowFirst;
  }
  if (v) data = vertical(data, width * C, height, v);
  else if (data === img.data) data = Uint8Array.from(data);
  return { data, width, height, channels: C };
}
