// DistributedDataParallel's native half: c10d's Reducer over a model's trainable parameters. It
// hooks each parameter's gradient accumulator, all-reduces gradients in ~25 MB buckets as they
// fill during backward (overlapping communication with the rest of backward), and averages them
// before the optimizer step, exactly as PyTorch's DistributedDataParallel does.
#pragma once

#include "common.h"

namespace finetorch {

struct DdpState;

class ReducerWrap : public Napi::ObjectWrap<ReducerWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  // new Reducer(params: Tensor[], names: string[], buffers: Tensor[], { bucketCapMB, broadcastBuffers })
  explicit ReducerWrap(const Napi::CallbackInfo& info);

 private:
  // Checks that every rank has the same parameters, broadcasts rank 0's parameters and buffers,
  // builds the buckets: Promise<void>.
  Napi::Value Setup(const Napi::CallbackInfo& info);
  // Before a forward whose backward is to be synchronised (sync) or not (noSync): broadcasts
  // rank 0's buffers and arms the Reducer: Promise<void>.
  Napi::Value Prepare(const Napi::CallbackInfo& info);
  // Averages the gradients already accumulated (no Reducer involved): Promise<void>.
  Napi::Value SyncGradients(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<DdpState> state_;
};

}  // namespace finetorch
