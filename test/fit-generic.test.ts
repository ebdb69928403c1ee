/**
 * fit, evaluate and predict beyond one-tensor-in, logits-out cross-entropy: multi-label
 * (BCEWithLogitsLoss), regression (MSELoss), a user's loss function, a BERT-like model whose
 * forward takes (input_ids, attention_mask) and returns a dict or a tuple. Each training run is
 * compared step by step with the same loop in PyTorch (/usr/bin/python3 or $FINETORCH_PYTHON),
 * starting from the same saved .pt file, on the same data.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import type { Tensor } from '../lib';
import { native } from '../lib/native';
import { floats, getGc, labels, relDiff, runPyJson, tmpDir } from './helpers/train-fixtures';

const F = torch.nn.functional;
const NB = 3; // batches per epoch
const BS = 8;

// Multi-label: 6 features, 4 labels. Regression: 5 features, 1 output. Text: 5 tokens of 20, 3 classes.
const ML_X = Array.from(floats(41, NB * BS * 6));
const ML_Y = Array.from(floats(42, NB * BS * 4), (v) => (v > 0.2 ? 1 : 0));
const POS_WEIGHT = [1, 2, 0.5, 3];
const REG_X = Array.from(floats(43, NB * BS * 5));
const REG_Y = Array.from(floats(44, NB * BS), (v) => v * 2);
const T = 5;
const IDS = Array.from(labels(45, NB * BS * T, 20), Number);
const LENS = Array.from(labels(46, NB * BS, T), (v) => Number(v) + 1);
const MASK = Array.from({ length: NB * BS * T }, (_, i) => (i % T < LENS[Math.floor(i / T)] ? 1 : 0));
const TXT_Y = Array.from(labels(47, NB * BS, 3), Number);

const PY = String.raw`
import json, os, sys
from typing import Dict, Tuple
import torch
d = sys.argv[1]
spec = json.load(open(os.path.join(d, 'spec.json')))
torch.set_num_threads(1)
# Debian 13's libtorch 2.6 is built with LLVM: TorchScript's CPU fuser would compile training graphs
# for minutes. finetorch turns it off at load (torch.backends.jit.cpuFusion); the reference does too.
torch._C._jit_override_can_fuse_on_cpu(False)

torch.manual_seed(5)
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))).save(os.path.join(d, 'ml.pt'))
torch.manual_seed(8)
torch.jit.trace(torch.nn.Sequential(torch.nn.Linear(6, 4)), torch.randn(2, 6)).save(os.path.join(d, 'traced.pt'))
torch.manual_seed(6)
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))).save(os.path.join(d, 'reg.pt'))

class TinyBert(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.classifier = torch.nn.Linear(8, 3)
    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(input_ids)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

class DictBert(TinyBert):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        pooled = self.pool(input_ids, attention_mask)
        return {'pooled': pooled, 'logits': self.classifier(pooled)}

class TupleBert(TinyBert):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(input_ids, attention_mask)
        return pooled, self.classifier(pooled)

torch.manual_seed(7)
torch.jit.script(DictBert()).save(os.path.join(d, 'dict_bert.pt'))
torch.manual_seed(7)
torch.jit.script(TupleBert()).save(os.path.join(d, 'tuple_bert.pt'))

NB, BS, T = ${NB}, ${BS}, ${T}
def rows(flat, width, dtype):
    t = torch.tensor(flat, dtype=dtype)
    return [t.reshape(NB * BS, width)[i * BS:(i + 1) * BS] if width else t[i * BS:(i + 1) * BS] for i in range(NB)]

ml_x, ml_y = rows(spec['mlX'], 6, torch.float32), rows(spec['mlY'], 4, torch.float32)
reg_x, reg_y = rows(spec['regX'], 5, torch.float32), rows(spec['regY'], 1, torch.float32)
ids, mask, txt_y = rows(spec['ids'], T, torch.int64), rows(spec['mask'], T, torch.int64), rows(spec['txtY'], 0, torch.int64)

def train(file, batches, loss_fn, make_opt, epochs=2, accum=1, clip=0.0, call=lambda m, x: m(x), pick=lambda o: o, amp=False):
    m = torch.jit.load(os.path.join(d, file))
    m.train()
    params = [p for p in m.parameters()]
    opt = make_opt(params)
    losses = []
    for e in range(epochs):
        pending = 0
        for x, y in batches:
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
                o = pick(call(m, x))
            loss = loss_fn(o.float(), y)
            losses.append(loss.item())
            (loss * (1.0 / accum) if accum != 1 else loss).backward()
            pending += 1
            if pending == accum:
                if clip: torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step(); opt.zero_grad(); pending = 0
        if pending:
            if clip: torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step(); opt.zero_grad()
    return m, losses

out = {}
bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(spec['posWeight']))
ml_batches = list(zip(ml_x, ml_y))
m, out['mlAdamW'] = train('ml.pt', ml_batches, bce, lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01))
m, out['mlBf16'] = train('ml.pt', ml_batches, bce, lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01), amp=True)
m, out['mlSgdAccum'] = train('ml.pt', ml_batches, bce, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), accum=2, clip=0.5)

# Multi-label metrics of the untrained model on all the data, as scikit-learn computes them.
m = torch.jit.load(os.path.join(d, 'ml.pt')).eval()
with torch.no_grad():
    logits = m(torch.cat(ml_x))
y = torch.cat(ml_y)
def ap(s, t):
    order = torch.argsort(s, descending=True)
    s, t = s[order].tolist(), t[order].tolist()
    P = sum(t); tp = fp = 0; res = 0.0; last = 0.0
    for j in range(len(s)):
        if t[j]: tp += 1
        else: fp += 1
        if j + 1 < len(s) and s[j + 1] == s[j]: continue
        r = tp / P; res += (r - last) * tp / (tp + fp); last = r
    return res
pred = torch.sigmoid(logits) > 0.5
f1 = []
for l in range(4):
    tp = int((pred[:, l] & (y[:, l] == 1)).sum()); fp = int((pred[:, l] & (y[:, l] == 0)).sum()); fn = int((~pred[:, l] & (y[:, l] == 1)).sum())
    f1.append(2 * tp / (2 * tp + fp + fn))
out['mlMetrics'] = {'f1': f1, 'ap': [ap(logits[:, l], y[:, l]) for l in range(4)],
                    'loss': float(sum(bce(m(x), t).item() * x.shape[0] for x, t in ml_batches) / (NB * BS))}

mse = torch.nn.MSELoss()
reg_batches = list(zip(reg_x, reg_y))
m, out['regMse'] = train('reg.pt', reg_batches, mse, lambda p: torch.optim.SGD(p, lr=0.05))
m.eval()
with torch.no_grad():
    p = m(torch.cat(reg_x)); t = torch.cat(reg_y)
    out['regEval'] = {'mse': float(((p - t) ** 2).mean()), 'mae': float((p - t).abs().mean())}
m, out['regUser'] = train('reg.pt', reg_batches, lambda o, t: torch.nn.functional.smooth_l1_loss(o, t, beta=0.5) * 2 + (o - t).abs().mean(),
                          lambda p: torch.optim.AdamW(p, lr=0.02))

ce = torch.nn.CrossEntropyLoss()
txt_batches = [((i, k), y) for i, k, y in zip(ids, mask, txt_y)]
m, out['dictBert'] = train('dict_bert.pt', txt_batches, ce, lambda p: torch.optim.AdamW(p, lr=0.05),
                           call=lambda m, x: m(input_ids=x[0], attention_mask=x[1]), pick=lambda o: o['logits'])
m.eval()
with torch.no_grad():
    logits = m(torch.cat(ids), torch.cat(mask))['logits']
out['dictBertEval'] = {'accuracy': float((logits.argmax(1) == torch.cat(txt_y)).float().mean()),
                       'probs': torch.softmax(logits[:BS], -1).reshape(-1).tolist()}
m, out['tupleBert'] = train('tuple_bert.pt', txt_batches, ce, lambda p: torch.optim.SGD(p, lr=0.5),
                            call=lambda m, x: m(x[0], x[1]), pick=lambda o: o[1])
print(json.dumps(out))
`;

interface Ref {
  mlAdamW: number[]; mlBf16: number[]; mlSgdAccum: number[]; regMse: number[]; regUser: number[]; dictBert: number[]; tupleBert: number[];
  mlMetrics: { f1: number[]; ap: number[]; loss: number };
  regEval: { mse: number; mae: number };
  dictBertEval: { accuracy: number; probs: number[] };
}

let dir: string;
let ref: Ref;

beforeAll(async () => {
  dir = tmpDir('fit-generic');
  fs.writeFileSync(path.join(dir, 'spec.json'), JSON.stringify({
    mlX: ML_X, mlY: ML_Y, posWeight: POS_WEIGHT, regX: REG_X, regY: REG_Y, ids: IDS, mask: MASK, txtY: TXT_Y,
  }));
  ref = await runPyJson<Ref>(PY, [dir]);
});

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Batch `i` of a flat array of rows of `width` values (width 0: one value per sample). */
function rows(flat: number[], width: number, i: number, dtype: 'float32' | 'int64' = 'float32'): Tensor {
  const w = Math.max(width, 1);
  const shape = width ? [BS, width] : [BS];
  return torch.tensor(flat.slice(i * BS * w, (i + 1) * BS * w), { shape, dtype });
}
const range = Array.from({ length: NB }, (_, i) => i);
const mlBatches = () => range.map((i) => ({ input: rows(ML_X, 6, i), target: rows(ML_Y, 4, i) }));
const regBatches = () => range.map((i) => ({ input: rows(REG_X, 5, i), target: rows(REG_Y, 1, i) }));
const textBatches = () => range.map((i) => ({
  // Named out of forward's order on purpose: fit passes them by forward's argument names.
  input: { attention_mask: rows(MASK, T, i, 'int64'), input_ids: rows(IDS, T, i, 'int64') },
  target: rows(TXT_Y, 0, i, 'int64'),
}));

