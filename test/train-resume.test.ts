/**
 * Crash and resume: a fit run killed with SIGKILL mid-epoch and resumed from its last checkpoint
 * (resumeFrom) ends with weights bit-identical to a run that was never interrupted, on CPU.
 *
 * Each run is a child process running the compiled library (dist/, rebuilt here when older than
 * lib/). The model is a dropout-free Conv-BN-ReLU-Flatten-Linear scripted by Python; the batches
 * come from a seeded JS PRNG and are reshuffled per epoch through setEpoch; the schedule is
 * warm-up + cosine stepped per batch, so the resumed run must restore the weights, the BatchNorm
 * running statistics, AdamW's moments and step counts, the scheduler and the position in the
 * epoch exactly.
 *
 * Checkpoint files: latest.json always parses and names a complete set, and at most `keep` sets
 * remain when the process is not killed inside a save.
 */
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import { runPy, tmpDir } from './helpers/train-fixtures';

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist', 'index.js');

const EPOCHS = 3;
const PER_EPOCH = 6;
const B = 8;
const TOTAL = EPOCHS * PER_EPOCH;
const EVERY = 4;
const KEEP = 2;

function newest(dir: string): number {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : e.name.endsWith('.ts') ? fs.statSync(p).mtimeMs : 0);
  }
  return t;
}
const distStale = () => !fs.existsSync(DIST) || fs.statSync(DIST).mtimeMs < newest(path.join(ROOT, 'lib'));

/** The child: fit with the given options, printing one JSON line per event. */
const CHILD = String.raw`
const fs = require('fs');
const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const torch = require(cfg.dist);

const B = cfg.batch, N = cfg.perEpoch * B, PIX = 3 * 8 * 8;
const r = new torch.data.Rng(20240601);
const X = Float32Array.from({ length: N * PIX }, () => r.uniform(-1, 1));
const Y = BigInt64Array.from({ length: N }, () => BigInt(r.randint(0, 3)));

// A shuffling loader: a fresh, deterministic order per epoch (fit calls setEpoch).
const train = {
  epoch: 0,
  length: cfg.perEpoch,
  setEpoch(e) { this.epoch = e; },
  *[Symbol.iterator]() {
    const order = new torch.data.Rng(1000 + this.epoch).permutation(N);
    for (let b = 0; b < cfg.perEpoch; b++) {
      const x = new Float32Array(B * PIX), y = new BigInt64Array(B);
      for (let k = 0; k < B; k++) {
        const n = order[b * B + k];
        x.set(X.subarray(n * PIX, (n + 1) * PIX), k * PIX);
        y[k] = Y[n];
      }
      yield { input: torch.tensor(x, { shape: [B, 3, 8, 8] }), target: torch.tensor(y) };
    }
  },
};

const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
(async () => {
  const model = await torch.jit.load(cfg.model);
  const opt = new torch.optim.AdamW(model.parameters(), { lr: 0.01, weightDecay: 0.01 });
  const { LinearLR, CosineAnnealingLR, SequentialLR } = torch.optim.lrScheduler;
  const scheduler = new SequentialLR(opt, {
    schedulers: [new LinearLR(opt, { startFactor: 0.2, totalIters: 4 }), new CosineAnnealingLR(opt, { tMax: 16, etaMin: 1e-4 })],
    milestones: [4],
  });
  const history = await torch.train.fit(model, {
    train, epochs: cfg.epochs, optimizer: opt, scheduler, schedulerStep: 'batch', progress: false,
    loss: new torch.nn.CrossEntropyLoss({ labelSmoothing: 0.05 }), clipGradNorm: 5,
    checkpoint: cfg.checkpoint, resumeFrom: cfg.resumeFrom,
    callbacks: {
      onBatchEnd: ({ epoch, batch, globalStep }) => {
        say({ event: 'batch', epoch, batch, globalStep });
        if (globalStep === cfg.killAt) process.kill(process.pid, 'SIGKILL');
      },
      onCheckpoint: ({ globalStep }) => say({ event: 'checkpoint', globalStep }),
    },
  });
  await model.save(cfg.out);
  say({ event: 'done', lr: opt.paramGroups.map((g) => g.lr), epochs: history.epochs.length });
})().catch((e) => { console.error(e); process.exit(1); });
`;

