/**
 * The counts behind `evaluate`'s metrics, accumulated batch by batch on the host: top-1/top-k and
 * a confusion matrix for class indices; per-label true/false positives and the scores for average
 * precision for multi-label outputs.
 */
import type { Tensor } from '../tensor';

/** @internal A tensor's values as float64 on the host (any floating or integer dtype). */
export async function floats(t: Tensor): Promise<Float64Array> {
  const f = t.dtype === 'float32' || t.dtype === 'float64' ? t : await t.to({ dtype: 'float32' });
  try {
    const d = await f.data();
    return Float64Array.from(d as Float32Array);
  } finally {
    if (f !== t) f.dispose();
  }
}

/** @internal Top-1, top-k and confusion counts for [B, C] scores against int64 class indices [B]. */
export class ClassCounts {
  private correct = 0;
  private topCorrect = 0;
  private samples = 0;
  private k: number;
  private confusion: number[][] = [];

  constructor(private readonly wanted: number, private readonly ignoreIndex?: number) {
    this.k = wanted;
  }

  /**
   * Adds a batch when its targets are class indices for its scores; resolves to the samples it
   * counted (targets equal to the ignore index left out), or to the batch's rows when it is not
   * a class batch (and `required` is false; when true that is an Error).
   */
  async add(pred: Tensor, target: Tensor, required: boolean): Promise<number> {
    if (target.dtype !== 'int64' || pred.ndim !== 2 || target.ndim !== 1 || pred.shape[0] !== target.shape[0]) {
      if (required && target.dtype === 'int64') {
        throw new Error(`evaluate: class scores [B, C] and labels [B] expected, got output [${pred.shape}] and target [${target.shape}]`);
      }
      return target.ndim > 0 ? target.shape[0] : 1;
    }
    const C = pred.shape[1];
    if (this.confusion.length === 0) this.confusion = Array.from({ length: C }, () => new Array<number>(C).fill(0));
    const k = this.k = Math.min(this.wanted, C);
    const [vals, idx] = await pred.topk(k, { dim: 1 });
    vals.dispose();
    const top = await idx.data() as BigInt64Array;
    idx.dispose();
    const y = await target.data() as BigInt64Array;
    let counted = 0;
    for (let i = 0; i < y.length; i++) {
      const t = Number(y[i]);
      if (t === this.ignoreIndex || t < 0 || t >= C) continue; // ignored by the loss, left out of the counts
      counted++;
      const p = Number(top[i * k]);
      this.confusion[t][p] += 1;
      if (p === t) this.correct++;
      for (let j = 0; j < k; j++) if (Number(top[i * k + j]) === t) { this.topCorrect++; break; }
    }
    this.samples += counted;
    return counted;
  }

  /**
   * @internal Sums these counts with every rank's (evaluate under DistributedDataParallel), through
   * `sum`, which all-reduces a list of numbers; all ranks must have seen the same class count.
   */
  async reduce(sum: (values: number[]) => Promise<number[]>): Promise<void> {
    const C = this.confusion.length;
    const v = await sum([this.correct, this.topCorrect, this.samples, ...this.confusion.flat()]);
    [this.correct, this.topCorrect, this.samples] = v;
    this.confusion = Array.from({ length: C }, (_, r) => v.slice(3 + r * C, 3 + (r + 1) * C));
  }

  result(): { accuracy: number; topk: number; k: number; top5: number; confusion: number[][]; perClass: { precision: number; recall: number; support: number }[] } {
    const { confusion } = this;
    const perClass = confusion.map((row, c) => {
      const tp = row[c];
      const support = row.reduce((a, x) => a + x, 0);
      const predicted = confusion.reduce((a, r) => a + r[c], 0);
      return { precision: predicted ? tp / predicted : NaN, recall: support ? tp / support : NaN, support };
    });
    const n = this.samples;
    const topk = n ? this.topCorrect / n : NaN;
    return { accuracy: n ? this.correct / n : NaN, topk, k: this.k, top5: topk, confusion, perClass };
  }
}

/**
 * Average precision of one label, as scikit-learn's `average_precision_score`: the sum over
 * distinct score thresholds (highest first) of (recall gained) x (precision there). NaN when the
 * label has no positives.
 *
 * @example
 * averagePrecision([0.9, 0.8, 0.3], [1, 0, 1]); // (1/2)*1 + (1/2)*(2/3) = 0.8333
 */
