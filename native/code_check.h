// A check of the TorchScript source entries (code/**/*.py) of an archive, run before
// torch::jit::load compiles them: libtorch 1.13 crashes (SIGSEGV) on some damaged class bodies
// instead of throwing. See code_check.cc.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace finetorch {

// (entry name, source text) pairs. Throws std::runtime_error naming the entry, line and problem.
void CheckCodeEntries(const std::vector<std::pair<std::string, std::string>>& entries);

}  // namespace finetorch
