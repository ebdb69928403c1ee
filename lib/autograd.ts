/**
 * Grad mode as seen from JS. libtorch's grad mode is thread-local, so finetorch carries the JS
 * side's wish (async-aware) with each queued computation and sets it inside the executor task.
 */
import { AsyncLocalStorage } from 'async_hooks';

const gradMode = new AsyncLocalStorage<boolean>();

/** @internal Whether computations queued from the current async context record gradients. */
export function isGradEnabled(): boolean {
  return gradMode.getStore() ?? true;
}

/**
 * Runs `fn` (sync or async) with gradient recording off for everything it queues, as PyTorch's
 * `torch.no_grad()`.
 *
 * @example
 * const logits = await torch.noGrad(() => model.forward(x));
 */
export function noGrad<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError('noGrad(fn): fn must be a function');
  return gradMode.run(false, fn);
}

/** Runs `fn` with gradient recording on (inside a `noGrad` block, for example). */
export function enableGrad<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError('enableGrad(fn): fn must be a function');
  return gradMode.run(true, fn);
}
