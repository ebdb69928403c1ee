/**
 * `data`: datasets and the DataLoader. Samples live in JS memory; the loader prepares batches
 * ahead of training and makes each one into tensors with a single copy.
 *
 * @example
 * import { data, transforms } from 'finetorch';
 * const ds = new data.ImageFolder('photos/train', { transform: transforms.imagenet({ train: true }) });
 * const [train, val] = data.randomSplit(ds, [0.9, 0.1], { seed: 0 });
 * const loader = new data.DataLoader(train, { batchSize: 32, shuffle: true, seed: 0 });
 */
export { Dataset, Subset, ConcatDataset, randomSplit, SkippedSampleError } from './dataset';
export type { Sample, HostArray, HostData, HostDataConstructor, ItemContext, PreparedSample, DatasetLike } from './dataset';
export { TensorDataset } from './tensor_dataset';
export type { TensorSource } from './tensor_dataset';
export { DataLoader, defaultCollate } from './loader';
export type { DataLoaderOptions, SkippedSample } from './loader';
export { collate } from './collate';
export type { StructuredSample, CollateOptions } from './collate';
export { ImageFolder, IMAGE_EXTENSIONS } from './image_folder';
export type { ImageFolderOptions, ImageFolderReport, DuplicateImage } from './image_folder';
export { FashionMNIST } from './fashion_mnist';
export type { FashionMNISTOptions } from './fashion_mnist';
export { Rng } from './random';
export { DistributedSampler } from './distributed_sampler';
export type { DistributedSamplerOptions, Sampler } from './distributed_sampler';
