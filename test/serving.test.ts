/**
 * torch.serving.Predictor: its own thread and copy of the weights, dynamic batching, hot swap, and
 * the Errors that leave it serving.
 *
 * Models made by Python in beforeAll (scripted, so train/eval switches BatchNorm):
 *   cnn.pt   = Conv2d(3, 8, 3) + BatchNorm2d(8) + ReLU + AdaptiveAvgPool2d(1) + Flatten + Linear(8, 5)
 *   cnn7.pt  = the same with Linear(8, 7): another architecture
 *   cnn_b.pt = cnn.pt's architecture with other weights
 *   big.pt   = an MLP large enough that its training steps take a while
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync } from 'child_process';
import * as tar from 'tar';
import * as torch from '../lib';
import type { Tensor } from '../lib';
import { floats, runPy, tmpDir } from './helpers/train-fixtures';
import { colourFolders, pattern, writeImage } from './helpers/images';
import { expectedTop } from './helpers/predict';

jest.setTimeout(120_000);

const dir = tmpDir('serving');
const file = (name: string) => path.join(dir, name);
const C = 5;
const SHAPE = [3, 16, 16];
const EX = SHAPE.reduce((a, b) => a * b, 1);

beforeAll(async () => {
  await runPy(`
import sys, torch
from torch import nn
out = sys.argv[1]
def cnn(classes, seed):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5); m[1].running_var.uniform_(0.5, 2.0)
    return torch.jit.script(m)
cnn(${C}, 1).save(out + '/cnn.pt')
cnn(7, 1).save(out + '/cnn7.pt')
cnn(${C}, 2).save(out + '/cnn_b.pt')
torch.manual_seed(3)
torch.jit.script(nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 4))).save(out + '/big.pt')
class Slow(nn.Module):
    # A forward of about 0.2 GFLOP per row: long enough to see what arrives while it runs.
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(1024, 1024)
    def forward(self, x):
        for _ in range(100):
            x = torch.tanh(self.l(x))
        return x
torch.jit.script(Slow()).save(out + '/slow.pt')
`, [dir]);
});

function example(seed: number): Tensor {
  return torch.tensor(floats(seed, EX), { shape: SHAPE });
}

/** model.eval().forward of the examples stacked into one batch, row by row. */
async function reference(model: torch.jit.ScriptModule, xs: Tensor[]): Promise<Float32Array[]> {
  model.eval();
  const out = await model.forward(await torch.stack(xs));
  const flat = (await out.data()) as Float32Array;
  const width = flat.length / xs.length;
  return xs.map((_, i) => flat.slice(i * width, (i + 1) * width));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function expectServes(p: torch.serving.Predictor, model: torch.jit.ScriptModule): Promise<void> {
  const x = example(99);
  const [want] = await reference(model, [x]);
  const got = await p.predict(x);
  expect(maxAbsDiff((await got.data()) as Float32Array, want)).toBeLessThan(1e-5);
}

test('predict answers each concurrent caller with its row of model.eval().forward on the batch, in one batch', async () => {
  const model = await torch.jit.load(file('cnn.pt'));
  const p = await torch.serving.Predictor.load(file('cnn.pt'), { maxBatch: 4, maxDelayMs: 1000 });
  const xs = [1, 2, 3, 4].map(example);
  const want = await reference(model, xs);
  const got = await Promise.all(xs.map((x) => p.predict(x)));
  for (let i = 0; i < xs.length; i++) {
    expect(got[i].shape).toEqual([C]);
    expect(maxAbsDiff((await got[i].data()) as Float32Array, want[i])).toBeLessThan(1e-5);
  }
  // maxBatch reached: the batch ran at once, without waiting the 1000 ms
  const s = p.stats();
  expect(s).toMatchObject({ requests: 4, errors: 0, batches: 1, meanBatchSize: 4 });
  expect(s.latencyMs.p99).toBeGreaterThan(0);
  expect(s.latencyMs.p50).toBeLessThanOrEqual(s.latencyMs.p99);
  await p.close();
});

test('requests that arrive while a batch runs gather into one batch, which runs when that one ends', async () => {
  const p = await torch.serving.Predictor.load(file('slow.pt'), { maxBatch: 16, maxDelayMs: 0 });
  const x = { data: floats(5, 1024), shape: [1024] };
  const first = p.predict(x);
  const later: Promise<Tensor>[] = [];
  // Each one arrives after maxDelayMs: alone, it would have run as a batch of its own.
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 3));
    later.push(p.predict(x));
  }
  const outs = await Promise.all([first, ...later]);
  const s = p.stats();
  expect(s.requests).toBe(6);
  expect(s.batches).toBe(2);
  const want = (await outs[0].data()) as Float32Array;
  for (const o of outs.slice(1)) expect(maxAbsDiff((await o.data()) as Float32Array, want)).toBeLessThan(1e-5);
  await p.close();
});

