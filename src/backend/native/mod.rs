//! The native CPU backend: runs verified IR with no LibTorch.
//!
//! - [`math`]: vectorised exp, erf, tanh, GELU, sigmoid, softmax rows (run-time dispatch).
//! - [`ew`]: fused elementwise groups (rustc kernels or Cranelift-compiled loops).
//! - [`isa`]: compiles the row kernels per instruction set, picked at run time.
//! - [`gemm`]: matrix products (the `gemm` crate, AVX-512 / AVX2 / portable).
//! - [`rows`]: layer norm (+ residual add), mean over tokens, embedding, im2col.
//! - [`pool`]: the persistent worker pool (spin, then park).
//! - [`arena`]: byte offsets of every buffer from lifetimes; one allocation per plan.

pub mod arena;
pub mod attention;
pub mod backend;
pub mod ew;
pub mod ewlower;
pub mod exec;
pub mod gemm;
pub mod isa;
pub mod lower;
pub mod lowering;
pub mod math;
pub mod pool;
pub mod program;
pub mod rows;

pub use backend::{Native, NativeExecutable};
