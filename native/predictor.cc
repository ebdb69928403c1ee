#include "predictor.h"

#include "code_check.h"
#include "executor.h"
#include "lora.h"
#include "script_module.h"
#include "tensor.h"

#include <torch/csrc/jit/runtime/graph_executor.h>

#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

namespace finetorch {

struct PredictorState {
  std::mutex mu;
  // What runs: `source` itself, or (with optimize) a frozen, inference-optimized copy of it, made
  // again after each update. Updates copy weights into `source` in place.
  ModulePtr module;
  ModulePtr source;
  c10::Device device = c10::Device(c10::kCPU);
  bool optimize = false;
  std::string notOptimized;  // why freezing failed (then `module` is `source`)
  // Set if the model's graph refuses inference tensors (a DifferentiableGraph): no_grad from then on.
  std::atomic<bool> noInference{false};

  ModulePtr get() {
    std::lock_guard<std::mutex> lock(mu);
    if (!module) throw CodedError("FINETORCH_DISPOSED", "the predictor has no model");
    return module;
  }
  ModulePtr Source() {
    std::lock_guard<std::mutex> lock(mu);
    if (!source) throw CodedError("FINETORCH_DISPOSED", "the predictor has no model");
    return source;
  }
};

namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

Named NamedState(const torch::jit::Module& m) {
  Named out;
  for (const auto& p : m.named_parameters(true)) out.emplace_back(p.name, p.value);
  for (const auto& b : m.named_buffers(true)) out.emplace_back(b.name, b.value);
  return out;
}

std::string ShapeStr(at::IntArrayRef s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

// Eval mode, on the predictor's device, parameters without grad: what serving needs, done once.
ModulePtr Prepare(torch::jit::Module m, const c10::Device& device) {
  m.to(device);
  m.eval();
  for (const auto& p : m.parameters(true)) const_cast<at::Tensor&>(p).requires_grad_(false);
  return std::make_shared<torch::jit::Module>(std::move(m));
}

// torch.jit.optimize_for_inference(torch.jit.freeze(m)): weights become constants, BatchNorm folds
// into the convolution before it, and (CPU) convolutions run on oneDNN with prepacked weights.
// A model that cannot be frozen is served as it is: `why` says why.
ModulePtr Optimized(const ModulePtr& m, std::string& why) {
  // The passes inline submodule calls only with graph optimisation on, which finetorch turns off on
  // the training executor (backends.jit.optimize), where an adopted module is frozen.
  torch::jit::GraphOptimizerEnabledGuard optimizing(true);
  try {
    torch::jit::Module frozen = torch::jit::freeze(*m);
    return std::make_shared<torch::jit::Module>(torch::jit::optimize_for_inference(frozen));
  } catch (const c10::OutOfMemoryError&) {
    throw;
  } catch (const std::exception& e) {
    why = FirstLine(e.what());
    return m;
  }
}

// Makes `m` the served model: the source of updates, and what runs (optimized when asked).
void Serve(PredictorState& s, ModulePtr m) {
  std::string why;
  ModulePtr run = s.optimize ? Optimized(m, why) : m;
  std::lock_guard<std::mutex> lock(s.mu);
  s.source = std::move(m);
  s.module = std::move(run);
  s.notOptimized = why;
}

// After weights were copied into the source: a fresh optimized copy to run.
void Reoptimize(PredictorState& s) {
  if (s.optimize) Serve(s, s.Source());
}

struct Signature {
  std::vector<std::string> names;
  std::vector<Meta> metas;
};

Signature SignatureOf(const torch::jit::Module& m) {
  Signature s;
  for (const auto& p : m.named_parameters(true)) {
    s.names.push_back(p.name);
    s.metas.push_back(Meta::Of(p.value));
  }
  return s;
}

Napi::Value SignatureToJs(Napi::Env env, Signature& s) {
  Napi::Array a = Napi::Array::New(env, s.names.size());
  for (size_t i = 0; i < s.names.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", s.names[i]);
    Napi::Array shape = Napi::Array::New(env, s.metas[i].shape.size());
    for (size_t j = 0; j < s.metas[i].shape.size(); j++) shape.Set(j, Napi::Number::New(env, double(s.metas[i].shape[j])));
    o.Set("shape", shape);
    o.Set("dtype", DtypeName(s.metas[i].dtype));
    a.Set(i, o);
  }
  return a;
}

// Copies `from` into the predictor's model after checking that every name, shape and dtype
// matches, so a refused update leaves the served weights untouched.
void CopyInto(torch::jit::Module& to, const Named& from) {
  Named mine = NamedState(to);
  std::map<std::string, at::Tensor> theirs(from.begin(), from.end());
  auto refuse = [](const std::string& why) {
    throw CodedError("FINETORCH_SHAPE", "the new weights do not fit the served model (another architecture?): " + why);
  };
  for (const auto& [name, t] : mine) {
    auto it = theirs.find(name);
    if (it == theirs.end()) refuse("it has no '" + name + "'");
    if (!it->second.sizes().equals(t.sizes())) {
      refuse("'" + name + "' has shape " + ShapeStr(it->second.sizes()) + ", the served model's " + ShapeStr(t.sizes()));
    }
    if (it->second.scalar_type() != t.scalar_type()) {
      refuse("'" + name + "' is " + DtypeName(it->second.scalar_type()) + ", the served model's " + DtypeName(t.scalar_type()));
    }
  }
  if (theirs.size() != mine.size()) {
    std::map<std::string, at::Tensor> ours(mine.begin(), mine.end());
    for (const auto& [name, t] : from) {
      if (!ours.count(name)) refuse("it has '" + name + "', which the served model has not");
    }
  }
  NoGradGuard noGrad;
  for (auto& [name, t] : mine) t.copy_(theirs[name]);
}

torch::jit::Module LoadBytes(const std::string& bytes, const std::vector<std::pair<std::string, std::string>>& code,
                             const c10::Device& device) {
  CheckCodeEntries(code);
  try {
    std::istringstream in(bytes);
    return torch::jit::load(in, device);
  } catch (const c10::OutOfMemoryError&) {
    throw;
  } catch (const std::exception&) {
    throw CodedError("FINETORCH_BAD_MODEL_FILE", ExceptionMessage(std::current_exception()));
  }
}

std::vector<std::pair<std::string, std::string>> CodeArg(const Napi::Value& v) {
  std::vector<std::pair<std::string, std::string>> code;
  if (!v.IsArray()) return code;
  auto arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    auto pair = arr.Get(i).As<Napi::Array>();
    code.emplace_back(pair.Get(0u).As<Napi::String>().Utf8Value(), pair.Get(1u).As<Napi::String>().Utf8Value());
  }
  return code;
}

std::shared_ptr<std::string> BytesArg(const Napi::Value& v) {
  auto b = v.As<Napi::Buffer<char>>();
  return std::make_shared<std::string>(b.Data(), b.Length());
}

// The intra-op thread count is per OS thread under OpenMP (libtorch's CPU backend on Debian and
// in pip's wheels): set on this executor's thread, it limits this predictor only. at::set_num_threads
// also records the count as the default for threads started later, so that default is put back.
// libtorch's native pool is one per process, sized once: there the count is left alone.
void SetOwnThreads(int n) {
#if AT_PARALLEL_OPENMP
  if (n <= 0) return;
  int before = at::get_num_threads();
  at::set_num_threads(n);
  std::thread([before] { at::set_num_threads(before); }).join();
#else
  (void)n;
#endif
}

struct RunOut {
  std::vector<at::Tensor> rows;
  std::vector<Meta> metas;
  std::vector<at::Tensor> host;  // float32/float64 copies of the rows, read by JS without a task
  at::Tensor topValues, topIndices;
};

c10::IValue Forward(PredictorState& s, torch::jit::Module& m, const at::Tensor& batch) {
  if (!s.noInference) {
    try {
      c10::InferenceMode guard;
      return m.forward({batch});
    } catch (const c10::Error& e) {
      // Graphs that once ran with gradients save their outputs for backward, which inference
      // tensors refuse; such a model is served under no_grad instead (see ModuleWrap::RunMethod).
      if (std::string(e.what()).find("Inference tensors cannot be saved for backward") == std::string::npos) throw;
      s.noInference = true;
    }
  }
  NoGradGuard noGrad;
  return m.forward({batch});
}

RunOut RunBatch(PredictorState& s, const std::vector<SlotPtr>& inputs, int64_t topk) {
  ModulePtr m = s.get();
  std::vector<at::Tensor> xs;
  xs.reserve(inputs.size());
  for (const auto& slot : inputs) xs.push_back(slot->get().to(s.device));
  at::Tensor batch = at::stack(xs);
  c10::IValue out = Forward(s, *m, batch);
  if (!out.isTensor()) {
    throw CodedError("FINETORCH_TORCH", "the model's forward returned a " + out.tagKind() +
                                        ": a Predictor serves models whose forward returns one tensor");
  }
  at::Tensor y = out.toTensor();
  int64_t n = static_cast<int64_t>(inputs.size());
  if (y.dim() == 0 || y.size(0) != n) {
    throw CodedError("FINETORCH_SHAPE", "the model's output has shape " + ShapeStr(y.sizes()) + ": its first dimension is not the batch of " + std::to_string(n));
  }
  RunOut r;
  NoGradGuard noGrad;
  // Clones made outside inference mode are ordinary tensors, usable in any later op.
  if (topk > 0) {
    at::Tensor probs = at::softmax(y.detach().reshape({n, -1}).to(at::kFloat), 1);
    auto top = probs.topk(std::min<int64_t>(topk, probs.size(1)), 1);
    r.topValues = std::get<0>(top).to(at::kCPU).contiguous().clone();
    r.topIndices = std::get<1>(top).to(at::kCPU).contiguous().clone();
    return r;
  }
  for (int64_t i = 0; i < n; i++) {
    at::Tensor row = y[i].clone();
    r.metas.push_back(Meta::Of(row));
    if (at::isFloatingType(row.scalar_type())) {
      auto type = row.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
      r.host.push_back(row.to(at::kCPU, type).contiguous().clone());
    } else {
      r.host.emplace_back();
    }
    r.rows.push_back(std::move(row));
  }
  return r;
}

Napi::Value RunOutToJs(Napi::Env env, RunOut& r) {
  if (r.topValues.defined()) {
    int64_t n = r.topValues.size(0), k = r.topValues.size(1);
    Napi::Array a = Napi::Array::New(env, n);
    const float* v = r.topValues.data_ptr<float>();
    const int64_t* ix = r.topIndices.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; i++) {
      Napi::Array probs = Napi::Array::New(env, k), idx = Napi::Array::New(env, k);
      for (int64_t j = 0; j < k; j++) {
        probs.Set(j, Napi::Number::New(env, v[i * k + j]));
        idx.Set(j, Napi::Number::New(env, double(ix[i * k + j])));
      }
      Napi::Object o = Napi::Object::New(env);
      o.Set("probabilities", probs);
      o.Set("indices", idx);
      a.Set(i, o);
    }
    return a;
  }
  Napi::Array a = Napi::Array::New(env, r.rows.size());
  for (size_t i = 0; i < r.rows.size(); i++) {
    auto slot = std::make_shared<Slot>();
    slot->t = r.rows[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("tensor", TensorWrap::New(env, slot, r.metas[i]));
    const at::Tensor& h = r.host[i];
    if (h.defined()) {
      size_t count = static_cast<size_t>(h.numel());
      Napi::Value arr;
      if (h.scalar_type() == at::kDouble) {
        auto f = Napi::Float64Array::New(env, count);
        if (count) std::memcpy(f.ArrayBuffer().Data(), h.data_ptr(), count * sizeof(double));
        arr = f;
      } else {
        auto f = Napi::Float32Array::New(env, count);
        if (count) std::memcpy(f.ArrayBuffer().Data(), h.data_ptr(), count * sizeof(float));
        arr = f;
      }
      o.Set("data", arr);
    }
    a.Set(i, o);
  }
  return a;
}

void CleanupHook(void* arg);

}  // namespace

