/** `finetorch finetune`: an ImageFolder fine-tune with ImageNet transforms, checkpoints and a report. */
import { promises as fsp } from 'fs';
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { DataLoader, ImageFolder, Subset } from '../data';
import { fsReason, writeAtomic } from '../fsutil';
import { Rng } from '../data/random';
import { imagenet } from '../transforms';
import { writeReport } from '../report/report';
import { evaluate } from '../train/evaluate';
import { describe } from '../train/describe';
import { fit } from '../train/fit';
import type { Tensor } from '../tensor';
import { manualSeed } from '../runtime';
import { misclassified, deviceOption, loadModel, parseNumber, recipe, requireDir, UsageError } from './common';
import { parseLoraFlag } from './lora';
import { lora as attachLora, saveAdapter } from '../peft/lora';

export interface FinetuneArgs {
  model: string;
  data: string;
  val?: string;
  valSplit?: string;
  epochs?: string;
  batchSize?: string;
  lr?: string;
  freeze?: string;
  unfreezeAt?: string;
  head?: string;
  lora?: string;
  device?: string;
  out?: string;
  resume?: boolean;
  size?: string;
  seed?: string;
  progress?: boolean;
}

export async function finetune(a: FinetuneArgs): Promise<void> {
  const device = deviceOption(a.device);
  requireDir(a.data, '--data');
  if (a.val) requireDir(a.val, '--val');
  // Every option is checked here, each Error naming the one that is wrong, before the model loads.
  const epochs = parseNumber(a.epochs ?? '5', '--epochs', true, { atLeast: 1 });
  const batchSize = parseNumber(a.batchSize ?? '32', '--batch-size', true, { atLeast: 1 });
  const lr = parseNumber(a.lr ?? '1e-3', '--lr', false, { above: 0 });
  const size = parseNumber(a.size ?? '224', '--size', true, { atLeast: 8 });
  const seed = parseNumber(a.seed ?? '0', '--seed', true, { atLeast: 0 });
  const frac = a.val ? undefined : parseNumber(a.valSplit ?? '0.1', '--val-split');
  if (frac !== undefined && !(frac > 0 && frac < 1)) throw new UsageError(`--val-split must be in (0, 1): got ${frac}`);
  const unfreezeAt = a.unfreezeAt ? parseNumber(a.unfreezeAt, '--unfreeze-at', true, { atLeast: 1 }) : undefined;
  const loraSpec = a.lora === undefined ? undefined : parseLoraFlag(a.lora);
  if (loraSpec && (a.freeze || unfreezeAt)) throw new UsageError('--lora trains only the adapter and the new head: it cannot be combined with --freeze or --unfreeze-at');
  const out = path.resolve(a.out ?? 'finetune-out');
  if (fs.statSync(out, { throwIfNoEntry: false })?.isDirectory() === false) {
    throw new UsageError(`--out '${out}' is a file: it must be a folder (finetune writes model.pt, metrics.json and a report there)`);
  }
  if (a.resume && !fs.existsSync(path.join(out, 'checkpoints', 'latest.json'))) {
    throw new UsageError(`--resume: no checkpoint in ${path.join(out, 'checkpoints')}`);
  }
  await manualSeed(seed);

  const model = await loadModel(a.model, device);
  const errors = (root: string, train: boolean) => {
    try {
      return new ImageFolder(root, { transform: imagenet({ train, size }), onError: 'skip' });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  };
  const trainAll = errors(a.data, true);
  const classes = trainAll.classes;
  if (classes.length < 2) throw new UsageError(`--data '${a.data}' has ${classes.length} class folder(s); fine-tuning needs at least 2`);
  let trainSet: ImageFolder | Subset;
  let valSet: ImageFolder | Subset;
  let valFiles: string[];
  if (a.val) {
    const v = errors(a.val, false);
    if (v.classes.join('\n') !== classes.join('\n')) {
      throw new UsageError(`--val classes (${v.classes.join(', ')}) differ from --data classes (${classes.join(', ')})`);
    }
    trainSet = trainAll;
    valSet = v;
    valFiles = v.samples.map(([f]) => f);
  } else {
    const order = new Rng(seed).permutation(trainAll.length);
    const nVal = Math.max(1, Math.round(trainAll.length * frac!));
    if (trainAll.length - nVal < 1) throw new UsageError(`--data has only ${trainAll.length} image(s): too few to split off a validation set`);
    const valIdx = [...order.slice(0, nVal)].sort((x, y) => x - y);
    trainSet = new Subset(trainAll, order.slice(nVal));
    const evalAll = errors(a.data, false);
    valSet = new Subset(evalAll, valIdx);
    valFiles = valIdx.map((i) => evalAll.samples[i][0]);
  }
  const trainLoader = new DataLoader(trainSet, { batchSize, shuffle: true, seed });
  const valLoader = () => new DataLoader(valSet, { batchSize });

  let head: string;
  try {
    head = await model.replaceHead({ numClasses: classes.length, name: a.head, log: (m) => process.stderr.write(`finetorch: ${m}\n`) });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const freeze = a.freeze?.split(',').map((s) => s.trim()).filter(Boolean);
  if (freeze?.length) {
    model.freeze(freeze.includes('backbone') ? undefined : freeze);
    model.unfreeze([head, ...model.auxiliaryHeads(head)].map((h) => `${h}.**`));
  }
  if (loraSpec) {
    try {
      await attachLora(model, { ...loraSpec, modulesToSave: [head, ...model.auxiliaryHeads(head)] });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const totalSteps = epochs * trainLoader.length;
  const { optimizer, scheduler } = recipe(model, lr, totalSteps);
  const stages = unfreezeAt ? [{ epoch: unfreezeAt - 1, unfreeze: '**', lr: lr / 10 }] : [];

  await fsp.mkdir(out, { recursive: true }).catch((err) => {
    throw new UsageError(`--out '${out}': cannot make the folder: ${fsReason(err)}`);
  });
  const ckptDir = path.join(out, 'checkpoints');
  const lrFile = path.join(ckptDir, 'lr-steps.json');
  const lrSteps: number[] = [];
  if (a.resume) {
    // The learning rate of the steps before the resume, as far as the checkpoint goes.
    const done = JSON.parse(fs.readFileSync(path.join(ckptDir, 'latest.json'), 'utf8')).globalStep as number;
    if (fs.existsSync(lrFile)) lrSteps.push(...(JSON.parse(fs.readFileSync(lrFile, 'utf8')) as number[]).slice(0, done));
  }
  const settings = {
    model: path.resolve(a.model), data: path.resolve(a.data), val: a.val ? path.resolve(a.val) : `${a.valSplit ?? '0.1'} of --data`,
    epochs, batchSize, lr, size, seed, device, head, freeze: freeze?.join(',') ?? 'none', unfreezeAt: unfreezeAt ?? 'never', lora: a.lora ?? 'none',
    optimizer: 'AdamW (weight decay 0.01, none on biases/norms)', schedule: 'linear warm-up 10% then cosine, per batch',
    trainImages: trainSet.length, valImages: valSet.length,
  };
  // What the model file says about itself: set before fit so every checkpoint carries it too. Paths
  // are only base names there: the file travels, and where it was made is nobody else's business.
  const describeRun = (metrics?: Record<string, unknown>) => describe({
    classes, transform: imagenet({ train: false, size }), task: 'single-label',
    settings: { ...settings, model: path.basename(settings.model), data: path.basename(settings.data), val: a.val ? path.basename(settings.val) : settings.val },
    metrics,
  });
  model.metadata = describeRun();
  const history = await fit(model, {
    train: trainLoader, val: valLoader(), epochs, optimizer, scheduler, schedulerStep: 'batch', device, stages,
    checkpoint: { dir: ckptDir }, resumeFrom: a.resume ? ckptDir : undefined, progress: a.progress === false ? false : 'auto',
    callbacks: {
      onBatchEnd: (b) => { lrSteps.push(b.lr[0]); },
      onCheckpoint: ({ globalStep }) => writeAtomic(lrFile, JSON.stringify(lrSteps.slice(0, globalStep)), 'finetune'),
    },
  });
  const ev = await evaluate(model, valLoader());
  const metrics = { valAccuracy: ev.accuracy, [`valTop${ev.k}`]: ev.topk, valLoss: ev.loss, valImages: ev.samples, epochs: history.epochs.length };
  await model.save(path.join(out, 'model.pt'), { metadata: describeRun(metrics) });
  if (loraSpec) await saveAdapter(model, path.join(out, 'adapter'));  // model.pt holds the merged weights
  await writeAtomic(path.join(out, 'classes.json'), JSON.stringify(classes, null, 2) + '\n', 'finetune');
  await writeAtomic(path.join(out, 'metrics.json'), JSON.stringify({ settings, history: history.epochs, evaluation: ev, classes }, null, 2) + '\n', 'finetune');
  const mis = await misclassified(model, valLoader() as AsyncIterable<{ input: Tensor; target: Tensor }>, classes, async (_input, _row, index) => ({
    png: await sharp(valFiles[index]).resize(96, 96, { fit: 'inside' }).png().toBuffer(), source: valFiles[index],
  }));
  const report = await writeReport(out, {
    title: `finetorch fine-tune: ${path.basename(path.resolve(a.data))}`, runs: [{ name: 'fine-tune', epochs: history.epochs, lrSteps }],
    evaluation: ev, classes: [...classes], misclassified: mis, settings,
    summary: { 'validation accuracy': `${(ev.accuracy * 100).toFixed(1)}%`, [`top-${ev.k} accuracy`]: `${(ev.topk * 100).toFixed(1)}%`, epochs: history.epochs.length },
  });
  console.log(`validation accuracy ${(ev.accuracy * 100).toFixed(1)}% (top-${ev.k} ${(ev.topk * 100).toFixed(1)}%) on ${ev.samples} images`);
  console.log(`wrote ${path.join(out, 'model.pt')}, metrics.json, classes.json, ${path.basename(report)}`);
}
