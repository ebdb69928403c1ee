/**
 * The dataset protocol: `length` and `async get(i)`. Samples live in JS memory (a TypedArray and
 * its shape); the DataLoader turns a batch of them into tensors with one copy, so no native object
 * is made per sample.
 */
import * as check from '../check';
import { randomSeed, Rng } from './random';
import type { PixelPlanes } from '../transforms/pipeline';

/** The TypedArrays a sample's input can be held in (the batch tensor takes the matching dtype). */
export type HostData = Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | BigInt64Array;

/** The constructor of a `HostData` array. */
export type HostDataConstructor =
  | Float32ArrayConstructor | Float64ArrayConstructor | Int32ArrayConstructor | Int16ArrayConstructor
  | Int8ArrayConstructor | Uint8ArrayConstructor | BigInt64ArrayConstructor;

/** An n-dimensional array in JS memory: `data` holds the elements in row-major order. */
export interface HostArray<D extends HostData = HostData> {
  data: D;
  shape: number[];
}

/**
 * What image and tensor datasets give: the input (for images, CHW float32) and the class index.
 * The DataLoader batches inputs to [B, ...shape] and targets to an int64 [B] tensor.
 */
export interface Sample {
  input: HostArray;
  target: number;
}

/** Passed by the DataLoader to `get`/`prepare`: the random stream of this sample in this epoch. */
export interface ItemContext {
  rng: Rng;
}

/**
 * A sample read but not yet written into its batch: the DataLoader allocates one buffer for the
 * whole batch, then each sample writes its input straight into its slot.
 */
export interface PreparedSample {
  /** Shape of the input, without the batch dimension. */
  shape: number[];
  /** The array type of the input. */
  type: HostDataConstructor;
  target: number;
  /** Writes the input's `numel(shape)` elements into `out` starting at `offset`. */
  write(out: HostData, offset: number): void;
  /**
   * The 8-bit image behind a float32 input (datasets that decode images set it). When every
   * sample of a batch has it, the DataLoader writes the batch natively, off the main thread.
   */
  planes?: PixelPlanes;
}

/**
 * Thrown by a dataset for a sample it skips (an unreadable image under `onError: 'skip'`). The
 * DataLoader leaves the sample out of its batch and lists it in `loader.skipped`.
 *
 * @example
 * try { await ds.get(3); } catch (e) { if (e instanceof data.SkippedSampleError) console.log(e.path); }
 */
export class SkippedSampleError extends Error {
  /** The file of the sample, when it has one. */
  readonly path?: string;
  constructor(message: string, options: { path?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SkippedSampleError';
    this.path = options.path;
  }
}

/**
 * @internal Samples that are rows of two arrays already in memory, read without per-sample work
 * (no transform that draws randomness or resamples): the DataLoader gathers a batch of them by index
 * in one native call. Sample `i` is row `map[i]` (or `i` without a map) of `inputs`, through `luts`
 * when given (8-bit rows, one 256-entry table per channel, as ToTensor and Normalize make).
 */
export interface RowSource {
  inputs: HostData;
  /** One row's shape. */
  shape: number[];
  luts: Float32Array | null;
  targets: BigInt64Array;
  map?: Uint32Array;
}

/** Anything the DataLoader can read: `length` and `get`, optionally the batch fast paths `prepare` and `rows`. */
export interface DatasetLike<T = Sample> {
  readonly length: number;
  get(index: number, context?: ItemContext): Promise<T>;
  prepare?(index: number, context: ItemContext): Promise<PreparedSample>;
  /** @internal The arrays behind the samples, or null when a sample is more than a row of them. */
  rows?(): Promise<RowSource | null>;
}

/** @internal Class targets as int64, as the DataLoader batches them (each through `Number`, as `get` gives it). */
export function int64Targets(targets: ArrayLike<number | bigint>): BigInt64Array {
  return BigInt64Array.from({ length: targets.length }, (_, i) => BigInt(Number(targets[i])));
}

/** @internal Checks that `index` is an integer in [0, length). */
export function checkIndex(index: unknown, length: number, what: string): number {
  if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= length) {
    throw new RangeError(`${what}: index must be an integer in [0, ${length}): got ${String(index)}`);
  }
  return index;
}

