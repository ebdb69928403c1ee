/**
 * Making tensors: `tensor()` from JS data (synchronous, a copy) and PyTorch's factories. A CPU
 * factory call whose tensor could never fit in the machine's memory is an Error from that call.
 */
import * as os from 'os';
import * as check from './check';
import { native, type DType } from './native';
import { Tensor } from './tensor';
import { withCode } from './errors';

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

/** The integers each dtype holds; int64's upper end is exclusive (2^63 - 1 is no double). */
const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  uint8: [0, 255], int8: [-128, 127], int16: [-32768, 32767], int32: [-2147483648, 2147483647], int64: [-(2 ** 63), 2 ** 63],
};

const ITEM_BYTES: Record<DType, number> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
};

/** `[1, 2]`: where flat element `i` sits in a tensor of `shape`. */
function indexOf(i: number, shape: number[]): string {
  const at: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    at.unshift(i % shape[d]);
    i = Math.floor(i / shape[d]);
  }
  return `[${at.join(', ')}]`;
}

/**
 * PyTorch refuses a value the target integer dtype cannot hold ("value cannot be converted to
 * type uint8 without overflow") where a cast would wrap it: 300 as uint8 would become 44. bool
 * and floating dtypes take any value (nonzero is true; too large is Infinity), as in PyTorch.
 */
function checkFits(values: ArrayLike<number | bigint>, src: DType, dtype: DType, shape: number[]): void {
  const range = INT_RANGE[dtype];
  if (!range || src === dtype) return;
  const [lo, hi] = range;
  const from = INT_RANGE[src] ?? (src === 'bool' ? [0, 1] : undefined);
  if (from && from[0] >= lo && from[1] <= hi) return; // every value of the source type fits
  const top = dtype === 'int64' ? `${2n ** 63n - 1n}` : String(hi);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    const bad = typeof v === 'bigint' ? v < BigInt(lo) || v >= BigInt(hi) + (dtype === 'int64' ? 0n : 1n) : !(v >= lo && (dtype === 'int64' ? v < hi : v <= hi));
    if (!bad) continue;
    const shown = typeof v === 'bigint' ? `${v}n` : String(v);
    const why = typeof v === 'number' && !Number.isFinite(v)
      ? `${dtype} has no NaN or Infinity`
      : `out of the range of ${dtype} [${lo === -(2 ** 63) ? `${-(2n ** 63n)}` : lo}, ${top}]`;
    throw new RangeError(`tensor(): element ${indexOf(i, shape)} is ${shown}, which cannot be converted to ${dtype} without overflow (${why})`);
  }
}

/** Elements of one kind (number, bigint or boolean), or an Error that shows the first one that is wrong. */
function checkScalars(flat: unknown[], shape: number[]): void {
  const kinds = new Set(flat.map((x) => typeof x));
  const i = flat.findIndex((x) => typeof x !== 'number' && typeof x !== 'bigint' && typeof x !== 'boolean');
  if (kinds.size <= 1 && i < 0) return;
  const head = kinds.size > 1
    ? `tensor(): mixed element types (${[...kinds].join(', ')})`
    : `tensor(): elements must be numbers, bigints or booleans, got ${[...kinds][0]}`;
  if (i < 0) throw new TypeError(head);
  const x = flat[i];
  const hint = typeof x === 'string' && x.trim() !== '' && !Number.isNaN(Number(x)) ? '; convert it with Number()' : '';
  throw new TypeError(`${head}: element ${indexOf(i, shape)} is ${check.describe(x)}${hint}`);
}

/** True for the buffer of a TypedArray whose memory was transferred away (postMessage, structuredClone). */
function isDetached(buffer: ArrayBufferLike): boolean {
  const detached = (buffer as { detached?: boolean }).detached; // Node 22+; older Nodes throw on a view of one
  if (detached !== undefined) return detached;
  if (buffer.byteLength !== 0 || !(buffer instanceof ArrayBuffer)) return false;
  try {
    new Uint8Array(buffer);
    return false;
  } catch {
    return true;
  }
}

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

