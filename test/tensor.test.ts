/**
 * Tensor creation, dtype round trips, factories, seeded randomness, ops against hand-computed
 * values, FIFO call order, and the errors users see for bad input.
 */
import * as torch from '../lib';
import type { DType, Tensor } from '../lib';

/** Element-wise toBeCloseTo over an array-like of numbers. */
function expectClose(actual: ArrayLike<number>, expected: number[], digits = 5): void {
  expect(actual.length).toBe(expected.length);
  expected.forEach((v, i) => expect(actual[i]).toBeCloseTo(v, digits));
}

/** The elements as a plain array (numbers, or bigints for int64). */
async function values(t: Tensor | Promise<Tensor>): Promise<(number | bigint)[]> {
  return Array.from((await (await t).data()) as ArrayLike<number | bigint>);
}

async function list(t: Tensor | Promise<Tensor>): Promise<unknown> {
  return (await t).tolist();
}

describe('round trip of every dtype through tensor() -> data() / tolist()', () => {
  const cases: { dtype: DType; input: unknown; ctor: string; data: unknown[]; list: unknown }[] = [
    { dtype: 'float32', input: new Float32Array([0.5, -1.25, 3, 1e-3]), ctor: 'Float32Array', data: [0.5, -1.25, 3, Math.fround(1e-3)], list: [0.5, -1.25, 3, Math.fround(1e-3)] },
    { dtype: 'float64', input: new Float64Array([0.1, -2.5, 1e300]), ctor: 'Float64Array', data: [0.1, -2.5, 1e300], list: [0.1, -2.5, 1e300] },
    // Half types come back as Float32Array holding the rounded values.
    { dtype: 'float16', input: [0.5, -1.25, 65504, 0.1], ctor: 'Float32Array', data: [0.5, -1.25, 65504, 0.0999755859375], list: [0.5, -1.25, 65504, 0.0999755859375] },
    { dtype: 'bfloat16', input: [0.5, -1.25, 256, 0.1], ctor: 'Float32Array', data: [0.5, -1.25, 256, 0.10009765625], list: [0.5, -1.25, 256, 0.10009765625] },
    { dtype: 'int64', input: new BigInt64Array([0n, -5n, 9007199254740993n]), ctor: 'BigInt64Array', data: [0n, -5n, 9007199254740993n], list: [0n, -5n, 9007199254740993n] },
    { dtype: 'int32', input: new Int32Array([0, -2147483648, 2147483647]), ctor: 'Int32Array', data: [0, -2147483648, 2147483647], list: [0, -2147483648, 2147483647] },
    { dtype: 'int16', input: new Int16Array([-32768, 1, 32767]), ctor: 'Int16Array', data: [-32768, 1, 32767], list: [-32768, 1, 32767] },
    { dtype: 'int8', input: new Int8Array([-128, 0, 127]), ctor: 'Int8Array', data: [-128, 0, 127], list: [-128, 0, 127] },
    { dtype: 'uint8', input: new Uint8Array([0, 7, 255]), ctor: 'Uint8Array', data: [0, 7, 255], list: [0, 7, 255] },
    // bool comes back as Uint8Array of 0/1, and tolist() gives booleans.
    { dtype: 'bool', input: [true, false, true], ctor: 'Uint8Array', data: [1, 0, 1], list: [true, false, true] },
  ];

  test.each(cases)('$dtype', async ({ dtype, input, ctor, data, list: expected }) => {
    const t = torch.tensor(input as number[], { dtype });
    expect(t.dtype).toBe(dtype);
    expect(t.shape).toEqual([data.length]);
    expect(t.device).toBe('cpu');
    const d = await t.data();
    // The addon's arrays come from Node's realm, not jest's sandbox, so compare by tag, not instanceof.
    expect(Object.prototype.toString.call(d)).toBe(`[object ${ctor}]`);
    expect(Array.from(d as ArrayLike<unknown>)).toEqual(data);
    expect(await t.tolist()).toEqual(expected);
  });

  test('plain numbers are cast to the dtype asked for', async () => {
    expect(await values(torch.tensor([1.7, -1.7, 3], { dtype: 'int32' }))).toEqual([1, -1, 3]);
    expect(await values(torch.tensor([1, 2], { dtype: 'int64' }))).toEqual([1n, 2n]);
    expect(await values(torch.tensor([3, -4], { dtype: 'int16' }))).toEqual([3, -4]);
    expect(await values(torch.tensor([3, -4], { dtype: 'int8' }))).toEqual([3, -4]);
    expect(await values(torch.tensor([0, 200], { dtype: 'uint8' }))).toEqual([0, 200]);
    expect(await torch.tensor([0, 2, -1], { dtype: 'bool' }).tolist()).toEqual([false, true, true]);
    expect(await values(torch.tensor([0.1], { dtype: 'float64' }))).toEqual([0.1]);
  });

  test('a TypedArray view with a byte offset copies only its own elements', async () => {
    const buf = new Float32Array([9, 1, 2, 3]);
    const t = torch.tensor(buf.subarray(1, 3));
    expect(await values(t)).toEqual([1, 2]);
    buf[1] = 100; // tensor() copies: later writes do not show
    expect(await values(t)).toEqual([1, 2]);
  });

  test('nested arrays give the nested shape and tolist() rebuilds them', async () => {
    const t = torch.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]);
    expect(t.shape).toEqual([2, 2, 2]);
    expect(t.ndim).toBe(3);
    expect(t.numel).toBe(8);
    expect(await t.tolist()).toEqual([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]);
  });

  test('empty arrays give zero-sized dimensions', async () => {
    expect(torch.tensor([]).shape).toEqual([0]);
    expect(torch.tensor([[], []]).shape).toEqual([2, 0]);
    expect(await torch.tensor([]).tolist()).toEqual([]);
  });
});

