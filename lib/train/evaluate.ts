/**
 * `train.evaluate` and `train.predict`: inference over a loader or one input, in eval mode and
 * under inference mode (no autograd bookkeeping), restoring the model's mode afterwards. What
 * `evaluate` measures follows the loss: classes get accuracy, top-k and a confusion matrix,
 * multi-label (BCEWithLogitsLoss) gets per-label F1 and average precision, regression gets MSE
 * and MAE.
 */
import { inferenceMode } from '../autograd';
import { gatherAcrossRanks, sumAcrossRanks } from '../distributed';
import type { ScriptModule } from '../jit/module';
import { DistributedDataParallel } from '../nn/parallel/distributed';
import { CrossEntropyLoss } from '../nn/loss';
import { BCEWithLogitsLoss } from '../nn/losses';
import type { Tensor } from '../tensor';
import { batches, release, type BatchSource, type ModelInput } from './batch';
import { checkLoss, computeLoss, type FitLoss } from './generic_step';
import { checkOutputChoice, disposeOutput, runForward, type OutputChoice } from './model_io';
import { ClassCounts, floats, LabelCounts } from './metrics';

/** What `evaluate` measured, by the kind of task its loss implies. */
export type EvaluateTask = 'classification' | 'multilabel' | 'regression' | 'custom';

/** Per-label results of a multi-label evaluation (BCEWithLogitsLoss). */
export interface MultiLabelResult {
  /** A label is predicted when sigmoid(logit) > threshold. */
  threshold: number;
  /** Per label: F1, precision, recall at the threshold (NaN where undefined), and average precision (NaN for a label with no positives). */
  perLabel: { f1: number; precision: number; recall: number; averagePrecision: number; support: number }[];
  /** Mean of the per-label F1 scores that are defined (macro F1). */
  meanF1: number;
  /** Mean average precision over the labels that have positives. */
  meanAP: number;
}

/** What `evaluate` returns. */
export interface EvaluateResult {
  /**
   * 'classification' (CrossEntropyLoss), 'multilabel' (BCEWithLogitsLoss), 'regression' (MSE,
   * SmoothL1, Huber), 'custom' (a loss function). Always set by `evaluate`; optional so that results
   * built by hand (for reports) need not name it.
   */
  task?: EvaluateTask;
  /**
   * Mean loss per sample: for cross-entropy the summed loss over the counted samples; for other
   * losses each batch's loss weighted by its batch size.
   */
  loss: number;
  /** Top-1 accuracy in [0, 1]; NaN unless the targets are class indices. */
  accuracy: number;
  /** Top-k accuracy (k = `topk`, 5 by default, capped at the class count); NaN unless classes. */
  topk: number;
  k: number;
  /** Alias of `topk` when k is 5. */
  top5: number;
  samples: number;
  /** `confusion[true][predicted]` counts (empty unless classes). */
  confusion: number[][];
  /** Per-class precision and recall (NaN where undefined; empty unless classes). */
  perClass: { precision: number; recall: number; support: number }[];
  /** Per-label F1 and average precision, for multi-label tasks. */
  multilabel?: MultiLabelResult;
  /** Mean squared and mean absolute error over every element, for regression tasks. */
  regression?: { mse: number; mae: number };
}

/** Options of `evaluate`. */
export interface EvaluateOptions {
  /** The loss (as fit's `loss`); it also chooses the metrics. Default CrossEntropyLoss. */
  loss?: FitLoss;
  /** k of the top-k accuracy (default 5). */
  topk?: number;
  /** Which output of a tuple/list (index) or dict (key) is the prediction (as fit's `output`). */
  output?: OutputChoice;
  /** Multi-label decision threshold on the sigmoid (default 0.5). */
  threshold?: number;
  keepBatches?: boolean;
}

function taskOf(lossFn: FitLoss): EvaluateTask {
  if (lossFn instanceof CrossEntropyLoss) return 'classification';
  if (lossFn instanceof BCEWithLogitsLoss) return 'multilabel';
  return typeof lossFn === 'function' ? 'custom' : 'regression';
}

/**
 * Loss and the metrics that fit the task over every batch of `loader`: accuracy, top-k and a
 * confusion matrix for class targets (CrossEntropyLoss, or a loss function with int64 targets);
 * per-label F1 and mean average precision for BCEWithLogitsLoss; MSE and MAE for MSELoss,
 * SmoothL1Loss and HuberLoss. Batches may hold any model input (see `ModelInput`).
 *
 * @example
 * const { accuracy, top5, confusion } = await finetorch.train.evaluate(model, valLoader);
 * const { multilabel } = await finetorch.train.evaluate(tagger, val, { loss: new torch.nn.BCEWithLogitsLoss() });
 * console.log(multilabel!.meanAP, multilabel!.perLabel.map((l) => l.f1));
 * // under DistributedDataParallel every rank evaluates its share and reports the global figures:
 * const global = await finetorch.train.evaluate(ddp, new data.DataLoader(valSet, { batchSize: 64, sampler }));
 */
