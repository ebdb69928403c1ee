/**
 * Real PyTorch for the tests: Debian's python3-torch / python3-torchvision through /usr/bin/python3
 * (or $FINETORCH_PYTHON). `python3` on PATH may have no torch, so it is never used.
 *
 * Fixtures are exported at test time (no binary fixtures are committed) and cached per jest
 * worker: jest gives every test file a fresh module registry, so the cache is a folder named after
 * the worker's pid, reused by the next test file in the same worker; folders of workers that have
 * exited are swept away when a new one is made.
 */
import { execFile, execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** The Python that has torch and torchvision. */
export function pythonPath(): string {
  return process.env.FINETORCH_PYTHON ?? '/usr/bin/python3';
}

function pythonError(code: string, err: unknown, stderr: string): Error {
  const e = err as { status?: number | null; signal?: string | null; code?: number | string };
  const status = e.signal ? `signal ${e.signal}` : `exit code ${e.status ?? e.code}`;
  const first = code.trim().split('\n')[0].slice(0, 80);
  return new Error(`${pythonPath()} failed (${status}) running '${first}...':\n${stderr.trim() || String((err as Error).message)}`);
}

/**
 * The environment for Python: a fixed PYTHONHASHSEED (unless one is set), because the TorchScript
 * source that torch.jit.save writes lists a module's constants in set order, which string hash
 * randomisation changes from run to run; with it fixed, the same export gives the same bytes.
 */
function pythonEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PYTHONHASHSEED: process.env.PYTHONHASHSEED ?? '0' };
}

/**
 * Writes `code` to a temporary .py file: TorchScript reads the source of the classes it scripts
 * (inspect.getsource), which fails for code passed with `python -c`.
 */
