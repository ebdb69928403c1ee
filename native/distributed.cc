#include "distributed.h"

#include "executor.h"
#include "tensor.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
// The header declares ProcessGroupGloo only under USE_C10D_GLOO, which libtorch's own build
// defines; every libtorch finetorch supports (Debian's, pip's) is built with Gloo.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <algorithm>
#include <cstdlib>

namespace finetorch {

namespace {

constexpr auto kHeartbeat = std::chrono::milliseconds(200);
const char* const kCode = "FINETORCH_DISTRIBUTED";

std::mutex groupMu;
std::shared_ptr<DistGroup> group;

std::string RankList(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); i++) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

std::string HeartbeatKey(int rank) { return "finetorch/heartbeat/" + std::to_string(rank); }
std::string ProgressKey(int rank) { return "finetorch/collectives/" + std::to_string(rank); }

std::vector<uint8_t> Bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// Every rank alive: the ranks that started fewer collectives than this one never came to it.
std::string Behind(DistGroup& g) {
  int64_t mine = g.collectives.load();
  std::vector<int> behind;
  std::string detail;
  for (int r = 0; r < g.size; r++) {
    if (r == g.rank) continue;
    auto v = g.store->get(ProgressKey(r));
    int64_t theirs = std::stoll(std::string(v.begin(), v.end()));
    if (theirs < mine) {
      behind.push_back(r);
      detail += (detail.empty() ? "" : ", ") + std::string("rank ") + std::to_string(r) + " at " + std::to_string(theirs);
    }
  }
  if (behind.empty()) return "every rank's process is alive and reached this collective: the connection between them failed or timed out";
  return std::string(behind.size() == 1 ? "rank " : "ranks ") + RankList(behind) + (behind.size() == 1 ? " is" : " are") +
         " alive but did not come to this collective (hung, or out of step: " + detail + " collectives started, this rank " +
         std::to_string(mine) + ")";
}

c10::intrusive_ptr<c10d::TCPStore> Connect(const std::string& addr, int port, bool server, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(port);
  o.isServer = server;
  o.waitWorkers = false;
  o.timeout = timeout;
  UseClassicTcpStore(o);
  return c10::make_intrusive<c10d::TCPStore>(addr, o);
}

// Which ranks stopped: their heartbeat counters do not move over a few beats. The store lives in
// rank 0's process, so a store that no longer answers means rank 0 is gone.
std::string Diagnose(DistGroup& g) {
  auto read = [&g] {
    std::vector<int64_t> v;
    for (int r = 0; r < g.size; r++) v.push_back(g.store->add(HeartbeatKey(r), 0));
    return v;
  };
  std::vector<int64_t> before, after;
  try {
    before = read();
    std::this_thread::sleep_for(kHeartbeat * 5);
    after = read();
  } catch (...) {
    return "rank 0 is lost: it hosts the rendezvous store at " + g.addr + ":" + std::to_string(g.port) + ", which no longer answers";
  }
  std::vector<int> lost;
  for (int r = 0; r < g.size; r++) {
    if (r != g.rank && after[r] == before[r]) lost.push_back(r);
  }
  if (lost.empty()) {
    try {
      return Behind(g);
    } catch (...) {
      return "every rank's process is alive: a rank is hung or out of step (it skipped or added a collective)";
    }
  }
  return std::string(lost.size() == 1 ? "rank " : "ranks ") + RankList(lost) + (lost.size() == 1 ? " is" : " are") +
         " lost: its process stopped (no heartbeat for " + std::to_string((kHeartbeat * 5).count()) + " ms)";
}

bool LooksLikeCommFailure(const std::string& m) {
  for (const char* needle : {"gloo", "Gloo", "Connection closed", "Connection reset", "onnection refused", "Broken pipe",
                             "Timed out", "timed out", "Socket Timeout", "peer"}) {
    if (m.find(needle) != std::string::npos) return true;
  }
  return false;
}

// The executor's error filter: a communication failure while a group is up names the lost rank.
std::exception_ptr NameLostRank(std::exception_ptr ex) {
  std::shared_ptr<DistGroup> g;
  {
    std::lock_guard<std::mutex> lock(groupMu);
    g = group;
  }
  if (!g) return ex;
  try {
    std::rethrow_exception(ex);
  } catch (const CodedError&) {
    return ex;
  } catch (const std::exception& e) {
    std::string m = FirstLine(ExceptionMessage(ex));
    if (!LooksLikeCommFailure(m)) return ex;
    return std::make_exception_ptr(CodedError(kCode, "rank " + std::to_string(g->rank) + " of " + std::to_string(g->size) +
                                                         ": a collective failed: " + Diagnose(*g) + " (" + m + ")"));
  } catch (...) {
    return ex;
  }
}

void StartHeartbeat(DistGroup& g) {
  g.heartbeatStore = Connect(g.addr, g.port, false, g.timeout);
  g.heartbeatStore->set(ProgressKey(g.rank), Bytes("0"));
  g.heartbeatStore->add(HeartbeatKey(g.rank), 1);
  g.heartbeat = std::thread([&g] {
    std::unique_lock<std::mutex> lock(g.mu);
    while (!g.cv.wait_for(lock, kHeartbeat, [&g] { return g.stopping; })) {
      try {
        g.heartbeatStore->set(ProgressKey(g.rank), Bytes(std::to_string(g.collectives.load())));
        g.heartbeatStore->add(HeartbeatKey(g.rank), 1);
      } catch (...) {
        // rank 0 (the store) is gone; a collective that needs it will say so
      }
    }
  });
}

// Every rank announces itself with its WORLD_SIZE; rank 0 checks that all came and agree, and
// publishes a verdict the others wait for, so a bad launch fails on every rank with one message.
void Rendezvous(DistGroup& g) {
  const std::string verdictKey = "finetorch/verdict";
  g.store->set("finetorch/join/" + std::to_string(g.rank), std::vector<uint8_t>{});
  auto wsValue = std::to_string(g.size);
  g.store->set("finetorch/world_size/" + std::to_string(g.rank), Bytes(wsValue));
  std::string verdict;
  if (g.rank == 0) {
    std::vector<std::string> keys;
    for (int r = 1; r < g.size; r++) keys.push_back("finetorch/join/" + std::to_string(r));
    try {
      g.store->wait(keys, g.timeout);
    } catch (...) {
      std::vector<int> missing;
      for (int r = 1; r < g.size; r++) {
        if (!g.store->check({keys[r - 1]})) missing.push_back(r);
      }
      throw CodedError(kCode, "rank" + std::string(missing.size() == 1 ? " " : "s ") + RankList(missing) +
                                  " of " + std::to_string(g.size) + " did not join within " + std::to_string(g.timeout.count()) +
                                  " ms (check that every rank runs with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE)");
    }
    for (int r = 1; r < g.size && verdict.empty(); r++) {
      auto v = g.store->get("finetorch/world_size/" + std::to_string(r));
      std::string ws(v.begin(), v.end());
      if (ws != wsValue) {
        verdict = "WORLD_SIZE mismatch: rank " + std::to_string(r) + " has WORLD_SIZE=" + ws + " but rank 0 has WORLD_SIZE=" + wsValue;
      }
    }
    g.store->set(verdictKey, Bytes(verdict));
    if (!verdict.empty()) {
      // Let the others read the verdict before this process (and the store in it) may go away.
      std::vector<std::string> acks;
      for (int r = 1; r < g.size; r++) acks.push_back("finetorch/ack/" + std::to_string(r));
      try {
        g.store->wait(acks, std::min(g.timeout, std::chrono::milliseconds(5000)));
      } catch (...) {
      }
    }
  } else {
    std::vector<uint8_t> v;
    try {
      v = g.store->get(verdictKey);
    } catch (const std::exception& e) {
      throw CodedError(kCode, "rank " + std::to_string(g.rank) + " joined the store at " + g.addr + ":" +
                                  std::to_string(g.port) + " but rank 0 did not accept it within " + std::to_string(g.timeout.count()) +
                                  " ms (does rank 0 have the same WORLD_SIZE?): " + FirstLine(e.what()));
    }
    verdict.assign(v.begin(), v.end());
    g.store->set("finetorch/ack/" + std::to_string(g.rank), std::vector<uint8_t>{});
  }
  if (!verdict.empty()) throw CodedError(kCode, verdict);
}

c10::intrusive_ptr<c10d::ProcessGroup> MakeGloo(DistGroup& g, const std::string& iface) {
  auto opts = c10d::ProcessGroupGloo::Options::create(g.timeout);
  if (!iface.empty()) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
  } else if (g.addr == "127.0.0.1" || g.addr == "localhost") {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("finetorch/gloo/", g.store);
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, g.rank, g.size, opts);
#ifdef FT_C10D_BACKEND
  auto pg = c10::make_intrusive<c10d::ProcessGroup>(prefixed, g.rank, g.size);
  pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
  return pg;
#else
  return gloo;
#endif
}

