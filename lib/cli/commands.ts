/** `finetorch inspect | predict | evaluate`. */
import * as fs from 'fs';
import { DataLoader, ImageFolder } from '../data';
import { Rng } from '../data/random';
import { tensor } from '../creation';
import { METADATA_FILE } from '../jit/metadata';
import { fromJSON, outputSize } from '../transforms/json';
import { runTransform } from '../transforms/pipeline';
import { compile } from '../transforms/transform';
import { evaluate, predict as predictProbs } from '../train/evaluate';
import { deviceOption, evalTransform, headOutputs, loadModel, modelClasses, parseNumber, requireDir, UsageError } from './common';

/** `finetorch inspect m.pt`: the summary table with head candidates, and what the file records. */
export async function inspect(file: string): Promise<void> {
  const model = await loadModel(file, 'cpu');
  console.log(model.summary().toString());
  const m = model.methods().map((x) => `${x.name}(${x.args.map((a) => `${a.name}: ${a.type}`).join(', ')}) -> ${x.returns}`);
  console.log(`methods: ${m.join('; ')}`);
  if (model.traced) console.log('note: this model was traced; its BatchNorm/Dropout keep the mode they were traced in');
  const meta = model.metadata;
  if (!meta) {
    console.log('metadata: none (predict and evaluate assume ImageNet preprocessing at 224 unless --size is given)');
    return;
  }
  console.log(`metadata (${METADATA_FILE}):`);
  if (meta.task) console.log(`  task: ${meta.task}`);
  if (meta.classes) console.log(`  classes (${meta.classes.length}): ${meta.classes.join(', ')}`);
  if (meta.transform) {
    const hw = outputSize(meta.transform);
    console.log(`  preprocessing: ${fromJSON(meta.transform)}${hw ? ` (${hw[0]}x${hw[1]} inputs)` : ''}`);
  }
  if (meta.finetorch || meta.libtorch) console.log(`  written by: finetorch ${meta.finetorch ?? '?'}, libtorch ${meta.libtorch ?? '?'}`);
  for (const key of ['metrics', 'settings'] as const) {
    if (meta[key]) console.log(`  ${key}: ${Object.entries(meta[key]!).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(', ')}`);
  }
  const others = Object.keys(meta).filter((k) => !['format', 'task', 'classes', 'transform', 'finetorch', 'libtorch', 'metrics', 'settings', 'createdAt'].includes(k));
  if (others.length) console.log(`  other fields: ${others.join(', ')}`);
}

/** `finetorch predict m.pt img...`: top-k classes with probabilities. */
export async function predict(file: string, images: string[], o: { top?: string; size?: string; device?: string }): Promise<void> {
  const device = deviceOption(o.device);
  const k = parseNumber(o.top ?? '5', '--top', true, { atLeast: 1 });
  if (o.size !== undefined) parseNumber(o.size, '--size', true, { atLeast: 8 });
  if (images.length === 0) throw new UsageError('predict: give at least one image file');
  for (const f of images) if (!fs.existsSync(f)) throw new UsageError(`image '${f}' does not exist`);
  const model = await loadModel(file, device);
  const named = modelClasses(model, file);
  const compiled = compile(evalTransform(model, file, o.size));
  const decoded = await Promise.all(images.map(async (f) => {
    try {
      return await runTransform({ file: f }, compiled, new Rng(0));
    } catch (e) {
      throw new UsageError(`cannot read image '${f}': ${(e as Error).message}`);
    }
  }));
  const shape = decoded[0].shape;
  const n = shape[0] * shape[1] * shape[2];
  const buf = new Float32Array(images.length * n);
  decoded.forEach((d, i) => d.write(buf, i * n));
  const probs = await predictProbs(model, tensor(buf, { shape: [images.length, ...shape] }));
  const p = await probs.data() as Float32Array;
  const C = probs.shape[1];
  const classes = named?.classes;
  if (classes && classes.length !== C) throw new UsageError(`${named!.from} names ${classes.length} classes but the model predicts ${C}`);
  images.forEach((f, i) => {
    const row = Array.from(p.subarray(i * C, (i + 1) * C), (v, c) => [v, c] as const).sort((a, b) => b[0] - a[0]).slice(0, Math.min(k, C));
    console.log(f);
    for (const [v, c] of row) console.log(`  ${(v * 100).toFixed(1).padStart(5)}%  ${classes?.[c] ?? `class ${c}`}`);
  });
}

/** `finetorch evaluate m.pt --data dir`: accuracy, per-class precision/recall, confusion matrix. */
export async function evaluateCommand(file: string, o: { data?: string; size?: string; batchSize?: string; device?: string }): Promise<void> {
  const device = deviceOption(o.device);
  if (!o.data) throw new UsageError('--data is required');
  if (o.size !== undefined) parseNumber(o.size, '--size', true, { atLeast: 8 });
  const batchSize = parseNumber(o.batchSize ?? '32', '--batch-size', true, { atLeast: 1 });
  requireDir(o.data, '--data');
  const model = await loadModel(file, device);
  let ds: ImageFolder;
  try {
    ds = new ImageFolder(o.data, { transform: evalTransform(model, file, o.size) });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const outputs = headOutputs(model);
  if (outputs !== undefined && outputs !== ds.classes.length) {
    throw new UsageError(`the model predicts ${outputs} classes but '${o.data}' has ${ds.classes.length} class folders (${ds.classes.join(', ')})`);
  }
  const named = modelClasses(model, file);
  if (named && named.classes.join('\n') !== ds.classes.join('\n')) {
    throw new UsageError(`the model was trained on classes ${named.classes.join(', ')} (${named.from}) but '${o.data}' has ${ds.classes.join(', ')}`);
  }
  const ev = await evaluate(model, new DataLoader(ds, { batchSize }));
  const w = Math.max(5, ...ds.classes.map((c) => c.length));
  console.log(`accuracy ${(ev.accuracy * 100).toFixed(2)}%  top-${ev.k} ${(ev.topk * 100).toFixed(2)}%  loss ${ev.loss.toFixed(4)}  (${ev.samples} images)`);
  console.log(`\n${'class'.padEnd(w)}  precision  recall  support`);
  ev.perClass.forEach((c, i) => {
    const f = (x: number) => (Number.isNaN(x) ? '-' : x.toFixed(3)).padStart(9);
    console.log(`${ds.classes[i].padEnd(w)}  ${f(c.precision)}  ${f(c.recall).slice(3).padStart(6)}  ${String(c.support).padStart(7)}`);
  });
  console.log(`\nconfusion matrix (rows: true, columns: predicted)`);
  const labels = ds.classes.map((c, i) => `${i} ${c}`);
  const lw = Math.max(w, ...labels.map((l) => l.length));
  const cw = Math.max(4, ...ev.confusion.flat().map((v) => String(v).length));
  console.log(`${''.padEnd(lw)}  ${ds.classes.map((_, i) => String(i).padStart(cw)).join(' ')}`);
  ev.confusion.forEach((row, i) => console.log(`${labels[i].padEnd(lw)}  ${row.map((v) => String(v).padStart(cw)).join(' ')}`));
  if (!named) console.log('\n(the model records no class names, and no classes.json is beside it: class names come from the folder)');
}