/** @internal The number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const HOST_TYPES: HostDataConstructor[] = [Float32Array, Float64Array, Int32Array, Int16Array, Int8Array, Uint8Array, BigInt64Array];

/** @internal Validates a sample's host array and returns its constructor. */
export function hostType(a: unknown, what: string): HostDataConstructor {
  const arr = a as HostArray | undefined;
  if (!arr || typeof arr !== 'object' || !ArrayBuffer.isView(arr.data) || !Array.isArray(arr.shape)) {
    throw new TypeError(`${what} must be { data: TypedArray, shape: number[] }`);
  }
  // By name, not identity: arrays made by the native addon may come from another realm (jest's vm).
  const tag = (arr.data as unknown as { [Symbol.toStringTag]: string })[Symbol.toStringTag];
  const type = HOST_TYPES.find((t) => t.name === tag);
  if (!type) throw new TypeError(`${what}: unsupported array type ${tag ?? arr.data.constructor?.name}`);
  check.shape(arr.shape, `${what}.shape`);
  if (numel(arr.shape) !== arr.data.length) {
    throw new Error(`${what}: shape [${arr.shape}] needs ${numel(arr.shape)} elements but data has ${arr.data.length}`);
  }
  return type;
}

/** @internal Validates a class-index target. */
export function checkTarget(target: unknown, what: string): number {
  if (typeof target !== 'number' || !Number.isInteger(target)) {
    throw new TypeError(`${what}: target must be an integer class index: got ${String(target)}`);
  }
  return target;
}

/** @internal The batch fast path for a sample that is already in memory: one `set` per sample. */
export function prepareSample(sample: Sample, what: string): PreparedSample {
  const hint = ' (for other kinds of items, give the DataLoader a collate function)';
  if (!sample || typeof sample !== 'object') throw new TypeError(`${what}: expected a { input, target } sample, got ${String(sample)}${hint}`);
  let type: HostDataConstructor;
  try {
    type = hostType(sample.input, `${what}: input`);
  } catch (e) {
    throw new TypeError(`${(e as Error).message}${hint}`);
  }
  const target = checkTarget(sample.target, what);
  const { data, shape } = sample.input;
  return { shape, type, target, write: (out, offset) => (out as Float32Array).set(data as Float32Array, offset) };
}

/**
 * A map-style dataset: `length` samples read by index with `async get(i)`. Subclass it and
 * implement both; override `prepare` too when a sample can be written straight into a batch buffer
 * (ImageFolder decodes into it).
 *
 * @example
 * class Squares extends data.Dataset {
 *   get length() { return 100; }
 *   async get(i: number) {
 *     return { input: { data: Float32Array.of(i, i * i), shape: [2] }, target: i % 2 };
 *   }
 * }
 */
export abstract class Dataset<T = Sample> implements DatasetLike<T> {
  abstract readonly length: number;

  /** The sample at `index`; `context.rng` drives random transforms (the DataLoader passes one). */
  abstract get(index: number, context?: ItemContext): Promise<T>;

  /**
   * Reads sample `index` for batching. The default calls `get` and copies the input; datasets that
   * decode (ImageFolder) write into the batch buffer directly.
   */
  async prepare(index: number, context: ItemContext): Promise<PreparedSample> {
    return prepareSample((await this.get(index, context)) as unknown as Sample, `${this.constructor.name}.get(${index})`);
  }
}

/** @internal Checks that `ds` looks like a dataset. */
export function checkDataset(ds: unknown, what: string): DatasetLike<unknown> {
  const d = ds as DatasetLike<unknown>;
  if (!d || typeof d !== 'object' || typeof d.get !== 'function') {
    throw new TypeError(`${what}: expected a dataset (an object with length and async get(i))`);
  }
  check.integer(d.length, `${what}: dataset.length`, 0);
  return d;
}

/**
 * The samples of `dataset` at `indices`, in that order (as `torch.utils.data.Subset`).
 *
 * @example
 * const firstHundred = new data.Subset(ds, Array.from({ length: 100 }, (_, i) => i));
 */
export class Subset<T = Sample> extends Dataset<T> {
  readonly dataset: DatasetLike<T>;
  readonly indices: readonly number[];

  constructor(dataset: DatasetLike<T>, indices: ArrayLike<number>) {
    super();
    const d = checkDataset(dataset, 'Subset') as DatasetLike<T>;
    if (!indices || typeof indices !== 'object' || typeof indices.length !== 'number') {
      throw new TypeError('Subset: indices must be an array of integers');
    }
    const list = Array.from(indices);
    list.forEach((i, k) => checkIndex(i, d.length, `Subset: indices[${k}]`));
    this.dataset = d;
    this.indices = list;
  }

  get length(): number { return this.indices.length; }

  get(index: number, context?: ItemContext): Promise<T> {
    return this.dataset.get(this.indices[checkIndex(index, this.length, 'Subset.get')], context);
  }

  override prepare(index: number, context: ItemContext): Promise<PreparedSample> {
    const i = this.indices[checkIndex(index, this.length, 'Subset.prepare')];
    return this.dataset.prepare ? this.dataset.prepare(i, context) : super.prepare(index, context);
  }

