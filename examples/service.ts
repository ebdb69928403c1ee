/**
 * An image classification service on Node's own http, answering from a torch.serving.Predictor
 * (its own thread and weights, so answers keep coming while the same process trains).
 *
 *   POST /predict   body: a JPEG/PNG/WebP image   -> { top: [{ label, index, probability }] }
 *   GET  /status                                  -> { predictor: stats(), uptimeS }
 *
 * Run:
 *   node dist-examples/service.js model.pt classes.json 8080
 *   curl --data-binary @cat.jpg http://127.0.0.1:8080/predict
 */
import * as fs from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as torch from 'finetorch';
import { transforms } from 'finetorch';

export interface ServiceOptions {
  /** The model to serve: a TorchScript file or a loaded ScriptModule (cloned). */
  model: string | torch.jit.ScriptModule;
  /** Class names, by output index. */
  labels?: string[];
  /** The model's input size (the eval transform resizes to size * 256 / 224, then center-crops). */
  size?: number;
  topk?: number;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  predictor?: torch.serving.PredictorOptions;
  /** The largest accepted upload, in bytes (default 10 MiB). */
  maxBytes?: number;
}

export interface Service {
  url: string;
  predictor: torch.serving.Predictor;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string) { super(message); }
}

function readBody(req: http.IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        reject(new HttpError(413, `the image is larger than ${maxBytes} bytes`));
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

/** Starts the service; resolves once it listens. */
export async function startService(options: ServiceOptions): Promise<Service> {
  const predictor = await torch.serving.Predictor.load(options.model, options.predictor ?? { threads: 1, maxBatch: 8, maxDelayMs: 2 });
  const transform = transforms.imagenet({ train: false, size: options.size ?? 224 });
  const topk = options.topk ?? 5;
  const maxBytes = options.maxBytes ?? 10 << 20;
  const started = Date.now();

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method === 'GET' && url.pathname === '/status') {
      send(res, 200, { predictor: predictor.stats(), uptimeS: (Date.now() - started) / 1000 });
    } else if (req.method === 'POST' && url.pathname === '/predict') {
      const body = await readBody(req, maxBytes);
      if (body.length === 0) throw new HttpError(400, 'POST an image (JPEG, PNG, WebP) as the request body');
      const input = await torch.serving.imageInput(body, transform).catch((e: Error) => { throw new HttpError(400, e.message); });
      send(res, 200, { top: await predictor.classify(input, { topk, labels: options.labels }) });
    } else {
      throw new HttpError(404, 'POST /predict with an image, or GET /status');
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      if (!res.headersSent) send(res, err instanceof HttpError ? err.status : 500, { error: err.message });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  return {
    url: `http://${address}:${port}`,
    predictor,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await predictor.close();
    },
  };
}

if (require.main === module) {
  const [model, labelsFile, port] = process.argv.slice(2);
  if (!model) {
    console.error('usage: service.js model.pt [classes.json] [port]');
    process.exit(2);
  }
  const labels = labelsFile ? (JSON.parse(fs.readFileSync(labelsFile, 'utf8')) as string[]) : undefined;
  startService({ model, labels, port: port ? Number(port) : 8080 })
    .then((s) => console.log(`serving ${model} on ${s.url}`))
    .catch((e) => { console.error(e); process.exit(1); });
}
