/**
 * BCEWithLogitsLoss, MSELoss, SmoothL1Loss and HuberLoss (classes and functional forms): values
 * and gradients against PyTorch (/usr/bin/python3 or $FINETORCH_PYTHON) on the same inputs, for
 * every reduction and option; and the Errors for mismatched shapes and dtypes.
 */
import * as torch from '../lib';
import type { Tensor } from '../lib';
import { floats, relDiff, runPyJson } from './helpers/train-fixtures';

const B = 6;
const L = 4;
const OUT = Array.from(floats(31, B * L), (v) => v * 3);
const REG_TARGET = Array.from(floats(32, B * L), (v) => v * 2.5);
/** Multi-label targets: 0/1, and probabilities for one variant. */
const LABELS = Array.from(floats(33, B * L), (v) => (v > 0 ? 1 : 0));
const PROBS = Array.from(floats(34, B * L), (v) => (v + 1) / 2);
const WEIGHT = [0.5, 1, 2, 1.5];
const POS_WEIGHT = [1, 3, 0.5, 2];

interface Variant {
  name: string;
  kind: 'bce' | 'mse' | 'smoothl1' | 'huber';
  reduction?: 'mean' | 'sum' | 'none';
  weight?: boolean;
  posWeight?: boolean;
  probs?: boolean;
  beta?: number;
  delta?: number;
}

const VARIANTS: Variant[] = [
  { name: 'BCEWithLogitsLoss()', kind: 'bce' },
  { name: 'BCEWithLogitsLoss({ reduction: sum })', kind: 'bce', reduction: 'sum' },
  { name: 'BCEWithLogitsLoss({ reduction: none })', kind: 'bce', reduction: 'none' },
  { name: 'BCEWithLogitsLoss({ posWeight })', kind: 'bce', posWeight: true },
  { name: 'BCEWithLogitsLoss({ weight, posWeight, sum })', kind: 'bce', weight: true, posWeight: true, reduction: 'sum' },
  { name: 'BCEWithLogitsLoss on probability targets, weight, none', kind: 'bce', probs: true, weight: true, reduction: 'none' },
  { name: 'MSELoss()', kind: 'mse' },
  { name: 'MSELoss({ reduction: sum })', kind: 'mse', reduction: 'sum' },
  { name: 'MSELoss({ reduction: none })', kind: 'mse', reduction: 'none' },
  { name: 'SmoothL1Loss()', kind: 'smoothl1' },
  { name: 'SmoothL1Loss({ beta: 0.5, sum })', kind: 'smoothl1', beta: 0.5, reduction: 'sum' },
  { name: 'SmoothL1Loss({ beta: 0 }) (L1)', kind: 'smoothl1', beta: 0 },
  { name: 'HuberLoss()', kind: 'huber' },
  { name: 'HuberLoss({ delta: 2, none })', kind: 'huber', delta: 2, reduction: 'none' },
  { name: 'HuberLoss({ delta: 0.3 })', kind: 'huber', delta: 0.3 },
];

const targetOf = (v: Variant) => (v.kind === 'bce' ? (v.probs ? PROBS : LABELS) : REG_TARGET);

const PY = String.raw`
import json, sys
import torch
import torch.nn.functional as F
spec = json.load(open(sys.argv[1]))
out = []
for v in spec['variants']:
    x = torch.tensor(spec['out'], dtype=torch.float32).reshape(${B}, ${L}).requires_grad_()
    y = torch.tensor(v['target'], dtype=torch.float32).reshape(${B}, ${L})
    r = v.get('reduction', 'mean')
    k = v['kind']
    if k == 'bce':
        w = torch.tensor(spec['weight']) if v.get('weight') else None
        pw = torch.tensor(spec['posWeight']) if v.get('posWeight') else None
        loss = torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction=r)(x, y)
    elif k == 'mse':
        loss = torch.nn.MSELoss(reduction=r)(x, y)
    elif k == 'smoothl1':
        loss = torch.nn.SmoothL1Loss(reduction=r, beta=v.get('beta', 1.0))(x, y)
    else:
        loss = torch.nn.HuberLoss(reduction=r, delta=v.get('delta', 1.0))(x, y)
    (loss.sum() if r == 'none' else loss).backward()
    out.append({'value': loss.detach().reshape(-1).tolist(), 'grad': x.grad.reshape(-1).tolist()})
print(json.dumps(out))
`;

function makeLoss(v: Variant) {
  const reduction = v.reduction;
  switch (v.kind) {
    case 'bce':
      return new torch.nn.BCEWithLogitsLoss({
        reduction,
        ...(v.weight ? { weight: torch.tensor(WEIGHT, { shape: [L] }) } : {}),
        ...(v.posWeight ? { posWeight: torch.tensor(POS_WEIGHT, { shape: [L] }) } : {}),
      });
    case 'mse': return new torch.nn.MSELoss({ reduction });
    case 'smoothl1': return new torch.nn.SmoothL1Loss({ reduction, ...(v.beta !== undefined ? { beta: v.beta } : {}) });
    case 'huber': return new torch.nn.HuberLoss({ reduction, ...(v.delta !== undefined ? { delta: v.delta } : {}) });
  }
}