describe('dtype inference', () => {
  test.each([
    ['Float32Array', new Float32Array([1]), 'float32'],
    ['Float64Array', new Float64Array([1]), 'float64'],
    ['Int32Array', new Int32Array([1]), 'int32'],
    ['Int16Array', new Int16Array([1]), 'int16'],
    ['Int8Array', new Int8Array([1]), 'int8'],
    ['BigInt64Array', new BigInt64Array([1n]), 'int64'],
    ['Uint8Array', new Uint8Array([1]), 'uint8'],
    ['Uint8ClampedArray', new Uint8ClampedArray([1]), 'uint8'],
    ['plain numbers', [1, 2], 'float32'],
    ['bigints', [1n, 2n], 'int64'],
    ['booleans', [true, false], 'bool'],
  ] as [string, torch.TensorLike, DType][])('%s -> %s', (_, data, dtype) => {
    expect(torch.tensor(data).dtype).toBe(dtype);
  });

  test('scalars give shape [] and item() reads them back', async () => {
    const f = torch.tensor(2.5);
    expect(f.shape).toEqual([]);
    expect(f.dtype).toBe('float32');
    expect(f.numel).toBe(1);
    expect(await f.item()).toBe(2.5);
    const i = torch.tensor(7n);
    expect(i.shape).toEqual([]);
    expect(i.dtype).toBe('int64');
    expect(await i.item()).toBe(7);
    const b = torch.tensor(true);
    expect(b.shape).toEqual([]);
    expect(b.dtype).toBe('bool');
    expect(await b.item()).toBe(true);
    expect(await b.tolist()).toBe(true);
  });

  test('item() on a tensor with more than one element rejects', async () => {
    await expect(torch.tensor([1, 2]).item()).rejects.toThrow(/item\(\): the tensor has 2 elements, not 1/);
  });
});

describe('shape option', () => {
  test('reshapes flat data', async () => {
    const t = torch.tensor(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] });
    expect(t.shape).toEqual([2, 3]);
    expect(await t.tolist()).toEqual([[1, 2, 3], [4, 5, 6]]);
    expect(torch.tensor([1], { shape: [] }).shape).toEqual([]);
    expect(torch.tensor([[1, 2], [3, 4]], { shape: [4, 1] }).shape).toEqual([4, 1]);
  });

  test('a shape that does not match the element count throws', () => {
    expect(() => torch.tensor([1, 2, 3], { shape: [2, 2] })).toThrow(/shape \[2,2\] needs 4 elements but the data has 3/);
    expect(() => torch.tensor([1, 2], { shape: [-2, -1] })).toThrow(/shape\[0\] must be an integer in \[0, Infinity\]: got -2/);
    expect(() => torch.tensor([1, 2], { shape: 2 as unknown as number[] })).toThrow(/shape must be an array/);
  });
});

