/** `torch.nn.functional`. */
export { crossEntropy } from './loss';
export { binaryCrossEntropyWithLogits, mseLoss, smoothL1Loss, huberLoss } from './losses';
