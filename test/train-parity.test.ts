/**
 * Training parity with PyTorch: the same TorchScript resnet18 (5-class head), the same 30 batches,
 * the same recipe, trained by PyTorch and by finetorch, must give the same per-step losses and the
 * same final weights.
 *
 * Recipe (both sides): AdamW with two parameter groups, backbone = every parameter except
 * fc.weight/fc.bias (lr 1e-4, weight decay 0.01) and head = fc.weight, fc.bias (lr 1e-3, weight
 * decay 0), in named_parameters order; CrossEntropyLoss(label_smoothing=0.1); warm-up then cosine,
 * SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=25)],
 * milestones=[5]), stepped after every batch; train mode (BatchNorm batch statistics, running
 * stats updated).
 *
 * Metrics: a loss matches when |a - b| <= 1e-4 or |a - b| <= 1e-4 |b|; a tensor matches when
 * max|a - b| / (max|b| + 1e-12) <= 1e-4 (b = PyTorch's). Every state_dict entry is compared:
 * parameters and BatchNorm buffers (running_mean, running_var, num_batches_tracked).
 *
 * finetorch runs twice from the same file: through train.fit (the fused native step) and through
 * the manual loop (forward, loss, backward, opt.step, sched.step, opt.zeroGrad).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import type { Tensor } from '../lib';
import { close, readF32, readI64, runPy, runPyJson, tmpDir } from './helpers/train-fixtures';

const STEPS = 30;
const B = 4;
const PIXELS = 3 * 32 * 32;
const TOL = 1e-4;

/** Makes the starting model and the batches, then trains them with PyTorch. */
const PY_TRAIN = String.raw`
import json, os, sys
import torch, torchvision
d, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
m = torchvision.models.resnet18(weights=None)
m.fc = torch.nn.Linear(512, 5)
torch.jit.script(m).save(os.path.join(d, 'start.pt'))
g = torch.Generator().manual_seed(1234)
xs = torch.randn(${STEPS}, ${B}, 3, 32, 32, generator=g)
ys = torch.randint(0, 5, (${STEPS}, ${B}), generator=g)
xs.numpy().astype('<f4').tofile(os.path.join(d, 'x.f32'))
ys.numpy().astype('<i8').tofile(os.path.join(d, 'y.i64'))

# PyTorch trains the very file finetorch will load.
model = torch.jit.load(os.path.join(d, 'start.pt'))
model.train()
head = ('fc.weight', 'fc.bias')
named = list(model.named_parameters())
opt = torch.optim.AdamW([
    {'params': [p for n, p in named if n not in head], 'lr': 1e-4, 'weight_decay': 0.01},
    {'params': [p for n, p in named if n in head], 'lr': 1e-3, 'weight_decay': 0.0},
], betas=(0.9, 0.999), eps=1e-8)
S = torch.optim.lr_scheduler
sched = S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=5), S.CosineAnnealingLR(opt, T_max=25)], milestones=[5])
lossf = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
losses, lrs = [], []
for i in range(${STEPS}):
    lrs.append([g['lr'] for g in opt.param_groups])
    loss = lossf(model(xs[i]), ys[i])
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    losses.append(loss.item())
lrs.append([g['lr'] for g in opt.param_groups])
model.save(os.path.join(d, 'python_final.pt'))
print(json.dumps({'losses': losses, 'lrs': lrs, 'names': [n for n, _ in named], 'groups': [len(g['params']) for g in opt.param_groups]}))
`;

/** Per state_dict entry: max|a - b| / (max|b| + 1e-12), a = finetorch's file, b = PyTorch's. */
const PY_COMPARE = String.raw`
import json, sys
import torch
a = torch.jit.load(sys.argv[1]).state_dict()
b = torch.jit.load(sys.argv[2]).state_dict()
out = {}
for k, vb in b.items():
    va = a[k]
    if vb.is_floating_point():
        out[k] = ((va.double() - vb.double()).abs().max() / (vb.double().abs().max() + 1e-12)).item()
    else:
        out[k] = 0.0 if torch.equal(va, vb) else float('inf')
print(json.dumps({'diffs': out, 'missing': [k for k in b if k not in a], 'extra': [k for k in a if k not in b]}))
`;

interface Reference { losses: number[]; lrs: number[][]; names: string[]; groups: number[] }

let dir: string;
let ref: Reference;
let xs: Float32Array;
let ys: BigInt64Array;

beforeAll(async () => {
  dir = tmpDir('train-parity');
  ref = await runPyJson<Reference>(PY_TRAIN, [dir, String(torch.getNumThreads())]);
  xs = readF32(path.join(dir, 'x.f32'));
  ys = readI64(path.join(dir, 'y.i64'));
  expect(xs.length).toBe(STEPS * B * PIXELS);
  expect(ys.length).toBe(STEPS * B);
}, 300_000);

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function batch(i: number): { input: Tensor; target: Tensor } {
  return {
    input: torch.tensor(xs.slice(i * B * PIXELS, (i + 1) * B * PIXELS), { shape: [B, 3, 32, 32] }),
    target: torch.tensor(ys.slice(i * B, (i + 1) * B)),
  };
}

