// Mixed precision: an autocast scope set on the executor thread (autocast is thread-local), and
// the loss-scaling rules of PyTorch's GradScaler for fp16.
#pragma once

#include "common.h"

namespace finetorch {

enum class Amp { None = 0, BF16 = 1, FP16 = 2 };

// Enables autocast for `device` with the dtype of `amp` for its lifetime, then restores the
// previous state and clears autocast's cast cache (as leaving torch.autocast does).
class AutocastScope {
 public:
  AutocastScope(Amp amp, const c10::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool wasEnabled_ = false;
  at::ScalarType oldDtype_ = at::kFloat;
};

// GradScaler state: the current scale and the count of steps since the last overflow.
struct GradScaler {
  at::Tensor scale;
  at::Tensor growthTracker;
  double growthFactor = 2.0, backoffFactor = 0.5;
  int64_t growthInterval = 2000;
  void init(const c10::Device& device, double initScale = 65536.0);
  // Unscales the gradients in place; true when any was inf or NaN (the step must be skipped).
  bool unscale(const std::vector<at::Tensor>& params);
  // Grows or backs off the scale after a step, as GradScaler.update().
  void update(bool foundInf);
  at::Tensor foundInf;
};

}  // namespace finetorch
