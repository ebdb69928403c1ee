/**
 * `DataLoader`: batches of `{ input, target }` tensors from a dataset, prepared ahead of the
 * consumer. Each batch's inputs are written into one host buffer and become one tensor with one
 * `torch.tensor` call; targets become one int64 tensor.
 */
import * as check from '../check';
import { tensor } from '../creation';
import { native, type DType } from '../native';
import { Tensor } from '../tensor';
import type { Batch, ModelInput } from '../train/batch';
import { checkPadValue, collate as collateStructured, type StructuredSample } from './collate';
import {
  checkDataset, numel, prepareSample, SkippedSampleError,
  type DatasetLike, type HostData, type HostDataConstructor, type ItemContext, type PreparedSample, type RowSource, type Sample,
} from './dataset';
import type { Sampler } from './distributed_sampler';
import { randomSeed, Rng } from './random';

/** Options of a DataLoader. */
export interface DataLoaderOptions<T, I extends ModelInput = Tensor> {
  /** Samples per batch (default 1). */
  batchSize?: number;
  /** A new random order every epoch (default false: dataset order). */
  shuffle?: boolean;
  /**
   * Which indices each epoch reads, in order (a `DistributedSampler`: this rank's share); the
   * loader's epoch (`setEpoch`) is passed on to it. Excludes `shuffle` (the sampler shuffles).
   */
  sampler?: Sampler;
  /** Fixes the shuffle and the random transforms: epoch `e` of seed `s` is the same in every run. */
  seed?: number;
  /** Drop the last batch when it has fewer than `batchSize` samples (default false). */
  dropLast?: boolean;
  /** How many batches to prepare ahead of the one being consumed (default 2; 0 reads on demand). */
  prefetch?: number;
  /** Put batches in page-locked memory (where CUDA is present) so copies to the GPU do not block. */
  pinMemory?: boolean;
  /** Builds a batch from the samples (in order) instead of the default stacking of `{ input, target }`. */
  collate?: (items: T[]) => Batch<I> | Promise<Batch<I>>;
  /**
   * Pads 1-D fields of different lengths to the longest in the batch (one value, or one per field
   * name: `{ input_ids: 0, attention_mask: 0, target: -100 }`); see `data.collate`.
   */
  padValue?: number | { [field: string]: number };
}

/** A sample left out of its batch (see `DataLoader.skipped`). */
export interface SkippedSample {
  /** The dataset index. */
  index: number;
  /** The file, when the dataset names one. */
  path?: string;
  reason: string;
}

const SHUFFLE = 0x53485546;
const AUGMENT = 0x41554700;

/** @internal The batch buffer, reused: `torch.tensor` copies it before it is written again. */
class Scratch {
  private buf: HostData | undefined;
  get(type: HostDataConstructor, n: number): HostData {
    if (!this.buf || this.buf.constructor !== type || this.buf.length < n) this.buf = new type(n);
    return this.buf.subarray(0, n) as HostData;
  }
}

/** @internal Checks that a batch's samples agree on array type and shape; returns the shape. */
function commonShape(samples: PreparedSample[], indices: number[]): number[] {
  const { shape, type } = samples[0];
  samples.forEach((s, k) => {
    if (s.type !== type) {
      throw new Error(`DataLoader: samples ${indices[0]} and ${indices[k]} hold different array types (${type.name}, ${s.type.name})`);
    }
    if (s.shape.length !== shape.length || s.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`DataLoader: samples in a batch must have one shape: sample ${indices[0]} is [${shape}] but sample ${indices[k]} is [${s.shape}]` +
        ' (for images, end the transform with a fixed size: transforms.centerCrop, randomResizedCrop or resize([h, w]))');
    }
  });
  return shape;
}

const targets = (samples: PreparedSample[], pinMemory: boolean) =>
  tensor(BigInt64Array.from(samples, (s) => BigInt(s.target)), { shape: [samples.length], pinMemory });

/** @internal Writes prepared samples into one buffer: one input tensor and one int64 target tensor. */
function assemble(samples: PreparedSample[], indices: number[], scratch: Scratch, pinMemory = false): Batch {
  const shape = commonShape(samples, indices);
  const size = numel(shape);
  const buf = scratch.get(samples[0].type, size * samples.length);
  samples.forEach((s, k) => s.write(buf, k * size));
  const input = tensor(buf, { shape: [samples.length, ...shape], pinMemory });
  return { input, target: targets(samples, pinMemory) };
}

