/**
 * How `fit`, `evaluate` and `predict` call a model of any signature: a batch's input becomes
 * `forward`'s arguments (named tensors in the order of `forward`'s parameters), and the one tensor
 * that the loss and the metrics read is picked out of whatever `forward` returns.
 */
import type { ScriptModule } from '../jit/module';
import { native, type NativeTensor } from '../native';
import { Tensor } from '../tensor';
import { inputTensors, type ModelInput } from './batch';

/**
 * Which of `forward`'s outputs is the prediction: an index into a tuple/list, or a key of a dict.
 * By default a tuple/list gives its first element and a dict its `logits`.
 *
 * @example
 * await train.fit(model, { train, epochs: 1, optimizer, output: 1 }); // forward returns (features, logits)
 */
export type OutputChoice = number | string;

/** @internal Checks an `output` option. */
export function checkOutputChoice(choice: unknown, what: string): void {
  if (choice === undefined) return;
  if (typeof choice === 'string' && choice !== '') return;
  if (typeof choice === 'number' && Number.isInteger(choice) && choice >= 0) return;
  throw new TypeError(`${what}: output must be an index (an integer >= 0) or a dict key (a non-empty string), got ${String(choice)}`);
}

function forwardSignature(model: ScriptModule): { name: string; type: string }[] | undefined {
  return model.methods().find((m) => m.name === 'forward')?.args;
}

/** @internal True when `forward` is declared to return one tensor (what the fused step needs). */
export function returnsTensor(model: ScriptModule): boolean {
  return model.methods().find((m) => m.name === 'forward')?.returns === 'Tensor';
}

/**
 * @internal `forward`'s arguments for `input`: a tensor alone, an array as it is, an object in the
 * order of `forward`'s parameter names (or as the one argument when that is a Dict).
 */
export function forwardArgs(model: ScriptModule, input: ModelInput, what: string): unknown[] {
  if (input instanceof Tensor) return [input];
  if (Array.isArray(input)) return input;
  const params = forwardSignature(model) ?? [];
  if (params.length === 1 && params[0].type.startsWith('Dict[')) return [input];
  const names = params.map((p) => p.name);
  const unknown = Object.keys(input).filter((k) => !names.includes(k));
  if (unknown.length > 0) {
    throw new Error(`${what}: the model's forward has no argument ${unknown.map((k) => `'${k}'`).join(', ')}; ` +
      `its arguments are (${params.map((p) => `${p.name}: ${p.type}`).join(', ')})`);
  }
  const args: unknown[] = [];
  const given = names.filter((n) => n in input);
  for (const n of names) {
    if (args.length === given.length) break; // the rest keep their defaults
    if (!(n in input)) {
      throw new Error(`${what}: the input object has no '${n}', which forward takes before ` +
        `'${given[given.length - 1]}' (forward(${names.join(', ')})); arguments are passed by position, so give '${n}' too`);
    }
    args.push(input[n]);
  }
  return args;
}

/** @internal `input` with every tensor on `device`; `moved` lists the copies made (to dispose). */
export async function inputOn(input: ModelInput, device: string): Promise<{ input: ModelInput; moved: Tensor[] }> {
  const moved: Tensor[] = [];
  const on = async (t: Tensor) => {
    if (t.device === device) return t;
    const c = await t.to(device);
    moved.push(c);
    return c;
  };
  try {
    if (input instanceof Tensor) return { input: await on(input), moved };
    if (Array.isArray(input)) {
      const out: Tensor[] = [];
      for (const t of input) out.push(await on(t));
      return { input: out, moved };
    }
    const out: { [name: string]: Tensor } = {};
    for (const [k, t] of Object.entries(input)) out[k] = await on(t);
    return { input: out, moved };
  } catch (e) {
    for (const t of moved) t.dispose();
    throw e;
  }
}

/** @internal The batch size of an input: the first dimension of its first tensor. */
export function inputBatchSize(input: ModelInput): number | undefined {
  const t = inputTensors(input)[0];
  return t && t.ndim > 0 ? t.shape[0] : undefined;
}

