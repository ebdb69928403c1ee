#include "amp.h"

#include <ATen/autocast_mode.h>

namespace finetorch {

AutocastScope::AutocastScope(Amp amp, const c10::Device& device) {
  if (amp == Amp::None) return;
  at::ScalarType dtype = amp == Amp::BF16 ? at::kBFloat16 : at::kHalf;
  cuda_ = device.is_cuda();
#ifdef FT_AUTOCAST_TYPED
  auto type = cuda_ ? at::kCUDA : at::kCPU;
  wasEnabled_ = at::autocast::is_autocast_enabled(type);
  oldDtype_ = at::autocast::get_autocast_dtype(type);
  at::autocast::set_autocast_dtype(type, dtype);
  at::autocast::set_autocast_enabled(type, true);
#else
  if (cuda_) {
    wasEnabled_ = at::autocast::is_enabled();
    oldDtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(true);
  } else {
    wasEnabled_ = at::autocast::is_cpu_enabled();
    oldDtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(true);
  }
#endif
  at::autocast::increment_nesting();
  active_ = true;
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
#ifdef FT_AUTOCAST_TYPED
  auto type = cuda_ ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_enabled(type, wasEnabled_);
  at::autocast::set_autocast_dtype(type, oldDtype_);
#else
  if (cuda_) {
    at::autocast::set_enabled(wasEnabled_);
    at::autocast::set_autocast_gpu_dtype(oldDtype_);
  } else {
    at::autocast::set_cpu_enabled(wasEnabled_);
    at::autocast::set_autocast_cpu_dtype(oldDtype_);
  }
#endif
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
}

void GradScaler::init(const c10::Device& device, double initScale) {
  if (scale.defined() && scale.device() == device) return;
  auto opts = at::TensorOptions().device(device);
  scale = at::full({1}, initScale, opts.dtype(at::kFloat));
  growthTracker = at::zeros({1}, opts.dtype(at::kInt));
  foundInf = at::zeros({1}, opts.dtype(at::kFloat));
}

bool GradScaler::unscale(const std::vector<at::Tensor>& params) {
  NoGradGuard ng;
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  foundInf.zero_();
  at::Tensor inv = scale.to(at::kDouble).reciprocal().to(at::kFloat);
  if (!grads.empty()) at::_amp_foreach_non_finite_check_and_unscale_(grads, foundInf, inv);
  return foundInf.item<float>() != 0.0f;
}

void GradScaler::update(bool) {
  NoGradGuard ng;
  at::_amp_update_scale_(scale, growthTracker, foundInf, growthFactor, backoffFactor, growthInterval);
}

}  // namespace finetorch
