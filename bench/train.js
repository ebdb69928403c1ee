#!/usr/bin/env node
/*
 * Training throughput: finetorch's train.fit against PyTorch on the same machine, the same
 * libtorch (Python's torch), the same thread count and the same TorchScript file.
 *
 *   node bench/train.js [--steps 20] [--warmup 5] [--batch 16] [--size 224] [--modes full,head] [--threads 2,1] [--rounds 3] [--same-malloc] [--same-omp]
 *
 * Model: torchvision resnet18 (torch.manual_seed(0), 10-class fc), scripted by Python into a
 * temporary folder; both sides load that file. --threads: the intra-op thread counts to run, each on
 * both sides (default: the machine's cores, then 1). --same-omp gives PyTorch finetorch's
 * OMP_WAIT_POLICY (bench/machine.js); both sides run with the policy the bench was started with.
 * Inputs: random [batch, 3, size, size] float32, int64 labels. Optimizer: AdamW(lr 1e-4) over the
 * trainable parameters; CrossEntropyLoss.
 *   full: every parameter trains (BatchNorm in train mode).
 *   head: backbone frozen, only fc trains; frozen BatchNorm layers stay in eval mode on both
 *         sides (finetorch's default for frozen BatchNorm under train()).
 * finetorch runs train.fit (one fused native task per step, progress off, batches kept); PyTorch
 * runs the usual loop (forward, loss, backward, step, zero_grad). `warmup` steps are run and not
 * timed on both sides, then `steps` timed steps. Each row is `rounds` such pairs, the side that goes
 * first alternating, so that a machine whose speed drifts (a shared VM's does, by 10-20% within a
 * minute) weighs on both: the row gives each side's mean, every round's ratio and their median.
 *
 * Also reported: the event loop's worst lag while finetorch trains (a 1 ms setInterval; the
 * largest gap between two ticks), measured on 4 further untimed steps, next to the same measure taken with the process idle, since on a
 * busy machine the OS alone can delay a timer by that much. Prints a Markdown table. Needs dist/ (npm run build:ts) and a
 * Python with torch and torchvision ($FINETORCH_PYTHON, else /usr/bin/python3). A PyTorch side that
 * cannot run is reported as unavailable; the script only exits non-zero when finetorch fails.
 */
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { loadAverage, pythonEnv: pythonEnvFor } = require('./machine');
const torch = require('../dist');
const { benchOptions } = require('./args');

const { runPythonFile } = require('../scripts/python');

let pythonEnv = process.env;

/** Runs Python code from a file (TorchScript needs real source files); returns the last stdout line. */
const python = (dir, name, code, args = []) => runPythonFile(dir, name, code, args, pythonEnv);

const { EXPORT_RESNET18: EXPORT, pyTimedSteps } = require('./resnet18');
const USAGE = 'node bench/train.js [--steps 20] [--warmup 5] [--batch 16] [--size 224] [--modes full,head] [--threads 2,1] [--rounds 3] [--same-malloc] [--same-omp]';

const PYTORCH_RUN = String.raw`
import json, sys, time, torch
model_file, mode, threads, batch, size, warmup, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
torch.set_num_threads(threads)
m = torch.jit.load(model_file)
m.train()
if mode == 'head':
    for n, p in m.named_parameters():
        p.requires_grad = n.startswith('fc.')
    for n, mod in m.named_modules():
        if mod.original_name.startswith('BatchNorm'):
            mod.eval()
params = [p for p in m.parameters() if p.requires_grad]
${pyTimedSteps()}print(json.dumps({'sps': batch * steps / secs, 'secs': secs, 'threads': torch.get_num_threads(), 'trainable': sum(p.numel() for p in params)}))
`;

/** The worst gap between ticks of a 1 ms interval over `ms` while this process does nothing else. */
function idleLag(ms) {
  return new Promise((resolve) => {
    let worst = 0;
    let last = performance.now();
    const end = last + ms;
    const timer = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
      if (now >= end) {
        clearInterval(timer);
        resolve(worst);
      }
    }, 1);
  });
}

async function finetorchRun(file, mode, o) {
  const model = await torch.jit.load(file);
  if (mode === 'head') model.freeze().unfreeze('fc.*');
  model.train();
  const opt = new torch.optim.AdamW(model.parameters({ trainable: true }), { lr: 1e-4 });
  const loss = new torch.nn.CrossEntropyLoss();
  const input = torch.randn([o.batch, 3, o.size, o.size]);
  const target = torch.randint(0, 10, [o.batch]);
  const batches = (n) => Array.from({ length: n }, () => ({ input, target }));
  const common = { epochs: 1, optimizer: opt, loss, progress: false, keepBatches: true };
  if (o.warmup > 0) await torch.train.fit(model, { ...common, train: batches(o.warmup) });

  const t0 = performance.now();
  const history = await torch.train.fit(model, { ...common, train: batches(o.steps) });
  const secs = (performance.now() - t0) / 1000;

  // The lag is measured on a few more steps, untimed: a 1 ms interval wakes the main thread a
  // thousand times a second, and on a 2-core machine each wake-up preempts one of the two OpenMP
  // threads the step runs on (the timed steps above run as a user's fit does, without it).
  let worst = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 1);
  await torch.train.fit(model, { ...common, train: batches(Math.min(o.steps, 4)) });
  clearInterval(timer);
  worst = Math.max(worst, performance.now() - last);

  const trainable = model.numParameters({ trainable: true });
  if (!Number.isFinite(history.epochs[0].loss)) throw new Error(`finetorch ${mode}: the loss is not finite`);
  for (const t of [input, target]) t.dispose();
  opt.dispose();
  model.dispose();
  return { sps: (o.batch * o.steps) / secs, secs, lagMs: worst, trainable };
}

