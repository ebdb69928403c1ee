import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { checkLibtorchVersion } from '../lib/native';

const root = path.resolve(__dirname, '..');

describe('build', () => {
  test('binding.gyp compiles exactly the native sources CMake globs', () => {
    const gyp = JSON.parse(fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8'));
    const listed = (gyp.targets[0].sources as string[]).map((s) => path.basename(s)).sort();
    const present = fs.readdirSync(path.join(root, 'native')).filter((f) => f.endsWith('.cc')).sort();
    expect(listed).toEqual(present);
  });

  test('find-libtorch reports the libtorch it found with version and CPU/CUDA', () => {
    const out = execFileSync(process.execPath, [path.join(root, 'scripts/find-libtorch')]).toString();
    expect(out).toMatch(/^libtorch \d+\.\d+\.\d+ \((CPU|CUDA [^)]+)\) at \//);
    const json = JSON.parse(execFileSync(process.execPath, [path.join(root, 'scripts/find-libtorch'), '--json']).toString());
    expect(fs.existsSync(path.join(json.cmakePrefix, 'Torch', 'TorchConfig.cmake'))).toBe(true);
    expect(fs.existsSync(path.join(json.include[1], 'torch', 'version.h'))).toBe(true);
  });

  test('find-libtorch refuses a LIBTORCH folder that is not libtorch, saying why', () => {
    let message = '';
    try {
      execFileSync(process.execPath, [path.join(root, 'scripts/find-libtorch')], {
        env: { ...process.env, LIBTORCH: os.tmpdir() }, stdio: 'pipe',
      });
    } catch (e) {
      message = (e as { stderr: Buffer }).stderr.toString();
    }
    expect(message).toMatch(/is not an unpacked libtorch/);
  });

  test('the .node finds libtorch without LD_LIBRARY_PATH (RUNPATH recorded)', () => {
    const env = { ...process.env };
    delete env.LD_LIBRARY_PATH;
    const out = execFileSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(root)} + '/build/Release/finetorch.node').buildInfo().builtWith)`], { env }).toString();
    expect(out.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  test('a binary built against another libtorch is refused with how to rebuild', () => {
    expect(() => checkLibtorchVersion({ builtWith: '2.3.0', runtime: '1.13.0', cuda: null, cudaCompiled: false }))
      .toThrow(/built against libtorch 2\.3\.0 but libtorch 1\.13\.0 is loaded.*npm rebuild finetorch/);
    expect(() => checkLibtorchVersion({ builtWith: '1.13.0', runtime: '1.13.1', cuda: null, cudaCompiled: false })).not.toThrow();
  });

  test('the prebuild (the cmake-js binary packed by scripts/prebuild) loads and computes when there is no local build', () => {
    const prebuilt = path.join(root, 'prebuilds', 'linux-x64', 'finetorch.node');
    expect(fs.existsSync(prebuilt)).toBe(true); // packed by scripts/prebuild (scripts/setup runs it)
    const pkg = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-prebuilt-'));
    try {
      fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
      fs.cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true });
      fs.cpSync(path.join(root, 'prebuilds'), path.join(pkg, 'prebuilds'), { recursive: true });
      fs.symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'));
      const script = `
        const torch = require(${JSON.stringify(pkg)});
        const gyp = require('node-gyp-build');
        (async () => {
          const y = await torch.tensor([[1, 2], [3, 4]]).matmul(torch.tensor([[1, 0], [0, 1]]));
          console.log(JSON.stringify({ from: gyp.resolve(${JSON.stringify(pkg)}), y: Array.from(await y.data()) }));
        })();`;
      const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: pkg }).toString());
      expect(out.from).toContain(path.join('prebuilds', 'linux-x64'));
      expect(out.y).toEqual([1, 2, 3, 4]);
    } finally {
      fs.rmSync(pkg, { recursive: true, force: true });
    }
  });

  test('the install script keeps a binary that loads, and skips entirely under FINETORCH_SKIP_INSTALL_BUILD=1', () => {
    const install = path.join(root, 'scripts', 'install');
    expect(execFileSync(process.execPath, [install], { cwd: root, stdio: 'pipe' }).toString()).toBe('');
    const env = { ...process.env, FINETORCH_SKIP_INSTALL_BUILD: '1' };
    expect(execFileSync(process.execPath, [install], { cwd: root, env, stdio: 'pipe' }).toString()).toBe('');
  });

  test('the install script builds with cmake-js when no binary loads, saying why, without a stack trace', () => {
    // A package with no binary, and a cmake-js that records how it was called instead of building.
    const pkg = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-install-'));
    try {
      fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
      fs.mkdirSync(path.join(pkg, 'scripts'));
      fs.copyFileSync(path.join(root, 'scripts', 'install'), path.join(pkg, 'scripts', 'install'));
      fs.mkdirSync(path.join(pkg, 'node_modules', 'cmake-js', 'bin'), { recursive: true });
      fs.symlinkSync(path.join(root, 'node_modules', 'node-gyp-build'), path.join(pkg, 'node_modules', 'node-gyp-build'));
      fs.writeFileSync(path.join(pkg, 'node_modules', 'cmake-js', 'bin', 'cmake-js'),
        "require('fs').writeFileSync('cmake-js-args', process.argv.slice(2).join(' '));\n");
      const env = { ...process.env };
      delete env.FINETORCH_SKIP_INSTALL_BUILD;
      const r = spawnSync(process.execPath, [path.join(pkg, 'scripts', 'install')], { cwd: pkg, env, encoding: 'utf8' });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/^finetorch: no prebuilt binary loads here \(No native build was found for platform=linux .*\); building from source with cmake-js\n$/);
      expect(r.stderr).not.toMatch(/^\s+at /m);
      expect(fs.readFileSync(path.join(pkg, 'cmake-js-args'), 'utf8')).toBe('compile --out build');
    } finally {
      fs.rmSync(pkg, { recursive: true, force: true });
    }
  });
});
