/**
 * `transforms`: image transforms with torchvision's names and semantics, giving torchvision's
 * pixels. Images are decoded by libjpeg-turbo (JPEGs) or sharp (see {@link setImageBackend}),
 * resized by PIL's algorithm in native code, off the main thread; `toTensor` and `normalize` are
 * fused into the write of the batch.
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
export { getImageBackend, setImageBackend } from './backend';
export type { ImageBackend } from './backend';
