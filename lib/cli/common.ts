/** Helpers shared by the CLI commands: actionable errors, files, class names, preprocessing, recipes. */
import * as fs from 'fs';
import * as path from 'path';
import { load } from '../jit/load';
import type { ScriptModule } from '../jit/module';
import { AdamW } from '../optim/optimizer';
import { CosineAnnealingLR, LinearLR, SequentialLR } from '../optim/lr_scheduler';
import * as check from '../check';
import { imagenet, type Transform } from '../transforms';
import { fromJSON, outputSize } from '../transforms/json';
import type { Tensor } from '../tensor';
import type { Misclassified } from '../report/report';
import { predict } from '../train/evaluate';

/** An error the CLI prints as one line, without a stack. */
export class UsageError extends Error {}

export function requireFile(file: string | undefined, what: string): string {
  if (!file) throw new UsageError(`${what} is required`);
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) throw new UsageError(`${what} '${file}' does not exist`);
  if (st.isDirectory()) throw new UsageError(`${what} '${file}' is a folder; expected a TorchScript file (.pt)`);
  return file;
}

export function requireDir(dir: string | undefined, what: string): string {
  if (!dir) throw new UsageError(`${what} is required`);
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (!st) throw new UsageError(`${what} '${dir}' does not exist`);
  if (!st.isDirectory()) throw new UsageError(`${what} '${dir}' is not a folder (expected one sub-folder per class)`);
  return dir;
}

export function deviceOption(device: string | undefined): string {
  try {
    return check.device(device ?? 'cpu', '--device');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** Loads a model given on the command line, in an isolated child first (files may be untrusted). */
export async function loadModel(file: string, device: string, isolate = true): Promise<ScriptModule> {
  requireFile(file, 'model');
  try {
    return await load(file, { device, isolate });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** One warning line on stderr, in the CLI's voice. */
export function warnLine(message: string): void {
  process.stderr.write(`finetorch: warning: ${message}\n`);
}

/**
 * The evaluation transform for a model: the one its file recorded (finetorch.json), unless
 * `--size` is given, which means ImageNet's eval recipe at that size; a `--size` that gives another
 * transform than the recorded one is a warning, since the model then sees what it was not trained on.
 */
export function evalTransform(model: ScriptModule, file: string, sizeFlag: string | undefined): Transform {
  const recorded = model.metadata?.transform;
  if (sizeFlag === undefined) return recorded ? fromJSON(recorded) : imagenet({ train: false, size: 224 });
  const size = parseNumber(sizeFlag, '--size', true, { atLeast: 8 });
  const t = imagenet({ train: false, size });
  const was = recorded && fromJSON(recorded);
  if (was && JSON.stringify(t) !== JSON.stringify(was)) {
    const hw = outputSize(was.toJSON());
    warnLine(`--size ${size} overrides the preprocessing recorded in ${file} (${hw ? `${hw[0]}x${hw[1]} inputs: ` : ''}${was}); the model was not trained on what it will see`);
  }
  return t;
}

/** The model's class names: from its metadata, else from classes.json beside it; and where they came from. */
export function modelClasses(model: ScriptModule, file: string): { classes: string[]; from: string } | undefined {
  const recorded = model.metadata?.classes;
  if (recorded) return { classes: recorded, from: `${path.basename(file)}'s metadata` };
  const beside = classesBeside(file);
  return beside && { classes: beside, from: 'classes.json' };
}

/** classes.json beside a model, when there is one. */
export function classesBeside(model: string): string[] | undefined {
  const file = path.join(path.dirname(model), 'classes.json');
  if (!fs.existsSync(file)) return undefined;
  const v = JSON.parse(fs.readFileSync(file, 'utf8'));
  return Array.isArray(v) ? v.map(String) : Array.isArray(v?.classes) ? v.classes.map(String) : undefined;
}

/** The number of outputs of the model's head (its final Linear), if it has one. */
export function headOutputs(model: ScriptModule): number | undefined {
  const head = model.headCandidates()[0];
  if (!head) return undefined;
  return new Map(model.namedParameters()).get(`${head}.weight`)?.shape[0];
}

export function parseNumber(v: string, what: string, integer = false, min?: { above?: number; atLeast?: number }): number {
  const n = v.trim() === '' ? NaN : Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new UsageError(`${what} must be ${integer ? 'an integer' : 'a number'}: got '${v}'`);
  if (min?.above !== undefined && !(n > min.above)) throw new UsageError(`${what} must be greater than ${min.above}: got '${v}'`);
  if (min?.atLeast !== undefined && n < min.atLeast) throw new UsageError(`${what} must be at least ${min.atLeast}: got '${v}'`);
  return n;
}

/**
 * The fine-tuning recipe: AdamW with no weight decay on biases and norm weights (1-D parameters),
 * warm-up for the first tenth of the steps, then cosine decay, stepped per batch.
 */
export function recipe(model: ScriptModule, lr: number, totalSteps: number, weightDecay = 0.01): { optimizer: AdamW; scheduler: SequentialLR } {
  const trainable = model.parameters({ trainable: true });
  const decay = trainable.filter((p) => p.ndim > 1);
  const noDecay = trainable.filter((p) => p.ndim <= 1);
  const groups = [
    ...(decay.length ? [{ params: decay, weightDecay }] : []),
    ...(noDecay.length ? [{ params: noDecay, weightDecay: 0 }] : []),
  ];
  const optimizer = new AdamW(groups, { lr });
  const warm = Math.max(1, Math.round(totalSteps / 10));
  const scheduler = new SequentialLR(optimizer, {
    schedulers: [new LinearLR(optimizer, { startFactor: 0.1, totalIters: warm }), new CosineAnnealingLR(optimizer, { tMax: Math.max(1, totalSteps - warm) })],
    milestones: [warm],
  });
  return { optimizer, scheduler };
}

/**
 * Up to `max` misclassified examples of `batches` for the report, in the order met. Each is drawn by
 * `thumbnail(input, row, index)`: the batch's input, the example's row in it and its index in the set.
 */
export async function misclassified(model: ScriptModule, batches: AsyncIterable<{ input: Tensor; target: Tensor }>, classes: readonly string[],
  thumbnail: (input: Tensor, row: number, index: number) => Promise<{ png: Buffer; source: string }>, max = 12): Promise<Misclassified[]> {
  const out: Misclassified[] = [];
  let index = 0;
  for await (const b of batches) {
    const probs = await predict(model, b.input);
    const p = await probs.data() as Float32Array;
    const y = await b.target.data() as BigInt64Array;
    const C = probs.shape[1];
    for (let i = 0; i < y.length && out.length < max; i++, index++) {
      const row = p.subarray(i * C, (i + 1) * C);
      const pred = row.indexOf(Math.max(...row));
      if (pred === Number(y[i])) continue;
      const { png, source } = await thumbnail(b.input, i, index);
      out.push({ png, trueLabel: classes[Number(y[i])], predicted: classes[pred], probability: row[pred], source });
    }
    probs.dispose(); b.input.dispose(); b.target.dispose();
    if (out.length >= max) break;
  }
  return out;
}
