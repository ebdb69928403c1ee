/**
 * Training units: CrossEntropyLoss, optimizers, schedulers, clipping, fit/evaluate/predict, with
 * PyTorch (/usr/bin/python3 or $FINETORCH_PYTHON) computing the reference values in the same run.
 *
 * Tiny models made by Python in beforeAll:
 *   mlp.pt = torch.jit.script(Sequential(Linear(4, 8), Tanh(), Linear(8, 3))) after manual_seed(3)
 *   id.pt  = a scripted module whose forward returns its input (so logits are chosen by hand)
 */
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import type { Tensor } from '../lib';
import { close, floats, getGc, labels, relDiff, runPyJson, tmpDir } from './helpers/train-fixtures';

const { StepLR, CosineAnnealingLR, LinearLR, SequentialLR, OneCycleLR, ReduceLROnPlateau } = torch.optim.lrScheduler;
type Opt = InstanceType<typeof torch.optim.SGD>;

// ---------------------------------------------------------------------------------------------
// Shared inputs (JS decides them, Python and finetorch both use them).

const N = 6;
const C = 5;
const LOGITS = Array.from(floats(11, N * C), (v) => v * 3);
/** Targets per variant: -100 (the default ignore index) at 2; with ignoreIndex 4, class 4 at 5 is ignored. */
const targetsFor = (v: { ignoreIndex?: number }) => (v.ignoreIndex === undefined ? [1, 0, -100, 3, 2, 4] : [1, 0, 2, 3, 2, v.ignoreIndex]);
const WEIGHT = [0.5, 1, 2, 1.5, 0.25];
const SOFT = (() => {
  const r = floats(12, N * C).map((v) => v + 1.5);
  for (let i = 0; i < N; i++) {
    const s = r.slice(i * C, (i + 1) * C).reduce((a, b) => a + b, 0);
    for (let j = 0; j < C; j++) r[i * C + j] /= s;
  }
  return Array.from(r);
})();

interface CeVariant { name: string; weight?: boolean; ignoreIndex?: number; labelSmoothing?: number; reduction?: 'mean' | 'sum' | 'none'; soft?: boolean }
const CE_VARIANTS: CeVariant[] = [
  { name: 'defaults (mean, ignore -100)' },
  { name: 'sum', reduction: 'sum' },
  { name: 'none', reduction: 'none' },
  { name: 'weight, mean', weight: true },
  { name: 'weight, none', weight: true, reduction: 'none' },
  { name: 'labelSmoothing 0.1', labelSmoothing: 0.1 },
  { name: 'labelSmoothing 0.2, sum', labelSmoothing: 0.2, reduction: 'sum' },
  { name: 'ignoreIndex 4', ignoreIndex: 4 },
  { name: 'ignoreIndex 4, weight, labelSmoothing 0.15, mean', ignoreIndex: 4, weight: true, labelSmoothing: 0.15 },
  { name: 'ignoreIndex 4, weight, labelSmoothing 0.15, none', ignoreIndex: 4, weight: true, labelSmoothing: 0.15, reduction: 'none' },
  { name: 'probability targets', soft: true },
  { name: 'probability targets, weight, labelSmoothing 0.1, sum', soft: true, weight: true, labelSmoothing: 0.1, reduction: 'sum' },
];

/** SGD data: 8 samples of 4 features, 3 classes. */
const SGD_X = Array.from(floats(21, 8 * 4));
const SGD_Y = Array.from(labels(22, 8, 3), Number);
interface SgdConfig { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean }
const SGD_CONFIGS: SgdConfig[] = [
  { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false },
  { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false },
  { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 0.01, nesterov: true },
  { lr: 0.2, momentum: 0.5, dampening: 0.1, weightDecay: 0.001, nesterov: false },
];
const CLIP_NORM_TYPES = [2, 1, Infinity];
const CLIP_MAX = 0.05;

/**
 * Schedules, spelled twice: `py` is evaluated by Python with `S` = torch.optim.lr_scheduler and
 * `opt` = an SGD with two groups (lr 0.1 and 0.02); `js` builds finetorch's equivalent.
 */