/**
 * @internal A batch of decoded images, written by native code on libuv's threadpool straight into
 * the batch tensor (8-bit HWC through each channel's table to float32 CHW): the main thread only
 * hands over the pixel buffers.
 */
async function assembleImages(samples: PreparedSample[], indices: number[], pinMemory: boolean): Promise<Batch> {
  const shape = commonShape(samples, indices);
  if (shape.length !== 3) throw new Error(`DataLoader: image samples must be [C, H, W], got [${shape}]`);
  const input = new Tensor(await native.collateImages(samples.map((s) => s.planes!), shape, pinMemory));
  return { input, target: targets(samples, pinMemory) };
}

const DTYPES: Record<string, DType> = {
  Float32Array: 'float32', Float64Array: 'float64', Int32Array: 'int32', Int16Array: 'int16', Int8Array: 'int8', Uint8Array: 'uint8', BigInt64Array: 'int64',
};

/**
 * @internal A batch of an in-memory dataset in one native call: rows `indices` of its arrays, by
 * index, into the batch tensors (what stacking the samples one by one gives, without making them).
 */
function gather(rows: RowSource, indices: number[], pinMemory: boolean): Batch {
  // By name, not identity: arrays made by the native addon may come from another realm (jest's vm).
  const dtype = DTYPES[(rows.inputs as unknown as { [Symbol.toStringTag]: string })[Symbol.toStringTag]];
  const map = rows.map;
  const at = Uint32Array.from(indices, (i) => (map ? map[i] : i));
  const [input, target] = native.gatherRows(rows.inputs, dtype, rows.shape, at, rows.luts, rows.targets, pinMemory);
  return { input: new Tensor(input), target: new Tensor(target) };
}

/**
 * Stacks `{ input, target }` samples into a batch: inputs [B, ...shape] (their array type sets the
 * dtype), targets int64 [B]. What the DataLoader does when no `collate` is given.
 *
 * @example
 * const batch = data.defaultCollate([await ds.get(0), await ds.get(1)]);
 */
export function defaultCollate(items: Sample[]): Batch {
  if (!Array.isArray(items) || items.length === 0) throw new TypeError('defaultCollate: expected a non-empty array of { input, target } samples');
  return assemble(items.map((s, k) => prepareSample(s, `defaultCollate: items[${k}]`)), items.map((_, k) => k), new Scratch());
}

function dispose(b: Batch<ModelInput> | null): void {
  if (!b) return;
  const input = b.input as unknown;
  const tensors = input instanceof Tensor ? [input] : Array.isArray(input) ? input : input && typeof input === 'object' ? Object.values(input) : [];
  for (const t of tensors) (t as Tensor | undefined)?.dispose?.();
  b.target?.dispose?.();
}

/** A `sampler` option: something with `length`, `setEpoch` and `indices`, and no `shuffle` beside it. */
function checkSampler(sampler: unknown, shuffle: boolean): Sampler | undefined {
  if (sampler === undefined) return undefined;
  const s = sampler as Sampler;
  if (s === null || typeof s !== 'object' || typeof s.indices !== 'function' || typeof s.setEpoch !== 'function' || !Number.isSafeInteger(s.length)) {
    throw new TypeError('DataLoader: sampler must be a sampler such as data.DistributedSampler (length, setEpoch(epoch), indices())');
  }
  if (shuffle) throw new TypeError('DataLoader: sampler and shuffle exclude each other (the sampler decides the order: DistributedSampler has its own shuffle option)');
  return s;
}

/** A sample that is not one array and a class index: several inputs, named inputs, or an array target. */
function isStructured(s: unknown): boolean {
  if (!s || typeof s !== 'object') return false;
  const { input, target } = s as { input?: unknown; target?: unknown };
  if (Array.isArray(input)) return true;
  if (input && typeof input === 'object' && !('data' in input)) return true;
  return !!target && typeof target === 'object' && ArrayBuffer.isView((target as { data?: unknown }).data);
}

