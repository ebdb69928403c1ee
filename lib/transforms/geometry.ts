/**
 * Geometric transforms: each computes, from the image size (and the sample's random stream), the
 * crop/resize/flip that torchvision would do; pipeline.ts then does the work on the image: the
 * decoder crops, PIL's resampling (native/resample.cc) resizes, and flips happen as it is written.
 */
import * as check from '../check';
import { interpolationArg, optionsArg, roundHalfEven, sizeArg, Transform, type Geometry, type Interpolation } from './transform';

function describe(size: number | [number, number]): string {
  return Array.isArray(size) ? `[${size}]` : String(size);
}

/** @internal torchvision's `_compute_resized_output_size`: [width, height]. */
export function resizedSize(width: number, height: number, size: number | [number, number], maxSize?: number): [number, number] {
  if (Array.isArray(size)) return [size[1], size[0]];
  const [short, long] = width <= height ? [width, height] : [height, width];
  let newShort = size;
  let newLong = Math.trunc((size * long) / short);
  if (maxSize !== undefined && newLong > maxSize) {
    newShort = Math.trunc((maxSize * newShort) / newLong);
    newLong = maxSize;
  }
  return width <= height ? [newShort, newLong] : [newLong, newShort];
}

/**
 * Resizes as torchvision's `Resize` on a PIL image: an integer `size` sets the shorter side (the
 * other keeps the aspect ratio, truncated as torchvision does), `[height, width]` sets both.
 * Bilinear by default, resampled by PIL's algorithm (antialiased when shrinking) in native code off
 * the main thread: every filter gives PIL's pixels exactly. The image is decoded at full scale
 * first, as by PIL (no reduced-scale JPEG decode, which would give other pixels).
 *
 * @example
 * transforms.resize(256);                                   // shorter side 256
 * transforms.resize([224, 224], { interpolation: 'bicubic' });
 */
export function resize(size: number | number[], options: { interpolation?: Interpolation; maxSize?: number } = {}): Transform {
  const s = sizeArg(size, 'resize()');
  const o = optionsArg(options, 'resize()');
  const interpolation = interpolationArg(o.interpolation, 'resize()');
  const maxSize = o.maxSize === undefined ? undefined : check.integer(o.maxSize, 'resize(): maxSize', 1);
  if (maxSize !== undefined) {
    if (Array.isArray(s)) throw new Error('resize(): maxSize only applies when size is a single integer (the shorter side)');
    if (maxSize <= s) throw new RangeError(`resize(): maxSize (${maxSize}) must be greater than size (${s})`);
  }
  return new Transform(`resize(${describe(s)})`, [{
    kind: 'geometry',
    plan(g: Geometry) {
      const [w, h] = resizedSize(g.width, g.height, s, maxSize);
      g.resize(w, h, interpolation);
    },
  }], { type: 'resize', size: s, interpolation, ...(maxSize === undefined ? {} : { maxSize }) });
}

/**
 * Crops the centre `size` (an integer for a square, or `[height, width]`), as torchvision's
 * `CenterCrop`: offsets are rounded as Python's `round`, and an image smaller than the crop is
 * padded with black.
 *
 * @example
 * transforms.centerCrop(224);
 */
export function centerCrop(size: number | number[]): Transform {
  const s = sizeArg(size, 'centerCrop()');
  const [ch, cw] = Array.isArray(s) ? s : [s, s];
  return new Transform(`centerCrop(${describe(s)})`, [{
    kind: 'geometry',
    plan(g: Geometry) {
      // Per axis: an image shorter than the crop is padded (floor half before), a longer one is cropped.
      const left = cw > g.width ? -Math.floor((cw - g.width) / 2) : roundHalfEven((g.width - cw) / 2);
      const top = ch > g.height ? -Math.floor((ch - g.height) / 2) : roundHalfEven((g.height - ch) / 2);
      g.crop(left, top, cw, ch);
    },
  }], { type: 'centerCrop', size: s });
}