Napi::Function PredictorWrap::Init(Napi::Env env) {
  return DefineClass(env, "Predictor",
                     {
                         InstanceMethod<&PredictorWrap::Load>("load"),
                         InstanceMethod<&PredictorWrap::Adopt>("adopt"),
                         InstanceMethod<&PredictorWrap::CopyWeights>("copyWeights"),
                         InstanceMethod<&PredictorWrap::UpdateFromBytes>("updateFromBytes"),
                         InstanceMethod<&PredictorWrap::Run>("run"),
                         InstanceMethod<&PredictorWrap::Close>("close"),
                         InstanceMethod<&PredictorWrap::NotOptimized>("notOptimized"),
                     });
}

// new Predictor(device, threads, optimize): starts the predictor's own executor thread.
PredictorWrap::PredictorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PredictorWrap>(info) {
  Napi::Env env = info.Env();
  state_ = std::make_shared<PredictorState>();
  state_->device = Guard(env, "Predictor", [&] { return ParseDevice(info[0].As<Napi::String>()); });
  int threads = info[1].As<Napi::Number>().Int32Value();
  state_->optimize = info[2].ToBoolean();
  executor_ = new Executor(env);
  napi_add_env_cleanup_hook(env, CleanupHook, this);
  executor_->Post(env, "Predictor threads", [threads] { SetOwnThreads(threads); });
}

