/**
 * Resizing against torchvision's Resize on PIL images (Debian's python3-torchvision through
 * /usr/bin/python3 or $FINETORCH_PYTHON), which is PIL's antialiased convolution: enlarging,
 * shrinking and both at once, bilinear and bicubic, on a ramp, on noise (where a grid shifted by
 * a fraction of a pixel shows most), at every filter, and on photographs. Every resize is PIL's
 * own algorithm (native/resample.cc), so every pixel must equal torchvision's. Files are PNG unless
 * named JPEG; JPEGs are decoded by each side's own library (libjpeg-turbo in PIL, mozjpeg in
 * sharp), which agree to the bit on these files.
 *
 * Real photographs: $FINETORCH_TEST_PHOTO (a JPEG or PNG), else the two photographs of Rust's
 * embedded book where rustup installed its docs; a photo-like JPEG made here runs everywhere.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ImageFolder, Rng } from '../lib/data';
import * as T from '../lib/transforms';
import { runTransform } from '../lib/transforms/pipeline';
import { compile } from '../lib/transforms/transform';
import { gradient, writeImage, type Pixels } from './helpers/images';
import { runPythonAsync, scratchDir } from './helpers/python';

/** Uniform 8-bit RGB noise from a fixed LCG stream. */
function noise(width: number, height: number, seed: number): Pixels {
  const data = Buffer.alloc(width * height * 3);
  let s = seed >>> 0;
  for (let i = 0; i < data.length; i++) data[i] = (s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24;
  return { data, width, height, channels: 3 };
}

/** Noise along x only: every row the same, so a crop's vertical position cannot change the result. */
function columns(width: number, height: number, seed: number): Pixels {
  const row = noise(width, 1, seed).data;
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) row.copy(data, y * width * 3);
  return { data, width, height, channels: 3 };
}

/** A photo-like picture: soft shapes on a shaded background, with sensor-like grain. */
function photoLike(width: number, height: number): Pixels {
  const data = Buffer.alloc(width * height * 3);
  const grain = noise(width, height, 7).data;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const disc = Math.hypot(x - width * 0.4, y - height * 0.5) < height * 0.3 ? 1 : 0;
      const base = [90 + 60 * Math.sin(x / 40), 120 + 50 * Math.cos(y / 30), 150 - 100 * disc];
      for (let c = 0; c < 3; c++) data[i + c] = Math.max(0, Math.min(255, Math.round(base[c] + 80 * disc + (grain[i + c] - 128) / 16)));
    }
  }
  return { data, width, height, channels: 3 };
}

function realPhotos(): string[] {
  if (process.env.FINETORCH_TEST_PHOTO) return [process.env.FINETORCH_TEST_PHOTO];
  const toolchains = path.join(os.homedir(), '.rustup', 'toolchains');
  if (!fs.existsSync(toolchains)) return [];
  for (const t of fs.readdirSync(toolchains)) {
    const dir = path.join(toolchains, t, 'share', 'doc', 'rust', 'html', 'embedded-book', 'assets');
    const found = ['f3.jpg', 'verify.jpeg'].map((f) => path.join(dir, f)).filter((f) => fs.existsSync(f));
    if (found.length > 0) return found;
  }
  return [];
}

type Interp = T.Interpolation;
/** torchvision's side: ['resize', size] | ['centerCrop', size] | ['crop', left, top, width, height]. */
type PyOp = ['resize', number | number[]] | ['centerCrop', number] | ['crop', number, number, number, number];
interface Case { name: string; image: string; ours: (i: Interp) => T.Transform[]; theirs: PyOp[]; interps?: Interp[] }

const IMAGES: Record<string, Pixels> = {
  'ramp64.png': gradient(64, 64),
  'noise32.png': noise(32, 32, 1),
  'noise300.png': noise(300, 300, 2),
  'columns300x200.png': columns(300, 200, 3),
  'photolike.jpg': photoLike(500, 375),
};
const PHOTOS = realPhotos();