const at::Tensor& Contiguous(const SlotPtr& slot) {
  const at::Tensor& t = slot->get();
  if (!t.is_contiguous()) throw CodedError(kCode, "the tensor must be contiguous (call contiguous() first)");
  if (!t.device().is_cpu()) throw CodedError(kCode, "the gloo backend takes CPU tensors, got one on " + DeviceName(t.device()));
  return t;
}

// A CollectiveCall as a fixed-size row of int64, so every rank's fits one all-gather:
// seq, kind, arg, dtype (-1: none), dims (-1: none), numel, then up to kFingerprintDims sizes.
constexpr int64_t kFingerprintDims = 8;
constexpr int64_t kFingerprintLength = 6 + kFingerprintDims;

std::vector<int64_t> Fingerprint(int64_t seq, const CollectiveCall& c) {
  std::vector<int64_t> v(kFingerprintLength, 0);
  v[0] = seq;
  v[1] = c.kind;
  v[2] = c.arg;
  v[3] = -1;
  v[4] = -1;
  v[5] = c.numel;
  if (c.tensor) {
    const at::Tensor& t = *c.tensor;
    v[3] = static_cast<int64_t>(t.scalar_type());
    v[4] = t.dim();
    v[5] = t.numel();
    for (int64_t d = 0; d < std::min<int64_t>(t.dim(), kFingerprintDims); d++) v[6 + d] = t.size(d);
  }
  return v;
}

