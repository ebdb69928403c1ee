/**
 * Running ranks for the distributed tests: free loopback ports, `finetorch launch` over
 * test/fixtures/distributed/rank.js, or single ranks spawned with their own environment (for the
 * bad launches the launcher would refuse). Every child is tracked so afterAll can kill leftovers.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { CLI, ROOT, type CliResult } from './dist';

export const RANK_SCRIPT = path.join(ROOT, 'test', 'fixtures', 'distributed', 'rank.js');

const children = new Set<ChildProcess>();

/** A port nothing listens on right now (the kernel's pick for port 0, closed again). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function run(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...env, FINETORCH_DEBUG: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '', stderr = '';
    child.stdout!.on('data', (d) => { stdout += d; });
    child.stderr!.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `finetorch launch --nproc-per-node n --master-port <free> rank.js <job>` on 127.0.0.1. */
export async function launchRanks(job: object, nproc = 2, extra: string[] = [], timeoutMs = 180_000): Promise<CliResult> {
  const port = await freePort();
  return run([CLI, 'launch', '--nproc-per-node', String(nproc), '--master-addr', '127.0.0.1', '--master-port', String(port), ...extra,
    RANK_SCRIPT, JSON.stringify(job)], process.env, timeoutMs);
}

/** One rank of rank.js with exactly the environment given (nothing inherited of RANK and co.). */
export function spawnRank(env: Record<string, string>, job: object, timeoutMs = 120_000): Promise<CliResult> {
  const base = { ...process.env };
  for (const k of ['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK']) delete base[k];
  return run([RANK_SCRIPT, JSON.stringify(job)], { ...base, OMP_NUM_THREADS: '1', ...env }, timeoutMs);
}

/** What rank `rank` wrote into `dir` (rank.js's result file). */
export function rankResult<T>(dir: string, rank: number): T {
  return JSON.parse(fs.readFileSync(path.join(dir, `rank${rank}.json`), 'utf8')) as T;
}

/** The `ERROR {code, message}` line a failing rank printed, or undefined. */
export function rankError(stderr: string): { code?: string; message: string } | undefined {
  const line = stderr.split('\n').find((l) => l.startsWith('ERROR '));
  return line ? JSON.parse(line.slice(6)) as { code?: string; message: string } : undefined;
}

/** Kills every child still running (afterAll). */
export function killChildren(): void {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
}
