/**
 * `Tensor`: a handle to a libtorch tensor. Metadata is synchronous; every computation is queued on
 * the addon's executor in call order and returns a Promise.
 */
import * as check from './check';
import { currentGradMode } from './autograd';
import { track } from './memory';
import { native, type DType, type NativeTensor, type OpArg } from './native';
import { codedError, disposedError, withCode } from './errors';

/** The TypedArray `data()` returns for each dtype. */
export type TensorData = Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | BigInt64Array;

/** `[values, indices]`, also readable as `.values` and `.indices` (PyTorch's named tuple). */
export type ValuesIndices = [Tensor, Tensor] & { values: Tensor; indices: Tensor };

function valuesIndices(pair: Tensor[]): ValuesIndices {
  const out = [pair[0], pair[1]] as ValuesIndices;
  Object.defineProperty(out, 'values', { value: pair[0] });
  Object.defineProperty(out, 'indices', { value: pair[1] });
  return out;
}

/** Options for reductions: `sum({ dim: 1, keepdim: true })`. */
export interface ReduceOptions {
  dim?: number | number[];
  keepdim?: boolean;
}

/**
 * A tensor whose storage lives in libtorch (CPU or CUDA memory).
 *
 * @example
 * const x = torch.tensor([[1, 2], [3, 4]]);
 * const y = await x.matmul(x);
 * console.log(y.shape, await y.data()); // [2, 2] Float32Array [7, 10, 15, 22]
 * y.dispose();
 */
export class Tensor {
  /** @internal */
  readonly handle: NativeTensor;

  /** @internal Wraps a native handle; use `torch.tensor()` or a factory to make tensors. */
  constructor(handle: NativeTensor) {
    if (!(handle instanceof native.Tensor)) throw new TypeError('Tensor: use torch.tensor() or a factory to make tensors');
    this.handle = handle;
    track(this);
  }

  private live(what: string): NativeTensor {
    if (this.handle.disposed) throw disposedError(`${what}: the tensor was disposed`);
    return this.handle;
  }

  /** The size of each dimension. */
  get shape(): number[] { return this.live('shape').shape; }
  /** The element type. */
  get dtype(): DType { return this.live('dtype').dtype; }
  /** `'cpu'` or `'cuda:N'`. */
  get device(): string { return this.live('device').device; }
  /** The number of elements. */
  get numel(): number { return this.live('numel').numel; }
  /** The number of dimensions. */
  get ndim(): number { return this.live('ndim').shape.length; }
  /** Whether autograd records operations on this tensor. */
  get requiresGrad(): boolean { return this.live('requiresGrad').requiresGrad; }
  set requiresGrad(value: boolean) {
    check.boolean(value, 'requiresGrad');
    if (value && !check.isFloating(this.dtype)) {
      throw new TypeError(`requiresGrad: only floating-point tensors can require gradients (this one is ${this.dtype})`);
    }
    this.live('requiresGrad').requiresGrad = value;
  }
  /** True once `dispose()` has run. */
  get disposed(): boolean { return this.handle.disposed; }

  /** Frees the tensor's memory now. A second call does nothing. */
  dispose(): void { this.handle.dispose(); }
  [Symbol.dispose](): void { this.dispose(); }

  /** A copy of the elements as a TypedArray (int64 as BigInt64Array, bool as Uint8Array, half types as Float32Array). */
  data(): Promise<TensorData> {
    try { return this.live('data()').data(); } catch (e) { return Promise.reject(e); }
  }

  /** The value of a one-element tensor. */
  async item(): Promise<number | boolean> {
    if (this.live('item()').numel !== 1) throw new Error(`item(): the tensor has ${this.numel} elements, not 1`);
    return this.handle.item();
  }

  /** Nested JS arrays of the elements (numbers, bigints or booleans), as PyTorch's `tolist()`. */
  async tolist(): Promise<unknown> {
    const flat = Array.from(await this.data() as ArrayLike<number | bigint>);
    const values = this.dtype === 'bool' ? flat.map((v) => v !== 0) : flat;
    const build = (dims: number[], offset: number): unknown => {
      if (dims.length === 0) return values[offset];
      const stride = dims.slice(1).reduce((a, b) => a * b, 1);
      return Array.from({ length: dims[0] }, (_, i) => build(dims.slice(1), offset + i * stride));
    };
    return build(this.shape, 0);
  }

