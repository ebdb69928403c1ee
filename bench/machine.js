// What the benchmarks record about the machine and hand the reference Python process.
'use strict';
const os = require('os');

// As the user started the bench (finetorch leaves OMP_WAIT_POLICY as it finds it; an earlier
// version set PASSIVE on load, which a Python child would have inherited). Require before ../dist.
const ompWaitPolicy = process.env.OMP_WAIT_POLICY;

/** The 1/5/15-minute load averages, as uptime prints them. */
function loadAverage() {
  return os.loadavg().map((x) => x.toFixed(2)).join(' ');
}

/**
 * The environment of the PyTorch side, to see how much of a difference one of finetorch's
 * process-wide settings makes alone:
 * - sameMalloc: finetorch raises glibc malloc's mmap/trim thresholds when it loads
 *   (torch.backends.malloc.tuning); the Python process gets them through glibc's variables.
 * - sameGemm: finetorch routes libtorch's float32 GEMM (`sgemm_`) to oneDNN (native/blas.cc); the
 *   Python process gets the same file, compiled here with the system's c++, through LD_PRELOAD.
 * - sameOmp: the Python process gets finetorch's OMP_WAIT_POLICY (both now run with the policy the
 *   bench was started with, libgomp's default unless set: kept for comparing runs).
 * @param {typeof import('../dist')} torch
 * @param {boolean | { sameMalloc?: boolean, sameGemm?: boolean, sameOmp?: boolean }} same
 *   (a boolean: sameMalloc)
 * @returns {NodeJS.ProcessEnv}
 */
function pythonEnv(torch, same) {
  const { sameMalloc, sameGemm, sameOmp } = typeof same === 'boolean' ? { sameMalloc: same } : same;
  const env = { ...process.env };
  if (!sameOmp) {
    if (ompWaitPolicy === undefined) delete env.OMP_WAIT_POLICY;
    else env.OMP_WAIT_POLICY = ompWaitPolicy;
  }
  if (sameMalloc) {
    const t = torch.backends.malloc.tuning;
    if (!t) throw new Error('--same-malloc: finetorch applied no malloc tuning here (FINETORCH_MALLOC_TUNING=0, or not glibc)');
    Object.assign(env, { MALLOC_MMAP_THRESHOLD_: String(t.mmapThreshold), MALLOC_TRIM_THRESHOLD_: String(t.trimThreshold), MALLOC_TOP_PAD_: String(t.topPad) });
  }
  if (sameGemm) env.LD_PRELOAD = [gemmShim(), env.LD_PRELOAD].filter(Boolean).join(':');
  return env;
}

/** native/blas.cc as a shared library of its own (built once per source version), for LD_PRELOAD. */
function gemmShim() {
  const fs = require('fs');
  const path = require('path');
  const { execFileSync } = require('child_process');
  const src = path.join(__dirname, '..', 'native', 'blas.cc');
  const so = path.join(os.tmpdir(), `finetorch-bench-gemm-${Math.round(fs.statSync(src).mtimeMs)}.so`);
  if (!fs.existsSync(so)) {
    try {
      execFileSync('c++', ['-O2', '-shared', '-fPIC', '-o', so, src, '-ldl'], { stdio: 'pipe' });
    } catch (e) {
      throw new Error(`--same-gemm: could not compile native/blas.cc with c++: ${(e.stderr || e.message).toString().trim().split('\n')[0]}`);
    }
  }
  return so;
}

module.exports = { loadAverage, pythonEnv };
