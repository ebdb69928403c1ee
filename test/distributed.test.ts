/**
 * torch.distributed on c10d (TCPStore + ProcessGroupGloo), DistributedDataParallel (c10d's
 * Reducer), DistributedSampler and `finetorch launch`: 2 ranks on 127.0.0.1, free ports, each a
 * child process running test/fixtures/distributed/rank.js. Parity: 2 ranks x batch 8 must give the
 * weights of 1 process x batch 16 (trained here, in the test's process) within 1e-5.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import { ensureDist, show } from './helpers/dist';
import { freePort, killChildren, launchRanks, rankError, rankResult, spawnRank } from './helpers/distributed';
import { floats, labels, readF32, readI64, runPy, tmpDir } from './helpers/train-fixtures';

const N = 48;
const FEATURES = 6;
const CLASSES = 4;
const TOL = 1e-5;

type Weights = Record<string, number[]>;
interface MultiLabelResult { loss: number; samples: number; meanAP: number; perLabel: { f1: number; averagePrecision: number; support: number }[] }
interface TrainResult { weights: Weights; checkpoints: string[]; evaluate?: { accuracy: number; loss: number; samples: number; confusion: number[][] }; multilabel?: MultiLabelResult }
interface Recipe { model: string; optimizer: 'sgd' | 'adamw'; mode?: 'fit' | 'generic' | 'manual'; accum?: number; freeze?: string[]; lora?: string[]; epochs?: number }

const PY_MODELS = String.raw`
import os, sys, torch
d = sys.argv[1]
def mlp(hidden, bn=False):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(${FEATURES}, hidden)] + ([torch.nn.BatchNorm1d(hidden)] if bn else []) + [torch.nn.ReLU(), torch.nn.Linear(hidden, ${CLASSES})]
    m = torch.nn.Sequential(*layers)
    if bn:
        with torch.no_grad():
            m[1].running_mean.uniform_(-0.5, 0.5); m[1].running_var.uniform_(0.5, 2.0)
    return m
torch.jit.script(mlp(16)).save(os.path.join(d, 'mlp.pt'))
torch.jit.script(mlp(16, bn=True)).save(os.path.join(d, 'bn.pt'))
torch.jit.script(mlp(12)).save(os.path.join(d, 'mlp12.pt'))
`;

let dir: string;

beforeAll(async () => {
  ensureDist();
  dir = tmpDir('distributed');
  await runPy(PY_MODELS, [dir]);
  fs.writeFileSync(path.join(dir, 'x.f32'), floats(7, N * FEATURES));
  fs.writeFileSync(path.join(dir, 'y.i64'), labels(8, N, CLASSES));
}, 300_000);

afterAll(() => {
  killChildren();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function outDir(tag: string): string {
  const d = path.join(dir, tag);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

function dataset(): torch.data.TensorDataset {
  const x = readF32(path.join(dir, 'x.f32'));
  const y = readI64(path.join(dir, 'y.i64'));
  return new torch.data.TensorDataset(torch.tensor(x, { shape: [N, FEATURES] }), torch.tensor(y));
}

/**
 * The same recipe in this process, without DDP, on `batchSize` (rank.js's optimizers and loss);
 * with `train` false, the starting weights.
 */
async function reference(r: Recipe, batchSize: number, train = true): Promise<Weights> {
  torch.manualSeed(0);
  const model = await torch.jit.load(path.join(dir, r.model));
  if (r.freeze) model.freeze(r.freeze);
  if (r.lora) await torch.peft.lora(model, { targets: r.lora, rank: 2, alpha: 4 });
  const params = model.parameters({ trainable: true });
  const optimizer = r.optimizer === 'adamw' ? new torch.optim.AdamW(params, { lr: 0.01, weightDecay: 0.01 }) : new torch.optim.SGD(params, { lr: 0.1, momentum: 0.9 });
  const loader = new torch.data.DataLoader(dataset(), { batchSize });
  if (train) await torch.train.fit(model, { train: loader, epochs: r.epochs ?? 1, optimizer, progress: false, gradAccumulation: r.accum });
  const out: Weights = {};
  for (const [name, p] of model.namedParameters()) out[name] = Array.from(await p.data() as Float32Array);
  for (const [name, b] of model.namedBuffers()) if (b.dtype === 'float32') out[name] = Array.from(await b.data() as Float32Array);
  model.dispose();
  return out;
}