describe('factories', () => {
  test('zeros / ones / full / empty give the shape, dtype and values asked for', async () => {
    const z = torch.zeros([2, 3]);
    expect(z.shape).toEqual([2, 3]);
    expect(z.dtype).toBe('float32');
    expect(await z.tolist()).toEqual([[0, 0, 0], [0, 0, 0]]);

    const o = torch.ones([3], { dtype: 'int64' });
    expect(o.dtype).toBe('int64');
    expect(await values(o)).toEqual([1n, 1n, 1n]);

    const f = torch.full([2, 2], 7);
    expect(await f.tolist()).toEqual([[7, 7], [7, 7]]);
    const fi = torch.full([2], -3, { dtype: 'int32' });
    expect(fi.dtype).toBe('int32');
    expect(await values(fi)).toEqual([-3, -3]);
    const fb = torch.full([1], 1, { dtype: 'bool' });
    expect(await fb.tolist()).toEqual([true]);

    const e = torch.empty([4, 5], { dtype: 'float64' });
    expect(e.shape).toEqual([4, 5]);
    expect(e.dtype).toBe('float64');
    expect((await e.data()).length).toBe(20);

    expect(torch.zeros([]).shape).toEqual([]);
    expect(await torch.zeros([]).item()).toBe(0);
    expect(torch.zeros([0, 3]).numel).toBe(0);
  });

  test('rand is uniform in [0, 1) and randn is standard normal', async () => {
    await torch.manualSeed(123);
    const r = Array.from((await torch.rand([10000]).data()) as Float32Array);
    expect(Math.min(...r)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...r)).toBeLessThan(1);
    const rmean = r.reduce((a, b) => a + b, 0) / r.length;
    expect(rmean).toBeCloseTo(0.5, 1);

    const n = Array.from((await torch.randn([10000]).data()) as Float32Array);
    const mean = n.reduce((a, b) => a + b, 0) / n.length;
    const sd = Math.sqrt(n.reduce((a, b) => a + (b - mean) ** 2, 0) / n.length);
    expect(Math.abs(mean)).toBeLessThan(0.05);
    expect(sd).toBeGreaterThan(0.95);
    expect(sd).toBeLessThan(1.05);

    expect(torch.rand([2], { dtype: 'float64' }).dtype).toBe('float64');
    expect(() => torch.rand([2], { dtype: 'int32' })).toThrow(/rand\(\): dtype must be floating-point/);
    expect(() => torch.randn([2], { dtype: 'int64' })).toThrow(/randn\(\): dtype must be floating-point/);
  });

  test('randint takes (low, high, shape) as PyTorch does and gives int64 in [low, high)', async () => {
    const t = torch.randint(3, 5, [1000]);
    expect(t.shape).toEqual([1000]);
    expect(t.dtype).toBe('int64');
    const seen = new Set(await values(t));
    expect([...seen].sort()).toEqual([3n, 4n]);

    const neg = torch.randint(-2, 0, [2, 50], { dtype: 'int32' });
    expect(neg.dtype).toBe('int32');
    expect(neg.shape).toEqual([2, 50]);
    for (const v of await neg.data()) expect([-2, -1]).toContain(v);

    expect(() => torch.randint(5, 5, [1])).toThrow(/randint\(\): high \(5\) must be greater than low \(5\)/);
    expect(() => torch.randint(0, 1.5, [1])).toThrow(/randint\(\): high must be an integer: got 1.5/);
  });

  test('arange: (end), (start, end), (start, end, step); integers give int64', async () => {
    const a = torch.arange(5);
    expect(a.dtype).toBe('int64');
    expect(a.shape).toEqual([5]);
    expect(await values(a)).toEqual([0n, 1n, 2n, 3n, 4n]);

    expect(await values(torch.arange(1, 4))).toEqual([1n, 2n, 3n]);
    expect(await values(torch.arange(10, 0, -3))).toEqual([10n, 7n, 4n, 1n]);

    const f = torch.arange(0, 1, 0.25);
    expect(f.dtype).toBe('float32');
    expect(f.shape).toEqual([4]);
    expect(await values(f)).toEqual([0, 0.25, 0.5, 0.75]);

    const tenth = torch.arange(0, 1, 0.1);
    expect(tenth.shape).toEqual([10]);
    expectClose((await tenth.data()) as Float32Array, [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);

    const d = torch.arange(0, 3, 1, { dtype: 'float64' });
    expect(d.dtype).toBe('float64');
    expect(await values(d)).toEqual([0, 1, 2]);

    expect(() => torch.arange(0, 1, 0)).toThrow(/arange\(\): step must be non-zero/);
    expect(() => torch.arange(0, 5, -1)).toThrow(/arange\(\): cannot go from 0 to 5 by -1/);
  });

  test('factories reject bad shapes', () => {
    expect(() => torch.zeros([2, -1])).toThrow(/zeros\(\): shape\[1\] must be an integer in \[0, Infinity\]: got -1/);
    expect(() => torch.ones([1.5])).toThrow(/ones\(\): shape\[0\] must be an integer/);
    expect(() => torch.full([2], NaN)).toThrow(/full\(\): value must be a number: got NaN/);
  });
});