async function fitLosses(file: string, opts: Omit<torch.train.FitOptions, 'optimizer' | 'epochs'> & { opt: (p: Tensor[]) => torch.optim.Optimizer }) {
  const model = await torch.jit.load(path.join(dir, file));
  const losses: number[] = [];
  const { opt, ...rest } = opts;
  const history = await torch.train.fit(model, {
    epochs: 2, optimizer: opt(model.parameters()), progress: false, keepBatches: true, ...rest,
    callbacks: { onBatchEnd: ({ loss }) => { losses.push(loss); } },
  });
  return { model, losses, history };
}

const expectLosses = (got: number[], want: number[], tol = 1e-5) => {
  expect(got).toHaveLength(want.length);
  expect(relDiff(got, want)).toBeLessThan(tol);
};

describe('fit trains multi-label models with BCEWithLogitsLoss as PyTorch does', () => {
  test('AdamW, posWeight: the losses of 6 steps match a PyTorch loop from the same .pt', async () => {
    const { losses, history } = await fitLosses('ml.pt', {
      train: mlBatches(), loss: new torch.nn.BCEWithLogitsLoss({ posWeight: torch.tensor(POS_WEIGHT, { shape: [4] }) }),
      opt: (p) => new torch.optim.AdamW(p, { lr: 0.01, weightDecay: 0.01 }),
    });
    expectLosses(losses, ref.mlAdamW);
    // Accuracy means nothing for multi-label targets: NaN, and the loss is recorded.
    expect(history.epochs[1].accuracy).toBeNaN();
    expect(history.epochs[1].loss).toBeCloseTo(ref.mlAdamW.slice(3).reduce((a, x) => a + x, 0) / 3, 5);
  });

  test('SGD momentum, gradAccumulation 2 over 3 batches (a tail each epoch), clipGradNorm 0.5: matches PyTorch', async () => {
    const { losses } = await fitLosses('ml.pt', {
      train: mlBatches(), loss: new torch.nn.BCEWithLogitsLoss({ posWeight: torch.tensor(POS_WEIGHT, { shape: [4] }) }),
      opt: (p) => new torch.optim.SGD(p, { lr: 0.1, momentum: 0.9 }), gradAccumulation: 2, clipGradNorm: 0.5,
    });
    expectLosses(losses, ref.mlSgdAccum);
  });

  test("amp: 'bf16' on CPU: forward under autocast, the loss in float32; the losses match PyTorch's bf16 autocast loop", async () => {
    const { losses } = await fitLosses('ml.pt', {
      train: mlBatches(), loss: new torch.nn.BCEWithLogitsLoss({ posWeight: torch.tensor(POS_WEIGHT, { shape: [4] }) }),
      opt: (p) => new torch.optim.AdamW(p, { lr: 0.01, weightDecay: 0.01 }), amp: 'bf16',
    });
    expectLosses(losses, ref.mlBf16, 1e-3);
    // bf16 really was used: the float32 run's losses differ.
    expect(relDiff(losses, ref.mlAdamW)).toBeGreaterThan(1e-6);
  });

  test('evaluate reports per-label F1 at 0.5 and mean average precision, as computed in PyTorch', async () => {
    const model = await torch.jit.load(path.join(dir, 'ml.pt'));
    const v = await torch.train.evaluate(model, mlBatches(), {
      loss: new torch.nn.BCEWithLogitsLoss({ posWeight: torch.tensor(POS_WEIGHT, { shape: [4] }) }),
    });
    expect(v.task).toBe('multilabel');
    expect(v.accuracy).toBeNaN();
    expect(v.samples).toBe(NB * BS);
    expect(v.loss).toBeCloseTo(ref.mlMetrics.loss, 5);
    const ml = v.multilabel!;
    expect(ml.perLabel.map((l) => l.f1)).toEqual(ref.mlMetrics.f1.map((x) => expect.closeTo(x, 10)));
    expect(ml.perLabel.map((l) => l.averagePrecision)).toEqual(ref.mlMetrics.ap.map((x) => expect.closeTo(x, 10)));
    expect(ml.meanAP).toBeCloseTo(ref.mlMetrics.ap.reduce((a, x) => a + x, 0) / 4, 10);
    expect(ml.perLabel.reduce((a, l) => a + l.support, 0)).toBe(ML_Y.filter((y) => y === 1).length);
  });
});