function maxDiff(a: Weights, b: Weights): { name: string; diff: number } {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  let worst = { name: '', diff: 0 };
  for (const name of Object.keys(b)) {
    for (let i = 0; i < b[name].length; i++) {
      const d = Math.abs(a[name][i] - b[name][i]);
      if (!(d <= worst.diff)) worst = { name, diff: d };
    }
  }
  return worst;
}

/** Launches 2 ranks on `r` with batch `batchSize` each; both results. */
async function trainTwoRanks(tag: string, r: Recipe, batchSize: number, extra: object = {}): Promise<TrainResult[]> {
  const out = outDir(tag);
  const res = await launchRanks({ ...r, model: path.join(dir, r.model), data: dir, out, batchSize, ...extra });
  if (res.code !== 0) throw new Error(`launch failed:\n${show(res)}`);
  return [rankResult<TrainResult>(out, 0), rankResult<TrainResult>(out, 1)];
}

async function expectParity(tag: string, r: Recipe, perRank: number): Promise<TrainResult[]> {
  const [r0, r1] = await trainTwoRanks(tag, r, perRank);
  const ref = await reference(r, perRank * 2);
  expect(maxDiff(r0.weights, r1.weights).diff).toBe(0);
  const worst = maxDiff(r0.weights, ref);
  if (worst.diff > TOL) throw new Error(`${tag}: '${worst.name}' differs from the 1-process run by ${worst.diff}`);
  // The run must have trained: the weights moved from the start.
  expect(maxDiff(r0.weights, await reference(r, perRank * 2, false)).diff).toBeGreaterThan(1e-3);
  return [r0, r1];
}

describe('collectives over 2 ranks', () => {
  test('allReduce (sum, max, avg), broadcast from rank 1, allGather and barrier give every rank the same answers', async () => {
    const out = outDir('collectives');
    const res = await launchRanks({ task: 'collectives', out });
    if (res.code !== 0) throw new Error(show(res));
    for (const rank of [0, 1]) {
      expect(rankResult(out, rank)).toEqual({ world: 2, sum: [3, 6], max: 2, avg: 1, broadcast: 42, gathered: [0, 10] });
    }
  });
});

describe('DistributedDataParallel: 2 ranks x batch 8 == 1 process x batch 16 within 1e-5', () => {
  test('fit, fused step, SGD with momentum', async () => {
    await expectParity('fit-sgd', { model: 'mlp.pt', optimizer: 'sgd' }, 8);
  });

  test('fit, fused step, AdamW, two epochs', async () => {
    await expectParity('fit-adamw', { model: 'mlp.pt', optimizer: 'adamw', epochs: 2 }, 8);
  });

  test('fit, generic step (a loss function), AdamW, a model with frozen BatchNorm', async () => {
    await expectParity('generic-bn', { model: 'bn.pt', optimizer: 'adamw', mode: 'generic', freeze: ['1.*'] }, 8);
  });

  test('the manual loop (ddp.forward, loss.backward, optimizer.step), SGD', async () => {
    await expectParity('manual-sgd', { model: 'mlp.pt', optimizer: 'sgd', mode: 'manual' }, 8);
  });

  test('gradAccumulation 2 (the first micro-batch does not synchronise): 2 ranks x 4 x 2 == 1 x 16', async () => {
    const r: Recipe = { model: 'mlp.pt', optimizer: 'adamw', accum: 2 };
    const [r0] = await trainTwoRanks('accum', r, 4);
    const ref = await reference({ ...r, accum: 1 }, 16);
    const worst = maxDiff(r0.weights, ref);
    if (worst.diff > TOL) throw new Error(`'${worst.name}' differs by ${worst.diff}`);
  });

  test('LoRA: only the adapter trains and is reduced; ranks agree with the 1-process run and the base weights stay', async () => {
    const [r0] = await expectParity('lora', { model: 'mlp.pt', optimizer: 'sgd', lora: ['2'] }, 8);
    const base = await reference({ model: 'mlp.pt', optimizer: 'sgd' }, 16, false);
    expect(r0.weights['2.weight']).toEqual(base['2.weight']);
    expect(r0.weights['0.weight']).toEqual(base['0.weight']);
    expect(Object.keys(r0.weights).filter((k) => k.includes('lora_')).length).toBe(2);
  });
});

