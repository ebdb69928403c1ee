#include "tensor.h"

#include "executor.h"

#include <torch/cuda.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace finetorch {

namespace {
// Host buffers for tensors made from JS data, reused by size. A batch of images is tens of MB:
// fresh memory for each one costs a page fault per 4 KB, which made creating a batch tensor cost
// more than filling it. Buffers return here when their tensor is freed, on whichever thread.
class BufferPool {
 public:
  static constexpr size_t kMinBytes = 1 << 20;      // small tensors use libtorch's allocator
  static constexpr size_t kMaxPooledBytes = 256u << 20;
  static BufferPool& Get() {
    static BufferPool* pool = new BufferPool();  // never destroyed: tensors may outlive statics
    return *pool;
  }
  void* Take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        pooled_ -= bytes;
        return p;
      }
    }
    void* p = nullptr;
    if (posix_memalign(&p, 64, bytes) != 0) throw std::bad_alloc();
    return p;
  }
  void Give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (pooled_ + bytes > kMaxPooledBytes) {
      std::free(p);
      return;
    }
    free_[bytes].push_back(p);
    pooled_ += bytes;
  }

 private:
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t pooled_ = 0;
};

struct NewTensorInit {
  SlotPtr slot;
  Meta meta;
};

int64_t Accountable(const Meta& m) { return m.device.is_cpu() ? m.nbytes : 0; }
}  // namespace

at::Tensor HostTensor(const std::vector<int64_t>& shape, at::ScalarType type, bool pin) {
  size_t bytes = static_cast<size_t>(c10::multiply_integers(shape)) * c10::elementSize(type);
  if (pin || bytes < BufferPool::kMinBytes) return at::empty(shape, at::TensorOptions().dtype(type).pinned_memory(pin));
  void* p = BufferPool::Get().Take(bytes);
  return at::from_blob(p, shape, [bytes](void* q) { BufferPool::Get().Give(q, bytes); }, at::TensorOptions().dtype(type));
}

Napi::Function TensorWrap::Init(Napi::Env env) {
  return DefineClass(env, "Tensor",
                     {
                         InstanceAccessor<&TensorWrap::GetShape>("shape"),
                         InstanceAccessor<&TensorWrap::GetDtype>("dtype"),
                         InstanceAccessor<&TensorWrap::GetDevice>("device"),
                         InstanceAccessor<&TensorWrap::GetRequiresGrad, &TensorWrap::SetRequiresGrad>("requiresGrad"),
                         InstanceAccessor<&TensorWrap::GetNumel>("numel"),
                         InstanceAccessor<&TensorWrap::GetNbytes>("nbytes"),
                         InstanceAccessor<&TensorWrap::GetDisposed>("disposed"),
                         InstanceMethod<&TensorWrap::Dispose>("dispose"),
                         InstanceMethod<&TensorWrap::Data>("data"),
                         InstanceMethod<&TensorWrap::Item>("item"),
                     });
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(env, "Tensor cannot be constructed directly: use torch.tensor() or a factory");
  }
  auto* init = info[0].As<Napi::External<NewTensorInit>>().Data();
  slot_ = init->slot;
  meta_ = init->meta;
  auto& data = Addon(env);
  data.liveTensors++;
  data.liveBytes += meta_.nbytes;
  if (Accountable(meta_)) Napi::MemoryManagement::AdjustExternalMemory(env, Accountable(meta_));
  accounted_ = true;
}

Napi::Object TensorWrap::New(Napi::Env env, SlotPtr slot, const Meta& meta) {
  NewTensorInit init{std::move(slot), meta};
  return Addon(env).tensorCtor.New({Napi::External<NewTensorInit>::New(env, &init)});
}

void TensorWrap::Release(Napi::Env env) {
  slot_.reset();
  if (!accounted_) return;
  accounted_ = false;
  auto* data = env.GetInstanceData<AddonData>();
  if (data) {
    data->liveTensors--;
    data->liveBytes -= meta_.nbytes;
  }
  if (Accountable(meta_)) Napi::MemoryManagement::AdjustExternalMemory(env, -Accountable(meta_));
}

void TensorWrap::Finalize(Napi::Env env) { Release(env); }

TensorWrap* TensorWrap::FromValue(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject()) return nullptr;
  Napi::Object o = v.As<Napi::Object>();
  if (!o.InstanceOf(Addon(env).tensorCtor.Value())) return nullptr;
  return TensorWrap::Unwrap(o);
}

