import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { DataLoader, FashionMNIST, Rng } from '../lib/data';
import * as T from '../lib/transforms';
import { runPython, scratchDir } from './helpers/python';

const ROOT = FashionMNIST.defaultRoot;
const ctx = () => ({ rng: new Rng(0) });

describe('FashionMNIST (Debian dataset-fashion-mnist)', () => {
  let dir: string;
  beforeAll(() => { dir = scratchDir('fmnist'); });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('60,000 training and 10,000 test samples, labels in [0, 10), ten class names', () => {
    const train = new FashionMNIST({ train: true });
    const test = new FashionMNIST({ train: false });
    expect(train.length).toBe(60000);
    expect(test.length).toBe(10000);
    for (const ds of [train, test]) {
      expect(Math.max(...ds.targets)).toBe(9);
      expect(Math.min(...ds.targets)).toBe(0);
    }
    expect(FashionMNIST.classes).toHaveLength(10);
    expect(FashionMNIST.classes[9]).toBe('Ankle boot');
  });

  test('items are float32 [1, 28, 28] in [0, 1] equal to the IDX bytes / 255, as torchvision reads them', async () => {
    const test = new FashionMNIST({ train: false });
    const ref = JSON.parse(runPython(`
import gzip, json, sys
raw = gzip.open(sys.argv[1] + '/t10k-images-idx3-ubyte.gz').read()[16:]
lab = gzip.open(sys.argv[1] + '/t10k-labels-idx1-ubyte.gz').read()[8:]
print(json.dumps({'img': list(raw[9999 * 784:10000 * 784]), 'labels': [lab[0], lab[9999]]}))
`, undefined, [ROOT])) as { img: number[]; labels: number[] };
    const last = await test.get(9999, ctx());
    expect(last.input.shape).toEqual([1, 28, 28]);
    expect(last.input.data).toEqual(Float32Array.from(ref.img, (v) => v / 255));
    expect([(await test.get(0)).target, last.target]).toEqual(ref.labels);
  });

  test('the DataLoader batches it into [B, 1, 28, 28] float32 and int64 targets', async () => {
    const loader = new DataLoader(new FashionMNIST({ train: false }), { batchSize: 1000, shuffle: true, seed: 0 });
    expect(loader.length).toBe(10);
    let n = 0;
    const counts = new Array(10).fill(0);
    for await (const { input, target } of loader) {
      expect(input.shape).toEqual([1000, 1, 28, 28]);
      expect(input.dtype).toBe('float32');
      expect(target.dtype).toBe('int64');
      for (const t of await target.data() as BigInt64Array) counts[Number(t)]++;
      n += input.shape[0];
      input.dispose();
      target.dispose();
    }
    expect(n).toBe(10000);
    expect(counts).toEqual(new Array(10).fill(1000));
  });

  test('transforms apply to the 1-channel image: normalize, resize; ImageNet stats on 1 channel are refused', async () => {
    const norm = new FashionMNIST({ train: false, transform: T.compose([T.toTensor(), T.normalize({ mean: [0.2860], std: [0.3530] })]) });
    const plain = new FashionMNIST({ train: false });
    const a = await norm.get(3, ctx());
    const b = await plain.get(3, ctx());
    expect(a.input.data[400]).toBeCloseTo(((b.input.data[400] as number) - 0.286) / 0.353, 6);
    const big = await new FashionMNIST({ train: false, transform: T.compose([T.resize([32, 32]), T.toTensor()]) }).get(3, ctx());
    expect(big.input.shape).toEqual([1, 32, 32]);
    const imagenet = new FashionMNIST({ train: false, transform: T.imagenet({ train: false, size: 28 }) });
    await expect(imagenet.get(0)).rejects.toThrow(/mean and std have 3 values but the image has 1 channel/);
  });

  test('plain (not gzipped) files and torchvision\'s FashionMNIST/raw layout are found', async () => {
    const raw = path.join(dir, 'tv', 'FashionMNIST', 'raw');
    fs.mkdirSync(raw, { recursive: true });
    for (const f of ['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']) {
      fs.writeFileSync(path.join(raw, f), zlib.gunzipSync(fs.readFileSync(path.join(ROOT, `${f}.gz`))));
    }
    const ds = new FashionMNIST({ root: path.join(dir, 'tv'), train: false });
    expect(ds.length).toBe(10000);
    expect((await ds.get(17, ctx())).input.data).toEqual((await new FashionMNIST({ train: false }).get(17, ctx())).input.data);
  });

  test('missing files say how to get them; corrupt files and bad options are clear errors', async () => {
    expect(() => new FashionMNIST({ root: path.join(dir, 'nothing') })).toThrow(/apt-get install dataset-fashion-mnist/);
    const bad = path.join(dir, 'bad');
    fs.mkdirSync(bad);
    fs.copyFileSync(path.join(ROOT, 't10k-labels-idx1-ubyte.gz'), path.join(bad, 't10k-labels-idx1-ubyte.gz'));
    const images = zlib.gunzipSync(fs.readFileSync(path.join(ROOT, 't10k-images-idx3-ubyte.gz')));
    fs.writeFileSync(path.join(bad, 't10k-images-idx3-ubyte'), images.subarray(0, 5000));
    const cut = new FashionMNIST({ root: bad, train: false });
    await expect(cut.get(0)).rejects.toThrow(/should hold 7840000 bytes .* but holds 4984 \(truncated\?\)/);
    fs.writeFileSync(path.join(bad, 't10k-labels-idx1-ubyte.gz'), zlib.gzipSync(Buffer.from('not an idx file')));
    expect(() => new FashionMNIST({ root: bad, train: false })).toThrow(/is not an IDX file/);
    expect(() => new FashionMNIST({ train: 'yes' as unknown as boolean })).toThrow(/train must be a boolean/);
    expect(() => new FashionMNIST({ download: true } as object)).toThrow(/unknown option 'download'/);
  });
});
