/**
 * Image fixtures for the data and transforms tests, written with sharp at test time (no binary
 * fixtures are committed): raw pixel generators, a writer per format, and a class-folder tree with
 * the awkward cases (greyscale, alpha, nested folders, animated GIF, corrupt and hidden files,
 * an empty class).
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';

/** Interleaved 8-bit pixels. */
export interface Pixels {
  data: Buffer;
  width: number;
  height: number;
  channels: number;
}

/** Every pixel set to `value` (one entry per channel). */
export function solid(width: number, height: number, value: number[]): Pixels {
  const data = Buffer.alloc(width * height * value.length);
  for (let i = 0; i < width * height; i++) data.set(value, i * value.length);
  return { data, width, height, channels: value.length };
}

/** A deterministic RGB picture with smooth gradients and fine detail (so resampling shows). */
export function pattern(width: number, height: number, seed = 1): Pixels {
  const data = Buffer.alloc(width * height * 3);
  let s = seed >>> 0 || 1;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
  const fx = 1 + rnd() * 4;
  const fy = 1 + rnd() * 4;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = Math.round(127 + 120 * Math.sin((x / width) * fx * 2 * Math.PI + seed));
      data[i + 1] = Math.round(127 + 120 * Math.cos((y / height) * fy * 2 * Math.PI));
      data[i + 2] = ((x * 7) ^ (y * 5)) & 255;
    }
  }
  return { data, width, height, channels: 3 };
}

/** A smooth RGB ramp: red grows left to right, green top to bottom, blue constant. */
export function gradient(width: number, height: number): Pixels {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([Math.round((x * 255) / (width - 1)), Math.round((y * 255) / (height - 1)), 128], (y * width + x) * 3);
  }
  return { data, width, height, channels: 3 };
}

/** The image formats the tests write. */
export type Format = 'png' | 'jpeg' | 'webp' | 'gif' | 'tiff';

/**
 * Writes `pixels` as `format`. One channel stays greyscale (sharp would otherwise write sRGB);
 * JPEG uses quality 100 and no chroma subsampling so solid colours decode exactly.
 */
export async function writeImage(file: string, pixels: Pixels, format: Format, options: { pageHeight?: number } = {}): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const { data, width, height, channels } = pixels;
  let img = sharp(data, { raw: { width, height, channels: channels as 1 | 2 | 3 | 4, ...(options.pageHeight ? { pageHeight: options.pageHeight } : {}) } });
  if (channels <= 2) img = img.toColourspace('b-w');
  if (format === 'jpeg') img = img.jpeg({ quality: 100, chromaSubsampling: '4:4:4' });
  else if (format === 'png') img = img.png({ compressionLevel: 1 });
  else if (format === 'webp') img = img.webp({ lossless: true });
  else if (format === 'gif') img = img.gif();
  else img = img.tiff({ compression: 'lzw' });
  await img.toFile(file);
}

/** The tree made by `makeImageTree`, with what a correct ImageFolder should find. */
export interface ImageTree {
  root: string;
  classes: string[];
  /** Loadable samples, relative to root, in torchvision's order, with their class index. */
  samples: [string, number][];
  /** The corrupt file (relative). */
  corrupt: string;
  /** Files that must be ignored (relative). */
  ignored: string[];
  /** Expected [C, H, W] and, for solid images, the RGB value of every pixel. */
  expect: Record<string, { shape: number[]; rgb?: number[] }>;
}

/**
 * root/
 *   Zebra/z.png                   solid (1, 2, 3), 5x4      (uppercase sorts first, as in Python)
 *   cat/a_red.png                 solid red, 40x30
 *   cat/b_gray.jpg                greyscale JPEG, value 100, 32x24
 *   cat/c_alpha.png               RGBA, colour (10, 200, 30), alpha varying, 20x10
 *   cat/sub/d_nested.webp         lossless WebP, solid blue, 16x16 (nested folders are walked)
 *   cat/.hidden.png, cat/notes.txt, .git/x.png    ignored
 *   dog/anim.gif                  2 frames: green then red, 12x8 (first frame is used)
 *   dog/big.JPG                   500x375 pattern (extension case ignored)
 *   dog/broken.jpg                not an image
 *   dog/page.tiff                 solid (7, 77, 177), 9x7
 *   empty_class/readme.txt        a class with no images
 */