/** Options of `randomResizedCrop`. */
export interface RandomResizedCropOptions {
  /** Range of the crop's area as a fraction of the image's; default [0.08, 1]. */
  scale?: [number, number];
  /** Range of the crop's aspect ratio (width / height); default [3/4, 4/3]. */
  ratio?: [number, number];
  interpolation?: Interpolation;
}

function rangeArg(v: unknown, def: [number, number], what: string): [number, number] {
  if (v === undefined) return def;
  if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0)) {
    throw new TypeError(`${what} must be [min, max] of positive numbers: got ${JSON.stringify(v)}`);
  }
  if (v[0] > v[1]) throw new RangeError(`${what} must be [min, max] with min <= max: got [${v}]`);
  return [v[0], v[1]];
}

/**
 * Crops a random part of the image and resizes it to `size`, as torchvision's
 * `RandomResizedCrop` (same sampling: up to 10 tries of area and log-uniform aspect ratio, then a
 * centre crop). The random choices come from the sample's stream, so a loader seed repeats them.
 *
 * @example
 * transforms.randomResizedCrop(224, { scale: [0.08, 1], ratio: [3 / 4, 4 / 3] });
 */
export function randomResizedCrop(size: number | number[], options: RandomResizedCropOptions = {}): Transform {
  const s = sizeArg(size, 'randomResizedCrop()');
  const [outH, outW] = Array.isArray(s) ? s : [s, s];
  const o = optionsArg(options, 'randomResizedCrop()');
  const scale = rangeArg(o.scale, [0.08, 1], 'randomResizedCrop(): scale');
  const ratio = rangeArg(o.ratio, [3 / 4, 4 / 3], 'randomResizedCrop(): ratio');
  const interpolation = interpolationArg(o.interpolation, 'randomResizedCrop()');
  const logRatio = [Math.log(ratio[0]), Math.log(ratio[1])];
  return new Transform(`randomResizedCrop(${describe(s)}, scale=[${scale}], ratio=[${ratio.map((r) => +r.toFixed(4))}])`, [{
    kind: 'geometry',
    plan(g, rng) {
      const { width, height } = g;
      const area = width * height;
      for (let k = 0; k < 10; k++) {
        const targetArea = area * rng.uniform(scale[0], scale[1]);
        const aspect = Math.exp(rng.uniform(logRatio[0], logRatio[1]));
        const w = roundHalfEven(Math.sqrt(targetArea * aspect));
        const h = roundHalfEven(Math.sqrt(targetArea / aspect));
        if (w > 0 && w <= width && h > 0 && h <= height) {
          const top = rng.randint(0, height - h + 1);
          const left = rng.randint(0, width - w + 1);
          g.crop(left, top, w, h);
          g.resize(outW, outH, interpolation);
          return;
        }
      }
      const inRatio = width / height;
      let w = width;
      let h = height;
      if (inRatio < ratio[0]) h = roundHalfEven(w / ratio[0]);
      else if (inRatio > ratio[1]) w = roundHalfEven(h * ratio[1]);
      g.crop(Math.floor((width - w) / 2), Math.floor((height - h) / 2), w, h);
      g.resize(outW, outH, interpolation);
    },
  }], { type: 'randomResizedCrop', size: s, scale, ratio, interpolation });
}

/**
 * Mirrors the image left-right with probability `p` (default 0.5), as torchvision's
 * `RandomHorizontalFlip`. The flip is exact: it is applied while the pixels are written out.
 *
 * @example
 * transforms.randomHorizontalFlip();      // p = 0.5
 * transforms.randomHorizontalFlip(1);     // always
 */
export function randomHorizontalFlip(p = 0.5): Transform {
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new RangeError(`randomHorizontalFlip(): p must be a probability in [0, 1]: got ${String(p)}`);
  return new Transform(`randomHorizontalFlip(${p})`, [{
    kind: 'geometry',
    plan(g, rng) {
      if (rng.random() < p) g.flip();
    },
  }], { type: 'randomHorizontalFlip', p });
}
