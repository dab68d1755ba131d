// Data-parallel training for graft's LibTorch backend: a C interface over PyTorch's
// c10d (TCPStore, PrefixStore, ProcessGroupGloo, and ProcessGroupNCCL with
// GRAFT_NCCL), which tch does not expose.
//
// Built by build.rs only with the `distributed` feature, against the pip LibTorch's
// headers; gloo's own headers are not in the wheel, so csrc/gloo_stub stands in for
// them (see its stub.h). Every entry point returns 0 on success and non-zero on
// failure, with the error's first line (no C++ backtrace) in `err` (`len` bytes, always
// NUL-terminated). No C++ exception leaves this file: every entry point is `noexcept`
// and c10::Error (store, c10d), std::exception (gloo's IoException, timeouts) and
// anything else are caught by ffi_guard.hpp's `guarded`, whose catch path allocates
// nothing.
//
// Tensors cross as `at::Tensor*` (tch's C_tensor is exactly that).

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#ifdef GRAFT_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "ffi_guard.hpp"

#ifndef USE_C10D_GLOO
#error "csrc/dist.cpp needs -DUSE_C10D_GLOO (ProcessGroupGloo.hpp is empty without it)"
#endif

// The stand-in gloo headers must not change c10d's layouts: these sizes were measured
// with the real gloo headers (pytorch/gloo at the commit bundled with torch 2.11.0).
static_assert(sizeof(c10d::ProcessGroupGloo) == 488, "ProcessGroupGloo layout differs from torch 2.11.0's");
static_assert(sizeof(c10d::ProcessGroupGloo::Options) == 176, "ProcessGroupGloo::Options layout differs");
static_assert(sizeof(c10d::ProcessGroupGloo::GlooStore) == 16, "ProcessGroupGloo::GlooStore layout differs");
static_assert(sizeof(c10d::ProcessGroupGloo::AsyncWork) == 784, "ProcessGroupGloo::AsyncWork layout differs");

namespace {

using graft_ffi::guarded;

struct Store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct Group {
  c10::intrusive_ptr<c10d::Backend> backend;
  bool nccl = false;
};

struct Work {
  c10::intrusive_ptr<c10d::Work> work;
};

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp::SUM;
    case 1:
      return c10d::ReduceOp::MIN;
    case 2:
      return c10d::ReduceOp::MAX;
    default:
      throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

}  // namespace

extern "C" {

// 1 when this build can create NCCL groups.
int graft_dist_has_nccl() noexcept {
#ifdef GRAFT_NCCL
  return 1;
#else
  return 0;
#endif
}

// A TCPStore on host:port (served here when is_server), seen through the key prefix.
// wait_workers: the server waits for `world` clients in the constructor.
int graft_store_new(const char* host, int port, int is_server, int world, int64_t timeout_ms, const char* prefix,
                    void** out, char* err, size_t len) noexcept {
  return guarded(err, len, [&] {
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(port);
    o.isServer = is_server != 0;
    o.numWorkers = world;
    o.waitWorkers = false;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
    auto s = new Store{c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp)};
    *out = s;
  });
}

void graft_store_free(void* s) noexcept {
  try {
    delete static_cast<Store*>(s);
  } catch (...) {
  }
}

int graft_store_set(void* s, const char* key, const uint8_t* data, size_t n, char* err, size_t len) noexcept {
  return guarded(err, len, [&] {
    std::vector<uint8_t> v(data, data + n);
    static_cast<Store*>(s)->store->set(std::string(key), v);
  });
}

// Blocks until the key exists (up to the store's timeout). Writes at most `cap` bytes
// and the full length to `*n`.
int graft_store_get(void* s, const char* key, uint8_t* buf, size_t cap, size_t* n, char* err, size_t len) noexcept {
  return guarded(err, len, [&] {
    auto v = static_cast<Store*>(s)->store->get(std::string(key));
    *n = v.size();
    std::memcpy(buf, v.data(), v.size() < cap ? v.size() : cap);
  });
}

