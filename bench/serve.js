#!/usr/bin/env node
/*
 * Serving while training: torch.serving.Predictor's latency idle and while the same process
 * fine-tunes another model, its requests/s with dynamic batching on and off, and PyTorch serving
 * the same file from Python (a plain loop over the torch.jit.load'ed model, same threads).
 *
 *   node bench/serve.js [--requests 40] [--size 224] [--threads 1] [--train-threads 1]
 *                       [--train-batch 32] [--train-size 112] [--clients 16] [--training-nice 10] [--rounds 3]
 *
 * Model: torchvision resnet18 (torch.manual_seed(0), 10-class fc), scripted by Python into a
 * temporary folder; every side loads that file. Requests: single [3, size, size] float32 images.
 *   idle:           `requests` sequential predicts (maxBatch 1), after 3 untimed ones; `rounds`
 *                   rounds alternating the plain and the optimize: true predictor, p50/p99 over
 *                   all of a predictor's rounds.
 *   while training: train.fit runs on another resnet18 (batch `train-batch`, `train-size` images,
 *                   AdamW, torch.setNumThreads(train-threads)); sequential predicts meanwhile.
 *                   Training throughput is measured alone first, then while serving; then
 *                   again with training's threads at nice `training-nice` (setTrainingPriority).
 *   batching:       `clients` concurrent clients, each sending requests back to back (8 x clients
 *                   requests in all, or `requests` if more), with
 *                   maxBatch = clients and maxDelayMs 2 (on) or maxBatch 1 (off); plain and
 *                   optimize: true; `rounds` rounds alternating the four, each one's median
 *                   requests/s (this VM's speed drifts by a third between minutes).
 * One predictor is alive at a time (loaded for its measurement, then closed): see withPredictor.
 *   PyTorch:        Python's loop, torch.set_num_threads(threads), inference_mode, single images;
 *                   the model as loaded, and torch.jit.optimize_for_inference(torch.jit.freeze(m));
 *                   run before finetorch's rows and again after them (ratios: their mean).
 * Prints a Markdown table. Needs dist/ (npm run build:ts) and a Python with torch and torchvision
 * ($FINETORCH_PYTHON, else /usr/bin/python3). Never part of a test run.
 */
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const torch = require('../dist');

const { benchOptions } = require('./args');

const USAGE = 'node bench/serve.js [--requests 40] [--size 224] [--threads 1] [--train-threads 1] [--train-batch 32] [--train-size 112] [--clients 16] [--training-nice 10] [--rounds 3]';
const parseArgs = (argv) => benchOptions(argv, {
  requests: { type: 'int', default: 40 }, size: { type: 'int', default: 224 }, threads: { type: 'int', default: 1 },
  'train-threads': { type: 'int', default: 1 }, 'train-batch': { type: 'int', default: 32 }, 'train-size': { type: 'int', default: 112 },
  clients: { type: 'int', default: 16 }, 'training-nice': { type: 'int', default: 10, min: 0 }, rounds: { type: 'int', default: 3 },
}, USAGE);

const { runPythonFile } = require('../scripts/python');

const python = runPythonFile;

const { EXPORT_RESNET18: EXPORT } = require('./resnet18');

const PYTORCH_SERVE = String.raw`
import json, sys, time, torch
model_file, threads, size, requests = sys.argv[1], *map(int, sys.argv[2:5])
torch.set_num_threads(threads)
m = torch.jit.load(model_file).eval()
x = torch.randn(1, 3, size, size)
def timed(model):
    lat = []
    with torch.inference_mode():
        for i in range(requests + 3):
            t = time.perf_counter()
            model(x)
            if i >= 3:
                lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    pick = lambda p: lat[min(len(lat) - 1, max(0, -(-p * len(lat) // 100) - 1))]
    return {'p50': pick(50), 'p99': pick(99), 'rps': 1000 * len(lat) / sum(lat)}
plain = timed(m)
plain['opt'] = timed(torch.jit.optimize_for_inference(torch.jit.freeze(m)))
print(json.dumps(plain))
`;

function percentiles(ms) {
  const s = [...ms].sort((a, b) => a - b);
  const pick = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
  return { p50: pick(50), p99: pick(99) };
}