test('{ data, shape } inputs, maxBatch 1 runs every request alone, and item()/tolist() read the copied values', async () => {
  const model = await torch.jit.load(file('cnn.pt'));
  const p = await torch.serving.Predictor.load(file('cnn.pt'), { maxBatch: 1 });
  const xs = [5, 6, 7].map((s) => floats(s, EX));
  const want = await reference(model, xs.map((d) => torch.tensor(d, { shape: SHAPE })));
  const got = await Promise.all(xs.map((data) => p.predict({ data: Array.from(data), shape: SHAPE })));
  for (let i = 0; i < xs.length; i++) expect(maxAbsDiff((await got[i].data()) as Float32Array, want[i])).toBeLessThan(1e-5);
  expect((await got[0].tolist() as number[])[2]).toBeCloseTo(want[0][2], 5);
  expect(p.stats()).toMatchObject({ requests: 3, batches: 3, meanBatchSize: 1 });
  await p.close();
});

test('a factory tensor, made by a task queued on the training executor, is read once that task has run', async () => {
  const model = await torch.jit.load(file('cnn.pt'));
  const p = await torch.serving.Predictor.load(file('cnn.pt'));
  const xs = [torch.randn(SHAPE), torch.ones(SHAPE)];
  const got = await Promise.all(xs.map((x) => p.predict(x)));
  const want = await reference(model, xs);
  for (let i = 0; i < xs.length; i++) expect(maxAbsDiff((await got[i].data()) as Float32Array, want[i])).toBeLessThan(1e-5);
  await p.close();
});

test('classify gives the top-k labels with their softmax probabilities, most probable first', async () => {
  const model = await torch.jit.load(file('cnn.pt'));
  const p = await torch.serving.Predictor.load(model);
  const labels = ['a', 'b', 'c', 'd', 'e'];
  const x = example(8);
  const [logits] = await reference(model, [x]);
  const e = Array.from(logits, (v) => Math.exp(v));
  const sum = e.reduce((a, b) => a + b, 0);
  const order = e.map((v, i) => [v / sum, i]).sort((a, b) => b[0] - a[0]);
  const [top, two] = await Promise.all([p.classify(x, { topk: 3, labels }), p.classify(x, { topk: 2 })]);
  expect(top.map((t) => t.index)).toEqual(order.slice(0, 3).map((o) => o[1]));
  expect(top.map((t) => t.label)).toEqual(order.slice(0, 3).map((o) => labels[o[1]]));
  top.forEach((t, j) => expect(t.probability).toBeCloseTo(order[j][0], 6));
  expect(two.map((t) => t.label)).toEqual(order.slice(0, 2).map((o) => String(o[1])));
  expect(p.stats()).toMatchObject({ requests: 2, batches: 1 });
  await expect(p.classify(x, { labels: ['a', 'b'] })).rejects.toMatchObject({ code: 'FINETORCH_INDEX', message: expect.stringMatching(/only 2 labels/) });
  await p.close();
});

test('a predictor loaded from a model serves a clone in eval mode: changes to the model reach it only through update()', async () => {
  const model = await torch.jit.load(file('cnn.pt'));
  model.train();
  const p = await torch.serving.Predictor.load(model);
  const x = example(9);
  const before = (await (await p.predict(x)).data()) as Float32Array;
  // one SGD step changes the model's weights (and, in train mode, its BatchNorm statistics)
  const opt = new torch.optim.SGD(model.parameters(), { lr: 0.5 });
  const out = await model.forward(await torch.stack([example(1), example(2)]));
  const loss = await new torch.nn.CrossEntropyLoss().forward(out, torch.tensor([1n, 3n]));
  await loss.backward();
  await opt.step();
  expect(maxAbsDiff((await (await p.predict(x)).data()) as Float32Array, before)).toBe(0);
  await p.update(model);
  const [want] = await reference(model, [x]);
  expect(maxAbsDiff(want, before)).toBeGreaterThan(1e-3);
  expect(maxAbsDiff((await (await p.predict(x)).data()) as Float32Array, want)).toBeLessThan(1e-5);
  await p.close();
});

test('update from a file swaps the weights; requests made before update() finish on the old ones', async () => {
  const a = await torch.jit.load(file('cnn.pt'));
  const b = await torch.jit.load(file('cnn_b.pt'));
  const p = await torch.serving.Predictor.load(file('cnn.pt'), { maxDelayMs: 50 });
  const x = example(10);
  const [wantA] = await reference(a, [x]);
  const [wantB] = await reference(b, [x]);
  const early = p.predict(x);  // still waiting for company when update() is called
  const swapped = p.update(file('cnn_b.pt'));
  expect(maxAbsDiff((await (await early).data()) as Float32Array, wantA)).toBeLessThan(1e-5);
  await swapped;
  expect(maxAbsDiff((await (await p.predict(x)).data()) as Float32Array, wantB)).toBeLessThan(1e-5);
  await p.close();
});

