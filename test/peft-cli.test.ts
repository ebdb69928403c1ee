/**
 * `finetorch finetune --lora`: trains an adapter on a generated image folder, writes the merged
 * model.pt and adapter/ beside it; bad --lora specs are one-line errors.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { ensureDist, expectOk, runCli, smallModelScript } from './helpers/dist';
import { runPythonAsync } from './helpers/python';

const COLOURS: Record<string, [number, number, number]> = { red: [210, 30, 30], green: [30, 190, 40], blue: [25, 40, 215] };

async function imageTree(root: string): Promise<void> {
  await Promise.all(Object.entries(COLOURS).flatMap(([c, rgb], k) => {
    fs.mkdirSync(path.join(root, c), { recursive: true });
    return Array.from({ length: 8 }, (_, i) => {
      const px = Buffer.alloc(40 * 40 * 3);
      for (let j = 0; j < px.length; j++) px[j] = Math.max(0, Math.min(255, rgb[j % 3] + ((j * 7 + i * 13 + k) % 41) - 20));
      return sharp(px, { raw: { width: 40, height: 40, channels: 3 } }).png().toFile(path.join(root, c, `img${i}.png`));
    });
  }));
}

const MAKE_MODEL = smallModelScript(10);

describe('finetorch finetune --lora', () => {
  let dir: string;
  beforeAll(async () => {
    ensureDist();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-peft-cli-'));
    await Promise.all([imageTree(path.join(dir, 'photos')), runPythonAsync(MAKE_MODEL, dir, ['m.pt'])]);
  }, 120_000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const FINETUNE = ['finetune', '--model', 'm.pt', '--data', 'photos', '--epochs', '1', '--batch-size', '8', '--size', '32', '--no-progress'];

  test('writes the merged model.pt and adapter/ (peft layout) with the new head in modules_to_save', async () => {
    const r = await runCli([...FINETUNE, '--lora', 'r=2,alpha=4,targets=conv', '--out', 'out'], dir);
    expectOk(r);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'out', 'adapter', 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['conv'], modules_to_save: ['fc'] });
    expect(fs.existsSync(path.join(dir, 'out', 'adapter', 'adapter_model.safetensors'))).toBe(true);
    const keys = JSON.parse(await runPythonAsync(`
import json, sys, torch
m = torch.jit.load(sys.argv[1])
print(json.dumps(sorted(k for k in m.state_dict() if 'lora' in k) + [list(m.fc.weight.shape)]))
`, dir, [path.join(dir, 'out', 'model.pt')]));
    expect(keys).toEqual([[3, 8]]);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'out', 'metrics.json'), 'utf8')).settings.lora).toBe('r=2,alpha=4,targets=conv');
  }, 240_000);

  test('a bad --lora spec is a one-line error naming what is wrong', async () => {
    const cases: [string[], RegExp][] = [
      [['--lora', 'r=0,targets=conv'], /--lora r must be .*at least 1|--lora r must be/],
      [['--lora', 'r=2'], /--lora needs targets/],
      [['--lora', 'r=2,targets=nothing.**'], /targets 'nothing\.\*\*' match no Linear or Conv2d module/],
      [['--lora', 'r=2,targets=conv', '--freeze', 'backbone'], /cannot be combined with --freeze/],
    ];
    for (const [extra, pattern] of cases) {
      const r = await runCli([...FINETUNE, ...extra, '--out', 'bad'], dir);
      expect([extra.join(' '), r.code]).toEqual([extra.join(' '), 1]);
      expect(r.stderr.trim().split('\n').pop()).toMatch(pattern);
    }
  }, 240_000);
});