interface SchedSpec { name: string; py: string; js: (opt: Opt) => { step(m?: number): void }; steps: number; metrics?: number[] }
const PLATEAU_METRICS = [1, 0.9, 0.95, 0.9, 0.91, 0.8, 0.8, 0.8, 0.8, 0.795, 0.81, 0.82, 0.83, 0.84, 0.85];
const SCHEDULES: SchedSpec[] = [
  { name: 'StepLR(stepSize 3, gamma 0.5)', py: 'S.StepLR(opt, step_size=3, gamma=0.5)', js: (o) => new StepLR(o, { stepSize: 3, gamma: 0.5 }), steps: 10 },
  { name: 'CosineAnnealingLR(tMax 6, etaMin 1e-3), past tMax', py: 'S.CosineAnnealingLR(opt, T_max=6, eta_min=1e-3)', js: (o) => new CosineAnnealingLR(o, { tMax: 6, etaMin: 1e-3 }), steps: 16 },
  { name: 'LinearLR(startFactor 0.25, totalIters 4)', py: 'S.LinearLR(opt, start_factor=0.25, total_iters=4)', js: (o) => new LinearLR(o, { startFactor: 0.25, totalIters: 4 }), steps: 8 },
  { name: 'LinearLR(1 -> 0.1 over 5)', py: 'S.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=5)', js: (o) => new LinearLR(o, { startFactor: 1, endFactor: 0.1, totalIters: 5 }), steps: 8 },
  {
    name: 'SequentialLR([LinearLR, CosineAnnealingLR], [5])',
    py: 'S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=5), S.CosineAnnealingLR(opt, T_max=10)], milestones=[5])',
    js: (o) => new SequentialLR(o, { schedulers: [new LinearLR(o, { startFactor: 0.1, totalIters: 5 }), new CosineAnnealingLR(o, { tMax: 10 })], milestones: [5] }),
    steps: 18,
  },
  {
    name: 'SequentialLR([LinearLR, StepLR, CosineAnnealingLR], [3, 7])',
    py: 'S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.5, total_iters=3), S.StepLR(opt, step_size=2, gamma=0.5), S.CosineAnnealingLR(opt, T_max=5, eta_min=1e-4)], milestones=[3, 7])',
    js: (o) => new SequentialLR(o, {
      schedulers: [new LinearLR(o, { startFactor: 0.5, totalIters: 3 }), new StepLR(o, { stepSize: 2, gamma: 0.5 }), new CosineAnnealingLR(o, { tMax: 5, etaMin: 1e-4 })],
      milestones: [3, 7],
    }),
    steps: 14,
  },
  { name: 'OneCycleLR(cos)', py: 'S.OneCycleLR(opt, max_lr=[0.1, 0.05], total_steps=20, cycle_momentum=False)', js: (o) => new OneCycleLR(o, { maxLr: [0.1, 0.05], totalSteps: 20 }), steps: 20 },
  {
    name: 'OneCycleLR(linear, pctStart 0.25, divFactor 10, finalDivFactor 100)',
    py: "S.OneCycleLR(opt, max_lr=0.3, total_steps=16, pct_start=0.25, anneal_strategy='linear', div_factor=10, final_div_factor=100, cycle_momentum=False)",
    js: (o) => new OneCycleLR(o, { maxLr: 0.3, totalSteps: 16, pctStart: 0.25, annealStrategy: 'linear', divFactor: 10, finalDivFactor: 100 }),
    // PyTorch's 16th step (step == totalSteps) extrapolates the linear ramp below zero; see the
    // fit test below for what that does to finetorch.
    steps: 15,
  },
  { name: 'OneCycleLR(threePhase)', py: 'S.OneCycleLR(opt, max_lr=0.2, total_steps=25, three_phase=True, cycle_momentum=False)', js: (o) => new OneCycleLR(o, { maxLr: 0.2, totalSteps: 25, threePhase: true }), steps: 25 },
  {
    name: 'ReduceLROnPlateau(min, factor 0.5, patience 1, cooldown 1, threshold 0.01, minLr per group)',
    py: 'S.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1, cooldown=1, threshold=0.01, min_lr=[0.01, 0.004])',
    js: (o) => new ReduceLROnPlateau(o, { mode: 'min', factor: 0.5, patience: 1, cooldown: 1, threshold: 0.01, minLr: [0.01, 0.004] }),
    steps: PLATEAU_METRICS.length, metrics: PLATEAU_METRICS,
  },
  {
    name: 'ReduceLROnPlateau(max, abs threshold 0.02, patience 0)',
    py: 'S.ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=0, threshold=0.02, threshold_mode="abs")',
    js: (o) => new ReduceLROnPlateau(o, { mode: 'max', factor: 0.3, patience: 0, threshold: 0.02, thresholdMode: 'abs' }),
    steps: PLATEAU_METRICS.length, metrics: PLATEAU_METRICS,
  },
];

const PY = String.raw`
import json, math, os, sys
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler as S
d = sys.argv[1]
torch.set_num_threads(int(sys.argv[2]))
cfg = json.load(open(os.path.join(d, 'config.json')))
out = {}

# models
torch.manual_seed(3)
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))).save(os.path.join(d, 'mlp.pt'))
class Id(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
torch.jit.script(Id()).save(os.path.join(d, 'id.pt'))

# cross-entropy variants
logits = torch.tensor(cfg['logits']).reshape(${N}, ${C})
soft = torch.tensor(cfg['soft']).reshape(${N}, ${C})
w = torch.tensor(cfg['weight'])
ce = []
for v in cfg['ce']:
    kw = dict(reduction=v.get('reduction', 'mean'), label_smoothing=v.get('labelSmoothing', 0.0))
    if v.get('weight'): kw['weight'] = w
    if 'ignoreIndex' in v: kw['ignore_index'] = v['ignoreIndex']
    t = soft if v.get('soft') else torch.tensor(v['targets'])
    ce.append(F.cross_entropy(logits, t, **kw).flatten().tolist())
out['ce'] = ce

# SGD, 5 steps from mlp.pt
X = torch.tensor(cfg['sgdX']).reshape(8, 4)
Y = torch.tensor(cfg['sgdY'])
sgd = []
for c in cfg['sgd']:
    m = torch.jit.load(os.path.join(d, 'mlp.pt'))
    opt = torch.optim.SGD(m.parameters(), lr=c['lr'], momentum=c['momentum'], dampening=c['dampening'], weight_decay=c['weightDecay'], nesterov=c['nesterov'])
    for _ in range(5):
        loss = F.cross_entropy(m(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sgd.append({n: p.detach().flatten().tolist() for n, p in m.named_parameters()})
out['sgd'] = sgd

# clip_grad_norm_
clip = []
for nt in cfg['clipNormTypes']:
    nt = math.inf if nt is None else nt
    m = torch.jit.load(os.path.join(d, 'mlp.pt'))
    F.cross_entropy(m(X), Y).backward()
    norm = torch.nn.utils.clip_grad_norm_(list(m.parameters()), cfg['clipMax'], norm_type=nt)
    clip.append({'norm': norm.item(), 'grads': {n: p.grad.flatten().tolist() for n, p in m.named_parameters()}})
out['clip'] = clip

# schedules
lrs = []
for spec in cfg['schedules']:
    p0, p1 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{'params': [p0], 'lr': 0.1}, {'params': [p1], 'lr': 0.02}], lr=0.1)
    sched = eval(spec['py'], {'S': S, 'opt': opt})
    seq = [[g['lr'] for g in opt.param_groups]]
    for i in range(spec['steps']):
        opt.step()
        if 'metrics' in spec: sched.step(spec['metrics'][i])
        else: sched.step()
        seq.append([g['lr'] for g in opt.param_groups])
    lrs.append(seq)
out['lrs'] = lrs
print(json.dumps(out))
`;