let reference: { value: number[]; grad: number[] }[];

beforeAll(async () => {
  const fs = await import('fs');
  const os = await import('os');
  const path = await import('path');
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-losses-')), 'spec.json');
  fs.writeFileSync(file, JSON.stringify({ out: OUT, weight: WEIGHT, posWeight: POS_WEIGHT, variants: VARIANTS.map((v) => ({ ...v, target: targetOf(v) })) }));
  reference = await runPyJson(PY, [file]);
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
});

describe('element-wise losses match PyTorch in value and gradient', () => {
  test.each(VARIANTS.map((v, i) => [v.name, i] as const))('%s', async (_name, i) => {
    const v = VARIANTS[i];
    const x = torch.tensor(OUT, { shape: [B, L], requiresGrad: true });
    const y = torch.tensor(targetOf(v), { shape: [B, L] });
    const loss = await makeLoss(v).forward(x, y);
    expect(loss.shape).toEqual(v.reduction === 'none' ? [B, L] : []);
    const value = Array.from(await loss.data() as Float32Array);
    expect(relDiff(value, reference[i].value)).toBeLessThan(1e-6);
    await (v.reduction === 'none' ? await loss.sum() : loss).backward();
    const grad = (await x.grad())!;
    expect(relDiff(Array.from(await grad.data() as Float32Array), reference[i].grad)).toBeLessThan(1e-6);
  });

  test('the functional forms give the classes\' values', async () => {
    const x = torch.tensor(OUT, { shape: [B, L] });
    const y = torch.tensor(REG_TARGET, { shape: [B, L] });
    const yl = torch.tensor(LABELS, { shape: [B, L] });
    const F = torch.nn.functional;
    const pairs: [Promise<Tensor>, number][] = [
      [F.mseLoss(x, y), 6], [F.smoothL1Loss(x, y, { beta: 0.5, reduction: 'sum' }), 10],
      [F.huberLoss(x, y, { delta: 2, reduction: 'none' }), 13], [F.binaryCrossEntropyWithLogits(x, yl), 0],
    ];
    for (const [p, i] of pairs) {
      const got = Array.from(await (await p).data() as Float32Array);
      expect(relDiff(got, reference[i].value)).toBeLessThan(1e-6);
    }
  });
});

describe('element-wise losses refuse what PyTorch would broadcast or fail on deep inside', () => {
  const x = torch.tensor(OUT, { shape: [B, L] });
  test('a [B, 1] output against a [B] target is an Error with a hint, not a [B, B] broadcast', async () => {
    const out = torch.zeros([B, 1]);
    const p = new torch.nn.MSELoss().forward(out, torch.zeros([B]));
    await expect(p).rejects.toThrow(/MSELoss: output of shape \[6,1\] and target of shape \[6\] must have one shape \(squeeze the output's last dimension/);
    await expect(p).rejects.toMatchObject({ code: 'FINETORCH_SHAPE' });
  });
  test('int64 targets name the dtype and how to make float targets', async () => {
    const y = torch.tensor(LABELS, { shape: [B, L], dtype: 'int64' });
    await expect(new torch.nn.BCEWithLogitsLoss().forward(x, y)).rejects.toThrow(/BCEWithLogitsLoss: targets must be floating point .* got int64/);
  });
  test('float32 output against float64 target is an Error', async () => {
    const y = torch.tensor(REG_TARGET, { shape: [B, L], dtype: 'float64' });
    await expect(new torch.nn.HuberLoss().forward(x, y)).rejects.toThrow(/HuberLoss: output \(float32\) and target \(float64\) must have one dtype/);
    await expect(new torch.nn.HuberLoss().forward(x, y)).rejects.toMatchObject({ code: 'FINETORCH_DTYPE' });
  });
  test('a posWeight that is not one value per label is an Error naming the shapes', async () => {
    const lossFn = new torch.nn.BCEWithLogitsLoss({ posWeight: torch.ones([3]) });
    await expect(lossFn.forward(x, torch.zeros([B, L]))).rejects.toThrow(/posWeight of shape \[3\] does not broadcast to the output's shape \[6,4\] \(give one value per label: \[4\]\)/);
  });
  test('bad options are Errors at construction', () => {
    expect(() => new torch.nn.HuberLoss({ delta: 0 })).toThrow(/delta must be a finite number > 0/);
    expect(() => new torch.nn.SmoothL1Loss({ beta: -1 })).toThrow(/beta must be a finite number >= 0/);
    expect(() => new torch.nn.MSELoss({ reduction: 'avg' as 'mean' })).toThrow(/reduction must be 'mean', 'sum' or 'none', got avg/);
    expect(() => new torch.nn.BCEWithLogitsLoss({ weight: [1, 2] as unknown as Tensor })).toThrow(/weight must be a Tensor/);
  });
});
