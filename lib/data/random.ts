/**
 * `Rng`: a small seeded pseudo-random generator (sfc32) for shuffling and augmentation. The
 * DataLoader derives one per epoch for the order and one per sample for its random transforms, so a
 * seed fixes both no matter how many samples are prepared at once or in which order they finish.
 */

const GOLDEN = 0x9e3779b9;

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * A seeded random stream. Built from one or more integer keys (a seed, an epoch, a sample index):
 * the same keys always give the same stream, and different keys independent-looking ones.
 *
 * @example
 * const rng = new data.Rng(42, epoch, index);
 * const u = rng.random();        // [0, 1)
 * const k = rng.randint(0, 10);  // integer in [0, 10)
 */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(...keys: number[]) {
    let h = GOLDEN;
    keys.forEach((k, i) => {
      if (typeof k !== 'number' || !Number.isSafeInteger(k)) throw new TypeError(`Rng: key ${i} must be a safe integer: got ${String(k)}`);
      h = mix32((h ^ (k >>> 0)) + GOLDEN);
      h = mix32((h ^ (Math.floor(k / 4294967296) >>> 0)) + GOLDEN);
    });
    this.a = mix32(h + GOLDEN);
    this.b = mix32(h + 2 * GOLDEN);
    this.c = mix32(h + 3 * GOLDEN);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.uint32();
  }

  /** A fresh generator with an unpredictable seed (for loaders and direct `get` calls without one). */
  static random(): Rng {
    return new Rng(randomSeed());
  }

  /** The next 32 random bits as an unsigned integer. */
  uint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1) with 53 random bits. */
  random(): number {
    return ((this.uint32() >>> 5) * 67108864 + (this.uint32() >>> 6)) / 9007199254740992;
  }

  /** A float in [low, high). */
  uniform(low: number, high: number): number {
    return low + (high - low) * this.random();
  }

  /** An integer in [low, high) (as `torch.randint`). */
  randint(low: number, high: number): number {
    if (!(high > low)) throw new RangeError(`Rng.randint: high (${high}) must be greater than low (${low})`);
    return low + Math.floor(this.random() * (high - low));
  }

  /** A random permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): Uint32Array {
    const out = new Uint32Array(n);
    for (let i = 0; i < n; i++) out[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1));
      const t = out[i];
      out[i] = out[j];
      out[j] = t;
    }
    return out;
  }
}

/** An unpredictable non-negative safe integer, for loaders and splits created without a seed. */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 32) * 2 ** 20 + Math.floor(Math.random() * 2 ** 20);
}
