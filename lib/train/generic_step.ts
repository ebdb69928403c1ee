/**
 * The training step for every model and loss the fused native step does not cover (inputs that
 * are several tensors, outputs that are tuples or dicts, losses other than cross-entropy, a
 * user's loss function): forward (under autocast with `amp`, in one native task), the loss in
 * float32, `backward()` scaled by 1/gradAccumulation (and the fp16 loss scale), and, when the
 * accumulation window closes, the same native update the fused step applies (fp16 unscale and
 * overflow skip, clip, step, zero-grad). It costs a few round trips to the executor per batch
 * instead of one.
 */
import { noGrad } from '../autograd';
import { codedError } from '../errors';
import type { ScriptModule } from '../jit/module';
import { native } from '../native';
import { CrossEntropyLoss } from '../nn/loss';
import { BCEWithLogitsLoss, HuberLoss, MSELoss, SmoothL1Loss, type LossFunction } from '../nn/losses';
import type { Optimizer } from '../optim/optimizer';
import { Tensor } from '../tensor';
import type { Batch, ModelInput } from './batch';
import { describeInput, disposeOutput, inputBatchSize, runForward, type OutputChoice } from './model_io';

/**
 * What `fit` and `evaluate` accept as `loss`: a built-in loss object or a user's function.
 *
 * @example
 * const loss: train.FitLoss = new torch.nn.BCEWithLogitsLoss();
 */
export type FitLoss = CrossEntropyLoss | BCEWithLogitsLoss | MSELoss | SmoothL1Loss | HuberLoss | LossFunction;

/** @internal Checks a `loss` option. */
export function checkLoss(loss: unknown, what: string): void {
  if (loss === undefined || typeof loss === 'function') return;
  if (loss instanceof CrossEntropyLoss || loss instanceof BCEWithLogitsLoss || loss instanceof MSELoss ||
      loss instanceof SmoothL1Loss || loss instanceof HuberLoss) return;
  throw new TypeError(`${what}: loss must be a torch.nn loss (CrossEntropyLoss, BCEWithLogitsLoss, MSELoss, SmoothL1Loss, HuberLoss) ` +
    'or a function (output, target) => Promise<Tensor>');
}

/** @internal The scalar loss of `pred` against `target`, from a loss object or a function. */
export async function computeLoss(lossFn: FitLoss, pred: Tensor, target: Tensor, what: string): Promise<Tensor> {
  const loss = typeof lossFn === 'function' ? await lossFn(pred, target) : await lossFn.forward(pred, target);
  if (!(loss instanceof Tensor)) throw new TypeError(`${what}: the loss function must resolve to a Tensor, got ${loss === null ? 'null' : typeof loss}`);
  if (loss.numel !== 1) {
    const shape = loss.shape;
    loss.dispose();
    throw codedError('FINETORCH_SHAPE', `${what}: the loss must be a single value to train on, got shape [${shape}] (use reduction 'mean' or 'sum')`);
  }
  return loss;
}

/** @internal Correct top-1 predictions when `pred` is [B, C] scores for int64 class indices [B]; null otherwise. */
export async function countCorrect(pred: Tensor, target: Tensor): Promise<number | null> {
  if (target.dtype !== 'int64' || pred.ndim !== 2 || target.ndim !== 1 || pred.shape[0] !== target.shape[0]) return null;
  return noGrad(async () => {
    const top = await pred.argmax(1);
    const same = await top.eq(target);
    const n = await same.sum();
    const value = Number(await n.item());
    top.dispose(); same.dispose(); n.dispose();
    return value;
  });
}

/** @internal What one generic step needs from fit. */
export interface GenericStepContext {
  model: ScriptModule;
  optimizer: Optimizer;
  loss: FitLoss;
  output?: OutputChoice;
  device: string;
  accumulation: number;
  clipGradNorm: number;
  /** 0 none, 1 bf16, 2 fp16 (as native.trainStep's). */
  amp: number;
}

/** @internal One batch through forward, loss and backward; applies the update when `doStep`. */
export async function genericStep(ctx: GenericStepContext, b: Batch<ModelInput>, doStep: boolean): Promise<{ loss: number; correct: number | null; total: number; skipped: boolean }> {
  const what = 'fit';
  const n = inputBatchSize(b.input);
  if (n !== undefined && b.target.ndim > 0 && n !== b.target.shape[0]) {
    throw codedError('FINETORCH_SHAPE', `inputs and targets disagree: ${n} inputs (${describeInput(b.input)}) but ${b.target.shape[0]} targets (shape [${b.target.shape}])`);
  }
  const total = b.target.ndim > 0 ? b.target.shape[0] : 1;
  const target = b.target.device === ctx.device ? b.target : await b.target.to(ctx.device);
  const made: Tensor[] = target === b.target ? [] : [target];
  let out: unknown;
  try {
    const r = await runForward(ctx.model, b.input, ctx.device, ctx.output, what, ctx.amp);
    out = r.out;
    // Under autocast the output may be bf16/fp16; the loss is computed in float32, as the fused step does.
    const pred = r.pred.dtype === 'bfloat16' || r.pred.dtype === 'float16' ? await r.pred.to({ dtype: 'float32' }) : r.pred;
    if (pred !== r.pred) made.push(pred);
    const loss = await computeLoss(ctx.loss, pred, target, what);
    made.push(loss);
    const value = Number(await loss.item());
    if (!Number.isFinite(value)) {
      // No update from a non-finite loss (the accumulated window goes too), as in the fused step.
      await ctx.optimizer.zeroGrad();
      return { loss: value, correct: null, total, skipped: false };
    }
    await native.scaledBackward(ctx.optimizer.handle, loss.handle, { factor: 1 / ctx.accumulation, amp: ctx.amp });
    const correct = await countCorrect(pred, target);
    let skipped = false;
    if (doStep) skipped = (await native.applyStep(ctx.optimizer.handle, { clipNorm: ctx.clipGradNorm, amp: ctx.amp })).skipped;
    return { loss: value, correct, total, skipped };
  } finally {
    disposeOutput(out);
    for (const t of made) t.dispose();
  }
}