SlotPtr TensorWrap::SlotOf(Napi::Env env, const Napi::Value& v, const std::string& what) {
  TensorWrap* w = FromValue(env, v);
  if (!w) throw Napi::TypeError::New(env, what + ": expected a Tensor");
  if (!w->slot_) throw CodedJsError(env, "FINETORCH_DISPOSED", what + ": the tensor was disposed");
  return w->slot_;
}

Napi::Value TensorWrap::GetShape(const Napi::CallbackInfo& info) {
  Napi::Array a = Napi::Array::New(info.Env(), meta_.shape.size());
  for (size_t i = 0; i < meta_.shape.size(); i++) a.Set(i, Napi::Number::New(info.Env(), double(meta_.shape[i])));
  return a;
}
Napi::Value TensorWrap::GetDtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), DtypeName(meta_.dtype));
}
Napi::Value TensorWrap::GetDevice(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), DeviceName(meta_.device));
}
Napi::Value TensorWrap::GetRequiresGrad(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), meta_.requiresGrad);
}
void TensorWrap::SetRequiresGrad(const Napi::CallbackInfo& info, const Napi::Value& v) {
  Napi::Env env = info.Env();
  if (!slot_) throw CodedJsError(env, "FINETORCH_DISPOSED", "requiresGrad: the tensor was disposed");
  bool flag = v.ToBoolean();
  SlotPtr slot = slot_;
  Addon(env).executor->Post(env, "requiresGrad", [slot, flag] {
    if (slot->t.defined() && slot->t.requires_grad() != flag) slot->t.requires_grad_(flag);
  });
  meta_.requiresGrad = flag;
}
Napi::Value TensorWrap::GetNumel(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(meta_.numel));
}
Napi::Value TensorWrap::GetNbytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(meta_.nbytes));
}
Napi::Value TensorWrap::GetDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !slot_);
}
Napi::Value TensorWrap::Dispose(const Napi::CallbackInfo& info) {
  Release(info.Env());
  return info.Env().Undefined();
}

namespace {
Napi::Value TypedArrayFor(Napi::Env env, const at::Tensor& c) {
  size_t n = static_cast<size_t>(c.numel());
  size_t bytes = n * c.element_size();
  auto fill = [&](auto arr) {
    if (bytes) std::memcpy(arr.ArrayBuffer().Data(), c.data_ptr(), bytes);
    return arr;
  };
  switch (c.scalar_type()) {
    case at::kFloat: return fill(Napi::Float32Array::New(env, n));
    case at::kDouble: return fill(Napi::Float64Array::New(env, n));
    case at::kLong: return fill(Napi::TypedArrayOf<int64_t>::New(env, n, napi_bigint64_array));
    case at::kInt: return fill(Napi::Int32Array::New(env, n));
    case at::kShort: return fill(Napi::Int16Array::New(env, n));
    case at::kChar: return fill(Napi::Int8Array::New(env, n));
    case at::kByte:
    case at::kBool: return fill(Napi::Uint8Array::New(env, n));
    default: throw Napi::Error::New(env, "data(): unsupported dtype " + DtypeName(c.scalar_type()));
  }
}
}  // namespace

Napi::Value TensorWrap::Data(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SlotPtr slot = SlotOf(env, info.This(), "data()");
  return Addon(env).executor->Submit<at::Tensor>(
      env, "data()",
      [slot] {
        const at::Tensor& t = slot->get();
        auto st = t.scalar_type();
        auto out = (st == at::kHalf || st == at::kBFloat16) ? at::kFloat : st;
        // A fresh copy: the executor may update the original (an optimizer step) while JS copies.
        return t.detach().to(at::kCPU, out, false, true).contiguous();
      },
      [](Napi::Env env, at::Tensor& c) { return TypedArrayFor(env, c); });
}

Napi::Value TensorWrap::Item(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SlotPtr slot = SlotOf(env, info.This(), "item()");
  return Addon(env).executor->Submit<c10::Scalar>(
      env, "item()",
      [slot] { return slot->get().item(); },
      [](Napi::Env env, c10::Scalar& s) -> Napi::Value {
        if (s.isBoolean()) return Napi::Boolean::New(env, s.toBool());
        return Napi::Number::New(env, s.toDouble());
      });
}

namespace {
std::vector<int64_t> ShapeArg(Napi::Env env, const Napi::Value& v) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, "shape must be an array of integers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> shape(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) shape[i] = a.Get(i).As<Napi::Number>().Int64Value();
  return shape;
}
}  // namespace

