// Batch assembly in native code: rows of an in-memory dataset gathered by index, and decoded images
// (8-bit HWC pixels from sharp) made into one normalised float32 [B, C, H, W] tensor off the main
// thread. See collate.cc.
#pragma once

#include "common.h"

namespace finetorch {

// collateImages(images: { data: Uint8Array, luts: Float32Array, mirrored: boolean }[],
//               shape: [C, H, W], pinMemory: boolean): Promise<Tensor>
Napi::Value CollateImages(const Napi::CallbackInfo& info);

// gatherRows(inputs: TypedArray [N, ...shape] of srcDtype, srcDtype, shape, indices: Uint32Array,
//            luts: Float32Array (C x 256, for 8-bit inputs) | null, targets: BigInt64Array [N],
//            pinMemory): [input [B, ...shape], target int64 [B]]. Synchronous: a batch of rows is a
// copy of a few hundred KB, cheaper than a hand-off to another thread.
Napi::Value GatherRows(const Napi::CallbackInfo& info);

}  // namespace finetorch