/** @internal A short description of an input's shapes, for error messages. */
export function describeInput(input: ModelInput): string {
  if (input instanceof Tensor) return `[${input.shape}]`;
  if (Array.isArray(input)) return `(${input.map((t) => `[${t.shape}]`).join(', ')})`;
  return `{ ${Object.entries(input).map(([k, t]) => `${k}: [${t.shape}]`).join(', ')} }`;
}

function describe(out: unknown): string {
  if (out instanceof Tensor) return 'a Tensor';
  if (Array.isArray(out)) return `a tuple/list of ${out.length}`;
  if (out !== null && typeof out === 'object') return `a dict with keys ${Object.keys(out).map((k) => `'${k}'`).join(', ')}`;
  return `a ${typeof out}`;
}

/**
 * @internal The prediction tensor among `forward`'s outputs: the tensor itself, a tuple/list's
 * element `choice` (default 0), or a dict's key `choice` (default 'logits').
 */
export function selectOutput(out: unknown, choice: OutputChoice | undefined, what: string): Tensor {
  let picked: unknown;
  if (out instanceof Tensor) {
    if (choice === undefined || choice === 0) return out;
    throw new Error(`${what}: output: ${JSON.stringify(choice)} was given but the model returned a single Tensor`);
  }
  if (Array.isArray(out)) {
    if (typeof choice === 'string') throw new Error(`${what}: output: '${choice}' names a dict key, but the model returned ${describe(out)}; give an index`);
    const i = choice ?? 0;
    if (i >= out.length) throw new Error(`${what}: output: ${i} is out of range: the model returned ${describe(out)}`);
    picked = out[i];
  } else if (out !== null && typeof out === 'object') {
    if (typeof choice === 'number') throw new Error(`${what}: output: ${choice} is an index, but the model returned ${describe(out)}; give a key`);
    const key = choice ?? 'logits';
    if (!(key in out)) {
      throw new Error(`${what}: the model returned ${describe(out)} and none is '${key}'; choose one with the output option (output: 'key')`);
    }
    picked = (out as Record<string, unknown>)[key];
  } else {
    throw new Error(`${what}: the model returned ${describe(out)}, not a Tensor, tuple or dict`);
  }
  if (!(picked instanceof Tensor)) throw new Error(`${what}: the chosen output is ${describe(picked)}, not a Tensor`);
  return picked;
}

/** @internal Disposes every tensor in a model's output (nested tuples, lists, dicts). */
export function disposeOutput(out: unknown): void {
  if (out instanceof Tensor) out.dispose();
  else if (Array.isArray(out)) out.forEach(disposeOutput);
  else if (out !== null && typeof out === 'object') Object.values(out).forEach(disposeOutput);
}

function wrap(v: unknown): unknown {
  if (v instanceof native.Tensor) return new Tensor(v as NativeTensor);
  if (Array.isArray(v)) return v.map(wrap);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, wrap(x)]));
  return v;
}

/** `forward` under autocast, in one executor task (autocast is thread-local to the executor). */
async function forwardAutocast(model: ScriptModule, input: ModelInput, device: string, amp: number, what: string): Promise<unknown> {
  const args = forwardArgs(model, input, what).map((a) => (a instanceof Tensor ? a.handle
    : Object.fromEntries(Object.entries(a as Record<string, Tensor>).map(([k, t]) => [k, t.handle]))));
  return wrap(await native.forwardAutocast(model.handle, args, { amp, device }));
}

/**
 * @internal Runs `forward` on `input` (moved to `device`; under autocast when `amp` is 1 (bf16)
 * or 2 (fp16)) and returns everything it returned plus the chosen prediction; the moved copies
 * are already disposed.
 */
export async function runForward(model: ScriptModule, input: ModelInput, device: string, choice: OutputChoice | undefined, what: string, amp = 0): Promise<{ out: unknown; pred: Tensor }> {
  let out: unknown;
  if (amp !== 0) {
    out = await forwardAutocast(model, input, device, amp, what);
  } else {
    const { input: x, moved } = await inputOn(input, device);
    try {
      out = await model.forward(...forwardArgs(model, x, what));
    } finally {
      for (const t of moved) t.dispose();
    }
  }
  try {
    return { out, pred: selectOutput(out, choice, what) };
  } catch (e) {
    disposeOutput(out);
    throw e;
  }
}