namespace {
void CleanupHook(void* arg) { static_cast<PredictorWrap*>(arg)->Shutdown(true); }
}  // namespace

PredictorWrap::~PredictorWrap() { Shutdown(); }

void PredictorWrap::Shutdown(bool fromHook) {
  if (!executor_) return;
  if (!fromHook) napi_remove_env_cleanup_hook(Env(), CleanupHook, this);
  Executor* ex = executor_;
  executor_ = nullptr;
  ex->Shutdown();
  delete ex;
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->module.reset();
  state_->source.reset();
}

Executor& PredictorWrap::Live(Napi::Env env, const std::string& what) {
  if (!executor_) throw CodedJsError(env, "FINETORCH_DISPOSED", what + ": the predictor is closed");
  return *executor_;
}

// load(bytes, code): Promise<signature>, the model read on the predictor's own thread.
Napi::Value PredictorWrap::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Executor& ex = Live(env, "Predictor.load");
  auto bytes = BytesArg(info[0]);
  auto code = CodeArg(info[1]);
  auto state = state_;
  return ex.Submit<Signature>(
      env, "Predictor.load",
      [state, bytes, code] {
        ModulePtr m = Prepare(LoadBytes(*bytes, code, state->device), state->device);
        Serve(*state, m);
        return SignatureOf(*m);
      },
      [](Napi::Env env, Signature& s) { return SignatureToJs(env, s); });
}