/**
 * Iterates a dataset in batches of tensors, `for await (const { input, target } of loader)`.
 * While a batch is consumed the next `prefetch` batches are being read (images decode in parallel
 * on libuv's threadpool). Every sample is used exactly once per epoch. Each iteration is one
 * epoch; with `shuffle` the order is drawn from `seed` and the epoch, and the epoch also seeds
 * every sample's random transforms, so a seeded run repeats exactly. `train.fit` calls
 * `setEpoch` and disposes each batch; a hand-written loop must dispose the tensors it gets.
 * Samples with several or named inputs, or array targets, are batched by `data.collate` (type the
 * batches with the second type parameter); `padValue` pads variable-length 1-D sequences.
 *
 * @example
 * const loader = new data.DataLoader(trainSet, { batchSize: 32, shuffle: true, seed: 0 });
 * for await (const { input, target } of loader) {
 *   // ... train on input [32, 3, 224, 224] and target [32] ...
 *   input.dispose(); target.dispose();
 * }
 */
export class DataLoader<T = Sample, I extends ModelInput = Tensor> implements AsyncIterable<Batch<I>> {
  readonly dataset: DatasetLike<T>;
  readonly batchSize: number;
  readonly shuffle: boolean;
  /** The sampler given in the options, if any. */
  readonly sampler: Sampler | undefined;
  /** The seed in use (a random one when none was given). */
  readonly seed: number;
  readonly dropLast: boolean;
  readonly prefetch: number;
  readonly pinMemory: boolean;
  readonly padValue?: number | { [field: string]: number };
  private readonly collate?: (items: T[]) => Batch<I> | Promise<Batch<I>>;
  private nextEpoch = 0;
  private readonly scratch = new Scratch();
  private skippedList: SkippedSample[] = [];

  constructor(dataset: DatasetLike<T>, options: DataLoaderOptions<T, I> = {}) {
    this.dataset = checkDataset(dataset, 'DataLoader') as DatasetLike<T>;
    if (options === null || typeof options !== 'object') throw new TypeError('DataLoader: options must be an object');
    const known = ['batchSize', 'shuffle', 'sampler', 'seed', 'dropLast', 'prefetch', 'pinMemory', 'collate', 'padValue'];
    for (const k of Object.keys(options)) {
      if (!known.includes(k)) throw new TypeError(`DataLoader: unknown option '${k}' (known: ${known.join(', ')})`);
    }
    this.batchSize = check.integer(options.batchSize ?? 1, 'DataLoader: batchSize', 1);
    this.shuffle = check.boolean(options.shuffle ?? false, 'DataLoader: shuffle');
    this.sampler = checkSampler(options.sampler, this.shuffle);
    this.seed = options.seed === undefined ? randomSeed() : check.integer(options.seed, 'DataLoader: seed', 0, Number.MAX_SAFE_INTEGER);
    this.dropLast = check.boolean(options.dropLast ?? false, 'DataLoader: dropLast');
    this.prefetch = check.integer(options.prefetch ?? 2, 'DataLoader: prefetch', 0);
    this.pinMemory = check.boolean(options.pinMemory ?? false, 'DataLoader: pinMemory');
    if (options.collate !== undefined && typeof options.collate !== 'function') throw new TypeError('DataLoader: collate must be a function (items) => { input, target }');
    this.collate = options.collate;
    checkPadValue(options.padValue, 'DataLoader');
    this.padValue = options.padValue;
  }

