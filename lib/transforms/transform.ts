/**
 * The transform model. A transform is a list of steps of three kinds, run in order:
 *  - geometry (resize, crops, flips): only planned in JS, from the image size and the sample's
 *    random stream; the plan is then run on the image: the first crop by the decoder, resizes by
 *    PIL's resampling in native code, later crops by row copies (flips are applied when writing);
 *  - pixels (colour jitter): run on the decoded 8-bit image;
 *  - toTensor and normalize: folded into one lookup table per channel, applied while the image is
 *    written as CHW float32 straight into its slot of the batch buffer.
 */
import type { Rng } from '../data/random';

/** How a resize samples the image (torchvision's InterpolationMode names). */
export type Interpolation = 'nearest' | 'bilinear' | 'bicubic' | 'lanczos';

/** @internal The image size and the geometric operations a plan can ask for. */
export interface Geometry {
  readonly width: number;
  readonly height: number;
  /** Scales the image to exactly `width` x `height`. */
  resize(width: number, height: number, interpolation: Interpolation): void;
  /** Keeps the `width` x `height` window at (`left`, `top`); parts outside the image are black. */
  crop(left: number, top: number, width: number, height: number): void;
  /** Mirrors left-right. */
  flip(): void;
}

/** @internal A decoded 8-bit image, interleaved (HWC). */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

/** @internal One step of a transform. Pixel steps must not depend on pixel positions (flips are deferred). */
export type Step =
  | { kind: 'geometry'; plan(g: Geometry, rng: Rng): void }
  | { kind: 'pixels'; apply(img: RawImage, rng: Rng): void }
  | { kind: 'toTensor' }
  | { kind: 'normalize'; mean: readonly number[]; std: readonly number[] };

/**
 * A transform as JSON: the factory's name in `type` and its arguments, all defaults filled in, so
 * `transforms.fromJSON` rebuilds the same transform (and a Python reader can map it to torchvision).
 */
export type TransformJSON =
  | { type: 'compose'; transforms: TransformJSON[] }
  | { type: 'resize'; size: number | [number, number]; interpolation: Interpolation; maxSize?: number }
  | { type: 'centerCrop'; size: number | [number, number] }
  | { type: 'randomResizedCrop'; size: number | [number, number]; scale: [number, number]; ratio: [number, number]; interpolation: Interpolation }
  | { type: 'randomHorizontalFlip'; p: number }
  | { type: 'colorJitter'; brightness?: number | [number, number]; contrast?: number | [number, number]; saturation?: number | [number, number] }
  | { type: 'toTensor' }
  | { type: 'normalize'; mean: number[]; std: number[] };

/**
 * An image transform, made by `transforms.resize(...)`, `transforms.compose([...])` and the others.
 * Datasets run it on each image: the geometric steps in sharp, the rest while writing the batch.
 *
 * @example
 * const t = transforms.compose([transforms.resize(256), transforms.centerCrop(224), transforms.toTensor()]);
 * console.log(String(t)); // compose([resize(256), centerCrop(224), toTensor()])
 */
export class Transform {
  /** A readable description, e.g. `centerCrop(224)`. */
  readonly name: string;
  /** @internal */
  readonly steps: readonly Step[];
  /** @internal What `toJSON` returns. */
  readonly spec: TransformJSON;

  /** @internal Use the factory functions (`transforms.resize`, ...). */
  constructor(name: string, steps: readonly Step[], spec: TransformJSON) {
    this.name = name;
    this.steps = steps;
    this.spec = spec;
  }

  toString(): string { return this.name; }

  /**
   * The transform as JSON (a fresh copy), which `transforms.fromJSON` turns back into the same
   * transform; `JSON.stringify(t)` uses it.
   *
   * @example
   * const json = transforms.imagenet({ train: false, size: 64 }).toJSON();
   * // { type: 'compose', transforms: [{ type: 'resize', size: 73, interpolation: 'bilinear' }, { type: 'centerCrop', size: 64 }, ...] }
   * const same = transforms.fromJSON(json);
   */
  toJSON(): TransformJSON { return structuredClone(this.spec); }
}

/**
 * Chains transforms, as torchvision's `Compose`. Image transforms come first, then `toTensor()`,
 * then `normalize()`; a compose without `toTensor()` ends with an implied one.
 *
 * @example
 * const eval224 = transforms.compose([
 *   transforms.resize(256), transforms.centerCrop(224), transforms.toTensor(), transforms.normalize(),
 * ]);
 */
