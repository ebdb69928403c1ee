/**
 * LoRA (low-rank adaptation) on TorchScript models, and adapters in Hugging Face peft's files.
 * The policy (which layers, options, file layout) lives here; the re-parametrised forward lives in
 * native/lora.cc.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as check from '../check';
import { tensor } from '../creation';
import { codedError } from '../errors';
import { writeAtomic } from '../fsutil';
import type { ScriptModule } from '../jit/module';
import { nameMatcher, unmatchedPatterns, type NamePattern } from '../jit/patterns';
import { native } from '../native';
import type { Tensor } from '../tensor';
import { decodeSafetensors, encodeSafetensors, type SafeTensor } from './safetensors';

/** Options of `torch.peft.lora`. */
export interface LoraOptions {
  /** Module-name patterns (the globs of `freeze`): the Linear and Conv2d layers under them get an adapter. */
  targets: NamePattern;
  /** The rank r of the update B @ A (default 8, as peft). */
  rank?: number;
  /** The update is scaled by alpha / r (default 8, as peft's `lora_alpha`). */
  alpha?: number;
  /**
   * Dropout on the LoRA branch's input features while training (default 0). finetorch merges the
   * update into the weight each forward, so it drops input features (a conv's input channels) of A
   * with one mask per forward shared by the whole batch, not elements per sample as peft does.
   */
  dropout?: number;
  /** A's initialisation: 'kaiming' (uniform, as nn.Linear; default) or 'gaussian' (N(0, 1/r)); B starts at zero. */
  init?: 'kaiming' | 'gaussian';
  /** Modules (names or globs) trained in full and saved with the adapter, e.g. a new head: `['fc']`. */
  modulesToSave?: NamePattern;
}

/** The adapter attached to a model, as `lora` made it or `loadAdapter` read it. */
export interface LoraAdapter {
  /** The concrete module names that carry A and B. */
  readonly targets: readonly string[];
  readonly rank: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly init: 'kaiming' | 'gaussian';
  /** The concrete module names trained in full. */
  readonly modulesToSave: readonly string[];
  /** True after `merge` (the base weights hold the update; A and B no longer act). */
  readonly merged: boolean;
}

interface AdapterState { targets: string[]; rank: number; alpha: number; dropout: number; init: 'kaiming' | 'gaussian'; modulesToSave: string[]; merged: boolean }

const adapters = new WeakMap<ScriptModule, AdapterState>();

const TARGET_TYPE = /(^|\.)(\w*Linear|Conv2d)$/;

/**
 * The model's adapter (targets, rank, alpha, dropout, modulesToSave, merged), or undefined when it
 * has none.
 *
 * @example
 * torch.peft.adapterOf(model)?.targets; // ['layer4.0.conv1', ...]
 */
export function adapterOf(model: ScriptModule): LoraAdapter | undefined {
  const s = adapters.get(model);
  return s && { ...s, targets: [...s.targets], modulesToSave: [...s.modulesToSave] };
}

/** Linear / Conv2d modules of the model, with their weight's shape. */
function layers(model: ScriptModule): Map<string, number[]> {
  const params = new Map(model.namedParameters());
  const out = new Map<string, number[]>();
  for (const [name, info] of model.namedModules()) {
    const w = params.get(`${name}.weight`);
    if (name !== '' && TARGET_TYPE.test(info.type) && w && (w.ndim === 2 || w.ndim === 4) && check.isFloating(w.dtype)) out.set(name, w.shape);
  }
  return out;
}

function moduleNames(model: ScriptModule, patterns: NamePattern | undefined, what: string): string[] {
  if (patterns === undefined) return [];
  const names = model.namedModules().map(([n]) => n).filter((n) => n !== '');
  const missed = unmatchedPatterns(patterns, names, what);
  if (missed.length > 0) throw new Error(`${what}: no module matches ${missed.map(String).join(', ')}; names look like '${names[0] ?? ''}'`);
  const match = nameMatcher(patterns, what);
  return names.filter(match);
}

