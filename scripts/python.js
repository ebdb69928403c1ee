// The Python with torch and torchvision that finetorch's benchmarks and scripts run for reference
// results: $FINETORCH_PYTHON, else Debian's /usr/bin/python3 (python3-torch). The `python3` first
// on PATH may be another Python without torch. (The tests use the same rule: test/helpers/python.ts.)
'use strict';

/** @returns {string} the Python executable */
function pythonPath() {
  return process.env.FINETORCH_PYTHON || '/usr/bin/python3';
}

module.exports = { pythonPath };

/**
 * Writes `code` to `dir/name` and runs it with the reference Python (a file, not `-c`: TorchScript
 * reads the source of what it scripts). Returns the last line it printed; a failure is an Error
 * with the last lines of its stderr.
 * @param {string} dir @param {string} name @param {string} code @param {string[]} [args]
 * @param {NodeJS.ProcessEnv} [env]
 * @returns {string}
 */
function runPythonFile(dir, name, code, args = [], env = process.env) {
  const fs = require('fs');
  const path = require('path');
  const { spawnSync } = require('child_process');
  const python = pythonPath();
  const file = path.join(dir, name);
  fs.writeFileSync(file, code);
  const r = spawnSync(python, [file, ...args], { encoding: 'utf8', maxBuffer: 16 << 20, env });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${python} ${name} failed (${r.signal || r.status}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
  const lines = r.stdout.trim().split('\n');
  return lines[lines.length - 1];
}

module.exports.runPythonFile = runPythonFile;
