//! The native CPU backend (no LibTorch): vectorised math kernels and fused elementwise
//! groups (rustc kernels or Cranelift-compiled loops).

pub mod ew;
pub mod math;
