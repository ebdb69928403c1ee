#!/usr/bin/env node
/*
 * LoRA against a full fine-tune, and against the same LoRA written by hand in PyTorch.
 *
 *   node bench/lora.js [--steps 10] [--warmup 3] [--batch 16] [--size 224] [--rank 8]
 *
 * Model: torchvision resnet18 (torch.manual_seed(0), 10-class fc). finetorch loads it scripted;
 * PyTorch runs the eager model (torch.nn.utils.parametrize needs an nn.Module), same weights.
 *   full:  every parameter trains (finetorch train.fit).
 *   lora:  LoRA r=rank, alpha=2*rank on every Conv2d/Linear of layer3 and layer4, plus the fc head
 *          (finetorch: torch.peft.lora with modulesToSave ['fc']; PyTorch: a parametrization
 *          W0 + alpha/r * (B.view(out, r) @ A.view(r, -1)).view(W0.shape) on the same layers,
 *          the rest frozen, frozen BatchNorm layers in eval mode on both sides).
 * AdamW(lr 1e-4), CrossEntropyLoss, random inputs; `warmup` untimed steps, then `steps` timed.
 * Each finetorch mode runs in a child process of its own, so its peak RSS is its own. Optimizer
 * state is measured as the bytes of AdamW's serialized state after training. Prints a Markdown
 * table; exits non-zero only when finetorch fails. Needs dist/ (npm run build:ts).
 */
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { runPythonFile } = require('../scripts/python');

function parseArgs(argv) {
  const o = { steps: 10, warmup: 3, batch: 16, size: 224, rank: 8 };
  for (let i = 0; i < argv.length; i++) {
    const [key, inline] = argv[i].split('=');
    const value = () => Number(inline !== undefined ? inline : argv[++i]);
    if (key === '--steps') o.steps = value();
    else if (key === '--warmup') o.warmup = value();
    else if (key === '--batch') o.batch = value();
    else if (key === '--size') o.size = value();
    else if (key === '--rank') o.rank = value();
    else if (key === '--child') o.child = inline !== undefined ? inline : argv[++i];
    else if (key === '--file') o.file = inline !== undefined ? inline : argv[++i];
    else throw new Error(`unknown option ${argv[i]}`);
  }
  for (const k of ['steps', 'batch', 'size', 'rank']) if (!(Number.isInteger(o[k]) && o[k] >= 1)) throw new Error(`--${k} must be a positive integer`);
  return o;
}

const python = runPythonFile;

const { EXPORT_RESNET18: EXPORT, pyTimedSteps } = require('./resnet18');

const PYTORCH_LORA = String.raw`
import json, math, resource, sys, time, io
import torch, torchvision
import torch.nn.utils.parametrize as P
state_file, threads, batch, size, warmup, steps, r = sys.argv[1], *map(int, sys.argv[2:8])
torch.set_num_threads(threads)
m = torchvision.models.resnet18(weights=None)
m.fc = torch.nn.Linear(512, 10)
m.load_state_dict(torch.load(state_file))
for p in m.parameters(): p.requires_grad = False

class Lora(torch.nn.Module):
    def __init__(self, w, r, alpha):
        super().__init__()
        out, fan_in = w.shape[0], w[0].numel()
        self.A = torch.nn.Parameter(torch.empty((r,) + tuple(w.shape[1:])).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in)))
        self.B = torch.nn.Parameter(torch.zeros((out, r) + (1,) * (w.dim() - 2)))
        self.s, self.r, self.out = alpha / r, r, out
    def forward(self, W0):
        return torch.add(W0, (self.B.view(self.out, self.r) @ self.A.view(self.r, -1)).view(W0.shape), alpha=self.s)

for name, mod in m.named_modules():
    if name.startswith(('layer3', 'layer4')) and isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
        P.register_parametrization(mod, 'weight', Lora(mod.weight, r, 2 * r))
for p in m.fc.parameters(): p.requires_grad = True
m.train()
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d): mod.eval()
params = [p for p in m.parameters() if p.requires_grad]
${pyTimedSteps()}buf = io.BytesIO(); torch.save(opt.state_dict()['state'], buf)
print(json.dumps({'sps': batch * steps / secs, 'trainable': sum(p.numel() for p in params),
                  'optBytes': buf.getbuffer().nbytes, 'rssMb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
`;

