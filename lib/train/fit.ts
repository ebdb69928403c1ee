/**
 * `train.fit`: the fine-tuning loop. A one-tensor-in, one-tensor-out model trained with a
 * built-in loss takes the fused path: each batch is one queued native task (forward, loss,
 * backward, clipping, optimizer step, zero-grad), so the event loop stays free and a step costs
 * one round trip. Every other model and loss takes the generic step (generic_step.ts), which ends
 * in the same native update.
 */
import * as fs from 'fs';
import * as check from '../check';
import type { FinetorchError } from '../errors';
import type { ScriptModule } from '../jit/module';
import type { NamePattern } from '../jit/patterns';
import { native } from '../native';
import { getRank } from '../distributed';
import { DistributedDataParallel } from '../nn/parallel/distributed';
import { Tensor } from '../tensor';
import { CrossEntropyLoss } from '../nn/loss';
import { LOSS_KIND } from '../nn/losses';
import type { Optimizer } from '../optim/optimizer';
import { OneCycleLR, ReduceLROnPlateau, type LRScheduler } from '../optim/lr_scheduler';
import { batches, release, type BatchSource } from './batch';
import { checkLoss, genericStep, type FitLoss } from './generic_step';
import { checkOutputChoice, describeInput, returnsTensor, type OutputChoice } from './model_io';
import { readCheckpoint, restoreCheckpoint, saveCheckpoint, type TrainingPosition } from './checkpoint';
import { evaluate, type EvaluateResult } from './evaluate';
import { makeProgress } from './progress';

/** One epoch of history. */
export interface EpochRecord {
  epoch: number;
  loss: number;
  /** Top-1 accuracy over the epoch's batches; NaN when the targets are not class indices (multi-label, regression). */
  accuracy: number;
  valLoss?: number;
  valAccuracy?: number;
  valTop5?: number;
  /** Learning rate of each group at the end of the epoch. */
  lr: number[];
  /** Seconds the epoch's training took. */
  time: number;
  samplesPerSec: number;
  samples: number;
  skippedSteps: number;
}

/** What `fit` returns. */
export interface History {
  epochs: EpochRecord[];
  stoppedEarly: boolean;
  /** The last validation result, when a validation set was given. */
  lastValidation?: EvaluateResult;
}

/** A second stage of fine-tuning: at `epoch`, unfreeze `unfreeze` and train it at `lr`. */
export interface Stage {
  epoch: number;
  unfreeze: NamePattern;
  lr: number;
  weightDecay?: number;
}

/** Hooks for programmatic progress. */
export interface FitCallbacks {
  onEpochStart?(info: { epoch: number }): void | Promise<void>;
  /** `correct` is NaN when the targets are not class indices. */
  onBatchEnd?(info: { epoch: number; batch: number; globalStep: number; loss: number; correct: number; size: number; lr: number[] }): void | Promise<void>;
  onEpochEnd?(record: EpochRecord): void | Promise<void>;
  onCheckpoint?(info: { path: string; globalStep: number }): void | Promise<void>;
}

/** Options of `fit`. */
export interface FitOptions {
  train: BatchSource;
  val?: BatchSource;
  epochs: number;
  optimizer: Optimizer;
  /**
   * `CrossEntropyLoss` (default), `BCEWithLogitsLoss` (multi-label, float 0/1 targets [B, L]),
   * `MSELoss`, `SmoothL1Loss`, `HuberLoss` (regression), or a function `(output, target) =>
   * Promise<Tensor>` resolving to a scalar.
   */
  loss?: FitLoss;
  /**
   * Which of `forward`'s outputs the loss reads when it returns a tuple/list (an index, default 0)
   * or a dict (a key, default 'logits').
   */
  output?: OutputChoice;
  scheduler?: LRScheduler | ReduceLROnPlateau;
  /** When the scheduler steps: per 'batch' (default for OneCycleLR) or per 'epoch' (others). */
  schedulerStep?: 'batch' | 'epoch';
  gradAccumulation?: number;
  clipGradNorm?: number;
  earlyStopping?: { monitor?: 'valLoss' | 'valAccuracy'; patience: number; minDelta?: number };
  checkpoint?: { dir: string; everySteps?: number; everyEpoch?: boolean; keep?: number };
  resumeFrom?: string;
  signal?: AbortSignal;
  callbacks?: FitCallbacks;
  stages?: Stage[];
  /** Progress bar on a TTY, a line per epoch otherwise ('auto', default), or nothing (false). */
  progress?: boolean | 'auto';
  /** A non-finite loss stops training with an error (default) or skips the step. */
  nonFinite?: 'error' | 'skip';
  /** Keep the batch tensors (by default fit disposes each batch after its step). */
  keepBatches?: boolean;
  /** Train on this device (default: where the model's parameters are); batches are moved there. */
  device?: string;
  /** Mixed precision: 'bf16' or 'fp16' autocast (fp16 on CUDA, with loss scaling). */
  amp?: 'bf16' | 'fp16' | false;
  /** Channels-last (NHWC) weights and inputs, for convolution speed on GPUs. */
  channelsLast?: boolean;
}

