// Mixed precision for fit's generic step (the models and losses the fused trainStep does not
// cover): autocast is thread-local, so a forward that must run under it is one executor task
// here; and an fp16 loss is backpropagated scaled by the optimizer's GradScaler, as trainStep does.
#pragma once

#include "common.h"

namespace finetorch {

// forwardAutocast(module, inputs: (Tensor | { [name]: Tensor })[], { amp, device }):
// Promise<Tensor | (Tensor | ...)[] | { [key]: Tensor | ... }>. Grad on; inputs go to `device`.
Napi::Value ForwardAutocast(const Napi::CallbackInfo& info);

// scaledBackward(optimizer, loss, { factor, amp }): backward of loss * factor (* the loss scale
// when amp is fp16).
Napi::Value ScaledBackward(const Napi::CallbackInfo& info);

}  // namespace finetorch
