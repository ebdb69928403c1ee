/**
 * Optimizers over live parameters: AdamW and SGD, stepped by libtorch's own implementations
 * (torch::optim), with PyTorch's parameter groups and per-group learning rates.
 */
import * as check from '../check';
import { native, type NativeGroup, type NativeOptimizer } from '../native';
import { Tensor } from '../tensor';
import { disposedError } from '../errors';

/** A parameter group: its tensors and any option that differs from the optimizer's defaults. */
export interface ParamGroupInput {
  params: Tensor[];
  options?: never;
  [key: string]: unknown;
}

/** A live parameter group; setting `lr` takes effect from the next queued step. */
export interface ParamGroup {
  readonly params: Tensor[];
  lr: number;
  /** The lr the group had when the first scheduler attached (PyTorch's `initial_lr`). */
  initialLr?: number;
  readonly [option: string]: unknown;
}

/** What `stateDict()` returns: plain data plus libtorch's serialized optimizer state. */
export interface OptimizerState {
  kind: string;
  groups: { lr: number; initialLr?: number }[];
  state: Buffer;
}

type Kind = 'adamw' | 'sgd';

/** The common part of AdamW and SGD. */
export abstract class Optimizer {
  /** @internal */
  readonly handle: NativeOptimizer;
  readonly paramGroups: ParamGroup[];
  /** 'adamw' or 'sgd': which libtorch optimizer steps these parameters. */
  readonly kind: Kind;
  private readonly what: string;
  private readonly defaults: Record<string, unknown>;
  private readonly validate: (o: Record<string, unknown>, what: string) => void;

  protected constructor(kind: Kind, what: string, params: Tensor[] | ParamGroupInput[], defaults: Record<string, unknown>, validate: (o: Record<string, unknown>, what: string) => void) {
    this.kind = kind;
    this.what = what;
    this.defaults = defaults;
    this.validate = validate;
    if (!Array.isArray(params) || params.length === 0) throw new TypeError(`${what}: expected a non-empty array of parameters or parameter groups`);
    const groups = (params[0] instanceof Tensor ? [{ params: params as Tensor[] }] : params) as ParamGroupInput[];
    const native_: NativeGroup[] = [];
    this.paramGroups = [];
    groups.forEach((g, gi) => {
      const { spec, group } = this.makeGroup(g, gi);
      native_.push(spec);
      this.paramGroups.push(group);
    });
    this.handle = new native.Optimizer(kind, native_);
  }

  private makeGroup(g: ParamGroupInput, gi: number): { spec: NativeGroup; group: ParamGroup } {
    const what = this.what;
    const seen = new Set<Tensor>(this.paramGroups.flatMap((x) => x.params));
    {
      if (g === null || typeof g !== 'object' || !Array.isArray(g.params)) throw new TypeError(`${what}: group ${gi} must be { params: Tensor[], ...options }`);
      if (g.params.length === 0) throw new Error(`${what}: group ${gi} has no parameters`);
      g.params.forEach((p, pi) => {
        const where = `${what}: parameter ${pi} of group ${gi}`;
        if (!(p instanceof Tensor)) throw new TypeError(`${where} is not a Tensor`);
        if (p.disposed) throw disposedError(`${where} was disposed`);
        if (!p.requiresGrad) throw new Error(`${where} does not require grad (is it frozen? pass model.parameters({ trainable: true }))`);
        if (seen.has(p)) throw new Error(`${where} appears in more than one group`);
        seen.add(p);
      });
      const opts = { ...this.defaults, ...Object.fromEntries(Object.entries(g).filter(([k]) => k !== 'params')) };
      this.validate(opts, `${what}: group ${gi}`);
      return {
        spec: { ...(opts as Omit<NativeGroup, 'params'>), params: g.params.map((p) => p.handle) },
        group: this.liveGroup(gi, [...g.params], opts),
      };
    }
  }

  /**
   * Adds a parameter group (PyTorch's `add_param_group`), e.g. the backbone layers unfrozen in a
   * second stage of fine-tuning, with their own learning rate.
   *
   * @example
   * model.unfreeze('layer4.**');
   * await opt.addParamGroup({ params: layer4Params, lr: 1e-4 });
   */
  async addParamGroup(group: { params: Tensor[]; [option: string]: unknown }): Promise<void> {
    const h = this.live('addParamGroup()');
    const { spec, group: live } = this.makeGroup(group as ParamGroupInput, this.paramGroups.length);
    this.paramGroups.push(live);
    await h.addParamGroup(spec);
  }

  private liveGroup(index: number, params: Tensor[], opts: Record<string, unknown>): ParamGroup {
    let lr = opts.lr as number;
    const group = { ...opts, params } as ParamGroup;
    Object.defineProperty(group, 'lr', {
      enumerable: true,
      get: () => lr,
      set: (v: number) => {
        if (typeof v !== 'number' || !(v >= 0)) throw new RangeError(`lr must be a number >= 0, got ${String(v)}`);
        lr = v;
        this.live('lr').setLr(index, v);
      },
    });
    return group;
  }

