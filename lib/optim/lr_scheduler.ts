/**
 * `torch.optim.lrScheduler`: learning-rate schedules written over the optimizer's group learning
 * rates, with the closed-form formulas PyTorch documents. As in PyTorch, constructing a scheduler
 * sets the epoch-0 rate, and `step()` advances one epoch (or one batch, for OneCycleLR).
 */
import * as check from '../check';
import type { Optimizer } from './optimizer';
import { disposedError } from '../errors';

/** A scheduler's resumable state. */
export interface SchedulerState {
  lastEpoch: number;
  baseLrs: number[];
  lastLr: number[];
  [extra: string]: unknown;
}

/** The common part of every schedule. */
export abstract class LRScheduler {
  lastEpoch = -1;
  readonly baseLrs: number[];
  protected lastLr: number[] = [];

  constructor(readonly optimizer: Optimizer, protected readonly what: string, initialStep = true) {
    if (!optimizer || !Array.isArray((optimizer as Optimizer).paramGroups)) throw new TypeError(`${what}: expected an optimizer`);
    if (optimizer.disposed) throw disposedError(`${what}: the optimizer was disposed`);
    for (const g of optimizer.paramGroups) g.initialLr ??= g.lr;
    this.baseLrs = optimizer.paramGroups.map((g) => g.initialLr as number);
    if (initialStep) this.step();
  }

  /** The learning rate of each group at `epoch` (closed form). */
  protected abstract lrAt(epoch: number): number[];

  /** Advances the schedule and writes the new rates into the optimizer's groups. */
  step(): void {
    if (this.optimizer.disposed) throw disposedError(`${this.what}.step(): the optimizer was disposed`);
    this.lastEpoch += 1;
    this.apply(this.lrAt(this.lastEpoch));
  }

  protected apply(lrs: number[]): void {
    lrs.forEach((lr, i) => { this.optimizer.paramGroups[i].lr = lr; });
    this.lastLr = lrs;
  }

  /** The rates the last `step()` set (PyTorch's `get_last_lr()`). */
  getLastLr(): number[] { return [...this.lastLr]; }

  /** The state to checkpoint. */
  stateDict(): SchedulerState { return { lastEpoch: this.lastEpoch, baseLrs: [...this.baseLrs], lastLr: [...this.lastLr] }; }

  /** Restores `stateDict()`'s output (the optimizer's rates are restored with the optimizer). */
  loadStateDict(s: SchedulerState): void {
    if (!s || typeof s.lastEpoch !== 'number' || !Array.isArray(s.baseLrs) || s.baseLrs.length !== this.baseLrs.length) {
      throw new Error(`${this.what}.loadStateDict: not a state of this scheduler`);
    }
    this.lastEpoch = s.lastEpoch;
    s.baseLrs.forEach((v, i) => { this.baseLrs[i] = v; });
    this.lastLr = [...s.lastLr];
  }
}

/**
 * Decays each rate by `gamma` every `stepSize` epochs.
 *
 * @example
 * const sched = new torch.optim.lrScheduler.StepLR(opt, { stepSize: 10, gamma: 0.1 });
 */
export class StepLR extends LRScheduler {
  readonly stepSize: number;
  readonly gamma: number;
  constructor(optimizer: Optimizer, options: { stepSize: number; gamma?: number }) {
    const stepSize = check.integer(options?.stepSize, 'StepLR: stepSize', 1);
    super(optimizer, 'StepLR', false);
    this.stepSize = stepSize;
    this.gamma = check.number(options.gamma ?? 0.1, 'StepLR: gamma');
    this.step();
  }
  protected lrAt(e: number): number[] { return this.baseLrs.map((b) => b * this.gamma ** Math.floor(e / this.stepSize)); }
}

/**
 * Cosine annealing from each base rate to `etaMin` over `tMax` steps.
 *
 * @example
 * const sched = new torch.optim.lrScheduler.CosineAnnealingLR(opt, { tMax: 30, etaMin: 1e-6 });
 */