  /** @internal Queues a native op on this tensor (first input) and `others`. */
  async run(name: string, others: Tensor[] = [], args: OpArg[] = []): Promise<Tensor> {
    const out = await native.op(name, [this.live(name), ...others.map((t) => t.live(name))], args, currentGradMode());
    return new Tensor(out as NativeTensor);
  }

  private async runPair(name: string, args: OpArg[]): Promise<ValuesIndices> {
    const out = (await native.op(name, [this.live(name)], args, currentGradMode())) as NativeTensor[];
    return valuesIndices(out.map((h) => new Tensor(h)));
  }

  private binary(name: string, other: Tensor | number): Promise<Tensor> {
    if (typeof other === 'number') return this.run(name, [], [other]);
    if (!(other instanceof Tensor)) return Promise.reject(new TypeError(`${name}: expected a Tensor or a number`));
    try {
      check.broadcast(this.shape, other.shape, name);
    } catch (e) { return Promise.reject(e); }
    return this.run(name, [other]);
  }

  /** Moves and/or casts: `to('cuda')`, `to({ device: 'cpu', dtype: 'float64' })`. */
  async to(target: string | { device?: string; dtype?: DType; copy?: boolean }): Promise<Tensor> {
    const opts = typeof target === 'string' ? (check.DTYPES.includes(target as DType) ? { dtype: target as DType } : { device: target }) : target;
    if (opts === null || typeof opts !== 'object') throw new TypeError('to(): expected a device string or { device, dtype }');
    const device = opts.device === undefined ? null : check.device(opts.device, 'to()');
    const dtype = opts.dtype === undefined ? null : check.dtype(opts.dtype, 'to()');
    return this.run('to', [], [device, dtype, false, opts.copy ?? false]);
  }

  /** Elementwise `this + other` (broadcasting). */
  add(other: Tensor | number): Promise<Tensor> { return this.binary('add', other); }
  /** Elementwise `this - other`. */
  sub(other: Tensor | number): Promise<Tensor> { return this.binary('sub', other); }
  /** Elementwise `this * other`. */
  mul(other: Tensor | number): Promise<Tensor> { return this.binary('mul', other); }
  /** Elementwise `this / other` (true division). */
  div(other: Tensor | number): Promise<Tensor> { return this.binary('div', other); }
  /** Elementwise power. */
  pow(other: Tensor | number): Promise<Tensor> { return this.binary('pow', other); }
  /** Elementwise equality as a bool tensor. */
  eq(other: Tensor | number): Promise<Tensor> { return this.binary('eq', other); }
  ne(other: Tensor | number): Promise<Tensor> { return this.binary('ne', other); }
  lt(other: Tensor | number): Promise<Tensor> { return this.binary('lt', other); }
  le(other: Tensor | number): Promise<Tensor> { return this.binary('le', other); }
  gt(other: Tensor | number): Promise<Tensor> { return this.binary('gt', other); }
  ge(other: Tensor | number): Promise<Tensor> { return this.binary('ge', other); }

  /** Matrix product with PyTorch's `matmul` rules (1-D, 2-D and batched). */
  async matmul(other: Tensor): Promise<Tensor> {
    if (!(other instanceof Tensor)) throw new TypeError('matmul: expected a Tensor');
    const a = this.shape;
    const b = other.shape;
    if (a.length === 0 || b.length === 0) throw new Error('matmul: both arguments need at least one dimension');
    if (this.dtype !== other.dtype) {
      throw withCode('FINETORCH_DTYPE', new TypeError(`matmul: both tensors must have the same dtype: got ${this.dtype} and ${other.dtype}; convert one with .to({ dtype })`));
    }
    const k1 = a[a.length - 1];
    const k2 = b.length === 1 ? b[0] : b[b.length - 2];
    if (k1 !== k2) {
      throw codedError('FINETORCH_SHAPE', `matmul: shapes [${a}] and [${b}] cannot be multiplied (${k1} columns vs ${k2} rows)`);
    }
    return this.run('matmul', [other]);
  }

