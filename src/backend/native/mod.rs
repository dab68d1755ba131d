//! The native CPU backend: runs verified IR with no LibTorch.
//!
//! - [`isa`]: run-time instruction-set dispatch for the rustc kernels.
//! - [`gemm`]: matrix products (the `gemm` crate, AVX-512 / AVX2 / portable).
//! - [`rows`]: layer norm (+ residual add), mean over tokens, embedding, im2col.
//! - [`pool`]: the persistent worker pool (spin, then park).
//! - [`arena`]: byte offsets of every buffer from lifetimes; one allocation per plan.

pub mod arena;
pub mod gemm;
pub mod isa;
pub mod pool;
pub mod rows;
