import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');

describe('scripts/gpu-check.js', () => {
  test('fails clearly, with exit code 2 and no crash, where CUDA is absent', () => {
    if (!fs.existsSync(path.join(root, 'dist', 'index.js'))) throw new Error('dist/ is missing: run `npx tsc -p tsconfig.build.json`');
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-gpucheck-'));
    const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'gpu-check.js'), out], { encoding: 'utf8', timeout: 60_000 });
    expect(r.signal).toBeNull();
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/CUDA is not available to finetorch \(libtorch \d+\.\d+\.\d+, CUDA runtime none: a CPU build\)/);
    fs.rmSync(out, { recursive: true, force: true });
  });

  test('scripts/gpu-check refuses to run without the packed Node, saying how to make it', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'gc-pack-'));
    const r = spawnSync('bash', [path.join(root, 'scripts', 'gpu-check'), fs.mkdtempSync(path.join(os.tmpdir(), 'gc-'))], {
      encoding: 'utf8', cwd: root, env: { ...process.env, FINETORCH_GPU_PACK: empty },
    });
    expect(r.status).toBe(2);
    expect(r.stdout + r.stderr).toMatch(/is missing; run scripts\/gpu-pack/);
  });
});