  /** Batches per epoch. */
  get length(): number {
    const n = this.sampler?.length ?? this.dataset.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** The epoch the next iteration will be (counts up by one per iteration). */
  get epoch(): number {
    return this.nextEpoch;
  }

  /**
   * Sets the epoch of the next iteration, so its shuffle and random transforms are those of
   * (`seed`, `epoch`). `train.fit` calls it at the start of each epoch.
   */
  setEpoch(epoch: number): void {
    this.nextEpoch = check.integer(epoch, 'DataLoader.setEpoch: epoch', 0, Number.MAX_SAFE_INTEGER);
  }

  /** The samples skipped during the latest epoch (unreadable images under `onError: 'skip'`). */
  get skipped(): readonly SkippedSample[] {
    return this.skippedList;
  }

  /** The dataset indices of epoch `epoch`, in the order they are batched. */
  order(epoch: number): Uint32Array {
    if (this.sampler) {
      this.sampler.setEpoch(epoch);
      return this.sampler.indices();
    }
    const n = this.dataset.length;
    if (this.shuffle) return new Rng(this.seed, SHUFFLE, epoch).permutation(n);
    const out = new Uint32Array(n);
    for (let i = 0; i < n; i++) out[i] = i;
    return out;
  }

  private async read<R>(index: number, epoch: number, skipped: SkippedSample[], fn: (i: number, ctx: ItemContext) => Promise<R>): Promise<R | null> {
    try {
      return await fn(index, { rng: new Rng(this.seed, AUGMENT, epoch, index) });
    } catch (err) {
      if (err instanceof SkippedSampleError) {
        skipped.push({ index, path: err.path, reason: err.message });
        return null;
      }
      const e = err as Error;
      throw new Error(`DataLoader: sample ${index}: ${e?.message ?? String(err)}`, { cause: err });
    }
  }

  private async batch(indices: number[], epoch: number, skipped: SkippedSample[]): Promise<Batch<I> | null> {
    const ds = this.dataset;
    if (this.collate) {
      const items = (await Promise.all(indices.map((i) => this.read(i, epoch, skipped, (k, ctx) => ds.get(k, ctx))))).filter((x) => x !== null) as T[];
      return items.length ? this.collate(items) : null;
    }
    // A failure to read the rows is left to the per-sample path, which reports it with the sample.
    const rows = this.padValue === undefined && ds.rows ? await ds.rows().catch(() => null) : null;
    if (rows) return gather(rows, indices, this.pinMemory) as Batch<I>;
    type Raw = { structured: StructuredSample };
    const prepare = ds.prepare
      ? (k: number, ctx: ItemContext) => ds.prepare!(k, ctx)
      : async (k: number, ctx: ItemContext): Promise<PreparedSample | Raw> => {
        const s = await ds.get(k, ctx);
        if (this.padValue !== undefined || isStructured(s)) return { structured: s as unknown as StructuredSample };
        return prepareSample(s as unknown as Sample, `dataset.get(${k})`);
      };
    const got = await Promise.all(indices.map((i) => this.read(i, epoch, skipped, prepare)));
    const kept = got.filter((s) => s !== null) as (PreparedSample | Raw)[];
    if (kept.length === 0) return null;
    const keptIndices = indices.filter((_, k) => got[k] !== null);
    const raw = kept.filter((s): s is Raw => 'structured' in s);
    if (raw.length > 0) {
      if (raw.length !== kept.length) throw new Error(`DataLoader: samples ${keptIndices.join(', ')} mix plain { input: array, target: class } samples with structured ones; give every sample one form`);
      try {
        return collateStructured(raw.map((r) => r.structured), { padValue: this.padValue, pinMemory: this.pinMemory }) as Batch<I>;
      } catch (e) {
        throw Object.assign(new Error(`DataLoader: batch of samples ${keptIndices.join(', ')}: ${(e as Error).message}`, { cause: e }),
          (e as { code?: string }).code ? { code: (e as { code?: string }).code } : {});
      }
    }
    const prepared = kept as PreparedSample[];
    if (prepared.every((s) => s.planes !== undefined && s.type === Float32Array)) return assembleImages(prepared, keptIndices, this.pinMemory) as Promise<Batch<I>>;
    return assemble(prepared, keptIndices, this.scratch, this.pinMemory) as Batch<I>;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Batch<I>, void, undefined> {
    const epoch = this.nextEpoch;
    this.nextEpoch = epoch + 1;
    const order = this.order(epoch);
    const total = this.length;
    const skipped: SkippedSample[] = [];
    this.skippedList = skipped;
    const pending: Promise<Batch<I> | null>[] = [];
    let launched = 0;
    const launch = () => {
      const start = launched * this.batchSize;
      const indices = Array.from(order.subarray(start, Math.min(start + this.batchSize, order.length)));
      const p = this.batch(indices, epoch, skipped);
      p.catch(() => undefined); // surfaced when this batch is awaited
      pending.push(p);
      launched++;
    };
    try {
      for (let b = 0; b < total; b++) {
        while (launched < total && launched <= b + this.prefetch) launch();
        const batch = await pending.shift()!;
        if (batch) yield batch;
      }
    } finally {
      // Stopped early (break or error): batches already being read are disposed when they arrive.
      for (const p of pending) p.then(dispose, () => undefined);
    }
    if (skipped.length > 0) {
      const first = skipped[0];
      process.emitWarning(`DataLoader: skipped ${skipped.length} unreadable sample(s) in epoch ${epoch} ` +
        `(first: ${first.path ?? `index ${first.index}`}: ${first.reason}); see loader.skipped`);
    }
  }
}