  neg(): Promise<Tensor> { return this.run('neg'); }
  abs(): Promise<Tensor> { return this.run('abs'); }
  exp(): Promise<Tensor> { return this.run('exp'); }
  log(): Promise<Tensor> { return this.run('log'); }
  sqrt(): Promise<Tensor> { return this.run('sqrt'); }
  relu(): Promise<Tensor> { return this.run('relu'); }
  sigmoid(): Promise<Tensor> { return this.run('sigmoid'); }
  tanh(): Promise<Tensor> { return this.run('tanh'); }
  /** Clamps into `[min, max]` (either may be omitted). */
  clamp(opts: { min?: number; max?: number }): Promise<Tensor> {
    return this.run('clamp', [], [opts.min ?? null, opts.max ?? null]);
  }

  private reduceArgs(dimOrOpts: number | number[] | ReduceOptions | undefined, keepdim: boolean | undefined, what: string): OpArg[] {
    const opts: ReduceOptions = typeof dimOrOpts === 'object' && !Array.isArray(dimOrOpts) ? dimOrOpts : { dim: dimOrOpts, keepdim };
    if (opts.dim === undefined) return [null, false];
    const dims = (Array.isArray(opts.dim) ? opts.dim : [opts.dim]).map((d) => check.dim(d, this.ndim, `${what}: dim`));
    return [dims, opts.keepdim ?? false];
  }

  /** Sum of all elements, or along `dim`: `sum()`, `sum(1)`, `sum({ dim: [0, 1], keepdim: true })`. */
  sum(dim?: number | number[] | ReduceOptions, keepdim?: boolean): Promise<Tensor> {
    try { return this.run('sum', [], this.reduceArgs(dim, keepdim, 'sum')); } catch (e) { return Promise.reject(e); }
  }
  /** Mean of all elements, or along `dim` (floating-point tensors). */
  mean(dim?: number | number[] | ReduceOptions, keepdim?: boolean): Promise<Tensor> {
    try {
      if (!check.isFloating(this.dtype)) throw new TypeError(`mean: needs a floating-point tensor, got ${this.dtype}`);
      return this.run('mean', [], this.reduceArgs(dim, keepdim, 'mean'));
    } catch (e) { return Promise.reject(e); }
  }

  /** The largest element; with `dim`, `[values, indices]` along it. */
  max(): Promise<Tensor>;
  max(dim: number, keepdim?: boolean): Promise<ValuesIndices>;
  max(dim?: number, keepdim = false): Promise<Tensor | ValuesIndices> {
    if (dim === undefined) return this.run('max');
    try { return this.runPair('max', [check.dim(dim, this.ndim, 'max: dim'), keepdim]); } catch (e) { return Promise.reject(e); }
  }
  /** The smallest element; with `dim`, `[values, indices]` along it. */
  min(): Promise<Tensor>;
  min(dim: number, keepdim?: boolean): Promise<ValuesIndices>;
  min(dim?: number, keepdim = false): Promise<Tensor | ValuesIndices> {
    if (dim === undefined) return this.run('min');
    try { return this.runPair('min', [check.dim(dim, this.ndim, 'min: dim'), keepdim]); } catch (e) { return Promise.reject(e); }
  }
  /** Index of the largest element (flattened), or along `dim`. */
  argmax(dim?: number, keepdim = false): Promise<Tensor> {
    try { return this.run('argmax', [], [dim === undefined ? null : check.dim(dim, this.ndim, 'argmax: dim'), keepdim]); } catch (e) { return Promise.reject(e); }
  }
  argmin(dim?: number, keepdim = false): Promise<Tensor> {
    try { return this.run('argmin', [], [dim === undefined ? null : check.dim(dim, this.ndim, 'argmin: dim'), keepdim]); } catch (e) { return Promise.reject(e); }
  }
  /** The `k` largest (or smallest) elements along `dim` (default last) as `[values, indices]`. */
  topk(k: number, opts: { dim?: number; largest?: boolean; sorted?: boolean } = {}): Promise<ValuesIndices> {
    try {
      const d = check.dim(opts.dim ?? -1, this.ndim, 'topk: dim');
      check.integer(k, 'topk: k', 0, this.ndim === 0 ? 1 : this.shape[d]);
      return this.runPair('topk', [k, d, opts.largest ?? true, opts.sorted ?? true]);
    } catch (e) { return Promise.reject(e); }
  }

