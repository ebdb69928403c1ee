/**
 * Collation of structured samples: inputs that are several arrays (positional or named, as a
 * BERT's `input_ids` and `attention_mask`) and targets that are arrays (multi-label 0/1 vectors,
 * regression values), with variable-length 1-D sequences padded to the longest in the batch.
 */
import { tensor } from '../creation';
import { codedError, withCode } from '../errors';
import type { Tensor } from '../tensor';
import type { Batch, ModelInput } from '../train/batch';
import { hostType, numel, type HostArray, type HostData, type HostDataConstructor } from './dataset';

/**
 * A sample of any model's shape: `input` one array, an array of arrays (forward's positional
 * arguments) or an object of named arrays; `target` a class index or an array (float labels or
 * values).
 *
 * @example
 * const s: data.StructuredSample = { input: { input_ids: { data: Int32Array.of(5, 9), shape: [2] } }, target: 1 };
 */
export interface StructuredSample {
  input: HostArray | HostArray[] | { [name: string]: HostArray };
  target: number | HostArray;
}

/** Options of `collate`. */
export interface CollateOptions {
  /**
   * Pads 1-D fields of different lengths to the longest in the batch with this value (one value
   * for every field, or per field name: `{ input_ids: 0, attention_mask: 0, target: -100 }`;
   * positional inputs are named '0', '1', ..., a single input 'input'). Without it, fields of
   * different shapes are an Error.
   */
  padValue?: number | { [field: string]: number };
  /** Put the batch in page-locked memory (where CUDA is present). */
  pinMemory?: boolean;
}

function padFor(options: CollateOptions, field: string): number | undefined {
  const p = options.padValue;
  return typeof p === 'number' ? p : p?.[field];
}

/** @internal Checks a `padValue` option. */
export function checkPadValue(p: unknown, what: string): void {
  if (p === undefined || (typeof p === 'number' && Number.isFinite(p))) return;
  if (p !== null && typeof p === 'object' && Object.values(p).every((v) => typeof v === 'number' && Number.isFinite(v))) return;
  throw new TypeError(`${what}: padValue must be a finite number or an object of finite numbers per field, got ${String(p)}`);
}

/** One field of every sample stacked into a [B, ...] tensor, 1-D fields padded when asked. */
function stackField(arrays: HostArray[], field: string, options: CollateOptions, what: string): Tensor {
  let type: HostDataConstructor | undefined;
  arrays.forEach((a, k) => {
    const t = hostType(a, `${what}: sample ${k} '${field}'`);
    if (type && t !== type) throw withCode('FINETORCH_DTYPE', new TypeError(`${what}: '${field}' holds ${type.name} in sample 0 but ${t.name} in sample ${k}`));
    type = t;
  });
  const first = arrays[0].shape;
  const same = arrays.every((a) => a.shape.length === first.length && a.shape.every((d, i) => d === first[i]));
  const pad = padFor(options, field);
  let shape = first;
  if (!same) {
    const k = arrays.findIndex((a) => a.shape.join() !== first.join());
    if (pad === undefined || !arrays.every((a) => a.shape.length === 1)) {
      throw codedError('FINETORCH_SHAPE', `${what}: '${field}' has shape [${first}] in sample 0 but [${arrays[k].shape}] in sample ${k}; ` +
        (arrays.every((a) => a.shape.length === 1) ? `pass padValue (e.g. { padValue: { ${field}: 0 } }) to pad sequences to the longest`
          : 'only 1-D sequences are padded; give the samples one shape'));
    }
    shape = [Math.max(...arrays.map((a) => a.shape[0]))];
  }
  const size = numel(shape);
  const buf = new type!(size * arrays.length) as HostData;
  if (!same) (buf as { fill(v: number | bigint): unknown }).fill(type === BigInt64Array ? BigInt(pad!) : pad!);
  arrays.forEach((a, k) => (buf as Float32Array).set(a.data as Float32Array, k * size));
  return tensor(buf, { shape: [arrays.length, ...shape], pinMemory: options.pinMemory ?? false });
}

/**
 * Batches structured samples: each input array (positional or named) and an array target are
 * stacked to [B, ...] tensors of their array type; class-index targets become int64 [B]; 1-D
 * fields of different lengths are padded to the longest with `padValue`. The DataLoader uses it
 * for samples that are not one array and a class index, and when `padValue` is given.
 *
 * @example
 * const batch = data.collate([
 *   { input: { input_ids: { data: Int32Array.of(5, 9, 2), shape: [3] }, attention_mask: { data: Int32Array.of(1, 1, 1), shape: [3] } }, target: 1 },
 *   { input: { input_ids: { data: Int32Array.of(7), shape: [1] }, attention_mask: { data: Int32Array.of(1), shape: [1] } }, target: 0 },
 * ], { padValue: 0 }); // input_ids [2, 3] = [[5, 9, 2], [7, 0, 0]]
 */
export function collate(items: StructuredSample[], options: CollateOptions = {}): Batch<ModelInput> {
  const what = 'collate';
  if (!Array.isArray(items) || items.length === 0) throw new TypeError(`${what}: expected a non-empty array of { input, target } samples`);
  if (options === null || typeof options !== 'object') throw new TypeError(`${what}: options must be an object`);
  checkPadValue(options.padValue, what);
  items.forEach((s, k) => {
    if (!s || typeof s !== 'object' || s.input === undefined || s.target === undefined) throw new TypeError(`${what}: sample ${k} is not { input, target }`);
  });
  const made: Tensor[] = [];
  const stack = (arrays: HostArray[], field: string) => { const t = stackField(arrays, field, options, what); made.push(t); return t; };
  try {
    const first = items[0].input;
    let input: ModelInput;
    if (Array.isArray(first)) {
      items.forEach((s, k) => {
        if (!Array.isArray(s.input) || s.input.length !== first.length) throw new Error(`${what}: sample ${k}'s input is not an array of ${first.length} arrays like sample 0's`);
      });
      input = first.map((_, i) => stack(items.map((s) => (s.input as HostArray[])[i]), String(i)));
    } else if (ArrayBuffer.isView((first as HostArray).data)) {
      input = stack(items.map((s) => s.input as HostArray), 'input');
    } else {
      const names = Object.keys(first);
      items.forEach((s, k) => {
        const keys = Object.keys(s.input);
        if (keys.length !== names.length || !names.every((n) => n in (s.input as object))) {
          throw new Error(`${what}: sample ${k}'s input has fields ${keys.join(', ')} but sample 0's has ${names.join(', ')}`);
        }
      });
      input = Object.fromEntries(names.map((n) => [n, stack(items.map((s) => (s.input as Record<string, HostArray>)[n]), n)]));
    }
    let target: Tensor;
    if (typeof items[0].target === 'number') {
      const ys = items.map((s, k) => {
        if (typeof s.target !== 'number' || !Number.isInteger(s.target)) throw new TypeError(`${what}: sample ${k}: target must be an integer class index like sample 0's, got ${String(s.target)}`);
        return BigInt(s.target);
      });
      target = tensor(BigInt64Array.from(ys), { shape: [items.length], pinMemory: options.pinMemory ?? false });
      made.push(target);
    } else {
      target = stack(items.map((s) => s.target as HostArray), 'target');
    }
    return { input, target };
  } catch (e) {
    for (const t of made) t.dispose();
    throw e;
  }
}
