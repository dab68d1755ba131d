//! The native CPU backend: runs verified IR with no LibTorch.
//!
//! - [`lower`] (with [`lowering`], [`ewlower`], [`views`]): plan → [`program::Program`]
//!   for concrete input shapes; shapes by the ops' own rules; [`pad`] then pads the
//!   rows of values passed between linear layers off a 4 KiB multiple.
//! - [`program`]: the runtime steps, each declaring what it reads and writes.
//! - [`arena`]: lifetimes derived from those declarations, then byte offsets; one
//!   allocation per program.
//! - [`exec`]: runs a program, every access checked against its step's declaration.
//! - [`backend`]: the [`Native`] backend; [`cache`] bounds its programs (least recently
//!   used, [`PROGRAMS`]).
//! - [`math`]: vectorised exp, erf, tanh, GELU, sigmoid, softmax rows (run-time dispatch).
//! - [`ew`]: fused elementwise groups (rustc kernels or Cranelift-compiled loops).
//! - [`isa`]: compiles the row kernels per instruction set, picked at run time; the L2 size.
//! - [`gemm`]: matrix products (the `gemm` crate, AVX-512 / AVX2 / portable).
//! - [`packed`]: linear layers on weights packed once at load (AVX2+FMA and AVX-512
//!   kernels with the same bits, the bias in the accumulators, a GELU epilogue applied
//!   to each tile).
//! - [`peak`]: one core's measured FMA peak (what `graft bench` divides a forward by).
//! - [`weights`]: the parameters, widened once, held plain or packed (one copy at peak).
//! - [`rows`]: layer norm (+ residual add), mean over tokens, embedding, im2col.
//! - [`pool`]: the persistent worker pool (spin, then park).
//!
//! Public: the backend ([`Native`], [`NativeExecutable`], [`PROGRAMS`], [`AttentionPath`]), the elementwise
//! compiler ([`ew`], for its tests and the ablation example), [`math`] and [`peak`]; every one of
//! them is safe to call with any arguments. Everything that handles raw memory (the
//! arena, the pool's shared buffers, the program and its executor) is private to the
//! crate.

pub(crate) mod arena;
pub(crate) mod attention;
pub(crate) mod backend;
pub(crate) mod cache;
pub mod ew;
pub(crate) mod ewlower;
pub(crate) mod exec;
pub(crate) mod gemm;
pub(crate) mod isa;
pub(crate) mod lower;
pub(crate) mod lowering;
pub mod math;
pub(crate) mod packed;
pub(crate) mod pad;
pub mod peak;
pub(crate) mod pool;
pub(crate) mod program;
pub(crate) mod rows;
#[cfg(target_arch = "x86_64")]
pub(crate) mod softmax256;
#[cfg(target_arch = "x86_64")]
pub(crate) mod softmax512;
pub(crate) mod views;
pub(crate) mod weights;

pub use attention::{AttentionPath, BLOCKED_FROM};
pub use backend::{Native, NativeExecutable, PROGRAMS};
pub use ewlower::MAX_GROUP_OPS;

#[cfg(test)]
mod epilogue_tests;
#[cfg(test)]
mod kernel_tests;
