// Stand-in for a header Debian 12's libtorch-dev (1.13) leaves out: c10d's reducer.hpp includes
// it for two names only, a shared_ptr alias and a callback type it static_asserts against. The
// include path puts this folder after libtorch's own, so a libtorch that ships the real header
// (Debian 13's 2.6, pip's) uses that one. finetorch never creates or calls a DistAutogradContext
// (distributed autograd is RPC's, not DDP's), so only these declarations are ever seen.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};
using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
