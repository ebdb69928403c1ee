/**
 * Reliability under misuse and faults (issue 18): each wrong input is an Error from the call that
 * received it, naming the input, its value and type; failed writes leave no temporary file and name
 * the file and the cause. Tables of cases, each asserting the message.
 *
 * The file-system cases mount small tmpfs folders (read-only, full); they need root and are skipped,
 * with the reason in their name, where mounting is not permitted.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as torch from '../lib';
import { ImageFolder } from '../lib/data';
import type { ScriptModule } from '../lib/jit/module';
import { writeReport } from '../lib/report/report';
import { solid, writeImage } from './helpers/images';
import { floats, labels, runPy, runPyJson, tmpDir } from './helpers/train-fixtures';

let root: string;
let mlpFile: string;
/** Linear(1024, 2048), ReLU, Linear(2048, 3): 8 MB of weights, so its AdamW state (16 MB) is the larger file. */
let wideFile: string;

beforeAll(async () => {
  root = tmpDir('misuse');
  mlpFile = path.join(root, 'mlp.pt');
  wideFile = path.join(root, 'wide.pt');
  await runPy(String.raw`
import sys, torch
torch.manual_seed(0)
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))).save(sys.argv[1])
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 3))).save(sys.argv[2])
`, [mlpFile, wideFile]);
});

afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

function batches(n: number, seed = 1, features = 4): { input: torch.Tensor; target: torch.Tensor }[] {
  return Array.from({ length: n }, (_, i) => ({
    input: torch.tensor(floats(seed + i, 8 * features), { shape: [8, features] }),
    target: torch.tensor(labels(seed + 100 + i, 8, 3)),
  }));
}

async function weights(model: ScriptModule): Promise<number[]> {
  const out: number[] = [];
  for (const [, t] of model.namedParameters()) out.push(...Array.from((await t.data()) as Float32Array));
  return out;
}

