/**
 * @internal Runs a compiled transform on one image. Geometry is planned in JS into passes: a file is
 * decoded on libuv's threadpool with its first crop, a JPEG by libjpeg-turbo (jpeg.cc: only the
 * rows and columns the crop needs, and the resize that follows in the same task), other formats
 * by sharp (libvips then decodes only the rows it needs); every resize is PIL's resampling in
 * native code (resample.cc, bit for bit what torchvision's Resize does to a PIL image); later
 * crops and pads are row copies. The
 * result is written as CHW float32 into the batch buffer through per-channel lookup tables, with
 * deferred left-right flips applied by the write order.
 */
import { promises as fsp } from 'fs';
import sharp, { type SharpOptions } from 'sharp';
import type { Rng } from '../data/random';
import { native } from '../native';
import { getImageBackend } from './backend';
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
interface Padding { left: number; top: number; right: number; bottom: number }
/** A crop, with black borders where it reaches outside the image. */
interface CropPass { crop: Rect; pad?: Padding }
/** A resize by PIL's resampling (native, on the threadpool). */
interface ResamplePass { resample: { width: number; height: number; interpolation: Interpolation } }
type Pass = CropPass | ResamplePass;

// The first frame of GIF/TIFF; 'truncated' fails on cut-off files as PIL does, not on benign warnings.
const OPEN: SharpOptions = { pages: 1, page: 0, failOn: 'truncated' };

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

/** Collects geometry into passes: consecutive crops become one, each resize is a pass of its own. */
class Planner implements Geometry {
  width: number;
  height: number;
  mirrored = false;
  passes: Pass[] = [];

  constructor(width: number, height: number) {
    this.width = width;
    this.height = height;
  }

  resize(width: number, height: number, interpolation: Interpolation): void {
    if (width === this.width && height === this.height) return;
    this.passes.push({ resample: { width, height, interpolation } });
    this.width = width;
    this.height = height;
  }

  crop(left: number, top: number, width: number, height: number): void {
    if (this.mirrored) left = this.width - left - width;
    if (left === 0 && top === 0 && width === this.width && height === this.height) return;
    const l = Math.max(0, left);
    const t = Math.max(0, top);
    const r = Math.min(this.width, left + width);
    const b = Math.min(this.height, top + height);
    if (r <= l || b <= t) throw new Error(`crop ${width}x${height} at (${left}, ${top}) lies outside the ${this.width}x${this.height} image`);
    const last = this.passes[this.passes.length - 1];
    // A crop of an unpadded crop is one crop of the first one's source.
    const base = last && 'crop' in last && !last.pad ? last.crop : undefined;
    const pass: CropPass = { crop: { left: (base?.left ?? 0) + l, top: (base?.top ?? 0) + t, width: r - l, height: b - t } };
    if (l > left || t > top || r < left + width || b < top + height) {
      pass.pad = { left: l - left, top: t - top, right: left + width - r, bottom: top + height - b };
    }
    if (base) this.passes[this.passes.length - 1] = pass;
    else this.passes.push(pass);
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
    return out;
  }
}

/** A file's bytes, read by Node into memory (sharp decodes from a Buffer faster than from a path). */
type Encoded = { file: string; bytes: Buffer; meta: ImageMeta };

/**
 * Decodes a file to 3-channel sRGB (greyscale expanded, alpha dropped, as torchvision's
 * convert('RGB')), cropped to `rect`. JPEG and WebP are decoded at full scale, as by PIL: a
 * reduced-scale decode (shrink-on-load) is faster but does not give PIL's pixels.
 */
async function decode(input: Encoded, rect?: Rect): Promise<RawImage> {
  let img = sharp(input.bytes, OPEN);
  if (rect) img = img.extract(rect);
  const { data, info } = await img.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
    throw new Error(`unexpected decoded layout ${info.width}x${info.height}x${info.channels}`);
  }
  return { data, width: info.width, height: info.height, channels: 3 };
}

/**
 * Decodes a JPEG's crop `rect` with libjpeg-turbo, resized in the same native task when `resize`
 * is given. null when libjpeg does not decode the file cleanly: sharp then decodes it, and reports
 * what is wrong with it.
 */
async function decodeJpeg(input: Encoded, rect: Rect | undefined, resize?: ResamplePass['resample']): Promise<RawImage | null> {
  const r = rect ?? { left: 0, top: 0, width: input.meta.width, height: input.meta.height };
  const width = resize?.width ?? r.width;
  const height = resize?.height ?? r.height;
  const data = await native.decodeJpeg!(input.bytes, r.left, r.top, r.width, r.height, width, height, resize?.interpolation ?? 'nearest');
  return data && { data, width, height, channels: 3 };
}

/** A crop of decoded pixels by row copies, black where it reaches outside the image. */
function cropPixels(img: RawImage, { crop, pad }: CropPass): RawImage {
  const { data, width: W, channels: C } = img;
  const left = pad?.left ?? 0;
  const top = pad?.top ?? 0;
  const width = crop.width + left + (pad?.right ?? 0);
  const height = crop.height + top + (pad?.bottom ?? 0);
  const out = new Uint8Array(width * height * C);
  const rowBytes = crop.width * C;
  for (let y = 0; y < crop.height; y++) {
    const from = ((crop.top + y) * W + crop.left) * C;
    out.set(data.subarray(from, from + rowBytes), ((y + top) * width + left) * C);
  }
  return { data: out, width, height, channels: C };
}

/** Resizes decoded pixels by PIL's resampling, natively on libuv's threadpool. */
async function resize(img: RawImage, { width, height, interpolation }: ResamplePass['resample']): Promise<RawImage> {
  const data = await native.resampleImage(img.data, img.width, img.height, img.channels, width, height, interpolation);
  return { data, width, height, channels: img.channels };
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
 * Runs `compiled` on `source` with the sample's random stream: decode (sharp), geometry (crops and
 * PIL's resampling), colour steps on the 8-bit image, and a writer for the final CHW float32 values.
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
      current = { raw: await decode(current) };
      owned = true;
    }
  } else {
    current = { raw: source.raw };
  }
  const size = 'raw' in current ? current.raw : current.meta;
  const plan = new Planner(size.width, size.height);

  const flush = async (): Promise<RawImage> => {
    const passes = plan.take();
    if ('file' in current) {
      // The file's first crop is decoded as such: only the rows (and with libjpeg the columns) it needs.
      const first = passes[0] && 'crop' in passes[0] ? (passes.shift() as CropPass) : undefined;
      let raw: RawImage | null = null;
      if (current.meta.format === 'jpeg' && getImageBackend() === 'libjpeg') {
        // A resize right after the crop runs in the decoder's task (a padded crop pads first).
        const next = passes[0];
        const fused = !first?.pad && next && 'resample' in next ? next.resample : undefined;
        raw = await decodeJpeg(current, first?.crop, fused);
        if (raw && fused) passes.shift();
      }
      raw ??= await decode(current, first?.crop);
      if (first?.pad) raw = cropPixels(raw, { crop: { left: 0, top: 0, width: raw.width, height: raw.height }, pad: first.pad });
      current = { raw };
      owned = true;
    }
    for (const p of passes) {
      current = { raw: 'crop' in p ? cropPixels(current.raw, p) : await resize(current.raw, p.resample) };
      owned = true;
    }
    return current.raw;
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
