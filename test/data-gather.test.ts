/**
 * The DataLoader's native gather: a batch of an in-memory dataset (TensorDataset, FashionMNIST
 * without per-sample transforms, a Subset of them) is copied by index in one native call. It must
 * give exactly the batches of the per-sample path, which the `PerSample` wrapper forces (it offers
 * `get` and `prepare` but not the arrays behind them).
 */
import * as fs from 'fs';
import * as torch from '../lib';
import {
  DataLoader, Dataset, DistributedSampler, FashionMNIST, randomSplit, Subset, TensorDataset,
  type DataLoaderOptions, type DatasetLike, type ItemContext, type Sample,
} from '../lib/data';
import { native } from '../lib/native';
import * as transforms from '../lib/transforms';

/** The same samples through the per-sample path. */
class PerSample extends Dataset {
  constructor(readonly inner: DatasetLike) { super(); }
  get length() { return this.inner.length; }
  get(i: number, ctx?: ItemContext): Promise<Sample> { return this.inner.get(i, ctx); }
  override prepare(i: number, ctx: ItemContext) { return this.inner.prepare ? this.inner.prepare(i, ctx) : super.prepare(i, ctx); }
}

interface Plain { shape: number[]; dtype: string; input: number[]; target: number[] }

/** One epoch's batches as plain values; disposes the tensors. */
async function epochOf(loader: DataLoader, epoch = 0): Promise<Plain[]> {
  loader.setEpoch(epoch);
  const out: Plain[] = [];
  for await (const b of loader) {
    expect(b.target.dtype).toBe('int64');
    out.push({
      shape: b.input.shape, dtype: b.input.dtype,
      input: Array.from(await b.input.data() as ArrayLike<number | bigint>, Number),
      target: Array.from(await b.target.data() as BigInt64Array, Number),
    });
    b.input.dispose();
    b.target.dispose();
  }
  return out;
}

/** Asserts the two paths give the same batches over two epochs, and that `ds` took the gather. */
async function sameBatches(ds: DatasetLike, options: DataLoaderOptions<Sample>): Promise<Plain[]> {
  const spy = jest.spyOn(native, 'gatherRows');
  try {
    const fast = [await epochOf(new DataLoader(ds, options)), await epochOf(new DataLoader(ds, options), 1)];
    expect(spy).toHaveBeenCalled();
    spy.mockClear();
    const slow = [await epochOf(new DataLoader(new PerSample(ds), options)), await epochOf(new DataLoader(new PerSample(ds), options), 1)];
    expect(spy).not.toHaveBeenCalled();
    expect(fast).toEqual(slow);
    return fast[0];
  } finally {
    spy.mockRestore();
  }
}

const N = 53;
/** Sample i: a [2, 3] float32 input i*100 + 0..5 and target (i * 7) % 10. */
function indexedTensors(): TensorDataset {
  const x = Float32Array.from({ length: N * 6 }, (_, k) => Math.floor(k / 6) * 100 + (k % 6));
  const y = Array.from({ length: N }, (_, i) => (i * 7) % 10);
  return new TensorDataset({ data: x, shape: [N, 2, 3] }, y);
}