export async function makeImageTree(root: string): Promise<ImageTree> {
  const at = (p: string) => path.join(root, p);
  const alpha = solid(20, 10, [10, 200, 30, 255]);
  for (let i = 0; i < 200; i++) alpha.data[i * 4 + 3] = (i * 13) % 256;
  const frames = Buffer.concat([solid(12, 8, [0, 255, 0, 255]).data, solid(12, 8, [255, 0, 0, 255]).data]);
  await Promise.all([
    writeImage(at('Zebra/z.png'), solid(5, 4, [1, 2, 3]), 'png'),
    writeImage(at('cat/a_red.png'), solid(40, 30, [255, 0, 0]), 'png'),
    writeImage(at('cat/b_gray.jpg'), solid(32, 24, [100]), 'jpeg'),
    writeImage(at('cat/c_alpha.png'), alpha, 'png'),
    writeImage(at('cat/sub/d_nested.webp'), solid(16, 16, [0, 0, 255]), 'webp'),
    writeImage(at('cat/.hidden.png'), solid(4, 4, [9, 9, 9]), 'png'),
    writeImage(at('.git/x.png'), solid(4, 4, [9, 9, 9]), 'png'),
    writeImage(at('dog/anim.gif'), { data: frames, width: 12, height: 16, channels: 4 }, 'gif', { pageHeight: 8 }),
    writeImage(at('dog/big.JPG'), pattern(500, 375), 'jpeg'),
    writeImage(at('dog/page.tiff'), solid(9, 7, [7, 77, 177]), 'tiff'),
  ]);
  fs.writeFileSync(at('cat/notes.txt'), 'not an image\n');
  fs.writeFileSync(at('dog/broken.jpg'), crypto.createHash('sha512').update('corrupt').digest());
  fs.mkdirSync(at('empty_class'));
  fs.writeFileSync(at('empty_class/readme.txt'), 'nothing here\n');
  return {
    root,
    classes: ['Zebra', 'cat', 'dog', 'empty_class'],
    samples: [
      ['Zebra/z.png', 0],
      ['cat/a_red.png', 1], ['cat/b_gray.jpg', 1], ['cat/c_alpha.png', 1], ['cat/sub/d_nested.webp', 1],
      ['dog/anim.gif', 2], ['dog/big.JPG', 2], ['dog/broken.jpg', 2], ['dog/page.tiff', 2],
    ],
    corrupt: 'dog/broken.jpg',
    ignored: ['cat/.hidden.png', 'cat/notes.txt', '.git/x.png', 'empty_class/readme.txt'],
    expect: {
      'Zebra/z.png': { shape: [3, 4, 5], rgb: [1, 2, 3] },
      'cat/a_red.png': { shape: [3, 30, 40], rgb: [255, 0, 0] },
      'cat/b_gray.jpg': { shape: [3, 24, 32], rgb: [100, 100, 100] },
      'cat/c_alpha.png': { shape: [3, 10, 20], rgb: [10, 200, 30] },
      'cat/sub/d_nested.webp': { shape: [3, 16, 16], rgb: [0, 0, 255] },
      'dog/anim.gif': { shape: [3, 8, 12], rgb: [0, 255, 0] },
      'dog/big.JPG': { shape: [3, 375, 500] },
      'dog/page.tiff': { shape: [3, 7, 9], rgb: [7, 77, 177] },
    },
  };
}

/** Content hash and modification time of every file under `root`, to prove nothing was written. */
export function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(root, p)] = `${crypto.createHash('sha1').update(fs.readFileSync(p)).digest('hex')}@${fs.statSync(p).mtimeMs}`;
    }
  };
  walk(root);
  return out;
}

/** An ImageFolder of flat colours (one per class, `n` PNGs each, slightly darker by index): an easy task to fine-tune on. */
export async function colourFolders(root: string, classes: readonly string[], n = 10, size = 36): Promise<void> {
  const colours = [[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20], [20, 230, 230], [230, 20, 230]];
  for (const [c, name] of classes.entries()) {
    fs.mkdirSync(path.join(root, name), { recursive: true });
    for (let i = 0; i < n; i++) await writeImage(path.join(root, name, `${i}.png`), solid(size, size, colours[c % colours.length].map((v) => v - 2 * i)), 'png');
  }
}
