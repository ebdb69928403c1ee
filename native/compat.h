// The one place where libtorch versions differ (1.13 on Debian 12, 2.x on Debian 13 and pip).
// Every other native file uses the names below and stays free of version checks.
#pragma once

#include <torch/version.h>

#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>

#ifndef TORCH_VERSION_MAJOR
#error "libtorch headers without torch/version.h are not supported"
#endif

#define FT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// libtorch 2.4 replaced the per-device autocast setters (set_enabled, set_cpu_enabled, ...) with
// device-typed ones (set_autocast_enabled(device_type, ...)).
#if FT_TORCH_AT_LEAST(2, 4)
#define FT_AUTOCAST_TYPED 1
#endif

namespace finetorch {

// Grad-mode guards live in c10 in every supported version; libtorch 2.x no longer re-exports
// them as at::NoGradGuard / at::AutoGradMode through <ATen/ATen.h>.
using NoGradGuard = c10::NoGradGuard;
using AutoGradMode = c10::AutoGradMode;
using InferenceMode = c10::InferenceMode;

}  // namespace finetorch