export class CosineAnnealingLR extends LRScheduler {
  readonly tMax: number;
  readonly etaMin: number;
  constructor(optimizer: Optimizer, options: { tMax: number; etaMin?: number }) {
    const tMax = check.integer(options?.tMax, 'CosineAnnealingLR: tMax', 1);
    super(optimizer, 'CosineAnnealingLR', false);
    this.tMax = tMax;
    this.etaMin = check.number(options.etaMin ?? 0, 'CosineAnnealingLR: etaMin');
    this.step();
  }
  protected lrAt(e: number): number[] {
    return this.baseLrs.map((b) => this.etaMin + ((b - this.etaMin) * (1 + Math.cos((Math.PI * e) / this.tMax))) / 2);
  }
}

/**
 * Scales each rate linearly from `startFactor` to `endFactor` over `totalIters` steps (warm-up).
 *
 * @example
 * const warmup = new torch.optim.lrScheduler.LinearLR(opt, { startFactor: 0.1, totalIters: 5 });
 */
export class LinearLR extends LRScheduler {
  readonly startFactor: number;
  readonly endFactor: number;
  readonly totalIters: number;
  constructor(optimizer: Optimizer, options: { startFactor?: number; endFactor?: number; totalIters?: number } = {}) {
    const startFactor = options.startFactor ?? 1 / 3;
    if (!(startFactor > 0 && startFactor <= 1)) throw new RangeError(`LinearLR: startFactor must be in (0, 1], got ${startFactor}`);
    super(optimizer, 'LinearLR', false);
    this.startFactor = startFactor;
    this.endFactor = check.number(options.endFactor ?? 1, 'LinearLR: endFactor');
    this.totalIters = check.integer(options.totalIters ?? 5, 'LinearLR: totalIters', 1);
    this.step();
  }
  protected lrAt(e: number): number[] {
    const f = this.startFactor + ((this.endFactor - this.startFactor) * Math.min(this.totalIters, e)) / this.totalIters;
    return this.baseLrs.map((b) => b * f);
  }
}

/**
 * Runs schedulers one after another, switching at the given milestones (PyTorch's SequentialLR):
 * the usual warm-up then cosine.
 *
 * @example
 * const sched = new torch.optim.lrScheduler.SequentialLR(opt, {
 *   schedulers: [new LinearLR(opt, { startFactor: 0.1, totalIters: 3 }), new CosineAnnealingLR(opt, { tMax: 27 })],
 *   milestones: [3],
 * });
 */
export class SequentialLR extends LRScheduler {
  readonly schedulers: LRScheduler[];
  readonly milestones: number[];
  constructor(optimizer: Optimizer, options: { schedulers: LRScheduler[]; milestones: number[] }) {
    const { schedulers, milestones } = options ?? ({} as never);
    if (!Array.isArray(schedulers) || schedulers.length === 0) throw new TypeError('SequentialLR: schedulers must be a non-empty array');
    if (!Array.isArray(milestones) || milestones.length !== schedulers.length - 1) {
      throw new Error(`SequentialLR: expected ${schedulers.length - 1} milestone(s), got ${JSON.stringify(milestones)}`);
    }
    schedulers.forEach((s, i) => { if (s.optimizer !== optimizer) throw new Error(`SequentialLR: scheduler ${i} belongs to another optimizer`); });
    super(optimizer, 'SequentialLR', false);
    this.schedulers = schedulers;
    this.milestones = milestones;
    optimizer.paramGroups.forEach((g) => { g.lr = g.initialLr as number; });
    for (const s of schedulers) s.lastEpoch -= 1;
    schedulers[0].step();
    this.lastEpoch = 0;
    this.lastLr = schedulers[0].getLastLr();
  }
  protected lrAt(): number[] { return this.lastLr; }
  step(): void {
    this.lastEpoch += 1;
    const idx = this.milestones.filter((m) => m <= this.lastEpoch).length;
    const s = this.schedulers[idx];
    if (idx > 0 && this.milestones[idx - 1] === this.lastEpoch) {
      s.lastEpoch = -1; // PyTorch's step(0): restart this scheduler at its epoch 0
    }
    s.step();
    this.lastLr = s.getLastLr();
  }
  stateDict(): SchedulerState { return { ...super.stateDict(), schedulers: this.schedulers.map((s) => s.stateDict()) }; }
  loadStateDict(s: SchedulerState): void {
    super.loadStateDict(s);
    (s.schedulers as SchedulerState[]).forEach((x, i) => this.schedulers[i].loadStateDict(x));
  }
}