test('evaluate under DDP: every rank reports the accuracy, loss and sample count of the whole set, and multi-label F1 and average precision', async () => {
  const [r0, r1] = await trainTwoRanks('evaluate', { model: 'mlp.pt', optimizer: 'sgd', epochs: 0 }, 8, { evaluate: true });
  const model = await torch.jit.load(path.join(dir, 'mlp.pt'));
  const whole = await torch.train.evaluate(model, new torch.data.DataLoader(dataset(), { batchSize: 5 }));
  model.dispose();
  for (const r of [r0, r1]) {
    expect(r.evaluate!.samples).toBe(N);
    expect(r.evaluate!.accuracy).toBeCloseTo(whole.accuracy, 12);
    expect(r.evaluate!.loss).toBeCloseTo(whole.loss, 5);
    expect(r.evaluate!.confusion).toEqual(whole.confusion);
  }
  // Multi-label (label c on where feature c is positive): per-label F1 and average precision of the whole set.
  const x = readF32(path.join(dir, 'x.f32'));
  const batches = [];
  for (let s = 0; s < N; s += 5) {
    const rows = Math.min(5, N - s);
    const y = new Float32Array(rows * CLASSES);
    for (let k = 0; k < rows; k++) for (let c = 0; c < CLASSES; c++) y[k * CLASSES + c] = x[(s + k) * FEATURES + c] > 0 ? 1 : 0;
    batches.push({ input: torch.tensor(x.slice(s * FEATURES, (s + rows) * FEATURES), { shape: [rows, FEATURES] }), target: torch.tensor(y, { shape: [rows, CLASSES] }) });
  }
  const mlp = await torch.jit.load(path.join(dir, 'mlp.pt'));
  const ml = await torch.train.evaluate(mlp, batches, { loss: new torch.nn.BCEWithLogitsLoss() });
  mlp.dispose();
  for (const r of [r0, r1]) {
    expect(r.multilabel!.samples).toBe(N);
    expect(r.multilabel!.loss).toBeCloseTo(ml.loss, 5);
    expect(r.multilabel!.perLabel.map((l) => l.support)).toEqual(ml.multilabel!.perLabel.map((l) => l.support));
    expect(r.multilabel!.perLabel.map((l) => l.f1)).toEqual(ml.multilabel!.perLabel.map((l) => expect.closeTo(l.f1, 10)));
    expect(r.multilabel!.perLabel.map((l) => l.averagePrecision)).toEqual(ml.multilabel!.perLabel.map((l) => expect.closeTo(l.averagePrecision, 10)));
    expect(r.multilabel!.meanAP).toBeCloseTo(ml.multilabel!.meanAP, 10);
  }
});

test('checkpoints: rank 0 writes them, rank 1 does not; resuming on both ranks gives the straight run\'s weights', async () => {
  const ckpt = outDir('ckpt-files');
  const r: Recipe = { model: 'mlp.pt', optimizer: 'adamw', epochs: 1 };
  const [a0, a1] = await trainTwoRanks('ckpt-1', r, 8, { checkpoint: ckpt });
  expect(a0.checkpoints.length).toBe(1);
  expect(a1.checkpoints).toEqual([]);
  const [b0, b1] = await trainTwoRanks('ckpt-2', { ...r, epochs: 2 }, 8, { resume: a0.checkpoints[0] });
  const [s0] = await trainTwoRanks('ckpt-straight', { ...r, epochs: 2 }, 8);
  expect(maxDiff(b0.weights, b1.weights).diff).toBe(0);
  expect(maxDiff(b0.weights, s0.weights).diff).toBeLessThanOrEqual(TOL);
});

