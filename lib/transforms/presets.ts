/** The standard torchvision classification recipes. */
import * as check from '../check';
import { randomHorizontalFlip, randomResizedCrop, resize, centerCrop } from './geometry';
import { normalize, toTensor } from './tensor';
import { compose, interpolationArg, type Interpolation, type Transform } from './transform';

/**
 * torchvision's ImageNet recipes for a model that takes `size` x `size` inputs (224 by default).
 * Train: RandomResizedCrop(size) + RandomHorizontalFlip + ToTensor + Normalize(ImageNet).
 * Eval: Resize(floor(size * 256 / 224)) + CenterCrop(size) + ToTensor + Normalize(ImageNet).
 *
 * @example
 * const train = new data.ImageFolder('photos/train', { transform: transforms.imagenet({ train: true }) });
 * const val = new data.ImageFolder('photos/val', { transform: transforms.imagenet({ train: false }) });
 */
export function imagenet(options: { train: boolean; size?: number; interpolation?: Interpolation }): Transform {
  if (options === null || typeof options !== 'object' || typeof options.train !== 'boolean') {
    throw new TypeError('imagenet(): pass { train: true } for the augmenting training recipe or { train: false } for evaluation');
  }
  const size = check.integer(options.size ?? 224, 'imagenet(): size', 1);
  const interpolation = interpolationArg(options.interpolation, 'imagenet()');
  return options.train
    ? compose([randomResizedCrop(size, { interpolation }), randomHorizontalFlip(), toTensor(), normalize()])
    : compose([resize(Math.floor((size * 256) / 224), { interpolation }), centerCrop(size), toTensor(), normalize()]);
}
