/**
 * The addon is context-aware: it loads and computes inside worker_threads Workers, several at
 * once, alongside the main thread, and lets each Worker exit cleanly.
 *
 * A Worker runs plain JS, so it loads the compiled package (dist/), rebuilt here when stale.
 */
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import * as torch from '../lib';

const root = path.resolve(__dirname, '..');
const distIndex = path.join(root, 'dist', 'index.js');

/** The newest mtime among lib/**\/*.ts. */
function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

const isStale = () => !fs.existsSync(distIndex) || fs.statSync(distIndex).mtimeMs < newestSource(path.join(root, 'lib'));

beforeAll(() => {
  if (!isStale()) return;
  try {
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'pipe' });
  } catch (e) {
    // tsc still emits JS when it reports type errors; only a build that wrote nothing is fatal here
    // (type errors are for the compile step and ts-jest to report, not for this test).
    if (isStale()) {
      const out = (e as { stdout?: Buffer }).stdout?.toString() ?? '';
      throw new Error(`could not build dist/ with tsc -p tsconfig.build.json:\n${out}`);
    }
  }
});

interface WorkerRun {
  messages: unknown[];
  exitCode: number;
  error?: Error;
}

/**
 * Runs `body` (the inside of an async function, with `torch` and `post` in scope) in a new Worker
 * and resolves when the Worker exits. A failure inside posts `{ error }` and sets exit code 1.
 */
function spawn(body: string): { worker: Worker; done: Promise<WorkerRun> } {
  const code = `
    const { parentPort } = require('worker_threads');
    const torch = require(${JSON.stringify(distIndex)});
    const post = (m) => parentPort.postMessage(m);
    (async () => { ${body} })().catch((e) => {
      post({ error: String((e && e.stack) || e) });
      process.exitCode = 1;
    });
  `;
  const worker = new Worker(code, { eval: true });
  const messages: unknown[] = [];
  let error: Error | undefined;
  worker.on('message', (m) => messages.push(m));
  worker.on('error', (e) => {
    error = e;
  });
  const done = new Promise<WorkerRun>((resolve) => {
    worker.on('exit', (exitCode) => resolve({ messages, exitCode, error }));
  });
  return { worker, done };
}

const run = (body: string) => spawn(body).done;

/**
 * Runs `times` Workers one after another in a separate Node process (so that an abort during
 * Worker teardown fails the test instead of killing jest's worker) and returns how the process
 * ended and each Worker's exit code. With `terminate`, each Worker is terminated as soon as it
 * posts its first message.
 */
function isolated(body: string, times: number, terminate = false) {
  const child = `
    const { Worker } = require('worker_threads');
    const { dist, body, times, terminate } = JSON.parse(process.argv[1]);
    require(dist); // the addon is loaded on the main thread too, as in an application
    (async () => {
      const codes = [];
      for (let i = 0; i < times; i++) {
        const w = new Worker(
          'const { parentPort } = require("worker_threads");' +
          'const torch = require(' + JSON.stringify(dist) + ');' +
          'const post = (m) => parentPort.postMessage(m);' +
          '(async () => {' + body + '})();',
          { eval: true });
        const exited = new Promise((resolve) => w.on('exit', resolve));
        if (terminate) {
          await new Promise((resolve) => w.once('message', resolve));
          await w.terminate();
        }
        codes.push(await exited);
      }
      process.stdout.write(JSON.stringify(codes));
    })();
  `;
  const r = spawnSync(process.execPath, ['-e', child, JSON.stringify({ dist: distIndex, body, times, terminate })], {
    encoding: 'utf8',
    timeout: 60000,
  });
  return { status: r.status, signal: r.signal, codes: r.stdout ? (JSON.parse(r.stdout) as number[]) : null, stderr: r.stderr };
}

