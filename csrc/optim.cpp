// Multi-tensor optimizer kernels for `graft train` (feature `torch`): LibTorch's fused
// AdamW (one kernel for a whole list of tensors, what `torch.optim.AdamW(fused=True)`
// calls), the `_foreach_*` global-norm clipping of `torch.nn.utils.clip_grad_norm_`,
// a non-finite check that raises a device flag without a host synchronisation, and
// pinned host copies for non-blocking transfers.
// tch does not expose these ops (they take tensor lists). Tensors cross as
// `at::Tensor*` (tch's C_tensor is exactly that); errors as return code 1 plus the
// first line of the message (csrc/ffi_guard.hpp), never as a C++ exception.

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "ffi_guard.hpp"

namespace {

std::vector<at::Tensor> list(void* const* ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) v.push_back(*static_cast<at::Tensor*>(ts[i]));
  return v;
}

std::optional<at::Tensor> maybe(void* t) {
  if (t == nullptr) return std::nullopt;
  return *static_cast<at::Tensor*>(t);
}

}  // namespace

extern "C" {

// One AdamW update of `n` parameters that share a learning rate and a weight decay:
// `steps` (float32 tensors on the parameters' device, PyTorch's `state_steps`) are
// incremented, then `_fused_adamw_` updates params, exp_avgs and exp_avg_sqs in place.
// `lr`: a 0-d float tensor on the device when `lr_tensor` is non-null (so a captured
// CUDA graph reads the current rate), else `lr_value`. `found_inf` (nullable, a 0-d
// float tensor): when it holds 1 the kernel leaves every tensor as it was, and the
// steps are taken back, as PyTorch's fused path does with a grad scaler.
int graft_adamw_fused(void* const* params, void* const* grads, void* const* exp_avgs, void* const* exp_avg_sqs,
                      void* const* steps, size_t n, void* lr_tensor, double lr_value, double beta1, double beta2,
                      double weight_decay, double eps, void* found_inf, char* err, size_t len) noexcept {
  return graft_ffi::guarded(err, len, [&] {
    if (n == 0) return;
    auto p = list(params, n), g = list(grads, n), m = list(exp_avgs, n), v = list(exp_avg_sqs, n),
         s = list(steps, n);
    auto inf = maybe(found_inf);
    at::_foreach_add_(s, 1.0);
    if (lr_tensor != nullptr) {
      at::_fused_adamw_(p, g, m, v, {}, s, *static_cast<at::Tensor*>(lr_tensor), beta1, beta2, weight_decay, eps,
                        /*amsgrad=*/false, /*maximize=*/false, std::nullopt, inf);
    } else {
      at::_fused_adamw_(p, g, m, v, {}, s, lr_value, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                        /*maximize=*/false, std::nullopt, inf);
    }
    if (inf) at::_foreach_sub_(s, std::vector<at::Tensor>(n, *inf));
  });
}

// The global L2 norm of `n` gradients (‖[‖g₁‖, …, ‖gₙ‖]‖, as clip_grad_norm_ computes
// it with foreach), written into `*norm_out` as a new 0-d float tensor on their device.
// With `max_norm` > 0 the gradients are then scaled in place by
// min(1, max_norm / (norm + 1e-6)) — on the device, no synchronisation.
int graft_clip_grad_norm(void* const* grads, size_t n, double max_norm, void** norm_out, char* err,
                         size_t len) noexcept {
  return graft_ffi::guarded(err, len, [&] {
    auto g = list(grads, n);
    auto norms = at::_foreach_norm(g, 2.0);
    auto total = at::linalg_vector_norm(at::stack(norms), 2.0);
    if (max_norm > 0.0) {
      auto coef = at::clamp_max(at::reciprocal(total + 1e-6) * max_norm, 1.0);
      at::_foreach_mul_(g, coef);
    }
    *norm_out = new at::Tensor(std::move(total));
  });
}

// Set the 0-d float flag `found_inf` to 1 when any of the `n` tensors holds a NaN or an
// infinity (it is never reset here), on the device; values are left as they are.
int graft_flag_non_finite(void* const* ts, size_t n, void* found_inf, char* err, size_t len) noexcept {
  return graft_ffi::guarded(err, len, [&] {
    auto v = list(ts, n);
    auto inf = *static_cast<at::Tensor*>(found_inf);
    for (auto& t : v) {
      auto bad = at::logical_not(at::isfinite(t)).any().to(inf.scalar_type());
      inf.copy_(at::maximum(inf, bad));
    }
  });
}

// A copy of the CPU tensor `t` in pinned (page-locked) host memory, written into
// `*out` as a new tensor. (tch's pin_memory passes a device, which LibTorch 2.11
// warns about on every call.)
int graft_pin_memory(void* t, void** out, char* err, size_t len) noexcept {
  return graft_ffi::guarded(err, len, [&] { *out = new at::Tensor(static_cast<at::Tensor*>(t)->pin_memory()); });
}

}  // extern "C"
