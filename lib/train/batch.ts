/** What the training loop consumes: any (async) iterable of `{ input, target }` batches. */
import type { Tensor } from '../tensor';

/** One batch: inputs [B, ...] and class-index targets [B] (int64). */
export interface Batch {
  input: Tensor;
  target: Tensor;
}

/** Anything that yields batches: a DataLoader, an array, an async generator. Iterated once per epoch. */
export type BatchSource = AsyncIterable<Batch> | Iterable<Batch>;

/** @internal Iterates either kind of source. */
export async function* batches(source: BatchSource, what: string): AsyncGenerator<Batch> {
  if (source === null || typeof source !== 'object' || !(Symbol.asyncIterator in source || Symbol.iterator in source)) {
    throw new TypeError(`${what}: expected an iterable of { input, target } batches (a DataLoader, an array, an async generator)`);
  }
  let i = 0;
  for await (const b of source as AsyncIterable<Batch>) {
    if (!b || typeof b !== 'object' || !b.input || !b.target) throw new TypeError(`${what}: batch ${i} is not { input, target }`);
    yield b;
    i++;
  }
}

/** @internal Disposes a batch's tensors unless the source asked to keep them. */
export function release(b: Batch, keep: boolean): void {
  if (keep) return;
  b.input.dispose();
  b.target.dispose();
}
