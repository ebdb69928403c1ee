/**
 * The element-wise losses beside cross-entropy: `BCEWithLogitsLoss` (multi-label), `MSELoss`,
 * `SmoothL1Loss` and `HuberLoss` (regression), each computed by libtorch's own function
 * (`binary_cross_entropy_with_logits`, `mse_loss`, `smooth_l1_loss`, `huber_loss`), so values and
 * gradients are PyTorch's. Shapes and dtypes are checked here first: PyTorch only warns when a
 * regression target broadcasts against the output ([B, 1] against [B] gives a [B, B] loss that
 * trains to the mean), which is almost always a bug, so here it is an Error.
 */
import { currentGradMode } from '../autograd';
import * as check from '../check';
import { codedError, withCode } from '../errors';
import { native, type NativeTensor } from '../native';
import { Tensor } from '../tensor';

/** How a loss reduces its per-element values: PyTorch's `reduction`. */
export type Reduction = 'mean' | 'sum' | 'none';

const REDUCTION = { none: 0, mean: 1, sum: 2 } as const;

/** @internal The built-in losses as the fused native step numbers them (native/train_step.cc's LossKind). */
export const LOSS_KIND = { crossEntropy: 0, bceWithLogits: 1, mse: 2, smoothL1: 3, huber: 4 } as const;

/**
 * @internal What fit's fused native step needs to compute a built-in loss itself, in the same
 * task as the forward and backward (native.trainStep's options).
 */
export interface FusedLoss {
  lossKind: number;
  /** 0 none, 1 mean, 2 sum. */
  reduction: number;
  ignoreIndex?: number;
  labelSmoothing?: number;
  /** SmoothL1's beta, Huber's delta. */
  lossParam?: number;
  weight: Tensor | null;
  posWeight?: Tensor | null;
}

function reductionCode(reduction: unknown, what: string): number {
  const r = reduction ?? 'mean';
  if (typeof r !== 'string' || !(r in REDUCTION)) throw new TypeError(`${what}: reduction must be 'mean', 'sum' or 'none', got ${String(r)}`);
  return REDUCTION[r as Reduction];
}

function options<T extends object>(o: T | undefined, what: string): T {
  if (o === undefined) return {} as T;
  if (o === null || typeof o !== 'object') throw new TypeError(`${what}: options must be an object`);
  return o;
}

/** @internal Checks (output, target): Tensors of one floating dtype, on one device, of one shape. */
export function checkPair(output: Tensor, target: Tensor, what: string): void {
  if (!(output instanceof Tensor) || !(target instanceof Tensor)) throw new TypeError(`${what}: expected (output: Tensor, target: Tensor)`);
  if (!check.isFloating(output.dtype)) throw withCode('FINETORCH_DTYPE', new TypeError(`${what}: the output must be floating point, got ${output.dtype}`));
  if (!check.isFloating(target.dtype)) {
    throw withCode('FINETORCH_DTYPE', new TypeError(`${what}: targets must be floating point like the output (${output.dtype}), got ${target.dtype} ` +
      "(make them with torch.tensor(values, { dtype: 'float32' }))"));
  }
  if (output.dtype !== target.dtype) throw withCode('FINETORCH_DTYPE', new TypeError(`${what}: output (${output.dtype}) and target (${target.dtype}) must have one dtype`));
  if (output.device !== target.device) throw codedError('FINETORCH_DEVICE', `${what}: output is on ${output.device} but target is on ${target.device}`);
  const os = output.shape;
  const ts = target.shape;
  if (os.join() !== ts.join()) {
    const hint = os.length === ts.length + 1 && os[os.length - 1] === 1 ? ' (squeeze the output\'s last dimension, or reshape the target to match)'
      : ts.length === os.length + 1 && ts[ts.length - 1] === 1 ? ' (squeeze the target\'s last dimension)' : '';
    throw codedError('FINETORCH_SHAPE', `${what}: output of shape [${os}] and target of shape [${ts}] must have one shape${hint}`);
  }
}

/** @internal Whether `small` broadcasts to `shape` (trailing dimensions equal or 1). */
function broadcasts(small: number[], shape: number[]): boolean {
  if (small.length > shape.length) return false;
  return small.every((d, i) => d === 1 || d === shape[shape.length - small.length + i]);
}

async function run(name: string, inputs: Tensor[], args: (number | boolean)[]): Promise<Tensor> {
  const out = await native.op(name, inputs.map((t) => t.handle), args, currentGradMode());
  return new Tensor(out as NativeTensor);
}

/** Options of `BCEWithLogitsLoss`, as PyTorch's. */
export interface BCEWithLogitsOptions extends ReductionOptions {
  /** A rescaling weight that broadcasts to the output (e.g. per label, shape [L]). */
  weight?: Tensor;
  /** The weight of positive examples per label, shape [L] (PyTorch's `pos_weight`). */
  posWeight?: Tensor;
}

