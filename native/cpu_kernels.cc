// Two ATen CPU kernels done faster, with ATen's bits: max-pool with indices, and batch norm's
// training statistics.
//
// Both ATen kernels are scalar loops bound by latency. max_pool2d_with_indices walks each window
// with a compare and a branch per element: 43-58 ms of resnet18's step at 1 thread here (8 x 64 x
// 96 x 96, 3x3, stride 2), 23 ms at 2. The batch-norm statistics (1.13 and 2.x alike) add every
// element of a channel into one double, one add waiting on the last: about 27 ms of the step at
// 1 thread.
//
// The replacements do the same float operations in the same order for each output:
// - max-pool runs eight outputs of a row in the lanes of an AVX2 register, with the same compare
//   (greater, or NaN) over the window in the same order, so the same first maximum, the same last
//   NaN and the same indices;
// - the statistics run eight channels' sums side by side, each channel's sum still adding its
//   elements in ATen's order, so the same doubles, rounded to float the same way.
//
// They go in through ATen's DispatchStub: its CPU pointer is what the ATen op calls after its own
// checks and allocation, so shapes, errors and autograd stay ATen's. Each replacement takes the
// common case (float32, contiguous, no dilation) and hands anything else to the kernel it replaced.
// A probe at install compares each with the kernel it replaces, every bit, on inputs full of
// ties, NaN and infinities and on shapes with every edge case; any difference keeps ATen's.
#include "cpu_kernels.h"

#include "compat.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/native/DispatchStub.h>
#include <ATen/native/Pool.h>
#include <ATen/native/batch_norm.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <dlfcn.h>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <type_traits>
#include <typeinfo>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace finetorch {

namespace {

std::vector<std::string> installed;  // written once, under InstallCpuKernels' once_flag

#if defined(__x86_64__)

// The CPU function pointer an ATen DispatchStub calls (its only member is a DispatchStubImpl,
// whose first field this is), in libtorch 1.13 and 2.x alike.
template <typename Stub>
std::atomic<void*>& CpuPointer(Stub& stub) {
  static_assert(std::is_standard_layout<Stub>::value && sizeof(Stub) == sizeof(at::native::DispatchStubImpl),
                "an ATen DispatchStub holds just its DispatchStubImpl");
  return reinterpret_cast<at::native::DispatchStubImpl&>(stub).cpu_dispatch_ptr;
}

// The kernel an ATen DispatchStub runs on this CPU. libtorch 1.13 keeps its choice in the stub's
// pointer after the first call; 2.x chooses again on every call (it stores the pointer it loaded,
// still null), so there the choice is made as ATen makes it, from the stub's exported per-ISA
// kernels (DispatchStub<Fn, Stub>::AVX512, AVX2, DEFAULT), found by their mangled names. Null
// where a name is not found: nothing is replaced then.
template <typename Fn, typename Stub>
Fn AtenKernel(Stub& stub) {
  if (void* cached = CpuPointer(stub).load()) return reinterpret_cast<Fn>(cached);
  const std::string type = typeid(at::native::DispatchStub<Fn, Stub>).name();  // N2at6native12DispatchStubI...EE
  if (type.size() < 2 || type.front() != 'N' || type.back() != 'E') return nullptr;
  auto member = [&](const char* name) -> Fn {
    void* sym = dlsym(RTLD_DEFAULT, ("_Z" + type.substr(0, type.size() - 1) + name + "E").c_str());
    return sym ? *static_cast<Fn*>(sym) : nullptr;
  };
#if FT_TORCH_AT_LEAST(2, 0)
  // DispatchStubImpl::choose_cpu_impl: AVX512 where ATen runs it and the kernel exists, then AVX2.
  const std::string capability = at::get_cpu_capability();  // "AVX512", "AVX2" or "NO AVX" on x86-64
  if (capability == "AVX512") {
    if (Fn f = member("6AVX512")) return f;
  }
  if (capability == "AVX512" || capability == "AVX2") return member("4AVX2");
  return member("7DEFAULT");
#else
  return nullptr;
#endif
}

// Whether two tensors of one shape and dtype hold the same bytes (NaN payloads included).
bool SameBits(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.is_contiguous() && b.is_contiguous() &&
         std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) == 0;
}

// ---------------------------------------------------------------------------------------------
// max_pool2d_with_indices

using MaxPoolFn = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, int, int, int, int, int, int, int, int);
MaxPoolFn atenMaxPool = nullptr;

