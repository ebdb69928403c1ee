/**
 * Transforms from JSON: the inverse of `Transform.toJSON()`, so a model file can carry the exact
 * preprocessing it was trained with (see `train.describe`).
 */
import { colorJitter } from './color';
import { centerCrop, randomHorizontalFlip, randomResizedCrop, resize } from './geometry';
import { normalize, toTensor } from './tensor';
import { compose, Transform, type TransformJSON } from './transform';

type Builder = (o: Record<string, unknown>, what: string) => Transform;

/* eslint-disable @typescript-eslint/no-explicit-any -- the factories validate their own arguments */
const BUILDERS: Record<TransformJSON['type'], { keys: string[]; build: Builder }> = {
  compose: {
    keys: ['transforms'],
    build: (o, what) => {
      if (!Array.isArray(o.transforms)) throw new TypeError(`${what}: compose needs 'transforms', an array`);
      return compose(o.transforms.map((t, i) => build(t, `${what}.transforms[${i}]`)));
    },
  },
  resize: { keys: ['size', 'interpolation', 'maxSize'], build: (o) => resize(o.size as any, { interpolation: o.interpolation as any, maxSize: o.maxSize as any }) },
  centerCrop: { keys: ['size'], build: (o) => centerCrop(o.size as any) },
  randomResizedCrop: {
    keys: ['size', 'scale', 'ratio', 'interpolation'],
    build: (o) => randomResizedCrop(o.size as any, { scale: o.scale as any, ratio: o.ratio as any, interpolation: o.interpolation as any }),
  },
  randomHorizontalFlip: { keys: ['p'], build: (o) => randomHorizontalFlip(o.p as any) },
  colorJitter: {
    keys: ['brightness', 'contrast', 'saturation'],
    build: (o) => colorJitter({ brightness: o.brightness as any, contrast: o.contrast as any, saturation: o.saturation as any }),
  },
  toTensor: { keys: [], build: () => toTensor() },
  normalize: { keys: ['mean', 'std'], build: (o) => normalize({ mean: o.mean as any, std: o.std as any }) },
};
/* eslint-enable @typescript-eslint/no-explicit-any */

function build(json: unknown, what: string): Transform {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new TypeError(`${what}: expected an object with a 'type'`);
  const o = json as Record<string, unknown>;
  const entry = typeof o.type === 'string' && Object.hasOwn(BUILDERS, o.type) ? BUILDERS[o.type as TransformJSON['type']] : undefined;
  if (!entry) throw new TypeError(`${what}: unknown transform type ${JSON.stringify(o.type)} (known: ${Object.keys(BUILDERS).join(', ')})`);
  // An unknown key would be an option this version ignores, so the rebuilt transform would differ.
  const extra = Object.keys(o).filter((k) => k !== 'type' && !entry.keys.includes(k));
  if (extra.length) throw new TypeError(`${what}: ${o.type} has no option ${extra.map((k) => `'${k}'`).join(', ')}`);
  try {
    return entry.build(o, what);
  } catch (err) {
    if ((err as Error).message.startsWith(what)) throw err;
    throw new TypeError(`${what}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Rebuilds a transform from its JSON (`transform.toJSON()`, or that JSON as a string). Every
 * argument is checked as the factory functions check it; an unknown type or option is an Error.
 *
 * @example
 * const saved = JSON.stringify(transforms.imagenet({ train: false, size: 64 }));
 * const t = transforms.fromJSON(saved); // resize(73), centerCrop(64), toTensor(), normalize()
 */
export function fromJSON(json: TransformJSON | string): Transform {
  let value: unknown = json;
  if (typeof json === 'string') {
    try {
      value = JSON.parse(json);
    } catch (err) {
      throw new SyntaxError(`transforms.fromJSON: not valid JSON (${(err as Error).message})`, { cause: err });
    }
  }
  return build(value, 'transforms.fromJSON');
}

/**
 * @internal The [height, width] that a transform's last sizing step produces, or undefined when no
 * step fixes the output size (only a `resize` of the shorter side, or no geometry at all).
 */
export function outputSize(json: TransformJSON): [number, number] | undefined {
  const steps = json.type === 'compose' ? json.transforms : [json];
  for (let i = steps.length - 1; i >= 0; i--) {
    const s = steps[i];
    if (s.type === 'compose') {
      const inner = outputSize(s);
      if (inner) return inner;
    } else if (s.type === 'centerCrop' || s.type === 'randomResizedCrop' || s.type === 'resize') {
      if (Array.isArray(s.size)) return [s.size[0], s.size[1]];
      if (s.type !== 'resize') return [s.size, s.size];
      return undefined;
    }
  }
  return undefined;
}
