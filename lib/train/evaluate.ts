/**
 * `train.evaluate` and `train.predict`: inference over a loader or one input, in eval mode and
 * under inference mode (no autograd bookkeeping), restoring the model's mode afterwards.
 */
import { inferenceMode } from '../autograd';
import type { ScriptModule } from '../jit/module';
import { CrossEntropyLoss } from '../nn/loss';
import type { Tensor } from '../tensor';
import { batches, release, type BatchSource } from './batch';

/** What `evaluate` returns. */
export interface EvaluateResult {
  /** Mean loss per sample. */
  loss: number;
  /** Top-1 accuracy in [0, 1]. */
  accuracy: number;
  /** Top-k accuracy (k = `topk`, 5 by default, capped at the class count). */
  topk: number;
  k: number;
  /** Alias of `topk` when k is 5. */
  top5: number;
  samples: number;
  /** `confusion[true][predicted]` counts. */
  confusion: number[][];
  /** Per-class precision and recall (NaN where undefined). */
  perClass: { precision: number; recall: number; support: number }[];
}

/**
 * Loss, accuracy, top-k and a confusion matrix over every batch of `loader`.
 *
 * @example
 * const { accuracy, top5, confusion } = await finetorch.train.evaluate(model, valLoader);
 */
export async function evaluate(model: ScriptModule, loader: BatchSource, options: { loss?: CrossEntropyLoss; topk?: number; keepBatches?: boolean } = {}): Promise<EvaluateResult> {
  const lossFn = options.loss ?? new CrossEntropyLoss();
  const sumLoss = new CrossEntropyLoss({ weight: lossFn.weight ?? undefined, ignoreIndex: lossFn.ignoreIndex, labelSmoothing: lossFn.labelSmoothing, reduction: 'sum' });
  const wanted = options.topk ?? 5;
  const wasTraining = model.training;
  model.eval();
  let lossSum = 0;
  let correct = 0;
  let topCorrect = 0;
  let samples = 0;
  let k = wanted;
  let confusion: number[][] = [];
  try {
    for await (const b of batches(loader, 'evaluate')) {
      try {
        await inferenceMode(async () => {
          const input = b.input.device === model.device ? b.input : await b.input.to(model.device);
          const logits: Tensor = await model.forward(input);
          if (input !== b.input) input.dispose();
          try {
            const C = logits.shape[1];
            if (confusion.length === 0) confusion = Array.from({ length: C }, () => new Array<number>(C).fill(0));
            k = Math.min(wanted, C);
            const perSample = await sumLoss.forward(logits, b.target);
            lossSum += (await perSample.item()) as number;
            perSample.dispose();
            const [vals, idx] = await logits.topk(k, { dim: 1 });
            vals.dispose();
            const top = await idx.data() as BigInt64Array;
            idx.dispose();
            const y = await b.target.data() as BigInt64Array;
            for (let i = 0; i < y.length; i++) {
              const t = Number(y[i]);
              if (t === lossFn.ignoreIndex) continue; // ignored by the loss, left out of the counts
              const p = Number(top[i * k]);
              confusion[t][p] += 1;
              if (p === t) correct++;
              for (let j = 0; j < k; j++) if (Number(top[i * k + j]) === t) { topCorrect++; break; }
            }
            samples += y.filter((v) => Number(v) !== lossFn.ignoreIndex).length;
          } finally {
            logits.dispose();
          }
        });
      } finally {
        release(b, options.keepBatches ?? false);
      }
    }
  } finally {
    if (wasTraining) model.train();
  }
  if (samples === 0) throw new Error('evaluate: the loader yielded no samples');
  const perClass = confusion.map((row, c) => {
    const tp = row[c];
    const support = row.reduce((a, x) => a + x, 0);
    const predicted = confusion.reduce((a, r) => a + r[c], 0);
    return { precision: predicted ? tp / predicted : NaN, recall: support ? tp / support : NaN, support };
  });
  const topk = topCorrect / samples;
  return { loss: lossSum / samples, accuracy: correct / samples, topk, k, top5: topk, samples, confusion, perClass };
}

/**
 * Class probabilities (softmax over the logits) for one input batch, in eval mode and under
 * inference mode (the result is an inference tensor: clone it before training on it).
 *
 * @example
 * const probs = await finetorch.train.predict(model, images); // [B, C]
 */
export async function predict(model: ScriptModule, input: Tensor): Promise<Tensor> {
  const wasTraining = model.training;
  model.eval();
  try {
    return await inferenceMode(async () => {
      const x = input.device === model.device ? input : await input.to(model.device);
      const logits: Tensor = await model.forward(x);
      if (x !== input) x.dispose();
      try { return await logits.softmax(-1); } finally { logits.dispose(); }
    });
  } finally {
    if (wasTraining) model.train();
  }
}
