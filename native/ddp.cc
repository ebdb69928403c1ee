#include "ddp.h"

#include "distributed.h"
#include "executor.h"
#include "tensor.h"

#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <sstream>

namespace finetorch {

namespace {
const char* const kCode = "FINETORCH_DISTRIBUTED";
// PyTorch's defaults: the first bucket small so all-reduce starts early, then bucket_cap_mb.
constexpr int64_t kFirstBucketBytes = 1024 * 1024;
constexpr size_t kBroadcastBytes = 250 * 1024 * 1024;

// Per parameter: its dimension count, sizes and dtype, as one flat list every rank can compare.
std::vector<int64_t> Signature(const std::vector<at::Tensor>& ps) {
  std::vector<int64_t> m;
  for (const auto& p : ps) {
    m.push_back(p.dim());
    for (auto s : p.sizes()) m.push_back(s);
    m.push_back(static_cast<int64_t>(p.scalar_type()));
  }
  return m;
}

int64_t Hash(const std::vector<int64_t>& v) {
  uint64_t h = 1469598103934665603ULL;
  for (auto x : v) h = (h ^ static_cast<uint64_t>(x)) * 1099511628211ULL;
  return static_cast<int64_t>(h >> 1);
}

std::string Shape(const std::vector<int64_t>& m, size_t at, int64_t dim) {
  std::ostringstream os;
  os << "[";
  for (int64_t d = 0; d < dim; d++) os << (d ? ", " : "") << m[at + 1 + d];
  os << "] " << DtypeName(static_cast<at::ScalarType>(m[at + 1 + dim]));
  return os.str();
}

// Where this rank's parameters first differ from rank 0's signature, in the user's terms.
std::string FirstDifference(const std::vector<int64_t>& mine, const std::vector<int64_t>& root, int64_t rootCount,
                            const std::vector<std::string>& names, int rank) {
  size_t a = 0, b = 0;
  for (size_t i = 0; i < names.size() && int64_t(i) < rootCount; i++) {
    int64_t da = mine[a], db = root[b];
    std::string sa = Shape(mine, a, da), sb = Shape(root, b, db);
    if (sa != sb) return "parameter '" + names[i] + "' is " + sa + " on rank " + std::to_string(rank) + " but " + sb + " on rank 0";
    a += da + 2;
    b += db + 2;
  }
  return "rank " + std::to_string(rank) + " has " + std::to_string(names.size()) + " trainable parameters, rank 0 has " + std::to_string(rootCount);
}
}  // namespace

struct DdpState {
  std::shared_ptr<DistGroup> group;
  std::vector<at::Tensor> params;
  std::vector<std::string> names;
  std::vector<at::Tensor> buffers;
  int64_t bucketBytes = 25 * 1024 * 1024;
  bool broadcastBuffers = true;
  std::unique_ptr<c10d::Reducer> reducer;

  // Every rank learns which ranks' models differ from rank 0's, so all of them fail together.
  void Verify() {
    std::vector<int64_t> sig = Signature(params);
    std::vector<at::Tensor> in{at::tensor({int64_t(params.size()), Hash(sig), int64_t(sig.size())}, at::kLong)};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < group->size; r++) out[0].push_back(at::empty({3}, at::kLong));
    group->pg->allgather(out, in)->wait();
    std::vector<int> differ;
    for (int r = 1; r < group->size; r++) {
      if (!out[0][r].equal(out[0][0])) differ.push_back(r);
    }
    if (differ.empty()) return;
    auto root = out[0][0].accessor<int64_t, 1>();
    std::vector<at::Tensor> rootSig{group->rank == 0 ? at::tensor(sig, at::kLong) : at::empty({root[2]}, at::kLong)};
    group->pg->broadcast(rootSig)->wait();
    std::vector<int64_t> rootVec(rootSig[0].data_ptr<int64_t>(), rootSig[0].data_ptr<int64_t>() + rootSig[0].numel());
    std::string ranks;
    for (size_t i = 0; i < differ.size(); i++) ranks += (i ? ", " : "") + std::to_string(differ[i]);
    bool mine = std::find(differ.begin(), differ.end(), group->rank) != differ.end();
    throw CodedError(kCode, "the models differ across ranks: " + std::string(differ.size() == 1 ? "rank " : "ranks ") + ranks +
                                (differ.size() == 1 ? " differs" : " differ") + " from rank 0" + (mine ? " (" + FirstDifference(sig, rootVec, root[0], names, group->rank) + ")" : "") +
                                "; every rank must wrap the same model with the same trainable parameters");
  }

