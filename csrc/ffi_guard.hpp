// The C boundary of graft's C++ shims (csrc/cuda_graph.cpp, csrc/dist.cpp): every
// call runs inside `guarded`, so no C++ exception crosses into Rust; it becomes
// return code 1 and the first line of its message in the caller's buffer.
#pragma once

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstring>
#include <exception>
#include <string>

namespace graft_ffi {

inline void put(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// Only the first line: c10 messages may carry a multi-line C++ trace.
inline std::string first_line(const char* what) {
  std::string s = what ? what : "";
  size_t nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// Run `f`, turning any exception into return code 1 plus a message.
template <typename F>
int guarded(char* err, size_t len, F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    put(err, len, first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    put(err, len, first_line(e.what()));
  } catch (...) {
    put(err, len, "unknown C++ exception");
  }
  return 1;
}

}  // namespace graft_ffi