describe('manualSeed', () => {
  test('after manualSeed(1), randn([3]) matches PyTorch', async () => {
    await torch.manualSeed(1);
    expectClose((await torch.randn([3]).data()) as Float32Array, [0.6614, 0.2669, 0.0617], 4);
  });

  test('the same seed gives the same values, a different seed different ones', async () => {
    await torch.manualSeed(42);
    const a = await values(torch.randn([16]));
    const ai = await values(torch.randint(0, 1000, [16]));
    await torch.manualSeed(42);
    const b = await values(torch.randn([16]));
    const bi = await values(torch.randint(0, 1000, [16]));
    await torch.manualSeed(43);
    const c = await values(torch.randn([16]));
    expect(b).toEqual(a);
    expect(bi).toEqual(ai);
    expect(c).not.toEqual(a);
  });

  test('rejects seeds that are not non-negative integers', () => {
    expect(() => torch.manualSeed(-1)).toThrow(/manualSeed\(\): seed must be an integer in \[0, /);
    expect(() => torch.manualSeed(1.5)).toThrow(/manualSeed\(\): seed must be an integer/);
  });
});

describe('elementwise arithmetic', () => {
  const a = () => torch.tensor([1, 2, 3]);
  const b = () => torch.tensor([10, 20, 30]);

  test('tensor with tensor', async () => {
    expect(await list(a().add(b()))).toEqual([11, 22, 33]);
    expect(await list(a().sub(b()))).toEqual([-9, -18, -27]);
    expect(await list(a().mul(b()))).toEqual([10, 40, 90]);
    expectClose((await (await b().div(a())).data()) as Float32Array, [10, 10, 10]);
    expectClose((await (await a().div(b())).data()) as Float32Array, [0.1, 0.1, 0.1]);
  });

  test('tensor with scalar', async () => {
    expect(await list(a().add(0.5))).toEqual([1.5, 2.5, 3.5]);
    expect(await list(a().sub(1))).toEqual([0, 1, 2]);
    expect(await list(a().mul(-2))).toEqual([-2, -4, -6]);
    expect(await list(a().div(4))).toEqual([0.25, 0.5, 0.75]);
  });

  test('broadcasting follows PyTorch rules', async () => {
    const col = torch.tensor([[1], [2]]); // [2, 1]
    const row = torch.tensor([10, 20, 30]); // [3]
    const s = await col.add(row);
    expect(s.shape).toEqual([2, 3]);
    expect(await s.tolist()).toEqual([[11, 21, 31], [12, 22, 32]]);
    const m = await torch.tensor([[1, 2, 3], [4, 5, 6]]).mul(torch.tensor([1, 0, -1]));
    expect(await m.tolist()).toEqual([[1, 0, -3], [4, 0, -6]]);
    const d = await torch.tensor([[2, 4], [6, 8]]).div(torch.tensor([[2], [4]]));
    expect(await d.tolist()).toEqual([[1, 2], [1.5, 2]]);
  });

  test('dtype promotion: int tensor with int scalar stays int, division and float scalars give float', async () => {
    const i = torch.tensor([1, 2, 3], { dtype: 'int64' });
    const plus = await i.add(2);
    expect(plus.dtype).toBe('int64');
    expect(await values(plus)).toEqual([3n, 4n, 5n]);
    const half = await i.div(2);
    expect(half.dtype).toBe('float32');
    expect(await values(half)).toEqual([0.5, 1, 1.5]);
    const f = await torch.tensor([1, 2], { dtype: 'int32' }).add(2.5);
    expect(f.dtype).toBe('float32');
    expect(await values(f)).toEqual([3.5, 4.5]);
  });

  test('shapes that do not broadcast reject naming both shapes', async () => {
    await expect(torch.zeros([2, 3]).add(torch.zeros([4]))).rejects.toThrow(
      /add: shapes \[2,3\] and \[4\] cannot be broadcast together \(dimension 1: 3 vs 4\)/,
    );
    await expect(torch.zeros([2]).mul(torch.zeros([3]))).rejects.toThrow(/mul: shapes \[2\] and \[3\] cannot be broadcast/);
  });
});

describe('matmul', () => {
  test('2-D x 2-D', async () => {
    const x = torch.tensor([[1, 2], [3, 4]]);
    const y = torch.tensor([[5, 6], [7, 8]]);
    const p = await x.matmul(y);
    expect(p.shape).toEqual([2, 2]);
    expect(await p.tolist()).toEqual([[19, 22], [43, 50]]);
  });

  test('2-D x 1-D, 1-D x 1-D and batched', async () => {
    const x = torch.tensor([[1, 2], [3, 4]]);
    const mv = await x.matmul(torch.tensor([1, 1]));
    expect(mv.shape).toEqual([2]);
    expect(await mv.tolist()).toEqual([3, 7]);

    const dot = await torch.tensor([1, 2, 3]).matmul(torch.tensor([4, 5, 6]));
    expect(dot.shape).toEqual([]);
    expect(await dot.item()).toBe(32);

    const batch = torch.tensor([[[1, 0], [0, 1]], [[2, 0], [0, 2]]]); // [2, 2, 2]
    const bm = await batch.matmul(x);
    expect(bm.shape).toEqual([2, 2, 2]);
    expect(await bm.tolist()).toEqual([[[1, 2], [3, 4]], [[2, 4], [6, 8]]]);

    const rect = await torch.ones([2, 3]).matmul(torch.ones([3, 4]));
    expect(rect.shape).toEqual([2, 4]);
    expect(await rect.tolist()).toEqual([[3, 3, 3, 3], [3, 3, 3, 3]]);
  });

  test('mismatched inner dimensions reject', async () => {
    await expect(torch.zeros([2, 3]).matmul(torch.zeros([2, 3]))).rejects.toThrow(
      /matmul: shapes \[2,3\] and \[2,3\] cannot be multiplied \(3 columns vs 2 rows\)/,
    );
    await expect(torch.zeros([3]).matmul(torch.zeros([4]))).rejects.toThrow(/matmul: shapes \[3\] and \[4\] cannot be multiplied/);
    await expect(torch.tensor(1).matmul(torch.zeros([1]))).rejects.toThrow(/matmul: both arguments need at least one dimension/);
  });
});

describe('reductions', () => {
  const m = () => torch.tensor([[1, 2, 3], [4, 5, 6]]);

  test('sum over everything, a dim, several dims, with keepdim', async () => {
    const all = await m().sum();
    expect(all.shape).toEqual([]);
    expect(await all.item()).toBe(21);
    expect(await list(m().sum(0))).toEqual([5, 7, 9]);
    expect(await list(m().sum(-1))).toEqual([6, 15]);
    const kd = await m().sum(1, true);
    expect(kd.shape).toEqual([2, 1]);
    expect(await kd.tolist()).toEqual([[6], [15]]);
    const both = await m().sum({ dim: [0, 1], keepdim: true });
    expect(both.shape).toEqual([1, 1]);
    expect(await both.tolist()).toEqual([[21]]);
  });

  test('mean over everything and along a dim; integer tensors reject', async () => {
    expect(await (await m().mean()).item()).toBeCloseTo(3.5, 6);
    expect(await list(m().mean(1))).toEqual([2, 5]);
    const kd = await m().mean({ dim: 0, keepdim: true });
    expect(kd.shape).toEqual([1, 3]);
    expect(await kd.tolist()).toEqual([[2.5, 3.5, 4.5]]);
    await expect(torch.tensor([1n, 2n]).mean()).rejects.toThrow(/mean: needs a floating-point tensor, got int64/);
  });

  test('max(): the largest element; max(dim): [values, indices] also as .values / .indices', async () => {
    const x = torch.tensor([[1, 5, 3], [4, 2, 6]]);
    const top = await x.max();
    expect(top.shape).toEqual([]);
    expect(await top.item()).toBe(6);

    const r = await x.max(1);
    expect(Array.isArray(r)).toBe(true);
    expect(r).toHaveLength(2);
    const [values, indices] = r;
    expect(r.values).toBe(values);
    expect(r.indices).toBe(indices);
    expect(await values.tolist()).toEqual([5, 6]);
    expect(indices.dtype).toBe('int64');
    expect(await indices.tolist()).toEqual([1n, 2n]);

    const kd = await x.max(0, true);
    expect(kd.values.shape).toEqual([1, 3]);
    expect(await kd.values.tolist()).toEqual([[4, 5, 6]]);
    expect(await kd.indices.tolist()).toEqual([[1n, 0n, 1n]]);

    const mn = await x.min(1);
    expect(await mn.values.tolist()).toEqual([1, 2]);
    expect(await mn.indices.tolist()).toEqual([0n, 1n]);
  });

  test('argmax over the flattened tensor and along a dim', async () => {
    const x = torch.tensor([[1, 5, 3], [4, 2, 6]]);
    const flat = await x.argmax();
    expect(flat.dtype).toBe('int64');
    expect(flat.shape).toEqual([]);
    expect(await flat.item()).toBe(5);
    expect(await list(x.argmax(1))).toEqual([1n, 2n]);
    expect(await list(x.argmax(0))).toEqual([1n, 0n, 1n]);
    expect((await x.argmax(1, true)).shape).toEqual([2, 1]);
    expect(await list(x.argmin(1))).toEqual([0n, 1n]);
  });

  test('an out-of-range dim rejects', async () => {
    await expect(m().sum(2)).rejects.toThrow(/sum: dim 2 is out of range for a tensor of 2 dimension\(s\) \(expected \[-2, 1\]\)/);
    await expect(m().max(-3)).rejects.toThrow(/max: dim -3 is out of range/);
  });
});

describe('softmax / logSoftmax', () => {
  test('1-D values match exp(x) / sum(exp(x))', async () => {
    const x = torch.tensor([1, 2, 3]);
    expectClose((await (await x.softmax(0)).data()) as Float32Array, [0.09003057, 0.24472847, 0.66524096], 6);
    expectClose((await (await x.logSoftmax(-1)).data()) as Float32Array, [-2.40760596, -1.40760596, -0.40760596], 5);
  });

  test('2-D along dim 1: each row sums to one, and a constant row is uniform', async () => {
    const x = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 4]]);
    const s = await x.softmax(1);
    expect(s.shape).toEqual([2, 4]);
    const rows = (await s.tolist()) as number[][];
    expectClose(rows[0], [0.25, 0.25, 0.25, 0.25], 6);
    expect(rows[1].reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    const e = [1, 2, 3, 4].map(Math.exp);
    const z = e.reduce((a, b) => a + b, 0);
    expectClose(rows[1], e.map((v) => v / z), 6);
    const ls = (await (await x.logSoftmax(1)).tolist()) as number[][];
    expectClose(ls[1], e.map((v) => Math.log(v / z)), 5);
  });

  test('a dim out of range rejects', async () => {
    await expect(torch.tensor([1, 2]).softmax(1)).rejects.toThrow(/softmax: dim 1 is out of range/);
  });
});