  private live(what: string): NativeOptimizer {
    if (this.handle.disposed) throw disposedError(`${what}: the optimizer was disposed`);
    return this.handle;
  }

  /** True once `dispose()` has run. */
  get disposed(): boolean { return this.handle.disposed; }

  /** Every parameter this optimizer updates. */
  get params(): Tensor[] { return this.paramGroups.flatMap((g) => g.params); }

  /** Applies one update from the accumulated gradients. */
  step(): Promise<void> {
    try {
      const h = this.live('step()');
      const dead = this.params.findIndex((p) => p.disposed);
      if (dead >= 0) throw disposedError(`step(): parameter ${dead} was disposed`);
      return h.step();
    } catch (e) { return Promise.reject(e); }
  }

  /** Clears the gradients of every parameter. */
  zeroGrad(): Promise<void> {
    try { return this.live('zeroGrad()').zeroGrad(); } catch (e) { return Promise.reject(e); }
  }

  /** The optimizer's state (moments, step counts) and group learning rates. */
  async stateDict(): Promise<OptimizerState> {
    const state = await this.live('stateDict()').stateDict();
    return { kind: this.kind, groups: this.paramGroups.map((g) => ({ lr: g.lr, initialLr: g.initialLr })), state };
  }

  /** Restores what `stateDict()` returned (same parameters, same groups). */
  async loadStateDict(s: OptimizerState): Promise<void> {
    if (!s || s.kind !== this.kind || !Buffer.isBuffer(s.state) || s.groups.length !== this.paramGroups.length) {
      throw new Error(`loadStateDict: expected the state of a ${this.kind} optimizer with ${this.paramGroups.length} group(s)`);
    }
    await this.live('loadStateDict()').loadStateDict(s.state);
    s.groups.forEach((g, i) => {
      this.paramGroups[i].lr = g.lr;
      if (g.initialLr !== undefined) this.paramGroups[i].initialLr = g.initialLr;
    });
  }

  /** Frees the optimizer's state. */
  dispose(): void { this.handle.dispose(); }
  [Symbol.dispose](): void { this.dispose(); }
}

/** AdamW's options, as PyTorch's (camelCase). */
export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  amsgrad?: boolean;
}

function positive(o: Record<string, unknown>, key: string, what: string, allowZero = true): void {
  const v = o[key];
  if (typeof v !== 'number' || Number.isNaN(v) || v < 0 || (!allowZero && v === 0)) throw new RangeError(`${what}: ${key} must be a number ${allowZero ? '>=' : '>'} 0, got ${String(v)}`);
}

/**
 * AdamW (decoupled weight decay), as `torch.optim.AdamW`. Accepts parameters or parameter groups.
 *
 * @example
 * const opt = new torch.optim.AdamW([
 *   { params: backbone, lr: 1e-4 },
 *   { params: head, lr: 1e-3, weightDecay: 0 },
 * ], { lr: 1e-3, weightDecay: 0.01 });
 */
export class AdamW extends Optimizer {
  constructor(params: Tensor[] | (AdamWOptions & { params: Tensor[] })[], options: AdamWOptions = {}) {
    super('adamw', 'AdamW', params as ParamGroupInput[], { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, amsgrad: false, ...options }, (o, what) => {
      positive(o, 'lr', what);
      positive(o, 'eps', what);
      positive(o, 'weightDecay', what);
      const b = o.betas as unknown;
      if (!Array.isArray(b) || b.length !== 2 || !b.every((x) => typeof x === 'number' && x >= 0 && x < 1)) {
        throw new RangeError(`${what}: betas must be two numbers in [0, 1), got ${JSON.stringify(b)}`);
      }
      check.boolean(o.amsgrad, `${what}: amsgrad`);
    });
  }
}

/** SGD's options, as PyTorch's. */
export interface SGDOptions {
  lr?: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/**
 * Stochastic gradient descent with optional momentum and Nesterov, as `torch.optim.SGD`.
 *
 * @example
 * const opt = new torch.optim.SGD(model.parameters({ trainable: true }), { lr: 0.01, momentum: 0.9, nesterov: true });
 */
export class SGD extends Optimizer {
  constructor(params: Tensor[] | (SGDOptions & { params: Tensor[] })[], options: SGDOptions = {}) {
    super('sgd', 'SGD', params as ParamGroupInput[], { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, ...options }, (o, what) => {
      positive(o, 'lr', what);
      positive(o, 'momentum', what);
      positive(o, 'dampening', what);
      positive(o, 'weightDecay', what);
      check.boolean(o.nesterov, `${what}: nesterov`);
      if (o.nesterov && ((o.momentum as number) <= 0 || o.dampening !== 0)) throw new Error(`${what}: nesterov needs momentum > 0 and dampening 0`);
    });
  }
}
