/**
 * An image classification service on Node's own http, over a `Predictor`: the part of
 * `examples/service.ts` and `finetorch serve` that answers requests.
 */
import * as http from 'http';
import * as check from '../check';
import { imagenet, type Transform } from '../transforms';
import { fromJSON } from '../transforms/json';
import { imageInput } from './image';
import type { Predictor } from './predictor';

/** A route's handler: what it answers as JSON, or an `HttpError`. */
export type RouteHandler = (req: http.IncomingMessage) => Promise<{ status: number; body: unknown }>;

/** Options of `createService`. */
export interface ServiceOptions {
  /**
   * The eval transform that turns an upload into the model's input (default: the one the model
   * file records, else `transforms.imagenet({ train: false, size: 224 })`).
   */
  transform?: Transform;
  /** Class names, by output index (default: the ones the model file records, else indices). */
  labels?: readonly string[];
  /** How many classes POST /predict answers (default 5). */
  topk?: number;
  /** The largest accepted upload, in bytes (default 10 MiB). */
  maxBytes?: number;
  /** More routes, keyed `'POST /finetune'`; a handler reads its body with `readBody`. */
  routes?: Record<string, RouteHandler>;
  /** More fields of GET /status's answer. */
  status?: () => Record<string, unknown>;
  /**
   * Where a `transform` or `labels` that disagrees with the model file's record is reported
   * (default: `process.emitWarning` with code FINETORCH_METADATA_OVERRIDE).
   */
  warn?: (message: string) => void;
}

/** An Error a route answers with its HTTP status and `{ error: message }`. */
export class HttpError extends Error {
  constructor(readonly status: number, message: string) { super(message); }
}

/** A request's body, refused with 413 past `maxBytes`. */
export function readBody(req: http.IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        reject(new HttpError(413, `the body is larger than ${maxBytes} bytes`));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function defaultWarn(message: string): void {
  process.emitWarning(message, { code: 'FINETORCH_METADATA_OVERRIDE' });
}

/**
 * The transform and labels to serve with: the options', else what the model file records; an
 * option that disagrees with the record is reported, since the model then sees (or is named by)
 * what it was not trained on.
 */
function servingDefaults(predictor: Predictor, options: ServiceOptions): { transform: Transform; labels?: readonly string[] } {
  const meta = predictor.metadata;
  const warn = options.warn ?? defaultWarn;
  const recorded = meta?.transform && fromJSON(meta.transform);
  if (options.transform && recorded && JSON.stringify(options.transform) !== JSON.stringify(recorded)) {
    warn(`the transform given (${options.transform}) overrides the one the model file records (${recorded})`);
  }
  if (options.labels && meta?.classes && options.labels.join('\n') !== meta.classes.join('\n')) {
    warn(`the labels given (${options.labels.length}: ${options.labels.slice(0, 5).join(', ')}${options.labels.length > 5 ? ', ...' : ''}) override the class names the model file records (${meta.classes.length}: ${meta.classes.slice(0, 5).join(', ')}${meta.classes.length > 5 ? ', ...' : ''})`);
  }
  return { transform: options.transform ?? recorded ?? imagenet({ train: false, size: 224 }), labels: options.labels ?? meta?.classes };
}

/**
 * An http.Server (not yet listening) that classifies uploaded images with `predictor`:
 *
 *   POST /predict  body: a JPEG/PNG/WebP image  -> 200 { top: [{ label, index, probability }] }
 *   GET  /status                                -> 200 { predictor: stats(), uptimeS, ...options.status() }
 *
 * plus `options.routes`. Uploads go through the model file's recorded eval transform and are
 * named by its recorded classes unless `transform`/`labels` say otherwise. A bad upload is a 400
 * and the service keeps serving; closing the predictor is the caller's.
 *
 * @example
 * const predictor = await torch.serving.Predictor.load('model.pt', { threads: 1, maxBatch: 8 });
 * const server = torch.serving.createService(predictor, { topk: 3 });
 * server.listen(8080, '127.0.0.1');
 */
export function createService(predictor: Predictor, options: ServiceOptions = {}): http.Server {
  if (options === null || typeof options !== 'object') throw new TypeError('createService: options must be an object');
  const topk = check.integer(options.topk ?? 5, 'createService: topk', 1);
  const maxBytes = check.integer(options.maxBytes ?? 10 << 20, 'createService: maxBytes', 1);
  if (options.labels !== undefined && (!Array.isArray(options.labels) || options.labels.some((l) => typeof l !== 'string'))) {
    throw new TypeError('createService: labels must be an array of strings');
  }
  const { transform, labels } = servingDefaults(predictor, options);
  const routes = new Map(Object.entries(options.routes ?? {}));
  const started = Date.now();

  routes.set('GET /status', async () => ({
    status: 200, body: { predictor: predictor.stats(), uptimeS: (Date.now() - started) / 1000, ...options.status?.() },
  }));
  routes.set('POST /predict', async (req) => {
    const body = await readBody(req, maxBytes);
    if (body.length === 0) throw new HttpError(400, 'POST an image (JPEG, PNG, WebP) as the request body');
    const input = await imageInput(body, transform).catch((e: Error) => { throw new HttpError(400, e.message); });
    return { status: 200, body: { top: await predictor.classify(input, { topk, labels }) } };
  });
  const known = [...routes.keys()].join(', ');

  return http.createServer((req, res) => {
    const route = routes.get(`${req.method} ${new URL(req.url ?? '/', 'http://localhost').pathname}`);
    const answer = route ? route(req) : Promise.reject(new HttpError(404, `no such route; try ${known}`));
    answer.then(
      ({ status, body }) => send(res, status, body),
      (err: Error) => { if (!res.headersSent) send(res, err instanceof HttpError ? err.status : 500, { error: err.message }); },
    );
  });
}