describe('tensor creation refuses values the dtype cannot hold, as PyTorch does', () => {
  const big = 2 ** 40;
  const cases: [string, () => unknown, RegExp][] = [
    ['2 ** 40 as int32', () => torch.tensor([big], { dtype: 'int32' }),
      /^tensor\(\): element \[0\] is 1099511627776, which cannot be converted to int32 without overflow \(out of the range of int32 \[-2147483648, 2147483647\]\)$/],
    ['-1 as uint8', () => torch.tensor([-1, 300], { dtype: 'uint8' }), /^tensor\(\): element \[0\] is -1, .* uint8 .*\[0, 255\]/],
    ['300 as uint8, nested', () => torch.tensor([[1, 2], [3, 300]], { dtype: 'uint8' }), /element \[1, 1\] is 300, .* uint8/],
    ['255.5 as uint8 (PyTorch compares before truncating)', () => torch.tensor([255.5], { dtype: 'uint8' }), /element \[0\] is 255.5/],
    ['200 as int8', () => torch.tensor([200], { dtype: 'int8' }), /element \[0\] is 200, .* int8 \[-128, 127\]/],
    ['an Int32Array value as int16', () => torch.tensor(new Int32Array([1, 40000]), { dtype: 'int16' }), /element \[1\] is 40000, .* int16 \[-32768, 32767\]/],
    ['a Float32Array NaN as uint8', () => torch.tensor(new Float32Array([0, NaN]), { dtype: 'uint8' }), /element \[1\] is NaN, .* \(uint8 has no NaN or Infinity\)/],
    ['NaN as int64 (not V8\'s BigInt RangeError)', () => torch.tensor([1, NaN], { dtype: 'int64' }),
      /^tensor\(\): element \[1\] is NaN, which cannot be converted to int64 without overflow \(int64 has no NaN or Infinity\)$/],
    ['Infinity as int64', () => torch.tensor([[Infinity]], { dtype: 'int64' }), /element \[0, 0\] is Infinity, .*\(int64 has no NaN or Infinity\)$/],
    ['2 ** 63 as int64', () => torch.tensor([2 ** 63], { dtype: 'int64' }),
      /element \[0\] is 9223372036854776000, .* \[-9223372036854775808, 9223372036854775807\]/],
    ['a bigint past 64 bits', () => torch.tensor([1n, 2n ** 64n]), /element \[1\] is 18446744073709551616n, .* int64/],
    ['a BigInt64Array value as int32', () => torch.tensor(new BigInt64Array([2n ** 40n]), { dtype: 'int32' }), /element \[0\] is 1099511627776n, .* int32/],
    ['the string "8" among numbers', () => torch.tensor([1, '8' as unknown as number]),
      /^tensor\(\): mixed element types \(number, string\): element \[1\] is "8" \(a string\); convert it with Number\(\)$/],
    ['strings only', () => torch.tensor(['8', '9'] as unknown as number[]),
      /^tensor\(\): elements must be numbers, bigints or booleans, got string: element \[0\] is "8" \(a string\); convert it with Number\(\)$/],
    ['a string element, nested', () => torch.tensor([[1, 2], [3, 'x' as unknown as number]]), /^tensor\(\): mixed element types \(number, string\): element \[1, 1\] is "x" \(a string\)$/],
    ['a string for data', () => torch.tensor('8' as unknown as number), /^tensor\(\): cannot make a tensor from string "8"; expected a TypedArray/],
    ['undefined in a list', () => torch.tensor([1, undefined as unknown as number]), /element \[1\] is undefined/],
    ['a string for full()\'s value', () => torch.full([2], '8' as unknown as number), /^full\(\): value must be a number: got "8" \(a string\)$/],
    ['a string in a shape', () => torch.zeros(['2' as unknown as number, 3]), /^zeros\(\): shape\[0\] must be an integer in \[0, Infinity\]: got "2" \(a string\)$/],
    ['a string for randint\'s high', () => torch.randint(0, '5' as unknown as number, [2]), /^randint\(\): high must be an integer: got "5" \(a string\)$/],
    ['a bare ArrayBuffer', () => torch.tensor(new ArrayBuffer(8) as unknown as Float32Array), /bare ArrayBuffer; wrap it in a TypedArray/],
  ];
  test.each(cases)('%s', (_name, make, message) => {
    const before = torch.memory().tensors;
    expect(make).toThrow(message);
    expect(torch.memory().tensors).toBe(before);
  });

  test('values that fit still make tensors, and bool takes any number (nonzero is true)', async () => {
    expect(await torch.tensor([-128, 127], { dtype: 'int8' }).data()).toEqual(new Int8Array([-128, 127]));
    expect(await torch.tensor([255.0, 0], { dtype: 'uint8' }).data()).toEqual(new Uint8Array([255, 0]));
    expect(await torch.tensor([2, -1, 0], { dtype: 'bool' }).data()).toEqual(new Uint8Array([1, 1, 0]));
    expect(await torch.tensor(new Uint8ClampedArray([0, 255]), { dtype: 'uint8' }).data()).toEqual(new Uint8Array([0, 255]));
    expect(await torch.tensor([-(2 ** 53), 2 ** 53], { dtype: 'int64' }).data()).toEqual(new BigInt64Array([-(2n ** 53n), 2n ** 53n]));
  });

  test('a TypedArray whose ArrayBuffer was transferred away is an Error, not a tensor of shape [0]', () => {
    const buf = new ArrayBuffer(16);
    const view = new Float32Array(buf);
    structuredClone(buf, { transfer: [buf] });
    expect(() => torch.tensor(view)).toThrow(/^tensor\(\): the Float32Array's ArrayBuffer is detached \(its memory was transferred/);
    // an empty array that was never transferred is still fine
    expect(torch.tensor(new Float32Array(0)).shape).toEqual([0]);
  });

  test('a TypedArray over a SharedArrayBuffer is copied, and later writes to it do not reach the tensor', async () => {
    const shared = new Float32Array(new SharedArrayBuffer(12));
    shared.set([1, 2, 3]);
    const t = torch.tensor(shared, { shape: [3] });
    shared[0] = 99;
    expect(await t.data()).toEqual(new Float32Array([1, 2, 3]));
    const ints = new Int32Array(new SharedArrayBuffer(8));
    ints.set([7, 300]);
    expect(() => torch.tensor(ints, { dtype: 'uint8' })).toThrow(/element \[1\] is 300/);
  });
});

describe('factories refuse a CPU size no machine memory could hold, at the call', () => {
  const gb = (os.totalmem() / 1e9).toLocaleString('en-US', { maximumFractionDigits: 1 });
  const cases: [string, () => unknown, RegExp][] = [
    ['zeros([1e6, 1e6])', () => torch.zeros([1e6, 1e6]),
      new RegExp(`^zeros\\(\\): shape \\[1000000, 1000000\\] of float32 needs 4,000 GB, more than this machine's ${gb} GB of memory$`)],
    ['empty float64', () => torch.empty([1e6, 1e6], { dtype: 'float64' }), /^empty\(\): shape \[1000000, 1000000\] of float64 needs 8,000 GB/],
    ['full', () => torch.full([1e7, 1e6], 1), /^full\(\): shape \[10000000, 1000000\] of float32 needs 40,000 GB/],
    ['randn', () => torch.randn([1e13]), /^randn\(\): shape \[10000000000000\] of float32 needs 40,000 GB/],
    ['randint', () => torch.randint(0, 5, [1e13]), /^randint\(\): shape \[10000000000000\] of int64 needs 80,000 GB/],
    ['arange', () => torch.arange(0, 1e15), /^arange\(\): shape \[1000000000000000\] of int64 needs 8,000,000 GB/],
  ];
  test.each(cases)('%s', (_name, make, message) => {
    const before = torch.memory();
    expect(make).toThrow(message);
    expect(torch.memory()).toEqual(before); // nothing was counted
  });

  test('a size the machine has but cannot spare now is refused at the call too (FINETORCH_OUT_OF_MEMORY), not granted and then killed', () => {
    // a little more than what is available now, and less than the whole memory
    const free = os.freemem();
    const n = Math.ceil((free + Math.min(1e9, (os.totalmem() - free) / 2)) / 4);
    if (n * 4 >= os.totalmem()) return; // nothing lies between available and total on this machine
    const before = torch.memory();
    let err: (Error & { code?: string }) | undefined;
    try { torch.zeros([n]); } catch (e) { err = e as Error & { code?: string }; }
    expect(err?.message).toMatch(new RegExp(`^zeros\\(\\): shape \\[${n}\\] of float32 needs [\\d,.]+ GB, more than the [\\d,.]+ GB of memory this machine has available now$`));
    expect(err?.code).toBe('FINETORCH_OUT_OF_MEMORY');
    expect(torch.memory()).toEqual(before);
  });
});

describe('freeze and unfreeze: every pattern of a list must match a parameter', () => {
  const cases: [string, (m: ScriptModule) => unknown, RegExp][] = [
    ['unfreeze with one typo among matching patterns', (m) => m.unfreeze(['2.*', 'typo.*']),
      /^unfreeze\(\): no parameter matches typo\.\* \(1 of the 2 patterns given\); names look like '0\.weight'$/],
    ['freeze with a RegExp that matches nothing', (m) => m.freeze(['0.*', /^head\./]),
      /^freeze\(\): no parameter matches \/\^head\\.\/ \(1 of the 2 patterns given\)/],
    ['freeze with two patterns that match nothing', (m) => m.freeze(['x.*', '2.*', 'y.*']),
      /^freeze\(\): no parameter matches x\.\*, y\.\* \(2 of the 3 patterns given\)/],
  ];
  test.each(cases)('%s, and nothing changes', async (_name, call, message) => {
    const model = await torch.jit.load(mlpFile);
    model.freeze('0.*');
    const before = model.namedParameters().map(([n, t]) => [n, t.requiresGrad]);
    expect(() => call(model)).toThrow(message);
    expect(model.namedParameters().map(([n, t]) => [n, t.requiresGrad])).toEqual(before);
    model.dispose();
  });
});

describe('file-writing APIs refuse a path of the wrong kind: a folder where a file goes, or a file where a folder goes', () => {
  const cases: [string, (dir: string, model: ScriptModule) => Promise<unknown>, RegExp][] = [
    ['model.save to a path ending in /', (dir, m) => m.save(path.join(dir, 'x.pt') + '/'),
      /^save\(.*x\.pt\/\): the path ends in '\/', so it names a folder, not a file; give the file's name, e\.g\. '.*x\.pt'$/],
    ['model.save to an existing folder', (dir, m) => m.save(path.join(dir, 'taken')), /^save\(.*taken\): '.*taken' is an existing folder, not a file/],
    ['fit with checkpoint.dir naming a file', (dir, m) => {
      fs.writeFileSync(path.join(dir, 'taken', 'ckpt'), '');
      const opt = new torch.optim.SGD(m.parameters());
      return torch.train.fit(m, { train: batches(1), epochs: 1, optimizer: opt, progress: false, checkpoint: { dir: path.join(dir, 'taken', 'ckpt') } });
    }, /^fit: checkpoint\.dir '.*ckpt' is a file, not a folder$/],
    ['writeReport where report.html is a folder', (dir) => {
      fs.mkdirSync(path.join(dir, 'taken', 'report.html'));
      return writeReport(path.join(dir, 'taken'), { title: 't', runs: [], classes: [], settings: {} });
    }, /^writeReport\(.*report\.html\): '.*report\.html' is an existing folder, not a file/],
  ];
  test.each(cases)('%s', async (_name, write, message) => {
    const dir = fs.mkdtempSync(path.join(root, 'folder-'));
    fs.mkdirSync(path.join(dir, 'taken'));
    const model = await torch.jit.load(mlpFile);
    await expect(write(dir, model)).rejects.toThrow(message);
    expect(fs.readdirSync(dir)).toEqual(['taken']); // no x.pt, no temporary file
    model.dispose();
  });
});

describe('fit checks that the optimizer holds the model\'s trainable parameters', () => {
  test('an optimizer over another model\'s parameters is an Error and trains nothing', async () => {
    const model = await torch.jit.load(mlpFile);
    const other = await torch.jit.load(mlpFile);
    const opt = new torch.optim.SGD(other.parameters(), { lr: 0.1 });
    const before = await weights(model);
    await expect(torch.train.fit(model, { train: batches(2), epochs: 1, optimizer: opt, progress: false })).rejects.toThrow(
      /^fit: the optimizer holds none of this model's 4 trainable parameters \(0\.weight, 0\.bias, 2\.weight, 2\.bias\), so training would change nothing; was it built over another model's parameters, or before replaceHead\(\)\?/,
    );
    expect(await weights(model)).toEqual(before);
    expect(model.busy).toBe(false);
    for (const x of [opt, model, other]) x.dispose();
  });

  test('an optimizer over some of them is a FINETORCH_OPTIMIZER_PARTIAL warning that names the rest; replaceHead counts as new parameters', async () => {
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const model = await torch.jit.load(mlpFile);
      const opt = new torch.optim.SGD(model.parameters(), { lr: 0.1 });
      await model.replaceHead({ numClasses: 3, log: () => {} });
      await torch.train.fit(model, { train: batches(1), epochs: 1, optimizer: opt, progress: false });
      const partial = warn.mock.calls.filter(([, o]) => (o as { code?: string })?.code === 'FINETORCH_OPTIMIZER_PARTIAL');
      expect(partial).toHaveLength(1);
      expect(String(partial[0][0])).toMatch(/^fit: the optimizer holds 2 of this model's 4 trainable parameters; these will not be trained: 2\.weight, 2\.bias\./);
      opt.dispose();
      model.dispose();
    } finally {
      warn.mockRestore();
    }
  });

  test('an optimizer built before channelsLast() (parameters swapped in place) holds them still: no warning, and it trains', async () => {
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const model = await torch.jit.load(mlpFile);
      const opt = new torch.optim.SGD(model.parameters(), { lr: 0.1 });
      await model.channelsLast();
      const before = await weights(model);
      await torch.train.fit(model, { train: batches(1), epochs: 1, optimizer: opt, progress: false });
      expect(warn.mock.calls.filter(([, o]) => (o as { code?: string })?.code === 'FINETORCH_OPTIMIZER_PARTIAL')).toEqual([]);
      expect(await weights(model)).not.toEqual(before);
      opt.dispose();
      model.dispose();
    } finally {
      warn.mockRestore();
    }
  });
});

describe('a model being trained by fit() is busy', () => {
  test('a second fit, evaluate and predict reject with a busy Error while the first runs; all work again after it', async () => {
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.SGD(model.parameters(), { lr: 0.1 });
    const x = torch.tensor(floats(9, 8), { shape: [2, 4] });
    const fresh = { [Symbol.iterator]: () => batches(3)[Symbol.iterator]() }; // new tensors each epoch
    const first = torch.train.fit(model, { train: fresh, epochs: 2, optimizer: opt, progress: false });
    expect(model.busy).toBe(true);
    const cases: [string, () => Promise<unknown>, RegExp][] = [
      ['fit', () => torch.train.fit(model, { train: batches(1), epochs: 1, optimizer: opt, progress: false }),
        /^fit: this model is already being trained by another fit\(\) call; await it first$/],
      ['evaluate', () => torch.train.evaluate(model, batches(1)), /^eval\(\): this model is being trained by a fit\(\) call that has not finished, so evaluate\(\), predict\(\) and anything that runs or changes the model must wait; await that fit\(\) first$/],
      ['predict', () => torch.train.predict(model, x), /^eval\(\): this model is being trained by a fit\(\) call that has not finished/],
      ['forward', () => model.forward(x), /^forward: this model is being trained by a fit\(\) call/],
    ];
    for (const [, call, message] of cases) await expect(call()).rejects.toThrow(message);
    const h = await first;
    expect(h.epochs).toHaveLength(2);
    expect(model.busy).toBe(false);
    expect((await torch.train.evaluate(model, batches(1))).samples).toBe(8);
    opt.dispose();
    model.dispose();
  });

  test('fit\'s own callbacks may evaluate the model; a failed fit releases it', async () => {
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.SGD(model.parameters(), { lr: 0.1 });
    const seen: number[] = [];
    await torch.train.fit(model, {
      train: batches(2), epochs: 1, optimizer: opt, progress: false,
      callbacks: { onEpochEnd: async () => { seen.push((await torch.train.evaluate(model, batches(1))).samples); } },
    });
    expect(seen).toEqual([8]);
    const bad = { input: torch.tensor(floats(3, 32), { shape: [8, 4] }), target: torch.tensor(new BigInt64Array(8).fill(7n)) };
    await expect(torch.train.fit(model, { train: [bad], epochs: 1, optimizer: opt, progress: false })).rejects.toThrow(/labels must be in \[0, 3\)/);
    expect(model.busy).toBe(false);
    expect((await torch.train.fit(model, { train: batches(1), epochs: 1, optimizer: opt, progress: false })).epochs).toHaveLength(1);
    opt.dispose();
    model.dispose();
  });
});

describe('ImageFolder follows symlinks as torchvision does, without loops', () => {
  const TV = String.raw`
import json, sys
from torchvision.datasets import ImageFolder
ds = ImageFolder(sys.argv[1], loader=lambda p: p)
print(json.dumps({'classes': ds.classes, 'samples': [[p, t] for p, t in ds.samples]}))
`;

  test('a link from class a to class b\'s folder keeps b\'s images in b, lists them in both as torchvision does, and reports them once', async () => {
    const dir = fs.mkdtempSync(path.join(root, 'links-'));
    fs.mkdirSync(path.join(dir, 'a'));
    fs.mkdirSync(path.join(dir, 'b'));
    await writeImage(path.join(dir, 'a', 'x.png'), solid(2, 2, [255, 0, 0]), 'png');
    await writeImage(path.join(dir, 'b', 'y.png'), solid(2, 2, [0, 255, 0]), 'png');
    await writeImage(path.join(dir, 'b', 'z.png'), solid(2, 2, [0, 0, 255]), 'png');
    fs.symlinkSync(path.join('..', 'b'), path.join(dir, 'a', 'link-to-b'));
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const ds = new ImageFolder(dir);
      const tv = await runPyJson<{ classes: string[]; samples: [string, number][] }>(TV, [dir]);
      expect(ds.classes).toEqual(tv.classes);
      expect(ds.samples).toEqual(tv.samples);
      expect(ds.samples.filter(([, t]) => t === 1).map(([p]) => path.relative(dir, p))).toEqual(['b/y.png', 'b/z.png']);
      const real = fs.realpathSync(dir);
      expect(ds.duplicates).toEqual([
        { realPath: path.join(real, 'b', 'y.png'), classes: ['a', 'b'], paths: [path.join(dir, 'a', 'link-to-b', 'y.png'), path.join(dir, 'b', 'y.png')] },
        { realPath: path.join(real, 'b', 'z.png'), classes: ['a', 'b'], paths: [path.join(dir, 'a', 'link-to-b', 'z.png'), path.join(dir, 'b', 'z.png')] },
      ]);
      expect(ds.report().duplicates).toEqual(ds.duplicates);
      const dup = warn.mock.calls.filter(([, o]) => (o as { code?: string })?.code === 'FINETORCH_IMAGEFOLDER_DUPLICATES');
      expect(dup).toHaveLength(1);
      expect(String(dup[0][0])).toMatch(/^ImageFolder: 2 image file\(s\) in '.*' are samples of more than one class \(by real path, e\.g\. '.*b\/y\.png' in a and b\); they are kept in each class, as torchvision does/);
    } finally {
      warn.mockRestore();
    }
  });

  test('links that loop back up the tree are not followed again, and nothing is a duplicate', async () => {
    const dir = fs.mkdtempSync(path.join(root, 'loops-'));
    fs.mkdirSync(path.join(dir, 'a', 'sub'), { recursive: true });
    await writeImage(path.join(dir, 'a', 'sub', 'x.png'), solid(2, 2, [1, 2, 3]), 'png');
    fs.symlinkSync('..', path.join(dir, 'a', 'sub', 'up')); // a/sub/up -> a
    fs.symlinkSync('.', path.join(dir, 'a', 'self')); // a/self -> a
    const ds = new ImageFolder(dir);
    expect(ds.samples.map(([p]) => path.relative(dir, p))).toEqual(['a/sub/x.png']);
    expect(ds.duplicates).toEqual([]);
  });
});

