/**
 * What differs between the libtorch lines finetorch supports (1.13 on Debian 12, 2.x on Debian 13
 * and pip) and how finetorch keeps its promises on both. CI runs this file on both lines.
 *
 * - The Python used for reference checks is the PyTorch of the same version as the libtorch under
 *   test, so interop tests compare like with like.
 * - TorchScript's CPU fuser is off by default: Debian 13's libtorch 2.6 is built with LLVM, and its
 *   fuser compiled kernels for a scripted MLP's training graph from the third step on for minutes
 *   (the DataLoader/fit "stalls"; Python on Debian 13 hangs the same way). Here a scripted MLP
 *   trains for 40 steps and a fresh copy of a model computes bit-identically to one whose graph
 *   the executor has already optimized: both would hang or differ with the fuser on.
 * - AdamW computes exactly as Python's torch.optim.AdamW of the same version (lerp_ since 2.0), in
 *   its one-pass form too (backends.cpu.fusedAdamW).
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import type { Tensor } from '../lib';
import { floats, labels, runPy, runPyJson, tmpDir } from './helpers/train-fixtures';

let dir = '';
let mlpFile = '';

beforeAll(async () => {
  dir = tmpDir('compat');
  mlpFile = path.join(dir, 'mlp.pt');
  await runPy(String.raw`
import sys, torch
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
torch.jit.script(m).save(sys.argv[1])
`, [mlpFile]);
}, 120_000);

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const batch = () => ({ input: torch.tensor(floats(3, 16 * 4), { shape: [16, 4] }), target: torch.tensor(labels(4, 16, 3)) });

test('the reference Python is the PyTorch of the libtorch under test (same major.minor)', async () => {
  const py = await runPyJson<{ version: string }>('import json, torch\nprint(json.dumps({"version": torch.__version__}))');
  const mm = (v: string) => v.split('.').slice(0, 2).join('.');
  expect(mm(py.version)).toBe(mm(torch.version.libtorch));
});

test('TorchScript CPU fusion is off by default and can be switched', () => {
  expect(torch.backends.jit.cpuFusion).toBe(false);
  torch.backends.jit.cpuFusion = true;
  try {
    // libtorch only reports true where it has a CPU fusion backend (LLVM): the switch reads back what libtorch holds
    expect(typeof torch.backends.jit.cpuFusion).toBe('boolean');
  } finally {
    torch.backends.jit.cpuFusion = false;
  }
  expect(torch.backends.jit.cpuFusion).toBe(false);
  expect(() => { (torch.backends.jit as { cpuFusion: unknown }).cpuFusion = 'no'; }).toThrow(/backends\.jit\.cpuFusion must be a boolean/);
});

test('a scripted MLP trains through fit past the steps where the graph executor optimizes (Debian 2.6 stalled at step 3)', async () => {
  const model = await torch.jit.load(mlpFile);
  const optimizer = new torch.optim.AdamW(model.parameters(), { lr: 1e-2 });
  const source = { *[Symbol.iterator]() { for (let i = 0; i < 40; i++) yield batch(); } };
  const h = await torch.train.fit(model, { train: source, epochs: 1, optimizer, progress: false });
  expect(h.epochs[0].samples).toBe(40 * 16);
  expect(Number.isFinite(h.epochs[0].loss)).toBe(true);
  optimizer.dispose();
  model.dispose();
}, 60_000);

test('a freshly loaded model computes bit-identically to a copy whose graph the executor has optimized', async () => {
  const warm = await torch.jit.load(mlpFile);
  const cold = await torch.jit.load(mlpFile);
  const x = torch.tensor(floats(9, 8 * 4), { shape: [8, 4], requiresGrad: false });
  // forward and backward several times: the profiling executor optimizes after its first runs
  for (let i = 0; i < 5; i++) {
    const out: Tensor = await warm.forward(x);
    const loss = await out.sum();
    await loss.backward();
    out.dispose(); loss.dispose();
  }
  const a: Tensor = await warm.forward(x);
  const b: Tensor = await cold.forward(x);
  expect(Array.from(await b.data() as Float32Array)).toEqual(Array.from(await a.data() as Float32Array));
  for (const t of [a, b, x]) t.dispose();
  warm.dispose(); cold.dispose();
}, 60_000);

test('a trained model runs under inferenceMode (TorchScript runs it without grad), and trains again after', async () => {
  const model = await torch.jit.load(mlpFile);
  const optimizer = new torch.optim.SGD(model.parameters(), { lr: 0.1 });
  const fresh = (n: number) => ({ *[Symbol.iterator]() { for (let i = 0; i < n; i++) yield batch(); } }); // fit disposes its batches
  const h = await torch.train.fit(model, { train: fresh(2), epochs: 2, optimizer, progress: false, val: fresh(1) });
  expect(h.epochs[1].valLoss).toBeGreaterThan(0);
  const probs = await torch.inferenceMode(async () => (await model.eval().forward(torch.randn([2, 4]))).softmax(1));
  expect(probs.shape).toEqual([2, 3]);
  expect((await torch.train.fit(model.train(), { train: [batch()], epochs: 1, optimizer, progress: false })).epochs).toHaveLength(1);
  probs.dispose(); optimizer.dispose(); model.dispose();
}, 60_000);

/** `steps` optimizer steps on one batch, as the reference scripts loop: forward, cross-entropy, zero_grad, backward, step. */
async function crossEntropySteps(model: torch.jit.ScriptModule, opt: torch.optim.AdamW, x: Tensor, y: Tensor, steps: number): Promise<void> {
  for (let s = 0; s < steps; s++) {
    const logits: Tensor = await model.forward(x);
    const loss = await torch.nn.functional.crossEntropy(logits, y);
    await opt.zeroGrad();
    await loss.backward();
    await opt.step();
    logits.dispose(); loss.dispose();
  }
}