function validate(model: ScriptModule, o: FitOptions): void {
  if (!model || typeof model.forward !== 'function') throw new TypeError('fit: the first argument must be a ScriptModule (torch.jit.load)');
  if (model.disposed) throw new Error('fit: the model was disposed');
  if (!o || typeof o !== 'object') throw new TypeError('fit: expected options { train, epochs, optimizer, ... }');
  check.integer(o.epochs, 'fit: epochs', 1);
  if (!o.optimizer || typeof o.optimizer.step !== 'function') throw new TypeError('fit: optimizer is required (new torch.optim.AdamW(...))');
  if (o.optimizer.disposed) throw new Error('fit: the optimizer was disposed');
  if (!o.train) throw new TypeError('fit: train (an iterable of { input, target } batches) is required');
  if (o.gradAccumulation !== undefined) check.integer(o.gradAccumulation, 'fit: gradAccumulation', 1);
  if (o.clipGradNorm !== undefined && !(o.clipGradNorm > 0)) throw new RangeError('fit: clipGradNorm must be > 0');
  if (o.checkpoint && (typeof o.checkpoint.dir !== 'string' || !o.checkpoint.dir)) throw new TypeError('fit: checkpoint.dir must be a folder path');
  // Found now rather than at the first checkpoint, an epoch of training later.
  if (o.checkpoint && fs.statSync(o.checkpoint.dir, { throwIfNoEntry: false })?.isDirectory() === false) {
    throw new Error(`fit: checkpoint.dir '${o.checkpoint.dir}' is a file, not a folder`);
  }
  if (o.checkpoint?.everySteps !== undefined) check.integer(o.checkpoint.everySteps, 'fit: checkpoint.everySteps', 1);
  if (o.nonFinite !== undefined && o.nonFinite !== 'error' && o.nonFinite !== 'skip') throw new TypeError("fit: nonFinite must be 'error' or 'skip'");
  if (o.amp !== undefined && o.amp !== false && o.amp !== 'bf16' && o.amp !== 'fp16') throw new TypeError("fit: amp must be 'bf16', 'fp16' or false");
  if (o.device !== undefined) check.device(o.device, 'fit: device');
  checkLoss(o.loss, 'fit');
  checkOutputChoice(o.output, 'fit');
  const device = o.device ?? model.device;
  if (o.amp === 'fp16' && !device.startsWith('cuda')) throw new Error("fit: amp 'fp16' needs a CUDA device (use 'bf16' on CPU)");
  for (const s of o.stages ?? []) {
    check.integer(s.epoch, 'fit: stages[].epoch', 0);
    if (!(s.lr >= 0)) throw new RangeError('fit: stages[].lr must be >= 0');
  }
}

/**
 * An optimizer built over another model's parameters (or over a head that replaceHead has since
 * replaced) steps tensors this model does not use, and training changes nothing: an Error. One that
 * holds only some of the trainable parameters leaves the rest as they are: a warning
 * (`process.emitWarning`, code FINETORCH_OPTIMIZER_PARTIAL), since that can be meant.
 */
function checkOptimizer(model: ScriptModule, optimizer: Optimizer): void {
  const trainable = model.namedParameters().filter(([, t]) => t.requiresGrad);
  if (trainable.length === 0) {
    throw new Error("fit: the model has no trainable parameters (all are frozen), so training would change nothing; unfreeze some first, e.g. model.unfreeze('fc.*')");
  }
  const held = new Set(optimizer.params.map((p) => model.parameterKey(p)).filter((k) => k !== undefined));
  const missing = trainable.filter(([, t]) => !held.has(model.parameterKey(t)!)).map(([n]) => n);
  const list = (names: string[]) => names.slice(0, 6).join(', ') + (names.length > 6 ? `, ... (${names.length - 6} more)` : '');
  if (missing.length === trainable.length) {
    throw new Error(`fit: the optimizer holds none of this model's ${trainable.length} trainable parameters (${list(missing)}), so training ` +
      "would change nothing; was it built over another model's parameters, or before replaceHead()? Build it with model.parameters({ trainable: true })");
  }
  if (missing.length > 0) {
    process.emitWarning(`fit: the optimizer holds ${trainable.length - missing.length} of this model's ${trainable.length} trainable parameters; ` +
      `these will not be trained: ${list(missing)}. Add them with optimizer.addParamGroup(), or freeze them`, { code: 'FINETORCH_OPTIMIZER_PARTIAL' });
  }
}

