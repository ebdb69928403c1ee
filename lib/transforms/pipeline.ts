/**
 * @internal Runs a compiled transform on one image. Geometry is planned in JS into "passes" that
 * sharp can each do in one go (its fixed order: crop, resize, crop, pad); sharp decodes and
 * resamples on libuv's threadpool; the result is written as CHW float32 into the batch buffer
 * through per-channel lookup tables, with deferred left-right flips applied by the write order.
 */
import { promises as fsp } from 'fs';
import sharp, { type KernelEnum, type SharpOptions } from 'sharp';
import type { Rng } from '../data/random';
import { tables, type Compiled, type Geometry, type Interpolation, type RawImage } from './transform';

/** What a file's header says, cached by datasets between epochs. */
export interface ImageMeta {
  width: number;
  height: number;
  hasAlpha: boolean;
  format: string;
}

/** An image to transform: a file (decoded by sharp), or pixels already in memory. */
export type ImageSource = { file: string; meta?: ImageMeta } | { raw: RawImage };

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
interface Pass {
  pre?: Rect;
  resize?: { width: number; height: number; kernel: keyof KernelEnum };
  post?: Rect;
  pad?: { left: number; top: number; right: number; bottom: number };
}

const KERNEL: Record<Interpolation, keyof KernelEnum> = { nearest: 'nearest', bilinear: 'linear', bicubic: 'cubic', lanczos: 'lanczos3' };
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

/** Collects geometry into sharp passes; a new pass starts whenever sharp's order would be broken. */
class Planner implements Geometry {
  width: number;
  height: number;
  mirrored = false;
  passes: Pass[] = [];
  private open: Pass | undefined;

  constructor(width: number, height: number) {
    this.width = width;
    this.height = height;
  }

  private pass(fresh: boolean): Pass {
    if (!this.open || fresh) {
      this.open = {};
      this.passes.push(this.open);
    }
    return this.open;
  }

  resize(width: number, height: number, interpolation: Interpolation): void {
    if (width === this.width && height === this.height) return;
    const cur = this.open;
    const p = this.pass(!!cur && !!(cur.resize || cur.post || cur.pad));
    p.resize = { width, height, kernel: KERNEL[interpolation] };
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

/**
 * sharp will not shrink a JPEG/WebP on load when a crop comes before the resize. For a reduction
 * of 2x or more, resizing the whole image and cropping after it lets libjpeg decode at 1/2, 1/4
 * or 1/8 scale; the crop window then moves by up to half an output pixel.
 */
function shrinkOnLoad(pass: Pass, meta: ImageMeta): Pass {
  const { pre, resize } = pass;
  if (!pre || !resize || pass.post || (meta.format !== 'jpeg' && meta.format !== 'webp')) return pass;
  const sx = resize.width / pre.width;
  const sy = resize.height / pre.height;
  if (Math.max(sx, sy) > 0.5) return pass;
  const fullW = Math.max(resize.width, Math.round(meta.width * sx));
  const fullH = Math.max(resize.height, Math.round(meta.height * sy));
  const post = {
    left: Math.min(Math.round(pre.left * sx), fullW - resize.width),
    top: Math.min(Math.round(pre.top * sy), fullH - resize.height),
    width: resize.width,
    height: resize.height,
  };
  return { resize: { ...resize, width: fullW, height: fullH }, post, pad: pass.pad };
}

/** A file's bytes, read by Node into memory (sharp decodes from a Buffer faster than from a path). */
type Encoded = { file: string; bytes: Buffer; meta: ImageMeta };

async function runPass(input: Encoded | { raw: RawImage }, pass: Pass): Promise<RawImage> {
  const isFile = 'file' in input;
  if (isFile) pass = shrinkOnLoad(pass, input.meta);
  let img = isFile
    ? sharp(input.bytes, OPEN)
    : sharp(input.raw.data, { raw: { width: input.raw.width, height: input.raw.height, channels: input.raw.channels as 1 | 3 } });
  if (pass.pre) img = img.extract(pass.pre);
  if (pass.resize) img = img.resize(pass.resize.width, pass.resize.height, { fit: 'fill', kernel: pass.resize.kernel });
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
    const bytes = await fsp.readFile(source.file);
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
      current = { raw: await runPass(current, p) };
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
