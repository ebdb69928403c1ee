/**
 * Transforms against torchvision (Debian's python3-torchvision through /usr/bin/python3 or
 * $FINETORCH_PYTHON, on PIL images of the same files), flips, seeds and validation.
 *
 * Tolerances: crops, resizes (PIL's resampling, native/resample.cc) and ToTensor are exact (the
 * same PNG pixels), Normalize within float32 rounding (transforms-resize.test.ts covers resizing on
 * noise and photographs).
 */
import * as fs from 'fs';
import * as path from 'path';
import { ImageFolder, Rng, DataLoader } from '../lib/data';
import * as T from '../lib/transforms';
import { gradient, pattern, solid, writeImage } from './helpers/images';
import { readFloat32, runPythonAsync, scratchDir } from './helpers/python';

let dir: string;
let root: string;
const FILES = ['a_p500.png', 'b_p97.png', 'c_small.png', 'd_photo.jpg', 'e_big.jpg', 'f_big.png'];

beforeAll(async () => {
  dir = scratchDir('transforms');
  root = path.join(dir, 'images');
  await Promise.all([
    writeImage(path.join(root, 'x', FILES[0]), pattern(500, 375, 1), 'png'),
    writeImage(path.join(root, 'x', FILES[1]), pattern(97, 61, 2), 'png'),
    writeImage(path.join(root, 'x', FILES[2]), pattern(60, 45, 3), 'png'),
    writeImage(path.join(root, 'x', FILES[3]), pattern(500, 375, 4), 'jpeg'),
    writeImage(path.join(root, 'x', FILES[4]), gradient(1000, 750), 'jpeg'),
    writeImage(path.join(root, 'x', FILES[5]), gradient(1000, 750), 'png'),
  ]);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

type Op = ['resize', number | number[]] | ['centerCrop', number | number[]] | ['normalize'];
interface Case { name: string; file: number; ops: Op[]; maxDiff: number; meanDiff: number }

const CASES: Case[] = [
  { name: 'centerCrop odd offset (round half to even)', file: 1, ops: [['centerCrop', [40, 51]]], maxDiff: 0, meanDiff: 0 },
  { name: 'centerCrop larger than the image pads with black', file: 1, ops: [['centerCrop', [80, 120]]], maxDiff: 0, meanDiff: 0 },
  { name: 'centerCrop + normalize', file: 1, ops: [['centerCrop', 41], ['normalize']], maxDiff: 1e-6, meanDiff: 1e-7 },
  { name: 'resize shorter side 256 (1.46x down)', file: 0, ops: [['resize', 256]], maxDiff: 0, meanDiff: 0 },
  { name: 'resize + centerCrop (eval recipe)', file: 0, ops: [['resize', 256], ['centerCrop', 224], ['normalize']], maxDiff: 1e-6, meanDiff: 1e-7 },
  { name: 'resize [h, w] changes the aspect ratio', file: 1, ops: [['resize', [50, 70]]], maxDiff: 0, meanDiff: 0 },
  { name: 'resize 4x down', file: 0, ops: [['resize', [94, 125]]], maxDiff: 0, meanDiff: 0 },
  { name: 'resize up', file: 2, ops: [['resize', 120]], maxDiff: 0, meanDiff: 0 },
  // Each side decodes the JPEG with its own library (mozjpeg in sharp, libjpeg-turbo in PIL).
  { name: 'JPEG: resize + centerCrop', file: 3, ops: [['resize', 256], ['centerCrop', 224]], maxDiff: 0, meanDiff: 0 },
];

function build(ops: Op[]): T.Transform {
  return T.compose([
    ...ops.filter(([k]) => k !== 'normalize').map(([k, v]) => (k === 'resize' ? T.resize(v as number) : T.centerCrop(v as number))),
    T.toTensor(),
    ...ops.filter(([k]) => k === 'normalize').map(() => T.normalize()),
  ]);
}

const TORCHVISION = String.raw`
import json, sys
import numpy as np
from PIL import Image
import torchvision.transforms as T
cases = json.load(open(sys.argv[1]))
out = sys.argv[2]
for k, c in enumerate(cases):
    ops = []
    for op in c['ops']:
        if op[0] == 'resize': ops.append(T.Resize(op[1]))
        elif op[0] == 'centerCrop': ops.append(T.CenterCrop(op[1]))
    ops.append(T.ToTensor())
    ops += [T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) for op in c['ops'] if op[0] == 'normalize']
    with open(c['path'], 'rb') as f:
        img = Image.open(f).convert('RGB')
    x = T.Compose(ops)(img)
    x.numpy().astype('<f4').tofile(f'{out}/{k}.f32')
    json.dump(list(x.shape), open(f'{out}/{k}.json', 'w'))
`;

describe('transforms against torchvision', () => {
  let refs: { data: Float32Array; shape: number[] }[];

  beforeAll(async () => {
    const out = path.join(dir, 'torchvision');
    fs.mkdirSync(out);
    const spec = CASES.map((c) => ({ ops: c.ops, path: path.join(root, 'x', FILES[c.file]) }));
    fs.writeFileSync(path.join(dir, 'cases.json'), JSON.stringify(spec));
    await runPythonAsync(TORCHVISION, dir, [path.join(dir, 'cases.json'), out]);
    refs = CASES.map((_, k) => ({
      data: readFloat32(path.join(out, `${k}.f32`)),
      shape: JSON.parse(fs.readFileSync(path.join(out, `${k}.json`), 'utf8')) as number[],
    }));
  });

  test.each(CASES.map((c, k) => [c.name, k] as const))('%s', async (_, k) => {
    const c = CASES[k];
    const ds = new ImageFolder(root, { transform: build(c.ops) });
    const { input } = await ds.get(c.file, { rng: new Rng(0) });
    expect(input.shape).toEqual(refs[k].shape);
    const got = input.data as Float32Array;
    let max = 0;
    let sum = 0;
    for (let i = 0; i < got.length; i++) {
      const d = Math.abs(got[i] - refs[k].data[i]);
      max = Math.max(max, d);
      sum += d;
    }
    expect(max).toBeLessThanOrEqual(c.maxDiff + 1e-7);
    expect(sum / got.length).toBeLessThanOrEqual(c.meanDiff + 1e-9);
  });
});

const rng = (seed: number) => ({ rng: new Rng(seed) });

function mirrored(x: Float32Array, shape: number[]): Float32Array {
  const [c, h, w] = shape;
  const out = new Float32Array(x.length);
  for (let k = 0; k < c; k++) for (let y = 0; y < h; y++) for (let i = 0; i < w; i++) out[(k * h + y) * w + i] = x[(k * h + y) * w + (w - 1 - i)];
  return out;
}

describe('random transforms', () => {
  test('randomHorizontalFlip(1) is the exact mirror image of randomHorizontalFlip(0), also after a random crop', async () => {
    for (const base of [[T.centerCrop([40, 51])], [T.randomResizedCrop(33)]]) {
      const plain = new ImageFolder(root, { transform: T.compose([...base, T.randomHorizontalFlip(0), T.toTensor(), T.normalize()]) });
      const flipped = new ImageFolder(root, { transform: T.compose([...base, T.randomHorizontalFlip(1), T.toTensor(), T.normalize()]) });
      const a = await plain.get(1, rng(5));
      const b = await flipped.get(1, rng(5));
      expect(b.input.shape).toEqual(a.input.shape);
      expect(b.input.data).toEqual(mirrored(a.input.data as Float32Array, a.input.shape));
    }
  });

  test('a flip before a crop mirrors the crop window too', async () => {
    const plain = new ImageFolder(root, { transform: T.compose([T.randomHorizontalFlip(0), T.centerCrop([40, 50])]) });
    const flipped = new ImageFolder(root, { transform: T.compose([T.randomHorizontalFlip(1), T.centerCrop([40, 50])]) });
    const a = await plain.get(1, rng(0));
    const b = await flipped.get(1, rng(0));
    // Python's round: left = round(47 / 2) = 24 in the flipped image, top = round(21 / 2) = 10.
    const whole = await new ImageFolder(root).get(1, rng(0));
    const full = mirrored(whole.input.data as Float32Array, whole.input.shape);
    const [, h, w] = whole.input.shape;
    const top = 10;
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 40; y++) {
        for (let x = 0; x < 50; x++) expect(b.input.data[(c * 40 + y) * 50 + x]).toBe(full[(c * h + top + y) * w + 24 + x]);
      }
    }
    expect(b.input.data).not.toEqual(a.input.data);
  });

  test('random transforms repeat with the same seed and change with another', async () => {
    const t = T.compose([T.randomResizedCrop(48), T.randomHorizontalFlip(), T.colorJitter({ brightness: 0.4, contrast: 0.4, saturation: 0.4 }), T.toTensor(), T.normalize()]);
    const ds = new ImageFolder(root, { transform: t });
    const a = await ds.get(0, rng(11));
    const b = await ds.get(0, rng(11));
    const c = await ds.get(0, rng(12));
    expect(a.input.shape).toEqual([3, 48, 48]);
    expect(b.input.data).toEqual(a.input.data);
    expect(c.input.data).not.toEqual(a.input.data);
  });

  test('a seeded DataLoader repeats augmentation per (seed, epoch) and changes it between epochs', async () => {
    const ds = new ImageFolder(root, { transform: T.imagenet({ train: true, size: 32 }) });
    const run = async (seed: number, epoch: number) => {
      const loader = new DataLoader(ds, { batchSize: 6, seed });
      loader.setEpoch(epoch);
      const out: Float32Array[] = [];
      for await (const b of loader) {
        out.push(await b.input.data() as Float32Array);
        b.input.dispose();
        b.target.dispose();
      }
      return out;
    };
    const first = await run(7, 0);
    expect(await run(7, 0)).toEqual(first);
    expect(await run(7, 1)).not.toEqual(first);
    expect(await run(8, 0)).not.toEqual(first);
  });

  test('randomResizedCrop keeps the area and aspect ratio in range (full-scale crop is the whole image)', async () => {
    const whole = new ImageFolder(root, { transform: T.compose([T.resize([61, 97])]) });
    const crop = new ImageFolder(root, { transform: T.compose([T.randomResizedCrop([61, 97], { scale: [1, 1], ratio: [97 / 61, 97 / 61] })]) });
    expect((await crop.get(1, rng(3))).input.data).toEqual((await whole.get(1, rng(3))).input.data);
  });

  test('a JPEG crop reduced 8x or more gives the PNG result up to JPEG loss (decoded at full size, as PIL does)', async () => {
    const t = T.compose([T.randomResizedCrop(64, { scale: [0.5, 1] })]);
    const ds = new ImageFolder(root, { transform: t });
    const jpeg = await ds.get(4, rng(1));
    const png = await ds.get(5, rng(1));
    expect(jpeg.input.shape).toEqual([3, 64, 64]);
    let sum = 0;
    for (let i = 0; i < jpeg.input.data.length; i++) sum += Math.abs((jpeg.input.data[i] as number) - (png.input.data[i] as number));
    // Measured 0.05 levels; decoding at 1/8 scale (libjpeg's shrink-on-load) moved the crop by up
    // to half an output pixel: 0.64 levels on this ramp.
    expect(sum / jpeg.input.data.length).toBeLessThan(0.2 / 255);
  });
});