test('models whose parameters differ across ranks are refused at wrap time, on every rank, naming the rank and the parameter', async () => {
  const out = outDir('mismatch');
  const res = await launchRanks({ model: path.join(dir, 'mlp.pt'), model1: path.join(dir, 'mlp12.pt'), optimizer: 'sgd', data: dir, out, batchSize: 8, timeoutMs: 20000 }, 2, ['--grace-ms', '20000']);
  expect(res.code).not.toBe(0);
  const errors = res.stderr.split('\n').filter((l) => l.startsWith('ERROR ')).map((l) => rankError(l)!);
  expect(errors.length).toBe(2);
  for (const e of errors) {
    expect(e.code).toBe('FINETORCH_DISTRIBUTED');
    expect(e.message).toMatch(/models differ across ranks: rank 1 differs from rank 0/);
  }
  expect(errors.some((e) => /parameter '0.weight' is \[12, 6\] float32 on rank 1 but \[16, 6\] float32 on rank 0/.test(e.message))).toBe(true);
});

describe('failures', () => {
  test('a killed rank makes rank 0 fail with an Error naming rank 1, and the launcher exits non-zero', async () => {
    const out = outDir('killed');
    const res = await launchRanks({ model: path.join(dir, 'mlp.pt'), optimizer: 'sgd', data: dir, out, batchSize: 8, dieAfterStep: true, timeoutMs: 20000 });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/finetorch launch: rank 1 \(pid \d+\) was killed by SIGKILL/);
    const err = rankError(res.stderr);
    if (!err) throw new Error(`rank 0 printed no error:\n${show(res)}`);
    expect(err.code).toBe('FINETORCH_DISTRIBUTED');
    expect(err.message).toMatch(/rank 1 is lost/);
  });

  test('a rank that hangs (alive, never at the collective) makes rank 0 fail after timeoutMs naming it', async () => {
    const res = await launchRanks({ task: 'collectives', out: outDir('hung'), hangRank: 1, timeoutMs: 3000 }, 2, ['--grace-ms', '500']);
    expect(res.code).not.toBe(0);
    const err = rankError(res.stderr);
    if (!err) throw new Error(`rank 0 printed no error:\n${show(res)}`);
    expect(err.code).toBe('FINETORCH_DISTRIBUTED');
    expect(err.message).toMatch(/rank 1 is alive but did not come to this collective \(hung, or out of step: rank 1 at 0 collectives started, this rank 1\)/);
    expect(res.stderr).toMatch(/finetorch launch: rank 0 \(pid \d+\) exited with code 3/);
  });

  test('collectives that differ across ranks (another dtype or shape, a skipped collective, noSync on one rank) fail on every rank naming who runs what, and the group still works', async () => {
    const out = outDir('out-of-step');
    const res = await launchRanks({ task: 'outOfStep', model: path.join(dir, 'mlp.pt'), out, timeoutMs: 20000 });
    if (res.code !== 0) throw new Error(`the ranks did not finish:\n${show(res)}`);
    const results = [0, 1].map((r) => rankResult(out, r) as { errors: ({ code: string; message: string } | null)[]; sum: number[] });
    const expected = [
      /the ranks disagree on collective 1 \(out of step: .*\): rank 0 runs allReduce\(sum\) of float32 \[2\]; rank 1 runs allReduce\(sum\) of int64 \[2\]$/,
      /the ranks disagree on collective 2 .*: rank 0 runs allReduce\(sum\) of float32 \[2\]; rank 1 runs barrier$/,
      /the ranks disagree on collective 4 .*: rank 0 runs a DistributedDataParallel forward that synchronises gradients; rank 1 runs a DistributedDataParallel forward under noSync\(\)/,
    ];
    for (const [rank, r] of results.entries()) {
      expect(r.errors.length).toBe(expected.length);
      r.errors.forEach((e, i) => {
        expect(e?.code).toBe('FINETORCH_DISTRIBUTED');
        expect(e?.message).toMatch(new RegExp(`rank ${rank} of 2: `));
        expect(e?.message).toMatch(expected[i]);
      });
      expect(r.sum).toEqual([3, 30]);
    }
  });

  test('a rank with the wrong MASTER_PORT cannot reach the store, and rank 0 says rank 1 did not join', async () => {
    const [port, wrong] = [await freePort(), await freePort()];
    const job = { task: 'collectives', out: outDir('wrong-port'), timeoutMs: 4000 };
    const env = (rank: number, p: number) => ({ RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(p) });
    const [r0, r1] = await Promise.all([spawnRank(env(0, port), job), spawnRank(env(1, wrong), job)]);
    expect([r0.code, r1.code]).toEqual([3, 3]);
    expect(rankError(r0.stderr)!.message).toMatch(/rank 1 of 2 did not join within 4000 ms/);
    expect(rankError(r1.stderr)!.message).toMatch(new RegExp(`rank 1 could not reach rank 0's store at 127.0.0.1:${wrong}`));
  });

  test('WORLD_SIZE mismatch fails on both ranks with one message', async () => {
    const port = await freePort();
    const job = { task: 'collectives', out: outDir('world-size'), timeoutMs: 10000 };
    const env = (rank: number, ws: number) => ({ RANK: String(rank), WORLD_SIZE: String(ws), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
    const [r0, r1] = await Promise.all([spawnRank(env(0, 2), job), spawnRank(env(1, 3), job)]);
    for (const r of [r0, r1]) {
      expect(r.code).toBe(3);
      const e = rankError(r.stderr)!;
      expect(e.code).toBe('FINETORCH_DISTRIBUTED');
      expect(e.message).toMatch(/^initProcessGroup: WORLD_SIZE mismatch: rank 1 has WORLD_SIZE=3 but rank 0 has WORLD_SIZE=2/);
    }
  });

  test('a MASTER_PORT already in use is reported by rank 0', async () => {
    const net = await import('net');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const r0 = await spawnRank({ RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) }, { task: 'collectives', out: dir, timeoutMs: 3000 });
      expect(r0.code).toBe(3);
      expect(rankError(r0.stderr)!.message).toMatch(new RegExp(`rank 0 could not host the rendezvous store on 127.0.0.1:${port}`));
    } finally {
      server.close();
    }
  });

  test('initProcessGroup without RANK says what to set, and the process lives', async () => {
    const saved = { ...process.env };
    for (const k of ['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT']) delete process.env[k];
    process.env.MASTER_ADDR = '127.0.0.1';
    process.env.MASTER_PORT = String(await freePort());
    try {
      await expect(torch.distributed.initProcessGroup()).rejects.toMatchObject({ code: 'FINETORCH_DISTRIBUTED', message: expect.stringMatching(/WORLD_SIZE is not set/) });
      process.env.WORLD_SIZE = '2';
      await expect(torch.distributed.initProcessGroup()).rejects.toThrow(/RANK is not set; run under `finetorch launch`/);
      process.env.RANK = '2';
      await expect(torch.distributed.initProcessGroup()).rejects.toThrow(/RANK must be in \[0, WORLD_SIZE\): got rank 2 with WORLD_SIZE=2/);
      expect(torch.distributed.isInitialized()).toBe(false);
      expect(() => torch.distributed.getRank()).toThrow(/not initialized/);
    } finally {
      process.env = saved;
    }
  });
});

