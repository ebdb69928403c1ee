/** What the training loop consumes: any (async) iterable of `{ input, target }` batches. */
import { Tensor } from '../tensor';

/**
 * What a model's `forward` takes: one tensor, an array of tensors (its positional arguments), or
 * an object of named tensors (matched to `forward`'s argument names, e.g. `{ input_ids,
 * attention_mask }` for a BERT; a `forward` whose one argument is a `Dict[str, Tensor]` gets the
 * object itself).
 *
 * @example
 * const input: train.ModelInput = { input_ids: ids, attention_mask: mask }; // forward(input_ids, attention_mask)
 * await train.fit(bert, { train: [{ input, target: labels }], epochs: 1, optimizer });
 */
export type ModelInput = Tensor | Tensor[] | { [name: string]: Tensor };

/**
 * One batch: inputs [B, ...] and targets [B, ...]: int64 class indices [B] for cross-entropy,
 * float [B, L] 0/1 labels for BCEWithLogitsLoss, float values for regression losses.
 */
export interface Batch<I extends ModelInput = Tensor> {
  input: I;
  target: Tensor;
}

/** Anything that yields batches: a DataLoader, an array, an async generator. Iterated once per epoch. */
export type BatchSource = AsyncIterable<Batch<ModelInput>> | Iterable<Batch<ModelInput>>;

/** @internal The tensors of a model input, in order (positional, or the object's values). */
export function inputTensors(input: ModelInput): Tensor[] {
  if (input instanceof Tensor) return [input];
  return Array.isArray(input) ? input : Object.values(input);
}

/** @internal Whether `x` is a model input: a Tensor, an array of Tensors or a plain object of Tensors. */
export function isModelInput(x: unknown): x is ModelInput {
  if (x instanceof Tensor) return true;
  if (Array.isArray(x)) return x.length > 0 && x.every((t) => t instanceof Tensor);
  if (x === null || typeof x !== 'object' || Object.getPrototypeOf(x) !== Object.prototype) return false;
  const values = Object.values(x);
  return values.length > 0 && values.every((t) => t instanceof Tensor);
}

/** @internal Iterates either kind of source. */
export async function* batches(source: BatchSource, what: string): AsyncGenerator<Batch<ModelInput>> {
  if (source === null || typeof source !== 'object' || !(Symbol.asyncIterator in source || Symbol.iterator in source)) {
    throw new TypeError(`${what}: expected an iterable of { input, target } batches (a DataLoader, an array, an async generator)`);
  }
  let i = 0;
  for await (const b of source as AsyncIterable<Batch<ModelInput>>) {
    if (!b || typeof b !== 'object' || !b.input || !b.target) throw new TypeError(`${what}: batch ${i} is not { input, target }`);
    if (!isModelInput(b.input)) {
      throw new TypeError(`${what}: batch ${i}: input must be a Tensor, an array of Tensors or an object of named Tensors`);
    }
    if (!(b.target instanceof Tensor)) throw new TypeError(`${what}: batch ${i}: target must be a Tensor`);
    yield b;
    i++;
  }
}

/** @internal Disposes a batch's tensors unless the source asked to keep them. */
export function release(b: Batch<ModelInput>, keep: boolean): void {
  if (keep) return;
  for (const t of inputTensors(b.input)) t.dispose();
  b.target.dispose();
}
