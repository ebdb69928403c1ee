// AdamW's update of one parameter: PyTorch's op sequence, or the same arithmetic in one pass.
//
// The op sequence reads and writes every parameter-sized tensor several times and allocates two
// temporaries: 33-38 ms per step for resnet18's 11.2M parameters at 1 thread here (Python's own
// loop takes 80), bound by memory, not arithmetic. The fused pass reads the four tensors once and
// writes three: 10 ms. It stays bit for bit the op sequence because each float operation is the
// one ATen's kernel does, in the same order: ATen's AVX2 and AVX-512 kernels compute
// add_(x, alpha) as fma(x, alpha, self), addcmul_ as fma(value * t1, t2, self), lerp_ as
// fma(weight, end - self, self) (weight under 0.5), and addcdiv_ as self + (value * t1) / t2.
// Where ATen multiplies and adds separately (its DEFAULT kernels, a CPU without AVX2) the results
// would differ in the last bit, so the first update of a process checks the fused pass against the
// op sequence on a probe and keeps the op sequence unless every bit agrees.
#include "fused_adamw.h"

#include "compat.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace finetorch {

namespace {

// The op sequence: torch.optim.AdamW's _single_tensor_adamw.
void Ops(at::Tensor& p, const at::Tensor& grad, at::Tensor& expAvg, at::Tensor& expAvgSq, at::Tensor* maxSq,
         const AdamWHyper& h) {
  if (h.weightDecay != 0) p.mul_(1 - h.lr * h.weightDecay);
#ifdef FT_ADAMW_LERP
  expAvg.lerp_(grad, 1 - h.beta1);
#else
  expAvg.mul_(h.beta1).add_(grad, 1 - h.beta1);
#endif
  expAvgSq.mul_(h.beta2).addcmul_(grad, grad, 1 - h.beta2);
  const double biasCorrection1 = 1 - std::pow(h.beta1, h.step);
  const double biasCorrection2Sqrt = std::sqrt(1 - std::pow(h.beta2, h.step));
  at::Tensor denom;
  if (maxSq) {
    at::maximum_out(*maxSq, *maxSq, expAvgSq);
    denom = (maxSq->sqrt() / biasCorrection2Sqrt).add_(h.eps);
  } else {
    denom = (expAvgSq.sqrt() / biasCorrection2Sqrt).add_(h.eps);
  }
  p.addcdiv_(expAvg, denom, -(h.lr / biasCorrection1));
}

#if defined(__x86_64__)
// The scalars as ATen's kernels see them: each double rounded to float once.
struct Floats {
  float decay, beta1, oneMinusBeta1, beta2, oneMinusBeta2, bc2Sqrt, eps, stepSize;
};

// AVX2 with FMA, eight lanes at a time, then the tail one at a time with the same operations
// (square root and division are exact in any lane width). Every product that ATen does not fuse
// is its own instruction, so nothing can be contracted that ATen does not contract.
template <bool SmallWeight>
__attribute__((target("avx2,fma"))) void Pass(float* __restrict p, const float* __restrict g, float* __restrict m,
                                               float* __restrict v, int64_t n, Floats s) {
  const __m256 decay = _mm256_set1_ps(s.decay), w = _mm256_set1_ps(s.oneMinusBeta1), beta2 = _mm256_set1_ps(s.beta2),
               w2 = _mm256_set1_ps(s.oneMinusBeta2), bc2 = _mm256_set1_ps(s.bc2Sqrt), eps = _mm256_set1_ps(s.eps),
               stepSize = _mm256_set1_ps(s.stepSize);
#ifdef FT_ADAMW_LERP
  const __m256 wm1 = _mm256_set1_ps(s.oneMinusBeta1 - 1.0f);
#else
  const __m256 beta1 = _mm256_set1_ps(s.beta1);
#endif
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    __m256 mi = _mm256_loadu_ps(m + i);
    // param.mul_(1 - lr * weight_decay); times 1 (no weight decay) is exact
    const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
#ifdef FT_ADAMW_LERP
    // exp_avg.lerp_(grad, 1 - beta1), in ATen's form for the weight's size
    mi = SmallWeight ? _mm256_fmadd_ps(w, _mm256_sub_ps(gi, mi), mi) : _mm256_fmadd_ps(wm1, _mm256_sub_ps(gi, mi), gi);
#else
    // exp_avg.mul_(beta1).add_(grad, 1 - beta1)
    mi = _mm256_fmadd_ps(gi, w, _mm256_mul_ps(mi, beta1));
#endif
    // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    const __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(w2, gi), gi, _mm256_mul_ps(_mm256_loadu_ps(v + i), beta2));
    // (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
    // param.addcdiv_(exp_avg, denom, -step_size)
    _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(stepSize, mi), denom)));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
  }
  for (; i < n; i++) {
    const float gi = g[i];
    const float pi = p[i] * s.decay;
#ifdef FT_ADAMW_LERP
    const float mi = SmallWeight ? std::fma(s.oneMinusBeta1, gi - m[i], m[i])
                                 : std::fma(s.oneMinusBeta1 - 1.0f, gi - m[i], gi);
#else
    const float mi = std::fma(gi, s.oneMinusBeta1, m[i] * s.beta1);
#endif
    const float vi = std::fma(s.oneMinusBeta2 * gi, gi, v[i] * s.beta2);
    const float denom = _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(vi))) / s.bc2Sqrt + s.eps;
    p[i] = pi + (s.stepSize * mi) / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

