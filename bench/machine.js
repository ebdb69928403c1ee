// What the benchmarks record about the machine and hand the reference Python process.
'use strict';
const os = require('os');

/** The 1/5/15-minute load averages, as uptime prints them. */
function loadAverage() {
  return os.loadavg().map((x) => x.toFixed(2)).join(' ');
}

/**
 * The environment of the PyTorch side. finetorch raises glibc malloc's mmap/trim thresholds when
 * it loads (torch.backends.malloc.tuning); `same` gives the Python process the same settings
 * through glibc's environment variables, to see how much of a difference is that alone.
 * @param {typeof import('../dist')} torch @param {boolean} same
 * @returns {NodeJS.ProcessEnv}
 */
function pythonEnv(torch, same) {
  if (!same) return process.env;
  const t = torch.backends.malloc.tuning;
  if (!t) throw new Error('--same-malloc: finetorch applied no malloc tuning here (FINETORCH_MALLOC_TUNING=0, or not glibc)');
  return { ...process.env, MALLOC_MMAP_THRESHOLD_: String(t.mmapThreshold), MALLOC_TRIM_THRESHOLD_: String(t.trimThreshold), MALLOC_TOP_PAD_: String(t.topPad) };
}

module.exports = { loadAverage, pythonEnv };