interface PyOut {
  ce: number[][];
  sgd: Record<string, number[]>[];
  clip: { norm: number; grads: Record<string, number[]> }[];
  lrs: number[][][];
}

let dir: string;
let ref: PyOut;
let mlpFile: string;
let idFile: string;

beforeAll(async () => {
  dir = tmpDir('train-units');
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    logits: LOGITS, soft: SOFT, weight: WEIGHT,
    ce: CE_VARIANTS.map(({ name: _n, ...v }) => ({ ...v, targets: targetsFor(v) })),
    sgdX: SGD_X, sgdY: SGD_Y, sgd: SGD_CONFIGS,
    clipNormTypes: CLIP_NORM_TYPES.map((n) => (Number.isFinite(n) ? n : null)), clipMax: CLIP_MAX,
    schedules: SCHEDULES.map((s) => ({ py: s.py, steps: s.steps, ...(s.metrics ? { metrics: s.metrics } : {}) })),
  }));
  ref = await runPyJson<PyOut>(PY, [dir, String(torch.getNumThreads())]);
  mlpFile = path.join(dir, 'mlp.pt');
  idFile = path.join(dir, 'id.pt');
}, 180_000);

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const f32 = async (t: Tensor) => Array.from((await t.data()) as Float32Array);
const sgdX = () => torch.tensor(Float32Array.from(SGD_X), { shape: [8, 4] });
const sgdY = () => torch.tensor(BigInt64Array.from(SGD_Y, BigInt));

async function params(model: { namedParameters(): [string, Tensor][] }): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [n, p] of model.namedParameters()) out[n] = await f32(p);
  return out;
}

// ---------------------------------------------------------------------------------------------

describe('CrossEntropyLoss', () => {
  test.each(CE_VARIANTS.map((v, i) => [v.name, i] as const))('%s matches PyTorch', async (_name, i) => {
    const v = CE_VARIANTS[i];
    const logits = torch.tensor(Float32Array.from(LOGITS), { shape: [N, C] });
    const target = v.soft ? torch.tensor(Float32Array.from(SOFT), { shape: [N, C] }) : torch.tensor(BigInt64Array.from(targetsFor(v), BigInt));
    const weight = v.weight ? torch.tensor(Float32Array.from(WEIGHT)) : undefined;
    const lossFn = new torch.nn.CrossEntropyLoss({ weight, ignoreIndex: v.ignoreIndex, labelSmoothing: v.labelSmoothing, reduction: v.reduction });
    const loss = await lossFn.forward(logits, target);
    const got = await f32(loss);
    expect(loss.shape).toEqual(v.reduction === 'none' ? [N] : []);
    expect(got).toHaveLength(ref.ce[i].length);
    got.forEach((x, j) => expect(close(x, ref.ce[i][j], 1e-6)).toBe(true));
    // the functional form is the same computation
    const f = await torch.nn.functional.crossEntropy(logits, target, { weight, ignoreIndex: v.ignoreIndex, labelSmoothing: v.labelSmoothing, reduction: v.reduction });
    expect(await f32(f)).toEqual(got);
    for (const t of [logits, target, loss, f, ...(weight ? [weight] : [])]) t.dispose();
  });

  test('a label out of range is an Error naming the label and its index', async () => {
    const logits = torch.zeros([4, 5]);
    await expect(new torch.nn.CrossEntropyLoss().forward(logits, torch.tensor([0n, 1n, 2n, 7n])))
      .rejects.toThrow('labels must be in [0, 5): got 7 at index 3');
    await expect(torch.nn.functional.crossEntropy(logits, torch.tensor([-1n, 1n, 2n, 3n])))
      .rejects.toThrow('labels must be in [0, 5): got -1 at index 0');
    // the ignore index is not a class, and not an error
    const ok = await torch.nn.functional.crossEntropy(logits, torch.tensor([-100n, 1n, 2n, 3n]));
    expect(close((await ok.item()) as number, Math.log(5), 1e-6)).toBe(true);
  });

  test('logits and labels with different batch sizes are an Error that gives both sizes', async () => {
    await expect(new torch.nn.CrossEntropyLoss().forward(torch.zeros([4, 5]), torch.tensor([0n, 1n, 2n])))
      .rejects.toThrow(/batch size 4 vs 3/);
  });

  test('fit reports a bad label with the label, its index, and the batch', async () => {
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.SGD(model.parameters(), { lr: 0.1 });
    const good = { input: sgdX(), target: sgdY() };
    const bad = { input: sgdX(), target: torch.tensor([0n, 1n, 2n, 0n, 1n, 3n, 0n, 0n]) };
    await expect(torch.train.fit(model, { train: [good, bad], epochs: 1, optimizer: opt, progress: false }))
      .rejects.toThrow(/batch 2.*labels must be in \[0, 3\): got 3 at index 5/);
    opt.dispose();
    model.dispose();
  });

  test('fit reports a logits/labels batch-size mismatch', async () => {
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.SGD(model.parameters(), { lr: 0.1 });
    const bad = { input: sgdX(), target: torch.tensor([0n, 1n, 2n]) };
    await expect(torch.train.fit(model, { train: [bad], epochs: 1, optimizer: opt, progress: false }))
      .rejects.toThrow(/batch 1.*\b8\b.*\b3\b/);
    opt.dispose();
    model.dispose();
  });
});

