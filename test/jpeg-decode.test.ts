/**
 * JPEG crops decoded by libjpeg-turbo (native/jpeg.cc) against PIL, which decodes with the same
 * library: `Image.open(f).convert('RGB').crop(box)` (and `.resize(size, filter)`) must give the
 * same bytes, for every chroma subsampling, progressive files, greyscale files, sizes that are not
 * a whole number of blocks, and crops that touch every edge (the decoder skips the rows above a
 * crop, never reads the rows below it, and decodes only the block columns it needs). Files libjpeg
 * does not decode cleanly here (CMYK) are handed back to sharp; files cut short are refused, as
 * PIL refuses them, even where the crop lies in the part that is there.
 */
import * as fs from 'fs';
import * as path from 'path';
import sharp, { type Sharp } from 'sharp';
import { ImageFolder, Rng } from '../lib/data';
import { native } from '../lib/native';
import * as T from '../lib/transforms';
import { pattern } from './helpers/images';
import { runPythonAsync, scratchDir } from './helpers/python';

const available = typeof native.decodeJpeg === 'function';
const decodeJpeg = native.decodeJpeg!;

interface Variant { name: string; width: number; height: number; write: (s: Sharp) => Sharp }
const VARIANTS: Variant[] = [
  { name: '420', width: 500, height: 375, write: (s) => s.jpeg({ quality: 90, chromaSubsampling: '4:2:0' }) },
  { name: '444', width: 203, height: 157, write: (s) => s.jpeg({ quality: 85, chromaSubsampling: '4:4:4' }) },
  { name: 'progressive', width: 333, height: 250, write: (s) => s.jpeg({ quality: 80, progressive: true }) },
  { name: 'grey', width: 177, height: 131, write: (s) => s.greyscale().jpeg({ quality: 90 }) },
  { name: 'odd420', width: 97, height: 61, write: (s) => s.jpeg({ quality: 95, chromaSubsampling: '4:2:0' }) },
];
type Filter = 'nearest' | 'bilinear' | 'bicubic' | 'lanczos';
/** [left, top, width, height, outWidth, outHeight, filter] */
type Job = [number, number, number, number, number, number, Filter];

/** Crops touching each edge and the corners, then random ones, some resized. */
function jobs(v: Variant, seed: number): Job[] {
  const { width: W, height: H } = v;
  const out: Job[] = [[0, 0, W, H, W, H, 'nearest'], [0, 0, 17, 9, 17, 9, 'nearest'], [W - 23, H - 11, 23, 11, 23, 11, 'nearest'],
    [1, H - 1, W - 1, 1, W - 1, 1, 'nearest'], [W - 1, 0, 1, H, 1, H, 'nearest'], [15, 15, 2, 2, 2, 2, 'nearest'], [0, 0, W, H, 64, 48, 'bilinear']];
  const rng = new Rng(seed);
  const filters: Filter[] = ['nearest', 'bilinear', 'bicubic', 'lanczos'];
  for (let k = 0; k < 24; k++) {
    const w = 1 + Math.floor(rng.random() * W);
    const h = 1 + Math.floor(rng.random() * H);
    const l = Math.floor(rng.random() * (W - w + 1));
    const t = Math.floor(rng.random() * (H - h + 1));
    const resize = k % 2 === 1;
    out.push([l, t, w, h, resize ? 1 + Math.floor(rng.random() * 240) : w, resize ? 1 + Math.floor(rng.random() * 240) : h, filters[k % 4]]);
  }
  return out;
}

const PIL = String.raw`
import json, sys
from PIL import Image
spec = json.load(open(sys.argv[1]))
F = {'nearest': Image.NEAREST, 'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC, 'lanczos': Image.LANCZOS}
for v in spec:
    with open(v['path'], 'rb') as f:
        img = Image.open(f).convert('RGB')
    for k, (l, t, w, h, ow, oh, filt) in enumerate(v['jobs']):
        c = img.crop((l, t, l + w, t + h))
        if (ow, oh) != (w, h): c = c.resize((ow, oh), F[filt])
        open(f"{v['out']}-{k}.u8", 'wb').write(c.tobytes())
`;

let dir: string;
const files: Record<string, string> = {};