describe('a world of one, in this process', () => {
  afterAll(() => torch.distributed.destroyProcessGroup());

  test('initProcessGroup over tcp://, collectives and DDP work with world size 1', async () => {
    await torch.distributed.initProcessGroup({ initMethod: `tcp://127.0.0.1:${await freePort()}`, rank: 0, worldSize: 1, timeoutMs: 10000 });
    expect([torch.distributed.getRank(), torch.distributed.getWorldSize()]).toEqual([0, 1]);
    const t = torch.tensor([1, 2, 3]);
    await torch.distributed.allReduce(t, { op: torch.distributed.ReduceOp.AVG });
    expect(Array.from(await t.data() as Float32Array)).toEqual([1, 2, 3]);
    await expect(torch.distributed.allReduce(torch.tensor(BigInt64Array.from([1n, 2n])), { op: 'avg' })).rejects.toThrow(/AVG needs a floating-point tensor/);
    await expect(torch.distributed.broadcast(t, { src: 1 })).rejects.toThrow(/src must be/);
    await expect(torch.distributed.initProcessGroup({ rank: 0, worldSize: 1 })).rejects.toThrow(/already initialized/);
    const model = await torch.jit.load(path.join(dir, 'mlp.pt'));
    model.freeze();
    expect(() => new torch.nn.parallel.DistributedDataParallel(model)).toThrow(/no trainable parameters/);
    model.unfreeze();
    const ddp = new torch.nn.parallel.DistributedDataParallel(model);
    await ddp.ready;
    const loss = await new torch.nn.CrossEntropyLoss().forward(await ddp.forward(torch.randn([4, FEATURES])), torch.tensor([0n, 1n, 2n, 3n]));
    await loss.backward();
    expect(await model.parameters()[0].grad()).not.toBeNull();
    model.freeze('0.*');
    await expect(ddp.forward(torch.randn([2, FEATURES]))).rejects.toMatchObject({ code: 'FINETORCH_DISTRIBUTED', message: expect.stringMatching(/trainable parameters changed after wrapping/) });
    ddp.dispose();
    model.dispose();
  });
});