describe('colorJitter', () => {
  let gray: string;
  beforeAll(async () => {
    gray = path.join(dir, 'jitter');
    const px = solid(4, 2, [100, 150, 200]);
    px.data.set([10, 20, 30], 0);
    await writeImage(path.join(gray, 'x', 'a.png'), px, 'png');
  });
  const values = async (t: T.Transform) => {
    const { input } = await new ImageFolder(gray, { transform: t }).get(0, rng(0));
    return Array.from(input.data as Float32Array, (v) => Math.round(v * 255));
  };

  test('brightness 2 doubles and clips, saturation 0 gives PIL luma, contrast 0 gives the mean grey', async () => {
    expect(await values(T.colorJitter({ brightness: [2, 2] }))).toEqual([20, ...Array(7).fill(200), 40, ...Array(7).fill(255), 60, ...Array(7).fill(255)]);
    const luma = (r: number, g: number, b: number) => (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
    const l0 = luma(10, 20, 30);
    const l1 = luma(100, 150, 200);
    expect(await values(T.colorJitter({ saturation: [0, 0] }))).toEqual([...[0, 1, 2].flatMap(() => [l0, ...Array(7).fill(l1)])]);
    const mean = Math.floor((l0 + 7 * l1) / 8 + 0.5);
    expect(await values(T.colorJitter({ contrast: [0, 0] }))).toEqual(Array(24).fill(mean));
  });
});

describe('transform validation', () => {
  test('bad arguments and orders are clear errors', () => {
    expect(() => T.resize(0)).toThrow(/size must be a positive integer or \[height, width\]/);
    expect(() => T.centerCrop([1, 2, 3])).toThrow(/size must be/);
    expect(() => T.resize(10, { interpolation: 'area' as 'nearest' })).toThrow(/interpolation must be/);
    expect(() => T.resize([10, 10], { maxSize: 20 })).toThrow(/maxSize only applies/);
    expect(() => T.randomResizedCrop(10, { scale: [1, 0.5] })).toThrow(/min <= max/);
    expect(() => T.randomHorizontalFlip(2)).toThrow(/probability/);
    expect(() => T.normalize({ mean: [0.5], std: [0] })).toThrow(/divide by zero/);
    expect(() => T.normalize({ mean: [0.5, 0.5], std: [1] })).toThrow(/mean has 2 values but std has 1/);
    expect(() => T.colorJitter({ hue: 0.1 } as object)).toThrow(/unknown option 'hue'/);
    expect(() => T.compose([T.toTensor(), T.resize(10)])).toThrow(/comes after toTensor\(\)/);
    expect(() => T.compose([T.normalize(), T.toTensor()])).toThrow(/normalize\(\) must come after toTensor\(\)/);
    expect(() => T.compose([T.toTensor(), T.toTensor()])).toThrow(/toTensor\(\) appears twice/);
    expect(() => T.compose([T.resize(10), 'flip' as unknown as T.Transform])).toThrow(/element 1 is not a transform/);
    expect(() => T.imagenet({} as { train: boolean })).toThrow(/pass \{ train: true \}/);
  });

  test('presets read as the torchvision recipes', () => {
    expect(String(T.imagenet({ train: false }))).toBe(
      'compose([resize(256), centerCrop(224), toTensor(), normalize({ mean: [0.485,0.456,0.406], std: [0.229,0.224,0.225] })])');
    expect(String(T.imagenet({ train: true, size: 160 }))).toMatch(/^compose\(\[randomResizedCrop\(160, scale=\[0.08,1\], ratio=\[0.75,1.3333\]\), randomHorizontalFlip\(0.5\), toTensor\(\), normalize/);
  });
});