test('optimize: true serves a frozen, inference-optimized copy (BatchNorm folded) equal to model.eval().forward within float rounding, and re-optimizes on every update', async () => {
  const a = await torch.jit.load(file('cnn.pt'));
  const b = await torch.jit.load(file('cnn_b.pt'));
  const xs = [example(21), example(22), example(23)];
  const wantA = await reference(a, xs);
  const wantB = await reference(b, xs);
  const p = await torch.serving.Predictor.load(file('cnn.pt'), { optimize: true, maxBatch: 3, maxDelayMs: 20 });
  const plain = await torch.serving.Predictor.load(file('cnn.pt'));
  expect(p.optimized).toBe(true);
  expect(plain.optimized).toBe(false);
  const got = await Promise.all(xs.map((x) => p.predict(x)));
  const fromPlain = (await (await plain.predict(xs[0])).data()) as Float32Array;
  for (let i = 0; i < xs.length; i++) expect(maxAbsDiff((await got[i].data()) as Float32Array, wantA[i])).toBeLessThan(1e-5);
  // the folded BatchNorm rounds differently from the model run as it is: it is another graph
  expect(maxAbsDiff((await got[0].data()) as Float32Array, fromPlain)).toBeGreaterThan(0);
  expect(p.stats()).toMatchObject({ batches: 1, meanBatchSize: 3 });
  await p.update(b);
  for (let i = 0; i < xs.length; i++) expect(maxAbsDiff((await (await p.predict(xs[i])).data()) as Float32Array, wantB[i])).toBeLessThan(1e-5);
  await p.update(file('cnn.pt'));
  expect(maxAbsDiff((await (await p.predict(xs[1])).data()) as Float32Array, wantA[1])).toBeLessThan(1e-5);
  const top = await p.classify(xs[2], { topk: 2 });
  expect(top[0].index).toBe(wantA[2].indexOf(Math.max(...wantA[2])));
  await expect(p.update(await torch.jit.load(file('cnn7.pt')))).rejects.toMatchObject({ code: 'FINETORCH_SHAPE' });
  expect(p.optimized).toBe(true);
  expect(maxAbsDiff((await (await p.predict(xs[0])).data()) as Float32Array, wantA[0])).toBeLessThan(1e-5);
  await expect(torch.serving.Predictor.load(file('cnn.pt'), { optimize: 'yes' as unknown as boolean })).rejects.toThrow(/optimize must be a boolean/);
  // adopted from a loaded module: frozen on the training executor, where graph optimisation is off
  const adopted = await torch.serving.Predictor.load(a, { optimize: true });
  expect(adopted.optimized).toBe(true);
  expect(maxAbsDiff((await (await adopted.predict(xs[2])).data()) as Float32Array, wantA[2])).toBeLessThan(1e-5);
  await adopted.update(b);
  expect(maxAbsDiff((await (await adopted.predict(xs[2])).data()) as Float32Array, wantB[2])).toBeLessThan(1e-5);
  await Promise.all([p.close(), plain.close(), adopted.close()]);
  expect(p.optimized).toBe(false);
  a.dispose();
  b.dispose();
});

