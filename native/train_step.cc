// The training step: the fused forward, loss (every built-in one), backward, clip and optimizer
// step of fit's fast path as one queued task; the update applied to gradients accumulated elsewhere (an
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
    out.Set("correct", r.correct < 0 ? Napi::Number::New(env, NAN) : Napi::Number::New(env, double(r.correct)));
    out.Set("total", double(r.total));
  }
  out.Set("gradNorm", r.gradNorm < 0 ? env.Null() : Napi::Number::New(env, r.gradNorm));
  out.Set("skipped", r.skipped);
  out.Set("scale", r.scale);
  return out;
}

// The built-in losses the fused step computes, as lib/nn's classes number them (FusedLoss.kind).
enum class LossKind { CrossEntropy = 0, BCEWithLogits = 1, MSE = 2, SmoothL1 = 3, Huber = 4 };
const char* const kLossNames[] = {"CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "SmoothL1Loss", "HuberLoss"};

std::string Shape(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); i++) s += (i ? "," : "") + std::to_string(t.size(i));
  return s + "]";
}

// The element-wise losses' checks, with lib/nn/losses.ts's checkPair words: PyTorch only warns when
// a regression target broadcasts against the output, which is almost always a bug.
void CheckPair(const at::Tensor& out, const at::Tensor& y, const std::string& what) {
  if (!y.is_floating_point()) {
    throw CodedError("FINETORCH_DTYPE", what + ": targets must be floating point like the output (" + DtypeName(out.scalar_type()) +
                                            "), got " + DtypeName(y.scalar_type()) + " (make them with torch.tensor(values, { dtype: 'float32' }))");
  }
  if (y.scalar_type() != out.scalar_type()) {
    throw CodedError("FINETORCH_DTYPE", what + ": output (" + DtypeName(out.scalar_type()) + ") and target (" + DtypeName(y.scalar_type()) +
                                            ") must have one dtype");
  }
  if (out.sizes() != y.sizes()) {
    std::string hint = out.dim() == y.dim() + 1 && out.size(-1) == 1   ? " (squeeze the output's last dimension, or reshape the target to match)"
                       : y.dim() == out.dim() + 1 && y.size(-1) == 1 ? " (squeeze the target's last dimension)"
                                                                       : "";
    throw CodedError("FINETORCH_SHAPE", what + ": output of shape " + Shape(out) + " and target of shape " + Shape(y) + " must have one shape" + hint);
  }
}

// A BCE weight or pos_weight: the output's dtype, broadcasting to its shape.
void CheckLossWeight(const at::Tensor& w, const at::Tensor& out, const char* name) {
  if (w.scalar_type() != out.scalar_type()) {
    throw CodedError("FINETORCH_DTYPE", std::string("BCEWithLogitsLoss: ") + name + " must be " + DtypeName(out.scalar_type()) +
                                            " like the output, got " + DtypeName(w.scalar_type()));
  }
  bool ok = w.dim() <= out.dim();
  for (int64_t i = 0; ok && i < w.dim(); i++) ok = w.size(i) == 1 || w.size(i) == out.size(out.dim() - w.dim() + i);
  if (!ok) {
    throw CodedError("FINETORCH_SHAPE", std::string("BCEWithLogitsLoss: ") + name + " of shape " + Shape(w) + " does not broadcast to the output's shape " +
                                            Shape(out) +
                                            (std::string(name) == "posWeight" ? " (give one value per label: [" + std::to_string(out.dim() ? out.size(-1) : 1) + "])" : ""));
  }
}

struct LossSpec {
  LossKind kind = LossKind::CrossEntropy;
  int64_t reduction = 1;
  int64_t ignoreIndex = -100;
  double smoothing = 0;
  double param = 0;  // SmoothL1's beta, Huber's delta
  SlotPtr weight, posWeight;
};