struct Pool {
  int64_t H, W, OH, OW;
  int kH, kW, dH, dW, padH, padW;
};

// One output, exactly as ATen's cpu_max_pool computes it (dilation 1).
inline void MaxOne(const float* plane, const Pool& g, int64_t oh, int64_t ow, float* out, int64_t* ind) {
  int64_t ih0 = oh * g.dH - g.padH, iw0 = ow * g.dW - g.padW;
  const int64_t ih1 = std::min<int64_t>(ih0 + g.kH, g.H), iw1 = std::min<int64_t>(iw0 + g.kW, g.W);
  ih0 = std::max<int64_t>(ih0, 0);
  iw0 = std::max<int64_t>(iw0, 0);
  int64_t maxIndex = ih0 * g.W + iw0;
  float maxVal = -std::numeric_limits<float>::infinity();
  for (int64_t ih = ih0; ih < ih1; ih++) {
    for (int64_t iw = iw0; iw < iw1; iw++) {
      const int64_t index = ih * g.W + iw;
      const float val = plane[index];
      if ((val > maxVal) || std::isnan(val)) {
        maxVal = val;
        maxIndex = index;
      }
    }
  }
  *out = maxVal;
  *ind = maxIndex;
}

// Lanes 0, 2, 4, ... 14 of a[0..7] b[0..7]: the columns a stride-2 window position visits.
__attribute__((target("avx2"))) inline __m256 Evens(__m256 a, __m256 b) {
  const __m256 s = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Lanes 1, 3, 5, ... 15 of a[0..7] b[0..7].
__attribute__((target("avx2"))) inline __m256 Odds(__m256 a, __m256 b) {
  const __m256 s = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));  // a1 a3 b1 b3 | a5 a7 b5 b7
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Outputs ow .. ow + 7 of a row, whose windows all lie inside the row's columns: the lanes of one
// register go through the window as ATen's loop does, rows ih0 .. ih1 - 1, columns left to right.
template <int Stride>
__attribute__((target("avx2"))) inline void MaxEight(const float* plane, const Pool& g, int64_t ih0, int64_t ih1, int64_t ow,
                                                     float* out, int64_t* ind) {
  const __m256i lanes = _mm256_setr_epi32(0, Stride, 2 * Stride, 3 * Stride, 4 * Stride, 5 * Stride, 6 * Stride, 7 * Stride);
  const int64_t iwBase = ow * Stride - g.padW;
  const __m256i iw = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(iwBase)), lanes);
  __m256i maxIndex = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(ih0 * g.W)), iw);
  __m256 maxVal = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t ih = ih0; ih < ih1; ih++) {
    const float* row = plane + ih * g.W + iwBase;
    const __m256i rowIndex = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(ih * g.W)), iw);
    for (int kw = 0; kw < g.kW; kw++) {
      const float* p = row + kw;
      __m256 val;
      if (Stride == 1) {
        val = _mm256_loadu_ps(p);
      } else if (iwBase + kw + 15 < g.W) {
        val = Evens(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8));
      } else {  // the last lane's column is the row's last: the 16 loaded start one column earlier
        val = Odds(_mm256_loadu_ps(p - 1), _mm256_loadu_ps(p + 7));
      }
      // (val > maxval) || isnan(val): an ordered compare is false against NaN, as C++'s > is
      const __m256 take = _mm256_or_ps(_mm256_cmp_ps(val, maxVal, _CMP_GT_OQ), _mm256_cmp_ps(val, val, _CMP_UNORD_Q));
      maxVal = _mm256_blendv_ps(maxVal, val, take);
      const __m256i index = _mm256_add_epi32(rowIndex, _mm256_set1_epi32(kw));
      maxIndex = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(maxIndex), _mm256_castsi256_ps(index), take));
    }
  }
  _mm256_storeu_ps(out + ow, maxVal);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(ind + ow), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(maxIndex)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(ind + ow + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(maxIndex, 1)));
}