const char* const kOpNames[] = {"sum", "product", "min", "max", "avg"};

// What a rank runs, from its fingerprint, in the API's terms.
std::string Describe(const int64_t* v) {
  std::string s;
  switch (v[1]) {
    case CollectiveCall::kAllReduce: s = std::string("allReduce(") + (v[2] >= 0 && v[2] < 5 ? kOpNames[v[2]] : "?") + ")"; break;
    case CollectiveCall::kBroadcast: s = "broadcast from rank " + std::to_string(v[2]); break;
    case CollectiveCall::kAllGather: s = "allGather"; break;
    case CollectiveCall::kBarrier: return "barrier";
    case CollectiveCall::kDdpSetup: return "DistributedDataParallel's setup";
    case CollectiveCall::kDdpStep:
      return v[2] ? "a DistributedDataParallel forward that synchronises gradients"
                  : "a DistributedDataParallel forward under noSync() (gradients not synchronised)";
    case CollectiveCall::kDdpSyncGradients: return "DistributedDataParallel.syncGradients of " + std::to_string(v[5]) + " gradient elements";
    default: return "an unknown collective (" + std::to_string(v[1]) + ")";
  }
  if (v[3] < 0) return s;
  std::string shape = "[";
  for (int64_t d = 0; d < std::min(v[4], kFingerprintDims); d++) shape += (d ? ", " : "") + std::to_string(v[6 + d]);
  if (v[4] > kFingerprintDims) shape += ", ... (" + std::to_string(v[4]) + " dims, " + std::to_string(v[5]) + " elements)";
  return s + " of " + DtypeName(static_cast<at::ScalarType>(v[3])) + " " + shape + "]";
}

