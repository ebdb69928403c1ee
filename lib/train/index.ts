/** `train`: the fine-tuning loop, evaluation and prediction. */
export { fit } from './fit';
export type { FitOptions, History, EpochRecord, Stage, FitCallbacks } from './fit';
export { evaluate, predict } from './evaluate';
export type { EvaluateResult } from './evaluate';
export type { Batch, BatchSource } from './batch';