export function averagePrecision(scores: ArrayLike<number>, positive: ArrayLike<number>): number {
  const order = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  const P = order.reduce((a, i) => a + (positive[i] ? 1 : 0), 0);
  if (P === 0) return NaN;
  let tp = 0, fp = 0, ap = 0, lastRecall = 0;
  for (let j = 0; j < order.length; j++) {
    if (positive[order[j]]) tp++; else fp++;
    // Tied scores are one threshold: count them together.
    if (j + 1 < order.length && scores[order[j + 1]] === scores[order[j]]) continue;
    const recall = tp / P;
    ap += (recall - lastRecall) * (tp / (tp + fp));
    lastRecall = recall;
  }
  return ap;
}

/** @internal Per-label counts at a threshold, and every score kept for average precision. */
export class LabelCounts {
  private scores: number[][] = [];
  private positives: number[][] = [];

  constructor(private readonly threshold: number) {}

  /** Adds a batch of logits [B, L] (or [B]) against 0/1 (or probability) targets of the same shape. */
  async add(pred: Tensor, target: Tensor): Promise<void> {
    const L = pred.ndim >= 2 ? pred.shape[pred.ndim - 1] : 1;
    if (this.scores.length === 0) { this.scores = Array.from({ length: L }, () => []); this.positives = Array.from({ length: L }, () => []); }
    if (L !== this.scores.length) throw new Error(`evaluate: batches disagree on the label count (${this.scores.length} then ${L})`);
    const [p, y] = [await floats(pred), await floats(target)];
    for (let i = 0; i < p.length; i++) {
      this.scores[i % L].push(p[i]);
      this.positives[i % L].push(y[i] >= 0.5 ? 1 : 0);
    }
  }

  /**
   * Replaces this rank's scores and targets by every rank's (`gather` returns each rank's list, in
   * rank order): per-label counts and average precision then cover the whole set.
   */
  async gather(gather: (values: Float64Array) => Promise<Float64Array[]>): Promise<void> {
    const L = this.scores.length;
    const n = L ? this.scores[0].length : 0;
    const mine = new Float64Array(2 + 2 * L * n);
    mine[0] = L;
    mine[1] = n;
    let k = 2;
    for (const list of [this.scores, this.positives]) for (const values of list) for (const v of values) mine[k++] = v;
    const parts = await gather(mine);
    const labels = Math.max(...parts.map((p) => p[0] ?? 0));
    if (parts.some((p) => p[0] && p[0] !== labels)) throw new Error(`evaluate: ranks disagree on the label count (${parts.map((p) => p[0] ?? 0).join(', ')})`);
    this.scores = Array.from({ length: labels }, () => []);
    this.positives = Array.from({ length: labels }, () => []);
    // A rank that saw no batch sent [0, 0]: nothing to add from it.
    for (const p of parts.filter((q) => q[0])) {
      const count = p[1];
      let j = 2;
      for (const list of [this.scores, this.positives]) for (const values of list) for (let i = 0; i < count; i++) values.push(p[j++]);
    }
  }

  result(): { threshold: number; perLabel: { f1: number; precision: number; recall: number; averagePrecision: number; support: number }[]; meanF1: number; meanAP: number } {
    // sigmoid(x) > t  <=>  x > logit(t)
    const cut = Math.log(this.threshold / (1 - this.threshold));
    const perLabel = this.scores.map((s, l) => {
      const y = this.positives[l];
      let tp = 0, fp = 0, fn = 0;
      for (let i = 0; i < s.length; i++) {
        const p = s[i] > cut;
        if (p && y[i]) tp++; else if (p) fp++; else if (y[i]) fn++;
      }
      return {
        f1: 2 * tp + fp + fn ? (2 * tp) / (2 * tp + fp + fn) : NaN,
        precision: tp + fp ? tp / (tp + fp) : NaN,
        recall: tp + fn ? tp / (tp + fn) : NaN,
        averagePrecision: averagePrecision(s, y),
        support: tp + fn,
      };
    });
    const mean = (xs: number[]) => { const d = xs.filter((x) => !Number.isNaN(x)); return d.length ? d.reduce((a, x) => a + x, 0) / d.length : NaN; };
    return { threshold: this.threshold, perLabel, meanF1: mean(perLabel.map((l) => l.f1)), meanAP: mean(perLabel.map((l) => l.averagePrecision)) };
  }
}
