#!/usr/bin/env node
/*
 * finetorch's own CPU kernels (torch.backends.cpu.kernels: max-pool with indices, batch norm's
 * training statistics) against ATen's, on resnet18's shapes at batch 8 and 192x192.
 *
 *   node bench/kernels.js [--reps 15] [--threads 2,1]
 *
 * One TorchScript file, scripted by the reference Python, has a method per kernel (max-pool 3x3
 * stride 2 with indices; batch norm in training mode, which computes the statistics and then
 * normalises). Three sides call the same methods on the same input: PyTorch (ATen's kernels),
 * finetorch, and finetorch with FINETORCH_CPU_KERNELS=0 (ATen's kernels behind finetorch's call,
 * which isolates the executor round trip). Each time is the median of --reps calls after 3
 * untimed ones. Prints a Markdown table with the ratio PyTorch / finetorch. Needs dist/ (npm run
 * build:ts) and a Python with torch ($FINETORCH_PYTHON, else /usr/bin/python3).
 */
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { loadAverage } = require('./machine');
const torch = require('../dist');
const { benchOptions } = require('./args');
const { runPythonFile } = require('../scripts/python');

const USAGE = 'node bench/kernels.js [--reps 15] [--threads 2,1]';

const CASES = [
  { kernel: 'max_pool2d', method: 'pool', shape: [8, 64, 96, 96] },
  ...[[8, 64, 96, 96], [8, 64, 48, 48], [8, 128, 24, 24], [8, 256, 12, 12], [8, 512, 6, 6]].map((shape) => ({ kernel: 'batch_norm (train)', method: 'bn', shape })),
];

const EXPORT = String.raw`
import sys, torch
import torch.nn.functional as F
class Kernels(torch.nn.Module):
    @torch.jit.export
    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d_with_indices(x, [3, 3], [2, 2], [1, 1], [1, 1], False)[0]
    @torch.jit.export
    def bn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, False)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
torch.jit.script(Kernels()).save(sys.argv[1])
print(torch.__version__)
`;

const PYTORCH_RUN = String.raw`
import json, statistics, sys, time, torch
torch._C._jit_override_can_fuse_on_cpu(False)
m = torch.jit.load(sys.argv[1])
cases, threads, reps = json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
out = {}
for n in threads:
    torch.set_num_threads(n)
    for c in cases:
        x = torch.randn(c['shape'])
        f = getattr(m, c['method'])
        for _ in range(3):
            f(x)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            f(x)
            ts.append((time.perf_counter() - t) * 1000)
        out[c['method'] + str(c['shape']) + '@' + str(n)] = statistics.median(ts)
print(json.dumps(out))
`;

const key = (c, n) => `${c.method}${JSON.stringify(c.shape).replace(/,/g, ', ')}@${n}`;

/** finetorch's medians, in this process (the kernels as the environment says). */
async function finetorchRun(file, threads, reps) {
  const m = await torch.jit.load(file);
  const out = {};
  for (const n of threads) {
    await torch.setNumThreads(n);
    for (const c of CASES) {
      const x = torch.randn(c.shape);
      for (let i = 0; i < 3; i++) (await m.runMethod(c.method, x)).dispose();
      const ts = [];
      for (let i = 0; i < reps; i++) {
        const t = performance.now();
        const y = await m.runMethod(c.method, x);
        ts.push(performance.now() - t);
        y.dispose();
      }
      ts.sort((a, b) => a - b);
      out[key(c, n)] = reps % 2 ? ts[reps >> 1] : (ts[reps / 2 - 1] + ts[reps / 2]) / 2;
      x.dispose();
    }
  }
  m.dispose();
  return out;
}

(async () => {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {  // finetorch's side in a process of its own (FINETORCH_CPU_KERNELS=0)
    process.stdout.write(JSON.stringify(await finetorchRun(argv[1], JSON.parse(argv[2]), Number(argv[3]))));
    return;
  }
  const o = benchOptions(argv, {
    reps: { type: 'int', default: 15 },
    threads: { type: 'ints', default: [...new Set([os.availableParallelism(), 1])] },
  }, USAGE);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-bench-kernels-'));
  try {
    const file = path.join(dir, 'kernels.pt');
    const pyVersion = runPythonFile(dir, 'export.py', EXPORT, [file]);
    console.log(`# CPU kernels: finetorch's (${JSON.stringify(torch.backends.cpu.kernels)}) and ATen's, median of ${o.reps} calls`);
    console.log(`# ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} logical CPUs; libtorch ${torch.version.libtorch}, PyTorch ${pyVersion}; node ${process.version}`);
    console.log(`# load average before ${loadAverage()}\n`);
    process.stderr.write('bench/kernels: finetorch...\n');
    const ours = await finetorchRun(file, o.threads, o.reps);
    process.stderr.write('bench/kernels: finetorch with FINETORCH_CPU_KERNELS=0...\n');
    const aten = JSON.parse(execFileSync(process.execPath, [__filename, '--child', file, JSON.stringify(o.threads), String(o.reps)],
      { env: { ...process.env, FINETORCH_CPU_KERNELS: '0' }, encoding: 'utf8' }));
    process.stderr.write('bench/kernels: PyTorch...\n');
    const py = JSON.parse(runPythonFile(dir, 'run.py', PYTORCH_RUN, [file, JSON.stringify(CASES), JSON.stringify(o.threads), String(o.reps)]));
    console.log('| kernel | input | threads | finetorch (ms) | finetorch, FINETORCH_CPU_KERNELS=0 (ms) | PyTorch (ms) | PyTorch / finetorch |');
    console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');
    for (const n of o.threads) {
      for (const c of CASES) {
        const k = key(c, n);
        console.log(`| ${c.kernel} | ${c.shape.join('x')} | ${n} | ${ours[k].toFixed(2)} | ${aten[k].toFixed(2)} | ${py[k].toFixed(2)} | ${(py[k] / ours[k]).toFixed(2)}x |`);
      }
    }
    console.log(`\n# load average after ${loadAverage()}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
})().catch((err) => {
  console.error(`bench/kernels: FAILED: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
