import * as fs from 'fs';
import * as path from 'path';
import { DataLoader, ImageFolder, Rng, SkippedSampleError, Subset } from '../lib/data';
import { native } from '../lib/native';
import * as transforms from '../lib/transforms';
import { memory } from '../lib/memory';
import { makeImageTree, snapshot, solid, writeImage, type ImageTree } from './helpers/images';
import { scratchDir } from './helpers/python';

let dir: string;
let tree: ImageTree;
let before: Record<string, string>;
let warn: jest.SpyInstance;

beforeAll(async () => {
  dir = scratchDir('imgfolder');
  tree = await makeImageTree(path.join(dir, 'tree'));
  before = snapshot(tree.root);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
});

afterEach(() => {
  warn.mockRestore();
});

const rel = (ds: ImageFolder) => ds.samples.map(([p, t]) => [path.relative(tree.root, p).split(path.sep).join('/'), t]);
const ctx = () => ({ rng: new Rng(0) });

describe('ImageFolder scanning', () => {
  test('classes are the sub-folder names in Python order, samples walk each class folder recursively', () => {
    const ds = new ImageFolder(tree.root);
    expect(ds.classes).toEqual(tree.classes);
    expect(ds.classToIndex).toEqual({ Zebra: 0, cat: 1, dog: 2, empty_class: 3 });
    expect(rel(ds)).toEqual(tree.samples);
    expect(ds.targets).toEqual(tree.samples.map(([, t]) => t));
    expect(ds.length).toBe(tree.samples.length);
  });

  test('hidden files and folders, non-image files and empty classes are reported; the empty class warns', () => {
    const ds = new ImageFolder(tree.root);
    const r = ds.report();
    expect(r.emptyClasses).toEqual(['empty_class']);
    expect(r.classes).toBe(4);
    expect(r.samples).toBe(9);
    // cat/.hidden.png, cat/notes.txt, empty_class/readme.txt, and the hidden .git folder at the top.
    expect(r.ignoredFiles).toBe(4);
    expect(r.skipped).toEqual([]);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('empty_class'));
  });

  test('extensions restricts the files, case-insensitively and with or without the dot', () => {
    const ds = new ImageFolder(tree.root, { extensions: ['PNG', '.jpg'] });
    expect(rel(ds)).toEqual([
      ['Zebra/z.png', 0], ['cat/a_red.png', 1], ['cat/b_gray.jpg', 1], ['cat/c_alpha.png', 1],
      ['dog/big.JPG', 2], ['dog/broken.jpg', 2],
    ]);
  });

  test('bad roots and options are clear errors', () => {
    expect(() => new ImageFolder(path.join(dir, 'nope'))).toThrow(/does not exist/);
    expect(() => new ImageFolder(path.join(tree.root, 'cat', 'a_red.png'))).toThrow(/is not a folder/);
    expect(() => new ImageFolder(path.join(tree.root, 'empty_class'))).toThrow(/no class folders/);
    expect(() => new ImageFolder(tree.root, { extensions: ['.bmp'] })).toThrow(/no images \(\.bmp\) in the 4 class folder/);
    expect(() => new ImageFolder(tree.root, { onError: 'ignore' as 'skip' })).toThrow(/onError must be 'error' or 'skip'/);
    expect(() => new ImageFolder(tree.root, { extensions: [] })).toThrow(/extensions must be a non-empty array/);
    expect(() => new ImageFolder(tree.root, { transform: ((x: unknown) => x) as unknown as transforms.Transform })).toThrow(/finetorch transforms/);
    expect(() => new ImageFolder(tree.root, { shuffle: true } as object)).toThrow(/unknown option 'shuffle'/);
    expect(() => new ImageFolder('')).toThrow(/root must be a folder path/);
  });
});

