// Faster CPU kernels that compute bit for bit what ATen's do, put in place of ATen's (cpu_kernels.cc).
#pragma once

#include <string>
#include <vector>

namespace finetorch {

// Puts this file's kernels in place of ATen's, process-wide, each one only where a probe on this
// CPU gave every bit of ATen's own (FINETORCH_CPU_KERNELS=0: none). Once per process; later calls
// return at once. Called on the executor thread before its first task.
void InstallCpuKernels();

// The ATen kernels replaced in this process ("max_pool2d", "batch_norm_stats").
std::vector<std::string> CpuKernels();

}  // namespace finetorch
