/**
 * `ScriptModule`: a TorchScript model loaded into libtorch, with the fine-tuning verbs (freeze,
 * unfreeze, replaceHead) and inspection (namedParameters, summary).
 */
import { AsyncLocalStorage } from 'async_hooks';
import { writeAtomic } from '../fsutil';
import { currentGradMode } from '../autograd';
import * as check from '../check';
import { keep } from '../memory';
import { native, type DType, type ModuleSnapshot, type NativeModule, type NativeTensor } from '../native';
import { Tensor } from '../tensor';
import { nameMatcher, unmatchedPatterns, type NamePattern } from './patterns';
import { disposedError } from '../errors';
import { METADATA_FILE, metadataText, type ModelMetadata } from './metadata';

/** Options of `ScriptModule.save`. */
export interface SaveOptions {
  /** Metadata to store in the file (a plain JSON object), null for none; default: the model's `metadata`. */
  metadata?: ModelMetadata | null;
  /**
   * With a LoRA adapter attached (`torch.peft.lora`): write the weights with the adapter merged in
   * (default true), or the untouched base weights (false). No adapter tensor is ever written.
   */
  merge?: boolean;
}

/** A submodule as `namedModules()` reports it. */
export interface ModuleInfo {
  /** Dotted path ('' for the root). */
  name: string;
  /** Python type name, e.g. `torch.nn.modules.linear.Linear`. */
  type: string;
}

/** One row of `summary()`. */
export interface SummaryRow {
  name: string;
  type: string;
  shape: number[][];
  parameters: number;
  trainable: number;
}

/** The table `summary()` returns; `toString()` renders it as text. */
export class ModelSummary {
  constructor(readonly rows: SummaryRow[], readonly totalParameters: number, readonly trainableParameters: number, readonly headCandidates: string[]) {}

  toString(): string {
    const header = ['name', 'type', 'shape', 'parameters', 'trainable'];
    const body = this.rows.map((r) => [
      r.name || '(root)', r.type.split('.').pop() ?? r.type, r.shape.map((s) => `[${s.join(', ')}]`).join(' '),
      r.parameters.toLocaleString('en-US'), r.trainable === r.parameters ? 'yes' : r.trainable === 0 ? 'no' : 'partly',
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i].length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 3 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
    return [
      line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line), '',
      `total parameters: ${this.totalParameters.toLocaleString('en-US')}, trainable: ${this.trainableParameters.toLocaleString('en-US')}` +
        ` (${(this.totalParameters > 0 ? (100 * this.trainableParameters) / this.totalParameters : 0).toPrecision(3)}%)`,
      `head candidates (final Linear layers): ${this.headCandidates.join(', ') || 'none'}`,
    ].join('\n');
  }
}

function wrapOutputs(v: unknown): unknown {
  if (v instanceof native.Tensor) return new Tensor(v as NativeTensor);
  if (Array.isArray(v)) return v.map(wrapOutputs);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, wrapOutputs(x)]));
  return v;
}

function unwrapInputs(v: unknown, what: string): unknown {
  if (v instanceof Tensor) {
    if (v.disposed) throw disposedError(`${what}: an input tensor was disposed`);
    return v.handle;
  }
  if (Array.isArray(v)) return v.map((x) => unwrapInputs(x, what));
  if (v !== null && typeof v === 'object') {
    if (Object.getPrototypeOf(v) !== Object.prototype) throw new TypeError(`${what}: inputs must be tensors, numbers, booleans, strings, arrays or plain objects`);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrapInputs(x, what)]));
  }
  if (v === undefined || ['number', 'boolean', 'string'].includes(typeof v) || v === null) return v;
  throw new TypeError(`${what}: inputs must be tensors, numbers, booleans, strings, arrays or plain objects (got ${typeof v})`);
}

let warnedTraced = false;

/** The fit() calls (their tokens) that the current async context runs inside. */
const trainers = new AsyncLocalStorage<ReadonlySet<object>>();

