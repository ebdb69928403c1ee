// libtorch's float32 GEMM stays the system BLAS's in the tests (native/blas.cc; its own test runs
// both), so parity tests compare finetorch and PyTorch through the same kernels.
process.env.FINETORCH_ONEDNN_GEMM ??= '0';

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: { warnOnly: false } }] },
  moduleNameMapper: { '^finetorch$': '<rootDir>/lib' },
  testTimeout: 120000,
  maxWorkers: 2,
};