test('update with another architecture is an Error naming the mismatch, and the old weights keep serving', async () => {
  const model = await torch.jit.load(file('cnn.pt'));
  const other = await torch.jit.load(file('cnn7.pt'));
  const p = await torch.serving.Predictor.load(file('cnn.pt'));
  await expect(p.update(other)).rejects.toMatchObject({ code: 'FINETORCH_SHAPE', message: expect.stringMatching(/^Predictor\.update: .*'5\.weight' has shape \[7, 8\], the served model's \[5, 8\]/) });
  await expect(p.update(file('cnn7.pt'))).rejects.toMatchObject({ code: 'FINETORCH_SHAPE' });
  await expect(p.update(file('nope.pt'))).rejects.toThrow(/no such file/);
  await expect(p.update(Buffer.from('not a model'))).rejects.toMatchObject({ code: 'FINETORCH_BAD_MODEL_FILE' });
  await expect(p.update(42 as never)).rejects.toThrow(TypeError);
  await expectServes(p, model);
  await p.close();
});

test('bad inputs are clear Errors, batched apart from good ones, and the predictor keeps serving', async () => {
  const model = await torch.jit.load(file('cnn.pt'));
  const p = await torch.serving.Predictor.load(file('cnn.pt'), { maxDelayMs: 20 });
  await expect(p.predict(torch.tensor(new Int32Array(EX), { shape: SHAPE }))).rejects.toMatchObject({ code: 'FINETORCH_DTYPE', message: 'predict: the input is int32 but the model takes float32' });
  await expect(p.predict({ data: [1, 2, 3], shape: SHAPE })).rejects.toMatchObject({ code: 'FINETORCH_SHAPE', message: expect.stringMatching(/has 3 elements but shape \[3, 16, 16\] needs 768/) });
  await expect(p.predict('cat' as never)).rejects.toThrow(TypeError);
  const disposed = example(1);
  disposed.dispose();
  await expect(p.predict(disposed)).rejects.toMatchObject({ code: 'FINETORCH_DISPOSED' });
  // a wrong shape reaches the model, which refuses it; a good request made meanwhile is answered
  const bad = p.predict(torch.tensor(floats(2, 16 * 16), { shape: [16, 16] }));
  const good = p.predict(example(3));
  await expect(bad).rejects.toMatchObject({ code: 'FINETORCH_SHAPE', message: expect.stringMatching(/^predict: the model refused an input of shape \[16, 16\] \(float32\): /) });
  const [want] = await reference(model, [example(3)]);
  expect(maxAbsDiff((await (await good).data()) as Float32Array, want)).toBeLessThan(1e-5);
  await expectServes(p, model);
  expect(p.stats().errors).toBe(1);
  await p.close();
});

test('bad options are TypeErrors; a damaged file is FINETORCH_BAD_MODEL_FILE', async () => {
  await expect(torch.serving.Predictor.load(file('cnn.pt'), { threads: 0 })).rejects.toThrow(/threads must be an integer in \[1, 1024\]/);
  await expect(torch.serving.Predictor.load(file('cnn.pt'), { maxBatch: 1.5 })).rejects.toThrow(TypeError);
  await expect(torch.serving.Predictor.load(file('cnn.pt'), { maxDelayMs: -1 })).rejects.toThrow(/maxDelayMs/);
  await expect(torch.serving.Predictor.load(file('cnn.pt'), { device: 'tpu' })).rejects.toThrow(TypeError);
  await expect(torch.serving.Predictor.load(Buffer.from('PK not a model'))).rejects.toMatchObject({ code: 'FINETORCH_BAD_MODEL_FILE' });
});

test('a closed predictor answers the requests made before close(), then refuses predict, classify and update', async () => {
  const p = await torch.serving.Predictor.load(file('cnn.pt'), { maxDelayMs: 50 });
  const pending = p.predict(example(4));
  await p.close();
  expect((await pending).shape).toEqual([C]);
  expect(p.isClosed).toBe(true);
  await expect(p.predict(example(4))).rejects.toMatchObject({ code: 'FINETORCH_DISPOSED', message: 'predict: the predictor is closed' });
  await expect(p.classify(example(4))).rejects.toMatchObject({ code: 'FINETORCH_DISPOSED' });
  await expect(p.update(file('cnn.pt'))).rejects.toMatchObject({ code: 'FINETORCH_DISPOSED' });
  await p.close();
});

test('a predict issued while fit trains another model is answered before the training steps queued after it; update() during fit takes weights between steps', async () => {
  const big = await torch.jit.load(file('big.pt'));
  const p = await torch.serving.Predictor.load(file('cnn.pt'), { threads: 1 });
  const q = await torch.serving.Predictor.load(big);
  let swap: Promise<void> | undefined;
  const n = 64 * 12;
  const ds = new torch.data.TensorDataset(torch.tensor(floats(20, n * 256), { shape: [n, 256] }), torch.randint(0, 4, [n]));
  const train = new torch.data.DataLoader(ds, { batchSize: 64 });
  let steps = 0;
  let asked = -1;
  let answered = -1;
  let pending: Promise<unknown> | undefined;
  const fitting = torch.train.fit(big, {
    train, epochs: 2, loss: new torch.nn.CrossEntropyLoss(), optimizer: new torch.optim.SGD(big.parameters(), { lr: 0.01 }),
    progress: false,
    callbacks: {
      onBatchEnd: () => {
        steps++;
        if (steps === 2) {
          asked = steps;
          pending = p.predict(example(5)).then(() => { answered = steps; });
        }
        if (steps === 4) swap = q.update(big);  // the model fit is training
      },
    },
  } as Parameters<typeof torch.train.fit>[1]);
  await fitting;
  await pending;
  // 24 steps in all: the answer came within a step of the question, not after the queued epoch
  expect(steps).toBe(24);
  expect(asked).toBe(2);
  expect(answered - asked).toBeLessThanOrEqual(2);
  await swap;
  await q.update(big);
  const x = torch.tensor(floats(21, 256), { shape: [256] });
  big.eval();
  const want = (await (await big.forward(await torch.stack([x]))).data()) as Float32Array;
  expect(maxAbsDiff((await (await q.predict(x)).data()) as Float32Array, want)).toBeLessThan(1e-5);
  await q.close();
  await p.close();
});

test('a predict never waits behind work queued on the training executor, where model.forward does', async () => {
  const model = await torch.jit.load(file('cnn.pt'));
  const p = await torch.serving.Predictor.load(file('cnn.pt'));
  await p.predict(example(1));  // warm: the first run optimizes the graph
  const a = torch.randn([512, 512]);
  const batch = await torch.stack([example(2)]);
  const order: string[] = [];
  // about a second of work queued on the training executor, in FIFO order
  const queued = Array.from({ length: 40 }, () => a.matmul(a));
  const last = queued[queued.length - 1].then(() => order.push('training queue'));
  const shared = model.forward(batch).then(() => order.push('model.forward'));
  const served = p.predict(example(2)).then(() => order.push('predictor'));
  await Promise.all([last, shared, served, ...queued]);
  expect(order).toEqual(['predictor', 'training queue', 'model.forward']);
  await p.close();
});

/** A copy of cnn.pt whose file records class names and a 32-pixel eval transform; and one recording 3 classes. */
async function recordedModels(): Promise<{ meta: string; few: string; classes: string[] }> {
  const classes = ['ant', 'bee', 'cat', 'dog', 'eel'];
  const model = await torch.jit.load(file('cnn.pt'));
  const transform = torch.transforms.imagenet({ train: false, size: 32 });
  await model.save(file('meta.pt'), { metadata: torch.train.describe({ classes, transform, task: 'single-label' }) });
  await model.save(file('few.pt'), { metadata: torch.train.describe({ classes: classes.slice(0, 3) }) });
  model.dispose();
  return { meta: file('meta.pt'), few: file('few.pt'), classes };
}

test('Predictor.load exposes the metadata its file records (from a path, a Buffer or a loaded model), and classify names classes by it unless labels are given', async () => {
  const { meta, few, classes } = await recordedModels();
  const fromPath = await torch.serving.Predictor.load(meta);
  const fromBuffer = await torch.serving.Predictor.load(fs.readFileSync(meta));
  const loaded = await torch.jit.load(meta);
  const fromModel = await torch.serving.Predictor.load(loaded);
  const plain = await torch.serving.Predictor.load(file('cnn.pt'));
  try {
    expect(fromPath.metadata).toMatchObject({ classes, task: 'single-label', transform: torch.transforms.imagenet({ train: false, size: 32 }).toJSON() });
    expect(fromBuffer.metadata).toEqual(fromPath.metadata);
    expect(fromModel.metadata).toEqual(loaded.metadata);
    expect(plain.metadata).toBeUndefined();
    const x = example(11);
    const [recorded, given, none] = await Promise.all([
      fromPath.classify(x, { topk: 3 }),
      fromModel.classify(x, { topk: 3, labels: ['A', 'B', 'C', 'D', 'E'] }),
      plain.classify(x, { topk: 3 }),
    ]);
    expect(recorded.map((t) => t.index)).toEqual(none.map((t) => t.index));
    expect(recorded.map((t) => t.label)).toEqual(none.map((t) => classes[t.index]));
    expect(given.map((t) => t.label)).toEqual(none.map((t) => 'ABCDE'[t.index]));
    expect(none.map((t) => t.label)).toEqual(none.map((t) => String(t.index)));
    // a record naming fewer classes than the model scores is an Error that says where the names came from
    const short = await torch.serving.Predictor.load(few);
    await expect(short.classify(x, { topk: 5 })).rejects.toMatchObject({ code: 'FINETORCH_INDEX', message: expect.stringMatching(/only 3 class names are recorded in the model file/) });
    const all = await plain.classify(x, { topk: 5 });
    expect((await short.classify(x, { topk: 5, labels: ['1', '2', '3', '4', '5'] })).map((t) => t.label)).toEqual(all.map((t) => String(t.index + 1)));
    await short.close();
  } finally {
    await Promise.all([fromPath, fromBuffer, fromModel, plain].map((p) => p.close()));
    loaded.dispose();
  }
});

describe('serving.createService', () => {
  async function listen(server: import('http').Server): Promise<string> {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as import('net').AddressInfo;
    return `http://127.0.0.1:${port}`;
  }
  async function top(url: string, bytes: Buffer): Promise<torch.serving.Classification[]> {
    const res = await fetch(`${url}/predict`, { method: 'POST', body: bytes });
    expect(res.status).toBe(200);
    return ((await res.json()) as { top: torch.serving.Classification[] }).top;
  }

  test('uses the model file\'s recorded eval transform and class names; a transform or labels given that disagree win, with a warning each', async () => {
    const { meta, classes } = await recordedModels();
    const img = file('recorded.png');
    await writeImage(img, pattern(48, 40, 5), 'png');
    const bytes = fs.readFileSync(img);
    const predictor = await torch.serving.Predictor.load(meta, { maxBatch: 1 });
    const recorded = torch.transforms.imagenet({ train: false, size: 32 });
    const other = torch.transforms.imagenet({ train: false, size: 40 });
    const labels = ['A', 'B', 'C', 'D', 'E'];
    const warned: string[] = [];
    const byRecord = torch.serving.createService(predictor, { topk: 3, warn: (m) => warned.push(m) });
    const agreeing = torch.serving.createService(predictor, { topk: 3, transform: recorded, labels: classes, warn: (m) => warned.push(m) });
    expect(warned).toEqual([]);
    const overridden = torch.serving.createService(predictor, { topk: 3, transform: other, labels, warn: (m) => warned.push(m) });
    expect(warned).toHaveLength(2);
    expect(warned[0]).toMatch(/the transform given .*overrides the one the model file records/);
    expect(warned[1]).toMatch(/the labels given \(5: A, B, C, D, E\) override the class names the model file records \(5: ant, bee, cat, dog, eel\)/);
    const servers = [byRecord, agreeing, overridden];
    try {
      const [a, b, c] = await Promise.all(servers.map(listen));
      const want = await expectedTop(file('cnn.pt'), bytes, recorded, classes, 3);
      for (const url of [a, b]) {
        const got = await top(url, bytes);
        expect(got.map((t) => t.label)).toEqual(want.labels);
        got.forEach((t, j) => expect(t.probability).toBeCloseTo(want.probabilities[j], 5));
      }
      const wantOther = await expectedTop(file('cnn.pt'), bytes, other, labels, 3);
      const got = await top(c, bytes);
      expect(got.map((t) => t.label)).toEqual(wantOther.labels);
      got.forEach((t, j) => expect(t.probability).toBeCloseTo(wantOther.probabilities[j], 5));
      const status = (await (await fetch(`${a}/status`)).json()) as { predictor: torch.serving.PredictorStats; uptimeS: number };
      expect(status.predictor).toMatchObject({ requests: 3, errors: 0 });
      expect(status.uptimeS).toBeGreaterThanOrEqual(0);
      const missing = await fetch(`${a}/nope`);
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as { error: string }).error).toMatch(/POST \/predict/);
    } finally {
      await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
      await predictor.close();
    }
  });

  test('a disagreement is a process warning with code FINETORCH_METADATA_OVERRIDE unless warn is given', async () => {
    const { meta } = await recordedModels();
    const predictor = await torch.serving.Predictor.load(meta);
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      torch.serving.createService(predictor, { labels: ['A', 'B', 'C', 'D', 'E'] });
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0][0]).toMatch(/the labels given \(5: A, B, C, D, E\) override/);
      expect(warn.mock.calls[0][1]).toEqual({ code: 'FINETORCH_METADATA_OVERRIDE' });
    } finally {
      warn.mockRestore();
      await predictor.close();
    }
  });

  test('without a record or options: ImageNet\'s eval transform at 224 and index labels; bad options are TypeErrors', async () => {
    const predictor = await torch.serving.Predictor.load(file('cnn.pt'));
    const server = torch.serving.createService(predictor, { topk: 2 });
    try {
      const url = await listen(server);
      await writeImage(file('plain.png'), pattern(48, 40, 6), 'png');
      const bytes = fs.readFileSync(file('plain.png'));
      const want = await expectedTop(file('cnn.pt'), bytes, torch.transforms.imagenet({ train: false, size: 224 }), ['0', '1', '2', '3', '4'], 2);
      expect((await top(url, bytes)).map((t) => t.label)).toEqual(want.labels);
      expect(() => torch.serving.createService(predictor, { topk: 0 })).toThrow(/topk must be an integer/);
      expect(() => torch.serving.createService(predictor, { labels: 'abc' as never })).toThrow(TypeError);
    } finally {
      await new Promise((resolve) => server.close(resolve));
      await predictor.close();
    }
  });
});

