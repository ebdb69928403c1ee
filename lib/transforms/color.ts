/**
 * Colour transforms, run on the decoded 8-bit image with PIL's ImageEnhance formulas (blend with a
 * black, mean-grey or greyscale image, truncated and clipped to 0..255).
 */
import type { Rng } from '../data/random';
import { optionsArg, Transform, type RawImage } from './transform';

/** Options of `colorJitter`: a number `x` means a factor in [max(0, 1 - x), 1 + x]; or give [min, max]. */
export interface ColorJitterOptions {
  brightness?: number | [number, number];
  contrast?: number | [number, number];
  saturation?: number | [number, number];
}

function factorRange(v: unknown, what: string): [number, number] | undefined {
  if (v === undefined || v === 0) return undefined;
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return [Math.max(0, 1 - v), 1 + v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0) && v[0] <= v[1]) {
    return [v[0], v[1]];
  }
  throw new TypeError(`colorJitter(): ${what} must be a non-negative number or [min, max] with 0 <= min <= max: got ${JSON.stringify(v)}`);
}

/** PIL's "L" conversion (ITU-R 601-2 luma, fixed point). */
function luma(r: number, g: number, b: number): number {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
}

/** PIL's ImagingBlend: `a + f * (b - a)`, truncated, clipped. */
function blend(a: number, b: number, f: number): number {
  const v = a + f * (b - a);
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.floor(v);
}

function brightness(img: RawImage, f: number): void {
  const d = img.data;
  for (let i = 0; i < d.length; i++) d[i] = blend(0, d[i], f);
}

function contrast(img: RawImage, f: number): void {
  const d = img.data;
  const c = img.channels;
  let sum = 0;
  if (c >= 3) for (let i = 0; i < d.length; i += c) sum += luma(d[i], d[i + 1], d[i + 2]);
  else for (let i = 0; i < d.length; i += c) sum += d[i];
  const mean = Math.floor(sum / (img.width * img.height) + 0.5);
  for (let i = 0; i < d.length; i++) d[i] = blend(mean, d[i], f);
}

function saturation(img: RawImage, f: number): void {
  if (img.channels < 3) return; // a greyscale image is its own greyscale version
  const d = img.data;
  for (let i = 0; i < d.length; i += img.channels) {
    const l = luma(d[i], d[i + 1], d[i + 2]);
    d[i] = blend(l, d[i], f);
    d[i + 1] = blend(l, d[i + 1], f);
    d[i + 2] = blend(l, d[i + 2], f);
  }
}

/**
 * Randomly changes brightness, contrast and saturation, in a random order, as torchvision's
 * `ColorJitter` (hue is not supported). Factors and order come from the sample's random stream.
 *
 * @example
 * transforms.colorJitter({ brightness: 0.4, contrast: 0.4, saturation: 0.4 });
 */
export function colorJitter(options: ColorJitterOptions): Transform {
  const o = optionsArg(options, 'colorJitter()');
  for (const k of Object.keys(o)) {
    if (!['brightness', 'contrast', 'saturation'].includes(k)) throw new TypeError(`colorJitter(): unknown option '${k}' (supported: brightness, contrast, saturation)`);
  }
  const ops = ([
    ['brightness', factorRange(o.brightness, 'brightness'), brightness],
    ['contrast', factorRange(o.contrast, 'contrast'), contrast],
    ['saturation', factorRange(o.saturation, 'saturation'), saturation],
  ] as const).filter(([, range]) => range !== undefined) as [string, [number, number], (img: RawImage, f: number) => void][];
  const name = `colorJitter({ ${ops.map(([n, r]) => `${n}: [${r.map((x) => +x.toFixed(4))}]`).join(', ')} })`;
  return new Transform(name, [{
    kind: 'pixels',
    apply(img: RawImage, rng: Rng) {
      const order = rng.permutation(ops.length);
      const factors = ops.map(([, [lo, hi]]) => rng.uniform(lo, hi));
      for (const k of order) ops[k][2](img, factors[k]);
    },
  }], { type: 'colorJitter', ...Object.fromEntries(ops.map(([n, r]) => [n, [...r]])) });
}
