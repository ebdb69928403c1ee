/**
 * `finetorch serve` as a user runs it: `node dist/cli/main.js serve ...` in a child process on a
 * free loopback port (--port 0, the chosen port read from stdout), real HTTP requests with a PNG
 * made by sharp, then SIGTERM. Every wait is bounded: the server must say where it listens within
 * a minute, and exit within one after SIGTERM.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import * as torch from '../lib';
import { CLI, ensureDist, runCli, show, smallModelScript } from './helpers/dist';
import { colourFolders } from './helpers/images';
import { expectedTop } from './helpers/predict';
import { runPythonAsync } from './helpers/python';

jest.setTimeout(240_000);

const CLASSES = ['ant', 'bee', 'cat'];
let dir: string;

const MAKE_MODEL = smallModelScript(3);

interface Server {
  child: ChildProcess;
  url: string;
  stdout: () => string;
  stderr: () => string;
}

/** Starts `finetorch serve ...args --port 0` and resolves with its URL once it prints it. */
function startServe(args: string[]): Promise<Server> {
  const env = { ...process.env };
  delete env.FINETORCH_DEBUG;
  const child = spawn(process.execPath, [CLI, 'serve', ...args, '--port', '0'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`serve did not print its URL within 60 s:\n${out}\n${err}`)); }, 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /on (http:\/\/127\.0\.0\.1:\d+) /.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1], stdout: () => out, stderr: () => err });
      }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`serve exited (${code}) before listening:\n${out}\n${err}`)); });
  });
}

/** SIGTERM, then the exit code (SIGKILL and null after a minute). */
function stop(s: Server): Promise<number | null> {
  return new Promise((resolve) => {
    if (s.child.exitCode !== null) return resolve(s.child.exitCode);
    const timer = setTimeout(() => s.child.kill('SIGKILL'), 60_000);
    s.child.once('exit', (code) => { clearTimeout(timer); resolve(code); });
    s.child.kill('SIGTERM');
  });
}

async function predict(url: string, png: Buffer): Promise<{ label: string; index: number; probability: number }[]> {
  const res = await fetch(`${url}/predict`, { method: 'POST', body: png, headers: { 'content-type': 'image/png' } });
  expect(res.status).toBe(200);
  return ((await res.json()) as { top: { label: string; index: number; probability: number }[] }).top;
}

let png: Buffer;

beforeAll(async () => {
  ensureDist();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-serve-'));
  await runPythonAsync(MAKE_MODEL, dir, ['m.pt']);
  const model = await torch.jit.load(path.join(dir, 'm.pt'));
  await model.save(path.join(dir, 'meta.pt'), { metadata: torch.train.describe({ classes: CLASSES, transform: torch.transforms.imagenet({ train: false, size: 32 }) }) });
  model.dispose();
  fs.writeFileSync(path.join(dir, 'names.json'), JSON.stringify(['x', 'y', 'z']));
  fs.writeFileSync(path.join(dir, 'two.json'), JSON.stringify(['x', 'y']));
  const px = Buffer.alloc(48 * 40 * 3);
  for (let i = 0; i < px.length; i++) px[i] = (i * 37 + (i % 3) * 80) % 256;
  png = await sharp(px, { raw: { width: 48, height: 40, channels: 3 } }).png().toBuffer();
}, 300_000);

afterAll(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

test('serve answers POST /predict with the top-k named by the model file\'s classes through its recorded transform, GET /status with the stats, and exits 0 on SIGTERM', async () => {
  const s = await startServe(['meta.pt', '--topk', '2', '--max-batch', '4', '--max-delay-ms', '1', '--threads', '1']);
  let code: number | null;
  try {
    const want = await expectedTop(path.join(dir, 'm.pt'), png, torch.transforms.imagenet({ train: false, size: 32 }), CLASSES, 2);
    const top = await predict(s.url, png);
    expect(top.map((t) => t.label)).toEqual(want.labels);
    top.forEach((t, j) => expect(t.probability).toBeCloseTo(want.probabilities[j], 5));
    const broken = await fetch(`${s.url}/predict`, { method: 'POST', body: Buffer.from('not an image') });
    expect(broken.status).toBe(400);
    const status = (await (await fetch(`${s.url}/status`)).json()) as { predictor: torch.serving.PredictorStats; uptimeS: number };
    expect(status.predictor).toMatchObject({ requests: 1, errors: 0, batches: 1 });
    expect(status.uptimeS).toBeGreaterThan(0);
  } finally {
    code = await stop(s);
  }
  expect(code).toBe(0);
  expect(s.stderr()).toBe('');
});

test('--labels and --size override the record with a warning line each, and the answers follow them', async () => {
  const s = await startServe(['meta.pt', '--labels', 'names.json', '--size', '40', '--topk', '3']);
  try {
    const want = await expectedTop(path.join(dir, 'm.pt'), png, torch.transforms.imagenet({ train: false, size: 40 }), ['x', 'y', 'z'], 3);
    const top = await predict(s.url, png);
    expect(top.map((t) => t.label)).toEqual(want.labels);
    top.forEach((t, j) => expect(t.probability).toBeCloseTo(want.probabilities[j], 5));
    const warnings = s.stderr().trimEnd().split('\n');
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/^finetorch: warning: the transform given .* overrides the one the model file records/);
    expect(warnings[1]).toMatch(/^finetorch: warning: the labels given \(3: x, y, z\) override the class names the model file records \(3: ant, bee, cat\)/);
  } finally {
    await stop(s);
  }
});

