/**
 * The compiled CLI (dist/cli/main.js) for tests that run `finetorch` as a child process, the way a
 * user does. dist/ is rebuilt with `tsc -p tsconfig.build.json` (which writes only dist/) when any
 * lib/ source is newer than its compiled file. Jest runs test files in parallel workers, so the
 * check and the build run under flock(1): a second worker blocks in the kernel until the first
 * has built, then finds dist fresh (no polling, no sleeps).
 */
import { execFile, execFileSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';

export const ROOT = path.resolve(__dirname, '..', '..');
export const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');

const BUILD_IF_STALE = `
const fs = require('fs'), path = require('path'), { execFileSync } = require('child_process');
const stale = [];
const walk = (d) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    if (e.isDirectory()) walk(p);
    else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) {
      const js = path.join('dist', path.relative('lib', p)).replace(/\\.ts$/, '.js');
      const built = fs.statSync(js, { throwIfNoEntry: false });
      if (!built || built.mtimeMs < fs.statSync(p).mtimeMs) stale.push(p);
    }
  }
};
walk('lib');
if (stale.length) {
  process.stderr.write('dist is older than ' + stale.slice(0, 3).join(', ') + (stale.length > 3 ? ', ...' : '') + ': rebuilding\\n');
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
`;

/** Rebuilds dist/ if any lib/*.ts is newer than its .js (once across parallel jest workers). */
export function ensureDist(): void {
  execFileSync('flock', [path.join(os.tmpdir(), 'finetorch-dist-build.lock'), process.execPath, '-e', BUILD_IF_STALE], {
    cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], timeout: 300_000,
  });
}

/** What a CLI run gave back. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node dist/cli/main.js ...args` in `cwd` and resolves (never rejects) with its exit code
 * and output. FINETORCH_DEBUG is removed so errors print as users see them.
 */
export function runCli(args: string[], cwd: string, timeoutMs = 240_000): Promise<CliResult> {
  const env = { ...process.env };
  delete env.FINETORCH_DEBUG;
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd, env, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number | undefined) ?? null : 0;
      resolve({ code: typeof code === 'number' ? code : null, stdout, stderr });
    });
  });
}

/** A readable dump of a CLI run for assertion messages. */
export function show(r: CliResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

/** Exit code 0, or fail showing what the command printed. */
export function expectOk(r: CliResult): void {
  if (r.code !== 0) throw new Error(`expected exit code 0:\n${show(r)}`);
}

/**
 * Python that scripts the CLI tests' small model, Conv2d(3,8,3)-BatchNorm-ReLU-AdaptiveAvgPool-
 * Flatten-Linear(8,classes) with its head `fc`, into argv[1]; with `stateDict`, also a file
 * torch.save wrote (a pickled state dict: a .pt file that is not TorchScript) into argv[2].
 */
export function smallModelScript(classes: number, stateDict = false): string {
  return `
import sys, torch, torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, ${classes})
    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.bn(self.conv(x))))))
torch.manual_seed(0)
torch.jit.script(Net()).save(sys.argv[1])
${stateDict ? 'torch.save(Net().state_dict(), sys.argv[2])' : ''}
`;
}