/**
 * Sigmoid and binary cross-entropy in one numerically stable step, as PyTorch's
 * `torch.nn.BCEWithLogitsLoss`: the loss of multi-label classification, where every label of a
 * sample is an independent yes/no. Targets are floating point, of the output's shape ([B, L]),
 * 0 or 1 (or probabilities).
 *
 * @example
 * const lossFn = new torch.nn.BCEWithLogitsLoss({ posWeight: torch.tensor([1, 3, 3], { shape: [3] }) });
 * const loss = await lossFn.forward(logits, targets); // logits [B, 3], targets [B, 3] float32
 * await loss.backward();
 */
export class BCEWithLogitsLoss {
  readonly weight: Tensor | null;
  readonly posWeight: Tensor | null;
  readonly reduction: Reduction;
  private readonly code: number;

  constructor(opts: BCEWithLogitsOptions = {}) {
    const o = options(opts, 'BCEWithLogitsLoss');
    this.code = reductionCode(o.reduction, 'BCEWithLogitsLoss');
    this.reduction = o.reduction ?? 'mean';
    if (o.weight !== undefined && !(o.weight instanceof Tensor)) throw new TypeError('BCEWithLogitsLoss: weight must be a Tensor');
    if (o.posWeight !== undefined && !(o.posWeight instanceof Tensor)) throw new TypeError('BCEWithLogitsLoss: posWeight must be a Tensor');
    this.weight = o.weight ?? null;
    this.posWeight = o.posWeight ?? null;
  }

  /** The loss of `output` (logits) against `target` (0/1 per label, floating point). */
  forward(output: Tensor, target: Tensor): Promise<Tensor> {
    const what = 'BCEWithLogitsLoss';
    try {
      checkPair(output, target, what);
      const shape = output.shape;
      for (const [name, t] of [['weight', this.weight], ['posWeight', this.posWeight]] as const) {
        if (!t) continue;
        if (t.dtype !== output.dtype) throw withCode('FINETORCH_DTYPE', new TypeError(`${what}: ${name} must be ${output.dtype} like the output, got ${t.dtype}`));
        if (!broadcasts(t.shape, shape)) {
          throw codedError('FINETORCH_SHAPE', `${what}: ${name} of shape [${t.shape}] does not broadcast to the output's shape [${shape}]` +
            (name === 'posWeight' ? ` (give one value per label: [${shape[shape.length - 1] ?? 1}])` : ''));
        }
      }
    } catch (e) {
      return Promise.reject(e);
    }
    const inputs = [output, target, ...(this.weight ? [this.weight] : []), ...(this.posWeight ? [this.posWeight] : [])];
    return run('bceWithLogits', inputs, [this.code, this.weight !== null, this.posWeight !== null]);
  }

  /** @internal */
  fused(): FusedLoss {
    return { lossKind: LOSS_KIND.bceWithLogits, reduction: this.code, weight: this.weight, posWeight: this.posWeight };
  }
}

/** Options of every loss: how it reduces. */
export interface ReductionOptions {
  /** 'mean' (default), 'sum' or 'none'. */
  reduction?: Reduction;
}

/** Options of `MSELoss`. */
export type MSEOptions = ReductionOptions;

/** The regression losses: (output, target) of one shape, one libtorch function, one optional threshold. */
abstract class PointwiseLoss {
  readonly reduction: Reduction;
  private readonly code: number;

  protected constructor(private readonly what: string, private readonly kind: number, private readonly op: string,
      o: ReductionOptions, protected readonly param = 0) {
    this.code = reductionCode(o.reduction, what);
    this.reduction = o.reduction ?? 'mean';
  }

  /** The loss of `output` against `target`. */
  forward(output: Tensor, target: Tensor): Promise<Tensor> {
    try { checkPair(output, target, this.what); } catch (e) { return Promise.reject(e); }
    return run(this.op, [output, target], [this.code, this.param]);
  }

  /** @internal */
  fused(): FusedLoss {
    return { lossKind: this.kind, reduction: this.code, lossParam: this.param, weight: null };
  }
}

/** A threshold option (SmoothL1's beta, Huber's delta): finite and >= 0 (> 0 unless `zero`). */
function threshold(value: unknown, what: string, zero: boolean): number {
  const v = value ?? 1;
  if (typeof v !== 'number' || !Number.isFinite(v) || !(zero ? v >= 0 : v > 0)) {
    throw new RangeError(`${what} must be a finite number ${zero ? '>=' : '>'} 0, got ${String(value)}`);
  }
  return v;
}