// One output row: the outputs whose windows lie inside the row's columns eight at a time (the
// last eight overlapping the block before where the count is not a multiple of 8: the same
// outputs, computed again), the others (windows clipped by the padding) one at a time.
template <int Stride>
__attribute__((target("avx2"))) void MaxRow(const float* plane, const Pool& g, int64_t oh, float* out, int64_t* ind) {
  int64_t ih0 = oh * g.dH - g.padH;
  const int64_t ih1 = std::min<int64_t>(ih0 + g.kH, g.H);
  ih0 = std::max<int64_t>(ih0, 0);
  const int64_t owLo = std::min<int64_t>(g.OW, (g.padW + Stride - 1) / Stride);  // first window from column >= 0
  const int64_t fit = g.W - g.kW + g.padW;                                       // ow * Stride <= fit: window inside
  const int64_t owEnd = fit >= 0 ? std::min<int64_t>(g.OW, fit / Stride + 1) : 0;
  int64_t ow = 0;
  if (owEnd - owLo >= 8 && (Stride == 1 || g.W >= 16)) {
    for (; ow < owLo; ow++) MaxOne(plane, g, oh, ow, out + ow, ind + ow);
    for (; ow + 8 <= owEnd; ow += 8) MaxEight<Stride>(plane, g, ih0, ih1, ow, out, ind);
    if (ow < owEnd) MaxEight<Stride>(plane, g, ih0, ih1, owEnd - 8, out, ind);
    ow = owEnd;
  }
  for (; ow < g.OW; ow++) MaxOne(plane, g, oh, ow, out + ow, ind + ow);
}

void MaxPool2d(const at::Tensor& output, const at::Tensor& indices, const at::Tensor& input, int kW, int kH, int dW, int dH,
               int padW, int padH, int dilationW, int dilationH) {
  const bool ours = input.scalar_type() == at::kFloat && (input.dim() == 3 || input.dim() == 4) && input.numel() > 0 &&
                    input.is_contiguous() && input.suggest_memory_format() == at::MemoryFormat::Contiguous &&
                    output.scalar_type() == at::kFloat && output.is_contiguous() && indices.scalar_type() == at::kLong &&
                    indices.is_contiguous() && dilationW == 1 && dilationH == 1 && (dW == 1 || dW == 2) && dH >= 1 &&
                    kW >= 1 && kH >= 1 && input.size(-2) * input.size(-1) <= INT32_MAX;
  if (!ours) return atenMaxPool(output, indices, input, kW, kH, dW, dH, padW, padH, dilationW, dilationH);
  const Pool g{input.size(-2), input.size(-1), output.size(-2), output.size(-1), kH, kW, dH, dW, padH, padW};
  const int64_t planes = input.numel() / (g.H * g.W);
  const float* in = input.data_ptr<float>();
  float* out = output.data_ptr<float>();
  int64_t* ind = indices.data_ptr<int64_t>();
  const int64_t rowWork = std::max<int64_t>(1, g.OW * kH * kW);
  at::parallel_for(0, planes * g.OH, std::max<int64_t>(1, at::internal::GRAIN_SIZE / rowWork), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; r++) {
      const int64_t c = r / g.OH, oh = r % g.OH;
      const float* plane = in + c * g.H * g.W;
      if (dW == 1) {
        MaxRow<1>(plane, g, oh, out + r * g.OW, ind + r * g.OW);
      } else {
        MaxRow<2>(plane, g, oh, out + r * g.OW, ind + r * g.OW);
      }
    }
  });
}

