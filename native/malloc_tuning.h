// Malloc tuning (malloc_tuning.cc).
#pragma once

#include "common.h"

namespace finetorch {

Napi::Value TuneMalloc(const Napi::CallbackInfo& info);

}  // namespace finetorch