/** Mounts a tmpfs of `size` at a new folder; null (and the reason) where mounting is not permitted. */
function mountTmpfs(size: string): { dir: string; unmount(): void } | string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-misuse-mnt-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    fs.rmdirSync(dir);
    return `mount -t tmpfs is not permitted here: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`;
  }
  return { dir, unmount: () => { execFileSync('umount', [dir]); fs.rmdirSync(dir); } };
}

const probe = mountTmpfs('64k');
const cannotMount = typeof probe === 'string' ? probe : undefined;
if (typeof probe !== 'string') probe.unmount();
const fsTest = cannotMount ? (name: string, fn: () => Promise<void>) => test.skip(`${name} (skipped: ${cannotMount})`, fn) : test;

/** Fills the tmpfs at `dir` so that only `bytes` (rounded up to whole blocks) stay free. */
function fill(dir: string, bytes: number): void {
  const st = fs.statfsSync(dir);
  fs.writeFileSync(path.join(dir, 'filler'), Buffer.alloc((st.bavail - Math.ceil(bytes / st.bsize)) * st.bsize));
}

describe('failed writes leave no temporary file and name the file and the cause', () => {
  fsTest('model.save on a read-only file system: EROFS, and the folder stays empty', async () => {
    const m = mountTmpfs('1m') as { dir: string; unmount(): void };
    try {
      execFileSync('mount', ['-o', 'remount,ro', m.dir]);
      const model = await torch.jit.load(mlpFile);
      const file = path.join(m.dir, 'model.pt');
      const err = await model.save(file).catch((e: Error & { code?: string }) => e);
      expect((err as Error).message).toBe(`save(${file}): cannot write '${file}': EROFS (the file system is read-only)`);
      expect((err as { code?: string }).code).toBe('EROFS');
      expect(fs.readdirSync(m.dir)).toEqual([]);
      model.dispose();
    } finally {
      m.unmount();
    }
  });

  fsTest('model.save over an existing file on a full disk: ENOSPC, the old file intact, no temporary file, the process lives', async () => {
    const m = mountTmpfs('256k') as { dir: string; unmount(): void };
    try {
      const model = await torch.jit.load(mlpFile);
      const file = path.join(m.dir, 'model.pt');
      await model.save(file); // room for it now
      const before = fs.readFileSync(file);
      fill(m.dir, 0);
      const err = await model.save(file).catch((e: Error) => e);
      // libtorch's own file writer aborted the process here (SIGABRT); finetorch writes the bytes itself
      expect((err as Error).message).toBe(`save(${file}): cannot write '${file}': ENOSPC (no space left on the device)`);
      expect((err as { code?: string }).code).toBe('ENOSPC');
      expect(fs.readdirSync(m.dir).sort()).toEqual(['filler', 'model.pt']);
      expect(fs.readFileSync(file).equals(before)).toBe(true);
      expect((await torch.jit.load(file)).namedParameters().length).toBe(4);
      model.dispose();
    } finally {
      m.unmount();
    }
  });

  fsTest('a checkpoint file written from TypeScript on a full disk: fit rejects with ENOSPC and the partial checkpoint is removed', async () => {
    const model = await torch.jit.load(wideFile);
    const weightBytes = model.numParameters() * 4;
    const m = mountTmpfs('48m') as { dir: string; unmount(): void };
    try {
      const ckpt = path.join(m.dir, 'ckpt');
      fs.mkdirSync(ckpt);
      fill(m.dir, weightBytes + (6 << 20)); // room for the model file, not for the optimizer state (twice the weights)
      const opt = new torch.optim.AdamW(model.parameters());
      const file = path.join(ckpt, 'ckpt-00000001.optim');
      await expect(torch.train.fit(model, { train: batches(1, 1, 1024), epochs: 1, optimizer: opt, progress: false, checkpoint: { dir: ckpt } }))
        .rejects.toThrow(`checkpoint(${file}): cannot write '${file}': ENOSPC (no space left on the device)`);
      expect(fs.readdirSync(ckpt)).toEqual([]); // neither the model file of the set nor a temporary file
      expect(model.busy).toBe(false);
      opt.dispose();
    } finally {
      m.unmount();
      model.dispose();
    }
  });
});