/**
 * Mean squared error, as PyTorch's `torch.nn.MSELoss`: the usual loss of a regression head.
 * Output and target must have one shape and one floating dtype.
 *
 * @example
 * const loss = await new torch.nn.MSELoss().forward(prediction, target); // both [B, 1]
 */
export class MSELoss extends PointwiseLoss {
  constructor(opts: MSEOptions = {}) {
    super('MSELoss', LOSS_KIND.mse, 'mseLoss', options(opts, 'MSELoss'));
  }
}

/** Options of `SmoothL1Loss`: where the loss turns from quadratic to linear (`beta`, default 1, >= 0; 0 is the L1 loss). */
export interface SmoothL1Options extends ReductionOptions { beta?: number }

/**
 * Smooth L1 loss, as PyTorch's `torch.nn.SmoothL1Loss`: quadratic for errors under `beta`,
 * linear above, so outliers pull less than with MSE.
 *
 * @example
 * const loss = await new torch.nn.SmoothL1Loss({ beta: 0.5 }).forward(boxes, targetBoxes);
 */
export class SmoothL1Loss extends PointwiseLoss {
  constructor(opts: SmoothL1Options = {}) {
    const o = options(opts, 'SmoothL1Loss');
    super('SmoothL1Loss', LOSS_KIND.smoothL1, 'smoothL1Loss', o, threshold(o.beta, 'SmoothL1Loss: beta', true));
  }

  /** Where the loss turns from quadratic to linear. */
  get beta(): number { return this.param; }
}

/** Options of `HuberLoss`: where the loss turns from quadratic to linear (`delta`, default 1, > 0). */
export interface HuberOptions extends ReductionOptions { delta?: number }

/**
 * Huber loss, as PyTorch's `torch.nn.HuberLoss`: quadratic for errors under `delta`, linear
 * (with slope `delta`) above. Equals `SmoothL1Loss({ beta: delta })` times `delta`.
 *
 * @example
 * const loss = await new torch.nn.HuberLoss({ delta: 2 }).forward(prediction, target);
 */
export class HuberLoss extends PointwiseLoss {
  constructor(opts: HuberOptions = {}) {
    const o = options(opts, 'HuberLoss');
    super('HuberLoss', LOSS_KIND.huber, 'huberLoss', o, threshold(o.delta, 'HuberLoss: delta', false));
  }

  /** Where the loss turns from quadratic to linear (with slope `delta`). */
  get delta(): number { return this.param; }
}

/**
 * Functional `torch.nn.functional.binaryCrossEntropyWithLogits(output, target, options)`.
 *
 * @example
 * const loss = await torch.nn.functional.binaryCrossEntropyWithLogits(logits, targets, { reduction: 'sum' });
 */
export function binaryCrossEntropyWithLogits(output: Tensor, target: Tensor, opts: BCEWithLogitsOptions = {}): Promise<Tensor> {
  try { return new BCEWithLogitsLoss(opts).forward(output, target); } catch (e) { return Promise.reject(e); }
}

/**
 * Functional `torch.nn.functional.mseLoss(output, target, options)`.
 *
 * @example
 * const loss = await torch.nn.functional.mseLoss(prediction, target);
 */
export function mseLoss(output: Tensor, target: Tensor, opts: MSEOptions = {}): Promise<Tensor> {
  try { return new MSELoss(opts).forward(output, target); } catch (e) { return Promise.reject(e); }
}

/**
 * Functional `torch.nn.functional.smoothL1Loss(output, target, options)`.
 *
 * @example
 * const loss = await torch.nn.functional.smoothL1Loss(prediction, target, { beta: 0.5 });
 */
export function smoothL1Loss(output: Tensor, target: Tensor, opts: SmoothL1Options = {}): Promise<Tensor> {
  try { return new SmoothL1Loss(opts).forward(output, target); } catch (e) { return Promise.reject(e); }
}

/**
 * Functional `torch.nn.functional.huberLoss(output, target, options)`.
 *
 * @example
 * const loss = await torch.nn.functional.huberLoss(prediction, target, { delta: 2 });
 */
export function huberLoss(output: Tensor, target: Tensor, opts: HuberOptions = {}): Promise<Tensor> {
  try { return new HuberLoss(opts).forward(output, target); } catch (e) { return Promise.reject(e); }
}

/**
 * A user's own loss: `(output, target) => Promise<Tensor>`, resolving to a scalar that
 * `backward()` can run on (built from finetorch's tensor ops and the losses above).
 *
 * @example
 * const weighted: torch.nn.LossFunction = async (out, y) => (await torch.nn.functional.mseLoss(out, y)).mul(2);
 */
export type LossFunction = (output: Tensor, target: Tensor) => Promise<Tensor>;