describe('shape ops', () => {
  const m = () => torch.tensor([[1, 2, 3], [4, 5, 6]]);

  test('reshape keeps row-major order, accepts -1 and an array', async () => {
    const r = await m().reshape(3, 2);
    expect(r.shape).toEqual([3, 2]);
    expect(await r.tolist()).toEqual([[1, 2], [3, 4], [5, 6]]);
    expect((await m().reshape([-1])).shape).toEqual([6]);
    expect((await m().reshape(-1, 2)).shape).toEqual([3, 2]);
    expect((await m().view(1, 6)).shape).toEqual([1, 6]);
  });

  test('reshape to an invalid shape rejects', async () => {
    await expect(m().reshape(4, 2)).rejects.toThrow(/reshape: shape \[4,2\] is invalid for a tensor of 6 elements \(shape \[2,3\]\)/);
    await expect(m().reshape(-1, 4)).rejects.toThrow(/reshape: shape \[-1,4\] is invalid for a tensor of 6 elements/);
    await expect(m().reshape(-1, -1)).rejects.toThrow(/reshape: only one dimension can be -1/);
  });

  test('permute reorders dimensions', async () => {
    const t = await m().permute(1, 0);
    expect(t.shape).toEqual([3, 2]);
    expect(await t.tolist()).toEqual([[1, 4], [2, 5], [3, 6]]);
    const x = torch.zeros([2, 3, 4, 5]);
    expect((await x.permute([0, 2, 3, 1])).shape).toEqual([2, 4, 5, 3]);
    await expect(m().permute(0, 0)).rejects.toThrow(/permute: \[0,0\] is not a permutation of the 2 dimensions/);
    await expect(m().permute(0)).rejects.toThrow(/permute: \[0\] is not a permutation/);
  });

  test('slice is Python slicing along a dim', async () => {
    expect(await list(m().slice(1, 0, 2))).toEqual([[1, 2], [4, 5]]);
    expect(await list(m().slice(0, 1))).toEqual([[4, 5, 6]]);
    expect(await list(m().slice(1, undefined, undefined, 2))).toEqual([[1, 3], [4, 6]]);
    expect(await list(m().slice(1, -1))).toEqual([[3], [6]]);
    expect(await list(m().slice(-1, 1, 100))).toEqual([[2, 3], [5, 6]]);
    await expect(m().slice(1, 0, 2, 0)).rejects.toThrow(/slice: step must be an integer in \[1, Infinity\]: got 0/);
  });

  test('indexSelect picks rows or columns by an index tensor', async () => {
    expect(await list(m().indexSelect(0, torch.tensor([1n, 0n, 1n])))).toEqual([[4, 5, 6], [1, 2, 3], [4, 5, 6]]);
    expect(await list(m().indexSelect(1, torch.tensor(new Int32Array([2, 0]))))).toEqual([[3, 1], [6, 4]]);
    await expect(m().indexSelect(0, torch.tensor([5n]))).rejects.toThrow(
      /indexSelect: index 5 at position 0 is out of range for dimension 0 of size 2/,
    );
    await expect(m().indexSelect(0, torch.tensor([0]))).rejects.toThrow(/indexSelect: index must be a 1-D int64 or int32 Tensor/);
  });

  test('cat joins along an existing dim, stack along a new one', async () => {
    const x = torch.tensor([[1, 2]]);
    const y = torch.tensor([[3, 4], [5, 6]]);
    const c0 = await torch.cat([x, y]);
    expect(c0.shape).toEqual([3, 2]);
    expect(await c0.tolist()).toEqual([[1, 2], [3, 4], [5, 6]]);
    const c1 = await torch.cat([y, y], 1);
    expect(await c1.tolist()).toEqual([[3, 4, 3, 4], [5, 6, 5, 6]]);

    const a = torch.tensor([1, 2]);
    const b = torch.tensor([3, 4]);
    const s0 = await torch.stack([a, b]);
    expect(s0.shape).toEqual([2, 2]);
    expect(await s0.tolist()).toEqual([[1, 2], [3, 4]]);
    const s1 = await torch.stack([a, b], 1);
    expect(await s1.tolist()).toEqual([[1, 3], [2, 4]]);
  });

  test('cat and stack of mismatched shapes reject', async () => {
    await expect(torch.cat([torch.zeros([2, 3]), torch.zeros([2, 2])])).rejects.toThrow(
      /cat: tensor 1 has shape \[2,2\], which does not match \[2,3\] outside dimension 0/,
    );
    await expect(torch.cat([torch.zeros([2, 3]), torch.zeros([3])])).rejects.toThrow(/cat: tensor 1 has shape \[3\]/);
    await expect(torch.stack([torch.zeros([2]), torch.zeros([3])])).rejects.toThrow(/stack: tensor 1 has shape \[3\], expected \[2\]/);
    await expect(torch.cat([])).rejects.toThrow(/cat: expected a non-empty array of Tensors/);
  });
});