  /** Softmax along `dim`. */
  softmax(dim: number): Promise<Tensor> {
    try { return this.run('softmax', [], [check.dim(dim, this.ndim, 'softmax: dim')]); } catch (e) { return Promise.reject(e); }
  }
  /** Log-softmax along `dim`. */
  logSoftmax(dim: number): Promise<Tensor> {
    try { return this.run('logSoftmax', [], [check.dim(dim, this.ndim, 'logSoftmax: dim')]); } catch (e) { return Promise.reject(e); }
  }

  /** A tensor with the same elements in a new shape (one dimension may be -1). */
  reshape(...shape: number[] | [number[]]): Promise<Tensor> {
    try {
      const s = (Array.isArray(shape[0]) ? shape[0] : shape) as number[];
      const known = s.filter((d) => d !== -1);
      s.forEach((d, i) => check.integer(d, `reshape: shape[${i}]`, -1));
      const product = known.reduce((a, b) => a * b, 1);
      const inferred = s.length - known.length;
      if (inferred > 1) throw new Error('reshape: only one dimension can be -1');
      if (inferred === 0 ? product !== this.numel : product === 0 || this.numel % product !== 0) {
        throw new Error(`reshape: shape [${s}] is invalid for a tensor of ${this.numel} elements (shape [${this.shape}])`);
      }
      return this.run('reshape', [], [s]);
    } catch (e) { return Promise.reject(e); }
  }
  /** Alias of `reshape`. */
  view(...shape: number[] | [number[]]): Promise<Tensor> { return this.reshape(...shape); }
  /** Reorders dimensions: `permute(0, 2, 3, 1)`. */
  permute(...dims: number[] | [number[]]): Promise<Tensor> {
    try {
      const d = ((Array.isArray(dims[0]) ? dims[0] : dims) as number[]).map((x) => check.dim(x, this.ndim, 'permute: dim'));
      if (d.length !== this.ndim || new Set(d).size !== d.length) {
        throw new Error(`permute: [${d}] is not a permutation of the ${this.ndim} dimensions of a tensor of shape [${this.shape}]`);
      }
      return this.run('permute', [], [d]);
    } catch (e) { return Promise.reject(e); }
  }
  /** Swaps two dimensions. */
  transpose(dim0: number, dim1: number): Promise<Tensor> {
    try { return this.run('transpose', [], [check.dim(dim0, this.ndim), check.dim(dim1, this.ndim)]); } catch (e) { return Promise.reject(e); }
  }
  /** Flattens dimensions `startDim..endDim` into one. */
  flatten(startDim = 0, endDim = -1): Promise<Tensor> {
    try { return this.run('flatten', [], [check.dim(startDim, this.ndim), check.dim(endDim, this.ndim)]); } catch (e) { return Promise.reject(e); }
  }
  unsqueeze(dim: number): Promise<Tensor> {
    try { return this.run('unsqueeze', [], [check.dim(dim, this.ndim + 1, 'unsqueeze: dim')]); } catch (e) { return Promise.reject(e); }
  }
  squeeze(dim?: number): Promise<Tensor> {
    try { return this.run('squeeze', [], [dim === undefined ? null : check.dim(dim, this.ndim, 'squeeze: dim')]); } catch (e) { return Promise.reject(e); }
  }
  /** Elements `start..end` (exclusive, step `step`) along `dim`, as Python's `t[start:end:step]`. */
  slice(dim: number, start?: number, end?: number, step = 1): Promise<Tensor> {
    try {
      const d = check.dim(dim, this.ndim, 'slice: dim');
      check.integer(step, 'slice: step', 1);
      if (start !== undefined) check.integer(start, 'slice: start');
      if (end !== undefined) check.integer(end, 'slice: end');
      return this.run('slice', [], [d, start ?? null, end ?? null, step]);
    } catch (e) { return Promise.reject(e); }
  }
  /** Picks entries along `dim` by an int64/int32 index tensor. */
  async indexSelect(dim: number, index: Tensor): Promise<Tensor> {
    const d = check.dim(dim, this.ndim, 'indexSelect: dim');
    if (!(index instanceof Tensor) || (index.dtype !== 'int64' && index.dtype !== 'int32') || index.ndim > 1) {
      throw new TypeError('indexSelect: index must be a 1-D int64 or int32 Tensor');
    }
    const values = await index.data();
    const size = this.shape[d];
    values.forEach((v: number | bigint, i: number) => {
      const n = Number(v);
      if (n < 0 || n >= size) throw withCode('FINETORCH_INDEX', new RangeError(`indexSelect: index ${n} at position ${i} is out of range for dimension ${d} of size ${size} (indices must be in [0, ${size}))`));
    });
    return this.run('indexSelect', [index], [d]);
  }
  /**
   * Backpropagates from this (scalar) tensor into every leaf that requires grad.
   *
   * @example
   * const loss = await lossFn.forward(await model.forward(x), y);
   * await loss.backward();
   */
  async backward(): Promise<void> {
    if (this.live('backward()').numel !== 1) throw new Error(`backward(): needs a scalar (one-element) tensor, got shape [${this.shape}]`);
    if (!this.requiresGrad) throw new Error('backward(): this tensor does not require grad (was it computed under noGrad, or from frozen parameters only?)');
    await native.op('backward', [this.handle], [], true);
  }

