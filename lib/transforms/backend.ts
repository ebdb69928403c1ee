/**
 * Which library decodes images, as torchvision's `set_image_backend`.
 */
import { native } from '../native';

/**
 * `'libjpeg'`: JPEGs are decoded by libjpeg-turbo, the library PIL decodes with (the same pixels as
 * torchvision), only as far as the first crop reaches, and resized in the same native task; other
 * formats by sharp. `'sharp'`: sharp (libvips) decodes every image.
 */
export type ImageBackend = 'libjpeg' | 'sharp';

let backend: ImageBackend = typeof native.decodeJpeg === 'function' ? 'libjpeg' : 'sharp';

/**
 * The library that decodes images: `'libjpeg'` by default where finetorch was built with
 * libjpeg-turbo's headers (scripts/setup installs them), else `'sharp'`.
 *
 * @example
 * import { transforms } from 'finetorch';
 * transforms.getImageBackend(); // 'libjpeg'
 */
export function getImageBackend(): ImageBackend {
  return backend;
}

/**
 * Chooses the library that decodes images (see {@link ImageBackend}); takes effect for the next
 * image decoded. Both give torchvision's pixels on the JPEGs we test with; `'libjpeg'` is faster
 * (no libvips pipeline per image, and only the rows and columns a crop needs are decoded).
 *
 * @example
 * import { transforms } from 'finetorch';
 * transforms.setImageBackend('sharp'); // every image through sharp/libvips
 */
export function setImageBackend(name: ImageBackend): void {
  if (name !== 'libjpeg' && name !== 'sharp') throw new TypeError(`setImageBackend: backend must be 'libjpeg' or 'sharp', got ${JSON.stringify(name)}`);
  if (name === 'libjpeg' && typeof native.decodeJpeg !== 'function') {
    throw new Error("setImageBackend: this build of finetorch has no libjpeg (install libjpeg62-turbo-dev and rebuild: scripts/setup)");
  }
  backend = name;
}
