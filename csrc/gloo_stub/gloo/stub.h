// graft's stand-in for the gloo headers that torch/csrc/distributed/c10d/ProcessGroupGloo.hpp
// includes. The PyTorch wheel ships the c10d headers and carries gloo compiled into
// libtorch_cpu, but not gloo's own headers. ProcessGroupGloo.hpp only needs the names
// declared here: gloo types appear in its members behind shared_ptr / unique_ptr /
// vector, so class layouts do not depend on them, and graft never calls a gloo function
// directly (everything goes through c10d's exported methods). csrc/dist.cpp checks the
// sizes of the c10d classes against those of the real build with static_assert, so a
// future torch that needs more of gloo fails to compile instead of misbehaving.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {

class Context {
 public:
  // Named by the inline ProcessGroupGloo::setTimeout; defined in libtorch_cpu.
  void setTimeout(std::chrono::milliseconds timeout);
};

namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport

namespace rendezvous {
// The interface ProcessGroupGloo::GlooStore overrides (GLOO_STORE_HAS_STORE_V2 stays
// undefined, which compiles the v2 overrides out).
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) = 0;
};
}  // namespace rendezvous

}  // namespace gloo