async function applyStage(model: ScriptModule, optimizer: Optimizer, stage: Stage): Promise<void> {
  const before = new Set(model.parameters({ trainable: true }));
  model.unfreeze(stage.unfreeze);
  const added = model.parameters({ trainable: true }).filter((p) => !before.has(p));
  if (added.length > 0) await optimizer.addParamGroup({ params: added, lr: stage.lr, ...(stage.weightDecay !== undefined ? { weightDecay: stage.weightDecay } : {}) });
}

/**
 * Trains `model` for `epochs` over `train`, validating on `val` after each epoch. Resolves to the
 * per-epoch history (loss, accuracy, lr, time, samples/s).
 *
 * Any model and loss: a batch's `input` may be a tensor, an array of tensors or an object of named
 * tensors (see `ModelInput`); `output` picks the prediction out of a tuple or dict; `loss` may be
 * any torch.nn loss or a function. One input tensor, a Tensor output and a built-in loss
 * (`CrossEntropyLoss` on int64 labels, `BCEWithLogitsLoss`, `MSELoss`, `SmoothL1Loss`, `HuberLoss`;
 * reduction 'mean' or 'sum') train in one fused native task per batch; the rest through the
 * generic step, which applies the same update (accumulation, clipping, amp). Accuracy is NaN where targets are not
 * class indices.
 *
 * While it runs, the model is fit's alone: a second `fit`, `evaluate` or `predict` on it (or
 * running or changing it from outside fit's callbacks) rejects with a "busy" Error, until this
 * call settles. An optimizer that holds none of the model's trainable parameters is an Error; one
 * that holds only some of them is a warning (`process.emitWarning`, FINETORCH_OPTIMIZER_PARTIAL).
 *
 * @example
 * const history = await finetorch.train.fit(model, {
 *   train: trainLoader, val: valLoader, epochs: 5,
 *   optimizer: new torch.optim.AdamW(model.parameters({ trainable: true }), { lr: 1e-3 }),
 *   loss: new torch.nn.CrossEntropyLoss({ labelSmoothing: 0.1 }),
 *   checkpoint: { dir: 'runs/ckpt' },
 * });
 * // a BERT-like model (forward(input_ids, attention_mask) -> { logits }) with multi-label targets:
 * await finetorch.train.fit(bert, {
 *   train: [{ input: { input_ids, attention_mask }, target: labels01 }], epochs: 3, optimizer,
 *   loss: new torch.nn.BCEWithLogitsLoss(),
 * });
 */
export async function fit(model: ScriptModule | DistributedDataParallel, options: FitOptions): Promise<History> {
  // A DistributedDataParallel trains its module; it only adds the gradient all-reduce to each step.
  const ddp = model instanceof DistributedDataParallel ? model : undefined;
  const m = ddp?.module ?? (model as ScriptModule);
  validate(m, options);
  return m.exclusive(() => trainLoop(m, options, ddp));
}