describe('optimizers', () => {
  test('an optimizer over a frozen parameter is an Error that says so', async () => {
    const model = await torch.jit.load(mlpFile);
    model.freeze('0.*');
    const frozen = new Map(model.namedParameters()).get('0.weight')!;
    expect(() => new torch.optim.AdamW([frozen])).toThrow(/parameter 0 of group 0 does not require grad/);
    expect(() => new torch.optim.SGD([{ params: model.parameters({ trainable: true }) }, { params: [frozen] }])).toThrow(/group 1 does not require grad/);
    model.dispose();
  });

  test('an optimizer over a disposed parameter is an Error, and so is stepping after a parameter was disposed', async () => {
    const a = torch.zeros([3], { requiresGrad: true });
    const b = torch.zeros([3], { requiresGrad: true });
    a.dispose();
    expect(() => new torch.optim.AdamW([b, a])).toThrow(/parameter 1 of group 0 was disposed/);
    const opt = new torch.optim.SGD([b], { lr: 0.1 });
    b.dispose();
    await expect(opt.step()).rejects.toThrow(/step\(\): parameter 0 was disposed/);
    opt.dispose();
    await expect(opt.step()).rejects.toThrow(/disposed/);
    await expect(opt.zeroGrad()).rejects.toThrow(/disposed/);
  });

  test.each(SGD_CONFIGS.map((c, i) => [JSON.stringify(c), i] as const))('SGD %s matches PyTorch after 5 steps', async (_n, i) => {
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.SGD(model.parameters(), SGD_CONFIGS[i]);
    const x = sgdX();
    const y = sgdY();
    for (let s = 0; s < 5; s++) {
      const logits: Tensor = await model.forward(x);
      const loss = await torch.nn.functional.crossEntropy(logits, y);
      await loss.backward();
      await opt.step();
      await opt.zeroGrad();
      logits.dispose();
      loss.dispose();
    }
    const got = await params(model);
    expect(Object.keys(got)).toEqual(Object.keys(ref.sgd[i]));
    for (const [n, want] of Object.entries(ref.sgd[i])) expect(relDiff(got[n], want)).toBeLessThan(1e-6);
    opt.dispose();
    model.dispose();
  });

  test.each(CLIP_NORM_TYPES.map((n, i) => [n, i] as const))('clipGradNorm (normType %s) returns PyTorch\'s total norm and clips the gradients as PyTorch does', async (normType, i) => {
    const model = await torch.jit.load(mlpFile);
    const logits: Tensor = await model.forward(sgdX());
    const loss = await torch.nn.functional.crossEntropy(logits, sgdY());
    await loss.backward();
    const norm = await torch.nn.utils.clipGradNorm(model.parameters(), CLIP_MAX, normType);
    expect(close(norm, ref.clip[i].norm, 1e-6)).toBe(true);
    expect(norm).toBeGreaterThan(CLIP_MAX); // so the clipping did something
    for (const [n, p] of model.namedParameters()) {
      const g = (await p.grad())!;
      expect(relDiff(await f32(g), ref.clip[i].grads[n])).toBeLessThan(1e-6);
      g.dispose();
    }
    model.dispose();
  });

  test('optimizer stateDict/loadStateDict round trip: a restored AdamW continues exactly as the original', async () => {
    const a = await torch.jit.load(mlpFile);
    const optA = new torch.optim.AdamW(a.parameters(), { lr: 0.01, weightDecay: 0.05 });
    const x = sgdX();
    const y = sgdY();
    const step = async (m: typeof a, o: typeof optA) => {
      const logits: Tensor = await m.forward(x);
      const loss = await torch.nn.functional.crossEntropy(logits, y);
      await loss.backward();
      await o.step();
      await o.zeroGrad();
      logits.dispose();
      loss.dispose();
    };
    for (let s = 0; s < 3; s++) await step(a, optA);
    optA.paramGroups[0].lr = 0.0123;
    const state = await optA.stateDict();
    const file = path.join(dir, 'roundtrip.pt');
    await a.save(file);
    const b = await torch.jit.load(file);
    const optB = new torch.optim.AdamW(b.parameters(), { lr: 0.5, weightDecay: 0.05 });
    await optB.loadStateDict(state);
    expect(optB.paramGroups[0].lr).toBe(0.0123);
    for (let s = 0; s < 3; s++) {
      await step(a, optA);
      await step(b, optB);
    }
    expect(await params(b)).toEqual(await params(a));
    // a state of another kind or group count is refused
    const sgd = new torch.optim.SGD(b.parameters(), { lr: 0.1 });
    await expect(sgd.loadStateDict(state)).rejects.toThrow(/expected the state of a sgd optimizer with 1 group/);
    for (const o of [optA, optB, sgd]) o.dispose();
    a.dispose();
    b.dispose();
  });
});

