// Malloc tuning: glibc's thresholds for the heap that decoded images, batches and activations reuse.
#include "malloc_tuning.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace finetorch {

// tuneMalloc(mmapThreshold, trimThreshold, topPad): glibc's malloc serves blocks above 128 KiB
// with fresh mmap()s and gives them back on free, so every decoded image, batch and activation of
// that size page-faults its memory in again. Raising the thresholds keeps such blocks in the heap
// for reuse (what MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ do at start-up). The top pad
// matters for threads other than the main one (the executor, which trains): their arenas are
// chains of 64 MiB heaps, and a heap that empties is unmapped whatever the trim threshold, unless
// the pad is at least a heap's size. Process-wide; false where the C library is not glibc.
Napi::Value TuneMalloc(const Napi::CallbackInfo& info) {
#ifdef __GLIBC__
  int mmap = info[0].As<Napi::Number>().Int32Value();
  int trim = info[1].As<Napi::Number>().Int32Value();
  int pad = info[2].As<Napi::Number>().Int32Value();
  bool ok = mallopt(M_MMAP_THRESHOLD, mmap) == 1 && mallopt(M_TRIM_THRESHOLD, trim) == 1 && mallopt(M_TOP_PAD, pad) == 1;
  return Napi::Boolean::New(info.Env(), ok);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

}  // namespace finetorch