  void Build() {
    std::vector<size_t> limits{size_t(kFirstBucketBytes), size_t(bucketBytes)};
    std::vector<bool> sparse(params.size(), false);
    auto assignment = c10d::compute_bucket_assignment_by_size(params, limits, sparse);
    auto indices = std::get<0>(assignment);
    auto perBucket = std::get<1>(assignment);
    // Gradients arrive last layer first: reversed buckets start all-reducing earliest (as PyTorch).
    std::reverse(indices.begin(), indices.end());
    std::reverse(perBucket.begin(), perBucket.end());
    std::unordered_map<size_t, std::string> paramNames;
    for (size_t i = 0; i < names.size(); i++) paramNames[i] = names[i];
    reducer = std::make_unique<c10d::Reducer>(params, indices, perBucket, group->pg, sparse, bucketBytes,
                                              /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false,
                                              paramNames, kFirstBucketBytes);
  }
};

Napi::Function ReducerWrap::Init(Napi::Env env) {
  return DefineClass(env, "Reducer",
                     {
                         InstanceMethod<&ReducerWrap::Setup>("setup"),
                         InstanceMethod<&ReducerWrap::Prepare>("prepare"),
                         InstanceMethod<&ReducerWrap::SyncGradients>("syncGradients"),
                         InstanceMethod<&ReducerWrap::Dispose>("dispose"),
                     });
}

ReducerWrap::ReducerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ReducerWrap>(info) {
  Napi::Env env = info.Env();
  state_ = std::make_shared<DdpState>();
  state_->group = Guard(env, "DistributedDataParallel", [] { return CurrentGroup(); });
  Napi::Array ps = info[0].As<Napi::Array>();
  Napi::Array names = info[1].As<Napi::Array>();
  Napi::Array bs = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < ps.Length(); i++) {
    state_->params.push_back(TensorWrap::SlotOf(env, ps.Get(i), "DistributedDataParallel")->get());
    state_->names.push_back(names.Get(i).As<Napi::String>().Utf8Value());
  }
  for (uint32_t i = 0; i < bs.Length(); i++) state_->buffers.push_back(TensorWrap::SlotOf(env, bs.Get(i), "DistributedDataParallel")->get());
  Napi::Object o = info[3].As<Napi::Object>();
  state_->bucketBytes = int64_t(o.Get("bucketCapMB").As<Napi::Number>().DoubleValue() * 1024 * 1024);
  state_->broadcastBuffers = o.Get("broadcastBuffers").ToBoolean();
}

Napi::Value ReducerWrap::Setup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = state_;
  return Addon(env).executor->Run(env, "DistributedDataParallel", [s] {
    EnterCollective(*s->group, {CollectiveCall::kDdpSetup});
    s->Verify();
    NoGradGuard ng;
    std::vector<at::Tensor> all(s->params);
    all.insert(all.end(), s->buffers.begin(), s->buffers.end());
    c10d::broadcast_coalesced(s->group->pg, all, kBroadcastBytes, 0);
    s->Build();
  });
}

Napi::Value ReducerWrap::Prepare(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = state_;
  bool sync = info[0].ToBoolean();
  return Addon(env).executor->Run(env, "DistributedDataParallel.forward", [s, sync] {
    if (!s->reducer) throw CodedError(kCode, "DistributedDataParallel: used after dispose()");
    EnterCollective(*s->group, {CollectiveCall::kDdpStep, sync ? 1 : 0});
    if (s->broadcastBuffers && !s->buffers.empty()) {
      NoGradGuard ng;
      c10d::broadcast_coalesced(s->group->pg, s->buffers, kBroadcastBytes, 0);
    }
    if (!sync) return;
    // rebuild_buckets also checks that the previous synchronised backward finished its reduction.
    s->reducer->rebuild_buckets();
    s->reducer->prepare_for_forward();
    s->reducer->prepare_for_backward({});
  });
}

Napi::Value ReducerWrap::SyncGradients(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = state_;
  return Addon(env).executor->Run(env, "DistributedDataParallel.syncGradients", [s] {
    int64_t numel = 0;
    for (auto& p : s->params) numel += p.numel();
    EnterCollective(*s->group, {CollectiveCall::kDdpSyncGradients, 0, nullptr, numel});
    NoGradGuard ng;
    std::vector<at::Tensor> flat;
    for (auto& p : s->params) flat.push_back(p.grad().defined() ? p.grad().reshape({-1}) : at::zeros({p.numel()}, p.options()));
    std::vector<at::Tensor> buf{at::cat(flat)};
    s->group->pg->allreduce(buf)->wait();
    buf[0].div_(s->group->size);
    int64_t at = 0;
    for (auto& p : s->params) {
      at::Tensor g = buf[0].narrow(0, at, p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(g);
      else p.mutable_grad() = g.clone();
      at += p.numel();
    }
  });
}

Napi::Value ReducerWrap::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = state_;
  // Dropped on the executor, after any step still queued that uses it.
  Addon(env).executor->Post(env, "DistributedDataParallel.dispose", [s] { s->reducer.reset(); });
  return env.Undefined();
}

}  // namespace finetorch
