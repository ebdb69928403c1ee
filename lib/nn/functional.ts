/** `torch.nn.functional`. */
export { crossEntropy } from './loss';
