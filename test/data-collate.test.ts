/**
 * data.collate and the DataLoader on structured samples: named and positional inputs, array
 * targets, and variable-length 1-D sequences padded with padValue.
 */
import type { Tensor } from '../lib';
import { data } from '../lib';

const seq = (...xs: number[]) => ({ data: Int32Array.from(xs), shape: [xs.length] });
const f32 = (...xs: number[]) => ({ data: Float32Array.from(xs), shape: [xs.length] });
const values = async (t: Tensor) => Array.from(await t.data() as ArrayLike<number | bigint>, Number);

const TEXT = [
  { input: { input_ids: seq(5, 9, 2), attention_mask: seq(1, 1, 1) }, target: 1 },
  { input: { input_ids: seq(7), attention_mask: seq(1) }, target: 0 },
  { input: { input_ids: seq(3, 4), attention_mask: seq(1, 1) }, target: 2 },
];

class ListDataset<T> {
  constructor(private readonly items: T[]) {}
  get length() { return this.items.length; }
  async get(i: number) { return this.items[i]; }
}

describe('data.collate', () => {
  test('named inputs of different lengths are padded to the longest with padValue; class targets become int64 [B]', async () => {
    const b = data.collate(TEXT, { padValue: 0 });
    const input = b.input as Record<string, Tensor>;
    expect(Object.keys(input)).toEqual(['input_ids', 'attention_mask']);
    expect(input.input_ids.shape).toEqual([3, 3]);
    expect(input.input_ids.dtype).toBe('int32');
    expect(await values(input.input_ids)).toEqual([5, 9, 2, 7, 0, 0, 3, 4, 0]);
    expect(await values(input.attention_mask)).toEqual([1, 1, 1, 1, 0, 0, 1, 1, 0]);
    expect(b.target.dtype).toBe('int64');
    expect(await values(b.target)).toEqual([1, 0, 2]);
  });

  test('padValue per field: token labels padded with -100, ids with 0', async () => {
    const items = [
      { input: { input_ids: seq(5, 9) }, target: { data: BigInt64Array.of(1n, 2n), shape: [2] } },
      { input: { input_ids: seq(7) }, target: { data: BigInt64Array.of(3n), shape: [1] } },
    ];
    const b = data.collate(items, { padValue: { input_ids: 0, target: -100 } });
    expect(await values((b.input as Record<string, Tensor>).input_ids)).toEqual([5, 9, 7, 0]);
    expect(await values(b.target)).toEqual([1, 2, 3, -100]);
  });

  test('positional inputs and float array targets (multi-label) stack to Tensor[] and a float [B, L] target', async () => {
    const b = data.collate([
      { input: [f32(1, 2), seq(1, 0)], target: f32(0, 1, 1) },
      { input: [f32(3, 4), seq(1, 1)], target: f32(1, 0, 0) },
    ]);
    const [x, m] = b.input as Tensor[];
    expect(x.shape).toEqual([2, 2]);
    expect(m.shape).toEqual([2, 2]);
    expect(b.target.dtype).toBe('float32');
    expect(await values(b.target)).toEqual([0, 1, 1, 1, 0, 0]);
  });

  test('sequences of different lengths without padValue are an Error that names the field and padValue', () => {
    expect(() => data.collate(TEXT)).toThrow(/'input_ids' has shape \[3\] in sample 0 but \[1\] in sample 1; pass padValue/);
  });

  test('samples that disagree on fields or array types are Errors', () => {
    expect(() => data.collate([TEXT[0], { input: { input_ids: seq(1) }, target: 0 }], { padValue: 0 }))
      .toThrow(/sample 1's input has fields input_ids but sample 0's has input_ids, attention_mask/);
    expect(() => data.collate([{ input: f32(1), target: 0 }, { input: seq(1), target: 0 }]))
      .toThrow(/'input' holds Float32Array in sample 0 but Int32Array in sample 1/);
    expect(() => data.collate(TEXT, { padValue: 'zero' as unknown as number })).toThrow(/padValue must be a finite number/);
  });
});

describe('DataLoader on structured samples', () => {
  test('batches named, variable-length inputs with padValue', async () => {
    const loader = new data.DataLoader<(typeof TEXT)[number], { input_ids: Tensor; attention_mask: Tensor }>(new ListDataset(TEXT), { batchSize: 2, padValue: 0 });
    const shapes: number[][] = [];
    for await (const { input, target } of loader) {
      shapes.push(input.input_ids.shape);
      expect(input.attention_mask.shape).toEqual(input.input_ids.shape);
      input.input_ids.dispose(); input.attention_mask.dispose(); target.dispose();
    }
    expect(shapes).toEqual([[2, 3], [1, 2]]);
  });

  test('plain samples still take the one-copy path, and padValue pads plain 1-D inputs too', async () => {
    const plain = [{ input: f32(1, 2, 3), target: 0 }, { input: f32(4), target: 1 }];
    const loader = new data.DataLoader(new ListDataset(plain), { batchSize: 2, padValue: -1 });
    for await (const { input, target } of loader) {
      expect(await values(input)).toEqual([1, 2, 3, 4, -1, -1]);
      input.dispose(); target.dispose();
    }
    const strict = new data.DataLoader(new ListDataset(plain), { batchSize: 2 });
    await expect((async () => { for await (const b of strict) b.input.dispose(); })()).rejects.toThrow(/samples in a batch must have one shape/);
  });

  test('a structured batch that fails names the samples', async () => {
    const loader = new data.DataLoader(new ListDataset(TEXT), { batchSize: 3 });
    await expect((async () => { for await (const b of loader) b.target.dispose(); })())
      .rejects.toThrow(/DataLoader: batch of samples 0, 1, 2: collate: 'input_ids' has shape \[3\] in sample 0 but \[1\] in sample 1/);
    await expect((async () => { for await (const b of loader) b.target.dispose(); })()).rejects.toMatchObject({ code: 'FINETORCH_SHAPE' });
  });
});