export function compose(list: Transform[]): Transform {
  if (!Array.isArray(list)) throw new TypeError('compose(): expected an array of transforms');
  list.forEach((t, i) => {
    if (!(t instanceof Transform)) throw new TypeError(`compose(): element ${i} is not a transform (make them with transforms.resize(), ...)`);
  });
  const t = new Transform(`compose([${list.map(String).join(', ')}])`, list.flatMap((x) => x.steps), { type: 'compose', transforms: list.map((x) => x.toJSON()) });
  compile(t);
  return t;
}

/** @internal A transform checked and split into its image part and its tensor part. */
export interface Compiled {
  /** Geometry and pixel steps, in order. */
  image: readonly Step[];
  normalize: readonly { mean: readonly number[]; std: readonly number[] }[];
  /** Per channel count: one 256-entry table per channel, uint8 value -> float32 output. */
  tables: Map<number, Float32Array[]>;
}

const STEP_NAME: Record<Step['kind'], string> = { geometry: 'a geometric transform', pixels: 'a colour transform', toTensor: 'toTensor()', normalize: 'normalize()' };

/** @internal Checks the order of a transform's steps and prepares its tables. */
export function compile(t: Transform | undefined): Compiled {
  const steps = t?.steps ?? [];
  const image: Step[] = [];
  const normalize: Compiled['normalize'][number][] = [];
  let tensor = false;
  for (const s of steps) {
    if (s.kind === 'toTensor') {
      if (tensor) throw new Error(`${t}: toTensor() appears twice`);
      tensor = true;
    } else if (s.kind === 'normalize') {
      if (!tensor) throw new Error(`${t}: normalize() must come after toTensor() (it works on the float tensor, as in torchvision)`);
      normalize.push(s);
    } else {
      if (tensor) {
        throw new Error(`${t}: ${STEP_NAME[s.kind]} comes after toTensor(); image transforms run on the decoded image and must come before toTensor()`);
      }
      image.push(s);
    }
  }
  return { image, normalize, tables: new Map() };
}

/**
 * @internal The per-channel tables for an image of `channels` channels: ToTensor's `v / 255` then
 * each Normalize's `(x - mean) / std`, every step rounded to float32 as torch computes it.
 */
export function tables(c: Compiled, channels: number): Float32Array[] {
  let out = c.tables.get(channels);
  if (out) return out;
  for (const n of c.normalize) {
    if (n.mean.length !== 1 && n.mean.length !== channels) {
      throw new Error(`normalize(): mean and std have ${n.mean.length} values but the image has ${channels} channel(s)`);
    }
  }
  const f = Math.fround;
  out = Array.from({ length: channels }, (_, ch) => {
    const lut = new Float32Array(256);
    for (let v = 0; v < 256; v++) {
      let x = f(v / 255);
      for (const n of c.normalize) {
        const m = n.mean.length === 1 ? n.mean[0] : n.mean[ch];
        const s = n.std.length === 1 ? n.std[0] : n.std[ch];
        x = f(f(x - f(m)) / f(s));
      }
      lut[v] = x;
    }
    return lut;
  });
  c.tables.set(channels, out);
  return out;
}

/** @internal A torchvision size argument: an int, or [h, w]. */
export function sizeArg(size: unknown, what: string, allowInt = true): [number, number] | number {
  const ok = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v > 0;
  if (allowInt && ok(size)) return size as number;
  if (Array.isArray(size) && size.length === 1 && ok(size[0])) return allowInt ? size[0] : [size[0], size[0]];
  if (Array.isArray(size) && size.length === 2 && ok(size[0]) && ok(size[1])) return [size[0], size[1]];
  throw new TypeError(`${what}: size must be a positive integer or [height, width]: got ${JSON.stringify(size)}`);
}

/** @internal Python's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** @internal Validates an interpolation name. */
export function interpolationArg(v: unknown, what: string): Interpolation {
  if (v === undefined) return 'bilinear';
  if (v !== 'nearest' && v !== 'bilinear' && v !== 'bicubic' && v !== 'lanczos') {
    throw new TypeError(`${what}: interpolation must be 'nearest', 'bilinear', 'bicubic' or 'lanczos': got ${JSON.stringify(v)}`);
  }
  return v;
}

/** @internal Validates an options object. */
export function optionsArg<T extends object>(o: T | undefined, what: string): T {
  if (o === undefined) return {} as T;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new TypeError(`${what}: options must be an object`);
  return o;
}