async function child(o) {
  const torch = require('../dist');
  const model = await torch.jit.load(o.file);
  if (o.child === 'lora') {
    const targets = model.namedModules().filter(([n, m]) => /^layer[34]\./.test(n) && /(Conv2d|Linear)$/.test(m.type)).map(([n]) => n);
    await torch.peft.lora(model, { targets, rank: o.rank, alpha: 2 * o.rank, modulesToSave: ['fc'] });
  }
  model.train();
  const opt = new torch.optim.AdamW(model.parameters({ trainable: true }), { lr: 1e-4 });
  const input = torch.randn([o.batch, 3, o.size, o.size]);
  const target = torch.randint(0, 10, [o.batch]);
  const batches = (n) => Array.from({ length: n }, () => ({ input, target }));
  const common = { epochs: 1, optimizer: opt, progress: false, keepBatches: true };
  if (o.warmup > 0) await torch.train.fit(model, { ...common, train: batches(o.warmup) });
  const t0 = performance.now();
  await torch.train.fit(model, { ...common, train: batches(o.steps) });
  const secs = (performance.now() - t0) / 1000;
  const state = await opt.stateDict();
  console.log(JSON.stringify({ sps: (o.batch * o.steps) / secs, trainable: model.numParameters({ trainable: true }),
    optBytes: state.state.length, rssMb: process.resourceUsage().maxRSS / 1024 }));
}

async function main(o) {
  const torch = require('../dist');
  const threads = torch.getNumThreads();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-bench-lora-'));
  try {
    const file = path.join(dir, 'resnet18.pt');
    const pyVersion = python(dir, 'export.py', EXPORT, [file, path.join(dir, 'resnet18.state')]);
    console.log(`# LoRA vs full fine-tune: resnet18, batch ${o.batch}, 3x${o.size}x${o.size}, AdamW, ${o.warmup} warm-up + ${o.steps} timed steps, r=${o.rank} on layer3+layer4 + fc`);
    console.log(`# ${os.cpus()[0]?.model ?? 'CPU'}, ${threads} intra-op thread(s); libtorch ${torch.version.libtorch}, PyTorch ${pyVersion}; load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
    const rows = [];
    for (const mode of ['full', 'lora']) {
      process.stderr.write(`bench/lora: finetorch ${mode}...\n`);
      const r = spawnSync(process.execPath, [__filename, '--child', mode, '--file', file, ...['steps', 'warmup', 'batch', 'size', 'rank'].flatMap((k) => [`--${k}`, String(o[k])])], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`finetorch ${mode} failed: ${r.stderr}`);
      rows.push({ label: `finetorch ${mode === 'full' ? 'full fine-tune' : 'LoRA (torch.peft)'}`, ...JSON.parse(r.stdout.trim().split('\n').pop()) });
    }
    process.stderr.write('bench/lora: PyTorch LoRA (by hand)...\n');
    let py = null;
    try {
      py = JSON.parse(python(dir, 'lora.py', PYTORCH_LORA, [path.join(dir, 'resnet18.state'), threads, o.batch, o.size, o.warmup, o.steps, o.rank].map(String)));
      rows.push({ label: 'PyTorch LoRA (parametrize, eager)', ...py });
    } catch (e) {
      console.log(`note: the PyTorch side could not run: ${e.message}`);
    }
    const f = (x, d = 2) => (x == null ? 'n/a' : x.toFixed(d));
    console.log('| run | trainable params | samples/s | peak RSS (MB) | optimizer state (MB) |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    for (const r of rows) console.log(`| ${r.label} | ${r.trainable.toLocaleString('en-US')} | ${f(r.sps)} | ${f(r.rssMb, 0)} | ${f(r.optBytes / 2 ** 20, 2)} |`);
    const lora = rows[1];
    const full = rows[0];
    console.log(`\nfinetorch LoRA / full fine-tune: ${f(lora.sps / full.sps, 3)}x samples/s, ${f(lora.optBytes / full.optBytes, 4)}x optimizer state`);
    if (py) console.log(`finetorch LoRA / PyTorch LoRA: ${f(lora.sps / py.sps, 3)}x samples/s (goal >= 1.0)`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const o = parseArgs(process.argv.slice(2));
(o.child ? child(o) : main(o)).catch((err) => {
  console.error(`bench/lora: FAILED: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