describe('comparison, copies and casts', () => {
  test('eq against a tensor and a scalar gives bool', async () => {
    const e = await torch.tensor([1, 2, 3]).eq(torch.tensor([1, 0, 3]));
    expect(e.dtype).toBe('bool');
    expect(await e.tolist()).toEqual([true, false, true]);
    expect(await list(torch.tensor([1, 2, 3]).eq(2))).toEqual([false, true, false]);
  });

  test('clone copies values and keeps requiresGrad; detach drops it', async () => {
    const x = torch.tensor([1, 2], { requiresGrad: true });
    expect(x.requiresGrad).toBe(true);
    const c = await x.clone();
    expect(c).not.toBe(x);
    expect(c.requiresGrad).toBe(true);
    expect(await c.tolist()).toEqual([1, 2]);
    const d = await x.detach();
    expect(d.requiresGrad).toBe(false);
    expect(await d.tolist()).toEqual([1, 2]);
    // the clone has its own storage: disposing the original leaves it readable
    x.dispose();
    expect(await c.tolist()).toEqual([1, 2]);
  });

  test('contiguous of a permuted tensor keeps the permuted values', async () => {
    const p = await torch.tensor([[1, 2, 3], [4, 5, 6]]).permute(1, 0);
    const c = await p.contiguous();
    expect(c.shape).toEqual([3, 2]);
    expect(await c.tolist()).toEqual([[1, 4], [2, 5], [3, 6]]);
    expect(await values(c)).toEqual([1, 4, 2, 5, 3, 6]);
  });

  test('topk gives the k largest (or smallest) with their indices', async () => {
    const x = torch.tensor([1, 5, 3, 4]);
    const [v, i] = await x.topk(2);
    expect(await v.tolist()).toEqual([5, 4]);
    expect(await i.tolist()).toEqual([1n, 3n]);
    const small = await x.topk(2, { largest: false });
    expect(await small.values.tolist()).toEqual([1, 3]);
    expect(await small.indices.tolist()).toEqual([0n, 2n]);
    const m = await torch.tensor([[1, 5, 3], [4, 2, 6]]).topk(1, { dim: 0 });
    expect(await m.values.tolist()).toEqual([[4, 5, 6]]);
    await expect(x.topk(5)).rejects.toThrow(/topk: k must be an integer in \[0, 4\]: got 5/);
  });

  test('to({ dtype }) and to(dtype) cast; to(device) keeps cpu', async () => {
    const x = torch.tensor([1.7, -1.7]);
    const d = await x.to({ dtype: 'float64' });
    expect(d.dtype).toBe('float64');
    expectClose((await d.data()) as Float64Array, [1.7, -1.7], 6);
    const i = await x.to('int32');
    expect(i.dtype).toBe('int32');
    expect(await values(i)).toEqual([1, -1]);
    const h = await x.to({ dtype: 'float16', device: 'cpu' });
    expect(h.dtype).toBe('float16');
    expect(h.device).toBe('cpu');
    const c = await x.to('cpu');
    expect(c.device).toBe('cpu');
    expect(c.dtype).toBe('float32');
    await expect(x.to({ dtype: 'float8' as DType })).rejects.toThrow(/to\(\): unknown dtype "float8"/);
  });
});

