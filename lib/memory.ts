/**
 * Deterministic memory: `tidy` scopes (async-aware through AsyncLocalStorage) and `memory()`.
 */
import { AsyncLocalStorage } from 'async_hooks';
import { native } from './native';

/** Anything that can be disposed (a Tensor, a module, an optimizer). */
export interface Disposable {
  dispose(): void;
  readonly disposed: boolean;
}

class Scope {
  readonly tracked = new Set<Disposable>();
}

const scopes = new AsyncLocalStorage<Scope>();

/** @internal Registers a new tensor with the innermost active `tidy` scope, if any. */
export function track<T extends Disposable>(x: T): T {
  scopes.getStore()?.tracked.add(x);
  return x;
}

/** Keeps `x` alive past the innermost `tidy` that would otherwise dispose it. */
export function keep<T extends Disposable>(x: T): T {
  scopes.getStore()?.tracked.delete(x);
  return x;
}

function collect(value: unknown, out: Set<unknown>, seen = new Set<unknown>()): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  out.add(value);
  if (ArrayBuffer.isView(value)) return;
  const items = value instanceof Map ? [...value.values()] : Array.isArray(value) ? value : Object.values(value);
  for (const v of items) collect(v, out, seen);
}

function close(scope: Scope, result: unknown, parent: Scope | undefined, failed: boolean): void {
  const kept = new Set<unknown>();
  if (!failed) collect(result, kept);
  for (const x of scope.tracked) {
    if (kept.has(x)) parent?.tracked.add(x);
    else x.dispose();
  }
}

/**
 * Runs `fn` and disposes every tensor created inside it except those it returns (found in the
 * returned value, arrays and plain objects included). Works with sync and async functions; with
 * an async `fn` it returns a Promise.
 *
 * @example
 * const loss = await torch.tidy(async () => {
 *   const logits = await model.forward(x);       // disposed when the scope closes
 *   return lossFn.forward(logits, y);            // returned, so kept
 * });
 */
export function tidy<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError('tidy(fn): fn must be a function');
  const parent = scopes.getStore();
  const scope = new Scope();
  let out: T;
  try {
    out = scopes.run(scope, fn);
  } catch (err) {
    close(scope, undefined, parent, true);
    throw err;
  }
  if (out instanceof Promise) {
    return out.then(
      (v) => {
        close(scope, v, parent, false);
        return v;
      },
      (err) => {
        close(scope, undefined, parent, true);
        throw err;
      },
    ) as T;
  }
  close(scope, out, parent, false);
  return out;
}

/** What libtorch holds for finetorch right now. */
export interface MemoryInfo {
  /** Live tensor handles (not yet disposed or collected). */
  tensors: number;
  /** Bytes addressed by those handles (views count their own extent). */
  bytes: number;
  /** CUDA caching allocator figures, where CUDA is present. */
  cuda?: { allocated: number; reserved: number; peak: number };
}

/**
 * Live tensors and their bytes.
 *
 * @example
 * const before = torch.memory().tensors;
 */
export function memory(): MemoryInfo {
  const info: MemoryInfo = native.memory();
  const cuda = native.cudaIsAvailable() ? native.cudaMemory(0) : null;
  if (cuda) info.cuda = cuda;
  return info;
}