describe('examples/service.ts', () => {
  test('answers POST /predict with the top-k of the eval transform\'s input, refuses a broken upload and keeps serving, and reports GET /status', async () => {
    const { startService } = await import('../examples/service');
    const labels = ['a', 'b', 'c', 'd', 'e'];
    const service = await startService({ model: file('cnn.pt'), labels, size: 32, topk: 3 });
    try {
      const model = await torch.jit.load(file('cnn.pt'));
      model.eval();
      const transform = torch.transforms.imagenet({ train: false, size: 32 });
      for (const format of ['png', 'jpeg'] as const) {
        const img = file(`pattern.${format}`);
        await writeImage(img, pattern(48, 40, 3), format);
        const bytes = fs.readFileSync(img);
        const res = await fetch(`${service.url}/predict`, { method: 'POST', body: bytes });
        expect(res.status).toBe(200);
        const { top } = (await res.json()) as { top: torch.serving.Classification[] };
        // the same input through model.forward on the training executor
        const input = await torch.serving.imageInput(bytes, transform);
        expect(input.shape).toEqual([3, 32, 32]);
        const logits = (await (await model.forward(torch.tensor(input.data, { shape: [1, ...input.shape] }))).data()) as Float32Array;
        const e = Array.from(logits, (v) => Math.exp(v));
        const sum = e.reduce((a, b) => a + b, 0);
        const order = e.map((v, i) => [v / sum, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
        expect(top.map((t) => t.label)).toEqual(order.map(([, i]) => labels[i]));
        top.forEach((t, j) => expect(t.probability).toBeCloseTo(order[j][0], 5));
      }
      const broken = await fetch(`${service.url}/predict`, { method: 'POST', body: Buffer.from('not an image') });
      expect(broken.status).toBe(400);
      expect(((await broken.json()) as { error: string }).error).toMatch(/not a decodable image/);
      const again = await fetch(`${service.url}/predict`, { method: 'POST', body: fs.readFileSync(file('pattern.png')) });
      expect(again.status).toBe(200);
      expect((await fetch(`${service.url}/nope`)).status).toBe(404);
      // while the same process trains another model: answered before the training ends
      const big = await torch.jit.load(file('big.pt'));
      const n = 64 * 8;
      const ds = new torch.data.TensorDataset(torch.tensor(floats(30, n * 256), { shape: [n, 256] }), torch.randint(0, 4, [n]));
      let trained = false;
      let firstStep!: () => void;
      const stepped = new Promise<void>((resolve) => { firstStep = resolve; });
      const fitting = torch.train.fit(big, {
        train: new torch.data.DataLoader(ds, { batchSize: 64 }), epochs: 2, loss: new torch.nn.CrossEntropyLoss(),
        optimizer: new torch.optim.SGD(big.parameters(), { lr: 0.01 }), progress: false, callbacks: { onBatchEnd: () => firstStep() },
      }).then(() => { trained = true; });
      await stepped;
      const during = await Promise.all([0, 1, 2].map(() => fetch(`${service.url}/predict`, { method: 'POST', body: fs.readFileSync(file('pattern.jpeg')) })));
      expect(trained).toBe(false);
      expect(during.map((r) => r.status)).toEqual([200, 200, 200]);
      await fitting;
      const status = (await (await fetch(`${service.url}/status`)).json()) as { predictor: torch.serving.PredictorStats };
      expect(status.predictor).toMatchObject({ requests: 6, errors: 0 });
    } finally {
      await service.close();
    }
  });
});

describe('examples/service.ts with a model file that records its classes and transform', () => {
  test('answers with the recorded class names through the recorded eval transform, without being told', async () => {
    const { startService } = await import('../examples/service');
    const { meta, classes } = await recordedModels();
    await writeImage(file('example.png'), pattern(48, 40, 7), 'png');
    const bytes = fs.readFileSync(file('example.png'));
    const service = await startService({ model: meta, topk: 3 });
    try {
      const res = await fetch(`${service.url}/predict`, { method: 'POST', body: bytes });
      expect(res.status).toBe(200);
      const { top } = (await res.json()) as { top: torch.serving.Classification[] };
      const want = await expectedTop(file('cnn.pt'), bytes, torch.transforms.imagenet({ train: false, size: 32 }), classes, 3);
      expect(top.map((t) => t.label)).toEqual(want.labels);
      top.forEach((t, j) => expect(t.probability).toBeCloseTo(want.probabilities[j], 5));
    } finally {
      await service.close();
    }
  });
});

describe('examples/service.ts POST /finetune', () => {
  test('fine-tunes a copy in the background while /predict keeps answering, and swaps it in only if it validates better', async () => {
    const { startService } = await import('../examples/service');
    const labels = ['a', 'b', 'c', 'd', 'e'];
    const root = file('photos');
    await colourFolders(root, labels);
    const service = await startService({ model: file('cnn.pt'), labels, size: 32, topk: 2 });
    try {
      const bad = await fetch(`${service.url}/finetune`, { method: 'POST', body: JSON.stringify({ dir: file('nowhere') }) });
      expect(bad.status).toBe(400);
      const res = await fetch(`${service.url}/finetune`, { method: 'POST', body: JSON.stringify({ dir: root, epochs: 8, lr: 0.01 }) });
      expect(res.status).toBe(202);
      expect((await fetch(`${service.url}/finetune`, { method: 'POST', body: JSON.stringify({ dir: root }) })).status).toBe(409);
      const during = await fetch(`${service.url}/predict`, { method: 'POST', body: fs.readFileSync(path.join(root, 'c', '3.png')) });
      expect(during.status).toBe(200);
      const done = await service.finetuning();
      expect(done).toMatchObject({ state: 'done', epoch: 8 });
      // eight epochs on five flat colours: the copy validates better, so it is served now
      expect(done.swapped).toBe(done.after! > done.before!);
      expect(done.swapped).toBe(true);
      const status = (await (await fetch(`${service.url}/status`)).json()) as { finetune: { state: string; swapped: boolean } };
      expect(status.finetune).toMatchObject({ state: 'done', swapped: done.swapped });
      const after = await fetch(`${service.url}/predict`, { method: 'POST', body: fs.readFileSync(path.join(root, 'c', '0.png')) });
      expect(after.status).toBe(200);
      if (done.after === 1) expect(((await after.json()) as { top: { label: string }[] }).top[0].label).toBe('c');
    } finally {
      await service.close();
    }
  });
});

describe('examples/service.ts POST /finetune with an uploaded tar of the ImageFolder', () => {
  const uploads = () => new Set(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('finetorch-upload-')));

  test('a tar.gz of the folder (wrapped in one top folder) fine-tunes and swaps as a folder path does; its temporary folder goes when the fine-tune ends', async () => {
    const { startService } = await import('../examples/service');
    const labels = ['a', 'b', 'c', 'd', 'e'];
    await colourFolders(file('upload/photos'), labels);
    const archive = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      tar.c({ gzip: true, cwd: file('upload') }, ['photos']).on('data', (c: Buffer) => chunks.push(c)).on('end', () => resolve(Buffer.concat(chunks))).on('error', reject);
    });
    const before = uploads();
    const service = await startService({ model: file('cnn.pt'), labels, size: 32, topk: 2 });
    try {
      const post = (query: string) => fetch(`${service.url}/finetune${query}`, { method: 'POST', body: archive, headers: { 'content-type': 'application/gzip' } });
      const badLr = await post('?epochs=8&lr=2');
      expect(badLr.status).toBe(400);
      expect(((await badLr.json()) as { error: string }).error).toMatch(/lr must be a number in \(0, 1\), got "2"/);
      const res = await post('?epochs=8&lr=0.01');
      expect(res.status).toBe(202);
      expect((await post('')).status).toBe(409);
      const done = await service.finetuning();
      expect(done).toMatchObject({ state: 'done', epoch: 8, swapped: true });
      expect(done.after!).toBeGreaterThan(done.before!);
      const top = (await (await fetch(`${service.url}/predict`, { method: 'POST', body: fs.readFileSync(file('upload/photos/c/0.png')) })).json()) as { top: { label: string }[] };
      if (done.after === 1) expect(top.top[0].label).toBe('c');
      expect([...uploads()].filter((n) => !before.has(n))).toEqual([]);
    } finally {
      await service.close();
    }
  });

  test('refused uploads: not a tar (400), no files, larger than maxUploadBytes (413), and entries that would leave the folder or link out are never written', async () => {
    const { startService } = await import('../examples/service');
    const labels = ['a', 'b'];
    const service = await startService({ model: file('cnn.pt'), labels, size: 32, maxUploadBytes: 64 * 1024 });
    const post = (body: Buffer) => fetch(`${service.url}/finetune`, { method: 'POST', body, headers: { 'content-type': 'application/x-tar' } });
    const before = uploads();
    try {
      const garbage = await post(Buffer.from(floats(3, 4096).buffer));
      expect(garbage.status).toBe(400);
      expect(((await garbage.json()) as { error: string }).error).toMatch(/the body is not a tar archive of an ImageFolder/);

      fs.mkdirSync(file('hollow/photos/a'), { recursive: true });
      const empty = await post(execFileSync('tar', ['-C', file('hollow'), '-cf', '-', 'photos']));  // folders, no files
      expect(empty.status).toBe(400);
      expect(((await empty.json()) as { error: string }).error).toMatch(/holds no files/);

      await colourFolders(file('big/photos'), labels, 40, 64);
      const big = await post(execFileSync('tar', ['-C', file('big'), '-cf', '-', 'photos'], { maxBuffer: 1 << 28 }));
      expect(big.status).toBe(413);
      expect(((await big.json()) as { error: string }).error).toMatch(/larger than 65536 bytes/);

      // GNU tar keeps '..' and absolute paths with -P: node-tar refuses them, so nothing is written outside
      const evil = file('evil');
      await colourFolders(path.join(evil, 'in'), labels, 5, 16);
      const up = `finetorch-escape-up-${process.pid}.txt`;
      fs.writeFileSync(path.join(evil, up), 'outside');
      const escape = path.join(os.tmpdir(), `finetorch-escape-${process.pid}.txt`);
      fs.writeFileSync(escape, 'outside');
      const archive = execFileSync('tar', ['-C', path.join(evil, 'in'), '-cPf', '-', 'a', 'b', `../${up}`, escape]);
      fs.rmSync(escape);
      expect(archive.includes(Buffer.from(`../${up}`))).toBe(true);
      const res = await post(archive);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toMatch(/path contains '\.\.'/);
      expect(fs.existsSync(escape)).toBe(false);
      expect(fs.existsSync(path.join(os.tmpdir(), up))).toBe(false);

      // a symlink among the images (to a file that is no image) is skipped: were it unpacked, the
      // ImageFolder would list it and the fine-tune would fail on it
      fs.symlinkSync('/etc/hostname', path.join(evil, 'in/a/link.png'));
      const linked = await post(execFileSync('tar', ['-C', path.join(evil, 'in'), '-cf', '-', 'a', 'b']));
      expect(linked.status).toBe(202);
      expect(await service.finetuning()).toMatchObject({ state: 'done', epoch: 3 });
      expect([...uploads()].filter((n) => !before.has(n))).toEqual([]);
    } finally {
      await service.close();
    }
  });
});