export async function evaluate(modelOrDdp: ScriptModule | DistributedDataParallel, loader: BatchSource, options: EvaluateOptions = {}): Promise<EvaluateResult> {
  // Under DDP each rank sees its share; loss, sample counts, class counts and regression errors are
  // summed across ranks, and multi-label scores gathered from every rank (average precision needs
  // every score).
  const ddp = modelOrDdp instanceof DistributedDataParallel;
  const model = modelOrDdp instanceof DistributedDataParallel ? modelOrDdp.module : modelOrDdp;
  checkLoss(options.loss, 'evaluate');
  checkOutputChoice(options.output, 'evaluate');
  const threshold = options.threshold ?? 0.5;
  if (!(threshold > 0 && threshold < 1)) throw new RangeError(`evaluate: threshold must be in (0, 1), got ${String(options.threshold)}`);
  const lossFn = options.loss ?? new CrossEntropyLoss();
  const task = taskOf(lossFn);
  const ce = lossFn instanceof CrossEntropyLoss ? lossFn : null;
  const sumLoss = ce && new CrossEntropyLoss({ weight: ce.weight ?? undefined, ignoreIndex: ce.ignoreIndex, labelSmoothing: ce.labelSmoothing, reduction: 'sum' });
  const classes = new ClassCounts(options.topk ?? 5, ce?.ignoreIndex);
  const labels = new LabelCounts(threshold);
  let lossSum = 0, samples = 0, sqErr = 0, absErr = 0, elements = 0;
  const wasTraining = model.training;
  model.eval();
  try {
    for await (const b of batches(loader, 'evaluate')) {
      try {
        await inferenceMode(async () => {
          const { out, pred } = await runForward(model, b.input as ModelInput, model.device, options.output, 'evaluate');
          const target = b.target.device === pred.device ? b.target : await b.target.to(pred.device);
          try {
            const rows = target.ndim > 0 ? target.shape[0] : 1;
            const counted = task === 'classification' || task === 'custom' ? await classes.add(pred, target, task === 'classification') : rows;
            if (sumLoss) {
              const l = await sumLoss.forward(pred, target);
              lossSum += Number(await l.item());
              l.dispose();
              samples += counted;
            } else {
              const l = await computeLoss(lossFn, pred, target, 'evaluate');
              lossSum += Number(await l.item()) * rows;
              l.dispose();
              samples += rows;
            }
            if (task === 'multilabel') await labels.add(pred, target);
            if (task === 'regression') {
              const [p, y] = [await floats(pred), await floats(target)];
              for (let i = 0; i < p.length; i++) { const d = p[i] - y[i]; sqErr += d * d; absErr += Math.abs(d); }
              elements += p.length;
            }
          } finally {
            if (target !== b.target) target.dispose();
            disposeOutput(out);
          }
        });
      } finally {
        release(b, options.keepBatches ?? false);
      }
    }
  } finally {
    if (wasTraining) model.train();
  }
  if (ddp) {
    await classes.reduce(sumAcrossRanks);
    if (task === 'multilabel') await labels.gather(gatherAcrossRanks);
    [lossSum, samples, sqErr, absErr, elements] = await sumAcrossRanks([lossSum, samples, sqErr, absErr, elements]);
  }
  if (samples === 0) throw new Error('evaluate: the loader yielded no samples');
  const result: EvaluateResult = { task, loss: lossSum / samples, samples, ...classes.result() };
  if (task === 'multilabel') result.multilabel = labels.result();
  if (task === 'regression') result.regression = { mse: sqErr / elements, mae: absErr / elements };
  return result;
}

/** Options of `predict`. */
export interface PredictOptions {
  /** Which output of a tuple/list (index) or dict (key) to return (as fit's `output`). */
  output?: OutputChoice;
  /** 'softmax' over the last dimension (default: class probabilities), 'sigmoid' (multi-label), or 'none' (raw outputs, e.g. regression). */
  activation?: 'softmax' | 'sigmoid' | 'none';
}

/**
 * The model's prediction for one input batch, in eval mode and under inference mode: class
 * probabilities (softmax over the last dimension) by default, per-label probabilities with
 * `activation: 'sigmoid'`, raw values with 'none'. The input may be a tensor, an array of tensors
 * or an object of named tensors; the result is an inference tensor (clone it before training on it).
 *
 * @example
 * const probs = await finetorch.train.predict(model, images); // [B, C]
 * const tags = await finetorch.train.predict(bert, { input_ids, attention_mask }, { activation: 'sigmoid' });
 */
export async function predict(model: ScriptModule, input: ModelInput, options: PredictOptions = {}): Promise<Tensor> {
  checkOutputChoice(options.output, 'predict');
  const activation = options.activation ?? 'softmax';
  if (!['softmax', 'sigmoid', 'none'].includes(activation)) throw new TypeError(`predict: activation must be 'softmax', 'sigmoid' or 'none', got ${String(activation)}`);
  const wasTraining = model.training;
  model.eval();
  try {
    return await inferenceMode(async () => {
      const { out, pred } = await runForward(model, input, model.device, options.output, 'predict');
      try {
        return activation === 'softmax' ? await pred.softmax(-1) : activation === 'sigmoid' ? await pred.sigmoid() : await pred.clone();
      } finally {
        disposeOutput(out);
      }
    });
  } finally {
    if (wasTraining) model.train();
  }
}