test('AdamW steps equal Python\'s torch.optim.AdamW of the same version bit for bit (weight decay, amsgrad)', async () => {
  const x = Array.from(floats(11, 16 * 4));
  const y = Array.from(labels(12, 16, 3), Number);
  for (const amsgrad of [false, true]) {
    const ref = await runPyJson<Record<string, number[]>>(String.raw`
import json, sys, torch
torch._C._jit_override_can_fuse_on_cpu(False)  # as finetorch (Debian 13's LLVM fuser stalls here)
m = torch.jit.load(sys.argv[1])
x = torch.tensor(json.loads(sys.argv[2]), dtype=torch.float32).reshape(16, 4)
y = torch.tensor(json.loads(sys.argv[3]), dtype=torch.int64)
opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.05, amsgrad=sys.argv[4] == '1')
for _ in range(12):
    loss = torch.nn.functional.cross_entropy(m(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print(json.dumps({k: v.flatten().tolist() for k, v in m.state_dict().items()}))
`, [mlpFile, JSON.stringify(x), JSON.stringify(y), amsgrad ? '1' : '0']);
    const model = await torch.jit.load(mlpFile);
    const opt = new torch.optim.AdamW(model.parameters(), { lr: 0.01, weightDecay: 0.05, amsgrad });
    const xt = torch.tensor(Float32Array.from(x), { shape: [16, 4] });
    const yt = torch.tensor(BigInt64Array.from(y.map(BigInt)));
    await crossEntropySteps(model, opt, xt, yt, 12);
    for (const [n, p] of model.namedParameters()) {
      // float32 values through JSON are exact doubles, so equality is bit equality
      expect({ n, v: Array.from(await p.data() as Float32Array) }).toEqual({ n, v: ref[n] });
    }
    opt.dispose(); xt.dispose(); yt.dispose(); model.dispose();
  }
}, 120_000);