function fromScalars(flat: unknown[], want: DType | undefined, shape: number[]): { buf: ArrayBufferView; src: DType } {
  checkScalars(flat, shape);
  const kind = flat.length ? typeof flat[0] : 'number';
  if (kind === 'bigint') {
    // BigInt64Array.from would wrap a bigint beyond 64 bits without a word.
    checkFits(flat as bigint[], 'float64', 'int64', shape);
    return { buf: BigInt64Array.from(flat as bigint[]), src: 'int64' };
  }
  if (kind === 'boolean') return { buf: Uint8Array.from(flat as boolean[], (b) => (b ? 1 : 0)), src: 'bool' };
  const nums = flat as number[];
  // JS cannot tell 1 from 1.0: numbers are float32 unless a dtype says otherwise.
  if (want === undefined || want === 'float32') return { buf: Float32Array.from(nums), src: 'float32' };
  if (want === 'int64') {
    checkFits(nums, 'float64', 'int64', shape);
    return { buf: BigInt64Array.from(nums, (v) => BigInt(Math.trunc(v))), src: 'int64' };
  }
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
 *
 * As in PyTorch, a value the integer `dtype` cannot hold (300 as uint8, 2 ** 40 as int32, NaN as
 * int64) is an Error naming the element, not a wrapped value; so is a string among the elements
 * and a TypedArray whose memory was transferred away. A TypedArray over a SharedArrayBuffer is
 * copied first.
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
    if (isDetached(data.buffer)) {
      throw new TypeError(`tensor(): the ${data.constructor.name}'s ArrayBuffer is detached (its memory was transferred, ` +
        'e.g. by postMessage or structuredClone with transfer); make the tensor before transferring, or from a copy');
    }
    src = typed[1];
    shape = [(data as unknown as { length: number }).length];
    // The addon reads only ArrayBuffer memory; another thread may write a SharedArrayBuffer anyway.
    buf = data.buffer instanceof ArrayBuffer ? data : new (typed[0] as unknown as new (src: ArrayBufferView) => ArrayBufferView)(data);
    if (want !== undefined) checkFits(buf as unknown as ArrayLike<number | bigint>, src, want, shape);
  } else if (Array.isArray(data) || ['number', 'bigint', 'boolean'].includes(typeof data)) {
    const f = flatten(data);
    ({ buf, src } = fromScalars(f.flat, want, f.shape));
    if (want !== undefined) checkFits(buf as unknown as ArrayLike<number | bigint>, src, want, f.shape);
    shape = f.shape;
  } else if ((data as unknown) instanceof ArrayBuffer || (data as unknown) instanceof SharedArrayBuffer) {
    throw new TypeError(`tensor(): cannot make a tensor from a bare ${(data as unknown as object).constructor.name}; wrap it in a TypedArray that says the element type, e.g. new Float32Array(buffer)`);
  } else {
    const what = data === null ? 'null' : typeof data === 'string' ? `string ${JSON.stringify(data)}` : typeof data;
    throw new TypeError(`tensor(): cannot make a tensor from ${what}; expected a TypedArray, nested arrays of numbers, bigints or booleans, or a scalar`);
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
  const t = new Tensor(native.fromData(buf, shape, src, dtype, device, requiresGrad, options.pinMemory ?? false));
  if (device !== 'cpu') queuedOnExecutor.add(t);  // the copy to the device is a queued task
  return t;
}

/**
 * Refuses, at the call, a CPU tensor larger than the machine's whole memory, or than the memory it
 * has available now: libtorch would fail only at the first op that touches it (after `memory()`
 * had counted it), or Linux would grant the allocation and kill the process when the tensor is
 * filled. Nothing is queued or counted then.
 */
function checkMemory(what: string, shape: number[], numel: number, dtype: DType, device: string): void {
  if (device !== 'cpu') return;
  const bytes = numel * ITEM_BYTES[dtype];
  const total = os.totalmem();
  const gb = (n: number) => (n / 1e9).toLocaleString('en-US', { maximumFractionDigits: 1 });
  const needs = `${what}: shape [${shape.join(', ')}] of ${dtype} needs ${gb(bytes)} GB`;
  if (bytes > total) throw withCode('FINETORCH_OUT_OF_MEMORY', new RangeError(`${needs}, more than this machine's ${gb(total)} GB of memory`));
  // os.freemem() is the kernel's MemAvailable: free memory plus what caches give back.
  const available = os.freemem();
  if (bytes > available) {
    throw withCode('FINETORCH_OUT_OF_MEMORY', new RangeError(`${needs}, more than the ${gb(available)} GB of memory this machine has available now`));
  }
}

/**
 * @internal Tensors whose values a task queued on the executor makes (factories, copies to a
 * device): a serving Predictor, which runs on a thread of its own, waits for that task first.
 */
export const queuedOnExecutor = new WeakSet<Tensor>();

function make(kind: string, shape: number[], options: TensorOptions, a?: number, b?: number, c?: number): Tensor {
  const what = `${kind}()`;
  check.shape(shape, `${what}: shape`);
  const dtype = check.dtype(options.dtype ?? 'float32', what);
  const device = check.device(options.device ?? 'cpu', what);
  if (options.requiresGrad && !check.isFloating(dtype)) {
    throw new TypeError(`${what}: only floating-point tensors can require gradients (dtype is ${dtype})`);
  }
  // arange's length follows from its range (PyTorch's ceil((end - start) / step)).
  const numel = kind === 'arange' ? Math.ceil((b! - a!) / c!) : shape.reduce((x, y) => x * y, 1);
  checkMemory(what, kind === 'arange' ? [numel] : shape, numel, dtype, device);
  const t = new Tensor(native.factory(kind, shape, dtype, device, options.requiresGrad ?? false, a, b, c));
  queuedOnExecutor.add(t);
  return t;
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