const CASES: Case[] = [
  { name: 'a horizontal ramp enlarged 64 -> 73', image: 'ramp64.png', ours: (i) => [T.resize(73, { interpolation: i })], theirs: [['resize', 73]] },
  { name: 'noise enlarged 32 -> 224', image: 'noise32.png', ours: (i) => [T.resize(224, { interpolation: i })], theirs: [['resize', 224]] },
  { name: 'noise shrunk 300 -> 100', image: 'noise300.png', ours: (i) => [T.resize(100, { interpolation: i })], theirs: [['resize', 100]] },
  { name: 'noise shrunk 300 -> 256', image: 'noise300.png', ours: (i) => [T.resize(256, { interpolation: i })], theirs: [['resize', 256]] },
  { name: 'noise shrunk 300 -> 60 (5x)', image: 'noise300.png', ours: (i) => [T.resize(60, { interpolation: i })], theirs: [['resize', 60]] },
  { name: 'noise shrunk along x, enlarged along y (300 -> [400, 100])', image: 'noise300.png', ours: (i) => [T.resize([400, 100], { interpolation: i })], theirs: [['resize', [400, 100]]] },
  { name: 'noise: centerCrop 50 then enlarged to 224', image: 'noise300.png', ours: (i) => [T.centerCrop(50), T.resize(224, { interpolation: i })], theirs: [['centerCrop', 50], ['resize', 224]] },
  { name: 'noise: centerCrop 40 of 32 (padded) then enlarged to 73', image: 'noise32.png', ours: (i) => [T.centerCrop(40), T.resize(73, { interpolation: i })], theirs: [['centerCrop', 40], ['resize', 73]] },
  { name: 'noise: enlarged to 320 then centerCrop 224 (a crop after the resample)', image: 'noise300.png', ours: (i) => [T.resize(320, { interpolation: i }), T.centerCrop(224)], theirs: [['resize', 320], ['centerCrop', 224]] },
  {
    // scale 0.75 and ratio 2 of 300x200 force a 300x150 crop whose top is random: the rows are all alike.
    name: 'randomResizedCrop 300x150 of 300x200 -> 224 (x shrunk, y enlarged)', image: 'columns300x200.png',
    ours: (i) => [T.randomResizedCrop(224, { scale: [0.75, 0.75], ratio: [2, 2], interpolation: i })], theirs: [['crop', 0, 0, 300, 150], ['resize', [224, 224]]],
  },
  ...(['nearest', 'lanczos'] as const).flatMap((i): Case[] => [
    { name: 'noise enlarged 32 -> 73', image: 'noise32.png', ours: () => [T.resize(73, { interpolation: i })], theirs: [['resize', 73]], interps: [i] },
    { name: 'noise shrunk 300 -> 256', image: 'noise300.png', ours: () => [T.resize(256, { interpolation: i })], theirs: [['resize', 256]], interps: [i] },
    { name: 'noise shrunk 300 -> 60 (5x)', image: 'noise300.png', ours: () => [T.resize(60, { interpolation: i })], theirs: [['resize', 60]], interps: [i] },
  ]),
  { name: 'photo-like JPEG shrunk 500x375 -> 256', image: 'photolike.jpg', ours: (i) => [T.resize(256, { interpolation: i })], theirs: [['resize', 256]] },
  { name: 'photo-like JPEG shrunk 500x375 -> 120 (3.1x)', image: 'photolike.jpg', ours: (i) => [T.resize(120, { interpolation: i })], theirs: [['resize', 120]] },
  { name: 'photo-like JPEG shrunk 500x375 -> 60 (6.3x)', image: 'photolike.jpg', ours: (i) => [T.resize(60, { interpolation: i })], theirs: [['resize', 60]] },
  { name: 'photo-like JPEG: centerCrop 64 then enlarged to 224', image: 'photolike.jpg', ours: (i) => [T.centerCrop(64), T.resize(224, { interpolation: i })], theirs: [['centerCrop', 64], ['resize', 224]] },
  ...PHOTOS.flatMap((p): Case[] => [
    { name: `photograph ${path.basename(p)} shrunk to 256`, image: p, ours: (i) => [T.resize(256, { interpolation: i })], theirs: [['resize', 256]] },
    { name: `photograph ${path.basename(p)} shrunk to 159 (3x)`, image: p, ours: (i) => [T.resize(159, { interpolation: i })], theirs: [['resize', 159]] },
    { name: `photograph ${path.basename(p)} shrunk to 100 (4.8x)`, image: p, ours: (i) => [T.resize(100, { interpolation: i })], theirs: [['resize', 100]] },
    { name: `photograph ${path.basename(p)}: centerCrop 300 then enlarged to 400`, image: p, ours: (i) => [T.centerCrop(300), T.resize(400, { interpolation: i })], theirs: [['centerCrop', 300], ['resize', 400]] },
    { name: `photograph ${path.basename(p)}: centerCrop 64 then enlarged to 224`, image: p, ours: (i) => [T.centerCrop(64), T.resize(224, { interpolation: i })], theirs: [['centerCrop', 64], ['resize', 224]] },
  ]),
];
const RUNS = CASES.flatMap((c) => (c.interps ?? ['bilinear', 'bicubic'] as const).map((interp) => ({ ...c, interp })));