// ---------------------------------------------------------------------------------------------

/** What every scheduler offers (LRScheduler.step() takes no metric; ReduceLROnPlateau's does). */
interface Resumable { step(metric?: number): void; stateDict(): unknown; loadStateDict(s: unknown): void; getLastLr(): number[] }

function twoGroups(): Opt {
  return new torch.optim.SGD([
    { params: [torch.zeros([1], { requiresGrad: true })], lr: 0.1 },
    { params: [torch.zeros([1], { requiresGrad: true })], lr: 0.02 },
  ], { lr: 0.1 });
}

describe('learning-rate schedulers', () => {
  test.each(SCHEDULES.map((s, i) => [s.name, i] as const))('%s gives PyTorch\'s learning rates at every step', (_n, i) => {
    const spec = SCHEDULES[i];
    const opt = twoGroups();
    const sched = spec.js(opt);
    const seq = [opt.paramGroups.map((g) => g.lr)];
    for (let s = 0; s < spec.steps; s++) {
      sched.step(spec.metrics?.[s]);
      seq.push(opt.paramGroups.map((g) => g.lr));
    }
    const want = ref.lrs[i];
    expect(seq).toHaveLength(want.length);
    const bad = seq.flatMap((lrs, s) => lrs.map((lr, g) => ({ step: s, group: g, finetorch: lr, pytorch: want[s][g] })))
      .filter((r) => !close(r.finetorch, r.pytorch, 1e-9));
    expect(bad).toEqual([]);
    opt.dispose();
  });

  test.each(SCHEDULES.map((s, i) => [s.name, i] as const))('%s: stateDict survives JSON and loadStateDict continues the same sequence', (_n, i) => {
    const spec = SCHEDULES[i];
    const optA = twoGroups();
    const a = spec.js(optA) as unknown as Resumable;
    const split = Math.floor(spec.steps / 2);
    for (let s = 0; s < split; s++) a.step(spec.metrics?.[s]);
    const state = JSON.parse(JSON.stringify(a.stateDict())); // as a checkpoint stores it
    const optB = twoGroups();
    const b = spec.js(optB) as typeof a;
    b.loadStateDict(state);
    // the optimizer's own rates come back with the optimizer's state
    optA.paramGroups.forEach((g, k) => { optB.paramGroups[k].lr = g.lr; });
    for (let s = split; s < spec.steps; s++) {
      a.step(spec.metrics?.[s]);
      b.step(spec.metrics?.[s]);
      expect(optB.paramGroups.map((g) => g.lr)).toEqual(optA.paramGroups.map((g) => g.lr));
    }
    expect(b.getLastLr()).toEqual(a.getLastLr());
    optA.dispose();
    optB.dispose();
  });

  test('ReduceLROnPlateau: a state saved before its first step survives JSON (a checkpoint in the first epoch)', () => {
    const optA = twoGroups();
    const a = new ReduceLROnPlateau(optA, { patience: 1 });
    const optB = twoGroups();
    const b = new ReduceLROnPlateau(optB, { patience: 1 });
    b.loadStateDict(JSON.parse(JSON.stringify(a.stateDict())));
    for (const m of [1, 0.5, 0.25, 0.125]) {
      a.step(m);
      b.step(m);
    }
    expect(optA.paramGroups.map((g) => g.lr)).toEqual([0.1, 0.02]); // always improving: never reduced
    expect(optB.paramGroups.map((g) => g.lr)).toEqual([0.1, 0.02]);
  });

  test('a scheduler on a disposed optimizer is an Error, at construction and at step()', () => {
    const opt = twoGroups();
    const sched = new StepLR(opt, { stepSize: 1 });
    const plateau = new ReduceLROnPlateau(opt);
    opt.dispose();
    expect(() => sched.step()).toThrow(/StepLR.step\(\): the optimizer was disposed/);
    expect(() => plateau.step(1)).toThrow(/ReduceLROnPlateau.step\(\): the optimizer was disposed/);
    expect(() => new StepLR(opt, { stepSize: 1 })).toThrow(/StepLR: the optimizer was disposed/);
    expect(() => new CosineAnnealingLR(opt, { tMax: 3 })).toThrow(/the optimizer was disposed/);
    expect(() => new LinearLR(opt)).toThrow(/the optimizer was disposed/);
    expect(() => new OneCycleLR(opt, { maxLr: 0.1, totalSteps: 10 })).toThrow(/the optimizer was disposed/);
  });

  test('ReduceLROnPlateau refuses a disposed optimizer at construction, as the other schedulers do', () => {
    const opt = twoGroups();
    opt.dispose();
    expect(() => new ReduceLROnPlateau(opt)).toThrow(/the optimizer was disposed/);
  });
});

