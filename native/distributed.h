// The process group of torch.distributed: c10d's TCPStore (rendezvous) and ProcessGroupGloo
// (collectives), one per process as PyTorch's default group. Collectives run on the executor, so
// the event loop never waits for another rank; a collective that fails because a rank died or hung
// becomes a FINETORCH_DISTRIBUTED error naming that rank.
#pragma once

#include "common.h"

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <atomic>
#include <thread>

namespace finetorch {

struct DistGroup {
  int rank = 0;
  int size = 1;
  std::string addr;
  int port = 0;
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  // Liveness: every rank bumps its counter in the store from a thread of its own (with a store
  // client of its own); a failed collective looks for the counters that stopped.
  c10::intrusive_ptr<c10d::TCPStore> heartbeatStore;
  std::thread heartbeat;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  // How many collectives this rank has started (published with each heartbeat): after a timeout,
  // the ranks whose count is behind are the ones that never came.
  std::atomic<int64_t> collectives{0};
  ~DistGroup();
};

// The group initProcessGroup made; throws FINETORCH_DISTRIBUTED when there is none.
std::shared_ptr<DistGroup> CurrentGroup();

// A collective as every rank must agree on it before it runs: what it is, its argument, and the
// tensor it takes (dtype and shape) or the element count it moves.
struct CollectiveCall {
  enum Kind : int64_t { kAllReduce = 1, kBroadcast, kAllGather, kBarrier, kDdpSetup, kDdpStep, kDdpSyncGradients };
  Kind kind;
  int64_t arg = 0;  // the reduce op (ReduceOpCode), the broadcast's source rank, whether a DDP step synchronises
  const at::Tensor* tensor = nullptr;
  int64_t numel = 0;  // without a tensor: the elements it moves (0: none to compare)
};

// ReduceOp as a CollectiveCall's argument: sum, product, min, max, avg.
int64_t ReduceOpCode(const std::string& op);

// Starts this rank's next collective: counts it (the heartbeat publishes the count) and, with more
// than one rank, first exchanges what each rank is about to run (one small all-gather). Gloo hangs
// on some mismatches and aborts the whole process on others (different dtypes: an enforce failure
// on its I/O thread, which no one can catch), so a mismatch throws FINETORCH_DISTRIBUTED on every
// rank instead, naming which rank runs what. PyTorch checks the same with TORCH_DISTRIBUTED_DEBUG=DETAIL.
void EnterCollective(DistGroup& g, const CollectiveCall& c);

// distInit({ addr, port, rank, worldSize, timeoutMs, iface }): Promise<void>
Napi::Value DistInit(const Napi::CallbackInfo& info);
// distDestroy(): Promise<void>
Napi::Value DistDestroy(const Napi::CallbackInfo& info);
// distAllReduce(tensor, op: 'sum' | 'product' | 'min' | 'max' | 'avg'): Promise<void> (in place)
Napi::Value DistAllReduce(const Napi::CallbackInfo& info);
// distBroadcast(tensor, src): Promise<void> (in place)
Napi::Value DistBroadcast(const Napi::CallbackInfo& info);
// distAllGather(tensor): Promise<Tensor[]>
Napi::Value DistAllGather(const Napi::CallbackInfo& info);
// distBarrier(): Promise<void>
Napi::Value DistBarrier(const Napi::CallbackInfo& info);

}  // namespace finetorch
