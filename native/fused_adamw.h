// AdamW's update of one parameter (fused_adamw.cc).
#pragma once

#include <ATen/core/Tensor.h>

namespace finetorch {

// One parameter group's hyperparameters and the parameter's step count (already incremented).
struct AdamWHyper {
  double lr, beta1, beta2, eps, weightDecay, step;
};

// The update of torch.optim.AdamW's single-tensor path (weight decay, the two moments, the
// denominator, addcdiv) on param and its state; maxExpAvgSq is null unless amsgrad. Bit for bit
// the op sequence of PyTorch's Python of the same version, whichever way it runs.
// Whether AdamWUpdate runs as one pass here (an x86-64 CPU with AVX2 and FMA, where the pass
// matched the op sequence bit for bit on this process's probe); otherwise it runs the ops.
bool FusedAdamWAvailable();

void AdamWUpdate(at::Tensor& param, const at::Tensor& grad, at::Tensor& expAvg, at::Tensor& expAvgSq,
                 at::Tensor* maxExpAvgSq, const AdamWHyper& h);

}  // namespace finetorch
