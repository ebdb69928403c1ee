/**
 * @internal Runs a compiled transform on one image. Geometry is planned in JS into "passes" that
 * sharp can each do in one go (its fixed order: crop, resize, crop, pad); sharp decodes and
 * resamples on libuv's threadpool, except the resizes where libvips and PIL disagree, which run
 * PIL's algorithm (resample.ts); the result is written as CHW float32 into the batch buffer
 * through per-channel lookup tables, with deferred left-right flips applied by the write order.
 */
import { promises as fsp } from 'fs';
import sharp, { type KernelEnum, type SharpOptions } from 'sharp';
import type { Rng } from '../data/random';
import { resample } from './resample';
import { tables, type Compiled, type Geometry, type Interpolation, type RawImage } from './transform';

/** What a file's header says, cached by datasets between epochs. */
export interface ImageMeta {
  width: number;
  height: number;
  hasAlpha: boolean;
  format: string;
}

/**
 * An image to transform: a file (decoded by sharp; `bytes` when its contents are in memory already,
 * an uploaded image for example, with `file` naming it), or pixels already in memory.
 */
export type ImageSource = { file: string; bytes?: Buffer; meta?: ImageMeta } | { raw: RawImage };

/**
 * An 8-bit HWC image and how it becomes CHW float32: `luts` holds 256 floats per channel (the
 * byte's final value, ToTensor and Normalize folded together), `mirrored` flips it left-right.
 * The DataLoader hands a batch of these to the native writer (off the main thread).
 */
export interface PixelPlanes {
  data: Uint8Array;
  luts: Float32Array;
  mirrored: boolean;
}

/** A transformed image, ready to be written into a batch. */
export interface Decoded {
  /** [channels, height, width]. */
  shape: [number, number, number];
  /** The header of a file source (for the dataset to cache). */
  meta?: ImageMeta;
  /** The pixels and their tables, for the native batch writer. */
  planes: PixelPlanes;
  /** Writes the image as CHW float32 into `out` at `offset` (in JS, on this thread). */
  write(out: Float32Array, offset: number): void;
}

const packedTables = new WeakMap<Float32Array[], Float32Array>();

/** The per-channel tables as one array (C x 256), made once per compiled transform and channel count. */
function packed(luts: Float32Array[]): Float32Array {
  let out = packedTables.get(luts);
  if (!out) {
    out = new Float32Array(luts.length * 256);
    luts.forEach((lut, c) => out!.set(lut, c * 256));
    packedTables.set(luts, out);
  }
  return out;
}

interface Rect { left: number; top: number; width: number; height: number }
/** What sharp does in one go. */
interface SharpPass {
  pre?: Rect;
  resize?: { width: number; height: number; kernel: keyof KernelEnum };
  post?: Rect;
  pad?: { left: number; top: number; right: number; bottom: number };
}
/** A resize by the port of PIL's resampling, on the decoded pixels. */
interface ResamplePass { resample: { width: number; height: number; interpolation: Interpolation } }
type Pass = SharpPass | ResamplePass;

type Filter = 'bilinear' | 'bicubic';
const KERNEL: Record<Filter, keyof KernelEnum> = { bilinear: 'linear', bicubic: 'cubic' };

/**
 * Whether libvips' resize gives PIL's result (torchvision's, on PIL images). Measured against
 * Pillow, on noise and photographs: reducing both axes by less than 4x, bilinear or bicubic, it is
 * PIL's antialiased convolution up to rounding (a quarter of a level of 255 apart on average, at
 * most a few levels at a few pixels) and 2-3x faster than resample.ts, so libvips keeps those
 * (without shrink-on-load: a JPEG decoded at half scale from 3x was up to 5 levels off).
 * Elsewhere it is not: enlarging, it samples on a grid about half an input pixel off PIL's (a ramp
 * enlarged 64 -> 73 starts 0, 2, 5, 9 where PIL gives 0, 3, 7, 10); from 4x it box-shrinks first
 * (0.7 to 1.5 levels off on a photograph, 2 to 3 on noise); its nearest picks other pixels, and
 * its lanczos3 is over a level off on noise.
 */
function libvipsMatchesPil(fromW: number, fromH: number, toW: number, toH: number, interpolation: Interpolation): interpolation is Filter {
  return (interpolation === 'bilinear' || interpolation === 'bicubic') &&
    toW <= fromW && toH <= fromH && fromW < 4 * toW && fromH < 4 * toH;
}

