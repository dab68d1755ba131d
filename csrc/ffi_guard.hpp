// The C boundary of graft's C++ shims (csrc/cuda_graph.cpp, csrc/dist.cpp): every
// entry point is `noexcept` and runs its body inside `guarded`, so no C++ exception
// crosses into Rust; it becomes return code 1 and the first line of its message in
// the caller's buffer (`err`, `len` bytes including the NUL).
//
// The catch path allocates nothing: the message is copied from the exception's own
// `what()` text straight into the caller's buffer, so a `std::bad_alloc` (or an
// exception thrown while the message was being formatted) still reports cleanly
// instead of throwing again across the C ABI.
#pragma once

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstring>
#include <exception>

namespace graft_ffi {

// Copy the first line of `msg` (up to a newline: c10 messages may carry a multi-line
// C++ trace) into `err`, truncated to `len - 1` bytes and always NUL-terminated.
inline void put(char* err, size_t len, const char* msg) noexcept {
  if (err == nullptr || len == 0) return;
  if (msg == nullptr) msg = "";
  size_t n = 0;
  while (n + 1 < len && msg[n] != '\0' && msg[n] != '\n') ++n;
  std::memcpy(err, msg, n);
  err[n] = '\0';
}

// Run `f`, turning any exception into return code 1 plus a message.
template <typename F>
int guarded(char* err, size_t len, F&& f) noexcept {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    put(err, len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    put(err, len, e.what());
  } catch (...) {
    put(err, len, "unknown C++ exception");
  }
  return 1;
}

}  // namespace graft_ffi