/** The same model, groups, loss and schedule as the Python side. */
async function setup() {
  const model = await torch.jit.load(path.join(dir, 'start.pt'));
  model.train();
  const named = model.namedParameters();
  expect(named.map(([n]) => n)).toEqual(ref.names);
  const isHead = (n: string) => n === 'fc.weight' || n === 'fc.bias';
  const opt = new torch.optim.AdamW([
    { params: named.filter(([n]) => !isHead(n)).map(([, p]) => p), lr: 1e-4, weightDecay: 0.01 },
    { params: named.filter(([n]) => isHead(n)).map(([, p]) => p), lr: 1e-3, weightDecay: 0 },
  ], { betas: [0.9, 0.999], eps: 1e-8 });
  expect(opt.paramGroups.map((g) => g.params.length)).toEqual(ref.groups);
  const { LinearLR, CosineAnnealingLR, SequentialLR } = torch.optim.lrScheduler;
  const sched = new SequentialLR(opt, {
    schedulers: [new LinearLR(opt, { startFactor: 0.1, totalIters: 5 }), new CosineAnnealingLR(opt, { tMax: 25 })],
    milestones: [5],
  });
  const loss = new torch.nn.CrossEntropyLoss({ labelSmoothing: 0.1 });
  return { model, opt, sched, loss };
}

function expectLrs(got: number[], want: number[], step: number): void {
  expect(got.length).toBe(want.length);
  got.forEach((lr, g) => {
    if (!close(lr, want[g], 1e-9)) throw new Error(`lr of group ${g} before step ${step + 1}: finetorch ${lr}, PyTorch ${want[g]}`);
  });
}

function expectLosses(got: number[]): void {
  expect(got).toHaveLength(STEPS);
  const bad = got.map((l, i) => ({ step: i + 1, finetorch: l, pytorch: ref.losses[i] })).filter((r) => !close(r.finetorch, r.pytorch, TOL));
  expect(bad).toEqual([]);
}

async function expectWeights(model: Awaited<ReturnType<typeof setup>>['model'], tag: string): Promise<void> {
  const file = path.join(dir, `finetorch_${tag}.pt`);
  await model.save(file);
  const out = JSON.parse((await runPy(PY_COMPARE, [file, path.join(dir, 'python_final.pt')])).trim()) as
    { diffs: Record<string, number>; missing: string[]; extra: string[] };
  expect(out.missing).toEqual([]);
  expect(out.extra).toEqual([]);
  expect(Object.keys(out.diffs).length).toBeGreaterThan(ref.names.length); // parameters and buffers
  const bad = Object.entries(out.diffs).filter(([, d]) => !(d <= TOL));
  expect(bad).toEqual([]);
}

describe('training parity with PyTorch (resnet18, AdamW 2 groups, label smoothing, warm-up + cosine)', () => {
  test('train.fit (fused native step, scheduler per batch) gives PyTorch\'s per-step losses, learning rates and final weights', async () => {
    const { model, opt, sched, loss } = await setup();
    expectLrs(opt.paramGroups.map((g) => g.lr), ref.lrs[0], 0);
    const losses: number[] = [];
    const lrAfter: number[][] = [];
    const history = await torch.train.fit(model, {
      train: Array.from({ length: STEPS }, (_, i) => batch(i)),
      epochs: 1, optimizer: opt, loss, scheduler: sched, schedulerStep: 'batch', progress: false,
      callbacks: { onBatchEnd: ({ loss: l, lr }) => { losses.push(l); lrAfter.push(lr); } },
    });
    expect(history.epochs).toHaveLength(1);
    expect(history.epochs[0].samples).toBe(STEPS * B);
    expectLosses(losses);
    lrAfter.forEach((lrs, i) => expectLrs(lrs, ref.lrs[i + 1], i + 1));
    await expectWeights(model, 'fit');
    opt.dispose();
    model.dispose();
  }, 300_000);

  test('the manual loop (forward, loss, backward, opt.step, sched.step, zeroGrad) gives PyTorch\'s losses and final weights', async () => {
    const { model, opt, sched, loss: lossFn } = await setup();
    const losses: number[] = [];
    for (let i = 0; i < STEPS; i++) {
      expectLrs(opt.paramGroups.map((g) => g.lr), ref.lrs[i], i);
      const { input, target } = batch(i);
      const logits: Tensor = await model.forward(input);
      const loss = await lossFn.forward(logits, target);
      await loss.backward();
      await opt.step();
      sched.step();
      await opt.zeroGrad();
      losses.push((await loss.item()) as number);
      for (const t of [input, target, logits, loss]) t.dispose();
    }
    expectLrs(opt.paramGroups.map((g) => g.lr), ref.lrs[STEPS], STEPS);
    expectLosses(losses);
    await expectWeights(model, 'manual');
    opt.dispose();
    model.dispose();
  }, 300_000);
});
