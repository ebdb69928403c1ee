/**
 * Making tensors: `tensor()` from JS data (synchronous, a copy) and PyTorch's factories.
 */
import * as check from './check';
import { native, type DType } from './native';
import { Tensor } from './tensor';

/** Options shared by `tensor()` and the factories. */
export interface TensorOptions {
  dtype?: DType;
  device?: string;
  requiresGrad?: boolean;
}

export type NestedArray<T> = T | NestedArray<T>[];
export type TensorLike =
  | Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint8ClampedArray | BigInt64Array
  | NestedArray<number> | NestedArray<bigint> | NestedArray<boolean>;

const TYPED: [new (...a: never[]) => ArrayBufferView, DType][] = [
  [Float32Array, 'float32'], [Float64Array, 'float64'], [Int32Array, 'int32'], [Int16Array, 'int16'],
  [Int8Array, 'int8'], [Uint8Array, 'uint8'], [Uint8ClampedArray, 'uint8'], [BigInt64Array, 'int64'],
];

function flatten(data: unknown): { shape: number[]; flat: unknown[] } {
  const shape: number[] = [];
  for (let level: unknown = data; Array.isArray(level); level = level[0]) shape.push(level.length);
  const flat: unknown[] = [];
  const walk = (x: unknown, depth: number, path: number[]): void => {
    if (depth === shape.length) {
      if (Array.isArray(x)) throw new Error(`tensor(): ragged nested array: element at [${path}] is an array, expected a scalar`);
      flat.push(x);
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[depth]) {
      throw new Error(`tensor(): ragged nested array: element at [${path}] should have length ${shape[depth]}`);
    }
    x.forEach((y, i) => walk(y, depth + 1, [...path, i]));
  };
  walk(data, 0, []);
  return { shape, flat };
}

function fromScalars(flat: unknown[], want: DType | undefined): { buf: ArrayBufferView; src: DType } {
  const kinds = new Set(flat.map((x) => typeof x));
  if (kinds.size > 1) throw new TypeError(`tensor(): mixed element types (${[...kinds].join(', ')})`);
  const kind = kinds.values().next().value ?? 'number';
  if (kind === 'bigint') return { buf: BigInt64Array.from(flat as bigint[]), src: 'int64' };
  if (kind === 'boolean') return { buf: Uint8Array.from(flat as boolean[], (b) => (b ? 1 : 0)), src: 'bool' };
  if (kind !== 'number') throw new TypeError(`tensor(): elements must be numbers, bigints or booleans, got ${kind}`);
  const nums = flat as number[];
  // JS cannot tell 1 from 1.0: numbers are float32 unless a dtype says otherwise.
  if (want === undefined || want === 'float32') return { buf: Float32Array.from(nums), src: 'float32' };
  if (want === 'int64') return { buf: BigInt64Array.from(nums, (v) => BigInt(Math.trunc(v))), src: 'int64' };
  return { buf: Float64Array.from(nums), src: 'float64' };
}

/**
 * A new tensor holding a copy of `data`: a TypedArray (its dtype follows the array type), nested
 * arrays of numbers (float32 by default), bigints (int64) or booleans (bool), or a scalar.
 * Synchronous: nothing is computed.
 *
 * @example
 * const x = torch.tensor(new Float32Array(6), { shape: [2, 3] });
 * const y = torch.tensor([[1, 2], [3, 4]], { dtype: 'float64', requiresGrad: true });
 * const labels = torch.tensor([0n, 3n, 1n]); // int64
 *
 * `pinMemory: true` puts a CPU tensor in page-locked memory (where CUDA is present), so copying
 * it to the GPU does not block.
 */
