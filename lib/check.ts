/**
 * Argument validation shared by every public API (as sharp's lib/is.mjs): each check throws an
 * Error that says, in the caller's terms, what was wrong.
 */
import type { DType } from './native';
import { native } from './native';
import { codedError } from './errors';

export const DTYPES: readonly DType[] = [
  'float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool',
];

export const FLOAT_DTYPES: readonly DType[] = ['float32', 'float64', 'float16', 'bfloat16'];

export function dtype(value: unknown, what = 'dtype'): DType {
  if (typeof value !== 'string' || !(DTYPES as readonly string[]).includes(value)) {
    throw new TypeError(`${what}: unknown dtype ${JSON.stringify(value)}; expected one of ${DTYPES.join(', ')}`);
  }
  return value as DType;
}

export function isFloating(d: DType): boolean {
  return FLOAT_DTYPES.includes(d);
}

let cudaCount: number | undefined;

/** Validates a device string ('cpu', 'cuda', 'cuda:N') and that the device exists. */
export function device(value: unknown, what = 'device'): string {
  if (typeof value !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(value)) {
    throw new TypeError(`${what}: unknown device ${JSON.stringify(value)}; expected 'cpu', 'cuda' or 'cuda:N'`);
  }
  if (value.startsWith('cuda')) {
    cudaCount ??= native.cudaIsAvailable() ? native.cudaDeviceCount() : 0;
    if (cudaCount === 0) {
      throw new Error(`${what}: '${value}' was asked for but CUDA is not available (libtorch ${native.buildInfo().builtWith}, ` +
        `${native.buildInfo().cudaCompiled ? 'built with CUDA, no GPU visible' : 'a CPU-only build'})`);
    }
    const index = value.includes(':') ? Number(value.split(':')[1]) : 0;
    if (index >= cudaCount) {
      throw new Error(`${what}: '${value}' does not exist; ${cudaCount} CUDA device(s) are visible`);
    }
  }
  return value;
}

/**
 * A wrong value as an error shows it: numbers as written, anything else with its type, so the
 * string "8" does not read as the number 8.
 */
export function describe(value: unknown): string {
  switch (typeof value) {
    case 'number': return String(value);
    case 'string': return `${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)} (a string)`;
    case 'bigint': return `${value}n (a bigint)`;
    case 'boolean': return `${value} (a boolean)`;
    case 'undefined': return 'undefined';
    case 'function': return 'a function';
    case 'symbol': return 'a symbol';
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  const name = (Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null)?.constructor?.name;
  return name && name !== 'Object' ? `an object (${name})` : 'an object';
}

export function integer(value: unknown, what: string, min = -Infinity, max = Infinity): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = min > -Infinity || max < Infinity ? ` in [${min}, ${max}]` : '';
    throw new TypeError(`${what} must be an integer${range}: got ${describe(value)}`);
  }
  return value;
}

export function number(value: unknown, what: string): number {
  if (typeof value !== 'number' || Number.isNaN(value)) throw new TypeError(`${what} must be a number: got ${describe(value)}`);
  return value;
}

export function shape(value: unknown, what = 'shape'): number[] {
  if (!Array.isArray(value)) throw new TypeError(`${what} must be an array of non-negative integers: got ${describe(value)}`);
  value.forEach((d, i) => integer(d, `${what}[${i}]`, 0));
  return value as number[];
}

/** Normalises a dimension index against `ndim` (negative counts from the end). */
export function dim(value: unknown, ndim: number, what = 'dim'): number {
  const lo = ndim === 0 ? -1 : -ndim;
  const hi = ndim === 0 ? 0 : ndim - 1;
  integer(value, what);
  const d = value as number;
  if (d < lo || d > hi) throw new RangeError(`${what} ${d} is out of range for a tensor of ${ndim} dimension(s) (expected [${lo}, ${hi}])`);
  return d < 0 ? d + Math.max(ndim, 1) : d;
}

export function boolean(value: unknown, what: string): boolean {
  if (typeof value !== 'boolean') throw new TypeError(`${what} must be a boolean: got ${describe(value)}`);
  return value;
}

/** The shape two tensors broadcast to, or an error naming both shapes. */
export function broadcast(a: number[], b: number[], what: string): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) {
      throw codedError('FINETORCH_SHAPE', `${what}: shapes [${a}] and [${b}] cannot be broadcast together (dimension ${i}: ${x} vs ${y})`);
    }
    out.push(x === 1 ? y : x);
  }
  return out;
}
