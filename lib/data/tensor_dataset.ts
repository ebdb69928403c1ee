/**
 * `TensorDataset`: samples sliced from arrays the caller already holds. Tensors are read into JS
 * memory once (one `await t.data()` each, on first use); samples are views into those copies.
 */
import * as check from '../check';
import { Tensor } from '../tensor';
import { checkIndex, Dataset, hostType, int64Targets, numel, type HostArray, type HostData, type RowSource, type Sample } from './dataset';
import { disposedError } from '../errors';

/** What TensorDataset accepts: a tensor, a host array `{ data, shape }`, or (targets) a 1-D array. */
export type TensorSource = Tensor | HostArray | HostData | number[];

const INTEGER_DTYPES = ['int64', 'int32', 'int16', 'int8', 'uint8'];

function shapeOf(src: TensorSource, what: string): number[] {
  if (src instanceof Tensor) return src.shape;
  if (Array.isArray(src)) return [src.length];
  if (ArrayBuffer.isView(src)) return [(src as HostData).length];
  hostType(src, what);
  return (src as HostArray).shape;
}

/**
 * Pairs of `(inputs[i], targets[i])`, as `torch.utils.data.TensorDataset(x, y)`: `inputs` is
 * [N, ...] of any dtype (float16/bfloat16 become float32), `targets` [N] integer class indices.
 * Tensors may be passed directly: each is copied to JS memory once, on the first `get` (or
 * `await ds.load()`), after which it may be disposed. Host arrays are used without a copy.
 *
 * @example
 * const x = torch.randn([100, 4]);
 * const y = torch.randint(0, 3, [100]);
 * const ds = new data.TensorDataset(x, y);
 * await ds.load(); x.dispose(); y.dispose();
 * const { input, target } = await ds.get(0); // input: { data: Float32Array(4), shape: [4] }
 */
export class TensorDataset extends Dataset<Sample> {
  readonly length: number;
  /** Shape of one input (without the first dimension). */
  readonly inputShape: readonly number[];
  private sources: [TensorSource, TensorSource] | undefined;
  private loaded: Promise<{ inputs: HostData; targets: ArrayLike<number | bigint> }> | undefined;

  constructor(...tensors: TensorSource[]) {
    super();
    if (tensors.length !== 2) {
      throw new TypeError(`TensorDataset: expected (inputs, targets): got ${tensors.length} argument(s); targets are the class indices of each input`);
    }
    const [x, y] = tensors;
    const xs = shapeOf(x, 'TensorDataset: inputs');
    const ys = shapeOf(y, 'TensorDataset: targets');
    if (xs.length === 0) throw new Error('TensorDataset: inputs must have at least one dimension (the sample index)');
    if (ys.length !== 1) throw new Error(`TensorDataset: targets must be 1-D [N] class indices: got shape [${ys}]`);
    if (xs[0] !== ys[0]) throw new Error(`TensorDataset: inputs have ${xs[0]} samples but targets have ${ys[0]}`);
    if (y instanceof Tensor && !INTEGER_DTYPES.includes(y.dtype)) {
      throw new TypeError(`TensorDataset: targets must be integer class indices (int64, int32, ...): got ${y.dtype}`);
    }
    if (Array.isArray(y)) y.forEach((v, i) => check.integer(v, `TensorDataset: targets[${i}]`));
    else if (ArrayBuffer.isView(y) && (y instanceof Float32Array || y instanceof Float64Array)) {
      throw new TypeError(`TensorDataset: targets must be integer class indices: got a ${y.constructor.name}`);
    }
    this.length = xs[0];
    this.inputShape = xs.slice(1);
    this.sources = [x, y];
  }

  /** Copies tensor arguments to JS memory (once); `get` calls it. */
  async load(): Promise<void> {
    await this.ensure();
  }

  private ensure(): Promise<{ inputs: HostData; targets: ArrayLike<number | bigint> }> {
    this.loaded ??= (async () => {
      const [x, y] = this.sources!;
      const read = async (s: TensorSource, what: string): Promise<HostData | number[]> => {
        if (s instanceof Tensor) {
          if (s.disposed) throw disposedError(`TensorDataset: the ${what} tensor was disposed before it was read; keep it until await ds.load()`);
          return s.data();
        }
        if (Array.isArray(s) || ArrayBuffer.isView(s)) return s as HostData | number[];
        return (s as HostArray).data;
      };
      const [inputs, targets] = await Promise.all([read(x, 'inputs'), read(y, 'targets')]);
      if (Array.isArray(inputs)) throw new TypeError('TensorDataset: inputs must be a tensor or { data, shape }');
      this.sources = undefined;
      return { inputs, targets };
    })();
    return this.loaded;
  }

  /**
   * @internal The inputs and targets, for the DataLoader's one-call gather of a batch; null when a
   * subclass changes what a sample is (overrides `get` or `prepare`).
   */
  rows(): Promise<RowSource | null> {
    this.rowSource ??= (async () => {
      if (this.get !== TensorDataset.prototype.get || this.prepare !== Dataset.prototype.prepare) return null;
      const { inputs, targets } = await this.ensure();
      return { inputs, shape: [...this.inputShape], luts: null, targets: int64Targets(targets) };
    })();
    return this.rowSource;
  }

  private rowSource: Promise<RowSource | null> | undefined;

  async get(index: number): Promise<Sample> {
    checkIndex(index, this.length, 'TensorDataset.get');
    const { inputs, targets } = await this.ensure();
    const size = numel(this.inputShape);
    const data = inputs.subarray(index * size, (index + 1) * size) as HostData;
    const t = Number(targets[index]);
    return { input: { data, shape: [...this.inputShape] }, target: t };
  }
}