// ATen's and ours on the same inputs: integers in [-3, 3] (ties in most windows), with NaN, +inf
// and -inf, windows from 2x2 to 5x5 with and without padding and ceil mode, rows wide enough for
// the eight-lane path and with every kind of edge, and a dilated case that ATen's kernel runs behind ours.
bool MaxPoolAgrees() {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4321);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Case { std::vector<int64_t> shape; int k, s, p; bool ceil; int d = 1; };
  const Case cases[] = {{{2, 3, 11, 37}, 3, 2, 1, false}, {{2, 3, 11, 37}, 3, 2, 1, true}, {{3, 10, 40}, 2, 2, 0, false},
                        {{2, 2, 9, 41}, 3, 1, 1, false},  {{1, 2, 12, 45}, 5, 2, 2, true},  {{1, 3, 8, 33}, 3, 2, 0, true},
                        {{1, 1, 7, 19}, 4, 1, 2, false},  {{2, 2, 6, 6}, 3, 2, 1, false},  {{1, 2, 9, 21}, 3, 2, 1, false, 2}};
  for (const Case& k : cases) {
    at::Tensor x = at::randint(-3, 4, k.shape, gen, at::TensorOptions().dtype(at::kFloat));
    float* d = x.data_ptr<float>();
    for (int64_t i = 0; i < x.numel(); i += 7) d[i] = (i / 7) % 3 == 0 ? nan : (i / 7) % 3 == 1 ? inf : -inf;
    auto ref = at::max_pool2d_with_indices(x, {k.k, k.k}, {k.s, k.s}, {k.p, k.p}, {k.d, k.d}, k.ceil);
    if (!atenMaxPool) atenMaxPool = AtenKernel<MaxPoolFn>(at::native::max_pool2d_kernel);
    if (!atenMaxPool) return false;
    at::Tensor out = at::empty_like(std::get<0>(ref)), ind = at::empty_like(std::get<1>(ref));
    MaxPool2d(out, ind, x, k.k, k.k, k.s, k.s, k.p, k.p, k.d, k.d);  // dilated: ATen's kernel, from AtenKernel
    if (!SameBits(out, std::get<0>(ref)) || !SameBits(ind, std::get<1>(ref))) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Batch norm's training statistics (ATen's batch_norm_cpu_collect_stats_contiguous_impl for float:
// the same scalar loops in 1.13 and 2.x)

using StatsFn = void (*)(at::Tensor&, at::Tensor&, const at::Tensor&);
StatsFn atenStats = nullptr;

// One pass over channels c .. c + 4 * Groups - 1, four to a register of doubles: each channel's
// sum adds its elements one at a time in ATen's order (batch, then position), in double, from
// float. Without means, the elements; with them, (x - mean) * (x - mean) in float, as ATen's loop.
template <int Groups>
__attribute__((target("avx2"))) void StatsPass(const float* in, int64_t batches, int64_t C, int64_t S, int64_t c,
                                                const __m128* m, __m256d* acc) {
  for (int g = 0; g < Groups; g++) acc[g] = _mm256_setzero_pd();
  for (int64_t n = 0; n < batches; n++) {
    const float* p = in + (n * C + c) * S;
    int64_t i = 0;
    for (; i + 4 <= S; i += 4) {
      for (int g = 0; g < Groups; g++) {
        const float* q = p + 4 * g * S + i;
        __m128 r0 = _mm_loadu_ps(q), r1 = _mm_loadu_ps(q + S), r2 = _mm_loadu_ps(q + 2 * S), r3 = _mm_loadu_ps(q + 3 * S);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  // r0: position i of the four channels, r1: i + 1, ...
        if (m) {
          r0 = _mm_sub_ps(r0, m[g]), r1 = _mm_sub_ps(r1, m[g]), r2 = _mm_sub_ps(r2, m[g]), r3 = _mm_sub_ps(r3, m[g]);
          r0 = _mm_mul_ps(r0, r0), r1 = _mm_mul_ps(r1, r1), r2 = _mm_mul_ps(r2, r2), r3 = _mm_mul_ps(r3, r3);
        }
        acc[g] = _mm256_add_pd(acc[g], _mm256_cvtps_pd(r0));
        acc[g] = _mm256_add_pd(acc[g], _mm256_cvtps_pd(r1));
        acc[g] = _mm256_add_pd(acc[g], _mm256_cvtps_pd(r2));
        acc[g] = _mm256_add_pd(acc[g], _mm256_cvtps_pd(r3));
      }
    }
    for (; i < S; i++) {
      for (int g = 0; g < Groups; g++) {
        const float* q = p + 4 * g * S + i;
        __m128 r = _mm_setr_ps(q[0], q[S], q[2 * S], q[3 * S]);
        if (m) r = _mm_mul_ps(_mm_sub_ps(r, m[g]), _mm_sub_ps(r, m[g]));
        acc[g] = _mm256_add_pd(acc[g], _mm256_cvtps_pd(r));
      }
    }
  }
}

// Mean and sum of squared deviations of channels c .. c + 4 * Groups - 1.
template <int Groups>
__attribute__((target("avx2"))) void StatsBlock(const float* in, int64_t batches, int64_t C, int64_t S, int64_t c,
                                                 float* mean, float* varSum) {
  __m256d acc[Groups];
  __m128 m[Groups];
  StatsPass<Groups>(in, batches, C, S, c, nullptr, acc);
  const __m256d count = _mm256_set1_pd(static_cast<double>(batches * S));
  for (int g = 0; g < Groups; g++) {
    m[g] = _mm256_cvtpd_ps(_mm256_div_pd(acc[g], count));  // scalar_t mean = sum / N
    _mm_storeu_ps(mean + c + 4 * g, m[g]);
  }
  StatsPass<Groups>(in, batches, C, S, c, m, acc);
  for (int g = 0; g < Groups; g++) _mm_storeu_ps(varSum + c + 4 * g, _mm256_cvtpd_ps(acc[g]));
}

// One channel: ATen's loop as written.
void StatsOne(const float* in, int64_t batches, int64_t C, int64_t S, int64_t c, float* mean, float* varSum) {
  double sum = 0;
  for (int64_t n = 0; n < batches; n++) {
    for (int64_t i = 0; i < S; i++) sum += in[(n * C + c) * S + i];
  }
  const float m = static_cast<float>(sum / static_cast<double>(batches * S));
  mean[c] = m;
  double var = 0;
  for (int64_t n = 0; n < batches; n++) {
    for (int64_t i = 0; i < S; i++) {
      const float x = in[(n * C + c) * S + i];
      var += (x - m) * (x - m);
    }
  }
  varSum[c] = static_cast<float>(var);
}

void BatchNormStats(at::Tensor& mean, at::Tensor& varSum, const at::Tensor& input) {
  // Where ATen takes its contiguous loop in 1.13 (is_contiguous) and in 2.x (suggest_memory_format).
  const bool ours = input.scalar_type() == at::kFloat && input.dim() >= 3 && input.numel() > 0 && input.is_contiguous() &&
                    input.suggest_memory_format() == at::MemoryFormat::Contiguous &&
                    input.numel() / input.size(0) / input.size(1) > 1 && mean.scalar_type() == at::kFloat &&
                    mean.is_contiguous() && varSum.scalar_type() == at::kFloat && varSum.is_contiguous();
  if (!ours) return atenStats(mean, varSum, input);
  const int64_t batches = input.size(0), C = input.size(1), S = input.numel() / batches / C;
  const float* in = input.data_ptr<float>();
  float* meanData = mean.data_ptr<float>();
  float* varData = varSum.data_ptr<float>();
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    int64_t c = begin;
    for (; c + 8 <= end; c += 8) StatsBlock<2>(in, batches, C, S, c, meanData, varData);
    for (; c + 4 <= end; c += 4) StatsBlock<1>(in, batches, C, S, c, meanData, varData);
    for (; c < end; c++) StatsOne(in, batches, C, S, c, meanData, varData);
  });
}