describe('call order: work runs in the order JS asked for it', () => {
  test('200 un-awaited random draws give the same sequence as awaited ones', async () => {
    await torch.manualSeed(7);
    const expected: number[] = [];
    for (let i = 0; i < 200; i++) expected.push((await torch.rand([1]).data())[0] as number);

    torch.manualSeed(7); // not awaited: queued ahead of the draws below
    const settled: number[] = [];
    const pending = Array.from({ length: 200 }, (_, i) =>
      torch.rand([1]).data().then((d) => {
        settled.push(i);
        return d[0] as number;
      }),
    );
    const got = await Promise.all(pending);
    expect(got).toEqual(expected);
    // promises settle in FIFO order too
    expect(settled).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  test('manualSeed interleaved with randn, none awaited, reseeds each draw', async () => {
    const seeds = [0, 1, 2, 3, 4];
    const refs: number[][] = [];
    for (const s of seeds) {
      await torch.manualSeed(s);
      refs.push(Array.from((await torch.randn([3]).data()) as Float32Array));
    }
    const draws: Promise<unknown>[] = [];
    for (let i = 0; i < 100; i++) {
      torch.manualSeed(seeds[i % seeds.length]);
      draws.push(torch.randn([3]).data());
    }
    const got = (await Promise.all(draws)) as Float32Array[];
    got.forEach((d, i) => expect(Array.from(d)).toEqual(refs[i % seeds.length]));
    expect(refs[0]).not.toEqual(refs[1]);
  });

  test('200 ops on one tensor queued back to back each get their own result; a 200-step add chain sums to 200', async () => {
    // The chain is built without awaiting in the loop; each add runs on the previous result.
    let acc: Promise<Tensor> = Promise.resolve(torch.zeros([4]));
    for (let i = 0; i < 200; i++) acc = acc.then((t) => t.add(1));
    expect(await (await acc).tolist()).toEqual([200, 200, 200, 200]);

    // And 200 independent ops issued back to back, none awaited, all correct.
    const base = torch.tensor([1, 2]);
    const outs = Array.from({ length: 200 }, (_, i) => base.mul(i));
    const results = await Promise.all(outs.map(async (p) => (await p).tolist()));
    results.forEach((v, i) => expect(v).toEqual([i, 2 * i]));
  });
});

describe('errors', () => {
  test('unknown dtype', () => {
    expect(() => torch.tensor([1], { dtype: 'float8' as DType })).toThrow(/tensor\(\): unknown dtype "float8"; expected one of float32, float64/);
    expect(() => torch.zeros([1], { dtype: 'complex64' as DType })).toThrow(/zeros\(\): unknown dtype "complex64"/);
  });

  test('unknown device strings', async () => {
    expect(() => torch.tensor([1], { device: 'gpu' })).toThrow(TypeError);
    expect(() => torch.tensor([1], { device: 'gpu' })).toThrow(/tensor\(\): unknown device "gpu"; expected 'cpu', 'cuda' or 'cuda:N'/);
    expect(() => torch.zeros([1], { device: 'cuda:x' })).toThrow(/zeros\(\): unknown device "cuda:x"/);
    await expect(torch.tensor([1]).to({ device: 'tpu' })).rejects.toThrow(/to\(\): unknown device "tpu"/);
  });

  (torch.cuda.isAvailable() ? test.skip : test)("'cuda' on a machine without CUDA is an Error that mentions CUDA", async () => {
    expect(torch.cuda.deviceCount()).toBe(0);
    expect(() => torch.tensor([1], { device: 'cuda' })).toThrow(/tensor\(\): 'cuda' was asked for but CUDA is not available/);
    expect(() => torch.ones([1], { device: 'cuda:0' })).toThrow(/ones\(\): 'cuda:0' was asked for but CUDA is not available/);
    await expect(torch.tensor([1]).to('cuda')).rejects.toThrow(/CUDA is not available/);
  });

  test('a disposed tensor rejects every use with "disposed"; double dispose is a no-op', async () => {
    const t = torch.tensor([1, 2, 3]);
    const other = torch.tensor([1, 1, 1]);
    expect(t.disposed).toBe(false);
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.dispose()).not.toThrow();
    expect(t.disposed).toBe(true);
    expect(String(t)).toBe('Tensor(disposed)');

    await expect(t.data()).rejects.toThrow(/data\(\): the tensor was disposed/);
    await expect(t.tolist()).rejects.toThrow(/disposed/);
    await expect(t.item()).rejects.toThrow(/item\(\): the tensor was disposed/);
    await expect(t.add(1)).rejects.toThrow(/add: the tensor was disposed/);
    await expect(t.add(other)).rejects.toThrow(/disposed/);
    await expect(other.add(t)).rejects.toThrow(/disposed/);
    await expect(t.matmul(other)).rejects.toThrow(/disposed/);
    await expect(t.sum()).rejects.toThrow(/sum: the tensor was disposed/);
    await expect(t.mean()).rejects.toThrow(/disposed/);
    await expect(t.reshape(3)).rejects.toThrow(/disposed/);
    await expect(t.clone()).rejects.toThrow(/clone: the tensor was disposed/);
    await expect(torch.cat([other, t])).rejects.toThrow(/disposed/);
    expect(() => t.shape).toThrow(/shape: the tensor was disposed/);
    expect(() => t.dtype).toThrow(/dtype: the tensor was disposed/);
    // the other operand is untouched
    expect(await other.tolist()).toEqual([1, 1, 1]);
  });

  test('disposing a tensor while an op on it is queued does not break that op', async () => {
    const t = torch.ones([64, 64]);
    const p = t.matmul(t);
    t.dispose();
    const r = await p;
    expect(await (await r.sum()).item()).toBe(64 * 64 * 64);
  });

  test('wrong argument types for tensor()', () => {
    expect(() => torch.tensor('abc' as unknown as number[])).toThrow(/tensor\(\): cannot make a tensor from string/);
    expect(() => torch.tensor(null as unknown as number[])).toThrow(/tensor\(\): cannot make a tensor from null/);
    expect(() => torch.tensor({} as unknown as number[])).toThrow(/tensor\(\): cannot make a tensor from object/);
    expect(() => torch.tensor(['a'] as unknown as number[])).toThrow(/tensor\(\): elements must be numbers, bigints or booleans, got string/);
    expect(() => torch.tensor(new Uint16Array(2) as unknown as number[])).toThrow(/tensor\(\): unsupported TypedArray Uint16Array/);
    expect(() => torch.tensor([1], null as unknown as object)).toThrow(/tensor\(\): options must be an object/);
  });

  test('ragged arrays', () => {
    expect(() => torch.tensor([[1, 2], [3]])).toThrow(/tensor\(\): ragged nested array: element at \[1\] should have length 2/);
    expect(() => torch.tensor([1, [2]] as unknown as number[])).toThrow(/ragged nested array: element at \[1\] is an array, expected a scalar/);
    expect(() => torch.tensor([[1, 2], 3] as unknown as number[])).toThrow(/ragged nested array: element at \[1\] should have length 2/);
  });

  test('mixed element types', () => {
    expect(() => torch.tensor([1, 'a'] as unknown as number[])).toThrow(/tensor\(\): mixed element types \(number, string\)/);
    expect(() => torch.tensor([1n, 2] as unknown as number[])).toThrow(/tensor\(\): mixed element types \(bigint, number\)/);
    expect(() => torch.tensor([true, 1] as unknown as number[])).toThrow(/tensor\(\): mixed element types \(boolean, number\)/);
  });

  test('requiresGrad on a non-floating tensor', () => {
    expect(() => torch.tensor([1n], { requiresGrad: true })).toThrow(/only floating-point tensors can require gradients \(dtype is int64\)/);
    expect(() => torch.zeros([1], { dtype: 'int32', requiresGrad: true })).toThrow(/zeros\(\): only floating-point tensors can require gradients/);
  });

  test('a libtorch exception becomes a rejected Error naming the op, with libtorch\'s first line', async () => {
    const err = await torch.tensor([1n, 2n]).softmax(0).catch((e: unknown) => e);
    // an Error from Node's realm (native code), so checked by tag rather than jest-realm instanceof
    expect(Object.prototype.toString.call(err)).toBe('[object Error]');
    // the op's name, then libtorch's first line (its wording differs between 1.13 and 2.x)
    expect((err as Error).message).toMatch(/^softmax: .*not implemented for 'Long'$/);
    expect((err as Error).message).not.toMatch(/\n|Exception raised from|frame #/);
    // negative indices pass the TypeScript range check but libtorch's index_select refuses them
    await expect(torch.tensor([1, 2, 3]).indexSelect(0, torch.tensor([-1n]))).rejects.toThrow(/^indexSelect: .*out of range/);
    // the addon is still usable afterwards
    expect(await list(torch.tensor([1, 2]).add(1))).toEqual([2, 3]);
  });

  test('matmul of two dtypes is refused before libtorch, naming both', async () => {
    await expect(torch.tensor([[1n]]).matmul(torch.tensor([[1]]))).rejects.toThrow(/^matmul: both tensors must have the same dtype: got int64 and float32/);
  });

  test('a non-tensor, non-number operand rejects', async () => {
    await expect(torch.tensor([1]).add('x' as unknown as number)).rejects.toThrow(/add: expected a Tensor or a number/);
    await expect(torch.tensor([1]).matmul([1] as unknown as Tensor)).rejects.toThrow(/matmul: expected a Tensor/);
  });
});

describe('large host tensors (pooled buffers)', () => {
  test('a buffer reused after dispose holds the new data, and live tensors never share one', async () => {
    const n = 1 << 19; // 2 MB of float32: above the pooling threshold
    const a = torch.tensor(new Float32Array(n).fill(1));
    const b = torch.tensor(new Float32Array(n).fill(2)); // a is alive: b needs its own buffer
    expect(await (await a.sum()).item()).toBe(n);
    expect(await (await b.sum()).item()).toBe(2 * n);
    a.dispose();
    await (await b.sum()).item(); // the executor has released a's buffer by now
    const c = torch.tensor(Float32Array.from({ length: n }, (_, i) => i % 7));
    const expected = Array.from({ length: n }, (_, i) => i % 7).reduce((x, y) => x + y, 0);
    expect(await (await c.sum()).item()).toBe(expected);
    expect(await (await b.sum()).item()).toBe(2 * n);
    b.dispose();
    c.dispose();
  });
});