  /** @internal The parent's rows, with this subset's indices mapped through the parent's map. */
  rows(): Promise<RowSource | null> {
    this.rowSource ??= (async () => {
      if (this.get !== Subset.prototype.get || this.prepare !== Subset.prototype.prepare) return null;
      const parent = await this.dataset.rows?.();
      if (!parent) return null;
      const map = Uint32Array.from(this.indices, (i) => (parent.map ? parent.map[i] : i));
      return { ...parent, map };
    })();
    return this.rowSource;
  }

  private rowSource: Promise<RowSource | null> | undefined;
}

/**
 * Several datasets one after another (as `torch.utils.data.ConcatDataset`).
 *
 * @example
 * const both = new data.ConcatDataset([photos2023, photos2024]);
 */
export class ConcatDataset<T = Sample> extends Dataset<T> {
  readonly datasets: readonly DatasetLike<T>[];
  /** `cumulativeSizes[k]`: the number of samples in datasets 0..k. */
  readonly cumulativeSizes: readonly number[];

  constructor(datasets: DatasetLike<T>[]) {
    super();
    if (!Array.isArray(datasets) || datasets.length === 0) throw new TypeError('ConcatDataset: expected a non-empty array of datasets');
    datasets.forEach((d, k) => checkDataset(d, `ConcatDataset: datasets[${k}]`));
    this.datasets = [...datasets];
    let total = 0;
    this.cumulativeSizes = datasets.map((d) => (total += d.length));
  }

  get length(): number { return this.cumulativeSizes[this.cumulativeSizes.length - 1]; }

  /** Which dataset holds `index`, and the index inside it. */
  private locate(index: number, what: string): [DatasetLike<T>, number] {
    checkIndex(index, this.length, what);
    let lo = 0;
    let hi = this.cumulativeSizes.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (index < this.cumulativeSizes[mid]) hi = mid;
      else lo = mid + 1;
    }
    return [this.datasets[lo], index - (lo === 0 ? 0 : this.cumulativeSizes[lo - 1])];
  }

  get(index: number, context?: ItemContext): Promise<T> {
    const [d, i] = this.locate(index, 'ConcatDataset.get');
    return d.get(i, context);
  }

  override prepare(index: number, context: ItemContext): Promise<PreparedSample> {
    const [d, i] = this.locate(index, 'ConcatDataset.prepare');
    return d.prepare ? d.prepare(i, context) : super.prepare(index, context);
  }
}

/**
 * Splits `dataset` at random into non-overlapping subsets (as `torch.utils.data.random_split`):
 * `lengths` are fractions that sum to 1 (the remainder of the rounding goes to the first subsets,
 * one each) or sample counts that sum to `dataset.length`. A `seed` makes the split reproducible.
 *
 * @example
 * const [trainSet, valSet] = data.randomSplit(ds, [0.8, 0.2], { seed: 42 });
 */
export function randomSplit<T>(dataset: DatasetLike<T>, lengths: number[], options: { seed?: number } = {}): Subset<T>[] {
  const d = checkDataset(dataset, 'randomSplit') as DatasetLike<T>;
  if (!Array.isArray(lengths) || lengths.length === 0) throw new TypeError('randomSplit: lengths must be a non-empty array of fractions or counts');
  if (options === null || typeof options !== 'object') throw new TypeError('randomSplit: options must be an object');
  const seed = options.seed === undefined ? randomSeed() : check.integer(options.seed, 'randomSplit: seed', 0, Number.MAX_SAFE_INTEGER);
  lengths.forEach((v, i) => {
    if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) throw new RangeError(`randomSplit: lengths[${i}] must be a non-negative number: got ${String(v)}`);
  });
  const n = d.length;
  const sum = lengths.reduce((a, b) => a + b, 0);
  let counts: number[];
  if (lengths.every(Number.isInteger) && sum === n) {
    counts = [...lengths];
  } else if (Math.abs(sum - 1) < 1e-6 && lengths.every((v) => v <= 1)) {
    counts = lengths.map((f) => Math.floor(n * f));
    const remainder = n - counts.reduce((a, b) => a + b, 0);
    for (let i = 0; i < remainder; i++) counts[i % counts.length]++;
  } else {
    throw new RangeError(`randomSplit: lengths [${lengths}] must be fractions that sum to 1 or counts that sum to the dataset's length (${n})`);
  }
  const perm = new Rng(seed, 0x5350_4c49).permutation(n);
  let start = 0;
  return counts.map((c) => {
    const part = new Subset(d, perm.subarray(start, start + c));
    start += c;
    return part;
  });
}