describe('fit keeps the fused native step where it applies', () => {
  test.each(['ml.pt', 'traced.pt'])('one tensor in, a Tensor out, CrossEntropyLoss on int64 labels: %s trains through native.trainStep', async (file) => {
    const spy = jest.spyOn(native, 'trainStep');
    try {
      const train = range.map((i) => ({ input: rows(ML_X, 6, i), target: torch.tensor(TXT_Y.slice(i * BS, (i + 1) * BS), { dtype: 'int64' }) }));
      const { history } = await fitLosses(file, { train, opt: (p) => new torch.optim.SGD(p, { lr: 0.1 }) });
      expect(spy).toHaveBeenCalledTimes(2 * NB);
      expect(history.epochs[1].accuracy).toBeGreaterThanOrEqual(0);
    } finally {
      spy.mockRestore();
    }
  });

  // The fused step computes every built-in loss itself; the same loss as a user function (which
  // must take the generic step) gives the reference. Exact to float rounding: one libtorch kernel.
  const asFunction = (l: torch.train.FitLoss): torch.nn.LossFunction => (out, y) => (l as torch.nn.MSELoss).forward(out, y);
  const posWeight = () => torch.tensor(POS_WEIGHT, { shape: [4] });
  test.each([
    ['BCEWithLogitsLoss (posWeight, weight, sum)', 'ml.pt', mlBatches, () => new torch.nn.BCEWithLogitsLoss({ posWeight: posWeight(), weight: torch.tensor([0.5, 1, 2, 1], { shape: [4] }), reduction: 'sum' })],
    ['MSELoss', 'reg.pt', regBatches, () => new torch.nn.MSELoss()],
    ['SmoothL1Loss beta 0.3', 'reg.pt', regBatches, () => new torch.nn.SmoothL1Loss({ beta: 0.3 })],
    ['HuberLoss delta 0.4', 'reg.pt', regBatches, () => new torch.nn.HuberLoss({ delta: 0.4 })],
  ] as const)('%s trains through native.trainStep, as the same loss through the generic step', async (_, file, data, make) => {
    const spy = jest.spyOn(native, 'trainStep');
    const opt = (p: Tensor[]) => new torch.optim.AdamW(p, { lr: 0.02 });
    try {
      const fused = await fitLosses(file, { train: data(), loss: make(), opt, gradAccumulation: 2, clipGradNorm: 0.5 });
      expect(spy).toHaveBeenCalledTimes(2 * NB);
      spy.mockClear();
      const generic = await fitLosses(file, { train: data(), loss: asFunction(make()), opt, gradAccumulation: 2, clipGradNorm: 0.5 });
      expect(spy).not.toHaveBeenCalled();
      expectLosses(fused.losses, generic.losses, 1e-6);
      expect(fused.history.epochs[1].accuracy).toBeNaN();
      const [a, b] = [fused.model.parameters(), generic.model.parameters()];
      for (let i = 0; i < a.length; i++) expect(relDiff(Array.from(await a[i].data() as Float32Array), Array.from(await b[i].data() as Float32Array))).toBeLessThan(1e-5);
    } finally {
      spy.mockRestore();
    }
  });

  test('the fused step refuses what the loss classes refuse, with their words and codes', async () => {
    const reg = await torch.jit.load(path.join(dir, 'reg.pt'));
    const opt = new torch.optim.SGD(reg.parameters(), { lr: 0.01 });
    const run = (loss: torch.train.FitLoss, target: Tensor) => torch.train.fit(reg, { train: [{ input: rows(REG_X, 5, 0), target }], epochs: 1, optimizer: opt, progress: false, loss });
    await expect(run(new torch.nn.HuberLoss(), torch.tensor(REG_Y.slice(0, BS), { shape: [BS, 1], dtype: 'int64' })))
      .rejects.toMatchObject({ code: 'FINETORCH_DTYPE', message: expect.stringMatching(/HuberLoss: targets must be floating point like the output \(float32\), got int64/) });
    await expect(run(new torch.nn.SmoothL1Loss(), torch.tensor(REG_Y.slice(0, BS), { shape: [BS, 1], dtype: 'float64' })))
      .rejects.toMatchObject({ code: 'FINETORCH_DTYPE', message: expect.stringMatching(/SmoothL1Loss: output \(float32\) and target \(float64\) must have one dtype/) });
    const ml = await torch.jit.load(path.join(dir, 'ml.pt'));
    const bad = new torch.nn.BCEWithLogitsLoss({ posWeight: torch.tensor([1, 2, 3], { shape: [3] }) });
    await expect(torch.train.fit(ml, { train: mlBatches().slice(0, 1), epochs: 1, optimizer: new torch.optim.SGD(ml.parameters(), { lr: 0.1 }), progress: false, loss: bad }))
      .rejects.toMatchObject({ code: 'FINETORCH_SHAPE', message: expect.stringMatching(/fit: epoch 1, batch 1: BCEWithLogitsLoss: posWeight of shape \[3\] does not broadcast to the output's shape \[8,4\]/) });
  });

  test('a dict output takes the generic step', async () => {
    const spy = jest.spyOn(native, 'trainStep');
    try {
      await fitLosses('dict_bert.pt', { train: textBatches(), opt: (p) => new torch.optim.SGD(p, { lr: 0.1 }) });
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });
});

describe('fit trains regression heads', () => {
  test('MSELoss with SGD: losses match PyTorch, and evaluate gives its MSE and MAE', async () => {
    const { model, losses, history } = await fitLosses('reg.pt', {
      train: regBatches(), val: regBatches(), loss: new torch.nn.MSELoss(), opt: (p) => new torch.optim.SGD(p, { lr: 0.05 }),
    });
    expectLosses(losses, ref.regMse);
    const v = history.lastValidation!;
    expect(v.task).toBe('regression');
    expect(v.regression!.mse).toBeCloseTo(ref.regEval.mse, 5);
    expect(v.regression!.mae).toBeCloseTo(ref.regEval.mae, 5);
    // MSELoss's mean over batches of equal size is the MSE.
    expect(v.loss).toBeCloseTo(ref.regEval.mse, 5);
    expect(history.epochs[1].valAccuracy).toBeNaN();
    const raw = await torch.train.predict(model, rows(REG_X, 5, 0), { activation: 'none' });
    expect(raw.shape).toEqual([BS, 1]);
  });

  test('a user loss function (2 x smoothL1(beta 0.5) + L1, from tensor ops) trains as the same function in PyTorch', async () => {
    const loss = async (out: Tensor, y: Tensor) => {
      const a = await F.smoothL1Loss(out, y, { beta: 0.5 });
      const a2 = await a.mul(2);
      const diff = await out.sub(y);
      const abs = await diff.abs();
      const l1 = await abs.mean();
      const total = await a2.add(l1);
      for (const t of [a, a2, diff, abs, l1]) t.dispose();
      return total;
    };
    const { losses } = await fitLosses('reg.pt', { train: regBatches(), loss, opt: (p) => new torch.optim.AdamW(p, { lr: 0.02 }) });
    expectLosses(losses, ref.regUser);
  });
});

describe('fit, evaluate and predict take named inputs and dict or tuple outputs', () => {
  test('a scripted forward(input_ids, attention_mask) -> Dict gets an object of named tensors; the "logits" key is trained as in PyTorch', async () => {
    const { model, losses, history } = await fitLosses('dict_bert.pt', {
      train: textBatches(), val: textBatches(), opt: (p) => new torch.optim.AdamW(p, { lr: 0.05 }),
    });
    expectLosses(losses, ref.dictBert);
    expect(history.epochs[1].accuracy).toBeGreaterThanOrEqual(0);
    expect(history.lastValidation!.task).toBe('classification');
    expect(history.lastValidation!.accuracy).toBeCloseTo(ref.dictBertEval.accuracy, 6);
    const b = textBatches()[0];
    const probs = await torch.train.predict(model, b.input);
    expect(probs.shape).toEqual([BS, 3]);
    expect(relDiff(Array.from(await probs.data() as Float32Array), ref.dictBertEval.probs)).toBeLessThan(1e-5);
  });

  test('a DataLoader of variable-length token samples, padded with padValue 0, trains the dict model as PyTorch did on the fixed-length batches', async () => {
    const samples = LENS.map((len, i) => ({
      input: {
        input_ids: { data: BigInt64Array.from(IDS.slice(i * T, i * T + len), BigInt), shape: [len] },
        attention_mask: { data: new BigInt64Array(len).fill(1n), shape: [len] },
      },
      target: TXT_Y[i],
    }));
    const ds = { length: samples.length, get: async (i: number) => samples[i] };
    const train = new torch.data.DataLoader<(typeof samples)[number], { input_ids: Tensor; attention_mask: Tensor }>(ds, { batchSize: BS, padValue: 0 });
    const { losses } = await fitLosses('dict_bert.pt', { train, keepBatches: false, opt: (p) => new torch.optim.AdamW(p, { lr: 0.05 }) });
    expectLosses(losses, ref.dictBert);
  });

  test('the generic step and evaluate leave no tensor handles behind (padded DataLoader, dict outputs, amp, validation)', async () => {
    const samples = LENS.map((len, i) => ({
      input: { input_ids: { data: BigInt64Array.from(IDS.slice(i * T, i * T + len), BigInt), shape: [len] }, attention_mask: { data: new BigInt64Array(len).fill(1n), shape: [len] } },
      target: TXT_Y[i],
    }));
    const ds = { length: samples.length, get: async (i: number) => samples[i] };
    const loader = () => new torch.data.DataLoader<(typeof samples)[number], { input_ids: Tensor; attention_mask: Tensor }>(ds, { batchSize: BS, padValue: 0 });
    const model = await torch.jit.load(path.join(dir, 'dict_bert.pt'));
    const optimizer = new torch.optim.AdamW(model.parameters(), { lr: 0.01 });
    const run = (epochs: number) => torch.train.fit(model, { train: loader(), val: loader(), epochs, optimizer, progress: false, amp: 'bf16', gradAccumulation: 2 });
    await run(1);
    // Handles that earlier tests left to the finalizer are collected first, so the count after the
    // runs (no collection asked for) shows what the loop itself left undisposed.
    getGc()();
    await new Promise((r) => setImmediate(r));
    const before = torch.memory().tensors;
    await run(3);
    await torch.train.evaluate(model, loader());
    expect(torch.memory().tensors).toBe(before);
  });

  test('a tuple output with output: 1 and positional [input_ids, attention_mask] inputs trains as in PyTorch', async () => {
    const train = textBatches().map((b) => ({ input: [b.input.input_ids, b.input.attention_mask], target: b.target }));
    const { losses, history } = await fitLosses('tuple_bert.pt', { train, val: train, output: 1, opt: (p) => new torch.optim.SGD(p, { lr: 0.5 }) });
    expectLosses(losses, ref.tupleBert);
    // Validation reads the same output: [B, 3] logits, not the [B, 8] pooled features.
    expect(history.lastValidation!.confusion).toHaveLength(3);
  });

  test('mistakes in inputs, outputs and losses are Errors that say what to change', async () => {
    const model = await torch.jit.load(path.join(dir, 'dict_bert.pt'));
    const opt = new torch.optim.SGD(model.parameters(), { lr: 0.1 });
    const b = textBatches()[0];
    const run = (o: Partial<torch.train.FitOptions>) => torch.train.fit(model, { train: [b], epochs: 1, optimizer: opt, progress: false, keepBatches: true, ...o });
    await expect(run({ train: [{ input: { ids: b.input.input_ids, attention_mask: b.input.attention_mask }, target: b.target }] }))
      .rejects.toThrow(/the model's forward has no argument 'ids'; its arguments are \(input_ids: Tensor, attention_mask: Tensor\)/);
    await expect(run({ train: [{ input: { attention_mask: b.input.attention_mask }, target: b.target }] }))
      .rejects.toThrow(/the input object has no 'input_ids', which forward takes before 'attention_mask'/);
    await expect(run({ output: 'scores' })).rejects.toThrow(/the model returned a dict with keys '.*' and none is 'scores'/);
    await expect(run({ output: 2 })).rejects.toThrow(/output: 2 is an index, but the model returned a dict/);
    await expect(run({ loss: new torch.nn.CrossEntropyLoss({ reduction: 'none' }) })).rejects.toThrow(/the loss must be a single value to train on, got shape \[8\]/);
    await expect(run({ loss: (async () => 3) as unknown as torch.nn.LossFunction })).rejects.toThrow(/the loss function must resolve to a Tensor, got number/);
    await expect(run({ loss: 'mse' as unknown as torch.nn.LossFunction })).rejects.toThrow(/fit: loss must be a torch.nn loss/);
    const reg = await torch.jit.load(path.join(dir, 'reg.pt'));
    // A [B, 1] head against [B] targets: fit's Error names the batch and keeps the loss's code.
    const flat = regBatches().map((x) => ({ input: x.input, target: torch.tensor(REG_Y.slice(0, BS)) }));
    const bad = torch.train.fit(reg, { train: flat, epochs: 1, optimizer: new torch.optim.SGD(reg.parameters(), { lr: 0.01 }), progress: false, loss: new torch.nn.MSELoss() });
    await expect(bad).rejects.toThrow(/fit: epoch 1, batch 1: MSELoss: output of shape \[8,1\] and target of shape \[8\] must have one shape/);
    await expect(bad).rejects.toMatchObject({ code: 'FINETORCH_SHAPE' });
    await expect(torch.train.fit(reg, {
      train: regBatches(), val: regBatches(), epochs: 2, optimizer: new torch.optim.SGD(reg.parameters(), { lr: 0.01 }), progress: false,
      loss: new torch.nn.MSELoss(), earlyStopping: { monitor: 'valAccuracy', patience: 1 },
    })).rejects.toThrow(/earlyStopping monitors 'valAccuracy', which is NaN here because the targets are not class indices; monitor 'valLoss'/);
    await expect(run({ train: [{ input: [b.input.input_ids, 3] as unknown as Tensor[], target: b.target }] }))
      .rejects.toThrow(/batch 0: input must be a Tensor, an array of Tensors or an object of named Tensors/);
  });
});