interface Event { event: string; epoch?: number; batch?: number; globalStep?: number; lr?: number[]; epochs?: number }
interface ChildResult { code: number | null; signal: NodeJS.Signals | null; events: Event[]; stderr: string }

let dir: string;
let modelFile: string;
let childFile: string;

/** Runs the child with `cfg`; `killOn` lets the parent SIGKILL it when an event arrives. */
function child(tag: string, cfg: Record<string, unknown>, killOn?: (e: Event) => boolean): Promise<ChildResult> {
  const cfgFile = path.join(dir, `${tag}.json`);
  fs.writeFileSync(cfgFile, JSON.stringify({ dist: DIST, model: modelFile, batch: B, perEpoch: PER_EPOCH, epochs: EPOCHS, out: path.join(dir, `${tag}.pt`), ...cfg }));
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [childFile, cfgFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    const events: Event[] = [];
    let out = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const e = JSON.parse(out.slice(0, nl)) as Event;
        out = out.slice(nl + 1);
        events.push(e);
        if (killOn?.(e)) p.kill('SIGKILL');
      }
    });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.on('error', reject);
    p.on('close', (code, signal) => resolve({ code, signal, events, stderr }));
  });
}

async function state(file: string): Promise<Map<string, Float32Array | BigInt64Array>> {
  const m = await torch.jit.load(file);
  const out = new Map<string, Float32Array | BigInt64Array>();
  for (const [n, t] of [...m.namedParameters(), ...m.namedBuffers()]) out.set(n, (await t.data()) as Float32Array | BigInt64Array);
  m.dispose();
  return out;
}

/** Every parameter and buffer, compared element by element for exact equality. */
async function expectBitIdentical(file: string, reference: string): Promise<void> {
  const a = await state(file);
  const b = await state(reference);
  expect([...a.keys()]).toEqual([...b.keys()]);
  const differ = [...b.keys()].filter((k) => {
    const x = a.get(k)!;
    const y = b.get(k)!;
    return x.length !== y.length || !Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  });
  expect(differ).toEqual([]);
}

interface Latest { format: string; epoch: number; batch: number; globalStep: number; model: string; optimizer: string; rng: string }

/** latest.json parses, and the set it names is complete and loads. */
async function expectConsistent(ckpt: string): Promise<Latest> {
  const latest = JSON.parse(fs.readFileSync(path.join(ckpt, 'latest.json'), 'utf8')) as Latest;
  expect(latest.format).toBe('finetorch-checkpoint');
  for (const f of [latest.model, latest.optimizer, latest.rng]) expect(fs.statSync(path.join(ckpt, f)).size).toBeGreaterThan(0);
  const m = await torch.jit.load(path.join(ckpt, latest.model));
  m.dispose();
  return latest;
}

const sets = (ckpt: string) => fs.readdirSync(ckpt).filter((f) => /^ckpt-\d{8}\.pt$/.test(f)).sort();

let reference: ChildResult;

