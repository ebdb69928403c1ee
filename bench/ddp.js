#!/usr/bin/env node
/*
 * Data-parallel throughput: DistributedDataParallel on 2 ranks x 1 thread against 1 process x 2
 * threads, for finetorch (`finetorch launch`, train.fit over torch.nn.parallel.DistributedDataParallel)
 * and for PyTorch (torch.nn.parallel.DistributedDataParallel, Gloo, 2 processes started as torchrun
 * does: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in their environment). Same machine, same
 * TorchScript file, same global batch.
 *
 *   node bench/ddp.js [--steps 10] [--warmup 3] [--batch 16] [--size 112]
 *
 * Model: torchvision resnet18 (bench/resnet18.js), full fine-tune, AdamW(lr 1e-4), CrossEntropyLoss;
 * `--batch` per rank (the single process trains on 2 x batch). Inputs are random and reused. Prints
 * a Markdown table with samples/s (global) and the ratios; needs dist/ and a Python with torch and
 * torchvision ($FINETORCH_PYTHON, else /usr/bin/python3). Run as a rank (RANK set), it is the
 * finetorch worker that the launcher starts.
 */
'use strict';
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { execFile, spawn } = require('child_process');
const { benchOptions } = require('./args');
const { loadAverage } = require('./machine');
const { pythonPath, runPythonFile } = require('../scripts/python');
const { EXPORT_RESNET18: EXPORT, pyTimedSteps } = require('./resnet18');

const USAGE = 'node bench/ddp.js [--steps 10] [--warmup 3] [--batch 16] [--size 112]';

const PYTORCH_RUN = String.raw`
import json, os, sys, time, torch
import torch.distributed as dist
model_file, threads, batch, size, warmup, steps = sys.argv[1], *map(int, sys.argv[2:7])
torch.set_num_threads(threads)
ddp = 'RANK' in os.environ
if ddp:
    dist.init_process_group('gloo')
m = torch.jit.load(model_file)
m.train()
net = torch.nn.parallel.DistributedDataParallel(m) if ddp else m
params = list(m.parameters())
torch.manual_seed(int(os.environ.get('RANK', '0')))
${pyTimedSteps({ net: 'net', barrierIf: 'ddp' })}world = dist.get_world_size() if ddp else 1
if not ddp or dist.get_rank() == 0:
    print(json.dumps({'sps': world * batch * steps / secs, 'threads': torch.get_num_threads()}))
if ddp:
    dist.destroy_process_group()
`;

/** One finetorch run: a rank under `finetorch launch` (RANK set), or the single process. */
async function finetorchRun(o) {
  const torch = require('../dist');
  const ddp = process.env.RANK !== undefined;
  if (ddp) await torch.distributed.initProcessGroup({ backend: 'gloo' });
  const model = await torch.jit.load(o.model);
  model.train();
  const wrapped = ddp ? new torch.nn.parallel.DistributedDataParallel(model) : model;
  const opt = new torch.optim.AdamW(model.parameters({ trainable: true }), { lr: 1e-4 });
  const input = torch.randn([o.batch, 3, o.size, o.size]);
  const target = torch.randint(0, 10, [o.batch]);
  const batches = (n) => Array.from({ length: n }, () => ({ input, target }));
  const common = { epochs: 1, optimizer: opt, loss: new torch.nn.CrossEntropyLoss(), progress: false, keepBatches: true };
  if (o.warmup > 0) await torch.train.fit(wrapped, { ...common, train: batches(o.warmup) });
  if (ddp) await torch.distributed.barrier();
  const t0 = performance.now();
  await torch.train.fit(wrapped, { ...common, train: batches(o.steps) });
  if (ddp) await torch.distributed.barrier();
  const secs = (performance.now() - t0) / 1000;
  const world = ddp ? torch.distributed.getWorldSize() : 1;
  if (!ddp || torch.distributed.getRank() === 0) console.log(JSON.stringify({ sps: (world * o.batch * o.steps) / secs, threads: torch.getNumThreads() }));
  if (ddp) await torch.distributed.destroyProcessGroup();
}

/** A loopback port nothing listens on now, for MASTER_PORT. */
const freePort = () => new Promise((resolve, reject) => {
  const srv = net.createServer().once('error', reject).listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
});

