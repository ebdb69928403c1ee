import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import {
  ConcatDataset, DataLoader, Dataset, defaultCollate, randomSplit, Subset, TensorDataset,
  type ItemContext, type Sample,
} from '../lib/data';
import { runPython, scratchDir } from './helpers/python';

/** Sample i has input [i, -i] and target i % 5. */
class Indexed extends Dataset {
  constructor(readonly n: number, readonly delayMs = 0) { super(); }
  get length() { return this.n; }
  async get(i: number): Promise<Sample> {
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    return { input: { data: Float32Array.of(i, -i), shape: [2] }, target: i % 5 };
  }
}

/** Runs one epoch and returns the input's first column of each batch (the sample indices). */
async function epoch(loader: DataLoader<Sample>): Promise<number[][]> {
  const out: number[][] = [];
  for await (const b of loader) {
    expect(b.input.dtype).toBe('float32');
    expect(b.target.dtype).toBe('int64');
    const x = await b.input.data() as Float32Array;
    const ids = Array.from({ length: b.input.shape[0] }, (_, k) => x[2 * k]);
    expect(Array.from(await b.target.data() as BigInt64Array, Number)).toEqual(ids.map((i) => i % 5));
    out.push(ids);
    b.input.dispose();
    b.target.dispose();
  }
  return out;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe('DataLoader', () => {
  test('every sample exactly once per epoch, with a last partial batch', async () => {
    const loader = new DataLoader(new Indexed(103), { batchSize: 10, shuffle: true, seed: 1 });
    expect(loader.length).toBe(11);
    const batches = await epoch(loader);
    expect(batches.map((b) => b.length)).toEqual([...Array(10).fill(10), 3]);
    expect(batches.flat().sort((a, b) => a - b)).toEqual(range(103));
    expect(batches.flat()).not.toEqual(range(103));
  });

  test('dropLast drops the partial batch; without shuffle the order is the dataset order', async () => {
    const loader = new DataLoader(new Indexed(103), { batchSize: 10, dropLast: true });
    expect(loader.length).toBe(10);
    const batches = await epoch(loader);
    expect(batches.map((b) => b.length)).toEqual(Array(10).fill(10));
    expect(batches.flat()).toEqual(range(100));
  });

  test('the seed fixes the order of every epoch; epochs differ; setEpoch replays one', async () => {
    const ds = new Indexed(50);
    const a = new DataLoader(ds, { batchSize: 7, shuffle: true, seed: 42 });
    const b = new DataLoader(ds, { batchSize: 7, shuffle: true, seed: 42 });
    const a0 = (await epoch(a)).flat();
    const a1 = (await epoch(a)).flat();
    expect(a.epoch).toBe(2);
    expect((await epoch(b)).flat()).toEqual(a0);
    expect((await epoch(b)).flat()).toEqual(a1);
    expect(a1).not.toEqual(a0);
    expect(a1.slice().sort((x, y) => x - y)).toEqual(range(50));
    a.setEpoch(0);
    expect((await epoch(a)).flat()).toEqual(a0);
    const other = new DataLoader(ds, { batchSize: 7, shuffle: true, seed: 43 });
    expect((await epoch(other)).flat()).not.toEqual(a0);
    expect(Array.from(a.order(1))).toEqual(a1);
  });

  test('prefetch prepares the next batches while one is consumed (a 20 ms dataset, measured both ways)', async () => {
    const ds = new Indexed(24, 20);
    const time = async (prefetch: number) => {
      const t0 = process.hrtime.bigint();
      const batches = await epoch(new DataLoader(ds, { batchSize: 1, prefetch }));
      expect(batches.flat()).toEqual(range(24));
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    const serial = await time(0);
    const ahead = await time(4);
    expect(serial).toBeGreaterThanOrEqual(24 * 20 * 0.95);
    // Five reads in flight: about a fifth of the serial time; half leaves room for a loaded machine.
    expect(ahead).toBeLessThan(serial / 2);
  });

  test('a consumer that stops early leaks no tensors (prefetched batches are disposed)', async () => {
    const loader = new DataLoader(new Indexed(40, 2), { batchSize: 4, prefetch: 3 });
    const before = torch.memory().tensors;
    for await (const b of loader) {
      b.input.dispose();
      b.target.dispose();
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(torch.memory().tensors).toBe(before);
  });

  test('errors name the sample; samples of different shapes in one batch are refused', async () => {
    class Bad extends Indexed {
      override async get(i: number): Promise<Sample> {
        if (i === 5) throw new Error('disk on fire');
        return i === 2 ? { input: { data: new Float32Array(3), shape: [3] }, target: 0 } : super.get(i);
      }
    }
    const run = async (ds: Dataset, batchSize: number) => {
      for await (const b of new DataLoader(ds, { batchSize })) {
        b.input.dispose();
        b.target.dispose();
      }
    };
    await expect(run(new Bad(8), 2)).rejects.toThrow(/one shape: sample 2 is \[3\] but sample 3 is \[2\]/);
    await expect(run(new Subset(new Bad(8), [4, 5]), 2)).rejects.toThrow(/DataLoader: sample 1: disk on fire/);
    class NotSample extends Dataset<unknown> {
      get length() { return 2; }
      async get() { return { input: [1, 2], target: 0 }; }
    }
    await expect(run(new NotSample() as unknown as Dataset, 2)).rejects.toThrow(/input must be \{ data: TypedArray, shape: number\[\] \}/);
  });

  test('collate builds batches from the samples when given', async () => {
    const seen: number[][] = [];
    const loader = new DataLoader(new Indexed(5), {
      batchSize: 2,
      collate: (items) => {
        seen.push(items.map((s) => s.target));
        return defaultCollate(items);
      },
    });
    expect((await epoch(loader)).flat()).toEqual(range(5));
    expect(seen).toEqual([[0, 1], [2, 3], [4]]);
  });

  test('random streams are per (seed, epoch, sample), whatever the batch size', async () => {
    class Noisy extends Dataset {
      get length() { return 6; }
      async get(i: number, ctx?: ItemContext): Promise<Sample> {
        return { input: { data: Float32Array.of(ctx!.rng.random()), shape: [1] }, target: i };
      }
    }
    const draws = async (batchSize: number, epochNo: number) => {
      const loader = new DataLoader(new Noisy(), { batchSize, seed: 9 });
      loader.setEpoch(epochNo);
      const out: number[] = [];
      for await (const b of loader) {
        out.push(...(await b.input.data() as Float32Array));
        b.input.dispose();
        b.target.dispose();
      }
      return out;
    };
    expect(await draws(4, 0)).toEqual(await draws(1, 0));
    expect(await draws(4, 1)).not.toEqual(await draws(4, 0));
  });

  test('bad options are clear errors', () => {
    const ds = new Indexed(3);
    expect(() => new DataLoader(ds, { batchSize: 0 })).toThrow(/batchSize must be an integer in \[1, Infinity\]/);
    expect(() => new DataLoader(ds, { prefetch: -1 })).toThrow(/prefetch must be an integer/);
    expect(() => new DataLoader(ds, { seed: 1.5 })).toThrow(/seed must be an integer/);
    expect(() => new DataLoader(ds, { shuffle: 'yes' as unknown as boolean })).toThrow(/shuffle must be a boolean/);
    expect(() => new DataLoader(ds, { batch_size: 4 } as object)).toThrow(/unknown option 'batch_size'/);
    expect(() => new DataLoader(ds, { collate: 3 as unknown as () => never })).toThrow(/collate must be a function/);
    expect(() => new DataLoader([1, 2] as unknown as Dataset)).toThrow(/expected a dataset/);
    expect(() => new DataLoader(ds).setEpoch(-1)).toThrow(/epoch must be an integer/);
  });
});

describe('datasets', () => {
  test('TensorDataset reads tensors once; they can be disposed after load()', async () => {
    const x = torch.tensor(Float32Array.from(range(12)), { shape: [6, 2] });
    const y = torch.tensor(BigInt64Array.from([0n, 1n, 2n, 0n, 1n, 2n]));
    const ds = new TensorDataset(x, y);
    expect(ds.length).toBe(6);
    await ds.load();
    x.dispose();
    y.dispose();
    const s = await ds.get(4);
    expect(s).toEqual({ input: { data: Float32Array.of(8, 9), shape: [2] }, target: 1 });
    const batches: number[][] = [];
    for await (const b of new DataLoader(ds, { batchSize: 4 })) {
      expect(b.input.shape).toEqual([b.target.shape[0], 2]);
      batches.push(Array.from(await b.input.data() as Float32Array));
      b.input.dispose();
      b.target.dispose();
    }
    expect(batches).toEqual([range(8), [8, 9, 10, 11]]);
  });

  test('TensorDataset keeps the input dtype and accepts host arrays', async () => {
    const ids = { data: BigInt64Array.from([1n, 2n, 3n, 4n, 5n, 6n]), shape: [3, 2] };
    const ds = new TensorDataset(ids, [2, 0, 1]);
    for await (const b of new DataLoader(ds, { batchSize: 3 })) {
      expect(b.input.dtype).toBe('int64');
      expect(await b.input.tolist()).toEqual([[1n, 2n], [3n, 4n], [5n, 6n]]);
      expect(await b.target.tolist()).toEqual([2n, 0n, 1n]);
      b.input.dispose();
      b.target.dispose();
    }
  });

  test('TensorDataset validates its arguments', async () => {
    const x = torch.zeros([4, 3]);
    expect(() => new TensorDataset(x)).toThrow(/expected \(inputs, targets\): got 1 argument/);
    expect(() => new TensorDataset(x, torch.zeros([4]))).toThrow(/targets must be integer class indices .*got float32/);
    expect(() => new TensorDataset(x, [0, 1, 2])).toThrow(/inputs have 4 samples but targets have 3/);
    expect(() => new TensorDataset(x, [0, 1, 2, 0.5])).toThrow(/targets\[3\] must be an integer/);
    const gone = torch.zeros([2, 2]);
    const ds = new TensorDataset(gone, [0, 1]);
    gone.dispose();
    await expect(ds.get(0)).rejects.toThrow(/inputs tensor was disposed before it was read/);
    await expect(new TensorDataset(x, [0, 1, 2, 3]).get(4)).rejects.toThrow(/index must be an integer in \[0, 4\): got 4/);
    x.dispose();
  });

  test('Subset and ConcatDataset map indices', async () => {
    const a = new Indexed(5);
    const b = new Subset(new Indexed(20), [10, 11, 12]);
    const both = new ConcatDataset([a, b]);
    expect(both.length).toBe(8);
    const ids = await Promise.all(range(8).map(async (i) => (await both.get(i)).input.data[0]));
    expect(ids).toEqual([0, 1, 2, 3, 4, 10, 11, 12]);
    expect(() => new Subset(a, [0, 5])).toThrow(/indices\[1\]: index must be an integer in \[0, 5\): got 5/);
    expect(() => new ConcatDataset([])).toThrow(/non-empty array/);
  });

  test('randomSplit: fractions (remainder to the first), counts, disjoint and reproducible', async () => {
    const ds = new Indexed(11);
    const [tr, va] = randomSplit(ds, [0.8, 0.2], { seed: 4 });
    expect([tr.length, va.length]).toEqual([9, 2]);
    expect([...tr.indices, ...va.indices].sort((x, y) => x - y)).toEqual(range(11));
    expect(randomSplit(ds, [0.8, 0.2], { seed: 4 }).map((s) => s.indices)).toEqual([tr.indices, va.indices]);
    expect(randomSplit(ds, [0.8, 0.2], { seed: 5 })[0].indices).not.toEqual(tr.indices);
    expect(randomSplit(ds, [1 / 3, 1 / 3, 1 / 3], { seed: 0 }).map((s) => s.length)).toEqual([4, 4, 3]);
    expect(randomSplit(ds, [6, 5], { seed: 0 }).map((s) => s.length)).toEqual([6, 5]);
    expect(() => randomSplit(ds, [0.5, 0.4])).toThrow(/fractions that sum to 1 or counts that sum to the dataset's length \(11\)/);
    expect(() => randomSplit(ds, [-1, 12])).toThrow(/lengths\[0\] must be a non-negative number/);
  });
});

describe('train.fit consumes a DataLoader', () => {
  let dir: string;
  beforeAll(() => {
    dir = scratchDir('loader-fit');
    runPython(`
import sys, torch
torch.manual_seed(0)
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5))).save(sys.argv[1])
`, undefined, [path.join(dir, 'mlp.pt')]);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('fit sets the epoch, reads length for progress, and disposes every batch', async () => {
    const model = await torch.jit.load(path.join(dir, 'mlp.pt'));
    const loader = new DataLoader(new Indexed(30), { batchSize: 8, shuffle: true, seed: 0 });
    const epochs: number[] = [];
    const setEpoch = loader.setEpoch.bind(loader);
    loader.setEpoch = (e: number) => { epochs.push(e); setEpoch(e); };
    const optimizer = new torch.optim.SGD(model.parameters({ trainable: true }), { lr: 0.001 });
    const before = torch.memory().tensors;
    const history = await torch.train.fit(model, { train: loader, epochs: 2, optimizer, progress: false });
    expect(epochs).toEqual([0, 1]);
    expect(history.epochs.map((e) => e.samples)).toEqual([30, 30]);
    expect(torch.memory().tensors).toBeLessThanOrEqual(before);
    optimizer.dispose();
    model.dispose();
  });
});