beforeAll(async () => {
  dir = scratchDir('jpeg');
  for (const v of VARIANTS) {
    const px = pattern(v.width, v.height, v.width);
    files[v.name] = path.join(dir, `${v.name}.jpg`);
    await v.write(sharp(px.data, { raw: { width: v.width, height: v.height, channels: 3 } })).toFile(files[v.name]);
  }
  if (!available) return;
  const spec = VARIANTS.map((v, i) => ({ path: files[v.name], out: path.join(dir, v.name), jobs: jobs(v, i + 1) }));
  fs.writeFileSync(path.join(dir, 'spec.json'), JSON.stringify(spec));
  await runPythonAsync(PIL, dir, [path.join(dir, 'spec.json')]);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

test('this build decodes JPEGs with libjpeg-turbo (scripts/setup installs libjpeg62-turbo-dev)', () => {
  expect(available).toBe(true);
  expect(T.getImageBackend()).toBe('libjpeg');
});

describe.each(VARIANTS.map((v, i) => [v.name, v, i] as const))('%s JPEG', (_, v, i) => {
  test('every crop (and resize) is the bytes PIL gives', async () => {
    const bytes = fs.readFileSync(files[v.name]);
    const differing: string[] = [];
    for (const [k, job] of jobs(v, i + 1).entries()) {
      const ours = await decodeJpeg(bytes, ...job);
      expect(ours).not.toBeNull();
      const theirs = fs.readFileSync(path.join(dir, `${v.name}-${k}.u8`));
      if (!Buffer.from(ours!).equals(theirs)) differing.push(job.join(','));
    }
    expect(differing).toEqual([]);
  });
});

test('a CMYK JPEG is handed back to sharp; a cut-off one is refused as PIL refuses it, whatever the crop; data after the end is accepted', async () => {
  const px = pattern(64, 48, 5);
  const root = path.join(dir, 'folder');
  fs.mkdirSync(path.join(root, 'a'), { recursive: true });
  const cmyk = path.join(root, 'a', 'cmyk.jpg');
  await sharp(px.data, { raw: { width: 64, height: 48, channels: 3 } }).toColourspace('cmyk').jpeg().toFile(cmyk);
  expect(await decodeJpeg(fs.readFileSync(cmyk), 0, 0, 64, 48, 64, 48, 'nearest')).toBeNull();
  const whole = fs.readFileSync(files['420']);
  const cut = path.join(root, 'a', 'cut.jpg');
  fs.writeFileSync(cut, whole.subarray(0, Math.floor(whole.length * 0.6)));
  // A crop of the intact top rows: PIL refuses the whole file, and so do we.
  await expect(decodeJpeg(fs.readFileSync(cut), 0, 0, 50, 20, 50, 20, 'nearest')).rejects.toThrow(/image file is truncated/);
  const trailer = path.join(root, 'a', 'trailer.jpg');
  fs.writeFileSync(trailer, Buffer.concat([whole, Buffer.from('camera maker notes after EOI')]));
  const fromTrailer = await decodeJpeg(fs.readFileSync(trailer), 10, 20, 30, 40, 30, 40, 'nearest');
  expect(Buffer.from(fromTrailer!).equals(Buffer.from((await decodeJpeg(whole, 10, 20, 30, 40, 30, 40, 'nearest'))!))).toBe(true);

  const ds = new ImageFolder(root, { transform: T.compose([T.centerCrop(32), T.toTensor()]) });
  const index = (name: string) => ds.samples.findIndex(([f]) => path.basename(f) === name);
  expect((await ds.get(index('cmyk.jpg'), { rng: new Rng(0) })).input.shape).toEqual([3, 32, 32]);
  expect((await ds.get(index('trailer.jpg'), { rng: new Rng(0) })).input.shape).toEqual([3, 32, 32]);
  await expect(ds.get(index('cut.jpg'))).rejects.toThrow(/cannot read image '.*cut\.jpg' \(class 'a'\): image file is truncated/);
});

test('setImageBackend: sharp decodes the same JPEG crops to within a level; bad names are refused', async () => {
  const root = path.join(dir, 'backend');
  fs.mkdirSync(path.join(root, 'a'), { recursive: true });
  fs.copyFileSync(files['420'], path.join(root, 'a', 'x.jpg'));
  const ds = new ImageFolder(root, { transform: T.compose([T.randomResizedCrop(96), T.toTensor()]) });
  const fast = await ds.get(0, { rng: new Rng(3) });
  T.setImageBackend('sharp');
  try {
    expect(T.getImageBackend()).toBe('sharp');
    const slow = await ds.get(0, { rng: new Rng(3) });
    expect(slow.input.shape).toEqual(fast.input.shape);
    const a = fast.input.data as Float32Array;
    const b = slow.input.data as Float32Array;
    let worst = 0;
    for (let k = 0; k < a.length; k++) worst = Math.max(worst, Math.abs(a[k] - b[k]));
    expect(worst).toBeLessThanOrEqual(1 / 255 + 1e-6);
  } finally {
    T.setImageBackend('libjpeg');
  }
  expect(() => T.setImageBackend('pil' as never)).toThrow(/backend must be 'libjpeg' or 'sharp', got "pil"/);
});