async function trainLoop(model: ScriptModule, options: FitOptions, ddp?: DistributedDataParallel): Promise<History> {
  const { optimizer, scheduler, epochs } = options;
  const lossFn = options.loss ?? new CrossEntropyLoss();
  // The fused native step handles one input tensor, one output tensor and every built-in loss
  // (cross-entropy on class indices); everything else takes the generic step.
  const fused = typeof lossFn === 'function' || options.output !== undefined || !returnsTensor(model) ? null : lossFn.fused();
  const accum = options.gradAccumulation ?? 1;
  const perBatch = (options.schedulerStep ?? (scheduler instanceof OneCycleLR ? 'batch' : 'epoch')) === 'batch';
  const stages = [...(options.stages ?? [])].sort((a, b) => a.epoch - b.epoch);
  const history: History = { epochs: [], stoppedEarly: false };
  const pos: TrainingPosition = { epoch: 0, batch: 0, globalStep: 0, stagesApplied: 0 };
  const keep = options.keepBatches ?? false;
  const device = options.device ?? model.device;
  if (device !== model.device) await model.to(device);
  if (options.channelsLast) await model.channelsLast();
  const amp = options.amp === 'bf16' ? 1 : options.amp === 'fp16' ? 2 : 0;

  if (options.resumeFrom) {
    const { dir, meta } = await readCheckpoint(options.resumeFrom);
    while (pos.stagesApplied < meta.stagesApplied) await applyStage(model, optimizer, stages[pos.stagesApplied++]);
    await restoreCheckpoint(dir, meta, model, optimizer);
    if (scheduler && meta.scheduler) scheduler.loadStateDict(meta.scheduler);
    Object.assign(pos, { epoch: meta.epoch, batch: meta.batch, globalStep: meta.globalStep });
    history.epochs.push(...(meta.history as EpochRecord[]));
  }

  const progress = makeProgress(options.progress);
  const ckpt = options.checkpoint;
  const save = async (at: TrainingPosition = pos) => {
    if (!ckpt || (ddp && getRank() !== 0)) return;  // every rank holds the same weights: rank 0 writes them
    const file = await saveCheckpoint(ckpt.dir, model, optimizer, scheduler, at, history.epochs, ckpt.keep ?? 2);
    await options.callbacks?.onCheckpoint?.({ path: file, globalStep: at.globalStep });
  };
  const total = (options.train as { length?: number }).length;
  const lrs = () => optimizer.paramGroups.map((g) => g.lr);
  let best = Infinity;
  let bad = 0;
  let checked = false;

  for (; pos.epoch < epochs; pos.epoch++, pos.batch = 0) {
    while (pos.stagesApplied < stages.length && stages[pos.stagesApplied].epoch <= pos.epoch) {
      await applyStage(model, optimizer, stages[pos.stagesApplied++]);
    }
    if (!checked) {
      // After the stages due now: a stage at epoch 0 may be what makes parameters trainable.
      checkOptimizer(model, optimizer);
      checked = true;
    }
    await options.callbacks?.onEpochStart?.({ epoch: pos.epoch });
    (options.train as { setEpoch?: (e: number) => void }).setEpoch?.(pos.epoch);
    model.train();
    progress.start(pos.epoch, epochs, total ?? 0);
    const started = process.hrtime.bigint();
    let lossSum = 0, correct = 0, samples = 0, steps = 0, skipped = 0, pending = 0, index = 0;
    const startBatch = pos.batch;
    for await (const b of batches(options.train, 'fit: train')) {
      if (index++ < startBatch) { release(b, keep); continue; }
      if (options.signal?.aborted) { release(b, keep); throw new Error('fit: aborted'); }
      let r: { loss: number; correct: number; total: number };
      try {
        const doStep = (pending + 1) % accum === 0;
        if (ddp) await ddp.beforeStep(doStep);
        if (fused && fused.reduction !== 0 && b.input instanceof Tensor && (fused.lossKind !== LOSS_KIND.crossEntropy || b.target.dtype === 'int64')) {
          if (b.input.shape[0] !== b.target.shape[0]) {
            throw new Error(`inputs and labels disagree: ${b.input.shape[0]} inputs (shape [${b.input.shape}]) but ${b.target.shape[0]} labels`);
          }
          const { weight, posWeight, ...loss } = fused;
          r = await native.trainStep(model.handle, optimizer.handle, b.input.handle, b.target.handle, weight?.handle ?? null, {
            ...loss, posWeight: posWeight?.handle ?? null,
            lossScale: 1 / accum, clipNorm: doStep ? options.clipGradNorm ?? 0 : 0, step: doStep, zeroGrad: doStep,
            amp, channelsLast: options.channelsLast ?? false, device,
          });
        } else {
          const g = await genericStep({ model, optimizer, loss: lossFn, output: options.output, device, accumulation: accum, clipGradNorm: options.clipGradNorm ?? 0, amp }, b, doStep);
          r = { ...g, correct: g.correct ?? NaN };
        }
        pending = doStep ? 0 : pending + 1;
      } catch (err) {
        // A native error's detail drops its task's name ("trainStep: "): fit's own prefix says where.
        const { message, detail, code } = err as FinetorchError;
        const oom = code === 'FINETORCH_OUT_OF_MEMORY'
          ? ` — the step for a batch of shape ${describeInput(b.input)} did not fit in ${device} memory; try a smaller batchSize, amp: 'bf16', or gradAccumulation`
          : '';
        // The code travels with the message, so callers decide on it (a smaller batch on FINETORCH_OUT_OF_MEMORY).
        const wrapped = new Error(`fit: epoch ${pos.epoch + 1}, batch ${pos.batch + 1}: ${detail ?? message}${oom}`, { cause: err }) as FinetorchError;
        if (code !== undefined) wrapped.code = code;
        throw wrapped;
      } finally {
        release(b, keep);
      }
      if (!Number.isFinite(r.loss)) {
        if (options.nonFinite !== 'skip') {
          throw new Error(`fit: the loss became ${r.loss} at epoch ${pos.epoch + 1}, step ${pos.batch + 1} (global step ${pos.globalStep + 1}); ` +
            "lower the learning rate, clip gradients (clipGradNorm), or pass nonFinite: 'skip'");
        }
        skipped++;
        pending = 0;
      } else {
        lossSum += r.loss * r.total;
        correct += r.correct;
        samples += r.total;
      }
      steps++;
      pos.batch++;
      pos.globalStep++;
      if (scheduler && perBatch && !(scheduler instanceof ReduceLROnPlateau)) scheduler.step();
      const secs = Number(process.hrtime.bigint() - started) / 1e9;
      progress.update(steps + startBatch, { loss: samples ? lossSum / samples : NaN, accuracy: samples ? correct / samples : 0, lr: lrs()[0], samplesPerSec: samples / secs });
      await options.callbacks?.onBatchEnd?.({ epoch: pos.epoch, batch: pos.batch - 1, globalStep: pos.globalStep, loss: r.loss, correct: r.correct, size: r.total, lr: lrs() });
      if (ckpt?.everySteps && pos.globalStep % ckpt.everySteps === 0) await save();
    }
    if (pending > 0) {
      if (ddp) await ddp.syncGradients();
      // The epoch ended inside an accumulation window: apply what was accumulated through the same
      // update as every other step (fp16 unscale and overflow skip, clipping), not a bare step().
      const t = await native.applyStep(optimizer.handle, { clipNorm: options.clipGradNorm ?? 0, amp });
      if (t.skipped) skipped++;
      pending = 0;
    }
    if (steps === 0 && startBatch === 0) throw new Error('fit: the training set yielded no batches');
    const time = Number(process.hrtime.bigint() - started) / 1e9;
    const record: EpochRecord = {
      epoch: pos.epoch + 1, loss: samples ? lossSum / samples : NaN, accuracy: samples ? correct / samples : NaN,
      lr: lrs(), time, samplesPerSec: samples / time, samples, skippedSteps: skipped,
    };
    if (options.val) {
      const v = await evaluate(ddp ?? model, options.val, { loss: lossFn, keepBatches: keep, output: options.output });
      Object.assign(record, { valLoss: v.loss, valAccuracy: v.accuracy, valTop5: v.top5 });
      history.lastValidation = v;
    }
    if (scheduler instanceof ReduceLROnPlateau) scheduler.step(record.valLoss ?? record.loss);
    else if (scheduler && !perBatch) scheduler.step();
    history.epochs.push(record);
    const acc = (v: number | undefined) => (Number.isNaN(v) ? '' : ` acc ${v!.toFixed(3)}`);
    progress.end(`epoch ${record.epoch}/${epochs}: loss ${record.loss.toFixed(4)}${acc(record.accuracy)}` +
      (record.valLoss !== undefined ? ` | val loss ${record.valLoss.toFixed(4)}${acc(record.valAccuracy)}` : '') +
      ` | lr ${record.lr[0].toExponential(2)} | ${record.samplesPerSec.toFixed(1)} samples/s`);
    await options.callbacks?.onEpochEnd?.(record);
    if (ckpt && (ckpt.everyEpoch ?? true)) await save({ ...pos, epoch: pos.epoch + 1, batch: 0 });
    const es = options.earlyStopping;
    if (es) {
      const metric = es.monitor === 'valAccuracy' ? -(record.valAccuracy ?? record.accuracy) : record.valLoss ?? record.loss;
      if (Number.isNaN(metric) && es.monitor === 'valAccuracy') {
        throw new Error("fit: earlyStopping monitors 'valAccuracy', which is NaN here because the targets are not class indices; monitor 'valLoss'");
      }
      if (metric < best - (es.minDelta ?? 0)) { best = metric; bad = 0; } else if (++bad > es.patience) { history.stoppedEarly = true; break; }
    }
  }
  return history;
}