describe('ImageFolder decoding', () => {
  test('every format decodes to 3-channel CHW float32 in [0, 1]: greyscale expanded, alpha dropped, first GIF frame', async () => {
    const ds = new ImageFolder(tree.root);
    for (let i = 0; i < ds.length; i++) {
      const [file, target] = tree.samples[i];
      if (file === tree.corrupt) continue;
      const { input, target: t } = await ds.get(i, ctx());
      const want = tree.expect[file];
      expect(t).toBe(target);
      expect(input.shape).toEqual(want.shape);
      expect(input.data).toBeInstanceOf(Float32Array);
      const plane = want.shape[1] * want.shape[2];
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of input.data as Float32Array) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      expect(lo).toBeGreaterThanOrEqual(0);
      expect(hi).toBeLessThanOrEqual(1);
      if (want.rgb) {
        for (let c = 0; c < 3; c++) {
          const v = Math.fround(want.rgb[c] / 255);
          const channel = (input.data as Float32Array).subarray(c * plane, (c + 1) * plane);
          expect({ file, c, values: [...new Set(channel)] }).toEqual({ file, c, values: [v] });
        }
      }
    }
  });

  test('normalize gives the hand-computed ImageNet values of a solid colour', async () => {
    const ds = new ImageFolder(tree.root, { transform: transforms.imagenet({ train: false, size: 8 }) });
    const red = await ds.get(1, ctx());
    expect(red.input.shape).toEqual([3, 8, 8]);
    const want = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225];
    for (let c = 0; c < 3; c++) {
      for (const v of (red.input.data as Float32Array).subarray(c * 64, (c + 1) * 64)) expect(v).toBeCloseTo(want[c], 6);
    }
    const tiff = await ds.get(8, ctx());
    const rgb = [7, 77, 177];
    const mean = [0.485, 0.456, 0.406];
    const std = [0.229, 0.224, 0.225];
    for (let c = 0; c < 3; c++) expect((tiff.input.data as Float32Array)[c * 64 + 10]).toBeCloseTo((rgb[c] / 255 - mean[c]) / std[c], 5);
  });

  test('batches the DataLoader writes natively hold exactly the floats get() gives (flipped or not)', async () => {
    const collate = jest.spyOn(native, 'collateImages'); // watched, not replaced: the real writer runs
    try {
      for (const p of [0, 1]) {
        const ds = new ImageFolder(tree.root, {
          transform: transforms.compose([transforms.resize([6, 10]), transforms.randomHorizontalFlip(p), transforms.toTensor(), transforms.normalize()]),
        });
        const readable = tree.samples.map((_, i) => i).filter((i) => tree.samples[i][0] !== tree.corrupt);
        const loader = new DataLoader(new Subset(ds, readable), { batchSize: 3 });
        let k = 0;
        for await (const b of loader) {
          expect(b.input.shape.slice(1)).toEqual([3, 6, 10]);
          const got = (await b.input.data()) as Float32Array;
          for (let j = 0; j < b.input.shape[0]; j++, k++) {
            const want = (await ds.get(readable[k])).input.data as Float32Array;
            expect(Array.from(got.subarray(j * 180, (j + 1) * 180))).toEqual(Array.from(want));
          }
          b.input.dispose();
          b.target.dispose();
        }
        expect(k).toBe(readable.length);
      }
      expect(collate).toHaveBeenCalled();
    } finally {
      collate.mockRestore();
    }
  });

  test('a corrupt file fails by default with an error naming it', async () => {
    const ds = new ImageFolder(tree.root, { transform: transforms.compose([transforms.resize([8, 8]), transforms.toTensor()]) });
    const idx = tree.samples.findIndex(([f]) => f === tree.corrupt);
    await expect(ds.get(idx)).rejects.toThrow(/cannot read image '.*broken\.jpg' \(class 'dog'\)/);
    const loader = new DataLoader(ds, { batchSize: 4 });
    const seen: number[] = [];
    await expect((async () => {
      for await (const b of loader) {
        seen.push(b.input.shape[0]);
        b.input.dispose();
        b.target.dispose();
      }
    })()).rejects.toThrow(/DataLoader: sample 7: .*broken\.jpg/);
    expect(seen).toEqual([4]);
  });

  test("onError: 'skip' leaves the file out of its batch and reports it after the epoch", async () => {
    const ds = new ImageFolder(tree.root, { onError: 'skip', transform: transforms.compose([transforms.resize([6, 10]), transforms.toTensor()]) });
    const idx = tree.samples.findIndex(([f]) => f === tree.corrupt);
    await expect(ds.get(idx)).rejects.toBeInstanceOf(SkippedSampleError);
    const loader = new DataLoader(ds, { batchSize: 4, shuffle: true, seed: 3 });
    const targets: number[] = [];
    const live = memory().tensors;
    for await (const b of loader) {
      expect(b.input.shape.slice(1)).toEqual([3, 6, 10]);
      expect(b.input.dtype).toBe('float32');
      expect(b.target.dtype).toBe('int64');
      targets.push(...Array.from(await b.target.data() as BigInt64Array, Number));
      b.input.dispose();
      b.target.dispose();
    }
    expect(memory().tensors).toBe(live);
    expect(targets.sort()).toEqual(tree.samples.filter(([f]) => f !== tree.corrupt).map(([, t]) => t).sort());
    expect(loader.skipped).toHaveLength(1);
    expect(loader.skipped[0]).toMatchObject({ index: idx, path: path.join(tree.root, tree.corrupt) });
    expect(ds.report().skipped).toEqual([{ path: path.join(tree.root, tree.corrupt), reason: expect.any(String) }]);
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/skipped 1 unreadable sample\(s\) in epoch 0 .*broken\.jpg/));
  });

  test('a truncated JPEG counts as corrupt', async () => {
    const root = path.join(dir, 'truncated');
    await writeImage(path.join(root, 'a', 'ok.png'), solid(8, 8, [1, 2, 3]), 'png');
    const whole = fs.readFileSync(path.join(tree.root, 'dog', 'big.JPG'));
    fs.mkdirSync(path.join(root, 'b'));
    fs.writeFileSync(path.join(root, 'b', 'cut.jpg'), whole.subarray(0, whole.length >> 1));
    const ds = new ImageFolder(root);
    await expect(ds.get(1)).rejects.toThrow(/cut\.jpg/);
  });

  test('nothing under the root is modified by scanning and reading', async () => {
    const ds = new ImageFolder(tree.root, { onError: 'skip', transform: transforms.imagenet({ train: true, size: 16 }) });
    for await (const b of new DataLoader(ds, { batchSize: 3 })) {
      b.input.dispose();
      b.target.dispose();
    }
    expect(snapshot(tree.root)).toEqual(before);
  });
});