// The first frame of GIF/TIFF; 'truncated' fails on cut-off files as PIL does, not on benign warnings.
const OPEN: SharpOptions = { pages: 1, page: 0, failOn: 'truncated' };
const BLACK = { r: 0, g: 0, b: 0, alpha: 1 };

let cacheChecked = false;

/**
 * libvips keeps the last operations in a cache (sharp's default: 100 items, 50 MB, 20 files) for
 * when the same operation runs again. A data pipeline never repeats one (each image is new bytes),
 * so the cache's hashing and locking only cost: about 9% of the CPU per image on 500x375 JPEGs.
 * Turned off on the first decode, unless the application has set its own limits already.
 */
function disableUnusedCache(): void {
  if (cacheChecked) return;
  cacheChecked = true;
  const c = sharp.cache();
  if (c.items.max === 100 && c.memory.max === 50 && c.files.max === 20) sharp.cache(false);
}

/** Reads an image's size and format from the header in its bytes. */
async function readMeta(bytes: Buffer): Promise<ImageMeta> {
  const m = await sharp(bytes, OPEN).metadata();
  if (!m.width || !m.height) throw new Error('the header has no image size');
  return { width: m.width, height: m.height, hasAlpha: m.hasAlpha ?? false, format: m.format ?? 'unknown' };
}

/**
 * Collects geometry into passes: sharp passes, a new one whenever sharp's order would be broken,
 * and resample passes for the resizes libvips would do differently from PIL.
 */
class Planner implements Geometry {
  width: number;
  height: number;
  mirrored = false;
  passes: Pass[] = [];
  private open: SharpPass | undefined;

  constructor(width: number, height: number) {
    this.width = width;
    this.height = height;
  }

  private pass(fresh: boolean): SharpPass {
    if (!this.open || fresh) {
      this.open = {};
      this.passes.push(this.open);
    }
    return this.open;
  }

  resize(width: number, height: number, interpolation: Interpolation): void {
    if (width === this.width && height === this.height) return;
    if (libvipsMatchesPil(this.width, this.height, width, height, interpolation)) {
      const cur = this.open;
      const p = this.pass(!!cur && !!(cur.resize || cur.post || cur.pad));
      p.resize = { width, height, kernel: KERNEL[interpolation] };
    } else {
      this.passes.push({ resample: { width, height, interpolation } });
      this.open = undefined;
    }
    this.width = width;
    this.height = height;
  }

  crop(left: number, top: number, width: number, height: number): void {
    if (this.mirrored) left = this.width - left - width;
    if (left === 0 && top === 0 && width === this.width && height === this.height) return;
    const p = this.pass(!!this.open?.pad);
    const l = Math.max(0, left);
    const t = Math.max(0, top);
    const r = Math.min(this.width, left + width);
    const b = Math.min(this.height, top + height);
    if (r <= l || b <= t) throw new Error(`crop ${width}x${height} at (${left}, ${top}) lies outside the ${this.width}x${this.height} image`);
    const base = p.resize ? p.post : p.pre;
    const rect = { left: (base?.left ?? 0) + l, top: (base?.top ?? 0) + t, width: r - l, height: b - t };
    if (p.resize) p.post = rect;
    else p.pre = rect;
    if (l > left || t > top || r < left + width || b < top + height) {
      p.pad = { left: l - left, top: t - top, right: left + width - r, bottom: top + height - b };
    }
    this.width = width;
    this.height = height;
  }

  flip(): void {
    this.mirrored = !this.mirrored;
  }

  /** Takes the planned passes, leaving the planner on an image of the current size. */
  take(): Pass[] {
    const out = this.passes;
    this.passes = [];
    this.open = undefined;
    return out;
  }
}

/** A file's bytes, read by Node into memory (sharp decodes from a Buffer faster than from a path). */
type Encoded = { file: string; bytes: Buffer; meta: ImageMeta };