describe('DataLoader native gather', () => {
  test('TensorDataset: the same batches as sample by sample, shuffled or not, with and without dropLast', async () => {
    const ds = indexedTensors();
    for (const shuffle of [false, true]) {
      for (const dropLast of [false, true]) {
        const batches = await sameBatches(ds, { batchSize: 8, shuffle, dropLast, seed: 3 });
        expect(batches.length).toBe(dropLast ? 6 : 7);
        expect(batches[0].shape).toEqual([8, 2, 3]);
        if (!shuffle) expect(batches[0].input.slice(6, 12)).toEqual([100, 101, 102, 103, 104, 105]);
        const seen = batches.flatMap((b) => b.target);
        expect(seen.length).toBe(dropLast ? 48 : N);
      }
    }
  });

  test('TensorDataset keeps the input dtype (int32 host array, bigint targets) and reads tensors once', async () => {
    const ints = new TensorDataset({ data: Int32Array.from({ length: 20 }, (_, k) => k - 7), shape: [10, 2] }, BigInt64Array.from({ length: 10 }, (_, i) => BigInt(i % 3)));
    const [b] = await sameBatches(ints, { batchSize: 10 });
    expect(b.dtype).toBe('int32');
    expect(b.input).toEqual(Array.from({ length: 20 }, (_, k) => k - 7));
    expect(b.target).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);

    const x = torch.randn([30, 4]);
    const y = torch.randint(0, 5, [30]);
    const fromTensors = new TensorDataset(x, y);
    await fromTensors.load();
    const want = Array.from(await x.data() as Float32Array);
    x.dispose();
    y.dispose();
    const batches = await sameBatches(fromTensors, { batchSize: 30 });
    expect(batches[0].input).toEqual(want);
  });

  test('Subsets and randomSplit parts gather through their index maps, nested too', async () => {
    const ds = indexedTensors();
    const sub = new Subset(ds, [5, 0, 52, 17, 17, 30]);
    const [b] = await sameBatches(sub, { batchSize: 6 });
    expect(b.target).toEqual([5, 0, 52, 17, 17, 30].map((i) => (i * 7) % 10));
    await sameBatches(new Subset(sub, [3, 2, 1]), { batchSize: 2, shuffle: true, seed: 9 });
    const [train, val] = randomSplit(ds, [0.75, 0.25], { seed: 4 });
    await sameBatches(train, { batchSize: 5, shuffle: true, seed: 1, dropLast: true });
    await sameBatches(val, { batchSize: 4 });
  });

  test('a sampler (DistributedSampler, each rank its share, every epoch its order) gathers the same batches', async () => {
    const ds = indexedTensors();
    const shares: number[] = [];
    for (const rank of [0, 1]) {
      // a sampler per loader: setEpoch moves it, and the two paths must each start from epoch 0
      const sampler = () => new DistributedSampler(ds, { numReplicas: 2, rank, shuffle: true, seed: 5 });
      const spy = jest.spyOn(native, 'gatherRows');
      try {
        const fast = [await epochOf(new DataLoader(ds, { batchSize: 6, sampler: sampler() })), await epochOf(new DataLoader(ds, { batchSize: 6, sampler: sampler() }), 1)];
        expect(spy).toHaveBeenCalled();
        const slow = [await epochOf(new DataLoader(new PerSample(ds), { batchSize: 6, sampler: sampler() })), await epochOf(new DataLoader(new PerSample(ds), { batchSize: 6, sampler: sampler() }), 1)];
        expect(fast).toEqual(slow);
        expect(fast[0]).not.toEqual(fast[1]);
        shares.push(fast[0].reduce((n, b) => n + b.target.length, 0));
      } finally {
        spy.mockRestore();
      }
    }
    expect(shares).toEqual([27, 27]); // 53 samples, padded to 54, half each
  });

  test('a subclass that changes get, a collate function or padValue keep the per-sample path', async () => {
    class Doubled extends TensorDataset {
      override async get(i: number): Promise<Sample> {
        const s = await super.get(i);
        return { input: { data: Float32Array.from(s.input.data as Float32Array, (v) => 2 * v), shape: s.input.shape }, target: s.target };
      }
    }
    const spy = jest.spyOn(native, 'gatherRows');
    try {
      const base = indexedTensors();
      const doubled = new Doubled({ data: Float32Array.from({ length: N * 6 }, (_, k) => Math.floor(k / 6) * 100 + (k % 6)), shape: [N, 2, 3] }, Array.from({ length: N }, (_, i) => (i * 7) % 10));
      const [b] = await epochOf(new DataLoader(doubled, { batchSize: 2 }));
      expect(b.input).toEqual([0, 2, 4, 6, 8, 10, 200, 202, 204, 206, 208, 210]);
      await epochOf(new DataLoader(new Subset(doubled, [1, 2]), { batchSize: 2 }));
      const collated = await epochOf(new DataLoader(base, { batchSize: 4, collate: (items) => torch.data.defaultCollate(items) }));
      expect(collated[0].target).toEqual([0, 7, 4, 1]);
      await epochOf(new DataLoader(base, { batchSize: 4, padValue: 0 }));
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });

  describe('FashionMNIST', () => {
    const root = FashionMNIST.defaultRoot;
    const have = fs.existsSync(root);
    const maybe = have ? test : test.skip;

    maybe('default transform and normalize: gathered batches equal the per-sample ones', async () => {
      const test10k = new FashionMNIST({ train: false });
      await test10k.load();
      const first = new Subset(test10k, Array.from({ length: 300 }, (_, i) => i * 7));
      const batches = await sameBatches(first, { batchSize: 64, shuffle: true, seed: 2 });
      expect(batches[0].shape).toEqual([64, 1, 28, 28]);
      expect(batches[0].dtype).toBe('float32');
      const normalized = new FashionMNIST({ train: false, transform: transforms.compose([transforms.toTensor(), transforms.normalize({ mean: [0.286], std: [0.353] })]) });
      await sameBatches(new Subset(normalized, Array.from({ length: 130 }, (_, i) => 9999 - i)), { batchSize: 64, dropLast: true });
    });

    maybe('a random per-sample transform keeps the per-sample path', async () => {
      const spy = jest.spyOn(native, 'gatherRows');
      try {
        const flipped = new FashionMNIST({ train: false, transform: transforms.compose([transforms.randomHorizontalFlip(), transforms.toTensor()]) });
        const batches = await epochOf(new DataLoader(new Subset(flipped, [0, 1, 2, 3]), { batchSize: 4, seed: 0 }));
        expect(batches[0].shape).toEqual([4, 1, 28, 28]);
        expect(spy).not.toHaveBeenCalled();
      } finally {
        spy.mockRestore();
      }
    });
  });
});