test('AdamW\'s one-pass update (backends.cpu.fusedAdamW) equals Python\'s op sequence bit for bit on parameters past the vector width and the thread split, both lerp forms, with and without weight decay', async () => {
  const flags = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
  // Where ATen's kernels fuse multiply-adds (AVX2 with FMA) the one pass is what runs; elsewhere the op sequence.
  expect(torch.backends.cpu.fusedAdamW).toBe(process.arch === 'x64' && flags.includes('avx2') && flags.includes('fma'));
  const file = path.join(dir, 'wide.pt');
  // 300 x 211 + 211 and 211 x 7 + 7: the first weight (63,300) is past ATen's grain (32,768), so two
  // threads split it; no size is a multiple of 8, so every tensor has a scalar tail.
  const xFile = path.join(dir, 'wide-x.f32');
  const yFile = path.join(dir, 'wide-y.i64');
  await runPy(String.raw`
import sys, torch
torch.manual_seed(1)
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(300, 211), torch.nn.ReLU(), torch.nn.Linear(211, 7))).save(sys.argv[1])
torch.randn(32, 300).numpy().tofile(sys.argv[2])
torch.randint(0, 7, (32,)).numpy().tofile(sys.argv[3])
`, [file, xFile, yFile]);
  const xBytes = fs.readFileSync(xFile);
  const yBytes = fs.readFileSync(yFile);
  const before = torch.getNumThreads();
  await torch.setNumThreads(2);
  try {
    for (const [betas, weightDecay] of [[[0.9, 0.999], 0.05], [[0.3, 0.99], 0]] as const) {
      const ref = await runPyJson<Record<string, number[]>>(String.raw`
import json, sys, torch
torch._C._jit_override_can_fuse_on_cpu(False)  # as finetorch (Debian 13's LLVM fuser stalls here)
torch.set_num_threads(2)
m = torch.jit.load(sys.argv[1])
x = torch.from_file(sys.argv[2], size=32 * 300, dtype=torch.float32).reshape(32, 300)
y = torch.from_file(sys.argv[3], size=32, dtype=torch.int64)
b = json.loads(sys.argv[4])
opt = torch.optim.AdamW(m.parameters(), lr=0.003, betas=(b[0], b[1]), weight_decay=float(sys.argv[5]))
for _ in range(6):
    loss = torch.nn.functional.cross_entropy(m(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print(json.dumps({k: v.flatten().tolist() for k, v in m.state_dict().items()}))
`, [file, xFile, yFile, JSON.stringify(betas), String(weightDecay)]);
      const model = await torch.jit.load(file);
      const opt = new torch.optim.AdamW(model.parameters(), { lr: 0.003, betas: [...betas], weightDecay });
      const xt = torch.tensor(new Float32Array(xBytes.buffer, xBytes.byteOffset, 32 * 300), { shape: [32, 300] });
      const yt = torch.tensor(new BigInt64Array(yBytes.buffer.slice(yBytes.byteOffset, yBytes.byteOffset + 32 * 8)));
      await crossEntropySteps(model, opt, xt, yt, 6);
      for (const [n, p] of model.namedParameters()) {
        const got = await p.data() as Float32Array;
        const differ = ref[n].filter((v, i) => v !== got[i]).length;
        expect({ betas, n, differ }).toEqual({ betas, n, differ: 0 });
      }
      opt.dispose(); xt.dispose(); yt.dispose(); model.dispose();
    }
  } finally {
    await torch.setNumThreads(before);
  }
  // FINETORCH_FUSED_ADAMW=0 keeps the op sequence (read once, at the first update).
  const script = `process.stdout.write(String(require(${JSON.stringify(path.join(__dirname, '..', 'dist'))}).backends.cpu.fusedAdamW))`;
  const off = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, FINETORCH_FUSED_ADAMW: '0' } }).toString();
  expect(off).toBe('false');
}, 180_000);

describe('checkpoints across libtorch versions', () => {
  // Written by test/fixtures/xver/make.js under each line: a checkpoint after 2 of 3 epochs.
  const root = path.join(__dirname, 'fixtures', 'xver');
  const versions = fs.readdirSync(root).filter((d) => /^\d+\.\d+$/.test(d));
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { xverData } = require('./fixtures/xver/data') as { xverData: (t: typeof torch) => Iterable<{ input: Tensor; target: Tensor }> };

  test('fixtures of both supported lines are here', () => {
    expect(versions).toEqual(expect.arrayContaining(['1.13', '2.6']));
  });

  test.each(versions)('a checkpoint written under libtorch %s resumes here and ends where an uninterrupted run ends', async (v) => {
    const work = path.join(tmpDir('xver'), v);
    fs.cpSync(path.join(root, v), work, { recursive: true }); // the fixture itself is never written
    const run = async (resume: boolean) => {
      const model = await torch.jit.load(path.join(work, 'mlp.pt'));
      const optimizer = new torch.optim.AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0.01 });
      await torch.train.fit(model, { train: xverData(torch), epochs: 3, optimizer, progress: false, ...(resume ? { resumeFrom: path.join(work, 'ckpt') } : {}) });
      const out = new Map<string, Float32Array>();
      for (const [n, p] of model.namedParameters()) out.set(n, await p.data() as Float32Array);
      optimizer.dispose(); model.dispose();
      return out;
    };
    const resumed = await run(true);
    const straight = await run(false);
    for (const [n, a] of resumed) {
      const b = straight.get(n)!;
      const diff = Math.max(...Array.from(a, (x, i) => Math.abs(x - b[i])));
      const scale = Math.max(...Array.from(b, Math.abs));
      // same line: bit for bit; the other line rounds AdamW's first moment differently (lerp_ vs
      // mul_/add_), a few ULPs per step. A lost or misassigned optimizer state moves weights ~1e-2.
      expect({ n, rel: diff / scale < (v === torch.version.libtorch.split('.').slice(0, 2).join('.') ? 1e-7 : 1e-5) }).toEqual({ n, rel: true });
    }
    fs.rmSync(path.dirname(work), { recursive: true, force: true });
  }, 120_000);
});
