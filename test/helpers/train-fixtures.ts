/**
 * Small helpers for the training tests: run real PyTorch (/usr/bin/python3 or $FINETORCH_PYTHON,
 * never `python3` on PATH), scratch folders, raw float32/int64 files, deterministic data, and a
 * relative-difference metric.
 *
 * Kept separate from helpers/python.ts so the training tests do not depend on another file's
 * fixtures; nothing binary is committed, every model is made at test time.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as v8 from 'v8';
import * as vm from 'vm';
import { pythonPath } from './python';

/** The Python that has torch and torchvision (the rule of helpers/python.ts). */
export const py = pythonPath;

/**
 * Runs `code` (written to a .py file: TorchScript needs the source of scripted classes) with
 * `args` in sys.argv[1:], without blocking the event loop. Resolves to stdout; rejects with
 * Python's stderr.
 */
export function runPy(code: string, args: string[] = [], cwd?: string): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-trainpy-'));
  const file = path.join(dir, 'script.py');
  fs.writeFileSync(file, code);
  return new Promise<string>((resolve, reject) => {
    execFile(py(), [file, ...args], { cwd, encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      fs.rmSync(dir, { recursive: true, force: true });
      if (err) reject(new Error(`${py()} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** The last line of Python's stdout, parsed as JSON (scripts print their result last). */
export async function runPyJson<T = unknown>(code: string, args: string[] = []): Promise<T> {
  const out = (await runPy(code, args)).trim().split('\n');
  return JSON.parse(out[out.length - 1]) as T;
}

/** A fresh scratch folder; remove with `fs.rmSync(dir, { recursive: true, force: true })`. */
export function tmpDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `finetorch-${tag}-`));
}

/** Raw little-endian float32 (copied so the array owns exactly the file's bytes). */
export function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** Raw little-endian int64. */
export function readI64(file: string): BigInt64Array {
  const b = fs.readFileSync(file);
  return new BigInt64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** mulberry32: a tiny seeded PRNG, so JS-made data is the same in every process. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` floats in [-1, 1) from `seed`. */
export function floats(seed: number, n: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * 2 - 1);
}

/** `n` class indices in [0, classes) from `seed`. */
export function labels(seed: number, n: number, classes: number): BigInt64Array {
  const r = rng(seed);
  return BigInt64Array.from({ length: n }, () => BigInt(Math.floor(r() * classes)));
}

/** max |a - b| / (max |b| + 1e-12): the relative difference of a whole tensor against reference `b`. */
export function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relDiff: lengths differ (${a.length} vs ${b.length})`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / (den + 1e-12);
}

/** |a - b| <= tol, or relatively so: |a - b| <= tol * |b|. */
export function close(a: number, b: number, tol: number): boolean {
  return Math.abs(a - b) <= tol || Math.abs(a - b) <= tol * Math.abs(b);
}

/** V8's `gc()` for tests that count live handles (exposes it when node was not run with --expose-gc). */
export function getGc(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}
