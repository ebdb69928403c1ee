import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync } from 'child_process';
import * as torch from '../lib';
import { main } from '../examples/workflow';
import { ensureDist } from './helpers/dist';
import { pythonPath } from './helpers/python';

const python = pythonPath();

describe('examples/workflow.ts (the README program)', () => {
  test('runs the seven steps and saves a model Python loads with a 10-class head', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-example-'));
    const out = path.join(dir, 'finetuned.pt');
    const accuracy = await main(out);
    expect(accuracy).toBeGreaterThan(0.3); // 10 classes: chance is 0.1
    const shape = execFileSync(python, ['-c', `import torch; print(list(torch.jit.load(${JSON.stringify(out)}).fc.weight.shape))`]).toString().trim();
    expect(shape).toBe('[10, 64]');
    const saved = await torch.jit.load(out);
    expect(saved.metadata).toMatchObject({ task: 'single-label', classes: [...torch.data.FashionMNIST.classes], metrics: { accuracy } });
    saved.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }, 300_000);
});

test('`npm run example` compiles the examples as a user of the package would: against the built dist/ types', () => {
  ensureDist();
  const root = path.join(__dirname, '..');
  const tsc = path.join(root, 'node_modules', '.bin', 'tsc');
  // an error here is what `npm run example` would print; --noEmit leaves dist-examples/ alone
  execFileSync(tsc, ['-p', 'tsconfig.examples.json', '--noEmit'], { cwd: root, stdio: 'pipe' });
}, 120_000);