bool StatsAgree() {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8765);
  const std::vector<int64_t> shapes[] = {{3, 13, 7, 5}, {2, 9, 6, 6}, {4, 16, 3}, {2, 21, 5, 9}};
  for (const auto& shape : shapes) {
    auto opts = at::TensorOptions().dtype(at::kFloat);
    at::Tensor x = at::randn(shape, gen, opts) * 3 + 1.5;
    // The op once, so that the stub has chosen ATen's kernel.
    at::native_batch_norm(x, {}, {}, {}, {}, true, 0.1, 1e-5);
    if (!atenStats) atenStats = AtenKernel<StatsFn>(at::native::batch_norm_cpu_collect_stats_stub);
    if (!atenStats) return false;
    at::Tensor m1 = at::empty({shape[1]}, opts), v1 = at::empty({shape[1]}, opts);
    at::Tensor m2 = at::empty({shape[1]}, opts), v2 = at::empty({shape[1]}, opts);
    atenStats(m1, v1, x);
    BatchNormStats(m2, v2, x);
    if (!SameBits(m1, m2) || !SameBits(v1, v2)) return false;
  }
  return true;
}

#endif  // __x86_64__

}  // namespace

// The stubs keep pointers into this addon for the rest of the process: Node never unloads an
// addon, worker threads included.
void InstallCpuKernels() {
  static std::once_flag once;
  std::call_once(once, [] {
#if defined(__x86_64__)
    const char* env = std::getenv("FINETORCH_CPU_KERNELS");  // =0: ATen's kernels only
    if ((env && std::string(env) == "0") || !__builtin_cpu_supports("avx2")) return;
    try {
      NoGradGuard noGrad;
      if (MaxPoolAgrees()) {
        CpuPointer(at::native::max_pool2d_kernel).store(reinterpret_cast<void*>(&MaxPool2d));
        installed.push_back("max_pool2d");
      }
      if (StatsAgree()) {
        CpuPointer(at::native::batch_norm_cpu_collect_stats_stub).store(reinterpret_cast<void*>(&BatchNormStats));
        installed.push_back("batch_norm_stats");
      }
    } catch (const std::exception&) {
      // A probe that throws leaves ATen's kernel in place; nothing else depends on these.
    }
#endif
  });
}

std::vector<std::string> CpuKernels() { return installed; }

}  // namespace finetorch