c10d::ReduceOp ParseOp(const std::string& op) {
  // By ReduceOpCode: 'avg' sums, then the caller divides (gloo has no AVG).
  static const c10d::ReduceOp::RedOpType ops[] = {c10d::ReduceOp::SUM, c10d::ReduceOp::PRODUCT, c10d::ReduceOp::MIN,
                                                  c10d::ReduceOp::MAX, c10d::ReduceOp::SUM};
  const int64_t code = ReduceOpCode(op);
  return code < 0 ? c10d::ReduceOp::SUM : ops[code];
}

}  // namespace

DistGroup::~DistGroup() {
  {
    std::lock_guard<std::mutex> lock(mu);
    stopping = true;
  }
  cv.notify_all();
  if (heartbeat.joinable()) heartbeat.join();
}

int64_t ReduceOpCode(const std::string& op) {
  for (int64_t i = 0; i < 5; i++) {
    if (op == kOpNames[i]) return i;
  }
  return -1;
}

void EnterCollective(DistGroup& g, const CollectiveCall& c) {
  const int64_t seq = g.collectives.fetch_add(1) + 1;
  if (g.size == 1) return;
  const std::vector<int64_t> mine = Fingerprint(seq, c);
  std::vector<at::Tensor> in{at::tensor(mine, at::kLong)};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < g.size; r++) out[0].push_back(at::empty({kFingerprintLength}, at::kLong));
  g.pg->allgather(out, in)->wait();
  // Ranks grouped by what they run, in rank order of each group's first rank.
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  bool same = true;
  for (int r = 0; r < g.size; r++) {
    const int64_t* v = out[0][r].data_ptr<int64_t>();
    if (!std::equal(mine.begin(), mine.end(), v)) same = false;
    std::string what = Describe(v);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& gr) { return gr.first == what; });
    if (it == groups.end()) groups.push_back({what, {r}});
    else it->second.push_back(r);
  }
  if (same) return;
  std::string who;
  for (const auto& [what, ranks] : groups) {
    who += (who.empty() ? "" : "; ") + std::string(ranks.size() == 1 ? "rank " : "ranks ") + RankList(ranks) +
           (ranks.size() == 1 ? " runs " : " run ") + what;
  }
  throw CodedError(kCode, "rank " + std::to_string(g.rank) + " of " + std::to_string(g.size) + ": the ranks disagree on collective " +
                              std::to_string(seq) + " (out of step: a collective skipped or added on some rank, or another tensor): " + who);
}

std::shared_ptr<DistGroup> CurrentGroup() {
  std::lock_guard<std::mutex> lock(groupMu);
  if (!group) throw CodedError(kCode, "the process group is not initialized (call torch.distributed.initProcessGroup() first)");
  return group;
}

Napi::Value DistInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  auto g = std::make_shared<DistGroup>();
  g->addr = o.Get("addr").As<Napi::String>().Utf8Value();
  g->port = o.Get("port").As<Napi::Number>().Int32Value();
  g->rank = o.Get("rank").As<Napi::Number>().Int32Value();
  g->size = o.Get("worldSize").As<Napi::Number>().Int32Value();
  g->timeout = std::chrono::milliseconds(o.Get("timeoutMs").As<Napi::Number>().Int64Value());
  std::string iface = o.Get("iface").IsString() ? o.Get("iface").As<Napi::String>().Utf8Value() : "";
  {
    std::lock_guard<std::mutex> lock(groupMu);
    if (group) throw CodedJsError(env, kCode, "initProcessGroup: the process group is already initialized (destroyProcessGroup() first)");
  }
  SetTaskErrorFilter(&NameLostRank);
  return Addon(env).executor->Run(env, "initProcessGroup", [g, iface] {
    const std::string where = g->addr + ":" + std::to_string(g->port);
    try {
      g->store = Connect(g->addr, g->port, g->rank == 0, g->timeout);
    } catch (const std::exception& e) {
      std::string m = FirstLine(e.what());
      if (g->rank == 0) {
        throw CodedError(kCode, "rank 0 could not host the rendezvous store on " + where +
                                    (m.find("in use") != std::string::npos ? " (MASTER_PORT is in use: pick a free port)" : "") + ": " + m);
      }
      throw CodedError(kCode, "rank " + std::to_string(g->rank) + " could not reach rank 0's store at " + where +
                                  " within " + std::to_string(g->timeout.count()) + " ms (is rank 0 running, and are MASTER_ADDR and MASTER_PORT right?): " + m);
    }
    Rendezvous(*g);
    g->pg = MakeGloo(*g, iface);
    StartHeartbeat(*g);
    std::lock_guard<std::mutex> lock(groupMu);
    group = g;
  });
}