describe('DistributedSampler (PyTorch semantics)', () => {
  const ds = { length: 10 };

  test('pads to equal length from the start of the list and interleaves ranks', () => {
    const s = [0, 1, 2].map((rank) => new torch.data.DistributedSampler(ds, { numReplicas: 3, rank, shuffle: false }));
    expect(s.map((x) => Array.from(x.indices()))).toEqual([[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]);
    expect(s[0].length).toBe(4);
  });

  test('dropLast cuts the tail instead', () => {
    const s = [0, 1, 2].map((rank) => new torch.data.DistributedSampler(ds, { numReplicas: 3, rank, shuffle: false, dropLast: true }));
    expect(s.map((x) => Array.from(x.indices()))).toEqual([[0, 3, 6], [1, 4, 7], [2, 5, 8]]);
  });

  test('shuffle: ranks share one permutation per (seed, epoch), disjoint shares, a new order after setEpoch', () => {
    const [a, b] = [0, 1].map((rank) => new torch.data.DistributedSampler(ds, { numReplicas: 2, rank, seed: 3 }));
    const e0 = [...a.indices(), ...b.indices()].sort((x, y) => x - y);
    expect(e0).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const first = Array.from(a.indices());
    a.setEpoch(1);
    expect(Array.from(a.indices())).not.toEqual(first);
    a.setEpoch(0);
    expect(Array.from(a.indices())).toEqual(first);
  });

  test('a DataLoader reads its sampler\'s share, passes its epoch on, and refuses shuffle with a sampler', async () => {
    const set = dataset();
    const sampler = new torch.data.DistributedSampler(set, { numReplicas: 2, rank: 1, seed: 5 });
    const loader = new torch.data.DataLoader(set, { batchSize: 24, sampler });
    expect(loader.length).toBe(1);
    loader.setEpoch(4);
    for await (const b of loader) {
      expect(b.input.shape).toEqual([24, FEATURES]);
      b.input.dispose(); b.target.dispose();
    }
    const twin = new torch.data.DistributedSampler(set, { numReplicas: 2, rank: 1, seed: 5 });
    twin.setEpoch(4);
    expect(Array.from(loader.order(4))).toEqual(Array.from(twin.indices()));
    expect(() => new torch.data.DataLoader(set, { sampler, shuffle: true })).toThrow(/sampler and shuffle exclude each other/);
    expect(() => new torch.data.DistributedSampler(set)).toThrow(/process group is not initialized/);
  });
});