async function attach(model: ScriptModule, targets: string[], o: Omit<AdapterState, 'targets' | 'merged'>, what: string): Promise<LoraAdapter> {
  if (adapters.has(model)) throw new Error(`${what}: the model already has a LoRA adapter (on ${adapters.get(model)!.targets.join(', ')})`);
  const shapes = layers(model);
  for (const t of targets) {
    const shape = shapes.get(t);
    if (!shape) throw new Error(`${what}: '${t}' is not a Linear or Conv2d module of this model`);
    const out = shape[0];
    const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
    if (o.rank > Math.min(out, fanIn)) {
      throw new RangeError(`${what}: rank ${o.rank} is larger than '${t}' allows: its weight is [${shape.join(', ')}], so at most min(${out}, ${fanIn}) = ${Math.min(out, fanIn)}`);
    }
  }
  await native.loraAttach(model.handle, targets, { rank: o.rank, alpha: o.alpha, dropout: o.dropout, init: o.init });
  adapters.set(model, { ...o, targets: [...targets], merged: false });
  await model.refresh(what);
  const trainable = model.namedParameters().map(([n]) => n)
    .filter((n) => /\.lora_[AB]\.weight$/.test(n) || o.modulesToSave.some((m) => n.startsWith(`${m}.`)));
  model.freeze();
  model.unfreeze(trainable);
  return adapterOf(model)!;
}

/**
 * Attaches a LoRA adapter: every Linear and Conv2d layer under `targets` keeps its weight W0 frozen
 * and gets trainable A `[r, in]` and B `[out, r]` (a Conv2d: A `[r, in, kh, kw]`, B `[out, r, 1, 1]`);
 * each forward uses W0 + (alpha / r) * B @ A. Every other parameter is frozen, except those of
 * `modulesToSave`. The adapter's tensors show in `namedParameters()` as `<module>.lora_A.weight` and
 * `<module>.lora_B.weight`, and `parameters({ trainable: true })` returns them, so optimizers and
 * `train.fit` train them. A fresh adapter leaves the outputs unchanged (B is zero). `model.save`
 * merges the update into the weights. A pattern that matches no Linear/Conv2d module, a rank out of
 * range and a grouped convolution are Errors naming them.
 *
 * @example
 * const adapter = await torch.peft.lora(model, { targets: ['layer4.**'], rank: 8, alpha: 16, modulesToSave: ['fc'] });
 * console.log(model.summary().toString()); // trainable: ... (1.2%)
 */
export async function lora(model: ScriptModule, options: LoraOptions): Promise<LoraAdapter> {
  const what = 'lora';
  if (options === null || typeof options !== 'object') throw new TypeError(`${what}: expected { targets, rank?, alpha?, dropout?, init?, modulesToSave? }`);
  if (options.targets === undefined) throw new TypeError(`${what}: targets is required (module-name patterns such as 'layer4.**')`);
  const rank = check.integer(options.rank ?? 8, `${what}: rank`, 1, 1 << 20);
  const alpha = check.number(options.alpha ?? 8, `${what}: alpha`);
  if (!(alpha > 0)) throw new RangeError(`${what}: alpha must be > 0, got ${alpha}`);
  const dropout = check.number(options.dropout ?? 0, `${what}: dropout`);
  if (!(dropout >= 0 && dropout < 1)) throw new RangeError(`${what}: dropout must be in [0, 1), got ${dropout}`);
  const init = options.init ?? 'kaiming';
  if (init !== 'kaiming' && init !== 'gaussian') throw new TypeError(`${what}: init must be 'kaiming' or 'gaussian', got ${String(init)}`);
  const candidates = [...layers(model).keys()];
  const missed = unmatchedPatterns(options.targets, candidates, `${what}: targets`);
  if (missed.length > 0) {
    throw new Error(`${what}: targets ${missed.map((p) => `'${String(p)}'`).join(', ')} match no Linear or Conv2d module; ` +
      `such modules are named like ${candidates.slice(0, 3).map((c) => `'${c}'`).join(', ') || '(none in this model)'}`);
  }
  const match = nameMatcher(options.targets, `${what}: targets`);
  const modulesToSave = moduleNames(model, options.modulesToSave, `${what}: modulesToSave`);
  return attach(model, candidates.filter(match), { rank, alpha, dropout, init, modulesToSave }, what);
}

