// The JS handle of a libtorch tensor. Metadata is cached at creation so reading it from JS never
// touches a tensor the executor may be computing with.
#pragma once

#include "common.h"

namespace finetorch {

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object New(Napi::Env env, SlotPtr slot, const Meta& meta);
  // The slot of a live tensor handle; throws a JS TypeError/Error naming `what` otherwise.
  static SlotPtr SlotOf(Napi::Env env, const Napi::Value& v, const std::string& what);
  static TensorWrap* FromValue(Napi::Env env, const Napi::Value& v);

  explicit TensorWrap(const Napi::CallbackInfo& info);
  void Finalize(Napi::Env env) override;

  const Meta& meta() const { return meta_; }
  void setRequiresGradMeta(bool v) { meta_.requiresGrad = v; }

 private:
  Napi::Value GetShape(const Napi::CallbackInfo& info);
  Napi::Value GetDtype(const Napi::CallbackInfo& info);
  Napi::Value GetDevice(const Napi::CallbackInfo& info);
  Napi::Value GetRequiresGrad(const Napi::CallbackInfo& info);
  void SetRequiresGrad(const Napi::CallbackInfo& info, const Napi::Value& v);
  Napi::Value GetNumel(const Napi::CallbackInfo& info);
  Napi::Value GetNbytes(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Data(const Napi::CallbackInfo& info);
  Napi::Value Item(const Napi::CallbackInfo& info);
  void Release(Napi::Env env);

  SlotPtr slot_;
  Meta meta_;
  bool accounted_ = false;
};

// A host (CPU) tensor for data coming from JS: page-locked when `pin`, otherwise from a pool of
// reused buffers when large (fresh memory costs a page fault per 4 KB). Any thread.
at::Tensor HostTensor(const std::vector<int64_t>& shape, at::ScalarType type, bool pin);

// Module-level functions registered by addon.cc.
Napi::Value FromData(const Napi::CallbackInfo& info);
Napi::Value Factory(const Napi::CallbackInfo& info);
Napi::Value Op(const Napi::CallbackInfo& info);

}  // namespace finetorch
