#!/usr/bin/env node
/*
 * Small-model training throughput, where per-step overhead shows: Fashion-MNIST's "MLP 256-128-100"
 * (784-256-128-100-10, ReLU), batch 64, AdamW(lr 1e-3), cross-entropy.
 *   finetorch: data.FashionMNIST + data.DataLoader(shuffle) + train.fit
 *   PyTorch:   torchvision.datasets.FashionMNIST(ToTensor()) + torch.utils.data.DataLoader(shuffle)
 *              + the usual loop (zero_grad, forward, loss, backward, step, loss.item(), accuracy)
 * Both read the same IDX files (/usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist)
 * and start from the same weights: Python scripts the nn.Sequential (torch.manual_seed(0)) into a
 * temporary folder and both sides load that file. Each thread count runs finetorch, then PyTorch,
 * one after the other; the test accuracy after training (not timed) shows both learned the same.
 *
 *   node bench/small.js [--epochs 2] [--steps 0] [--batch 64] [--threads 2,1] [--same-malloc] [--same-gemm] [--same-omp]
 *
 * --steps caps the steps of each epoch (0: the whole epoch, 938 steps). --threads defaults to the
 * machine's cores and 1. --same-malloc and --same-gemm give the PyTorch process finetorch's malloc
 * tuning and its float32 GEMM (oneDNN's, native/blas.cc, through LD_PRELOAD; needs a c++ compiler):
 * with --same-gemm both sides run the same kernels and the ratio is the overhead alone.
 * --same-omp gives it finetorch's OMP_WAIT_POLICY (the one the bench was started with). Needs
 * dist/ (npm run build:ts) and a Python with torch and torchvision ($FINETORCH_PYTHON, else
 * /usr/bin/python3).
 */
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { loadAverage, pythonEnv } = require('./machine');
const torch = require('../dist');
const { benchOptions } = require('./args');
const { runPythonFile } = require('../scripts/python');

const USAGE = 'node bench/small.js [--epochs 2] [--steps 0] [--batch 64] [--threads 2,1] [--same-malloc] [--same-gemm] [--same-omp]';
const { data, train } = torch;

// Scripts the MLP and lays the IDX files out as torchvision's FashionMNIST reads them (root/FashionMNIST/raw).
const EXPORT = String.raw`
import gzip, os, shutil, sys, torch
model_file, src, root = sys.argv[1:4]
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                        torch.nn.ReLU(), torch.nn.Linear(128, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
torch.jit.script(m).save(model_file)
raw = os.path.join(root, 'FashionMNIST', 'raw')
os.makedirs(raw, exist_ok=True)
for name in ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']:
    gz = os.path.join(src, name + '.gz')
    with (gzip.open(gz) if os.path.exists(gz) else open(os.path.join(src, name), 'rb')) as f, open(os.path.join(raw, name), 'wb') as out:
        shutil.copyfileobj(f, out)
print(torch.__version__)
`;

const PYTORCH_RUN = String.raw`
import json, sys, time, torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms as T
model_file, root = sys.argv[1:3]
threads, batch, epochs, steps = map(int, sys.argv[3:7])
torch.set_num_threads(threads)
torch.manual_seed(0)
train = datasets.FashionMNIST(root, train=True, transform=T.ToTensor())
test = datasets.FashionMNIST(root, train=False, transform=T.ToTensor())
m = torch.jit.load(model_file)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
lossf = torch.nn.CrossEntropyLoss()
loader = DataLoader(train, batch_size=batch, shuffle=True)
secs, samples = 0.0, 0
for epoch in range(epochs):
    m.train()
    t = time.perf_counter()
    total, correct = 0.0, 0
    for i, (x, y) in enumerate(loader):
        if steps and i == steps:
            break
        opt.zero_grad()
        out = m(x)
        loss = lossf(out, y)
        loss.backward()
        opt.step()
        total += loss.item() * y.shape[0]
        correct += (out.argmax(1) == y).sum().item()
        samples += y.shape[0]
    secs += time.perf_counter() - t
m.eval()
right = 0
with torch.no_grad():
    for x, y in DataLoader(test, batch_size=1000):
        right += (m(x).argmax(1) == y).sum().item()
print(json.dumps({'sps': samples / secs, 'secs': secs, 'samples': samples, 'testAccuracy': right / len(test), 'threads': torch.get_num_threads()}))
`;

/** The first `steps` batches of each epoch of `loader` (all of them when steps is 0); fit sets the epoch. */
function capped(loader, steps) {
  if (!steps) return loader;
  return {
    get length() { return Math.min(steps, loader.length); },
    setEpoch: (e) => loader.setEpoch(e),
    async *[Symbol.asyncIterator]() {
      let i = 0;
      for await (const b of loader) {
        yield b;
        if (++i === steps) break;
      }
    },
  };
}