(async () => {
  const o = benchOptions(process.argv.slice(2), {
    steps: { type: 'int', default: 20 },
    warmup: { type: 'int', default: 5, min: 0 },
    batch: { type: 'int', default: 16 },
    size: { type: 'int', default: 224, min: 32 },
    modes: { type: 'list', default: ['full', 'head'] },
    threads: { type: 'ints', default: [...new Set([os.availableParallelism(), 1])] },
    rounds: { type: 'int', default: 3 },
    'same-malloc': { type: 'flag' },
    'same-omp': { type: 'flag' },
  }, USAGE);
  for (const m of o.modes) if (m !== 'full' && m !== 'head') throw new Error(`--modes: unknown mode '${m}' (full, head)`);
  pythonEnv = pythonEnvFor(torch, o);
  const defaultThreads = torch.getNumThreads();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-bench-train-'));
  try {
    const file = path.join(dir, 'resnet18.pt');
    let pyVersion = null;
    let pyError = null;
    try {
      pyVersion = python(dir, 'export.py', EXPORT, [file]);
    } catch (e) {
      pyError = e.message;
    }
    if (!fs.existsSync(file)) {
      console.log(`bench/train: no model to benchmark: Python could not export resnet18 (${pyError})`);
      return;
    }
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    const idle = await idleLag(2000);
    console.log(`# train throughput: resnet18, batch ${o.batch}, 3x${o.size}x${o.size}, AdamW, ${o.warmup} warm-up + ${o.steps} timed steps`);
    console.log(`# ${cpu}, ${os.cpus().length} logical CPUs; intra-op threads ${o.threads.join(' then ')}, the same on both sides (libtorch's own default here: ${defaultThreads}); ` +
      `libtorch ${torch.version.libtorch} (finetorch ${torch.version.finetorch}), PyTorch ${pyVersion}; node ${process.version}`);
    const t = torch.backends.malloc.tuning;
    console.log(`# malloc: finetorch ${t ? `mmap/trim thresholds ${t.mmapThreshold}/${t.trimThreshold}, top pad ${t.topPad}` : 'untuned'}, ` +
      `PyTorch ${o.sameMalloc ? 'the same (--same-malloc)' : "glibc's defaults"}; OMP_WAIT_POLICY: finetorch ${process.env.OMP_WAIT_POLICY}, ` +
      `PyTorch ${pythonEnv.OMP_WAIT_POLICY ?? "libgomp's default"}`);
    console.log(`# load average ${loadAverage()}; event-loop lag with this process idle (2 s): ${idle.toFixed(1)} ms\n`);

    const rows = [];
    for (const [threads, mode] of o.threads.flatMap((n) => o.modes.map((m) => [n, m]))) {
      const label = mode === 'full' ? 'full fine-tune' : 'head only (frozen backbone)';
      const loadBefore = loadAverage();
      await torch.setNumThreads(threads);
      const ours = [];
      const theirs = [];
      let why = null;
      const runOurs = async (round) => {
        process.stderr.write(`bench/train: ${label}, ${threads} thread(s), round ${round + 1}/${o.rounds}: finetorch...\n`);
        ours.push(await finetorchRun(file, mode, o));
      };
      const runTheirs = (round) => {
        if (why) return;
        process.stderr.write(`bench/train: ${label}, ${threads} thread(s), round ${round + 1}/${o.rounds}: PyTorch...\n`);
        try {
          const r = JSON.parse(python(dir, 'run.py', PYTORCH_RUN, [file, mode, threads, o.batch, o.size, o.warmup, o.steps].map(String)));
          if (ours.length && r.trainable !== ours[0].trainable) why = `trainable parameters differ (${ours[0].trainable} vs ${r.trainable})`;
          else theirs.push(r);
        } catch (e) {
          why = e.message;
        }
      };
      for (let round = 0; round < o.rounds; round++) {
        if (round % 2 === 0) {
          await runOurs(round);
          runTheirs(round);
        } else {
          runTheirs(round);
          await runOurs(round);
        }
      }
      rows.push({ label, threads, ours, theirs: why ? [] : theirs, why, load: `${loadBefore} / ${loadAverage()}` });
    }

    const f = (x, d = 2) => (x == null ? 'n/a' : x.toFixed(d));
    const mean = (a) => (a.length ? a.reduce((x, y) => x + y, 0) / a.length : null);
    const median = (a) => {
      if (!a.length) return null;
      const s = [...a].sort((x, y) => x - y);
      return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    };
    console.log('| mode | threads | trainable params | finetorch fit samples/s (mean) | PyTorch samples/s (mean) | finetorch / PyTorch (median) | rounds\' ratios | worst event-loop lag (ms) | load average before / after |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |');
    for (const r of rows) {
      const ratios = r.theirs.map((t, i) => r.ours[i].sps / t.sps);
      console.log(`| ${r.label} | ${r.threads} | ${r.ours[0].trainable.toLocaleString('en-US')} | ${f(mean(r.ours.map((x) => x.sps)))} | ` +
        `${f(mean(r.theirs.map((x) => x.sps)))} | ${ratios.length ? f(median(ratios), 3) : 'n/a'} | ${ratios.map((x) => f(x, 3)).join(', ') || 'n/a'} | ` +
        `${f(Math.max(...r.ours.map((x) => x.lagMs)), 1)} | ${r.load} |`);
    }
    for (const r of rows) if (r.why) console.log(`\nnote (${r.label}, ${r.threads} threads): ${r.why}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
})().catch((err) => {
  console.error(`bench/train: FAILED: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