async function runPass(input: Encoded | { raw: RawImage }, pass: SharpPass): Promise<RawImage> {
  const isFile = 'file' in input;
  let img = isFile
    ? sharp(input.bytes, OPEN)
    : sharp(input.raw.data, { raw: { width: input.raw.width, height: input.raw.height, channels: input.raw.channels as 1 | 3 } });
  if (pass.pre) img = img.extract(pass.pre);
  // No shrink-on-load (see libvipsMatchesPil): JPEG and WebP are decoded at full size, as by PIL.
  if (pass.resize) img = img.resize(pass.resize.width, pass.resize.height, { fit: 'fill', kernel: pass.resize.kernel, fastShrinkOnLoad: false });
  if (pass.post) img = img.extract(pass.post);
  if (pass.pad) img = img.extend({ ...pass.pad, background: BLACK });
  // Files become 3-channel sRGB (greyscale expanded, alpha dropped) as torchvision's convert('RGB').
  img = isFile ? img.removeAlpha().toColourspace('srgb') : img.toColourspace(input.raw.channels === 1 ? 'b-w' : 'srgb');
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== (isFile ? 3 : input.raw.channels) || data.length !== info.width * info.height * info.channels) {
    throw new Error(`unexpected decoded layout ${info.width}x${info.height}x${info.channels}`);
  }
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/** Writes an 8-bit HWC image as CHW float32 through the per-channel tables, mirrored if asked. */
function writeCHW(img: RawImage, luts: Float32Array[], mirrored: boolean, out: Float32Array, offset: number): void {
  const { data, width: W, height: H, channels: C } = img;
  const plane = W * H;
  if (C === 3) {
    const [l0, l1, l2] = luts;
    for (let y = 0; y < H; y++) {
      const row = y * W;
      const o0 = offset + row;
      const o1 = o0 + plane;
      const o2 = o1 + plane;
      let j = row * 3;
      if (!mirrored) {
        for (let x = 0; x < W; x++, j += 3) {
          out[o0 + x] = l0[data[j]];
          out[o1 + x] = l1[data[j + 1]];
          out[o2 + x] = l2[data[j + 2]];
        }
      } else {
        for (let x = W - 1; x >= 0; x--, j += 3) {
          out[o0 + x] = l0[data[j]];
          out[o1 + x] = l1[data[j + 1]];
          out[o2 + x] = l2[data[j + 2]];
        }
      }
    }
    return;
  }
  for (let c = 0; c < C; c++) {
    const lut = luts[c];
    for (let y = 0; y < H; y++) {
      const o = offset + c * plane + y * W;
      let j = y * W * C + c;
      if (!mirrored) for (let x = 0; x < W; x++, j += C) out[o + x] = lut[data[j]];
      else for (let x = W - 1; x >= 0; x--, j += C) out[o + x] = lut[data[j]];
    }
  }
}

/**
 * Runs `compiled` on `source` with the sample's random stream: decode and geometry in sharp, colour
 * steps on the 8-bit image, and a writer for the final CHW float32 values.
 */
export async function runTransform(source: ImageSource, compiled: Compiled, rng: Rng): Promise<Decoded> {
  let meta: ImageMeta | undefined;
  disableUnusedCache();
  let current: Encoded | { raw: RawImage };
  // The caller's pixels are never modified: colour steps work on a copy.
  let owned = false;
  if ('file' in source) {
    // One read into memory, then sharp works on the bytes: with a path, libvips re-opens and
    // maps the file, which costs about a quarter of the decode on 500x375 JPEGs.
    const bytes = source.bytes ?? await fsp.readFile(source.file);
    meta = source.meta ?? await readMeta(bytes);
    current = { file: source.file, bytes, meta };
    if (meta.hasAlpha) {
      // Dropping alpha before any resampling keeps the colour of transparent pixels, as PIL's convert('RGB').
      current = { raw: await runPass(current, {}) };
      owned = true;
    }
  } else {
    current = { raw: source.raw };
  }
  const size = 'raw' in current ? current.raw : current.meta;
  const plan = new Planner(size.width, size.height);

  const flush = async (): Promise<RawImage> => {
    const passes = plan.take();
    if (passes.length === 0 && 'file' in current) passes.push({});
    for (const p of passes) {
      if ('resample' in p) {
        const { width, height, interpolation } = p.resample;
        const img = 'file' in current ? await runPass(current, {}) : current.raw;
        current = { raw: resample(img, width, height, interpolation) };
      } else {
        current = { raw: await runPass(current, p) };
      }
      owned = true;
    }
    return (current as { raw: RawImage }).raw;
  };

  for (const step of compiled.image) {
    if (step.kind === 'geometry') {
      step.plan(plan, rng);
    } else if (step.kind === 'pixels') {
      let img = await flush();
      if (!owned) {
        img = { ...img, data: Uint8Array.from(img.data) };
        current = { raw: img };
        owned = true;
      }
      step.apply(img, rng);
    }
  }
  const img = await flush();
  const luts = tables(compiled, img.channels);
  const mirrored = plan.mirrored;
  return {
    shape: [img.channels, img.height, img.width],
    meta,
    planes: { data: img.data, luts: packed(luts), mirrored },
    write: (out, offset) => writeCHW(img, luts, mirrored, out, offset),
  };
}