Napi::Value DistDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Addon(env).executor->Run(env, "destroyProcessGroup", [] {
    std::shared_ptr<DistGroup> g;
    {
      std::lock_guard<std::mutex> lock(groupMu);
      g.swap(group);
    }
    // g's destructor stops the heartbeat; the store server (rank 0) closes with it.
  });
}

Napi::Value DistAllReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SlotPtr slot = TensorWrap::SlotOf(env, info[0], "allReduce");
  std::string op = info[1].As<Napi::String>().Utf8Value();
  return Addon(env).executor->Run(env, "allReduce", [slot, op] {
    auto g = CurrentGroup();
    NoGradGuard ng;
    std::vector<at::Tensor> ts{Contiguous(slot)};
    if (op == "avg" && !at::isFloatingType(ts[0].scalar_type())) {
      throw CodedError(kCode, "ReduceOp.AVG needs a floating-point tensor, got " + DtypeName(ts[0].scalar_type()));
    }
    EnterCollective(*g, {CollectiveCall::kAllReduce, ReduceOpCode(op), &ts[0]});
    c10d::AllreduceOptions opts;
    opts.reduceOp = ParseOp(op);
    g->pg->allreduce(ts, opts)->wait();
    if (op == "avg") ts[0].div_(g->size);
  });
}

Napi::Value DistBroadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SlotPtr slot = TensorWrap::SlotOf(env, info[0], "broadcast");
  int src = info[1].As<Napi::Number>().Int32Value();
  return Addon(env).executor->Run(env, "broadcast", [slot, src] {
    auto g = CurrentGroup();
    if (src < 0 || src >= g->size) throw CodedError(kCode, "src must be a rank in [0, " + std::to_string(g->size) + "): got " + std::to_string(src));
    NoGradGuard ng;
    std::vector<at::Tensor> ts{Contiguous(slot)};
    EnterCollective(*g, {CollectiveCall::kBroadcast, src, &ts[0]});
    c10d::BroadcastOptions opts;
    opts.rootRank = src;
    g->pg->broadcast(ts, opts)->wait();
  });
}

Napi::Value DistAllGather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SlotPtr slot = TensorWrap::SlotOf(env, info[0], "allGather");
  return Addon(env).executor->Submit<std::vector<at::Tensor>>(
      env, "allGather",
      [slot] {
        auto g = CurrentGroup();
        NoGradGuard ng;
        std::vector<at::Tensor> in{Contiguous(slot)};
        EnterCollective(*g, {CollectiveCall::kAllGather, 0, &in[0]});
        std::vector<std::vector<at::Tensor>> out(1);
        for (int r = 0; r < g->size; r++) out[0].push_back(at::empty_like(in[0]));
        g->pg->allgather(out, in)->wait();
        return out[0];
      },
      [](Napi::Env env, std::vector<at::Tensor>& ts) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, ts.size());
        for (size_t i = 0; i < ts.size(); i++) {
          auto s = std::make_shared<Slot>();
          s->t = ts[i];
          arr.Set(uint32_t(i), TensorWrap::New(env, s, Meta::Of(ts[i])));
        }
        return arr;
      });
}

Napi::Value DistBarrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Addon(env).executor->Run(env, "barrier", [] {
    auto g = CurrentGroup();
    EnterCollective(*g, {CollectiveCall::kBarrier});
    g->pg->barrier()->wait();
  });
}

}  // namespace finetorch