test('bad options are one-line errors before the model loads; a port in use is one too', async () => {
  const s = await startServe(['m.pt']);
  try {
    const port = new URL(s.url).port;
    const runs = await Promise.all([
      runCli(['serve', 'meta.pt', '--port', '70000'], dir),
      runCli(['serve', 'meta.pt', '--max-batch', '0'], dir),
      runCli(['serve', 'meta.pt', '--max-delay-ms', 'soon'], dir),
      runCli(['serve', 'meta.pt', '--labels', 'nowhere.json'], dir),
      runCli(['serve', 'nowhere.pt'], dir),
      runCli(['serve', 'meta.pt', '--labels', 'two.json'], dir),
      runCli(['serve', 'meta.pt', '--training-nice', '25'], dir),
      runCli(['serve', 'meta.pt', '--port', port], dir),
    ]);
    const want = [
      /--port must be at most 65535: got '70000'/,
      /--max-batch must be at least 1: got '0'/,
      /--max-delay-ms must be a number: got 'soon'/,
      /--labels 'nowhere\.json' does not exist/,
      /model 'nowhere\.pt' does not exist/,
      /--labels 'two\.json' names 2 classes but the model predicts 3/,
      /--training-nice must be at most 19: got '25'/,
      new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE`),
    ];
    runs.forEach((r, i) => {
      if (r.code !== 1) throw new Error(`expected exit code 1:\n${show(r)}`);
      expect(r.stdout).toBe('');
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^finetorch: \S/);
      expect(lines[0]).toMatch(want[i]);
    });
  } finally {
    await stop(s);
  }
});

test('POST /finetune trains a copy in the background, swaps it in when it validates better and saves it to --out; the served file is never written', async () => {
  const photos = path.join(dir, 'photos');
  await colourFolders(photos, CLASSES);
  const served = fs.readFileSync(path.join(dir, 'meta.pt'));
  const tuned = path.join(dir, 'tuned.pt');
  const s = await startServe(['meta.pt', '--out', tuned, '--topk', '2']);
  try {
    const post = (body: unknown) => fetch(`${s.url}/finetune`, { method: 'POST', body: JSON.stringify(body) });
    expect((await post({ dir: path.join(dir, 'nowhere') })).status).toBe(400);
    const badEpochs = await post({ dir: photos, epochs: 0 });
    expect(badEpochs.status).toBe(400);
    expect(((await badEpochs.json()) as { error: string }).error).toMatch(/epochs must be an integer in \[1, 1000\], got 0/);
    expect((await post({ dir: photos, epochs: 8, lr: 0.01 })).status).toBe(202);
    expect((await post({ dir: photos })).status).toBe(409);
    expect((await predict(s.url, png)).length).toBeGreaterThan(0);
    type Status = { finetune: { state: string; epoch: number; before: number; after: number; swapped: boolean; error?: string } };
    let status: Status;
    const deadline = Date.now() + 180_000;
    do {
      await new Promise((r) => setTimeout(r, 200));
      status = (await (await fetch(`${s.url}/status`)).json()) as Status;
    } while (status.finetune.state === 'training' && Date.now() < deadline);
    expect(status.finetune).toMatchObject({ state: 'done', epoch: 8 });
    // eight epochs on three flat colours validate better than the untrained weights
    expect(status.finetune.after).toBeGreaterThan(status.finetune.before);
    expect(status.finetune.swapped).toBe(true);
    for (let i = 0; i < 100 && !s.stdout().includes('fine-tuned weights saved'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(s.stdout()).toContain(`fine-tuned weights saved to ${tuned}`);
    // the saved copy answers as the service now does, and keeps the file's classes
    const saved = await torch.jit.load(tuned);
    expect(saved.metadata?.classes).toEqual(CLASSES);
    saved.dispose();
    const want = await expectedTop(tuned, fs.readFileSync(path.join(photos, 'bee', '0.png')), torch.transforms.imagenet({ train: false, size: 32 }), CLASSES, 2);
    const top = await predict(s.url, fs.readFileSync(path.join(photos, 'bee', '0.png')));
    expect(top.map((t) => t.label)).toEqual(want.labels);
    top.forEach((t, j) => expect(t.probability).toBeCloseTo(want.probabilities[j], 4));
  } finally {
    await stop(s);
  }
  expect(fs.readFileSync(path.join(dir, 'meta.pt')).equals(served)).toBe(true);
  const same = await runCli(['serve', 'meta.pt', '--out', 'meta.pt'], dir);
  expect(same.code).toBe(1);
  expect(same.stderr).toMatch(/--out 'meta\.pt' is the served model file: fine-tunes never overwrite it/);
});
