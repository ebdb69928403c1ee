// The training step: the fused forward, cross-entropy, backward, clip and optimizer step of fit's
// fast path as one queued task; the update applied to gradients accumulated elsewhere (an
// accumulation window's tail, the generic step); gradient clipping.
#include "train_step.h"

#include "executor.h"
#include "lora.h"
#include "optimizer.h"
#include "script_module.h"
#include "tensor.h"

#include <torch/nn/utils/clip_grad.h>

#include <cmath>

namespace finetorch {

namespace {
struct StepResult {
  double loss = 0;
  int64_t correct = 0;
  int64_t total = 0;
  double gradNorm = -1;
  bool skipped = false;
  double scale = 1;
};
std::vector<at::Tensor> AllParams(const OptimizerHolder& h) {
  std::vector<at::Tensor> ps;
  for (auto& g : h.groups) ps.insert(ps.end(), g.begin(), g.end());
  return ps;
}

// The update from gradients already accumulated, as every step of fit applies it: unscale (fp16),
// clip, step unless the fp16 gradients overflowed, update the loss scale.
void ApplyStep(OptimizerHolder& h, Amp amp, double clipNorm, StepResult& r) {
  bool foundInf = false;
  if (amp == Amp::FP16) {
    h.scaler.init(h.groups.empty() || h.groups[0].empty() ? c10::Device(c10::kCPU) : h.groups[0][0].device());
    foundInf = h.scaler.unscale(AllParams(h));
  }
  if (clipNorm > 0) r.gradNorm = torch::nn::utils::clip_grad_norm_(AllParams(h), clipNorm);
  if (!foundInf) {
    NoGradGuard ng;
    h.get().step();
  }
  if (amp == Amp::FP16) {
    h.scaler.update(foundInf);
    r.skipped = foundInf;
    r.scale = h.scaler.scale.item<double>();
  }
}

// { loss, correct, total } (a fused step's) and { gradNorm, skipped, scale } (every update's).
Napi::Value StepToJs(Napi::Env env, const StepResult& r, bool withLoss) {
  Napi::Object out = Napi::Object::New(env);
  if (withLoss) {
    out.Set("loss", r.loss);
    out.Set("correct", double(r.correct));
    out.Set("total", double(r.total));
  }
  out.Set("gradNorm", r.gradNorm < 0 ? env.Null() : Napi::Number::New(env, r.gradNorm));
  out.Set("skipped", r.skipped);
  out.Set("scale", r.scale);
  return out;
}
}  // namespace

// applyStep(optimizer, { clipNorm, amp }): the update and zero-grad for gradients accumulated by
// trainStep calls that did not step (the tail of a gradAccumulation window at an epoch's end).
Napi::Value ApplyAccumulated(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OptimizerPtr opt = OptimizerWrap::Of(env, info[0], "applyStep");
  Napi::Object o = info[1].As<Napi::Object>();
  double clipNorm = o.Get("clipNorm").As<Napi::Number>().DoubleValue();
  Amp amp = static_cast<Amp>(o.Get("amp").IsNumber() ? o.Get("amp").As<Napi::Number>().Int32Value() : 0);
  return Addon(env).executor->Submit<StepResult>(
      env, "applyStep",
      [=] {
        StepResult r;
        ApplyStep(*opt, amp, clipNorm, r);
        opt->get().zero_grad();
        return r;
      },
      [](Napi::Env env, StepResult& r) { return StepToJs(env, r, false); });
}

// trainStep(module, optimizer | null, input, target, weight | null,
//           { reduction, ignoreIndex, labelSmoothing, lossScale, clipNorm, step, zeroGrad })
// One queued task: forward (grad on), cross-entropy, backward, optional clipping, step, zero-grad.
Napi::Value TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = ModuleWrap::Of(env, info[0], "trainStep");
  OptimizerPtr opt = info[1].IsNull() ? nullptr : OptimizerWrap::Of(env, info[1], "trainStep");
  SlotPtr input = TensorWrap::SlotOf(env, info[2], "trainStep input");
  SlotPtr target = TensorWrap::SlotOf(env, info[3], "trainStep target");
  SlotPtr weight = info[4].IsNull() || info[4].IsUndefined() ? nullptr : TensorWrap::SlotOf(env, info[4], "loss weight");
  Napi::Object o = info[5].As<Napi::Object>();
  int64_t reduction = o.Get("reduction").As<Napi::Number>().Int64Value();
  int64_t ignoreIndex = o.Get("ignoreIndex").As<Napi::Number>().Int64Value();
  double smoothing = o.Get("labelSmoothing").As<Napi::Number>().DoubleValue();
  double lossScale = o.Get("lossScale").As<Napi::Number>().DoubleValue();
  double clipNorm = o.Get("clipNorm").As<Napi::Number>().DoubleValue();
  bool doStep = o.Get("step").ToBoolean();
  bool doZero = o.Get("zeroGrad").ToBoolean();
  Amp amp = static_cast<Amp>(o.Get("amp").IsNumber() ? o.Get("amp").As<Napi::Number>().Int32Value() : 0);
  bool channelsLast = o.Get("channelsLast").ToBoolean();
  std::string device = o.Get("device").IsString() ? o.Get("device").As<Napi::String>().Utf8Value() : "";
  return Addon(env).executor->Submit<StepResult>(
      env, "trainStep",
      [=] {
        AutoGradMode grad(true);
        LoraScope lora(*m);
        at::Tensor x = input->get();
        at::Tensor y = target->get();
        c10::Device dev = device.empty() ? x.device() : ParseDevice(device);
        // Host batches go to the model's device here, without blocking on pinned memory.
        if (x.device() != dev) x = x.to(dev, x.is_pinned());
        if (y.device() != dev) y = y.to(dev, y.is_pinned());
        if (channelsLast && x.dim() == 4) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        c10::optional<at::Tensor> w;
        if (weight) w = weight->get().to(dev);
        at::Tensor logits, loss;
        {
          AutocastScope autocast(amp, dev);
          logits = m->forward({x}).toTensor();
          CheckTargets(logits, y, ignoreIndex);
          loss = at::cross_entropy_loss(logits.scalar_type() == at::kFloat ? logits : logits.to(at::kFloat), y, w, reduction, ignoreIndex, smoothing);
        }
        StepResult r;
        r.loss = loss.item<double>();
        if (!std::isfinite(r.loss)) {
          // No update from a non-finite loss: JS decides whether to stop or skip.
          if (opt) opt->get().zero_grad();
          return r;
        }
        if (amp == Amp::FP16 && opt) {
          opt->scaler.init(dev);
          (loss * lossScale * opt->scaler.scale).backward();
        } else {
          (lossScale == 1.0 ? loss : loss * lossScale).backward();
        }
        if (opt && doStep) ApplyStep(*opt, amp, clipNorm, r);
        else if (opt && clipNorm > 0) r.gradNorm = torch::nn::utils::clip_grad_norm_(AllParams(*opt), clipNorm);
        if (opt && doZero) opt->get().zero_grad();
        NoGradGuard ng;
        if (logits.dim() == 2 && y.dim() == 1) {
          r.correct = logits.argmax(1).eq(y).sum().item<int64_t>();
          r.total = y.size(0);
        }
        return r;
      },
      [](Napi::Env env, StepResult& r) { return StepToJs(env, r, true); });
}

// clipGradNorm(params: Tensor[], maxNorm, normType): Promise<number> (the total norm before clipping)
Napi::Value ClipGradNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array raw = info[0].As<Napi::Array>();
  std::vector<SlotPtr> slots;
  for (uint32_t i = 0; i < raw.Length(); i++) slots.push_back(TensorWrap::SlotOf(env, raw.Get(i), "clipGradNorm"));
  double maxNorm = info[1].As<Napi::Number>().DoubleValue();
  double normType = info[2].As<Napi::Number>().DoubleValue();
  return Addon(env).executor->Submit<double>(
      env, "clipGradNorm",
      [slots, maxNorm, normType] {
        std::vector<at::Tensor> ps;
        for (auto& s : slots) ps.push_back(s->get());
        return torch::nn::utils::clip_grad_norm_(ps, maxNorm, normType);
      },
      [](Napi::Env env, double& n) -> Napi::Value { return Napi::Number::New(env, n); });
}

}  // namespace finetorch
