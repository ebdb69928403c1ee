/**
 * Deterministic memory: torch.memory() accounting, tidy scopes (sync, async, nested, throwing),
 * keep(), [Symbol.dispose], the finalizer for forgotten tensors, and a leak test.
 *
 * Every test disposes what it makes, so the live counts are exact between tests.
 */
import { execFileSync } from 'child_process';
import * as path from 'path';
import * as torch from '../lib';
import type { Tensor } from '../lib';
import { ensureDist, ROOT } from './helpers/dist';
import { getGc } from './helpers/train-fixtures';

const gc = getGc();

const live = () => torch.memory().tensors;
const bytes = () => torch.memory().bytes;

/**
 * Collect garbage until the live count stops changing, so a test's baseline holds only live
 * tensors (a finalizer of an earlier test's garbage must not run in the middle of a count).
 */
async function settleGarbage(): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const before = live();
    gc();
    await new Promise((resolve) => setImmediate(resolve));
    if (i >= 2 && live() === before) return;
  }
}
beforeEach(settleGarbage);

describe('torch.memory()', () => {
  test('counts tensors and bytes going up on creation and down on dispose', async () => {
    const t0 = live();
    const b0 = bytes();

    const a = torch.zeros([1000]); // float32: 4000 bytes
    expect(live()).toBe(t0 + 1);
    expect(bytes()).toBe(b0 + 4000);

    const b = torch.tensor([1, 2, 3], { dtype: 'float64' }); // 24 bytes
    const c = torch.tensor([1n, 2n]); // int64: 16 bytes
    const d = torch.tensor([true, false, true]); // bool: 3 bytes
    const h = torch.ones([4], { dtype: 'float16' }); // 8 bytes
    expect(live()).toBe(t0 + 5);
    expect(bytes()).toBe(b0 + 4000 + 24 + 16 + 3 + 8);

    const sum = await a.add(1); // a computed result counts too
    expect(live()).toBe(t0 + 6);
    expect(bytes()).toBe(b0 + 8000 + 51);

    const m = torch.tensor([[1, 2], [3, 4]]); // 16 bytes
    const [v, i] = await m.max(1); // a pair of results: float32 [2] and int64 [2]
    expect(live()).toBe(t0 + 9);
    expect(bytes()).toBe(b0 + 8000 + 51 + 16 + 8 + 16);

    a.dispose();
    expect(live()).toBe(t0 + 8);
    expect(bytes()).toBe(b0 + 4000 + 51 + 16 + 8 + 16);
    a.dispose(); // double dispose is a no-op: counted once
    expect(live()).toBe(t0 + 8);

    for (const t of [b, c, d, h, sum, m, v, i]) t.dispose();
    expect(live()).toBe(t0);
    expect(bytes()).toBe(b0);
  });

  test('reports live tensors and bytes as numbers, and no cuda field without CUDA', () => {
    const m = torch.memory();
    expect(typeof m.tensors).toBe('number');
    expect(typeof m.bytes).toBe('number');
    expect(m.tensors).toBeGreaterThanOrEqual(0);
    if (!torch.cuda.isAvailable()) expect(m.cuda).toBeUndefined();
  });
});