int graft_store_check(void* s, const char* key, int* present, char* err, size_t len) noexcept {
  return guarded(err, len, [&] { *present = static_cast<Store*>(s)->store->check({std::string(key)}) ? 1 : 0; });
}

int graft_store_add(void* s, const char* key, int64_t delta, int64_t* out, char* err, size_t len) noexcept {
  return guarded(err, len, [&] { *out = static_cast<Store*>(s)->store->add(std::string(key), delta); });
}

// Wait for every key in `keys` (`n` NUL-terminated strings) up to `timeout_ms`.
int graft_store_wait(void* s, const char* const* keys, size_t n, int64_t timeout_ms, char* err, size_t len) noexcept {
  return guarded(err, len, [&] {
    std::vector<std::string> ks(keys, keys + n);
    static_cast<Store*>(s)->store->wait(ks, std::chrono::milliseconds(timeout_ms));
  });
}

// A process group over `store`: "gloo" (CPU and CUDA tensors; the device from
// GLOO_SOCKET_IFNAME, else this host's address) or "nccl" (CUDA device `cuda_device`).
int graft_pg_new(void* store, const char* backend, int rank, int world, int64_t timeout_ms, int cuda_device,
                 void** out, char* err, size_t len) noexcept {
  return guarded(err, len, [&] {
    auto st = static_cast<Store*>(store)->store;
    auto timeout = std::chrono::milliseconds(timeout_ms);
    std::string name(backend);
    auto g = new Group{};
    try {
      if (name == "gloo") {
        auto opts = c10d::ProcessGroupGloo::Options::create_default(timeout);
        g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(st, rank, world, opts);
      } else if (name == "nccl") {
#ifdef GRAFT_NCCL
        c10::cuda::set_device(static_cast<c10::DeviceIndex>(cuda_device));
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = timeout;
        g->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(st, rank, world, opts);
        g->nccl = true;
#else
        (void)cuda_device;
        throw std::invalid_argument("this build of graft has no NCCL support (build with --features nccl)");
#endif
      } else {
        throw std::invalid_argument("unknown backend `" + name + "` (expected gloo or nccl)");
      }
    } catch (...) {
      delete g;
      throw;
    }
    *out = g;
  });
}

void graft_pg_free(void* pg) noexcept {
  auto g = static_cast<Group*>(pg);
  if (g == nullptr) return;
#ifdef GRAFT_NCCL
  if (g->nccl) {
    try {
      g->backend->shutdown();
    } catch (...) {
    }
  }
#endif
  try {
    delete g;
  } catch (...) {
  }
}

// Broadcast `t` in place from `root`; blocks until done.
int graft_pg_broadcast(void* pg, void* t, int root, char* err, size_t len) noexcept {
  return guarded(err, len, [&] {
    std::vector<at::Tensor> v{*static_cast<at::Tensor*>(t)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    static_cast<Group*>(pg)->backend->broadcast(v, o)->wait();
  });
}

// Launch an in-place all-reduce of `t` (op 0 sum, 1 min, 2 max); wait with graft_work_wait.
int graft_pg_allreduce(void* pg, void* t, int op, void** work, char* err, size_t len) noexcept {
  return guarded(err, len, [&] {
    std::vector<at::Tensor> v{*static_cast<at::Tensor*>(t)};
    c10d::AllreduceOptions o;
    o.reduceOp = reduce_op(op);
    auto w = static_cast<Group*>(pg)->backend->allreduce(v, o);
    *work = new Work{w};
  });
}

int graft_work_wait(void* work, char* err, size_t len) noexcept {
  return guarded(err, len, [&] { static_cast<Work*>(work)->work->wait(); });
}

void graft_work_free(void* work) noexcept {
  try {
    delete static_cast<Work*>(work);
  } catch (...) {
  }
}

int graft_pg_barrier(void* pg, char* err, size_t len) noexcept {
  return guarded(err, len, [&] { static_cast<Group*>(pg)->backend->barrier()->wait(); });
}

}  // extern "C"
