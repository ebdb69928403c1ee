/**
 * Stable error codes (issue 11): set in C++ where a native error is made (or in TypeScript where
 * TypeScript makes it), read as `err.code`; the same code on libtorch 1.13 and 2.x, whose
 * messages differ.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import { runPython, scratchDir } from './helpers/python';

let dir: string;
let mlpFile: string;

beforeAll(() => {
  dir = scratchDir('error-codes');
  mlpFile = path.join(dir, 'mlp.pt');
  runPython(`
import sys, torch
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3))).save(sys.argv[1])
`, undefined, [mlpFile]);
});

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<{ code?: string; message: string }> {
  try {
    if (typeof p === 'function') p(); else await p;
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error('expected an Error');
}

test('every code is listed, with what it means', () => {
  expect(Object.keys(torch.ERROR_CODES)).toEqual(expect.arrayContaining([
    'FINETORCH_OUT_OF_MEMORY', 'FINETORCH_SHAPE', 'FINETORCH_DTYPE', 'FINETORCH_BAD_MODEL_FILE', 'FINETORCH_DISPOSED',
  ]));
});

test('an allocation that cannot be made: FINETORCH_OUT_OF_MEMORY from the op that allocates, and the process lives', async () => {
  const a = torch.ones([1_000_000, 1]);
  const b = torch.ones([1, 1_000_000]);
  const before = torch.memory().bytes;
  const err = await codeOf(a.matmul(b)); // 4 TB of float32
  expect(err.code).toBe('FINETORCH_OUT_OF_MEMORY');
  expect(err.message).toMatch(/^matmul: /);
  // the failed result is not counted (GC finalizers of earlier tests' tensors may only lower the count)
  expect(torch.memory().bytes).toBeLessThanOrEqual(before);
  expect(await (await a.sum()).item()).toBe(1_000_000);
  [a, b].forEach((t) => t.dispose());
});

test('shapes that do not fit: FINETORCH_SHAPE, whether TypeScript (matmul, add) or libtorch (a layer, inside TorchScript) finds it', async () => {
  const a = torch.ones([2, 3]);
  expect((await codeOf(a.matmul(torch.ones([4, 5])))).code).toBe('FINETORCH_SHAPE');
  expect((await codeOf(a.add(torch.ones([4])))).code).toBe('FINETORCH_SHAPE');
  const model = await torch.jit.load(mlpFile);
  const err = await codeOf(model.forward(torch.ones([2, 5])));
  expect(err.code).toBe('FINETORCH_SHAPE');
  model.dispose();
  a.dispose();
});

test('a dtype a layer does not take: FINETORCH_DTYPE (libtorch 1.13 and 2.x word it differently)', async () => {
  const model = await torch.jit.load(mlpFile);
  const err = await codeOf(model.forward(torch.ones([2, 4], { dtype: 'float64' })));
  expect(err.code).toBe('FINETORCH_DTYPE');
  expect((await codeOf(torch.ones([2, 2]).matmul(torch.ones([2, 2], { dtype: 'int64' })))).code).toBe('FINETORCH_DTYPE');
  model.dispose();
});

test('an index out of range: FINETORCH_INDEX', async () => {
  const t = torch.arange(0, 3);
  const err = await codeOf(t.indexSelect(0, torch.tensor([7], { dtype: 'int64' })));
  expect(err.code).toBe('FINETORCH_INDEX');
  t.dispose();
});

test('a file that is not a TorchScript model: FINETORCH_BAD_MODEL_FILE, whichever layer refuses it', async () => {
  const text = path.join(dir, 'notes.pt');
  fs.writeFileSync(text, 'not a model\n');
  expect((await codeOf(torch.jit.load(text))).code).toBe('FINETORCH_BAD_MODEL_FILE');
  // a whole zip archive that libtorch itself refuses: torch.save of a state dict
  const stateDict = path.join(dir, 'state_dict.pt');
  runPython(`
import sys, torch
torch.save(torch.nn.Linear(2, 2).state_dict(), sys.argv[1])
`, undefined, [stateDict]);
  const err = await codeOf(torch.jit.load(stateDict));
  expect(err.code).toBe('FINETORCH_BAD_MODEL_FILE');
  expect(err.message).not.toMatch(/jit\.load: jit\.load/);
  // a truncated model file
  const cut = path.join(dir, 'cut.pt');
  const bytes = fs.readFileSync(mlpFile);
  fs.writeFileSync(cut, bytes.subarray(0, bytes.length >> 1));
  expect((await codeOf(torch.jit.load(cut))).code).toBe('FINETORCH_BAD_MODEL_FILE');
});

test('a disposed tensor, model or optimizer: FINETORCH_DISPOSED', async () => {
  const t = torch.ones([2]);
  t.dispose();
  expect((await codeOf(t.add(1))).code).toBe('FINETORCH_DISPOSED');
  const model = await torch.jit.load(mlpFile);
  const opt = new torch.optim.AdamW(model.parameters());
  opt.dispose();
  expect((await codeOf(opt.zeroGrad())).code).toBe('FINETORCH_DISPOSED');
  model.dispose();
  expect((await codeOf(model.forward(torch.ones([1, 4])))).code).toBe('FINETORCH_DISPOSED');
});
