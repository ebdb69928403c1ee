/**
 * `npm run demo`: fine-tunes the small ResNet finetorch ships (pretrained on Fashion-MNIST classes
 * 0-4) on 50 labelled images per class of the five classes it never saw (5-9), trains the same
 * architecture from random weights on the same images, and compares both on the test set.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { DataLoader, Dataset, FashionMNIST, type ItemContext, type PreparedSample, type Sample } from '../data';
import { writeAtomic } from '../fsutil';
import { Rng } from '../data/random';
import { load } from '../jit/load';
import { writeReport } from '../report/report';
import { manualSeed } from '../runtime';
import { evaluate } from '../train/evaluate';
import { fit, type EpochRecord } from '../train/fit';
import { misclassified, recipe } from './common';

const FIRST = 5; // classes 5-9 become 0-4
const CLASSES = FashionMNIST.classes.slice(FIRST);

/** Chosen samples of classes 5-9, relabelled 0-4. */
class Unseen extends Dataset<Sample> {
  constructor(private readonly base: FashionMNIST, readonly indices: number[]) { super(); }
  get length(): number { return this.indices.length; }
  async get(i: number, ctx?: ItemContext): Promise<Sample> {
    const s = await this.base.get(this.indices[i], ctx);
    return { input: s.input, target: s.target - FIRST };
  }
  async prepare(i: number, ctx: ItemContext): Promise<PreparedSample> {
    const s = await this.base.prepare(this.indices[i], ctx);
    return { ...s, target: s.target - FIRST };
  }
}

function pick(ds: FashionMNIST, perClass: number, skip: number, seed: number): number[] {
  const order = new Rng(seed).permutation(ds.length);
  const count = new Map<number, number>();
  const out: number[] = [];
  for (const i of order) {
    const t = ds.targets[i];
    if (t < FIRST) continue;
    const n = count.get(t) ?? 0;
    count.set(t, n + 1);
    if (n >= skip && n < skip + perClass) out.push(i);
  }
  return out.sort((a, b) => a - b);
}

/** Options of the demo. */
export interface DemoOptions {
  out?: string;
  perClass?: number;
  epochs?: number;
  progress?: boolean;
  models?: string;
}

/** Runs the demo; resolves to both test accuracies. */
export async function demo(o: DemoOptions = {}): Promise<{ pretrained: number; scratch: number; report: string }> {
  const started = Date.now();
  const out = path.resolve(o.out ?? 'demo-output');
  const modelsDir = o.models ?? path.resolve(__dirname, '..', '..', 'models');
  const perClass = o.perClass ?? 50;
  const epochs = o.epochs ?? 6;
  const seed = 7;
  const train = new FashionMNIST({ train: true });
  const testBase = new FashionMNIST({ train: false });
  const trainSet = new Unseen(train, pick(train, perClass, 0, seed));
  const valSet = new Unseen(train, pick(train, 20, perClass, seed));
  const testSet = new Unseen(testBase, [...testBase.targets].flatMap((t, i) => (t >= FIRST ? [i] : [])));
  console.log(`demo: fine-tuning on ${trainSet.length} labelled images (${perClass} per class) of ${CLASSES.join(', ')}; ` +
    `testing on ${testSet.length}`);

  const results: { name: string; file: string; accuracy: number; epochs: EpochRecord[]; lrSteps: number[] }[] = [];
  let best;
  for (const [name, file] of [['pretrained', 'fmnist-resnet-pretrained.pt'], ['from scratch', 'fmnist-resnet-init.pt']]) {
    await manualSeed(seed);
    const model = await load(path.join(modelsDir, file));
    await model.replaceHead({ numClasses: CLASSES.length, log: () => {} });
    const loader = new DataLoader(trainSet, { batchSize: 25, shuffle: true, seed });
    const { optimizer, scheduler } = recipe(model, 3e-3, epochs * loader.length);
    const lrSteps: number[] = [];
    console.log(`demo: ${name}`);
    const history = await fit(model, {
      train: loader, val: new DataLoader(valSet, { batchSize: 100 }), epochs, optimizer, scheduler, schedulerStep: 'batch',
      progress: o.progress ?? 'auto', callbacks: { onBatchEnd: (b) => { lrSteps.push(b.lr[0]); } },
    });
    const ev = await evaluate(model, new DataLoader(testSet, { batchSize: 500 }));
    results.push({ name, file, accuracy: ev.accuracy, epochs: history.epochs, lrSteps });
    if (name === 'pretrained') {
      best = { model, ev };
      await fsp.mkdir(out, { recursive: true });
      await model.save(path.join(out, 'model.pt'));
    } else {
      model.dispose();
    }
  }
  const [pre, scratch] = results;
  console.log('\n               test accuracy (classes 5-9)');
  for (const r of results) console.log(`  ${r.name.padEnd(13)}  ${(r.accuracy * 100).toFixed(1)}%`);
  console.log(`  difference     ${((pre.accuracy - scratch.accuracy) * 100).toFixed(1)} points in favour of ${pre.accuracy >= scratch.accuracy ? 'the pretrained backbone' : 'training from scratch'}`);
  const mis = await misclassified(best!.model, new DataLoader(testSet, { batchSize: 256 }), CLASSES, async (input, row, index) => {
    const x = (await input.data()) as Float32Array;
    const pixels = Uint8Array.from(x.subarray(row * 784, (row + 1) * 784), (v) => Math.round(v * 255));
    const png = await sharp(Buffer.from(pixels), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();
    return { png, source: `test image ${testSet.indices[index]}` };
  });
  await writeAtomic(path.join(out, 'classes.json'), JSON.stringify(CLASSES, null, 2) + '\n', 'demo');
  await writeAtomic(path.join(out, 'metrics.json'), JSON.stringify({ results, evaluation: best!.ev }, null, 2) + '\n', 'demo');
  const report = await writeReport(out, {
    title: 'finetorch demo: pretrained vs from scratch on 5 unseen Fashion-MNIST classes',
    runs: results.map((r) => ({ name: r.name, epochs: r.epochs, lrSteps: r.lrSteps })),
    evaluation: best!.ev, evaluationSet: 'test set, pretrained', classes: CLASSES, misclassified: mis,
    summary: { 'pretrained test accuracy': `${(pre.accuracy * 100).toFixed(1)}%`, 'from-scratch test accuracy': `${(scratch.accuracy * 100).toFixed(1)}%`, 'labelled images': trainSet.length },
    settings: {
      model: 'models/fmnist-resnet-pretrained.pt (scripts/pretrain: classes 0-4)', scratch: 'models/fmnist-resnet-init.pt (same architecture, random weights)',
      trainImages: trainSet.length, valImages: valSet.length, testImages: testSet.length, epochs, batchSize: 25, lr: 3e-3,
      optimizer: 'AdamW (weight decay 0.01, none on biases/norms)', schedule: 'linear warm-up then cosine, per batch', seed,
    },
  });
  console.log(`\ndemo: report at ${report} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return { pretrained: pre.accuracy, scratch: scratch.accuracy, report };
}
