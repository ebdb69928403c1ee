// The Python with torch and torchvision that finetorch's benchmarks and scripts run for reference
// results: $FINETORCH_PYTHON, else Debian's /usr/bin/python3 (python3-torch). The `python3` first
// on PATH may be another Python without torch. (The tests use the same rule: test/helpers/python.ts.)
'use strict';

/** @returns {string} the Python executable */
function pythonPath() {
  return process.env.FINETORCH_PYTHON || '/usr/bin/python3';
}

module.exports = { pythonPath };