// The loss of the (float32) output, as the lib/nn class of the same kind computes it.
at::Tensor ComputeLoss(const LossSpec& s, const at::Tensor& out, const at::Tensor& y, c10::Device dev) {
  c10::optional<at::Tensor> w, pw;
  if (s.weight) w = s.weight->get().to(dev);
  if (s.posWeight) pw = s.posWeight->get().to(dev);
  if (s.kind == LossKind::CrossEntropy) {
    CheckTargets(out, y, s.ignoreIndex);
    return at::cross_entropy_loss(out, y, w, s.reduction, s.ignoreIndex, s.smoothing);
  }
  CheckPair(out, y, kLossNames[static_cast<int>(s.kind)]);
  switch (s.kind) {
    case LossKind::BCEWithLogits:
      if (w) CheckLossWeight(*w, out, "weight");
      if (pw) CheckLossWeight(*pw, out, "posWeight");
      return at::binary_cross_entropy_with_logits(out, y, w, pw, s.reduction);
    case LossKind::MSE: return at::mse_loss(out, y, s.reduction);
    case LossKind::SmoothL1: return at::smooth_l1_loss(out, y, s.reduction, s.param);
    default: return at::huber_loss(out, y, s.reduction, s.param);
  }
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
//           { lossKind, reduction, ignoreIndex, labelSmoothing, lossParam, posWeight, lossScale,
//             clipNorm, step, zeroGrad, amp, channelsLast, device })
// One queued task: forward (grad on), the loss, backward, optional clipping, step, zero-grad.
Napi::Value TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = ModuleWrap::Of(env, info[0], "trainStep");
  OptimizerPtr opt = info[1].IsNull() ? nullptr : OptimizerWrap::Of(env, info[1], "trainStep");
  SlotPtr input = TensorWrap::SlotOf(env, info[2], "trainStep input");
  SlotPtr target = TensorWrap::SlotOf(env, info[3], "trainStep target");
  Napi::Object o = info[5].As<Napi::Object>();
  auto number = [&](const char* key, double otherwise) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : otherwise;
  };
  LossSpec loss;
  loss.kind = static_cast<LossKind>(static_cast<int>(number("lossKind", 0)));
  if (static_cast<int>(loss.kind) < 0 || static_cast<int>(loss.kind) > 4) throw CodedJsError(env, "FINETORCH_VALUE", "trainStep: unknown loss kind");
  loss.reduction = static_cast<int64_t>(number("reduction", 1));
  loss.ignoreIndex = static_cast<int64_t>(number("ignoreIndex", -100));
  loss.smoothing = number("labelSmoothing", 0);
  loss.param = number("lossParam", 0);
  loss.weight = info[4].IsNull() || info[4].IsUndefined() ? nullptr : TensorWrap::SlotOf(env, info[4], "loss weight");
  Napi::Value pw = o.Get("posWeight");
  loss.posWeight = pw.IsNull() || pw.IsUndefined() ? nullptr : TensorWrap::SlotOf(env, pw, "loss posWeight");
  double lossScale = number("lossScale", 1);
  double clipNorm = number("clipNorm", 0);
  bool doStep = o.Get("step").ToBoolean();
  bool doZero = o.Get("zeroGrad").ToBoolean();
  Amp amp = static_cast<Amp>(static_cast<int>(number("amp", 0)));
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
        at::Tensor logits, value;
        {
          AutocastScope autocast(amp, dev);
          logits = m->forward({x}).toTensor();
          // The loss in float32 under autocast, as the generic step computes it.
          value = ComputeLoss(loss, logits.scalar_type() == at::kFloat || !logits.is_floating_point() ? logits : logits.to(at::kFloat), y, dev);
        }
        StepResult r;
        r.loss = value.item<double>();
        if (!std::isfinite(r.loss)) {
          // No update from a non-finite loss: JS decides whether to stop or skip.
          if (opt) opt->get().zero_grad();
          return r;
        }
        if (amp == Amp::FP16 && opt) {
          opt->scaler.init(dev);
          (value * lossScale * opt->scaler.scale).backward();
        } else {
          (lossScale == 1.0 ? value : value * lossScale).backward();
        }
        if (opt && doStep) ApplyStep(*opt, amp, clipNorm, r);
        else if (opt && clipNorm > 0) r.gradNorm = torch::nn::utils::clip_grad_norm_(AllParams(*opt), clipNorm);
        if (opt && doZero) opt->get().zero_grad();
        r.total = y.dim() > 0 ? y.size(0) : 1;
        r.correct = -1;  // no accuracy but for class indices
        NoGradGuard ng;
        if (logits.dim() == 2 && y.dim() == 1 && y.scalar_type() == at::kLong) {
          r.correct = logits.argmax(1).eq(y).sum().item<int64_t>();
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
