/**
 * finetorch's own CPU kernels (native/cpu_kernels.cc): max-pool with indices and batch norm's
 * training statistics, put in place of ATen's when the addon loads. They must give
 * what PyTorch gives, bit for bit: here a scripted module runs every case once in Python and once
 * in finetorch on the same input files, at 2 threads on both sides, and every byte of every
 * output is compared. The cases cover what the replacements take (float32, contiguous, stride 1
 * or 2, any padding, ceil mode, windows at every edge, the eight-lane path, ties, NaN and
 * infinities) and what they hand back to ATen (dilation, channels-last, float64, a 2-D batch).
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import type { Tensor } from '../lib';
import { readF32, runPy, tmpDir } from './helpers/train-fixtures';

let dir = '';

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const SHAPES = { ties: [2, 5, 37, 53], stem: [8, 64, 96, 96], bn: [8, 64, 24, 24], odd: [3, 13, 7, 5], seq: [4, 19, 3], flat: [6, 7] };

// run(ties, stem, bn, odd, seq, flat): every output, in a fixed order, as the tests compare them.
const MODULE = String.raw`
import sys, json, torch
import torch.nn.functional as F
from typing import List

class Cases(torch.nn.Module):
    def forward(self, ties: torch.Tensor, stem: torch.Tensor, bn: torch.Tensor, odd: torch.Tensor,
                seq: torch.Tensor, flat: torch.Tensor) -> List[torch.Tensor]:
        out: List[torch.Tensor] = []
        # (kernel, stride, padding, dilation, ceil_mode)
        for k, s, p, d, c in [(3, 2, 1, 1, False), (3, 2, 1, 1, True), (2, 2, 0, 1, False), (3, 1, 1, 1, False),
                              (5, 2, 2, 1, True), (3, 2, 0, 1, True), (4, 1, 2, 1, False), (1, 1, 0, 1, False),
                              (3, 3, 1, 1, False), (3, 2, 1, 2, False)]:
            v, i = F.max_pool2d_with_indices(ties, [k, k], [s, s], [p, p], [d, d], c)
            out += [v, i]
        v, i = F.max_pool2d_with_indices(ties[0], [3, 3], [2, 2], [1, 1], [1, 1], False)  # 3-D: one image
        out += [v, i]
        v, i = F.max_pool2d_with_indices(ties[:, :, :, 1:], [3, 3], [2, 2], [1, 1], [1, 1], False)  # not contiguous
        out += [v, i]
        v, i = F.max_pool2d_with_indices(ties.contiguous(memory_format=torch.channels_last), [3, 3], [2, 2], [1, 1], [1, 1], False)
        out += [v.contiguous(), i.contiguous()]
        v, i = F.max_pool2d_with_indices(ties.double(), [3, 3], [2, 2], [1, 1], [1, 1], False)
        out += [v, i]
        v, i = F.max_pool2d_with_indices(stem, [3, 3], [2, 2], [1, 1], [1, 1], False)  # resnet's stem
        out += [v, i]
        for x in [bn, odd, seq, flat, bn.contiguous(memory_format=torch.channels_last), odd.double()]:
            # Running statistics that the step updates from the mean and the sum of squares. No two
            # of the tensors come from the same op: the executor's common-subexpression pass would
            # make two zeros() one tensor, and the in-place update of one would change the other.
            n = x.size(1)
            rm = torch.zeros(n, dtype=x.dtype)
            rv = torch.full([n], 2.0, dtype=x.dtype)
            y, mean, invstd = torch.native_batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5)
            out += [y.contiguous(), mean, invstd, rm, rv]
        return out
`;

test('max-pool with indices and batch-norm statistics give PyTorch\'s bits on the cases finetorch\'s kernels take and on those they hand to ATen', async () => {
  dir = tmpDir('cpukernels');
  const file = path.join(dir, 'cases.pt');
  const names = Object.keys(SHAPES);
  // Inputs: ties and stem are integers in [-3, 3] (a tie in nearly every window) with NaN, +inf
  // and -inf; the batch-norm inputs are normal with a mean and a spread away from 0 and 1.
  await runPy(MODULE + String.raw`
torch.manual_seed(7)
torch.jit.script(Cases()).save(sys.argv[1])
shapes = json.loads(sys.argv[3])
for name, shape in shapes.items():
    if name in ('ties', 'stem'):
        x = torch.randint(-3, 4, shape).float().flatten()
        x[::7] = float('nan'); x[3::7] = float('inf'); x[5::11] = float('-inf')
        x = x.reshape(shape)
    else:
        x = torch.randn(shape) * 3 + 1.5
    x.numpy().tofile(sys.argv[2] + '/' + name + '.f32')
torch.set_num_threads(2)
torch._C._jit_override_can_fuse_on_cpu(False)
m = torch.jit.load(sys.argv[1])
ins = [torch.from_file(sys.argv[2] + '/' + n + '.f32', size=torch.Size(s).numel(), dtype=torch.float32).reshape(s) for n, s in shapes.items()]
for j, t in enumerate(m(*ins)):
    t.contiguous().numpy().tofile(sys.argv[2] + '/out' + str(j) + '.bin')
`, [file, dir, JSON.stringify(SHAPES)]);

  const before = torch.getNumThreads();
  await torch.setNumThreads(2);
  try {
    const model = await torch.jit.load(file);
    const inputs = names.map((n) => torch.tensor(readF32(path.join(dir, `${n}.f32`)), { shape: SHAPES[n as keyof typeof SHAPES] }));
    const outs = await model.runMethod('forward', ...inputs) as Tensor[];
    expect(outs.length).toBe(2 * 15 + 5 * 6);
    const differ: number[] = [];
    for (const [j, t] of outs.entries()) {
      const d = await t.data() as ArrayLike<number> & { buffer: ArrayBuffer; byteOffset: number; byteLength: number };
      const got = Buffer.from(d.buffer, d.byteOffset, d.byteLength);
      if (!got.equals(fs.readFileSync(path.join(dir, `out${j}.bin`)))) differ.push(j);
      t.dispose();
    }
    expect(differ).toEqual([]);
    for (const t of inputs) t.dispose();
    model.dispose();
  } finally {
    await torch.setNumThreads(before);
  }
}, 180_000);

test('backends.cpu.kernels names the kernels in place, both where the CPU has AVX2; FINETORCH_CPU_KERNELS=0 keeps ATen\'s', () => {
  const flags = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
  const avx2 = process.arch === 'x64' && flags.includes('avx2');
  const expected = avx2 ? ['max_pool2d', 'batch_norm_stats'] : [];
  expect(torch.backends.cpu.kernels).toEqual(expected);
  const script = `process.stdout.write(JSON.stringify(require(${JSON.stringify(path.join(__dirname, '..', 'dist'))}).backends.cpu.kernels))`;
  const off = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, FINETORCH_CPU_KERNELS: '0' } }).toString();
  expect(JSON.parse(off)).toEqual([]);
});