export function tensor(data: TensorLike | number | bigint | boolean, options: TensorOptions & { shape?: number[]; pinMemory?: boolean } = {}): Tensor {
  if (options === null || typeof options !== 'object') throw new TypeError('tensor(): options must be an object');
  const want = options.dtype === undefined ? undefined : check.dtype(options.dtype, 'tensor()');
  const device = check.device(options.device ?? 'cpu', 'tensor()');
  const requiresGrad = options.requiresGrad ?? false;
  let buf: ArrayBufferView;
  let src: DType;
  let shape: number[];
  const typed = ArrayBuffer.isView(data) ? TYPED.find(([ctor]) => data instanceof ctor) : undefined;
  if (ArrayBuffer.isView(data)) {
    if (!typed) throw new TypeError(`tensor(): unsupported TypedArray ${data.constructor.name}`);
    buf = data;
    src = typed[1];
    shape = [(data as unknown as { length: number }).length];
  } else if (Array.isArray(data) || ['number', 'bigint', 'boolean'].includes(typeof data)) {
    const f = flatten(data);
    ({ buf, src } = fromScalars(f.flat, want));
    shape = f.shape;
  } else {
    throw new TypeError(`tensor(): cannot make a tensor from ${data === null ? 'null' : typeof data}`);
  }
  const dtype = want ?? src;
  if (options.shape !== undefined) {
    const s = check.shape(options.shape, 'tensor(): shape');
    const n = s.reduce((a, b) => a * b, 1);
    const have = shape.reduce((a, b) => a * b, 1);
    if (n !== have) throw new Error(`tensor(): shape [${s}] needs ${n} elements but the data has ${have}`);
    shape = s;
  }
  if (requiresGrad && !check.isFloating(dtype)) {
    throw new TypeError(`tensor(): only floating-point tensors can require gradients (dtype is ${dtype})`);
  }
  return new Tensor(native.fromData(buf, shape, src, dtype, device, requiresGrad, options.pinMemory ?? false));
}

function make(kind: string, shape: number[], options: TensorOptions, a?: number, b?: number, c?: number): Tensor {
  const what = `${kind}()`;
  check.shape(shape, `${what}: shape`);
  const dtype = check.dtype(options.dtype ?? 'float32', what);
  const device = check.device(options.device ?? 'cpu', what);
  if (options.requiresGrad && !check.isFloating(dtype)) {
    throw new TypeError(`${what}: only floating-point tensors can require gradients (dtype is ${dtype})`);
  }
  return new Tensor(native.factory(kind, shape, dtype, device, options.requiresGrad ?? false, a, b, c));
}

/** A tensor of zeros. @example const z = torch.zeros([2, 3]); */
export function zeros(shape: number[], options: TensorOptions = {}): Tensor { return make('zeros', shape, options); }
/** A tensor of ones. @example const o = torch.ones([4], { dtype: 'int64' }); */
export function ones(shape: number[], options: TensorOptions = {}): Tensor { return make('ones', shape, options); }
/** Uninitialised memory of the given shape. @example const e = torch.empty([1024]); */
export function empty(shape: number[], options: TensorOptions = {}): Tensor { return make('empty', shape, options); }
/** A tensor filled with `value`. @example const f = torch.full([2, 2], 7); */
export function full(shape: number[], value: number, options: TensorOptions = {}): Tensor {
  return make('full', shape, options, check.number(value, 'full(): value'));
}
/** Uniform samples in [0, 1). @example torch.manualSeed(0); const r = torch.rand([3]); */
export function rand(shape: number[], options: TensorOptions = {}): Tensor {
  if (options.dtype && !check.isFloating(options.dtype)) throw new TypeError('rand(): dtype must be floating-point');
  return make('rand', shape, options);
}
/** Standard normal samples. @example const w = torch.randn([5, 512]); */
export function randn(shape: number[], options: TensorOptions = {}): Tensor {
  if (options.dtype && !check.isFloating(options.dtype)) throw new TypeError('randn(): dtype must be floating-point');
  return make('randn', shape, options);
}
/** Integers in [low, high), int64 by default (PyTorch's order). @example const y = torch.randint(0, 5, [16]); */
export function randint(low: number, high: number, shape: number[], options: TensorOptions = {}): Tensor {
  check.integer(low, 'randint(): low');
  check.integer(high, 'randint(): high');
  if (high <= low) throw new RangeError(`randint(): high (${high}) must be greater than low (${low})`);
  return make('randint', shape, { dtype: 'int64', ...options }, low, high);
}
/**
 * Values from `start` to `end` (exclusive) by `step`: `arange(5)`, `arange(1, 4)`, `arange(0, 1, 0.25)`.
 * Integer arguments give int64, as in PyTorch.
 *
 * @example
 * const idx = torch.arange(10); // int64 [0..9]
 */
export function arange(start: number, end?: number, step = 1, options: TensorOptions = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  check.number(start, 'arange(): start');
  check.number(end, 'arange(): end');
  check.number(step, 'arange(): step');
  if (step === 0) throw new RangeError('arange(): step must be non-zero');
  if ((end - start) / step < 0) throw new RangeError(`arange(): cannot go from ${start} to ${end} by ${step}`);
  if (options.dtype === 'bool') throw new TypeError('arange(): dtype cannot be bool');
  const integral = [start, end, step].every(Number.isInteger);
  return make('arange', [], { dtype: integral ? 'int64' : 'float32', ...options }, start, end, step);
}
