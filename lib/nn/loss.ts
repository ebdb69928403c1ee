/**
 * `torch.nn.CrossEntropyLoss` and `torch.nn.functional.crossEntropy`, computed by libtorch's
 * `cross_entropy_loss`. Class indices are checked on the host first: on CUDA an out-of-range
 * label is a device-side assert that kills the whole process's CUDA context.
 */
import * as check from '../check';
import { currentGradMode } from '../autograd';
import { native, type NativeTensor } from '../native';
import { LOSS_KIND, type FusedLoss } from './losses';
import { Tensor } from '../tensor';

/** Options of `CrossEntropyLoss`, as PyTorch's. */
export interface CrossEntropyOptions {
  /** A manual rescaling weight per class, shape [C]. */
  weight?: Tensor;
  /** Targets equal to this index do not contribute (default -100). */
  ignoreIndex?: number;
  /** Smoothing in [0, 1) (default 0). */
  labelSmoothing?: number;
  /** 'mean' (default), 'sum' or 'none'. */
  reduction?: 'mean' | 'sum' | 'none';
}

const REDUCTION = { none: 0, mean: 1, sum: 2 } as const;

/** @internal Validated options in the native form. */
export function lossConfig(options: CrossEntropyOptions): { reduction: number; ignoreIndex: number; labelSmoothing: number; weight: Tensor | null } {
  if (options === null || typeof options !== 'object') throw new TypeError('CrossEntropyLoss: options must be an object');
  const reduction = options.reduction ?? 'mean';
  if (!(reduction in REDUCTION)) throw new TypeError(`CrossEntropyLoss: reduction must be 'mean', 'sum' or 'none', got ${String(reduction)}`);
  const labelSmoothing = options.labelSmoothing ?? 0;
  if (typeof labelSmoothing !== 'number' || !(labelSmoothing >= 0 && labelSmoothing < 1)) {
    throw new RangeError(`CrossEntropyLoss: labelSmoothing must be in [0, 1), got ${String(labelSmoothing)}`);
  }
  const ignoreIndex = check.integer(options.ignoreIndex ?? -100, 'CrossEntropyLoss: ignoreIndex');
  if (options.weight !== undefined && !(options.weight instanceof Tensor)) throw new TypeError('CrossEntropyLoss: weight must be a Tensor');
  return { reduction: REDUCTION[reduction], ignoreIndex, labelSmoothing, weight: options.weight ?? null };
}

/**
 * @internal Checks logits [B, C] (or [B, C, ...]) against class-index targets [B] (or [B, ...]):
 * shapes and dtype.
 */
export function checkTargets(logits: Tensor, target: Tensor, weight: Tensor | null, what: string): void {
  if (!(logits instanceof Tensor) || !(target instanceof Tensor)) throw new TypeError(`${what}: expected (logits: Tensor, target: Tensor)`);
  const ls = logits.shape;
  const ts = target.shape;
  if (ls.length < 1 || ls.length > 1 + ts.length + 1) throw new Error(`${what}: logits of shape [${ls}] do not fit targets of shape [${ts}]`);
  if (target.dtype !== 'int64' && check.isFloating(target.dtype)) {
    if (ts.join() !== ls.join()) throw new Error(`${what}: probability targets must have the logits' shape [${ls}], got [${ts}]`);
    return;
  }
  if (target.dtype !== 'int64') throw new TypeError(`${what}: class-index targets must be int64, got ${target.dtype} (use torch.tensor(labels, { dtype: 'int64' }))`);
  const batched = ls.length >= 2;
  const C = batched ? ls[1] : ls[0];
  const expected = batched ? [ls[0], ...ls.slice(2)] : [];
  if (ts.join() !== expected.join()) {
    throw new Error(`${what}: logits and labels disagree: logits [${ls}] need labels of shape [${expected}], got [${ts}]` +
      (batched && ts.length >= 1 && ts[0] !== ls[0] ? ` (batch size ${ls[0]} vs ${ts[0]})` : ''));
  }
  if (weight && (weight.ndim !== 1 || weight.shape[0] !== C)) throw new Error(`${what}: weight must have shape [${C}], got [${weight.shape}]`);
  // Label values are checked natively, before the loss kernel, on whatever device they live.
}

/**
 * Cross-entropy between logits and class indices (or class probabilities), as PyTorch's
 * `torch.nn.CrossEntropyLoss`.
 *
 * @example
 * const lossFn = new torch.nn.CrossEntropyLoss({ labelSmoothing: 0.1 });
 * const loss = await lossFn.forward(logits, labels);
 * await loss.backward();
 */
export class CrossEntropyLoss {
  readonly weight: Tensor | null;
  readonly ignoreIndex: number;
  readonly labelSmoothing: number;
  readonly reduction: 'mean' | 'sum' | 'none';
  /** @internal */
  readonly config: ReturnType<typeof lossConfig>;

  constructor(options: CrossEntropyOptions = {}) {
    this.config = lossConfig(options);
    this.weight = this.config.weight;
    this.ignoreIndex = this.config.ignoreIndex;
    this.labelSmoothing = this.config.labelSmoothing;
    this.reduction = options.reduction ?? 'mean';
  }

  /** The loss of `logits` against `target`. */
  async forward(logits: Tensor, target: Tensor): Promise<Tensor> {
    const what = 'CrossEntropyLoss';
    checkTargets(logits, target, this.weight, what);
    const inputs = [logits.handle, target.handle, ...(this.weight ? [this.weight.handle] : [])];
    const out = await native.op('crossEntropy', inputs, [this.config.reduction, this.ignoreIndex, this.labelSmoothing], currentGradMode());
    return new Tensor(out as NativeTensor);
  }

  /** @internal */
  fused(): FusedLoss {
    const { reduction, ignoreIndex, labelSmoothing, weight } = this.config;
    return { lossKind: LOSS_KIND.crossEntropy, reduction, ignoreIndex, labelSmoothing, weight };
  }
}

/**
 * Functional cross-entropy: `torch.nn.functional.crossEntropy(logits, target, options)`.
 *
 * @example
 * const loss = await torch.nn.functional.crossEntropy(logits, y, { reduction: 'sum' });
 */
export function crossEntropy(logits: Tensor, target: Tensor, options: CrossEntropyOptions = {}): Promise<Tensor> {
  return new CrossEntropyLoss(options).forward(logits, target);
}