function stateOf(model: ScriptModule, what: string): AdapterState {
  const s = adapters.get(model);
  if (!s) throw new Error(`${what}: the model has no LoRA adapter; attach one with torch.peft.lora or torch.peft.loadAdapter`);
  return s;
}

/**
 * Merges the adapter into the base weights in place (W0 += alpha / r * B @ A): forwards no longer
 * compute the update, and A and B stop acting until `unmerge`. A no-op when already merged.
 *
 * @example
 * await torch.peft.merge(model); // fastest inference
 */
export async function merge(model: ScriptModule): Promise<void> {
  const s = stateOf(model, 'merge');
  await model.refresh('merge');
  if (s.merged) return;
  await native.loraMerge(model.handle, true);
  s.merged = true;
}

/**
 * Takes a merged adapter out of the base weights again (W0 -= alpha / r * B @ A, exact up to float
 * rounding), so A and B train again. A no-op when not merged.
 *
 * @example
 * await torch.peft.unmerge(model);
 */
export async function unmerge(model: ScriptModule): Promise<void> {
  const s = stateOf(model, 'unmerge');
  await model.refresh('unmerge');
  if (!s.merged) return;
  await native.loraMerge(model.handle, false);
  s.merged = false;
}

async function values(t: Tensor): Promise<SafeTensor> {
  const data = await t.data();
  return { shape: t.shape, data: data instanceof Float64Array ? data : Float32Array.from(data as Float32Array) };
}

const PREFIX = 'base_model.model.';

/**
 * Writes the adapter as Hugging Face peft's `save_pretrained` does: `dir/adapter_config.json`
 * (`peft_type: "LORA"`, `r`, `lora_alpha`, `lora_dropout`, `target_modules` as the concrete module
 * names, `modules_to_save`) and `dir/adapter_model.safetensors` with keys
 * `base_model.model.<module>.lora_A.weight` / `.lora_B.weight` and, for `modulesToSave`,
 * `base_model.model.<module>.<param>`. Both files are written atomically.
 *
 * @example
 * await torch.peft.saveAdapter(model, 'run/adapter');
 */
