/** `torch.nn.parallel`: data-parallel training over `torch.distributed`. */
export { DistributedDataParallel } from './distributed';
export type { DistributedDataParallelOptions } from './distributed';