/** A random image made on this thread (torch.tensor), so no request waits for a factory task. */
function image(size) {
  const data = new Float32Array(3 * size * size);
  for (let i = 0; i < data.length; i++) data[i] = Math.random() * 2 - 1;
  return torch.tensor(data, { shape: [3, size, size] });
}

async function sequential(predictor, size, n, until) {
  const x = image(size);
  for (let i = 0; i < 3; i++) await predictor.predict(x);
  const lat = [];
  // n requests, or with `until`, at least n and until it says stop
  for (let i = 0; i < n || (until && !until()); i++) {
    const t = performance.now();
    await predictor.predict(x);
    lat.push(performance.now() - t);
  }
  return lat;
}

async function concurrent(predictor, size, clients, total) {
  const x = image(size);
  await predictor.predict(x);
  let sent = 0;
  const t = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (sent < total) {
      sent++;
      await predictor.predict(x);
    }
  }));
  return (1000 * total) / (performance.now() - t);
}

async function trainLoop(model, o, steps, onStep) {
  const n = o.trainBatch * steps;
  const ds = new torch.data.TensorDataset(torch.randn([n, 3, o.trainSize, o.trainSize]), torch.randint(0, 10, [n]));
  const train = new torch.data.DataLoader(ds, { batchSize: o.trainBatch });
  const optimizer = new torch.optim.AdamW(model.parameters(), { lr: 1e-4 });
  const t = performance.now();
  let done = 0;
  await torch.train.fit(model, {
    train, epochs: 1, optimizer, loss: new torch.nn.CrossEntropyLoss(), progress: false,
    callbacks: { onBatchEnd: () => { done++; onStep?.(done); } },
  });
  return (o.trainBatch * steps * 1000) / (performance.now() - t);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-bench-serve-'));
  const file = path.join(dir, 'resnet18.pt');
  const pyVersion = python(dir, 'export.py', EXPORT, [file]);
  const rows = [];
  const fmt = (v) => v.toFixed(1);

  let pyBefore;
  try {
    pyBefore = JSON.parse(python(dir, 'serve.py', PYTORCH_SERVE, [file, String(o.threads), String(o.size), String(o.requests)]));
  } catch {
    // reported after finetorch's rows
  }
  await torch.setNumThreads(o.trainThreads);
  // One predictor alive at a time: each keeps an OpenMP team, and once the process's OpenMP
  // threads outnumber the cores libgomp stops spin-waiting between parallel regions, which slows
  // every team (see the README's thread split). A user runs one predictor per model.
  const withPredictor = async (opts, fn) => {
    const p = await torch.serving.Predictor.load(file, { threads: o.threads, ...opts });
    try {
      return { result: await fn(p), stats: p.stats() };
    } finally {
      await p.close();
    }
  };
  const lat = { plain: [], optimized: [] };
  for (let r = 0; r < o.rounds; r++) {
    lat.plain.push(...(await withPredictor({ maxBatch: 1 }, (p) => sequential(p, o.size, o.requests))).result);
    lat.optimized.push(...(await withPredictor({ maxBatch: 1, optimize: true }, (p) => sequential(p, o.size, o.requests))).result);
  }
  const idle = percentiles(lat.plain);
  const idleOpt = percentiles(lat.optimized);
  rows.push([`finetorch Predictor, idle (${o.rounds} x ${o.requests} requests)`, fmt(idle.p50), fmt(idle.p99), '']);
  rows.push(['finetorch Predictor, idle, optimize: true (frozen, BatchNorm folded)', fmt(idleOpt.p50), fmt(idleOpt.p99), '']);

  const predictor = await torch.serving.Predictor.load(file, { threads: o.threads, maxBatch: 1 });
  const trainModel = await torch.jit.load(file);
  const trainSteps = 4;
  await trainLoop(trainModel, o, 1);  // warm-up
  const aloneSps = await trainLoop(trainModel, o, trainSteps);
  // While fit trains: first at the default priority, then with training's threads at nice
  // `trainingNice` (torch.setTrainingPriority, as finetorch serve does), in that order (going back
  // up needs privileges).
  const whileTraining = async (label) => {
    let training = true;
    let servingSps = 0;
    const fitting = trainLoop(trainModel, o, trainSteps).then((sps) => { servingSps = sps; training = false; });
    const lat = percentiles(await sequential(predictor, o.size, 5, () => !training));
    await fitting;
    rows.push([`finetorch Predictor, while fit trains${label} (${fmt(aloneSps)} -> ${fmt(servingSps)} samples/s)`, fmt(lat.p50), fmt(lat.p99), '']);
    return lat;
  };
  const busy = await whileTraining('');
  await torch.setTrainingPriority(o.trainingNice);
  const niced = await whileTraining(`, training at nice ${o.trainingNice}`);
  await predictor.close();

  // Steady state: enough requests for 8 full batches, so the last, partial one weighs little.
  const total = Math.max(o.requests, 8 * o.clients);
  const variants = [
    ['batching off', { maxBatch: 1 }], ['batching on', { maxBatch: o.clients, maxDelayMs: 2 }],
    ['batching off, optimize: true', { maxBatch: 1, optimize: true }], ['batching on, optimize: true', { maxBatch: o.clients, maxDelayMs: 2, optimize: true }],
  ];
  const rps = variants.map(() => []);
  const meanBatch = variants.map(() => 0);
  for (let r = 0; r < o.rounds; r++) {
    for (let v = 0; v < variants.length; v++) {
      const { result, stats } = await withPredictor(variants[v][1], (p) => concurrent(p, o.size, o.clients, total));
      rps[v].push(result);
      meanBatch[v] = stats.meanBatchSize;
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const rate = rps.map(median);
  for (let v = 0; v < variants.length; v++) {
    const on = v % 2 === 1;
    rows.push([`${o.clients} clients, ${variants[v][0]}${on ? ` (mean batch ${meanBatch[v].toFixed(1)})` : ''}`, '', '',
      `${fmt(rate[v])}${on ? ` (${(rate[v] / rate[v - 1]).toFixed(2)}x)` : ''} [${rps[v].map(fmt).join(', ')}]`]);
  }

  // PyTorch runs before finetorch and again after it: this VM's speed drifts over minutes, and
  // the two runs show by how much. The ratios use the mean of the two.
  let py;
  try {
    const after = JSON.parse(python(dir, 'serve.py', PYTORCH_SERVE, [file, String(o.threads), String(o.size), String(o.requests)]));
    const mean = (k, a, b) => ({ p50: (a[k].p50 + b[k].p50) / 2 });
    py = { p50: (pyBefore.p50 + after.p50) / 2, opt: mean('opt', pyBefore, after) };
    for (const [when, r] of [['before', pyBefore], ['after', after]]) {
      rows.push([`PyTorch loop over torch.jit.load, idle (${when})`, fmt(r.p50), fmt(r.p99), fmt(r.rps)]);
      rows.push([`PyTorch loop over optimize_for_inference(freeze(m)), idle (${when})`, fmt(r.opt.p50), fmt(r.opt.p99), fmt(r.opt.rps)]);
    }
  } catch (e) {
    rows.push([`PyTorch: unavailable (${e.message.split('\n')[0]})`, '', '', '']);
  }
  fs.rmSync(dir, { recursive: true, force: true });

  console.log(`resnet18, ${o.size}x${o.size} single images; predictor threads ${o.threads}, training threads ${o.trainThreads} ` +
    `(batch ${o.trainBatch} at ${o.trainSize}x${o.trainSize}); libtorch ${torch.version.libtorch}, Python torch ${pyVersion}, ${os.cpus().length} cores\n`);
  console.log('| case | p50 ms | p99 ms | requests/s |\n| --- | --- | --- | --- |');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  console.log(`\np99 while training / idle p99: ${(busy.p99 / idle.p99).toFixed(2)}x (training at nice ${o.trainingNice}: ${(niced.p99 / idle.p99).toFixed(2)}x); PyTorch idle p50 / finetorch idle p50: ${py ? (py.p50 / idle.p50).toFixed(2) : '?'} (both optimized: ${py ? (py.opt.p50 / idleOpt.p50).toFixed(2) : '?'})`);
}

main().catch((e) => { console.error(e); process.exit(1); });
