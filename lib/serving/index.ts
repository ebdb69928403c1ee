/**
 * `torch.serving`: answering predictions while the same process trains (see `Predictor`).
 *
 * @example
 * const p = await torch.serving.Predictor.load('model.pt', { threads: 1, maxBatch: 16 });
 * const top = await p.classify(image, { topk: 3, labels });
 */
export { Predictor } from './predictor';
export { imageInput } from './image';
export { createService, HttpError, readBody } from './http';
export { finetuneRoute } from './finetune';
export type { FinetuneStatus, FinetuneRouteOptions, FinetuneRoute } from './finetune';
export type { ServiceOptions, RouteHandler } from './http';
export type { PredictorOptions, PredictorInput, PredictorStats, Classification } from './predictor';
