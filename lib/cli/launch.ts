/**
 * `finetorch launch`: torchrun for finetorch. Starts `--nproc-per-node` copies of a Node script on
 * this machine with the environment `torch.distributed.initProcessGroup()` reads (RANK, WORLD_SIZE,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT; OMP_NUM_THREADS=1 unless
 * set). When a rank fails, the others get `--grace-ms` to fail on their own (their collectives
 * name the lost rank), then are ended; the launcher exits with the first failure's code.
 */
import { spawn, type ChildProcess } from 'child_process';
import { UsageError } from './common';

/** Options of `finetorch launch` as commander parses them. */
export interface LaunchOptions {
  nprocPerNode?: string;
  nnodes?: string;
  nodeRank?: string;
  masterAddr?: string;
  masterPort?: string;
  graceMs?: string;
}

function int(v: string | undefined, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`launch: ${name} must be an integer in [${min}, ${max}]: got '${v}'`);
  return n;
}

/** The environment of each local rank (exported for tests and for `--help` examples). */
export function rankEnvironments(o: LaunchOptions): Record<string, string>[] {
  const nproc = int(o.nprocPerNode, '--nproc-per-node', 1, 1);
  const nnodes = int(o.nnodes, '--nnodes', 1, 1);
  const nodeRank = int(o.nodeRank, '--node-rank', 0, 0, nnodes - 1);
  const port = int(o.masterPort, '--master-port', 29500, 1, 65535);
  const addr = o.masterAddr ?? '127.0.0.1';
  return Array.from({ length: nproc }, (_, local) => ({
    RANK: String(nodeRank * nproc + local), WORLD_SIZE: String(nnodes * nproc),
    LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: String(nproc), GROUP_RANK: String(nodeRank),
    MASTER_ADDR: addr, MASTER_PORT: String(port),
  }));
}

/** Runs the ranks of this node; resolves with the exit code the launcher should end with. */
export async function launch(script: string, args: string[], o: LaunchOptions): Promise<number> {
  const envs = rankEnvironments(o);
  const grace = int(o.graceMs, '--grace-ms', 30_000, 0);
  const children: { rank: string; child: ChildProcess; done: boolean }[] = [];
  let failure: number | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const say = (m: string) => process.stderr.write(`finetorch launch: ${m}\n`);
  const endOthers = (signal: NodeJS.Signals) => {
    for (const c of children) if (!c.done) c.child.kill(signal);
  };
  const forward = (signal: NodeJS.Signals) => () => endOthers(signal);
  const onInt = forward('SIGINT'), onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    await Promise.all(envs.map((env) => new Promise<void>((resolve) => {
      const threads = process.env.OMP_NUM_THREADS ?? '1';
      const child = spawn(process.execPath, [script, ...args], { stdio: 'inherit', env: { ...process.env, OMP_NUM_THREADS: threads, ...env } });
      const entry = { rank: env.RANK, child, done: false };
      children.push(entry);
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        if (entry.done) return;
        entry.done = true;
        if ((code !== 0 || signal) && failure === undefined) {
          failure = code && code > 0 ? code : 1;
          say(`rank ${entry.rank} (pid ${child.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}; ` +
            `ending the other ranks${grace > 0 ? ` unless they end within ${grace} ms` : ''}`);
          killTimer = setTimeout(() => {
            endOthers('SIGTERM');
            killTimer = setTimeout(() => endOthers('SIGKILL'), 5000);
          }, grace);
        }
        resolve();
      };
      child.on('exit', finish);
      child.on('error', (err) => {
        say(`rank ${entry.rank} could not start: ${err.message}`);
        finish(1, null);
      });
    })));
  } finally {
    if (killTimer) clearTimeout(killTimer);
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
  return failure ?? 0;
}