/**
 * The 1cycle policy (per batch): warm up to `maxLr`, then anneal far below the start, with
 * cosine (default) or linear annealing. Momentum cycling is not applied.
 *
 * @example
 * const sched = new torch.optim.lrScheduler.OneCycleLR(opt, { maxLr: 1e-3, totalSteps: epochs * batches });
 */
export class OneCycleLR extends LRScheduler {
  readonly totalSteps: number;
  private readonly phases: { end: number; start: 'initial' | 'max' | 'min'; to: 'initial' | 'max' | 'min' }[];
  private readonly lrs: { initial: number; max: number; min: number }[];
  private readonly anneal: (a: number, b: number, pct: number) => number;
  constructor(optimizer: Optimizer, options: { maxLr: number | number[]; totalSteps: number; pctStart?: number; annealStrategy?: 'cos' | 'linear'; divFactor?: number; finalDivFactor?: number; threePhase?: boolean }) {
    const o = options ?? ({} as never);
    const total = check.integer(o.totalSteps, 'OneCycleLR: totalSteps', 1);
    const pct = o.pctStart ?? 0.3;
    if (!(pct > 0 && pct < 1)) throw new RangeError(`OneCycleLR: pctStart must be in (0, 1), got ${pct}`);
    const maxLrs = Array.isArray(o.maxLr) ? o.maxLr : optimizer.paramGroups.map(() => o.maxLr as number);
    if (maxLrs.length !== optimizer.paramGroups.length || !maxLrs.every((x) => typeof x === 'number' && x > 0)) {
      throw new RangeError('OneCycleLR: maxLr must be a positive number (or one per group)');
    }
    const div = o.divFactor ?? 25;
    const finalDiv = o.finalDivFactor ?? 1e4;
    // PyTorch sets each group's initial_lr to maxLr / divFactor before the first step.
    optimizer.paramGroups.forEach((g, i) => { g.initialLr = maxLrs[i] / div; });
    super(optimizer, 'OneCycleLR', false);
    this.totalSteps = total;
    this.lrs = maxLrs.map((m) => ({ initial: m / div, max: m, min: m / div / finalDiv }));
    this.phases = o.threePhase
      ? [{ end: pct * total - 1, start: 'initial', to: 'max' }, { end: 2 * pct * total - 2, start: 'max', to: 'initial' }, { end: total - 1, start: 'initial', to: 'min' }]
      : [{ end: pct * total - 1, start: 'initial', to: 'max' }, { end: total - 1, start: 'max', to: 'min' }];
    this.anneal = (o.annealStrategy ?? 'cos') === 'cos'
      ? (a, b, p) => b + ((a - b) / 2) * (Math.cos(Math.PI * p) + 1)
      : (a, b, p) => (b - a) * p + a;
    this.step();
  }
  protected lrAt(step: number): number[] {
    if (step > this.totalSteps) throw new Error(`OneCycleLR: stepped ${step} times, more than totalSteps (${this.totalSteps})`);
    return this.lrs.map((l) => {
      let startStep = 0;
      for (let i = 0; i < this.phases.length; i++) {
        const ph = this.phases[i];
        if (step <= ph.end || i === this.phases.length - 1) {
          // Past the last phase (the step after the final batch) linear annealing would go below
          // zero, which PyTorch sets as is; a rate cannot be negative, so it stops at 0.
          return Math.max(0, this.anneal(l[ph.start], l[ph.to], (step - startStep) / (ph.end - startStep)));
        }
        startStep = ph.end;
      }
      return l.min;
    });
  }
}

