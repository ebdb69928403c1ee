// The one place where libtorch versions differ (1.13 on Debian 12, 2.x on Debian 13 and pip).
// Every other native file uses the names below and stays free of version checks.
#pragma once

#include <torch/version.h>

#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <ATen/core/Tensor.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

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

// Python's AdamW, which finetorch matches step for step, updates its first moment with lerp_
// since PyTorch 2.0 (exp_avg.lerp_(grad, 1 - beta1)); before, and in libtorch's C++ AdamW of
// every version, it is exp_avg.mul_(beta1).add_(grad, 1 - beta1), which rounds differently.
#if FT_TORCH_AT_LEAST(2, 0)
#define FT_ADAMW_LERP 1
#endif

// c10d in libtorch 2.x splits a ProcessGroup (what collectives and the Reducer take) from the
// Backend that runs them (ProcessGroupGloo is a Backend there); in 1.13 ProcessGroupGloo is itself
// the ProcessGroup. distributed.cc builds the group one way or the other.
#if FT_TORCH_AT_LEAST(2, 0)
#define FT_C10D_BACKEND 1
#endif

namespace finetorch {

// Grad-mode guards live in c10 in every supported version; libtorch 2.x no longer re-exports
// them as at::NoGradGuard / at::AutoGradMode through <ATen/ATen.h>.
using NoGradGuard = c10::NoGradGuard;
using AutoGradMode = c10::AutoGradMode;
using InferenceMode = c10::InferenceMode;

// The key of a parameter in torch::optim::Optimizer's state map: its TensorImpl pointer printed
// to a string in libtorch 1.13, the pointer itself in 2.x. Chosen by the map's key type, so the
// keys are always the ones libtorch's own serialization writes and reads.
template <typename Map>
typename Map::key_type OptimizerStateKey(const Map&, const at::Tensor& p) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;  // what c10::guts::to_string does
    os << p.unsafeGetTensorImpl();
    return os.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

// TCPStoreOptions::useLibUV (newer 2.x; true by default since 2.4) asks for the libuv store
// server, which Debian 13's libtorch is built without ("use_libuv was requested but PyTorch was
// build without libuv support"); the classic server is in every build. Chosen by whether the
// member exists, so no version number has to be guessed.
template <typename Options, typename = void>
struct HasUseLibUV : std::false_type {};
template <typename Options>
struct HasUseLibUV<Options, std::void_t<decltype(std::declval<Options&>().useLibUV)>> : std::true_type {};

template <typename Options>
void UseClassicTcpStore(Options& o) {
  if constexpr (HasUseLibUV<Options>::value) o.useLibUV = false;
}

}  // namespace finetorch