// ---------------------------------------------------------------------------------------------

/** Batches of the MLP's data: `count` batches of `size`, from `seed`. */
function mlpBatches(seed: number, count: number, size: number): { x: Float32Array; y: BigInt64Array }[] {
  return Array.from({ length: count }, (_, i) => ({ x: floats(seed * 1000 + i, size * 4), y: labels(seed * 1000 + 500 + i, size, 3) }));
}
const asBatches = (data: { x: Float32Array; y: BigInt64Array }[]) =>
  data.map(({ x, y }) => ({ input: torch.tensor(x, { shape: [y.length, 4] }), target: torch.tensor(y) }));

describe('train.fit', () => {
  test('a NaN loss stops fit with an Error naming the step; nonFinite: \'skip\' skips that step and nothing else', async () => {
    const data = mlpBatches(1, 4, 8);
    data[2].x[5] = NaN;
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
    await expect(torch.train.fit(model, { train: asBatches(data), epochs: 1, optimizer: opt, progress: false }))
      .rejects.toThrow(/loss became NaN at epoch 1, step 3 \(global step 3\)/);
    opt.dispose();
    model.dispose();

    const skipped = await torch.jit.load(mlpFile);
    const optS = new torch.optim.SGD(skipped.parameters(), { lr: 0.1, momentum: 0.9 });
    const seen: number[] = [];
    const h = await torch.train.fit(skipped, {
      train: asBatches(data), epochs: 1, optimizer: optS, progress: false, nonFinite: 'skip',
      callbacks: { onBatchEnd: ({ globalStep }) => { seen.push(globalStep); } },
    });
    expect(seen).toEqual([1, 2, 3, 4]);
    expect(h.epochs[0].skippedSteps).toBe(1);
    expect(h.epochs[0].samples).toBe(24);
    expect(Number.isFinite(h.epochs[0].loss)).toBe(true);

    // the same as training on the three finite batches only
    const clean = await torch.jit.load(mlpFile);
    const optC = new torch.optim.SGD(clean.parameters(), { lr: 0.1, momentum: 0.9 });
    await torch.train.fit(clean, { train: asBatches([data[0], data[1], data[3]]), epochs: 1, optimizer: optC, progress: false });
    expect(await params(skipped)).toEqual(await params(clean));
    for (const o of [optS, optC]) o.dispose();
    skipped.dispose();
    clean.dispose();
  });

  test('fit with OneCycleLR(annealStrategy: \'linear\', totalSteps = epochs * batches) completes', async () => {
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.SGD(model.parameters(), { lr: 0.1 });
    const data = mlpBatches(4, 4, 8);
    const scheduler = new OneCycleLR(opt, { maxLr: 0.1, totalSteps: 2 * data.length, annealStrategy: 'linear' });
    try {
      const h = await torch.train.fit(model, {
        train: { [Symbol.iterator]: () => asBatches(data)[Symbol.iterator]() }, epochs: 2, optimizer: opt, scheduler, progress: false,
      });
      expect(h.epochs).toHaveLength(2);
    } finally {
      opt.dispose();
      model.dispose();
    }
  });

  test('gradAccumulation 2 at batch 4 trains as batch 8 without accumulation (BN-free model)', async () => {
    const data = mlpBatches(2, 4, 8);
    const halves = data.flatMap(({ x, y }) => [{ x: x.slice(0, 16), y: y.slice(0, 4) }, { x: x.slice(16), y: y.slice(4) }]);
    const run = async (batches: ReturnType<typeof asBatches>, gradAccumulation?: number) => {
      const model = await torch.jit.load(mlpFile);
      const opt = new torch.optim.SGD(model.parameters(), { lr: 0.2, momentum: 0.9 });
      const h = await torch.train.fit(model, { train: batches, epochs: 1, optimizer: opt, progress: false, gradAccumulation });
      const p = await params(model);
      opt.dispose();
      model.dispose();
      return { p, h };
    };
    const big = await run(asBatches(data));
    const accum = await run(asBatches(halves), 2);
    const fresh = await torch.jit.load(mlpFile);
    const untouched = await params(fresh);
    fresh.dispose();
    for (const [n, want] of Object.entries(big.p)) {
      expect(relDiff(accum.p[n], want)).toBeLessThan(1e-5);
      expect(relDiff(untouched[n], want)).toBeGreaterThan(1e-3); // it did train
    }
    expect(accum.h.epochs[0].samples).toBe(big.h.epochs[0].samples);
    expect(close(accum.h.epochs[0].loss, big.h.epochs[0].loss, 1e-5)).toBe(true);
  });

  test('stages: at the given epoch, fit unfreezes the pattern and adds it as a param group with its lr', async () => {
    const model = await torch.jit.load(mlpFile);
    model.freeze('0.*');
    const named = new Map(model.namedParameters());
    const opt = new torch.optim.SGD(model.parameters({ trainable: true }), { lr: 0.1 });
    const before = await params(model);
    const atStart: { epoch: number; groups: number; first: number[] }[] = [];
    const data = mlpBatches(3, 3, 8);
    await torch.train.fit(model, {
      train: { [Symbol.iterator]: () => asBatches(data)[Symbol.iterator]() }, // fresh tensors each epoch
      epochs: 3, optimizer: opt, progress: false,
      stages: [{ epoch: 1, unfreeze: '0.*', lr: 0.05, weightDecay: 0.001 }],
      callbacks: { onEpochStart: async ({ epoch }) => { atStart.push({ epoch, groups: opt.paramGroups.length, first: await f32(named.get('0.weight')!) }); } },
    });
    expect(atStart.map((s) => [s.epoch, s.groups])).toEqual([[0, 1], [1, 2], [2, 2]]);
    expect(opt.paramGroups[1].lr).toBe(0.05);
    expect(opt.paramGroups[1].weightDecay).toBe(0.001);
    expect(opt.paramGroups[1].params).toHaveLength(2);
    expect(opt.paramGroups[1].params[0]).toBe(named.get('0.weight'));
    expect(opt.paramGroups[1].params[1]).toBe(named.get('0.bias'));
    expect(named.get('0.weight')!.requiresGrad).toBe(true);
    // frozen through epoch 0, trained from epoch 1 on
    expect(atStart[1].first).toEqual(before['0.weight']);
    expect(relDiff(atStart[2].first, before['0.weight'])).toBeGreaterThan(0);
    opt.dispose();
    model.dispose();
  });
});