function busyError(what: string): Error {
  const message = what === 'fit'
    ? 'fit: this model is already being trained by another fit() call; await it first'
    : `${what}: this model is being trained by a fit() call that has not finished, so evaluate(), predict() and ` +
      'anything that runs or changes the model must wait; await that fit() first';
  return Object.assign(new Error(message), { code: 'FINETORCH_MODEL_BUSY' });
}

/**
 * A TorchScript model in libtorch. Made by `torch.jit.load`.
 *
 * @example
 * const model = await torch.jit.load('resnet18.pt');
 * await model.replaceHead({ numClasses: 5 });
 * model.freeze().unfreeze('fc.*');
 * const logits = await model.forward(torch.randn([1, 3, 224, 224]));
 * await model.save('finetuned.pt');
 */
export class ScriptModule {
  /** @internal */
  readonly handle: NativeModule;
  private snap!: ModuleSnapshot;
  private params: [string, Tensor][] = [];
  private buffers: [string, Tensor][] = [];
  private mode = true;
  /** The token of the fit() now training this model. */
  private trainer: object | undefined;
  /** A key per underlying parameter, shared by its handles from before and after to()/channelsLast(). */
  private readonly paramKeys = new WeakMap<Tensor, object>();
  private liveKeys = new Set<object>();
  /** Keep BatchNorm layers whose parameters are all frozen in eval mode under `train()` (default true). */
  frozenBatchNormEval = true;
  /** Where the model came from (a path, or 'buffer'). */
  readonly source: string;
  private meta: ModelMetadata | undefined;

  /** @internal Use `torch.jit.load`. */
  constructor(handle: NativeModule, snap: ModuleSnapshot, source: string) {
    this.handle = handle;
    this.source = source;
    this.adopt(snap);
    this.mode = snap.modules[0]?.training ?? true;
    if (snap.traced && !warnedTraced) {
      warnedTraced = true;
      process.emitWarning(
        `${source} was traced (torch.jit.trace), not scripted: its BatchNorm/Dropout layers keep the train/eval ` +
          'behaviour they were traced with, whatever train()/eval() says. Export with torch.jit.script for fine-tuning.',
        { code: 'FINETORCH_TRACED_MODEL' },
      );
    }
  }

  private adopt(snap: ModuleSnapshot, replaced: readonly string[] = []): void {
    const previous = new Map(this.params.map(([n, t]) => [n, this.paramKeys.get(t)]));
    this.snap = snap;
    this.params = snap.parameters.map(([n, h]) => [n, keep(new Tensor(h))]);
    this.buffers = snap.buffers.map(([n, h]) => [n, keep(new Tensor(h))]);
    this.liveKeys = new Set();
    for (const [n, t] of this.params) {
      // to() and channelsLast() swap a parameter's data in place (libtorch's set_data), so handles
      // taken before them, and optimizers built over those, still update it; replaceHead does not.
      const key = (!replaced.includes(n) && previous.get(n)) || {};
      this.paramKeys.set(t, key);
      this.liveKeys.add(key);
    }
  }

  /**
   * @internal Which of this model's parameters `t` is, as a key that stays the same across
   * `to()` and `channelsLast()`; undefined when `t` is not (or no longer) one of them.
   */
  parameterKey(t: Tensor): object | undefined {
    const key = this.paramKeys.get(t);
    return key !== undefined && this.liveKeys.has(key) ? key : undefined;
  }

