/**
 * torch.jit with bad input: every mistake is a JS Error (or TypeError) whose message names the
 * problem, and the process carries on (the last test loads and runs a model afterwards).
 */
import * as fs from 'fs';
import * as path from 'path';
import { types } from 'util';
import * as torch from '../lib';
import { fixtures, readFloat32, runPython, scratchDir, type Fixtures } from './helpers/python';

let fx: Fixtures;
let tmp: string;
let resnet: torch.jit.ScriptModule;
let mlp: torch.jit.ScriptModule;

beforeAll(async () => {
  fx = await fixtures();
  tmp = scratchDir('jit-errors');
  resnet = await torch.jit.load(fx.resnet18);
  resnet.eval();
  mlp = await torch.jit.load(fx.mlp);
});

afterAll(() => {
  resnet?.dispose();
  mlp?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Deterministic bytes (an LCG), so failures reproduce. */
function noise(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    out[i] = seed >>> 24;
  }
  return out;
}

/** Awaits `p` and returns what it rejected with; fails the test when it resolves. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  let value: unknown;
  try {
    value = await p;
  } catch (err) {
    // Errors made by the addon come from Node's main realm, not jest's sandbox, so \`instanceof
    // Error\` (the sandbox's Error) cannot tell; isNativeError works across realms.
    expect(types.isNativeError(err)).toBe(true);
    return err as Error;
  }
  throw new Error(`expected a rejection, got ${String(value)}`);
}

function write(name: string, data: Buffer | string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, data);
  return file;
}

describe('jit.load rejects what is not a TorchScript model', () => {
  test('a missing file', async () => {
    const file = path.join(tmp, 'nope.pt');
    const err = await rejection(torch.jit.load(file));
    expect(err.message).toBe(`jit.load: no such file '${file}'`);
  });

  test('a directory', async () => {
    const err = await rejection(torch.jit.load(tmp));
    expect(err.message).toBe(`jit.load: '${tmp}' is a directory, not a TorchScript file`);
  });

  test('an empty file, and an empty Buffer', async () => {
    const file = write('empty.pt', '');
    expect((await rejection(torch.jit.load(file))).message).toBe(`${file}: the file is empty`);
    expect((await rejection(torch.jit.load(Buffer.alloc(0)))).message).toBe('buffer: the file is empty');
  });

  test('a truncated archive (cut in half, and missing only its last bytes)', async () => {
    const bytes = fs.readFileSync(fx.mlp);
    const half = write('half.pt', bytes.subarray(0, bytes.length >> 1));
    expect((await rejection(torch.jit.load(half))).message)
      .toBe(`${half}: truncated TorchScript archive (end of central directory record missing)`);
    const short = write('short.pt', bytes.subarray(0, bytes.length - 10));
    expect((await rejection(torch.jit.load(short))).message).toMatch(/truncated TorchScript archive/);
  });

  test('random bytes', async () => {
    const file = write('noise.pt', noise(4096, 7));
    expect((await rejection(torch.jit.load(file))).message).toBe(`${file}: not a TorchScript file (not a zip archive)`);
  });

  test('a text file', async () => {
    const file = write('model.txt', 'def forward(self, x):\n    return x\n');
    expect((await rejection(torch.jit.load(file))).message).toBe(`${file}: not a TorchScript file (not a zip archive)`);
  });

  test('a zip made by Python zipfile that is not TorchScript', async () => {
    const err = await rejection(torch.jit.load(fx.plainZip));
    expect(err.message).toBe(`${fx.plainZip}: a zip archive but not TorchScript (no data.pkl)`);
  });

  test('a zip that has a data.pkl but no version record', async () => {
    const file = path.join(tmp, 'no-version.pt');
    runPython(`
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('archive/data.pkl', b'\\x80\\x02}q\\x00.')
`, undefined, [file]);
    expect((await rejection(torch.jit.load(file))).message).toBe(`${file}: a zip archive but not TorchScript (no version record)`);
  });

  test('a torch.save state_dict (a zip, but pickled tensors, not TorchScript) rejects with an Error', async () => {
    const file = path.join(tmp, 'state_dict.pt');
    runPython(`
import sys, torch
torch.save(torch.nn.Linear(4, 2).state_dict(), sys.argv[1])
`, undefined, [file]);
    const err = await rejection(torch.jit.load(file));
    expect(err.message).toMatch(new RegExp(`^jit\\.load\\(${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\): not a loadable TorchScript model: `));
  });

  // libtorch's compile errors start with a blank line ('\nident is not a valid Expr:\n  File ...'):
  // the message must still carry the compiler's reason (its first non-empty line).
  test('TorchScript source that does not compile: the message keeps the compiler\'s reason', async () => {
    const file = path.join(tmp, 'bad-code.pt');
    runPython(`
import sys, zipfile, torch
good = sys.argv[1] + '.good'
torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))).save(good)
with zipfile.ZipFile(good) as src, zipfile.ZipFile(sys.argv[1], 'w') as out:
    for info in src.infolist():
        data = src.read(info)
        if '/linear/' in info.filename and info.filename.endswith('.py'):
            data = data.replace(b'__parameters__', b'a_parameters__', 1)
        out.writestr(info.filename, data)
`, undefined, [file]);
    const err = await rejection(torch.jit.load(file));
    expect(err.message).toMatch(/^jit\.load\(.*bad-code\.pt\): not a loadable TorchScript model: /);
    expect(err.message).toMatch(/not a loadable TorchScript model: \S.{8,}/);
  });

  test('the same damage with isolate: true is the same Error', async () => {
    const file = write('noise2.pt', noise(1000, 9));
    expect((await rejection(torch.jit.load(file, { isolate: true }))).message).toBe(`${file}: not a TorchScript file (not a zip archive)`);
  });

  test('a source that is neither a path nor a Buffer, and bad options', async () => {
    const err = await rejection(torch.jit.load(123 as unknown as string));
    expect(err).toBeInstanceOf(TypeError);
    expect(err.message).toBe('jit.load: expected a file path or a Buffer');
    const dev = await rejection(torch.jit.load(fx.mlp, { device: 'tpu' }));
    expect(dev.message).toMatch(/^jit\.load: unknown device "tpu"/);
  });
});

describe('forward with the wrong inputs', () => {
  test('the wrong number of inputs', async () => {
    expect((await rejection(resnet.forward())).message).toBe('forward: expects 1 input(s) (x: Tensor), got 0');
    const x = torch.randn([1, 3, 32, 32]);
    expect((await rejection(resnet.forward(x, x))).message).toBe('forward: expects 1 input(s) (x: Tensor), got 2');
    expect((await rejection(mlp.forward())).message).toBe('forward: expects 1 input(s) (input: Tensor), got 0');
  });

  test('an input that is not a Tensor', async () => {
    const err = await rejection(mlp.forward(5));
    expect(err).toBeInstanceOf(TypeError);
    expect(err.message).toBe('forward: input 0 (input) must be a Tensor, got number');
    expect((await rejection(mlp.forward(null))).message).toBe('forward: input 0 (input) must be a Tensor, got null');
  });

  test('4 channels into resnet18: the message says which shape was expected, not just that an operation failed', async () => {
    const err = await rejection(resnet.forward(torch.randn([1, 4, 32, 32])));
    expect(err.message).toMatch(/^forward: /);
    expect(err.message).not.toMatch(/The following operation failed/);
    expect(err.message).toMatch(/expected input\[1, 4, 32, 32\] to have 3 channels, but got 4 channels/);
  });

  test('5 features into the [N, 4] MLP: the message names both shapes', async () => {
    const err = await rejection(mlp.forward(torch.randn([3, 5])));
    expect(err.message).toBe('forward: mat1 and mat2 shapes cannot be multiplied (3x5 and 4x8)');
  });

  test('a 2-D input into resnet18: the message names the dimensions conv2d accepts and the size it got', async () => {
    const err = await rejection(resnet.forward(torch.randn([32, 32])));
    expect(err.message).toMatch(/^forward: /);
    expect(err.message).not.toMatch(/The following operation failed/);
    expect(err.message).toMatch(/Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[32, 32\]/);
  });

  test('an int64 input where the model computes in float32: the message names the dtype problem', async () => {
    const mlpErr = await rejection(mlp.forward(torch.zeros([3, 4], { dtype: 'int64' })));
    // libtorch 2.x adds ", but got Long and Float"; what finetorch promises is the op and the dtype words
    expect(mlpErr.message).toMatch(/^forward: mat1 and mat2 must have the same dtype(, but got Long and Float)?$/);
    const resnetErr = await rejection(resnet.forward(torch.zeros([1, 3, 32, 32], { dtype: 'int64' })));
    expect(resnetErr.message).toMatch(/^forward: /);
    expect(resnetErr.message).toMatch(/scalar type|dtype/);
    expect(resnetErr.message).toMatch(/Long/);
  });

  test('a disposed input tensor', async () => {
    const x = torch.randn([2, 4]);
    x.dispose();
    expect((await rejection(mlp.forward(x))).message).toBe('forward: an input tensor was disposed');
  });

  test('a Tensor where the model wants a Dict[str, Tensor]', async () => {
    const model = await torch.jit.load(fx.dictTuple);
    const err = await rejection(model.forward(torch.tensor([1])));
    expect(err.message).toMatch(/Expected a value of type 'Dict\[str, Tensor\]' for argument 'inputs' but instead found type 'Tensor'/);
    const num = await rejection(model.forward({ a: torch.tensor([1]), b: 3 }));
    expect(num.message).toMatch(/^forward: Expected Tensor but got Int/);
    model.dispose();
  });

  test('a dict input missing a key: the message names the key (whatever the wording)', async () => {
    const model = await torch.jit.load(fx.dictTuple);
    const err = await rejection(model.forward({ a: torch.tensor([1]) }));
    expect(err.message).toMatch(/^forward: /);
    expect(err.message).toMatch(/\bb\b/);
    model.dispose();
  });

  test('a dict input missing a key says it is a missing key', async () => {
    const model = await torch.jit.load(fx.dictTuple);
    const err = await rejection(model.forward({ a: torch.tensor([1]) }));
    model.dispose();
    expect(err.message).toMatch(/KeyError|key/i);
  });
});

describe('methods', () => {
  test('an unknown method', async () => {
    const err = await rejection(mlp.runMethod('predict', torch.randn([1, 4])));
    expect(err.message).toMatch(/^runMethod: the model has no method 'predict'; it has forward/);
    expect((await rejection(resnet.runMethod('nope'))).message).toBe("runMethod: the model has no method 'nope'; it has forward, _forward_impl");
  });

  test('a disposed model', async () => {
    const model = await torch.jit.load(fx.mlp);
    model.dispose();
    model.dispose(); // a second dispose is a no-op
    expect(model.disposed).toBe(true);
    expect((await rejection(model.forward(torch.randn([1, 4])))).message).toBe('forward: the model was disposed');
    expect(() => model.namedParameters()).toThrow('namedParameters(): the model was disposed');
    expect(() => model.freeze()).toThrow('freeze(): the model was disposed');
    await expect(model.replaceHead({ numClasses: 2 })).rejects.toThrow('replaceHead(): the model was disposed');
    await expect(model.save(path.join(tmp, 'disposed.pt'))).rejects.toThrow('save(): the model was disposed');
    expect(fs.existsSync(path.join(tmp, 'disposed.pt'))).toBe(false);
  });
});

describe('replaceHead and freeze with bad arguments', () => {
  test.each([[0], [-1], [2.5], ['x'], [NaN], [2 ** 25]])('numClasses %p is a TypeError naming the bad count', async (n) => {
    const model = await torch.jit.load(fx.mlp);
    const err = await rejection(model.replaceHead({ numClasses: n as number }));
    expect(err).toBeInstanceOf(TypeError);
    expect(err.message).toBe(`replaceHead: numClasses must be an integer in [1, 16777216]: got ${typeof n === 'string' ? `"${n}" (a string)` : String(n)}`);
    // nothing changed
    expect(model.namedParameters().find(([name]) => name === '2.weight')![1].shape).toEqual([2, 8]);
    model.dispose();
  });

  test('options that are not an object', async () => {
    const err = await rejection(mlp.replaceHead(null as unknown as { numClasses: number }));
    expect(err).toBeInstanceOf(TypeError);
    expect(err.message).toBe('replaceHead: expected { numClasses, name? }');
  });

  test('a name that is not a Linear layer lists the candidates', async () => {
    expect((await rejection(resnet.replaceHead({ numClasses: 5, name: 'layer4' })))
      .message).toBe("replaceHead: 'layer4' is not a Linear layer (or final 1x1 Conv2d) of this model; candidates: fc");
    expect((await rejection(resnet.replaceHead({ numClasses: 5, name: 'conv1' })))
      .message).toBe("replaceHead: 'conv1' is not a Linear layer (or final 1x1 Conv2d) of this model; candidates: fc");
    expect((await rejection(resnet.replaceHead({ numClasses: 5, name: 'nope' })))
      .message).toBe("replaceHead: 'nope' is not a Linear layer (or final 1x1 Conv2d) of this model; candidates: fc");
    expect((await rejection(mlp.replaceHead({ numClasses: 5, name: '1' })))
      .message).toBe("replaceHead: '1' is not a Linear layer (or final 1x1 Conv2d) of this model; candidates: 2, 0");
    expect(resnet.namedParameters().find(([n]) => n === 'fc.weight')![1].shape).toEqual([1000, 512]);
  });

  test('a model with no Linear layer cannot pick a head', async () => {
    const file = path.join(tmp, 'conv-only.pt');
    runPython(`
import sys, torch
torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())).save(sys.argv[1])
`, undefined, [file]);
    const model = await torch.jit.load(file);
    expect(model.headCandidates()).toEqual([]);
    const err = await rejection(model.replaceHead({ numClasses: 3 }));
    expect(err.message).toBe('replaceHead: the model has no Linear layer (or final 1x1 Conv2d) to replace; its last modules are: 0 (Conv2d), 1 (ReLU)');
    model.dispose();
  });

  test('freeze/unfreeze with a pattern that matches nothing says so and changes nothing', () => {
    const before = mlp.namedParameters().map(([n, t]) => [n, t.requiresGrad]);
    expect(() => mlp.freeze('head.*')).toThrow("freeze(): no parameter matches head.*; names look like '0.weight'");
    expect(() => mlp.unfreeze(/^classifier\./)).toThrow("unfreeze(): no parameter matches /^classifier\\./; names look like '0.weight'");
    expect(() => mlp.freeze(['x.*', /y/])).toThrow(/^freeze\(\): no parameter matches /);
    expect(mlp.namedParameters().map(([n, t]) => [n, t.requiresGrad])).toEqual(before);
  });

  test('patterns that are not strings or RegExps are TypeErrors', () => {
    expect(() => mlp.freeze([])).toThrow(new TypeError('freeze(): expected at least one pattern'));
    expect(() => mlp.freeze(5 as unknown as string)).toThrow(new TypeError('freeze(): patterns must be non-empty strings or RegExps, got 5'));
    expect(() => mlp.unfreeze('')).toThrow(TypeError);
  });
});

test('after all of the above the process still loads and runs models', async () => {
  const model = await torch.jit.load(fx.mlp);
  const y = await model.forward(torch.tensor(readFloat32(fx.mlpInput), { shape: [3, 4] }));
  const want = readFloat32(fx.mlpOutput);
  const got = (await y.data()) as Float32Array;
  for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(1e-6);
  const r = await resnet.forward(torch.randn([1, 3, 32, 32]));
  expect(r.shape).toEqual([1, 1000]);
  model.dispose();
});