  /** The accumulated gradient (PyTorch's `t.grad`), or null when there is none yet. */
  async grad(): Promise<Tensor | null> {
    const out = await native.op('grad', [this.live('grad()')], [], false);
    return out === null ? null : new Tensor(out as NativeTensor);
  }

  /** A copy with its own storage. */
  clone(): Promise<Tensor> { return this.run('clone'); }
  /** The same data, outside autograd. */
  detach(): Promise<Tensor> { return this.run('detach'); }
  /** A contiguous copy (or this data if already contiguous). */
  contiguous(): Promise<Tensor> { return this.run('contiguous'); }

  /** A short description for console.log. */
  toString(): string {
    return this.disposed ? 'Tensor(disposed)' : `Tensor(shape=[${this.shape}], dtype=${this.dtype}, device=${this.device})`;
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string { return this.toString(); }
}

function many(tensors: Tensor[], what: string): Tensor[] {
  if (!Array.isArray(tensors) || tensors.length === 0 || !tensors.every((t) => t instanceof Tensor)) {
    throw new TypeError(`${what}: expected a non-empty array of Tensors`);
  }
  return tensors;
}

/**
 * Concatenates tensors along an existing dimension.
 *
 * @example
 * const ab = await torch.cat([a, b], 0);
 */
export async function cat(tensors: Tensor[], dim = 0): Promise<Tensor> {
  const ts = many(tensors, 'cat');
  const d = check.dim(dim, ts[0].ndim, 'cat: dim');
  ts.forEach((t, i) => {
    if (t.ndim !== ts[0].ndim || t.shape.some((s, j) => j !== d && s !== ts[0].shape[j])) {
      throw new Error(`cat: tensor ${i} has shape [${t.shape}], which does not match [${ts[0].shape}] outside dimension ${d}`);
    }
  });
  return ts[0].run('cat', ts.slice(1), [d]);
}

/**
 * Stacks same-shaped tensors along a new dimension.
 *
 * @example
 * const batch = await torch.stack([x0, x1, x2]); // [3, ...x0.shape]
 */
export async function stack(tensors: Tensor[], dim = 0): Promise<Tensor> {
  const ts = many(tensors, 'stack');
  const d = check.dim(dim, ts[0].ndim + 1, 'stack: dim');
  ts.forEach((t, i) => {
    if (t.shape.join() !== ts[0].shape.join()) throw new Error(`stack: tensor ${i} has shape [${t.shape}], expected [${ts[0].shape}]`);
  });
  return ts[0].run('stack', ts.slice(1), [d]);
}