  /**
   * @internal Runs `fn` as the one fit() training this model. Until it settles, another fit()
   * rejects, and so does running or changing the model from outside `fn` (evaluate, predict,
   * forward, train/eval, freeze, to, ...); the lock is released however `fn` ends.
   */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.trainer) throw busyError('fit');
    const token = {};
    this.trainer = token;
    try {
      return await trainers.run(new Set([...(trainers.getStore() ?? []), token]), fn);
    } finally {
      this.trainer = undefined;
    }
  }

  /** Throws when a fit() other than the one this code runs in is training the model. */
  private idle(what: string): void {
    if (this.trainer !== undefined && !trainers.getStore()?.has(this.trainer)) throw busyError(what);
  }

  /** True while a fit() is training this model. */
  get busy(): boolean { return this.trainer !== undefined; }

  private live(what: string): NativeModule {
    if (this.handle.disposed) throw disposedError(`${what}: the model was disposed`);
    return this.handle;
  }

  /** The device of the model's parameters ('cpu' for a model without any). */
  get device(): string { return this.params[0]?.[1].device ?? 'cpu'; }

  /** Stores 4-D weights in channels-last (NHWC) memory format, faster for convolutions on GPUs. */
  async channelsLast(): Promise<this> {
    this.idle('channelsLast()');
    await this.live('channelsLast()').channelsLast();
    this.adopt(await this.handle.snapshot());
    return this;
  }

  /** True when the model was traced rather than scripted. */
  get traced(): boolean { return this.snap.traced; }
  /** Whether the model is in training mode. */
  get training(): boolean { return this.mode; }
  /** True once `dispose()` has run. */
  get disposed(): boolean { return this.handle.disposed; }

  /** `[name, parameter]` pairs, as PyTorch's `named_parameters()`; `new Map(...)` makes a lookup. */
  namedParameters(): [string, Tensor][] { this.live('namedParameters()'); return this.params.map(([n, t]) => [n, t]); }
  /** `[name, buffer]` pairs (BatchNorm running statistics, ...). */
  namedBuffers(): [string, Tensor][] { this.live('namedBuffers()'); return this.buffers.map(([n, t]) => [n, t]); }
  /** `[name, { name, type }]` pairs for the root ('') and every submodule. */
  namedModules(): [string, ModuleInfo][] {
    this.live('namedModules()');
    return this.snap.modules.map((m) => [m.name, { name: m.name, type: m.type }]);
  }
  /** The live parameters (optionally only the trainable ones) an optimizer updates. */
  parameters(options: { trainable?: boolean } = {}): Tensor[] {
    return this.namedParameters().map(([, t]) => t).filter((t) => options.trainable === undefined || t.requiresGrad === options.trainable);
  }
  /** The number of parameter elements (optionally only trainable ones). */
  numParameters(options: { trainable?: boolean } = {}): number {
    return this.parameters(options).reduce((a, t) => a + t.numel, 0);
  }
  /** The method names the model exports (`forward`, ...), with their TorchScript signatures. */
  methods(): { name: string; args: { name: string; type: string }[]; returns: string }[] {
    return this.snap.methods.map((m) => ({ name: m.name, args: m.args.map(({ name, type }) => ({ name, type })), returns: m.returns }));
  }

  /**
   * Layers that could be the classification head, last first: every Linear layer, and a 1x1
   * Conv2d that is the model's last layer with a weight (SqueezeNet's `classifier.1`).
   */
  headCandidates(): string[] {
    const p = new Map(this.params);
    const named = this.snap.modules.filter((m) => m.name !== '');
    const linear = named.filter((m) => /(^|\.)Linear$/.test(m.type) && (p.get(`${m.name}.weight`)?.ndim ?? 0) === 2).map((m) => m.name).reverse();
    const weighted = named.filter((m) => p.has(`${m.name}.weight`));
    const last = weighted[weighted.length - 1];
    const w = last && p.get(`${last.name}.weight`)!;
    const conv = last && /(^|\.)Conv2d$/.test(last.type) && w!.ndim === 4 && w!.shape[2] === 1 && w!.shape[3] === 1 ? [last.name] : [];
    return [...conv, ...linear];
  }

  /**
   * The auxiliary classifiers that go with the head `head` (default: the first head candidate):
   * Linear layers inside a module whose name says aux (Inception v3's `AuxLogits.fc`, GoogLeNet's
   * `aux1.fc2`) with as many outputs as the head. `replaceHead` replaces them too.
   *
   * @example
   * inception.auxiliaryHeads(); // ['AuxLogits.fc']
   */
  auxiliaryHeads(head?: string): string[] {
    const candidates = this.headCandidates();
    const main = head ?? candidates[0];
    const p = new Map(this.params);
    const outputs = p.get(`${main}.weight`)?.shape[0];
    if (outputs === undefined) return [];
    return candidates.filter((c) => c !== main && /(^|\.)[^.]*aux[^.]*\./i.test(c) && p.get(`${c}.weight`)!.shape[0] === outputs).reverse();
  }

  /**
   * A table of submodules that own parameters: name, type, parameter shapes, counts, trainable.
   *
   * @example
   * console.log(model.summary().toString());
   */
  summary(): ModelSummary {
    const rows: SummaryRow[] = [];
    for (const m of this.snap.modules) {
      // a LoRA target's adapter (`<m>.lora_A.weight`) shows in the target's row
      const owner = (n: string) => n.slice(0, n.lastIndexOf('.')).replace(/\.lora_[AB]$/, '');
      const own = this.params.filter(([n]) => owner(n) === m.name || (m.name === '' && !n.includes('.')));
      if (own.length === 0) continue;
      rows.push({
        name: m.name, type: m.type, shape: own.map(([, t]) => t.shape),
        parameters: own.reduce((a, [, t]) => a + t.numel, 0),
        trainable: own.reduce((a, [, t]) => a + (t.requiresGrad ? t.numel : 0), 0),
      });
    }
    return new ModelSummary(rows, this.numParameters(), this.numParameters({ trainable: true }), this.headCandidates());
  }

  /** @internal Takes a fresh snapshot (parameters, modules) after a native change such as a LoRA adapter. */
  async refresh(what: string): Promise<void> {
    this.idle(what);
    this.adopt(await this.live(what).snapshot());
    if (this.mode) this.train(true);
  }

  /** Training mode (`train(false)` is `eval()`). Frozen BatchNorm layers stay in eval mode. Returns this. */
  train(mode = true): this {
    check.boolean(mode, 'train(mode)');
    const h = this.live('train()');
    this.idle(mode ? 'train()' : 'eval()');
    this.mode = mode;
    void h.setTraining('', mode, true);
    if (mode && this.frozenBatchNormEval) {
      const p = new Map(this.params);
      for (const m of this.snap.modules) {
        if (!/BatchNorm/.test(m.type)) continue;
        const own = [`${m.name}.weight`, `${m.name}.bias`].map((n) => p.get(n)).filter((t): t is Tensor => t !== undefined);
        // Running statistics of a frozen BatchNorm must not drift while the rest trains.
        if (own.length > 0 && own.every((t) => !t.requiresGrad)) void h.setTraining(m.name, false, false);
      }
    }
    return this;
  }
  /** Evaluation mode. Returns this. */
  eval(): this { return this.train(false); }

  private setTrainable(patterns: NamePattern | undefined, flag: boolean, what: string): this {
    this.live(what);
    this.idle(what);
    const match = nameMatcher(patterns, what);
    if (patterns !== undefined) {
      const names = this.params.map(([n]) => n);
      const missed = unmatchedPatterns(patterns, names, what);
      if (missed.length > 0) {
        // Every entry must select something: a typo next to a pattern that matches is still a typo.
        const of = Array.isArray(patterns) && patterns.length > 1 ? ` (${missed.length} of the ${patterns.length} patterns given)` : '';
        throw new Error(`${what}: no parameter matches ${missed.map(String).join(', ')}${of}; names look like '${names[0] ?? ''}'`);
      }
    }
    const hits = this.params.filter(([n]) => match(n));
    for (const [, t] of hits) if (check.isFloating(t.dtype)) t.requiresGrad = flag;
    if (this.mode) this.train(true);
    return this;
  }
  /**
   * Stops gradients for parameters matching `patterns` (all when omitted). Every pattern of a list
   * must match at least one parameter, or nothing changes and an Error names the ones that did not.
   * Returns this.
   */
  freeze(patterns?: NamePattern): this { return this.setTrainable(patterns, false, 'freeze()'); }
  /**
   * Lets parameters matching `patterns` (all when omitted) train again: `unfreeze('layer4.**')`.
   * As in `freeze`, every pattern of a list must match at least one parameter. Returns this.
   */
  unfreeze(patterns?: NamePattern): this { return this.setTrainable(patterns, true, 'unfreeze()'); }

  /**
   * Replaces the classification head with a freshly initialised layer of `numClasses` outputs, as
   * `torch.nn.Linear` (or `Conv2d`) initialises it. Without `name`, picks the final Linear (ResNet
   * `fc`, VGG and AlexNet `classifier.6`, DenseNet `classifier`, ViT `heads.head`, BERT `classifier`)
   * or a final 1x1 Conv2d (SqueezeNet `classifier.1`), and reports it. Auxiliary heads of the same
   * outputs (Inception v3's `AuxLogits.fc`, see `auxiliaryHeads`) are replaced too, and reported,
   * unless `aux: false`. The new layers are trainable. Resolves to the head's name.
   *
   * @example
   * const head = await model.replaceHead({ numClasses: 5 }); // 'fc'
   */
  async replaceHead(options: { numClasses: number; name?: string; aux?: boolean; log?: (msg: string) => void }): Promise<string> {
    if (options === null || typeof options !== 'object') throw new TypeError('replaceHead: expected { numClasses, name? }');
    check.integer(options.numClasses, 'replaceHead: numClasses', 1, 1 << 24);
    if (options.aux !== undefined) check.boolean(options.aux, 'replaceHead: aux');
    const h = this.live('replaceHead()');
    this.idle('replaceHead()');
    const candidates = this.headCandidates();
    const log = options.log ?? ((m: string) => process.stderr.write(`finetorch: ${m}\n`));
    const params = new Map(this.params);
    const describe = (layer: string) => {
      const w = params.get(`${layer}.weight`)!;
      const kind = w.ndim === 4 ? `Conv2d 1x1` : 'Linear';
      return [`(${kind} ${w.shape[1]} -> ${w.shape[0]})`, `now ${w.shape[1]} -> ${options.numClasses}`];
    };
    let name = options.name;
    if (name === undefined) {
      if (candidates.length === 0) {
        const mods = this.snap.modules.filter((m) => m.name).slice(-8).map((m) => `${m.name} (${m.type.split('.').pop()})`);
        throw new Error(`replaceHead: the model has no Linear layer (or final 1x1 Conv2d) to replace; its last modules are: ${mods.join(', ') || 'none'}`);
      }
      name = candidates[0];
      log(`replaceHead chose '${name}' ${describe(name).join(', ')}`);
    } else if (!candidates.includes(name)) {
      throw new Error(`replaceHead: '${name}' is not a Linear layer (or final 1x1 Conv2d) of this model; candidates: ${candidates.join(', ') || 'none'}`);
    }
    if (params.has(`${name}.lora_A.weight`)) throw new Error(`replaceHead: '${name}' carries a LoRA adapter; replace the head before torch.peft.lora (and list it in modulesToSave)`);
    const aux = options.aux === false ? [] : this.auxiliaryHeads(name);
    for (const a of aux) log(`replaceHead also replaced the auxiliary head '${a}' ${describe(a).join(', ')}`);
    for (const layer of [name, ...aux]) await h.replaceHeadLayer(layer, options.numClasses);
    this.adopt(await h.snapshot(), [name, ...aux].flatMap((l) => [`${l}.weight`, `${l}.bias`]));
    if (this.mode) this.train(true);
    return name;
  }

  /** Moves (and optionally casts) every parameter and buffer: `await model.to('cuda')`. */
  async to(device: string, dtype?: DType): Promise<this> {
    const d = check.device(device, 'model.to()');
    const t = dtype === undefined ? null : check.dtype(dtype, 'model.to()');
    const h = this.live('model.to()');
    this.idle('model.to()');
    await h.to(d, t);
    this.adopt(await h.snapshot());
    return this;
  }

  /** Runs `forward` with the given inputs (tensors, numbers, booleans, strings, arrays, plain objects). */
  forward(...inputs: unknown[]): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    return this.runMethod('forward', ...inputs);
  }

  /**
   * Runs any exported method by name. Outputs come back as a Tensor, an array (tuple/list) or a
   * plain object (dict), nested as needed.
   *
   * @example
   * const [logits, features] = await model.runMethod('forward_features', x);
   */
  async runMethod(name: string, ...inputs: unknown[]): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const h = this.live(String(name));
    this.idle(String(name));
    const method = this.snap.methods.find((m) => m.name === name);
    if (!method) throw new Error(`runMethod: the model has no method '${String(name)}'; it has ${this.snap.methods.map((m) => m.name).join(', ')}`);
    const required = method.args.filter((a) => !a.hasDefault).length;
    if (inputs.length < required || inputs.length > method.args.length) {
      const sig = method.args.map((a) => `${a.name}: ${a.type}`).join(', ');
      throw new Error(`${name}: expects ${required === method.args.length ? required : `${required} to ${method.args.length}`} input(s) (${sig}), got ${inputs.length}`);
    }
    inputs.forEach((v, i) => {
      if (method.args[i].type === 'Tensor' && !(v instanceof Tensor)) {
        throw new TypeError(`${name}: input ${i} (${method.args[i].name}) must be a Tensor, got ${v === null ? 'null' : typeof v}`);
      }
    });
    const raw = unwrapInputs(inputs, name) as unknown[];
    return wrapOutputs(await h.runMethod(name, raw, currentGradMode()));
  }

  /**
   * The model's metadata: the JSON object stored in its file as `finetorch.json` (see
   * `train.describe` for what finetorch records there), or undefined when it has none. A loaded
   * model keeps its file's metadata, and `save` writes it back unless told otherwise. Setting it
   * checks it (a plain JSON object; `classes`, `task`, `transform`... of the right types) and
   * stores a copy; set undefined or null to drop it.
   *
   * @example
   * const model = await torch.jit.load('run/model.pt');
   * console.log(model.metadata?.classes); // ['cat', 'dog']
   * model.metadata = train.describe({ classes: ['cat', 'dog'], transform: transforms.imagenet({ train: false }) });
   */
  get metadata(): ModelMetadata | undefined { return this.meta; }
  set metadata(value: ModelMetadata | undefined | null) {
    const text = metadataText(value, 'metadata');
    this.meta = text === undefined ? undefined : JSON.parse(text);
  }

  /**
   * Saves as TorchScript (Python's `torch.jit.load` reads it). Atomic: written to a temporary file
   * in the same folder, flushed, then renamed over `file`, so a crash never leaves half a file; on
   * failure the temporary file is removed and the Error names the file and the cause (`ENOSPC`,
   * `EROFS`, `EACCES`, in its `code` too). A path ending in '/' or naming a folder is an Error.
   * `metadata` goes into the archive as `finetorch.json` (Python reads it with
   * `torch.jit.load(path, _extra_files={'finetorch.json': ''})`); by default the model's own
   * `metadata`, null for none.
   *
   * @example
   * await model.save('out/model.pt');
   * await model.save('out/model.pt', { metadata: train.describe({ classes, transform, task: 'single-label' }) });
   */
  async save(file: string, options: SaveOptions = {}): Promise<void> {
    if (typeof file !== 'string' || file === '') throw new TypeError('save(path): path must be a non-empty string');
    // libtorch serializes in memory; the disk write is Node's, so a full disk is an Error, not an abort.
    await writeAtomic(file, await this.serialize(options, 'save'), 'save');
  }

  /** @internal The TorchScript file's bytes, as `save` writes them (checkpoints write these too). */
  async serialize(options: SaveOptions = {}, what = 'serialize'): Promise<Buffer> {
    if (options === null || typeof options !== 'object') throw new TypeError(`${what}: options must be an object`);
    const text = metadataText(options.metadata === undefined ? this.meta : options.metadata, what);
    if (options.merge !== undefined) check.boolean(options.merge, `${what}: merge`);
    return this.live('save()').save(text === undefined ? undefined : { [METADATA_FILE]: text }, options.merge ?? true);
  }

  /** Frees the model (its parameters live on while other handles use them). */
  dispose(): void { this.handle.dispose(); }
  [Symbol.dispose](): void { this.dispose(); }
}
