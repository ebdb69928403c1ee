/**
 * replaceHead on every model family of PyTorch's "Finetuning Torchvision Models" tutorial (resnet,
 * alexnet, vgg, squeezenet, densenet, inception v3), each scripted and traced: the head it picks,
 * a 1x1 Conv2d head (SqueezeNet), the auxiliary head (Inception's AuxLogits.fc), the new layer's
 * initialisation (bit-identical to torch.nn.Linear / Conv2d's under the same seed), and the saved
 * file read back by Python, whose output matches ours.
 *
 * AlexNet's and VGG's two hidden classifier layers (9216/25088 -> 4096 -> 4096) are narrowed to 64
 * units to keep the fixtures small (240 and 530 MB otherwise); their module names, types and head
 * (`classifier.6`, Linear -> 1000) are the family's own.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import { readFloat32, runPythonAsync, scratchDir, writeFloat32 } from './helpers/python';

interface Family { name: string; size: number; head: string; aux: string[]; conv?: boolean }
const FAMILIES: Family[] = [
  { name: 'resnet18', size: 64, head: 'fc', aux: [] },
  { name: 'alexnet', size: 64, head: 'classifier.6', aux: [] },
  { name: 'vgg11', size: 32, head: 'classifier.6', aux: [] },
  { name: 'squeezenet1_1', size: 64, head: 'classifier.1', aux: [], conv: true },
  { name: 'densenet121', size: 32, head: 'classifier', aux: [] },
  { name: 'inception_v3', size: 80, head: 'fc', aux: ['AuxLogits.fc'] },
];
const KINDS = ['scripted', 'traced'] as const;

let dir: string;

beforeAll(async () => {
  dir = scratchDir('replace-head');
  await runPythonAsync(String.raw`
import sys, os, torch, torchvision
out = sys.argv[1]
sizes = dict(resnet18=64, alexnet=64, vgg11=32, squeezenet1_1=64, densenet121=32, inception_v3=80)
for name, size in sizes.items():
    torch.manual_seed(0)
    kw = dict(aux_logits=True, init_weights=False) if name == 'inception_v3' else {}
    m = getattr(torchvision.models, name)(weights=None, **kw)
    if name in ('alexnet', 'vgg11'):
        first = 1 if name == 'alexnet' else 0
        m.classifier[first] = torch.nn.Linear(m.classifier[first].in_features, 64)
        m.classifier[first + 3] = torch.nn.Linear(64, 64)
        m.classifier[6] = torch.nn.Linear(64, 1000)
    m.eval()
    torch.jit.script(m).save(os.path.join(out, name + '-scripted.pt'))
    torch.jit.trace(m, torch.rand(1, 3, size, size), check_trace=False).save(os.path.join(out, name + '-traced.pt'))
`, undefined, [dir]);
}, 600_000);

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe.each(FAMILIES)('$name', (f) => {
  test.each(KINDS)('%s: replaceHead picks its head (and aux head), initialises it as PyTorch does, and the model predicts 5 classes', async (kind) => {
    const model = await torch.jit.load(path.join(dir, `${f.name}-${kind}.pt`));
    expect(model.headCandidates()[0]).toBe(f.head);
    expect(model.auxiliaryHeads()).toEqual(f.aux);
    const before = new Map(model.namedParameters());
    const inputs = (before.get(`${f.head}.weight`)!.shape[1]);

    torch.manualSeed(11);
    const logs: string[] = [];
    expect(await model.replaceHead({ numClasses: 5, log: (m) => logs.push(m) })).toBe(f.head);
    const kindName = f.conv ? 'Conv2d 1x1' : 'Linear';
    expect(logs[0]).toBe(`replaceHead chose '${f.head}' (${kindName} ${inputs} -> 1000), now ${inputs} -> 5`);
    expect(logs.slice(1)).toEqual(f.aux.map((a) => {
      const n = before.get(`${a}.weight`)!.shape[1];
      return `replaceHead also replaced the auxiliary head '${a}' (Linear ${n} -> 1000), now ${n} -> 5`;
    }));

    const params = new Map(model.namedParameters());
    for (const layer of [f.head, ...f.aux]) {
      const w = params.get(`${layer}.weight`)!;
      expect(w.shape).toEqual(f.conv && layer === f.head ? [5, inputs, 1, 1] : [5, before.get(`${layer}.weight`)!.shape[1]]);
      expect(params.get(`${layer}.bias`)!.shape).toEqual([5]);
      expect(w.requiresGrad).toBe(true);
    }
    // every other parameter keeps its shape; the first and the last of them keep their values
    const others = [...before.keys()].filter((n) => ![f.head, ...f.aux].some((l) => n.startsWith(`${l}.`)));
    expect(others.map((n) => params.get(n)?.shape)).toEqual(others.map((n) => before.get(n)!.shape));
    for (const n of [others[0], others[others.length - 1]]) expect(await params.get(n)!.data()).toEqual(await before.get(n)!.data());
    // the same draws as Python's torch.nn.Linear / Conv2d built after torch.manual_seed(11)
    const fresh = JSON.parse(await runPythonAsync(`
import json, torch
torch.manual_seed(11)
layer = torch.nn.Conv2d(${inputs}, 5, 1) if ${f.conv ? 'True' : 'False'} else torch.nn.Linear(${inputs}, 5)
print(json.dumps([layer.weight.flatten()[:20].tolist(), layer.bias.tolist()]))
`)) as [number[], number[]];
    const w = Array.from((await params.get(`${f.head}.weight`)!.data()) as Float32Array).slice(0, 20);
    const b = Array.from((await params.get(`${f.head}.bias`)!.data()) as Float32Array);
    expect(w).toEqual(fresh[0].map(Math.fround));
    expect(b).toEqual(fresh[1].map(Math.fround));

    // eval: predicts 5 classes; saved, Python reads it back and computes the same
    model.eval();
    const x = await torch.rand([2, 3, f.size, f.size]);
    // scripted Inception returns InceptionOutputs(logits, aux_logits) even in eval (aux is None there)
    const out = await model.forward(x);
    const y: torch.Tensor = Array.isArray(out) ? out[0] : out;
    if (Array.isArray(out)) expect(out[1]).toBeNull();
    expect(y.shape).toEqual([2, 5]);
    const file = path.join(dir, `${f.name}-${kind}-5.pt`);
    await model.save(file);
    writeFloat32(path.join(dir, 'x.f32'), (await x.data()) as Float32Array);
    await runPythonAsync(`
import sys, numpy, torch
m = torch.jit.load(sys.argv[1]).eval()
x = torch.from_numpy(numpy.fromfile(sys.argv[2], dtype=numpy.float32)).reshape(2, 3, ${f.size}, ${f.size})
with torch.no_grad():
    y = m(x)
    (y[0] if isinstance(y, tuple) else y).numpy().astype(numpy.float32).tofile(sys.argv[3])
`, undefined, [file, path.join(dir, 'x.f32'), path.join(dir, 'y.f32')]);
    const ref = readFloat32(path.join(dir, 'y.f32'));
    const ours = (await y.data()) as Float32Array;
    expect(ref.length).toBe(10);
    ours.forEach((v, i) => expect(Math.abs(v - ref[i])).toBeLessThan(1e-4 + 1e-4 * Math.abs(ref[i])));
    [x, y].forEach((t) => t.dispose());
    model.dispose();
  }, 120_000);
});

test('aux: false replaces only the main head', async () => {
  const model = await torch.jit.load(path.join(dir, 'inception_v3-scripted.pt'));
  expect(await model.replaceHead({ numClasses: 3, aux: false, log: () => {} })).toBe('fc');
  const p = new Map(model.namedParameters());
  expect(p.get('fc.weight')!.shape).toEqual([3, 2048]);
  expect(p.get('AuxLogits.fc.weight')!.shape).toEqual([1000, 768]);
  await expect(model.replaceHead({ numClasses: 3, aux: 'no' as unknown as boolean })).rejects.toThrow(/replaceHead: aux must be a boolean/);
  model.dispose();
});

test('a grouped or non-final convolution is not a head', async () => {
  const model = await torch.jit.load(path.join(dir, 'squeezenet1_1-scripted.pt'));
  // features.3.squeeze is a 1x1 Conv2d too, but not the model's last layer with a weight
  await expect(model.replaceHead({ numClasses: 3, name: 'features.3.squeeze' }))
    .rejects.toThrow("replaceHead: 'features.3.squeeze' is not a Linear layer (or final 1x1 Conv2d) of this model; candidates: classifier.1");
  model.dispose();
});