export async function saveAdapter(model: ScriptModule, dir: string): Promise<void> {
  const what = 'saveAdapter';
  if (typeof dir !== 'string' || dir === '') throw new TypeError(`${what}(model, dir): dir must be a non-empty string`);
  const s = stateOf(model, what);
  const params = new Map(model.namedParameters());
  const entries: [string, SafeTensor][] = [];
  for (const t of s.targets) {
    for (const ab of ['lora_A', 'lora_B']) entries.push([`${PREFIX}${t}.${ab}.weight`, await values(params.get(`${t}.${ab}.weight`)!)]);
  }
  for (const [n, p] of params) {
    if (s.modulesToSave.some((m) => n.startsWith(`${m}.`))) entries.push([`${PREFIX}${n}`, await values(p)]);
  }
  const config = {
    peft_type: 'LORA', task_type: null, base_model_name_or_path: null, revision: null, inference_mode: true,
    r: s.rank, lora_alpha: s.alpha, lora_dropout: s.dropout, target_modules: s.targets,
    modules_to_save: s.modulesToSave.length > 0 ? s.modulesToSave : null, bias: 'none', fan_in_fan_out: false,
    init_lora_weights: s.init === 'gaussian' ? 'gaussian' : true, layers_to_transform: null, layers_pattern: null,
    rank_pattern: {}, alpha_pattern: {},
  };
  await fs.promises.mkdir(dir, { recursive: true });
  await writeAtomic(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n', what);
  await writeAtomic(path.join(dir, 'adapter_model.safetensors'), encodeSafetensors(entries), what);
}

async function readConfig(dir: string, what: string): Promise<{ r: number; alpha: number; dropout: number; modulesToSave: string[] }> {
  const file = path.join(dir, 'adapter_config.json');
  let raw: unknown;
  try {
    raw = JSON.parse(await fs.promises.readFile(file, 'utf8'));
  } catch (e) {
    throw new Error(`${what}: cannot read ${file}: ${(e as Error).message}`);
  }
  const c = raw as Record<string, unknown>;
  if (c === null || typeof c !== 'object' || c.peft_type !== 'LORA') throw new Error(`${what}: ${file} is not a LoRA adapter config (peft_type ${JSON.stringify(c?.peft_type)})`);
  // variants whose forward is not W0 + alpha / r * B @ A with one rank: refused, never approximated
  const unsupported = [
    c.use_rslora === true && 'use_rslora (alpha / sqrt(r) scaling)', c.use_dora === true && 'use_dora',
    c.fan_in_fan_out === true && 'fan_in_fan_out (Conv1D layers)',
    Object.keys((c.rank_pattern as object | null) ?? {}).length > 0 && 'rank_pattern', Object.keys((c.alpha_pattern as object | null) ?? {}).length > 0 && 'alpha_pattern',
  ].filter(Boolean);
  if (unsupported.length > 0) throw new Error(`${what}: ${file} uses ${unsupported.join(', ')}, which finetorch's LoRA does not support`);
  const r = check.integer(c.r, `${what}: ${file}: r`, 1);
  const alpha = check.number(c.lora_alpha ?? 8, `${what}: ${file}: lora_alpha`);
  const dropout = check.number(c.lora_dropout ?? 0, `${what}: ${file}: lora_dropout`);
  const mts = c.modules_to_save ?? [];
  if (!Array.isArray(mts) || !mts.every((m) => typeof m === 'string')) throw new Error(`${what}: ${file}: modules_to_save must be a list of names`);
  return { r, alpha, dropout, modulesToSave: mts as string[] };
}

/**
 * Reads an adapter written by `saveAdapter` or by Hugging Face peft's `save_pretrained` (same
 * architecture) onto `model`: attaches it when the model has none (its targets are the modules the
 * file has A and B for), then copies A, B and the saved modules' parameters in. Every shape is
 * checked before anything is copied: a mismatch is an Error (code FINETORCH_SHAPE) naming the key
 * and both shapes; a damaged safetensors file is an Error that says what is wrong.
 *
 * @example
 * const other = await torch.jit.load('resnet18.pt');
 * await torch.peft.loadAdapter(other, 'run/adapter');
 */
export async function loadAdapter(model: ScriptModule, dir: string): Promise<LoraAdapter> {
  const what = 'loadAdapter';
  if (typeof dir !== 'string' || dir === '') throw new TypeError(`${what}(model, dir): dir must be a non-empty string`);
  const config = await readConfig(dir, what);
  const file = path.join(dir, 'adapter_model.safetensors');
  let bytes: Buffer;
  try {
    bytes = await fs.promises.readFile(file);
  } catch (e) {
    throw new Error(`${what}: cannot read ${file}: ${(e as Error).message}`);
  }
  const stored = decodeSafetensors(bytes, `${what}: ${file}`);
  const shapes = layers(model);
  const targets: string[] = [];
  const rest: [string, SafeTensor][] = [];
  for (const [key, t] of stored) {
    // peft writes `base_model.model.<module>.lora_A.weight`; older files may keep the adapter name
    const m = /^(?:base_model\.model\.)?(.+)\.lora_A(?:\.default)?\.weight$/.exec(key);
    if (m) {
      if (!shapes.has(m[1])) throw new Error(`${what}: ${key} is for module '${m[1]}', which is not a Linear or Conv2d module of this model`);
      targets.push(m[1]);
    } else if (!/\.lora_B(?:\.default)?\.weight$/.test(key)) {
      rest.push([key, t]);
    }
  }
  if (targets.length === 0) throw new Error(`${what}: ${file} has no lora_A weights`);
  const order = [...shapes.keys()];
  targets.sort((a, b) => order.indexOf(a) - order.indexOf(b));
  const existing = adapters.get(model);
  if (existing) {
    if (existing.merged) throw new Error(`${what}: the model's adapter is merged; unmerge it first`);
    const same = existing.targets.length === targets.length && existing.targets.every((t, i) => t === targets[i]) && existing.rank === config.r;
    if (!same) throw new Error(`${what}: the model already has a different LoRA adapter (rank ${existing.rank} on ${existing.targets.join(', ')})`);
  }
  const find = (...keys: string[]) => keys.map((k) => stored.get(k)).find((t) => t !== undefined);
  const params = new Map(model.namedParameters());
  const plan: [string, string, SafeTensor][] = []; // [file key, parameter name, values]
  for (const t of targets) {
    for (const ab of ['lora_A', 'lora_B']) {
      const key = `${PREFIX}${t}.${ab}.weight`;
      const v = find(key, `${PREFIX}${t}.${ab}.default.weight`, `${t}.${ab}.weight`);
      if (!v) throw new Error(`${what}: ${file} has no ${key}`);
      plan.push([key, `${t}.${ab}.weight`, v]);
    }
  }
  for (const [key, v] of rest) {
    const name = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
    if (!params.has(name)) throw new Error(`${what}: ${file} has ${key}, which names no parameter of this model`);
    plan.push([key, name, v]);
  }
  // the shapes A and B will have: as the model's layers say, before anything is attached
  const expected = (name: string): number[] | undefined => {
    const m = /^(.+)\.lora_([AB])\.weight$/.exec(name);
    if (!m || !shapes.has(m[1])) return params.get(name)?.shape;
    const w = shapes.get(m[1])!;
    return m[2] === 'A' ? [config.r, ...w.slice(1)] : [w[0], config.r, ...w.slice(2).map(() => 1)];
  };
  for (const [key, name, v] of plan) {
    const want = expected(name)!;
    if (want.length !== v.shape.length || want.some((d, i) => d !== v.shape[i])) {
      throw codedError('FINETORCH_SHAPE', `${what}: ${key} has shape [${v.shape.join(', ')}] in ${file}, but this model needs [${want.join(', ')}] (r = ${config.r})`);
    }
  }
  if (!existing) {
    const modulesToSave = config.modulesToSave.filter((m) => model.namedModules().some(([n]) => n === m));
    await attach(model, targets, { rank: config.r, alpha: config.alpha, dropout: config.dropout, init: 'kaiming', modulesToSave }, what);
  }
  const live = new Map(model.namedParameters());
  for (const [, name, v] of plan) {
    const src = tensor(v.data, { shape: v.shape });
    try {
      await native.op('copy_', [live.get(name)!.handle, src.handle], [], false);
    } finally {
      src.dispose();
    }
  }
  return adapterOf(model)!;
}

/**
 * BitFit: freezes every parameter except the biases (and the parameters of `modulesToSave`, e.g. a
 * new head). Returns the names of the parameters left trainable.
 *
 * @example
 * torch.peft.bitfit(model, { modulesToSave: ['fc'] });
 */
export function bitfit(model: ScriptModule, options: { modulesToSave?: NamePattern } = {}): string[] {
  if (options === null || typeof options !== 'object') throw new TypeError('bitfit: options must be an object');
  const full = moduleNames(model, options.modulesToSave, 'bitfit: modulesToSave');
  const names = model.namedParameters().map(([n]) => n)
    .filter((n) => n === 'bias' || n.endsWith('.bias') || full.some((m) => n.startsWith(`${m}.`)));
  if (names.length === 0) throw new Error('bitfit: the model has no bias parameters (and no modulesToSave)');
  model.freeze();
  model.unfreeze(names);
  return names;
}