describe('fault injection: checkpoints on a disk that fills or turns read-only mid-run', () => {
  // Fresh batch tensors for every epoch: fit disposes the batches it trained on.
  const data = () => ({ length: 3, [Symbol.iterator]: () => batches(3, 7)[Symbol.iterator]() });

  fsTest('the disk fills after the first checkpoint: fit stops with ENOSPC naming the file, and a resume from the last good checkpoint ends bit-identical to an uninterrupted run', async () => {
    const m = mountTmpfs('1m') as { dir: string; unmount(): void };
    try {
      const ckpt = path.join(m.dir, 'ckpt');
      const model = await torch.jit.load(mlpFile);
      const opt = new torch.optim.AdamW(model.parameters(), { lr: 0.01 });
      let saved = 0;
      const err = await torch.train.fit(model, {
        train: data(), epochs: 3, optimizer: opt, progress: false, checkpoint: { dir: ckpt },
        // another process fills the disk right after the first checkpoint set is written
        callbacks: { onCheckpoint: () => { if (saved++ === 0) fill(m.dir, 0); } },
      }).catch((e: Error & { code?: string }) => e);
      expect(saved).toBe(1);
      const file = path.join(ckpt, 'ckpt-00000006.pt'); // the second epoch's set, the model file first
      expect((err as Error).message).toBe(`checkpoint(${file}): cannot write '${file}': ENOSPC (no space left on the device)`);
      expect((err as { code?: string }).code).toBe('ENOSPC');
      expect(model.busy).toBe(false);
      // the first set is whole, and nothing of the second is left behind
      expect(fs.readdirSync(ckpt).sort()).toEqual(['ckpt-00000003.optim', 'ckpt-00000003.pt', 'ckpt-00000003.rng', 'latest.json']);
      expect(JSON.parse(fs.readFileSync(path.join(ckpt, 'latest.json'), 'utf8')).model).toBe('ckpt-00000003.pt');
      opt.dispose();
      model.dispose();

      // the user frees space and resumes in a new process's way: a fresh model and optimizer
      fs.rmSync(path.join(m.dir, 'filler'));
      const resumed = await torch.jit.load(mlpFile);
      const opt2 = new torch.optim.AdamW(resumed.parameters(), { lr: 0.01 });
      const h = await torch.train.fit(resumed, { train: data(), epochs: 3, optimizer: opt2, progress: false, checkpoint: { dir: ckpt }, resumeFrom: ckpt });
      expect(h.epochs.length).toBe(3);

      const straight = await torch.jit.load(mlpFile);
      const opt3 = new torch.optim.AdamW(straight.parameters(), { lr: 0.01 });
      await torch.train.fit(straight, { train: data(), epochs: 3, optimizer: opt3, progress: false });
      expect(await weights(resumed)).toEqual(await weights(straight));
      // and the weights did move: the comparison is not between two untouched models
      expect(await weights(straight)).not.toEqual(await weights(await torch.jit.load(mlpFile)));
      [opt2, opt3].forEach((o) => o.dispose());
      [resumed, straight].forEach((x) => x.dispose());
    } finally {
      m.unmount();
    }
  });

  fsTest('fit with checkpoints into a read-only file system: EROFS naming the file, before any training step is lost silently', async () => {
    const m = mountTmpfs('1m') as { dir: string; unmount(): void };
    try {
      const ckpt = path.join(m.dir, 'ckpt');
      fs.mkdirSync(ckpt);
      execFileSync('mount', ['-o', 'remount,ro', m.dir]);
      const model = await torch.jit.load(mlpFile);
      const opt = new torch.optim.AdamW(model.parameters());
      const err = await torch.train.fit(model, { train: data(), epochs: 1, optimizer: opt, progress: false, checkpoint: { dir: ckpt } })
        .catch((e: Error & { code?: string }) => e);
      expect((err as Error).message).toMatch(/^checkpoint\(.*\/ckpt-00000003\.(pt|optim|rng)\): cannot write '.*': EROFS \(the file system is read-only\)$/);
      expect((err as { code?: string }).code).toBe('EROFS');
      expect(fs.readdirSync(ckpt)).toEqual([]);
      expect(model.busy).toBe(false);
      opt.dispose();
      model.dispose();
    } finally {
      m.unmount();
    }
  });
});

describe('damaged checkpoint files are named', () => {
  test.each([['optim', 'optimizer state'], ['rng', 'random-generator state']])('a truncated .%s file: resumeFrom names the file and what it holds', async (ext, what) => {
    const dir = fs.mkdtempSync(path.join(root, 'ckpt-'));
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.AdamW(model.parameters(), { lr: 0.01 });
    await torch.train.fit(model, { train: batches(2), epochs: 1, optimizer: opt, progress: false, checkpoint: { dir } });
    const file = fs.readdirSync(dir).find((f) => f.endsWith(`.${ext}`))!;
    const full = path.join(dir, file);
    fs.truncateSync(full, Math.floor(fs.statSync(full).size / 2));
    const err = await torch.train.fit(model, { train: batches(2), epochs: 2, optimizer: opt, progress: false, resumeFrom: dir }).catch((e: Error) => e);
    expect((err as Error).message).toMatch(new RegExp(`^resumeFrom: the ${what} file '${full.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}' is damaged or not one finetorch wrote \\(\\d+ bytes\\): `));
    opt.dispose();
    model.dispose();
  });
});