describe('worker_threads', () => {
  test('a Worker loads the addon, computes a matmul, posts it back and exits with code 0', async () => {
    const r = await run(`
      const a = torch.tensor([[1, 2], [3, 4]]);
      const b = torch.tensor([[5, 6], [7, 8]]);
      const c = await a.matmul(b);
      post({ shape: c.shape, dtype: c.dtype, data: Array.from(await c.data()), live: torch.memory().tensors });
    `);
    expect(r.error).toBeUndefined();
    expect(r.messages).toEqual([{ shape: [2, 2], dtype: 'float32', data: [19, 22, 43, 50], live: 3 }]);
    expect(r.exitCode).toBe(0);
  });

  test('two Workers at once, and the main thread, compute independently and correctly', async () => {
    const mainBefore = torch.memory().tensors;
    // Each Worker: 20 chained 256x256 matmuls of a matrix of k's by the identity, so the result
    // stays k everywhere. Each reports its own live-tensor count.
    const body = (k: number) => `
      const n = 256;
      let x = torch.full([n, n], ${k});
      const id = torch.tensor(Float32Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0)), { shape: [n, n] });
      const before = torch.memory().tensors;
      for (let i = 0; i < 20; i++) {
        const y = await x.matmul(id);
        x.dispose();
        x = y;
      }
      const sum = await (await x.sum()).item();
      post({ k: ${k}, sum, liveBefore: before, liveAfter: torch.memory().tensors });
    `;
    const w1 = run(body(2));
    const w2 = run(body(3));
    // the main thread keeps working meanwhile
    const m = await torch.tensor([[1, 2], [3, 4]]).matmul(torch.tensor([[1, 0], [0, 1]]));
    expect(await m.tolist()).toEqual([[1, 2], [3, 4]]);
    const [r1, r2] = await Promise.all([w1, w2]);

    for (const [r, k] of [[r1, 2], [r2, 3]] as const) {
      expect(r.error).toBeUndefined();
      expect(r.exitCode).toBe(0);
      expect(r.messages).toHaveLength(1);
      const msg = r.messages[0] as { k: number; sum: number; liveBefore: number; liveAfter: number };
      expect(msg.k).toBe(k);
      expect(msg.sum).toBe(k * 256 * 256);
      // per-Worker accounting: x and id, then x, id and the sum (the other Worker's and the
      // main thread's tensors are not counted here)
      expect(msg.liveBefore).toBe(2);
      expect(msg.liveAfter).toBe(3);
    }
    // the Workers' tensors never showed up in the main thread's count
    expect(torch.memory().tensors).toBe(mainBefore + 3);
  });

  test('a Worker exits with code 0 when it leaves tensors undisposed and work still queued', async () => {
    const r = await run(`
      const x = torch.randn([256, 256]);
      for (let i = 0; i < 10; i++) x.matmul(x); // never awaited, never disposed
      torch.ones([1000]);
      post('issued');
    `);
    expect(r.error).toBeUndefined();
    expect(r.messages).toEqual(['issued']);
    expect(r.exitCode).toBe(0);
  });

  test('Workers started one after another each get a fresh working addon instance', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await run(`
        await torch.manualSeed(1);
        const v = Array.from(await torch.randn([3]).data());
        post({ live: torch.memory().tensors, v });
      `);
      expect(r.exitCode).toBe(0);
      const msg = r.messages[0] as { live: number; v: number[] };
      expect(msg.live).toBe(1);
      expect(msg.v[0]).toBeCloseTo(0.6614, 4);
      expect(msg.v[1]).toBeCloseTo(0.2669, 4);
      expect(msg.v[2]).toBeCloseTo(0.0617, 4);
    }
  });

  test('an error inside a Worker is an ordinary rejected Error there, not a crash', async () => {
    const r = await run(`
      try {
        await torch.zeros([2, 3]).matmul(torch.zeros([2, 3]));
        post('no error');
      } catch (e) {
        post(e.message);
      }
      try {
        torch.tensor([1], { device: 'gpu' });
      } catch (e) {
        post(e.message);
      }
    `);
    expect(r.messages).toEqual([
      'matmul: shapes [2,3] and [2,3] cannot be multiplied (3 columns vs 2 rows)',
      'tensor(): unknown device "gpu"; expected \'cpu\', \'cuda\' or \'cuda:N\'',
    ]);
    expect(r.exitCode).toBe(0);
  });
});

describe('Worker teardown with work in flight (each in its own process)', () => {
  test('process.exit(0) in a Worker right after queueing matmuls exits with code 0', () => {
    const r = isolated(`
      const x = torch.randn([512, 512]);
      Array.from({ length: 8 }, () => x.matmul(x));
      process.exit(0);
    `, 5);
    expect(r.stderr).not.toMatch(/terminate called|Error|Abort/);
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(r.codes).toEqual([0, 0, 0, 0, 0]);
  });

  test('terminate() during a long matmul ends the Worker (code 1) and the process carries on', () => {
    const r = isolated(`
      const x = torch.randn([1024, 1024]);
      const p = x.matmul(x);
      post('started');
      await p;
    `, 2, true);
    expect(r.stderr).not.toMatch(/terminate called|Error|Abort/);
    expect(r.status).toBe(0);
    expect(r.codes).toEqual([1, 1]); // Node's exit code for a terminated Worker
  });

  // A Worker torn down while completions are queued must not abort the process: Executor::CallJs
  // swallows what settling a promise throws once the environment can no longer run JS.
  test('process.exit(0) in a Worker while completions are pending does not abort the process', () => {
    const r = isolated(`
      const x = torch.tensor([1]);
      const pending = [];
      for (let i = 0; i < 5000; i++) pending.push(x.add(i));
      setImmediate(() => process.exit(0));
    `, 5);
    expect(r.stderr).not.toMatch(/terminate called/);
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(r.codes).toEqual([0, 0, 0, 0, 0]);
  });

  // Teardown runs node-addon-api's callbacks while napi_throw can no longer throw. Built without
  // NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS, a C++ exception then left a V8 callback and the next
  // GC died (SIGSEGV in Relocatable::Iterate) in about 4 of 10 runs of 10 Workers; 30 Workers make
  // a regression show in nearly every run.
  test('terminate() while many small ops are completing does not abort the process', () => {
    const r = isolated(`
      const x = torch.tensor([1]);
      let first = true;
      for (;;) {
        const batch = [];
        for (let i = 0; i < 2000; i++) batch.push(x.add(i));
        if (first) post('busy');
        first = false;
        await Promise.all(batch);
      }
    `, 30, true);
    expect(r.stderr).not.toMatch(/terminate called/);
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(r.codes).toEqual(Array(30).fill(1));
  });
});
