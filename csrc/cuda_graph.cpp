// CUDA graphs and bf16 autocast for graft's LibTorch backend: a C interface over
// at::cuda::CUDAGraph and at::autocast, which tch does not expose.
//
// Built by build.rs only with the `cuda-graphs` feature. Every entry point returns 0
// on success and non-zero on failure, with the error's first line (no C++ backtrace)
// in `err` (`len` bytes, always NUL-terminated). No C++ exception leaves this file:
// every entry point is `noexcept` and runs inside ffi_guard.hpp's `guarded`.
//
// Streams: a graph is captured on a side stream taken from LibTorch's pool (capture on
// the default stream is illegal) and replayed on the caller's current stream. Warmup
// runs eagerly on the same side stream, as torch.cuda.graph recommends. Entering and
// leaving the side stream synchronizes the device, so no cross-stream event is needed.

#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include "ffi_guard.hpp"

namespace {

using graft_ffi::guarded;

struct Graph {
  c10::DeviceIndex device;
  c10::cuda::CUDAStream side;
  std::optional<c10::cuda::CUDAStream> prev;  // the stream to go back to
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  bool captured = false;
};

void enter_side(Graph* g) {
  if (g->prev) return;
  c10::cuda::device_synchronize();
  g->prev = c10::cuda::getCurrentCUDAStream(g->device);
  c10::cuda::setCurrentCUDAStream(g->side);
}

void leave_side(Graph* g) {
  if (!g->prev) return;
  c10::cuda::CUDAStream prev = *g->prev;
  g->prev.reset();
  c10::cuda::setCurrentCUDAStream(prev);
  c10::cuda::device_synchronize();
}

}  // namespace

extern "C" {

// CUDA devices LibTorch sees; 0 without a GPU or a driver (never throws).
int graft_cuda_device_count() noexcept {
  return static_cast<int>(c10::cuda::device_count());
}

int graft_graph_new(void** out, char* err, size_t len) noexcept {
  *out = nullptr;
  return guarded(err, len, [&] {
    TORCH_CHECK(c10::cuda::device_count() > 0, "no CUDA device");
    c10::DeviceIndex dev = c10::cuda::current_device();
    auto g = std::make_unique<Graph>(Graph{dev, c10::cuda::getStreamFromPool(false, dev), std::nullopt,
                                           std::make_unique<at::cuda::CUDAGraph>(), false});
    *out = g.release();
  });
}

void graft_graph_free(void* p) noexcept {
  auto* g = static_cast<Graph*>(p);
  if (g == nullptr) return;
  try {
    leave_side(g);
  } catch (...) {
  }
  try {
    g->graph.reset();
  } catch (...) {
  }
  delete g;
}

// enter != 0: synchronize and make the side stream current (for warmup);
// enter == 0: go back to the previous stream and synchronize.
int graft_graph_side_stream(void* p, int enter, char* err, size_t len) noexcept {
  auto* g = static_cast<Graph*>(p);
  return guarded(err, len, [&] {
    if (enter) {
      enter_side(g);
    } else {
      leave_side(g);
    }
  });
}

int graft_graph_capture_begin(void* p, char* err, size_t len) noexcept {
  auto* g = static_cast<Graph*>(p);
  return guarded(err, len, [&] {
    TORCH_CHECK(!g->captured, "this CUDA graph was already captured");
    enter_side(g);
    try {
      g->graph->capture_begin();
    } catch (...) {
      leave_side(g);
      throw;
    }
  });
}

// Ends the capture and instantiates the graph; always returns to the previous stream.
int graft_graph_capture_end(void* p, char* err, size_t len) noexcept {
  auto* g = static_cast<Graph*>(p);
  return guarded(err, len, [&] {
    try {
      g->graph->capture_end();
    } catch (...) {
      try {
        leave_side(g);
      } catch (...) {
      }
      throw;
    }
    leave_side(g);
    g->captured = true;
  });
}

// Launch the graph on the current stream (asynchronous, like any CUDA kernel).
int graft_graph_replay(void* p, char* err, size_t len) noexcept {
  auto* g = static_cast<Graph*>(p);
  return guarded(err, len, [&] {
    TORCH_CHECK(g->captured, "replay of a CUDA graph that was not captured");
    g->graph->replay();
  });
}

// Autocast to bf16 for CUDA ops on this thread (enabled != 0) or back to f32. The
// cast cache is off while enabled: cached casts of parameters would go stale after an
// optimizer step, and a cache does not survive a graph replay. `was` receives whether
// CUDA autocast was enabled before.
int graft_autocast_bf16(int enabled, int* was, char* err, size_t len) noexcept {
  return guarded(err, len, [&] {
    *was = at::autocast::is_autocast_enabled(at::kCUDA) ? 1 : 0;
    if (enabled) {
      at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
      at::autocast::set_autocast_cache_enabled(false);
      at::autocast::set_autocast_enabled(at::kCUDA, true);
    } else {
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();
      at::autocast::set_autocast_cache_enabled(true);
    }
  });
}

}  // extern "C"