bool Fusable(const at::Tensor& t, const at::Tensor& param) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.layout() == at::kStrided &&
         t.is_contiguous() && t.numel() == param.numel();
}

bool Fused(at::Tensor& p, const at::Tensor& grad, at::Tensor& expAvg, at::Tensor& expAvgSq, const AdamWHyper& h) {
  if (!Fusable(p, p) || !Fusable(grad, p) || !Fusable(expAvg, p) || !Fusable(expAvgSq, p)) return false;
  // The pass reads an element of each tensor and then writes it: the four must not overlap.
  const size_t bytes = static_cast<size_t>(p.numel()) * sizeof(float);
  const char* ptrs[] = {static_cast<const char*>(p.data_ptr()), static_cast<const char*>(grad.data_ptr()),
                        static_cast<const char*>(expAvg.data_ptr()), static_cast<const char*>(expAvgSq.data_ptr())};
  for (int i = 0; i < 4; i++)
    for (int j = i + 1; j < 4; j++)
      if (ptrs[i] < ptrs[j] + bytes && ptrs[j] < ptrs[i] + bytes) return false;
  const Floats f{static_cast<float>(h.weightDecay != 0 ? 1 - h.lr * h.weightDecay : 1.0),
                 static_cast<float>(h.beta1),
                 static_cast<float>(1 - h.beta1),
                 static_cast<float>(h.beta2),
                 static_cast<float>(1 - h.beta2),
                 static_cast<float>(std::sqrt(1 - std::pow(h.beta2, h.step))),
                 static_cast<float>(h.eps),
                 static_cast<float>(-(h.lr / (1 - std::pow(h.beta1, h.step))))};
  float* pp = p.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  float* mp = expAvg.data_ptr<float>();
  float* vp = expAvgSq.data_ptr<float>();
  const bool small = std::abs(f.oneMinusBeta1) < 0.5f;
  at::parallel_for(0, p.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
    if (small) {
      Pass<true>(pp + begin, gp + begin, mp + begin, vp + begin, end - begin, f);
    } else {
      Pass<false>(pp + begin, gp + begin, mp + begin, vp + begin, end - begin, f);
    }
  });
  // What in-place ops do: autograd refuses a backward through a graph that saved an old version.
  for (at::Tensor* t : {&p, &expAvg, &expAvgSq}) t->unsafeGetTensorImpl()->bump_version();
  return true;
}

// Whether the fused pass gives the op sequence's bits here: both run on the same random state
// (long enough for ATen's vectorised loop and its scalar tail, both beta1 forms of lerp) and
// every bit is compared. Decided once per process; FINETORCH_FUSED_ADAMW=0 keeps the op sequence.
bool FusedAgrees() {
  static const bool agrees = [] {
    const char* env = std::getenv("FINETORCH_FUSED_ADAMW");  // =0: the op sequence always
    if (env && std::string(env) == "0") return false;
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
    NoGradGuard noGrad;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(12345);
    for (double beta1 : {0.9, 0.3}) {
      const AdamWHyper h{1e-3, beta1, 0.999, 1e-8, 0.01, 3};
      auto opts = at::TensorOptions().dtype(at::kFloat);
      at::Tensor p = at::randn({4103}, gen, opts), g = at::randn({4103}, gen, opts);
      at::Tensor m = at::randn({4103}, gen, opts), v = at::rand({4103}, gen, opts);
      at::Tensor p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
      Ops(p, g, m, v, nullptr, h);
      if (!Fused(p2, g, m2, v2, h)) return false;
      if (!p.equal(p2) || !m.equal(m2) || !v.equal(v2)) return false;
    }
    return true;
  }();
  return agrees;
}
#endif

}  // namespace

bool FusedAdamWAvailable() {
#if defined(__x86_64__)
  return FusedAgrees();
#else
  return false;
#endif
}

void AdamWUpdate(at::Tensor& param, const at::Tensor& grad, at::Tensor& expAvg, at::Tensor& expAvgSq,
                 at::Tensor* maxExpAvgSq, const AdamWHyper& h) {
#if defined(__x86_64__)
  if (!maxExpAvgSq && FusedAdamWAvailable() && Fused(param, grad, expAvg, expAvgSq, h)) return;
#endif
  Ops(param, grad, expAvg, expAvgSq, maxExpAvgSq, h);
}

}  // namespace finetorch