async function finetorchRun(file, root, threads, o) {
  await torch.setNumThreads(threads);
  const model = await torch.jit.load(file);
  const trainSet = new data.FashionMNIST({ root, train: true });
  const testSet = new data.FashionMNIST({ root, train: false });
  await Promise.all([trainSet.load(), testSet.load()]);
  const optimizer = new torch.optim.AdamW(model.parameters(), { lr: 1e-3 });
  const loader = new data.DataLoader(trainSet, { batchSize: o.batch, shuffle: true, seed: 0 });
  const history = await train.fit(model, { train: capped(loader, o.steps), epochs: o.epochs, optimizer, progress: false });
  const secs = history.epochs.reduce((s, e) => s + e.time, 0);
  const samples = history.epochs.reduce((s, e) => s + e.samples, 0);
  const test = await train.evaluate(model, new data.DataLoader(testSet, { batchSize: 1000 }));
  optimizer.dispose();
  model.dispose();
  return { sps: samples / secs, secs, samples, testAccuracy: test.accuracy, threads: torch.getNumThreads() };
}

(async () => {
  const o = benchOptions(process.argv.slice(2), {
    epochs: { type: 'int', default: 2 },
    steps: { type: 'int', default: 0, min: 0 },
    batch: { type: 'int', default: 64 },
    threads: { type: 'ints', default: [...new Set([os.availableParallelism(), 1])] },
    'same-malloc': { type: 'flag' },
    'same-gemm': { type: 'flag' },
    'same-omp': { type: 'flag' },
  }, USAGE);
  const env = pythonEnv(torch, o);
  const src = data.FashionMNIST.defaultRoot;
  const defaultThreads = torch.getNumThreads();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-bench-small-'));
  try {
    const file = path.join(dir, 'mlp.pt');
    const pyVersion = runPythonFile(dir, 'export.py', EXPORT, [file, src, dir], env);
    console.log(`# small model: Fashion-MNIST MLP 784-256-128-100-10 (ReLU), batch ${o.batch}, AdamW(lr 1e-3), ` +
      `${o.epochs} epoch(s)${o.steps ? ` of at most ${o.steps} steps` : ''}, shuffled`);
    console.log(`# ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} CPUs; libtorch ${torch.version.libtorch} ` +
      `(default intra-op threads here: ${defaultThreads}), PyTorch ${pyVersion}; node ${process.version}; ` +
      `PyTorch's malloc: ${o.sameMalloc ? "finetorch's tuning (--same-malloc)" : "glibc's defaults"}; ` +
      `float32 GEMM: finetorch ${process.env.FINETORCH_ONEDNN_GEMM === '0' ? 'the system BLAS (FINETORCH_ONEDNN_GEMM=0)' : "oneDNN's where libtorch calls the system BLAS"}, ` +
      `PyTorch ${o.sameGemm ? "the same (--same-gemm)" : 'the system BLAS'}; ` +
      `OMP_WAIT_POLICY: finetorch ${process.env.OMP_WAIT_POLICY}, PyTorch ${env.OMP_WAIT_POLICY ?? "libgomp's default"}\n`);
    const rows = [];
    for (const threads of o.threads) {
      const loadBefore = loadAverage();
      process.stderr.write(`bench/small: ${threads} thread(s): finetorch...\n`);
      const ours = await finetorchRun(file, src, threads, o);
      process.stderr.write(`bench/small: ${threads} thread(s): PyTorch...\n`);
      let theirs = null;
      let why = null;
      try {
        theirs = JSON.parse(runPythonFile(dir, 'run.py', PYTORCH_RUN, [file, dir, threads, o.batch, o.epochs, o.steps].map(String), env));
      } catch (e) {
        why = e.message;
      }
      rows.push({ threads, ours, theirs, why, load: `${loadBefore} / ${loadAverage()}` });
    }
    const f = (x, d = 1) => (x == null ? 'n/a' : x.toFixed(d));
    console.log('| threads | finetorch samples/s | PyTorch samples/s | finetorch / PyTorch | test accuracy (finetorch, PyTorch) | load average before / after |');
    console.log('| ---: | ---: | ---: | ---: | --- | --- |');
    for (const r of rows) {
      console.log(`| ${r.threads} | ${f(r.ours.sps)} | ${f(r.theirs?.sps)} | ${r.theirs ? f(r.ours.sps / r.theirs.sps, 2) + 'x' : 'n/a'} | ` +
        `${f(r.ours.testAccuracy, 4)}, ${f(r.theirs?.testAccuracy, 4)} | ${r.load} |`);
    }
    for (const r of rows) if (r.why) console.log(`\nnote (${r.threads} threads): PyTorch did not run: ${r.why}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
})().catch((err) => {
  console.error(`bench/small: FAILED: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
