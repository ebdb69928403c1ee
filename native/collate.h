// Batch assembly for decoded images, off the main thread: 8-bit HWC pixels from sharp become one
// normalised float32 [B, C, H, W] tensor. See collate.cc.
#pragma once

#include "common.h"

namespace finetorch {

// collateImages(images: { data: Uint8Array, luts: Float32Array, mirrored: boolean }[],
//               shape: [C, H, W], pinMemory: boolean): Promise<Tensor>
Napi::Value CollateImages(const Napi::CallbackInfo& info);

}  // namespace finetorch