beforeAll(async () => {
  if (distStale()) {
    try {
      execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'pipe' });
    } catch (e) {
      // tsc emits JS even when it reports type errors; only a build that wrote nothing is fatal
      if (distStale()) throw new Error(`could not build dist/: ${(e as { stdout?: Buffer }).stdout?.toString() ?? ''}`);
    }
  }
  dir = tmpDir('train-resume');
  modelFile = path.join(dir, 'model.pt');
  childFile = path.join(dir, 'child.js');
  fs.writeFileSync(childFile, CHILD);
  await runPy(String.raw`
import sys, torch
torch.manual_seed(5)
m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                        torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 3))
torch.jit.script(m).save(sys.argv[1])
`, [modelFile]);
  reference = await child('reference', {});
  if (reference.code !== 0) throw new Error(`the uninterrupted run failed: ${reference.stderr}`);
}, 180_000);

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('fit: SIGKILL mid-epoch, then resumeFrom', () => {
  test('the uninterrupted run trains every step once', () => {
    const steps = reference.events.filter((e) => e.event === 'batch').map((e) => e.globalStep);
    expect(steps).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1));
    expect(reference.events.at(-1)).toMatchObject({ event: 'done', epochs: EPOCHS });
  });

  test('a run killed at step 10 (epoch 2, batch 4) and resumed from its step-8 checkpoint ends bit-identical to the uninterrupted run', async () => {
    const ckpt = path.join(dir, 'ckpt-a');
    const checkpoint = { dir: ckpt, everySteps: EVERY, keep: KEEP };
    const killed = await child('killed', { checkpoint, killAt: 10 });
    expect(killed.signal).toBe('SIGKILL');
    expect(killed.events.filter((e) => e.event === 'batch').at(-1)).toMatchObject({ epoch: 1, batch: 3, globalStep: 10 });
    // checkpoints at steps 4, 6 (end of epoch 1) and 8; only the newest KEEP sets remain
    expect(killed.events.filter((e) => e.event === 'checkpoint').map((e) => e.globalStep)).toEqual([4, 6, 8]);
    const latest = await expectConsistent(ckpt);
    expect(latest).toMatchObject({ epoch: 1, batch: 2, globalStep: 8 });
    expect(sets(ckpt)).toEqual(['ckpt-00000006.pt', 'ckpt-00000008.pt']);
    for (const s of sets(ckpt)) for (const ext of ['.optim', '.rng']) expect(fs.existsSync(path.join(ckpt, s.replace('.pt', ext)))).toBe(true);
    expect(fs.readdirSync(ckpt).filter((f) => f.endsWith('.tmp'))).toEqual([]);

    const resumed = await child('resumed', { checkpoint, resumeFrom: ckpt });
    if (resumed.code !== 0) throw new Error(resumed.stderr);
    const steps = resumed.events.filter((e) => e.event === 'batch');
    // it picks up in the middle of epoch 2, at its third batch
    expect(steps[0]).toMatchObject({ epoch: 1, batch: 2, globalStep: 9 });
    expect(steps.map((e) => e.globalStep)).toEqual(Array.from({ length: TOTAL - 8 }, (_, i) => i + 9));
    const done = resumed.events.at(-1)!;
    expect(done).toMatchObject({ event: 'done', epochs: EPOCHS });
    expect(done.lr).toEqual(reference.events.at(-1)!.lr);
    await expectBitIdentical(path.join(dir, 'resumed.pt'), path.join(dir, 'reference.pt'));

    // the finished run leaves KEEP sets and a latest.json at the end of training
    expect(await expectConsistent(ckpt)).toMatchObject({ epoch: EPOCHS, batch: 0, globalStep: TOTAL });
    expect(sets(ckpt)).toHaveLength(KEEP);
  }, 180_000);

  test('killed by another process at an arbitrary moment while checkpointing every step, the run resumes from a whole checkpoint and ends bit-identical', async () => {
    const ckpt = path.join(dir, 'ckpt-b');
    const checkpoint = { dir: ckpt, everySteps: 1, keep: KEEP };
    // the parent kills it as soon as it hears of the 5th checkpoint: wherever the child is by then
    const killed = await child('killed-any', { checkpoint }, (e) => e.event === 'checkpoint' && e.globalStep === 5);
    expect(killed.signal).toBe('SIGKILL');
    const latest = await expectConsistent(ckpt);
    expect(latest.globalStep).toBeGreaterThanOrEqual(5);
    expect(latest.globalStep).toBeLessThan(TOTAL);
    // a kill inside a save may leave the new set written and the oldest not yet pruned
    expect(sets(ckpt).length).toBeLessThanOrEqual(KEEP + 1);

    const resumed = await child('resumed-any', { checkpoint, resumeFrom: ckpt });
    if (resumed.code !== 0) throw new Error(resumed.stderr);
    expect(resumed.events.find((e) => e.event === 'batch')).toMatchObject({ globalStep: latest.globalStep + 1 });
    await expectBitIdentical(path.join(dir, 'resumed-any.pt'), path.join(dir, 'reference.pt'));
    expect(sets(ckpt)).toHaveLength(KEEP);
  }, 180_000);

  test('resumeFrom a folder without a checkpoint is an Error that names it', async () => {
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty);
    const r = await child('no-ckpt', { resumeFrom: empty });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`resumeFrom: '${empty}' holds no latest.json`);
  }, 60_000);
});