const TORCHVISION = String.raw`
import json, sys
import numpy as np
from PIL import Image
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode
runs = json.load(open(sys.argv[1]))
out = sys.argv[2]
for k, r in enumerate(runs):
    with open(r['path'], 'rb') as f:
        img = Image.open(f).convert('RGB')
    for op in r['ops']:
        if op[0] == 'resize': img = T.Resize(op[1], interpolation=InterpolationMode(r['interp']))(img)
        elif op[0] == 'centerCrop': img = T.CenterCrop(op[1])(img)
        else: img = img.crop((op[1], op[2], op[1] + op[3], op[2] + op[4]))
    a = np.asarray(img, dtype=np.uint8)
    a.tofile(f'{out}/{k}.u8')
    json.dump(list(a.shape), open(f'{out}/{k}.json', 'w'))
`;

let dir: string;
let root: string;
let refs: { data: Buffer; shape: number[] }[];

/** Where an image of IMAGES or PHOTOS lies in the test's image folder. */
function fileOf(image: string): string {
  const k = PHOTOS.indexOf(image);
  return path.join(root, 'x', k >= 0 ? `photo${k}${path.extname(image)}` : image);
}

beforeAll(async () => {
  dir = scratchDir('resize');
  root = path.join(dir, 'images');
  await Promise.all(Object.entries(IMAGES).map(([f, px]) => writeImage(path.join(root, 'x', f), px, f.endsWith('.jpg') ? 'jpeg' : 'png')));
  for (const p of PHOTOS) fs.copyFileSync(p, fileOf(p));
  const out = path.join(dir, 'torchvision');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(dir, 'runs.json'), JSON.stringify(RUNS.map((r) => ({ path: fileOf(r.image), ops: r.theirs, interp: r.interp }))));
  await runPythonAsync(TORCHVISION, dir, [path.join(dir, 'runs.json'), out]);
  refs = RUNS.map((_, k) => ({ data: fs.readFileSync(path.join(out, `${k}.u8`)), shape: JSON.parse(fs.readFileSync(path.join(out, `${k}.json`), 'utf8')) as number[] }));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

test.each(RUNS.map((r, k) => [`${r.name}, ${r.interp}`, k] as const))('%s: the pixels torchvision gives', async (_, k) => {
  const run = RUNS[k];
  const ds = new ImageFolder(root, { transform: T.compose([...run.ours(run.interp), T.toTensor()]) });
  const index = ds.samples.findIndex(([f]) => path.resolve(f) === fileOf(run.image));
  const { input } = await ds.get(index, { rng: new Rng(0) });
  const [H, W] = refs[k].shape;
  expect(input.shape).toEqual([3, H, W]);
  const ours = input.data as Float32Array;
  const theirs = refs[k].data;
  let differing = 0;
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < H * W; i++) if (Math.round(ours[c * H * W + i] * 255) !== theirs[i * 3 + c]) differing++;
  }
  expect(differing).toBe(0);
});

const GRAY = String.raw`
import json, sys
import numpy as np
from PIL import Image
spec = json.load(open(sys.argv[1]))
a = np.fromfile(spec['path'], np.uint8).reshape(spec['h'], spec['w'])
for k, (w, h, interp) in enumerate(spec['sizes']):
    filt = {'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC}[interp]
    np.asarray(Image.fromarray(a, 'L').resize((w, h), filt)).tofile(f"{spec['out']}/gray{k}.u8")
`;

test('a 1-channel image (the FashionMNIST path) is resized as PIL resizes mode L', async () => {
  const gray = { data: Uint8Array.from(noise(28, 28, 9).data.subarray(0, 28 * 28)), width: 28, height: 28, channels: 1 };
  const sizes: [number, number, 'bilinear' | 'bicubic'][] = [[45, 45, 'bilinear'], [45, 45, 'bicubic'], [5, 6, 'bilinear'], [20, 20, 'bicubic']];
  fs.writeFileSync(path.join(dir, 'gray.u8'), gray.data);
  fs.writeFileSync(path.join(dir, 'gray.json'), JSON.stringify({ path: path.join(dir, 'gray.u8'), w: 28, h: 28, sizes, out: dir }));
  await runPythonAsync(GRAY, dir, [path.join(dir, 'gray.json')]);
  for (const [k, [w, h, interpolation]] of sizes.entries()) {
    const out = await runTransform({ raw: gray }, compile(T.compose([T.resize([h, w], { interpolation })])), new Rng(0));
    expect(out.shape).toEqual([1, h, w]);
    const theirs = fs.readFileSync(path.join(dir, `gray${k}.u8`));
    expect(Buffer.from(out.planes.data).equals(theirs)).toBe(true);
  }
});
