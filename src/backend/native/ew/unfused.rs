//! The unfused strategy, the baseline of the ablation: one rustc SIMD pass per
//! instruction over the whole `[rows, cols]` buffer, each intermediate a full-size
//! temporary (kept per thread, so steady-state runs do not allocate). It is the block
//! interpreter of `blocks.rs` with one block covering everything.

use super::{blocks, Program};

/// Runs `prog` one full pass per instruction.
pub(super) fn run(prog: &Program, rows: usize, cols: usize, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
    blocks::run(prog, rows * cols, rows, cols, inputs, outputs)
}
