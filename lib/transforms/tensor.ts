/** The tensor end of a transform: ToTensor and Normalize, fused into the write of the batch. */
import { Transform } from './transform';

/** ImageNet's per-channel mean (RGB), the default of `normalize()`. */
export const IMAGENET_MEAN: readonly number[] = [0.485, 0.456, 0.406];
/** ImageNet's per-channel standard deviation (RGB), the default of `normalize()`. */
export const IMAGENET_STD: readonly number[] = [0.229, 0.224, 0.225];

/**
 * Converts the image to CHW float32 in [0, 1], as torchvision's `ToTensor` (HWC 8-bit / 255).
 * Datasets write the result straight into the batch buffer.
 *
 * @example
 * transforms.compose([transforms.centerCrop(28), transforms.toTensor()]);
 */
export function toTensor(): Transform {
  return new Transform('toTensor()', [{ kind: 'toTensor' }], { type: 'toTensor' });
}

/**
 * Normalizes each channel: `(x - mean[c]) / std[c]`, as torchvision's `Normalize` (float32 math).
 * ImageNet's mean and std by default; one value applies to every channel.
 *
 * @example
 * transforms.normalize();                                  // ImageNet
 * transforms.normalize({ mean: [0.2860], std: [0.3530] }); // Fashion-MNIST
 */
export function normalize(options: { mean?: number[]; std?: number[] } = {}): Transform {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw new TypeError('normalize(): options must be { mean, std }');
  const mean = options.mean ?? [...IMAGENET_MEAN];
  const std = options.std ?? [...IMAGENET_STD];
  const nums = (v: unknown, what: string) => {
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw new TypeError(`normalize(): ${what} must be a non-empty array of numbers: got ${JSON.stringify(v)}`);
    }
  };
  nums(mean, 'mean');
  nums(std, 'std');
  if (mean.length !== std.length) throw new Error(`normalize(): mean has ${mean.length} values but std has ${std.length}`);
  std.forEach((s, i) => {
    if (s === 0) throw new RangeError(`normalize(): std[${i}] is 0, which would divide by zero`);
  });
  return new Transform(`normalize({ mean: [${mean}], std: [${std}] })`, [{ kind: 'normalize', mean: [...mean], std: [...std] }],
    { type: 'normalize', mean: [...mean], std: [...std] });
}