// fromData(buffer: ArrayBufferView, shape, srcDtype, dtype, device, requiresGrad, pinMemory): a new
// tensor holding a copy of `buffer`, whose elements are of `srcDtype`. Pinned (page-locked) host
// memory lets the copy to a GPU run without blocking; it is only asked for where CUDA is present.
Napi::Value FromData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, "tensor()", [&]() -> Napi::Value {
    if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "tensor(): expected a TypedArray");
    Napi::TypedArray src = info[0].As<Napi::TypedArray>();
    auto shape = ShapeArg(env, info[1]);
    auto srcType = ParseDtype(info[2].As<Napi::String>());
    auto dtype = ParseDtype(info[3].As<Napi::String>());
    auto device = ParseDevice(info[4].As<Napi::String>());
    bool requiresGrad = info[5].ToBoolean();
    bool pin = info.Length() > 6 && info[6].ToBoolean() && device.is_cpu() && torch::cuda::is_available();

    at::Tensor t = HostTensor(shape, srcType, pin && dtype == srcType);
    size_t want = static_cast<size_t>(t.numel()) * t.element_size();
    if (src.ByteLength() != want) {
      throw Napi::Error::New(env, "tensor(): data has " + std::to_string(src.ByteLength()) +
                                      " bytes but the shape needs " + std::to_string(want));
    }
    if (want) {
      auto* base = static_cast<uint8_t*>(src.ArrayBuffer().Data()) + src.ByteOffset();
      std::memcpy(t.data_ptr(), base, want);
    }
    if (dtype != srcType) t = pin ? t.to(dtype).pin_memory() : t.to(dtype);
    auto slot = std::make_shared<Slot>();
    Meta meta = Meta::Of(t);
    meta.device = device;
    meta.requiresGrad = requiresGrad;
    if (device.is_cpu()) {
      if (requiresGrad) t.requires_grad_(true);
      slot->t = t;
    } else {
      // The copy to an accelerator runs on the executor, in order with everything else.
      slot->t = t;
      Addon(env).executor->Post(env, "tensor()", [slot, device, requiresGrad] {
        try {
          at::Tensor moved = slot->t.to(device);
          if (requiresGrad) moved.requires_grad_(true);
          slot->t = moved;
        } catch (...) {
          slot->t = at::Tensor();
          slot->error = "tensor(): could not move to " + device.str() + ": " +
                        ExceptionMessage(std::current_exception());
        }
      });
    }
    return TensorWrap::New(env, slot, meta);
  });
}

// factory(kind, shape, dtype, device, requiresGrad, a, b, c): allocation runs on the executor so
// random factories draw from the generator in call order (after manualSeed).
Napi::Value Factory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, "factory", [&]() -> Napi::Value {
    std::string kind = info[0].As<Napi::String>();
    auto shape = ShapeArg(env, info[1]);
    auto dtype = ParseDtype(info[2].As<Napi::String>());
    auto device = ParseDevice(info[3].As<Napi::String>());
    bool requiresGrad = info[4].ToBoolean();
    double a = info[5].IsNumber() ? info[5].As<Napi::Number>().DoubleValue() : 0;
    double b = info[6].IsNumber() ? info[6].As<Napi::Number>().DoubleValue() : 0;
    double c = info[7].IsNumber() ? info[7].As<Napi::Number>().DoubleValue() : 1;
    if (kind == "arange") {
      shape = {static_cast<int64_t>(std::ceil((b - a) / c))};
    }
    auto opts = at::TensorOptions().dtype(dtype).device(device);
    Meta meta;
    meta.shape = shape;
    meta.dtype = dtype;
    meta.device = device;
    meta.requiresGrad = requiresGrad;
    meta.numel = c10::multiply_integers(shape);
    meta.nbytes = meta.numel * static_cast<int64_t>(c10::elementSize(dtype));
    auto slot = std::make_shared<Slot>();
    Addon(env).executor->Post(env, kind, [slot, kind, shape, opts, requiresGrad, a, b, c] {
      try {
        at::Tensor t;
        if (kind == "zeros") t = at::zeros(shape, opts);
        else if (kind == "ones") t = at::ones(shape, opts);
        else if (kind == "empty") t = at::empty(shape, opts);
        else if (kind == "full") t = at::full(shape, a, opts);
        else if (kind == "rand") t = at::rand(shape, opts);
        else if (kind == "randn") t = at::randn(shape, opts);
        else if (kind == "randint") t = at::randint(int64_t(a), int64_t(b), shape, opts);
        else if (kind == "arange") t = at::arange(a, b, c, opts);
        else throw std::invalid_argument("unknown factory " + kind);
        if (requiresGrad) t.requires_grad_(true);
        slot->t = t;
      } catch (...) {
        slot->error = kind + "(): " + ExceptionMessage(std::current_exception());
      }
    });
    return TensorWrap::New(env, slot, meta);
  });
}

}  // namespace finetorch