describe('train.evaluate and train.predict', () => {
  // Every row is a permutation of [5, 4, 3, 2, 1, 0], so top-1 is the class holding 5, the one
  // class outside the top 5 is the class holding 0, and every row's log-sum-exp is the same.
  const ROWS = [
    { pred: 0, last: 5, label: 0 }, // right
    { pred: 1, last: 0, label: 1 }, // right
    { pred: 2, last: 3, label: 4 }, // in top-5
    { pred: 3, last: 1, label: 1 }, // outside top-5
    { pred: 4, last: 2, label: 4 }, // right
    { pred: 5, last: 4, label: 0 }, // in top-5
    { pred: 1, last: 2, label: 2 }, // outside top-5
    { pred: 0, last: 1, label: 3 }, // in top-5
  ];
  const K = 6;
  const logitRow = ({ pred, last }: { pred: number; last: number }) => {
    const others = [...Array(K).keys()].filter((c) => c !== pred && c !== last);
    const row = new Array<number>(K);
    row[pred] = 5;
    row[last] = 0;
    others.forEach((c, j) => { row[c] = 4 - j; });
    return row;
  };
  const LOGIT_ROWS = ROWS.map(logitRow);

  test('evaluate gives loss, accuracy, top-5 and a confusion matrix equal to the hand-computed ones', async () => {
    const model = await torch.jit.load(idFile);
    const batchesOf = [ROWS.slice(0, 4), ROWS.slice(4)].map((rs, b) => ({
      input: torch.tensor(Float32Array.from(LOGIT_ROWS.slice(b * 4, b * 4 + 4).flat()), { shape: [4, K] }),
      target: torch.tensor(BigInt64Array.from(rs, (r) => BigInt(r.label))),
    }));
    const r = await torch.train.evaluate(model, batchesOf);
    const lse = Math.log([0, 1, 2, 3, 4, 5].reduce((a, v) => a + Math.exp(v), 0));
    const wantLoss = ROWS.reduce((a, row, i) => a + lse - LOGIT_ROWS[i][row.label], 0) / ROWS.length;
    expect(r.samples).toBe(8);
    expect(r.k).toBe(5);
    expect(r.accuracy).toBe(3 / 8);
    expect(r.top5).toBe(6 / 8);
    expect(r.topk).toBe(6 / 8);
    expect(close(r.loss, wantLoss, 1e-6)).toBe(true);
    const confusion = Array.from({ length: K }, () => new Array<number>(K).fill(0));
    for (const row of ROWS) confusion[row.label][row.pred] += 1;
    expect(r.confusion).toEqual(confusion);
    // class 0: predicted 0 twice (rows 0, 7: one right), true 0 twice (rows 0, 5: one found)
    expect(r.perClass[0]).toEqual({ precision: 1 / 2, recall: 1 / 2, support: 2 });
    expect(r.perClass[5].support).toBe(0);
    expect(r.perClass[5].recall).toBeNaN();
    // top-3 on request
    const r3 = await torch.train.evaluate(model, [{ input: torch.tensor(Float32Array.from(LOGIT_ROWS.flat()), { shape: [8, K] }), target: torch.tensor(BigInt64Array.from(ROWS, (x) => BigInt(x.label))) }], { topk: 3 });
    const top3 = ROWS.filter((row, i) => [5, 4, 3].includes(LOGIT_ROWS[i][row.label])).length;
    expect(r3.k).toBe(3);
    expect(r3.topk).toBe(top3 / 8);
    model.dispose();
  });

  test('predict gives softmax rows that sum to 1, in eval mode, and restores train mode', async () => {
    const model = await torch.jit.load(idFile);
    model.train();
    const x = torch.tensor(Float32Array.from(LOGIT_ROWS.flat()), { shape: [8, K] });
    const probs = await torch.train.predict(model, x);
    expect(probs.shape).toEqual([8, K]);
    expect(probs.requiresGrad).toBe(false);
    const p = await f32(probs);
    for (let i = 0; i < 8; i++) {
      const row = p.slice(i * K, (i + 1) * K);
      expect(Math.abs(row.reduce((a, v) => a + v, 0) - 1)).toBeLessThan(1e-6);
      const z = LOGIT_ROWS[i].reduce((a, v) => a + Math.exp(v), 0);
      row.forEach((v, c) => expect(close(v, Math.exp(LOGIT_ROWS[i][c]) / z, 1e-6)).toBe(true));
    }
    expect(model.training).toBe(true);
    x.dispose();
    probs.dispose();
    model.dispose();
  });
});