describe('tidy', () => {
  test('sync: disposes intermediates and keeps the returned tensor', () => {
    const t0 = live();
    let a!: Tensor;
    let b!: Tensor;
    const out = torch.tidy(() => {
      a = torch.zeros([10]);
      b = torch.ones([10]);
      return b;
    });
    expect(out).toBe(b);
    expect(a.disposed).toBe(true);
    expect(b.disposed).toBe(false);
    expect(live()).toBe(t0 + 1);
    b.dispose();
    expect(live()).toBe(t0);
  });

  test('keeps tensors inside returned arrays, plain objects and Maps', () => {
    const t0 = live();
    const made: Tensor[] = [];
    const mk = () => {
      const t = torch.zeros([2]);
      made.push(t);
      return t;
    };
    const out = torch.tidy(() => {
      mk(); // dropped
      const x = mk();
      const y = mk();
      const z = mk();
      mk(); // dropped
      return { list: [x, { deep: y }], map: new Map([['z', z]]), n: 1 };
    });
    expect(out.n).toBe(1);
    expect(made.map((t) => t.disposed)).toEqual([true, false, false, false, true]);
    expect(out.list[0]).toBe(made[1]);
    expect((out.list[1] as { deep: Tensor }).deep).toBe(made[2]);
    expect(out.map.get('z')).toBe(made[3]);
    expect(live()).toBe(t0 + 3);
    made.forEach((t) => t.dispose());
    expect(live()).toBe(t0);
  });

  test('async: disposes tensors produced by awaited ops, keeps what the promise resolves to', async () => {
    const t0 = live();
    const b0 = bytes();
    const seen: Tensor[] = [];
    const out = await torch.tidy(async () => {
      const x = torch.tensor([1, 2, 3]);
      const y = await x.add(1);
      const z = await y.mul(2);
      const [v, i] = await z.max(0);
      seen.push(x, y, z, v, i);
      return [z, await v.add(0)];
    });
    expect(seen.map((t) => t.disposed)).toEqual([true, true, false, true, true]);
    expect(out[0]).toBe(seen[2]);
    expect(await out[0].tolist()).toEqual([4, 6, 8]);
    expect(await out[1].item()).toBe(8);
    expect(live()).toBe(t0 + 2);
    expect(bytes()).toBe(b0 + 12 + 4);
    out.forEach((t) => t.dispose());
    expect(live()).toBe(t0);
    expect(bytes()).toBe(b0);
  });

  test('nested: the inner scope hands its result to the outer one, which disposes it unless returned', async () => {
    const t0 = live();
    let a!: Tensor;
    let b!: Tensor;
    let c!: Tensor;
    let d!: Tensor;
    const out = torch.tidy(() => {
      const inner = torch.tidy(() => {
        a = torch.zeros([1]);
        b = torch.ones([1]);
        c = torch.full([1], 3);
        return { b, c };
      });
      expect(a.disposed).toBe(true);
      expect(inner.b.disposed).toBe(false);
      expect(inner.c.disposed).toBe(false);
      d = torch.zeros([1]);
      return inner.c; // b is not returned by the outer scope
    });
    expect(out).toBe(c);
    expect([a, b, c, d].map((t) => t.disposed)).toEqual([true, true, false, true]);
    expect(live()).toBe(t0 + 1);
    c.dispose();

    // the same with async scopes
    const seen: Tensor[] = [];
    const r = await torch.tidy(async () => {
      const kept = await torch.tidy(async () => {
        const p = torch.tensor([1, 2]);
        const q = await p.add(1);
        seen.push(p, q);
        return q;
      });
      expect(seen[0].disposed).toBe(true);
      expect(kept.disposed).toBe(false);
      const s = await kept.sum();
      seen.push(s);
      return s;
    });
    expect(seen.map((t) => t.disposed)).toEqual([true, true, false]);
    expect(await r.item()).toBe(5);
    r.dispose();
    expect(live()).toBe(t0);
  });

  test('a scope that throws disposes everything it made and rethrows', async () => {
    const t0 = live();
    const made: Tensor[] = [];
    expect(() =>
      torch.tidy(() => {
        made.push(torch.zeros([4]), torch.ones([4]));
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(made.every((t) => t.disposed)).toBe(true);
    expect(live()).toBe(t0);

    const asyncMade: Tensor[] = [];
    await expect(
      torch.tidy(async () => {
        const x = torch.zeros([4]);
        asyncMade.push(x, await x.add(1));
        throw new Error('async boom');
      }),
    ).rejects.toThrow('async boom');
    expect(asyncMade.every((t) => t.disposed)).toBe(true);
    expect(live()).toBe(t0);

    // an op that rejects inside the scope (shape error) also cleans up
    const opMade: Tensor[] = [];
    await expect(
      torch.tidy(async () => {
        const x = torch.zeros([2, 3]);
        opMade.push(x, await x.add(2));
        return x.matmul(x);
      }),
    ).rejects.toThrow(/matmul: shapes \[2,3\] and \[2,3\] cannot be multiplied/);
    expect(opMade.every((t) => t.disposed)).toBe(true);
    expect(live()).toBe(t0);
  });

  test('keep() lets a tensor outlive the scope (and enclosing scopes) without being returned', async () => {
    const t0 = live();
    let kept!: Tensor;
    let dropped!: Tensor;
    torch.tidy(() => {
      torch.tidy(() => {
        kept = torch.keep(torch.zeros([3]));
        dropped = torch.zeros([3]);
      });
    });
    expect(kept.disposed).toBe(false);
    expect(dropped.disposed).toBe(true);

    let keptAsync!: Tensor;
    await torch.tidy(async () => {
      keptAsync = torch.keep(await kept.add(1));
    });
    expect(keptAsync.disposed).toBe(false);
    expect(await keptAsync.tolist()).toEqual([1, 1, 1]);

    // keep() outside any scope just returns its argument
    expect(torch.keep(kept)).toBe(kept);
    kept.dispose();
    keptAsync.dispose();
    expect(live()).toBe(t0);
  });

  test('tensors made before the scope are not touched', () => {
    const t0 = live();
    const outside = torch.zeros([2]);
    torch.tidy(() => {
      torch.ones([2]);
      return 0;
    });
    expect(outside.disposed).toBe(false);
    outside.dispose();
    expect(live()).toBe(t0);
  });

  test('two async scopes running at once each dispose only their own tensors', async () => {
    const t0 = live();
    const mine: Tensor[][] = [[], []];
    const scope = (k: number) =>
      torch.tidy(async () => {
        let x = torch.full([8], k);
        mine[k].push(x);
        for (let i = 0; i < 5; i++) {
          x = await x.add(1);
          mine[k].push(x);
        }
        return x;
      });
    const [r0, r1] = await Promise.all([scope(0), scope(1)]);
    expect(await r0.tolist()).toEqual(Array(8).fill(5));
    expect(await r1.tolist()).toEqual(Array(8).fill(6));
    for (const list of mine) {
      expect(list.slice(0, -1).every((t) => t.disposed)).toBe(true);
      expect(list[list.length - 1].disposed).toBe(false);
    }
    r0.dispose();
    r1.dispose();
    expect(live()).toBe(t0);
  });

  test('rejects a non-function', () => {
    expect(() => torch.tidy(42 as unknown as () => void)).toThrow(/tidy\(fn\): fn must be a function/);
  });
});

describe('[Symbol.dispose]', () => {
  test('disposes the tensor, and twice is a no-op', () => {
    const t0 = live();
    const t = torch.zeros([5]);
    expect(typeof t[Symbol.dispose]).toBe('function');
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
    expect(live()).toBe(t0);
    t[Symbol.dispose]();
    expect(live()).toBe(t0);
  });

  test('`using` disposes at the end of the block', async () => {
    const t0 = live();
    let escaped!: Tensor;
    {
      using t = torch.ones([3]);
      escaped = t;
      expect(await t.tolist()).toEqual([1, 1, 1]);
      expect(live()).toBe(t0 + 1);
    }
    expect(escaped.disposed).toBe(true);
    expect(live()).toBe(t0);
  });
});

describe('finalizer', () => {
  test('tensors JS forgot are released after garbage collection', async () => {
    const t0 = live();
    const b0 = bytes();
    (() => {
      for (let i = 0; i < 200; i++) torch.zeros([250]);
    })();
    expect(live()).toBe(t0 + 200);
    expect(bytes()).toBe(b0 + 200 * 1000);
    // Node-API finalizers run after a GC, possibly on a later turn of the event loop: collect
    // and yield a bounded number of times (no timers).
    for (let i = 0; i < 50 && live() > t0; i++) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(live()).toBe(t0);
    expect(bytes()).toBe(b0);
  });
});

describe('leak', () => {
  test('20,000 create / compute / dispose cycles grow RSS by less than 50 MB', async () => {
    const data = new Float32Array(1000).map((_, i) => i);
    const t0 = live();
    const cycle = async (): Promise<void> => {
      const a = torch.tensor(data);
      const b = await a.add(1);
      a.dispose();
      b.dispose();
    };
    // Cycles run in batches of 50 in flight at once: queued FIFO, each awaited before disposing.
    const run = async (n: number): Promise<void> => {
      for (let done = 0; done < n; done += 50) {
        await Promise.all(Array.from({ length: Math.min(50, n - done) }, cycle));
      }
    };

    await run(2000); // warm-up: allocator pools, JIT, lazy libtorch init
    gc();
    const rss0 = process.memoryUsage().rss;
    await run(20000);
    gc();
    const rss1 = process.memoryUsage().rss;
    const grewMB = (rss1 - rss0) / (1 << 20);

    expect(live()).toBe(t0);
    expect(grewMB).toBeLessThan(50);
    // the same work with a tidy scope in place of explicit dispose
    const tidyRun = async (n: number) => {
      for (let i = 0; i < n; i++) {
        await torch.tidy(async () => {
          const a = torch.tensor(data);
          await (await a.add(1)).mul(2);
        });
      }
    };
    await tidyRun(2000);
    gc();
    expect(live()).toBe(t0);
    expect((process.memoryUsage().rss - rss0) / (1 << 20)).toBeLessThan(50);
  });
});

describe('malloc tuning', () => {
  test('glibc keeps blocks under 32 MiB in the heap; FINETORCH_MALLOC_TUNING=0 leaves malloc alone', () => {
    expect(torch.backends.malloc.tuning).toEqual({ mmapThreshold: 32 << 20, trimThreshold: 128 << 20, topPad: 64 << 20 });
    ensureDist();
    const script = `process.stdout.write(JSON.stringify(require(${JSON.stringify(path.join(ROOT, 'dist'))}).backends.malloc.tuning))`;
    const run = (env: NodeJS.ProcessEnv) =>
      execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
    expect(JSON.parse(run({ FINETORCH_MALLOC_TUNING: '0' }))).toBeNull();
    expect(JSON.parse(run({ FINETORCH_MALLOC_TUNING: '' }))).toEqual({ mmapThreshold: 33554432, trimThreshold: 134217728, topPad: 67108864 });
  });
});