/** Runs a command; resolves with the JSON its last stdout line holds (rank 0's, under DDP). */
function runJson(cmd, args, env) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${path.basename(cmd)} failed: ${err.message}\n${stderr.slice(-2000)}`));
      const line = stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      resolve(JSON.parse(line));
    });
  });
}

/** PyTorch's DDP: 2 Python processes with torchrun's environment; rank 0's report. */
async function pytorchDdp(args) {
  const port = await freePort();
  const ranks = [0, 1].map((rank) => new Promise((resolve, reject) => {
    const env = { ...process.env, RANK: String(rank), WORLD_SIZE: '2', LOCAL_RANK: String(rank), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), OMP_NUM_THREADS: '1' };
    const child = spawn(pythonPath(), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`PyTorch rank ${rank} exited with ${code}: ${err.slice(-2000)}`))));
  }));
  const [out0] = await Promise.all(ranks);
  return JSON.parse(out0.trim().split('\n').pop());
}

async function main() {
  const o = benchOptions(process.argv.slice(2), {
    steps: { type: 'int', default: 10 },
    warmup: { type: 'int', default: 3, min: 0 },
    batch: { type: 'int', default: 16 },
    size: { type: 'int', default: 112, min: 32 },
  }, USAGE);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-bench-ddp-'));
  try {
    const file = path.join(dir, 'resnet18.pt');
    const pyVersion = runPythonFile(dir, 'export.py', EXPORT, [file]);
    const job = (batch) => JSON.stringify({ model: file, batch, size: o.size, warmup: o.warmup, steps: o.steps });
    const cli = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
    const pyFile = path.join(dir, 'run.py');
    fs.writeFileSync(pyFile, PYTORCH_RUN);
    const pyArgs = (threads, batch) => [pyFile, file, threads, batch, o.size, o.warmup, o.steps].map(String);
    const single = { ...process.env, OMP_NUM_THREADS: '2' };
    delete single.RANK;

    const torch = require('../dist');
    console.log(`# data-parallel throughput: resnet18 full fine-tune, 3x${o.size}x${o.size}, AdamW, ${o.warmup} warm-up + ${o.steps} timed steps; global batch ${2 * o.batch}`);
    console.log(`# ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} logical CPUs; libtorch ${torch.version.libtorch}, PyTorch ${pyVersion}; node ${process.version}`);
    console.log(`# load average before: ${loadAverage()}\n`);
    const rows = [];
    const measure = async (label, fn) => {
      const before = loadAverage();
      process.stderr.write(`bench/ddp: ${label}...\n`);
      rows.push({ label, r: await fn(), load: `${before} / ${loadAverage()}` });
    };
    await measure('finetorch DDP, 2 ranks x 1 thread', async () => {
      const port = await freePort();
      return runJson(process.execPath, [cli, 'launch', '--nproc-per-node', '2', '--master-port', String(port), __filename, job(o.batch)], { ...process.env, OMP_NUM_THREADS: '1' });
    });
    await measure('finetorch, 1 process x 2 threads', () => runJson(process.execPath, [__filename, job(2 * o.batch)], single));
    await measure('PyTorch DDP, 2 ranks x 1 thread', () => pytorchDdp(pyArgs(1, o.batch)));
    await measure('PyTorch, 1 process x 2 threads', () => runJson(pythonPath(), pyArgs(2, 2 * o.batch), single));

    console.log('| run | samples/s (global) | load average before / after |');
    console.log('| --- | ---: | --- |');
    for (const { label, r, load } of rows) console.log(`| ${label} | ${r.sps.toFixed(2)} | ${load} |`);
    const [fd, fs1, pd, ps1] = rows.map((x) => x.r.sps);
    console.log(`\nfinetorch DDP / PyTorch DDP: ${(fd / pd).toFixed(3)}`);
    console.log(`finetorch 1 process / PyTorch 1 process: ${(fs1 / ps1).toFixed(3)}`);
    console.log(`DDP 2x1 over 1 process x 2 threads: finetorch ${(fd / fs1).toFixed(3)}, PyTorch ${(pd / ps1).toFixed(3)}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const workerJob = process.argv[2] && process.argv[2].startsWith('{') ? JSON.parse(process.argv[2]) : null;
(workerJob ? finetorchRun(workerJob) : main()).catch((err) => {
  console.error(`bench/ddp: FAILED: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