function withScript<T>(code: string, fn: (file: string) => T): T {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-py-'));
  const file = path.join(dir, 'script.py');
  fs.writeFileSync(file, code);
  let async = false;
  try {
    const out = fn(file);
    if (out instanceof Promise) {
      async = true;
      return out.finally(() => fs.rmSync(dir, { recursive: true, force: true })) as T;
    }
    return out;
  } finally {
    if (!async) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Runs `code` with the torch-enabled Python (extra `args` land in `sys.argv[1:]`) and returns its
 * stdout. Throws an Error carrying Python's stderr (the traceback) when it fails.
 */
export function runPython(code: string, cwd?: string, args: string[] = []): string {
  return withScript(code, (file) => {
    try {
      return execFileSync(pythonPath(), [file, ...args], {
        cwd, env: pythonEnv(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20,
      });
    } catch (err) {
      const stderr = (err as { stderr?: string | Buffer }).stderr;
      throw pythonError(code, err, stderr === undefined ? '' : String(stderr));
    }
  });
}

/** `runPython`, without blocking the event loop. */
export function runPythonAsync(code: string, cwd?: string, args: string[] = []): Promise<string> {
  return withScript(code, (file) => new Promise<string>((resolve, reject) => {
    execFile(pythonPath(), [file, ...args], { cwd, env: pythonEnv(), encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(pythonError(code, err, stderr));
      else resolve(stdout);
    });
  }));
}

/**
 * Reads a file of raw little-endian float32 values. `fs.readFileSync` can hand back a Buffer that
 * is a view into a larger pooled ArrayBuffer, so the copy is taken over exactly its bytes.
 */
export function readFloat32(file: string): Float32Array {
  const buf = fs.readFileSync(file);
  if (buf.byteLength % 4 !== 0) throw new Error(`${file}: ${buf.byteLength} bytes is not a whole number of float32 values`);
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

/** Writes raw little-endian float32 values (what Python's `numpy.fromfile(f, '<f4')` reads). */
export function writeFloat32(file: string, data: Float32Array): void {
  fs.writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}

/** The files `makeFixtures` writes, as absolute paths, plus the shapes needed to use them. */
export interface Fixtures {
  dir: string;
  /** torch.jit.script(torchvision resnet18(weights=None)) after torch.manual_seed(0): 1000-class `fc`. */
  resnet18: string;
  /** A fixed input for resnet18, raw float32, shape `resnetInputShape`. */
  resnetInput: string;
  resnetInputShape: number[];
  /** Python's eval-mode output of resnet18 on `resnetInput`, raw float32, shape `resnetOutputShape`. */
  resnetOutput: string;
  resnetOutputShape: number[];
  /** torch.jit.trace of Sequential(Conv2d(3,4,3), BatchNorm2d(4), ReLU, Flatten, Linear(144, 2)) on [1,3,8,8]. */
  tracedBn: string;
  tracedBnInputShape: number[];
  /** Scripted: forward(inputs: Dict[str, Tensor]) -> Tuple[Tensor, Tensor] = (a + b, a * scale), scale = 2.0. */
  dictTuple: string;
  /** torch.jit.script(Sequential(Linear(4, 8), ReLU, Linear(8, 2))): inputs [N, 4]. */
  mlp: string;
  /** A fixed MLP input [3, 4] and Python's output [3, 2], raw float32. */
  mlpInput: string;
  mlpOutput: string;
  /** A zip made by Python's zipfile that holds a text file, not a model. */
  plainZip: string;
  /** The torch version Python reported. */
  torchVersion: string;
}

const EXPORT = String.raw`
import json, os, sys, zipfile
from typing import Dict, Tuple
import torch, torchvision
d = sys.argv[1]
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

# resnet18, scripted, default 1000-class head; a fixed input and the eval-mode output.
torch.manual_seed(0)
resnet = torchvision.models.resnet18(weights=None).eval()
scripted = torch.jit.script(resnet)
scripted.save(os.path.join(d, 'resnet18.pt'))
x = torch.randn(2, 3, 64, 64)
x.numpy().astype('<f4').tofile(os.path.join(d, 'resnet_x.f32'))
with torch.no_grad():
    y = torch.jit.load(os.path.join(d, 'resnet18.pt')).eval()(x)
y.numpy().astype('<f4').tofile(os.path.join(d, 'resnet_y.f32'))

# traced with BatchNorm (its train/eval behaviour is baked in).
torch.manual_seed(1)
seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                          torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)).eval()
torch.jit.trace(seq, torch.randn(1, 3, 8, 8)).save(os.path.join(d, 'traced_bn.pt'))

# dict in, tuple out.
class DictTuple(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))
    def forward(self, inputs: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        return inputs['a'] + inputs['b'], inputs['a'] * self.scale
torch.jit.script(DictTuple()).save(os.path.join(d, 'dict_tuple.pt'))

# a tiny MLP for fast tests.
torch.manual_seed(2)
mlp = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)))
mlp.save(os.path.join(d, 'mlp.pt'))
mx = torch.randn(3, 4)
mx.numpy().astype('<f4').tofile(os.path.join(d, 'mlp_x.f32'))
with torch.no_grad():
    mlp(mx).numpy().astype('<f4').tofile(os.path.join(d, 'mlp_y.f32'))

with zipfile.ZipFile(os.path.join(d, 'plain.zip'), 'w', zipfile.ZIP_STORED) as z:
    z.writestr('notes.txt', 'not a model\n' * 20)

json.dump({'torch': torch.__version__, 'resnet_x': list(x.shape), 'resnet_y': list(y.shape)},
          open(os.path.join(d, 'meta.json'), 'w'))
`;

function describeFixtures(dir: string): Fixtures {
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8')) as { torch: string; resnet_x: number[]; resnet_y: number[] };
  const at = (f: string) => path.join(dir, f);
  return {
    dir,
    resnet18: at('resnet18.pt'), resnetInput: at('resnet_x.f32'), resnetInputShape: meta.resnet_x,
    resnetOutput: at('resnet_y.f32'), resnetOutputShape: meta.resnet_y,
    tracedBn: at('traced_bn.pt'), tracedBnInputShape: [1, 3, 8, 8],
    dictTuple: at('dict_tuple.pt'),
    mlp: at('mlp.pt'), mlpInput: at('mlp_x.f32'), mlpOutput: at('mlp_y.f32'),
    plainZip: at('plain.zip'),
    torchVersion: meta.torch,
  };
}

/** Exports every fixture into `dir` (which must exist) with real PyTorch. Takes a few seconds (resnet18). */
export async function makeFixtures(dir: string): Promise<Fixtures> {
  await runPythonAsync(EXPORT, dir, [dir]);
  return describeFixtures(dir);
}

const PREFIX = 'finetorch-fixtures-';
const DONE = '.complete';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes fixture folders left by jest workers that have exited. */
function sweepStale(): void {
  for (const name of fs.readdirSync(os.tmpdir())) {
    const m = new RegExp(`^${PREFIX}(\\d+)$`).exec(name);
    if (m && Number(m[1]) !== process.pid && !alive(Number(m[1]))) {
      fs.rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
    }
  }
}

let cached: Promise<Fixtures> | undefined;

/**
 * The fixtures of this jest worker, exported on first use. Test files must treat the files as
 * read-only (copy before damaging or overwriting).
 */
export function fixtures(): Promise<Fixtures> {
  cached ??= (async () => {
    const dir = path.join(os.tmpdir(), `${PREFIX}${process.pid}`);
    if (fs.existsSync(path.join(dir, DONE))) return describeFixtures(dir);
    sweepStale();
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    const fx = await makeFixtures(dir);
    fs.writeFileSync(path.join(dir, DONE), '');
    return fx;
  })();
  cached.catch(() => { cached = undefined; });
  return cached;
}

/** A fresh scratch folder for one test file; remove it with `fs.rmSync(dir, { recursive: true })`. */
export function scratchDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `finetorch-${tag}-`));
}