/**
 * Lowers the rates by `factor` when a metric stops improving for `patience` epochs.
 * Call `step(metric)` after each validation.
 *
 * @example
 * const sched = new torch.optim.lrScheduler.ReduceLROnPlateau(opt, { mode: 'min', patience: 2 });
 * sched.step(valLoss);
 */
export class ReduceLROnPlateau {
  readonly mode: 'min' | 'max';
  readonly factor: number;
  readonly patience: number;
  readonly threshold: number;
  readonly thresholdMode: 'rel' | 'abs';
  readonly cooldown: number;
  readonly minLrs: number[];
  readonly eps: number;
  best: number;
  numBadEpochs = 0;
  cooldownCounter = 0;
  lastEpoch = 0;

  constructor(readonly optimizer: Optimizer, options: { mode?: 'min' | 'max'; factor?: number; patience?: number; threshold?: number; thresholdMode?: 'rel' | 'abs'; cooldown?: number; minLr?: number | number[]; eps?: number } = {}) {
    if (!optimizer || !Array.isArray(optimizer.paramGroups)) throw new TypeError('ReduceLROnPlateau: expected an optimizer');
    if (optimizer.disposed) throw disposedError('ReduceLROnPlateau: the optimizer was disposed');
    this.mode = options.mode ?? 'min';
    if (this.mode !== 'min' && this.mode !== 'max') throw new TypeError(`ReduceLROnPlateau: mode must be 'min' or 'max'`);
    this.factor = options.factor ?? 0.1;
    if (!(this.factor < 1 && this.factor >= 0)) throw new RangeError('ReduceLROnPlateau: factor must be in [0, 1)');
    this.patience = check.integer(options.patience ?? 10, 'ReduceLROnPlateau: patience', 0);
    this.threshold = options.threshold ?? 1e-4;
    this.thresholdMode = options.thresholdMode ?? 'rel';
    this.cooldown = check.integer(options.cooldown ?? 0, 'ReduceLROnPlateau: cooldown', 0);
    const m = options.minLr ?? 0;
    this.minLrs = Array.isArray(m) ? m : optimizer.paramGroups.map(() => m);
    this.eps = options.eps ?? 1e-8;
    this.best = this.mode === 'min' ? Infinity : -Infinity;
  }

  private better(a: number): boolean {
    const t = this.threshold;
    if (this.mode === 'min') return this.thresholdMode === 'rel' ? a < this.best * (1 - t) : a < this.best - t;
    return this.thresholdMode === 'rel' ? a > this.best * (1 + t) : a > this.best + t;
  }

  /** Records this epoch's metric and lowers the rates when it has plateaued. */
  step(metric: number): void {
    if (this.optimizer.disposed) throw disposedError('ReduceLROnPlateau.step(): the optimizer was disposed');
    check.number(metric, 'ReduceLROnPlateau.step(metric)');
    this.lastEpoch += 1;
    if (this.better(metric)) { this.best = metric; this.numBadEpochs = 0; } else this.numBadEpochs += 1;
    if (this.cooldownCounter > 0) { this.cooldownCounter -= 1; this.numBadEpochs = 0; }
    if (this.numBadEpochs > this.patience) {
      this.optimizer.paramGroups.forEach((g, i) => {
        const next = Math.max(g.lr * this.factor, this.minLrs[i]);
        if (g.lr - next > this.eps) g.lr = next;
      });
      this.cooldownCounter = this.cooldown;
      this.numBadEpochs = 0;
    }
  }

  getLastLr(): number[] { return this.optimizer.paramGroups.map((g) => g.lr); }
  stateDict(): SchedulerState {
    return { lastEpoch: this.lastEpoch, baseLrs: [], lastLr: this.getLastLr(), best: this.best, numBadEpochs: this.numBadEpochs, cooldownCounter: this.cooldownCounter };
  }
  loadStateDict(s: SchedulerState): void {
    this.lastEpoch = s.lastEpoch;
    // JSON turns the initial ±Infinity into null.
    this.best = typeof s.best === 'number' ? s.best : this.mode === 'min' ? Infinity : -Infinity;
    this.numBadEpochs = s.numBadEpochs as number;
    this.cooldownCounter = s.cooldownCounter as number;
  }
}