// adopt(module): Promise<signature>. The copy (Module::clone: its own tensors and its own compiled
// methods) is a task on the training executor, so it is taken between the steps queued there.
Napi::Value PredictorWrap::Adopt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "Predictor.load");
  ModulePtr source = ModuleWrap::Of(env, info[0], "Predictor.load");
  auto state = state_;
  return Addon(env).executor->Submit<Signature>(
      env, "Predictor.load",
      [state, source] {
        NoGradGuard noGrad;  // the copies are leaves, not clones recorded by autograd
        LoraSaveScope lora(*source, true);  // a LoRA adapter is served merged into the weights
        ModulePtr m = Prepare(source->clone(), state->device);
        Serve(*state, m);
        return SignatureOf(*m);
      },
      [](Napi::Env env, Signature& s) { return SignatureToJs(env, s); });
}

// copyWeights(module): Promise<void>. A copy of the module's parameters and buffers is taken on
// the training executor (between steps), then copied in place into the served model on the
// predictor's executor, after the batches already queued there.
Napi::Value PredictorWrap::CopyWeights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "Predictor.update");
  ModulePtr source = ModuleWrap::Of(env, info[0], "Predictor.update");
  auto state = state_;
  Napi::ObjectReference self = Napi::Persistent(info.This().As<Napi::Object>());
  auto keep = std::make_shared<Napi::ObjectReference>(std::move(self));
  return Addon(env).executor->Submit<std::shared_ptr<Named>>(
      env, "Predictor.update",
      [source] {
        auto copy = std::make_shared<Named>();
        NoGradGuard noGrad;
        LoraSaveScope lora(*source, true);
        for (auto& [name, t] : NamedState(*source)) copy->emplace_back(name, t.detach().clone());
        return copy;
      },
      [state, keep](Napi::Env env, std::shared_ptr<Named>& copy) -> Napi::Value {
        PredictorWrap* self = Unwrap(keep->Value());
        Executor& ex = self->Live(env, "Predictor.update");
        return ex.Run(env, "Predictor.update", [state, copy] {
          ModulePtr m = state->Source();
          for (auto& [name, t] : *copy) t = t.to(state->device);
          CopyInto(*m, *copy);
          Reoptimize(*state);
        });
      });
}

// updateFromBytes(bytes, code): Promise<void>, a model file read and copied in on the predictor's thread.
Napi::Value PredictorWrap::UpdateFromBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Executor& ex = Live(env, "Predictor.update");
  auto bytes = BytesArg(info[0]);
  auto code = CodeArg(info[1]);
  auto state = state_;
  return ex.Run(env, "Predictor.update", [state, bytes, code] {
    torch::jit::Module loaded = LoadBytes(*bytes, code, state->device);
    ModulePtr m = state->Source();
    CopyInto(*m, NamedState(loaded));
    Reoptimize(*state);
  });
}

// run(inputs[], topk): Promise<rows>. Stacks same-shape examples into one batch, runs forward, and
// gives each example its row: { tensor, data } or, with topk > 0, { probabilities, indices } of the
// softmax, computed here so that classify never waits on the training executor.
Napi::Value PredictorWrap::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Executor& ex = Live(env, "predict");
  Napi::Array raw = info[0].As<Napi::Array>();
  std::vector<SlotPtr> inputs;
  for (uint32_t i = 0; i < raw.Length(); i++) inputs.push_back(TensorWrap::SlotOf(env, raw.Get(i), "predict"));
  int64_t topk = info[1].As<Napi::Number>().Int64Value();
  auto state = state_;
  return ex.Submit<RunOut>(
      env, "predict", [state, inputs, topk] { return RunBatch(*state, inputs, topk); },
      [](Napi::Env env, RunOut& r) { return RunOutToJs(env, r); });
}

// notOptimized(): why the served model is not the optimized copy asked for ('' when it is, or when
// optimize was not asked).
Napi::Value PredictorWrap::NotOptimized(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(state_->mu);
  return Napi::String::New(info.Env(), state_->notOptimized);
}

// close(): stops the predictor's thread (after the task it is running) and frees its model.
Napi::Value PredictorWrap::Close(const Napi::CallbackInfo& info) {
  Shutdown();
  return info.Env().Undefined();
}

}  // namespace finetorch