describe('memory', () => {
  test('2,000 fit steps of a small model grow RSS by less than 50 MB and leave no tensor behind', async () => {
    const gc = getGc();
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.AdamW(model.parameters(), { lr: 1e-3 });
    const x = floats(7, 16 * 4);
    const y = labels(8, 16, 3);
    const source = (n: number) => ({
      *[Symbol.iterator]() { for (let i = 0; i < n; i++) yield { input: torch.tensor(x, { shape: [16, 4] }), target: torch.tensor(y) }; },
    });
    const lossFn = new torch.nn.CrossEntropyLoss({ labelSmoothing: 0.1 });
    await torch.train.fit(model, { train: source(300), epochs: 1, optimizer: opt, loss: lossFn, progress: false }); // warm-up
    gc();
    const tensors = torch.memory().tensors;
    const rss = process.memoryUsage().rss;
    const h = await torch.train.fit(model, { train: source(2000), epochs: 1, optimizer: opt, loss: lossFn, progress: false });
    gc();
    const grown = process.memoryUsage().rss - rss;
    expect(h.epochs[0].samples).toBe(2000 * 16);
    // <=: tensors that earlier tests left to the finalizer may be collected meanwhile
    expect(torch.memory().tensors).toBeLessThanOrEqual(tensors);
    expect(grown).toBeLessThan(50 * 1024 * 1024);
    opt.dispose();
    model.dispose();
  });
});

describe('gradient accumulation', () => {
  test('an epoch ending inside an accumulation window applies the tail through the same step (clipping included) as a manual loop', async () => {
    const CLIP = 0.05; // small enough that every update is clipped
    const xs = Array.from({ length: 10 }, (_, i) => floats(300 + i, 8 * 4));
    const ys = Array.from({ length: 10 }, (_, i) => labels(400 + i, 8, 3));
    const source = () => ({ *[Symbol.iterator]() { for (let i = 0; i < 10; i++) yield { input: torch.tensor(xs[i], { shape: [8, 4] }), target: torch.tensor(ys[i]) }; } });

    const a = await torch.jit.load(mlpFile);
    const optA = new torch.optim.SGD(a.parameters(), { lr: 0.5 });
    await torch.train.fit(a, { train: source(), epochs: 1, optimizer: optA, gradAccumulation: 3, clipGradNorm: CLIP, progress: false });

    const b = await torch.jit.load(mlpFile);
    const optB = new torch.optim.SGD(b.parameters(), { lr: 0.5 });
    for (let i = 0; i < 10; i++) {
      const logits: Tensor = await b.forward(torch.tensor(xs[i], { shape: [8, 4] }));
      const loss = await torch.nn.functional.crossEntropy(logits, torch.tensor(ys[i]));
      const scaled = await loss.mul(1 / 3);
      await scaled.backward();
      if ((i + 1) % 3 === 0 || i === 9) { // windows of 3, 3, 3, then the tail of 1
        await torch.nn.utils.clipGradNorm(b.parameters(), CLIP);
        await optB.step();
        await optB.zeroGrad();
      }
      for (const t of [logits, loss, scaled]) t.dispose();
    }
    expect(await params(a)).toEqual(await params(b));
    for (const o of [optA, optB]) o.dispose();
    a.dispose(); b.dispose();
  });
});

describe('optimizer state that does not fit', () => {
  test('a saved state with another parameter count is refused and leaves the optimizer\'s own state untouched', async () => {
    const big = await torch.jit.load(mlpFile);
    const optBig = new torch.optim.AdamW(big.parameters(), { lr: 0.01 });
    const step = async (m: typeof big, o: typeof optBig) => {
      const logits: Tensor = await m.forward(sgdX());
      const loss = await torch.nn.functional.crossEntropy(logits, sgdY());
      await loss.backward();
      await o.step();
      await o.zeroGrad();
      logits.dispose(); loss.dispose();
    };
    await step(big, optBig);
    const foreign = await optBig.stateDict();
    // two twins with the same history over the first two parameters only
    const [a, b] = [await torch.jit.load(mlpFile), await torch.jit.load(mlpFile)];
    const [optA, optB] = [a, b].map((m) => new torch.optim.AdamW(m.parameters().slice(0, 2), { lr: 0.01 }));
    await step(a, optA);
    await step(b, optB);
    await expect(optA.loadStateDict(foreign)).rejects.toThrow(/group 0 of the saved state has 4 parameters, the optimizer's 2/);
    await step(a, optA);
    await step(b, optB);
    expect(await params(a)).toEqual(await params(b));
    for (const o of [optBig, optA, optB]) o.dispose();
    for (const m of [big, a, b]) m.dispose();
  });
});
