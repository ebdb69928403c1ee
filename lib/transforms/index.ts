/**
 * `transforms`: image transforms with torchvision's names and semantics. Geometric steps run in
 * sharp on the decoded image (resizes that libvips would do differently, in a port of PIL's
 * resampling); `toTensor` and `normalize` are fused into the write of the batch.
 *
 * @example
 * import { transforms } from 'finetorch';
 * const train = transforms.imagenet({ train: true, size: 224 });
 * const custom = transforms.compose([
 *   transforms.randomResizedCrop(160, { scale: [0.25, 1] }),
 *   transforms.randomHorizontalFlip(),
 *   transforms.colorJitter({ brightness: 0.2, contrast: 0.2 }),
 *   transforms.toTensor(),
 *   transforms.normalize(),
 * ]);
 */
export { Transform, compose } from './transform';
export type { Interpolation, TransformJSON } from './transform';
export { fromJSON } from './json';
export { resize, centerCrop, randomResizedCrop, randomHorizontalFlip } from './geometry';
export type { RandomResizedCropOptions } from './geometry';
export { colorJitter } from './color';
export type { ColorJitterOptions } from './color';
export { toTensor, normalize, IMAGENET_MEAN, IMAGENET_STD } from './tensor';
export { imagenet } from './presets';
