/**
 * native/blas.cc: libtorch's float32 GEMM goes to oneDNN where the system BLAS is netlib's
 * reference one. The choice is made once per process (FINETORCH_ONEDNN_GEMM: 0 never, 1 always), so
 * each setting runs in a child process; the products of both must agree to float32 rounding, for
 * every transpose combination libtorch asks for (Linear's forward and both backward products).
 * The rest of the suite runs with FINETORCH_ONEDNN_GEMM=0 (jest.config.js), so parity tests
 * compare finetorch with PyTorch through the same kernels.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const CHILD = String.raw`
const torch = require(process.argv[1]);
(async () => {
  torch.manualSeed(0);
  const a = torch.randn([67, 131]);
  const b = torch.randn([131, 45]);
  const out = {};
  const read = async (t) => Array.from(await t.data());
  out.nn = await read(await a.matmul(b));
  out.tn = await read(await (await a.transpose(0, 1)).matmul(await a.matmul(b)));
  out.nt = await read(await a.matmul(await (await b.matmul(await b.transpose(0, 1))).transpose(0, 1)));
  out.tt = await read(await (await b.transpose(0, 1)).matmul(await a.transpose(0, 1)));
  const x = torch.randn([8, 3, 5]);
  out.batched = await read(await x.matmul(await x.transpose(1, 2)));
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`;

function products(setting: '0' | '1'): Record<string, number[]> {
  const r = spawnSync(process.execPath, ['-e', CHILD, path.join(__dirname, '..', 'dist')], {
    encoding: 'utf8', env: { ...process.env, FINETORCH_ONEDNN_GEMM: setting }, maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

test('oneDNN products equal the system BLAS ones to float32 rounding, for NN, TN, NT, TT and batched', () => {
  const reference = products('0');
  const routed = products('1');
  expect(Object.keys(routed)).toEqual(['nn', 'tn', 'nt', 'tt', 'batched']);
  for (const [name, want] of Object.entries(reference)) {
    const got = routed[name];
    expect(got.length).toBe(want.length);
    const scale = Math.max(...want.map(Math.abs));
    const worst = Math.max(...got.map((v, i) => Math.abs(v - want[i])));
    // a sum of 131 products: float32 reorderings stay far below 1e-4 of the largest entry
    expect(worst / scale).toBeLessThan(1e-4);
  }
  // and oneDNN did run: a different summation order changes some last bits
  expect(Object.keys(reference).some((name) => reference[name].some((v, i) => v !== routed[name][i]))).toBe(true);
  // the shapes line up: [67, 45], [131, 45], [67, 131], [45, 67], [8, 3, 3]
  expect([reference.nn.length, reference.tn.length, reference.nt.length, reference.tt.length, reference.batched.length])
    .toEqual([67 * 45, 131 * 45, 67 * 131, 45 * 67, 8 * 9]);
});
