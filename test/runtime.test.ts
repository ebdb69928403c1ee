/**
 * Process-wide runtime settings: the intra-op thread count and training's OS priority. Priority
 * sticks to threads for the life of a process, so each check runs in a child process of its own
 * (built dist/), which reads every thread's nice value from /proc/self/task.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import { ensureDist, ROOT } from './helpers/dist';
import { runPy, tmpDir } from './helpers/train-fixtures';

jest.setTimeout(120_000);

beforeAll(() => ensureDist());

/** Runs `body` (an async function's body, with `torch` and `nices()`) in a child node; resolves with its JSON. */
function child<T>(body: string): Promise<T> {
  const script = `
    const fs = require('fs');
    const torch = require(${JSON.stringify(path.join(ROOT, 'dist'))});
    // every thread of this process: [tid, nice] (field 19 of /proc/.../stat, after the command's parentheses)
    const nices = () => fs.readdirSync('/proc/self/task').map((t) => {
      const st = fs.readFileSync('/proc/self/task/' + t + '/stat', 'utf8');
      return [Number(t), Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[16])];
    });
    (async () => { ${body} })().then((r) => console.log(JSON.stringify(r)), (e) => { console.error(e); process.exit(1); });`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as T);
    });
  });
}

describe('setTrainingPriority', () => {
  test('nices the executor and its intra-op pool (and threads the pool gains later), never the main thread or a Predictor\'s', async () => {
    const r = await child<{ before: number; after2: number; after3: number; main: number; predictorNices: number[] }>(`
      await torch.setNumThreads(2);
      await (await torch.randn([64, 64])).matmul(await torch.randn([64, 64]));
      const count = (n) => nices().filter(([, v]) => v === n).length;
      const before = count(7);
      const tidsBefore = new Set(nices().map(([tid]) => tid));
      const p = await torch.serving.Predictor.load(${JSON.stringify(path.join(ROOT, 'models', 'fmnist-resnet-init.pt'))}, { threads: 1 });
      await p.predict({ data: new Float32Array(28 * 28), shape: [1, 28, 28] });
      const predictorTids = nices().map(([tid]) => tid).filter((tid) => !tidsBefore.has(tid));
      await torch.setTrainingPriority(7);
      const after2 = count(7);
      await torch.setNumThreads(3);
      const after3 = count(7);
      const main = nices().find(([tid]) => tid === process.pid)[1];
      const predictorNices = nices().filter(([tid]) => predictorTids.includes(tid)).map(([, v]) => v);
      await p.close();
      return { before, after2, after3, main, predictorNices };
    `);
    expect(r.before).toBe(0);
    // the executor thread and the second thread of its 2-thread pool
    expect(r.after2).toBe(2);
    // setNumThreads(3) gave the pool a third thread, at the same priority (libgomp may keep the
    // old team's threads beside the new team's, so at least 3)
    expect(r.after3).toBeGreaterThanOrEqual(3);
    // the main thread and the Predictor's own thread keep the default priority
    expect(r.main).toBe(0);
    expect(r.predictorNices.length).toBeGreaterThanOrEqual(1);
    expect(r.predictorNices.every((v) => v === 0)).toBe(true);
  });

  test('a value outside -20..19 is a RangeError before anything changes', () => {
    expect(() => torch.setTrainingPriority(20)).toThrow(/setTrainingPriority\(\): nice must be .*19/);
    expect(() => torch.setTrainingPriority(1.5)).toThrow(/setTrainingPriority\(\): nice must be an integer/);
  });

  test('going back to a higher priority works with the privilege, and is a clear Error without it', async () => {
    const r = await child<{ ok: boolean; message?: string; code?: string }>(`
      await torch.setTrainingPriority(5);
      try { await torch.setTrainingPriority(0); return { ok: true }; } catch (e) { return { ok: false, message: e.message, code: e.code }; }
    `);
    if (process.getuid?.() === 0) {
      expect(r.ok).toBe(true);
    } else {
      expect(r).toMatchObject({ ok: false, code: 'FINETORCH_VALUE' });
      expect(r.message).toMatch(/cannot set the training threads' nice value to 0: .*CAP_SYS_NICE/);
    }
  });
});

describe('backends.jit.optimize', () => {
  test('is off by default, so a tanh/GELU model resumed from a checkpoint ends bit-identical to an uninterrupted run', async () => {
    expect(torch.backends.jit.optimize).toBe(false);
    const dir = tmpDir('jit-optimize');
    try {
      await runPy(`
import sys, torch
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
torch.jit.script(m).save(sys.argv[1])
`, [path.join(dir, 'm.pt')]);
      await torch.manualSeed(1);
      const xs = await Promise.all([0, 1, 2].map(() => torch.randn([8, 8])));
      const ys = await Promise.all([0, 1, 2].map(() => torch.randint(0, 3, [8])));
      const run = async (epochs: number, checkpoint?: string, resumeFrom?: string) => {
        const model = await torch.jit.load(path.join(dir, 'm.pt'));
        const optimizer = new torch.optim.AdamW(model.parameters(), { lr: 1e-2 });
        await torch.train.fit(model, {
          train: xs.map((input, i) => ({ input, target: ys[i] })), epochs, optimizer, progress: false, keepBatches: true,
          checkpoint: checkpoint ? { dir: checkpoint, everyEpoch: true } : undefined, resumeFrom,
        });
        return Promise.all(model.parameters().map(async (p) => Array.from(await p.data() as Float32Array)));
      };
      const straight = await run(3);
      await run(1, path.join(dir, 'ckpt'));
      const resumed = await run(3, undefined, path.join(dir, 'ckpt'));
      expect(resumed).toEqual(straight);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('can be turned on, and a bad value is a TypeError', () => {
    expect(() => { torch.backends.jit.optimize = 'yes' as unknown as boolean; }).toThrow(TypeError);
    torch.backends.jit.optimize = true;
    expect(torch.backends.jit.optimize).toBe(true);
    torch.backends.jit.optimize = false;
    expect(torch.backends.jit.optimize).toBe(false);
  });
});
