// The single-precision GEMM under libtorch's CPU matmuls (Linear, matmul, bmm, addmm).
//
// libtorch calls the Fortran BLAS `sgemm_` for float32 matrix products. Debian's libtorch links
// the system libblas.so.3, which is netlib's reference BLAS unless an optimised one (OpenBLAS,
// BLIS) has been installed as the alternative: an unvectorised triple loop, about 20x slower than
// an optimised kernel. On a small model (an MLP over Fashion-MNIST) it is over 80% of a training
// step. oneDNN, which libtorch already loads for its convolutions, exports an optimised
// `dnnl_sgemm` (JIT AVX2/AVX-512, OpenMP threads as libtorch's intra-op count).
//
// This file defines `sgemm_` in the addon. The addon is dlopen()ed before its dependencies are
// searched, so libtorch's calls bind here. When the next `sgemm_` (the system BLAS) is netlib's
// reference BLAS, each call goes to dnnl_sgemm; otherwise (OpenBLAS, BLIS, MKL installed), and
// for the corner cases oneDNN refuses, to the system BLAS. FINETORCH_ONEDNN_GEMM=0 never routes,
// =1 always routes (read once, at the first product). Results differ from reference BLAS only by
// float32 summation order, as they would with any optimised BLAS. Where libtorch brings its own
// BLAS (pip's wheels: MKL), it does not call `sgemm_` through the dynamic linker and nothing here
// runs.
#include <dlfcn.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace {

using FortranSgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*,
                              const float*, const int*, const float*, const int*, const float*, float*, const int*);
// oneDNN's C API (dnnl.h): row-major, dnnl_dim_t = int64_t, returns dnnl_status_t (0 = success).
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);

struct Gemm {
  FortranSgemm next = nullptr;
  DnnlSgemm dnnl = nullptr;
};

// Netlib's reference BLAS, as distributions install it: a libblas.so.3 that is not an optimised
// one under another name (Debian's alternatives keep OpenBLAS's and BLIS's in their own folders).
bool IsReferenceBlas(void* fn) {
  Dl_info info;
  if (!fn || !dladdr(fn, &info) || !info.dli_fname) return false;
  char buf[PATH_MAX];
  std::string file = realpath(info.dli_fname, buf) ? buf : info.dli_fname;
  std::string base = file.substr(file.rfind('/') + 1);
  if (base.rfind("libblas.so", 0) != 0) return false;
  for (const char* optimised : {"openblas", "blis", "mkl", "atlas", "armpl"}) {
    if (file.find(optimised) != std::string::npos) return false;
  }
  return true;
}

const Gemm& Resolve() {
  static Gemm g;
  static std::once_flag once;
  std::call_once(once, [] {
    g.next = reinterpret_cast<FortranSgemm>(dlsym(RTLD_NEXT, "sgemm_"));
    if (!g.next) {
      // Preloaded (LD_PRELOAD, as bench/small.js --same-gemm does for Python), the system BLAS
      // came later with libtorch, outside the global scope RTLD_NEXT searches.
      void* blas = dlopen("libblas.so.3", RTLD_LAZY | RTLD_NOLOAD);
      if (blas) g.next = reinterpret_cast<FortranSgemm>(dlsym(blas, "sgemm_"));
    }
    const char* env = std::getenv("FINETORCH_ONEDNN_GEMM");
    if (env && std::strcmp(env, "0") == 0) return;
    if (!(env && std::strcmp(env, "1") == 0) && !IsReferenceBlas(reinterpret_cast<void*>(g.next))) return;
    // Only the oneDNN libtorch already loaded, never a second copy: found as libtorch's dependency
    // (its soname varies: libdnnl.so.2 on Debian 12, libdnnl.so.3.6 on Debian 13), else by name.
    g.dnnl = reinterpret_cast<DnnlSgemm>(dlsym(RTLD_NEXT, "dnnl_sgemm"));
    for (const char* name : {"libdnnl.so.2", "libdnnl.so.3"}) {
      if (g.dnnl) break;
      void* lib = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
      if (lib) g.dnnl = reinterpret_cast<DnnlSgemm>(dlsym(lib, "dnnl_sgemm"));
    }
  });
  return g;
}

}  // namespace

extern "C" {

// Fortran BLAS: column-major C = alpha * op(A) * op(B) + beta * C, op(A) m x k, op(B) k x n.
// Row-major oneDNN sees each column-major matrix transposed, so the same product is
// C^T = op(B)^T * op(A)^T: B and A swap places, as do m and n.
__attribute__((visibility("default"))) void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                                                   const int* k, const float* alpha, const float* a, const int* lda,
                                                   const float* b, const int* ldb, const float* beta, float* c,
                                                   const int* ldc) {
  const Gemm& g = Resolve();
  if (g.dnnl && *m > 0 && *n > 0 && *k > 0 &&
      g.dnnl(*transb, *transa, *n, *m, *k, *alpha, b, *ldb, a, *lda, *beta, c, *ldc) == 0) {
    return;
  }
  if (g.next) {
    g.next(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  std::abort();  // no BLAS at all: libtorch linked one, so this cannot happen
}

}  // extern "C"
