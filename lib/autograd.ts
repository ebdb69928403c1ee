/**
 * Grad mode as seen from JS. libtorch's grad mode is thread-local, so finetorch carries the JS
 * side's wish (async-aware) with each queued computation and sets it inside the executor task.
 */
import { AsyncLocalStorage } from 'async_hooks';

/**
 * What a queued computation records: `true` (autograd on), `false` (`noGrad`), or `'inference'`
 * (`inferenceMode`: libtorch's InferenceMode, no autograd bookkeeping at all).
 */
export type GradMode = boolean | 'inference';

const gradMode = new AsyncLocalStorage<GradMode>();

/** @internal The grad mode that computations queued from the current async context run under. */
export function currentGradMode(): GradMode {
  return gradMode.getStore() ?? true;
}

/** @internal Whether computations queued from the current async context record gradients. */
export function isGradEnabled(): boolean {
  return currentGradMode() === true;
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

/**
 * Runs `fn` under libtorch's InferenceMode, as PyTorch's `torch.inference_mode()`: like `noGrad`,
 * and also without version counters or view tracking. Tensors made inside are inference tensors:
 * they cannot later be saved for backward (clone one outside to train on it). TorchScript methods
 * (`forward`) run under no_grad instead, because a graph that has been trained runs as a
 * DifferentiableGraph that InferenceMode refuses. `train.evaluate` and `train.predict` use it.
 *
 * @example
 * const probs = await torch.inferenceMode(async () => (await model.forward(x)).softmax(1));
 */
export function inferenceMode<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError('inferenceMode(fn): fn must be a function');
  return gradMode.run('inference', fn);
}
