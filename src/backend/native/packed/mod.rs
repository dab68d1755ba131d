//! Linear layers on weights packed once: `y[m, c0..c1] = bias + x[m, k] · wᵀ` with the
//! `[n, k]` weight rearranged at load into panels of [`PANEL`] output columns, each
//! panel `k` rows of [`PANEL`] contiguous floats (the last zero-padded), 64-byte
//! aligned. A general GEMM packs its right-hand side on every call; for a weight that
//! never changes that is a pass over the whole weight per forward (about a sixth of a
//! batch-1 ViT forward).
//!
//! The micro-kernels ([`avx2`]: 6 rows × one panel in 12 of 16 registers; [`avx512`]:
//! 14 rows × two panels in 28 of 32) read `x` in place (a strip of rows stays in L1
//! across a panel) and start their accumulators from the bias, so the bias never takes
//! a pass of its own. Every output
//! element is `bias + Σₚ x[i, p] · w[j, p]` accumulated with one fused multiply-add per
//! `p` in increasing order: the result depends neither on the tile an element falls in
//! nor on how columns are split among threads. An epilogue (GELU) gives the elementwise
//! kernels' bits without a separate sweep over the output: both kernels apply it to a
//! tile's accumulators before they are stored ([`gelu`]: the same operations on a
//! register). Both kernels compute the same sums in the same order, so they
//! give the same bits. Without AVX2 and FMA the caller uses the general GEMM
//! ([`available`]). The packed layout and what both kernels share live in [`panels`],
//! which the kernels import and this module dispatches to (no import cycle).

use super::math::SimdLevel;
use super::program::Epilogue;

/// Whether [`linear`] has a kernel for `level`.
pub fn available(level: SimdLevel) -> bool {
    matches!(level, SimdLevel::Avx2Fma | SimdLevel::Avx512)
}

/// The rows and columns of one tile of `level`'s kernel: chunks split at multiples.
fn tile(level: SimdLevel) -> (usize, usize) {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => (avx512::MR, 2 * PANEL),
        _ => (MR, PANEL),
    }
}

/// Chunk `t` of `n` of an `m × cols` product over `k` inputs for `level`'s kernel: its
/// rows and columns.
/// A chunk that takes a range of columns over every row reads all of `x` for a few
/// panels, so where `x` outgrows a core's L2 (a batch of images) every chunk re-streams
/// it from L3; a chunk that takes a range of rows over every column reads all of the
/// weight instead. Rows are split where the chunks average at least [`ROWS_PER_CHUNK`]
/// of them and the weight is at most [`ROW_SPLIT_WEIGHT_BYTES`], so the weight stays in
/// L3 while both cores pass over it; otherwise columns, whole tiles' columns each.
/// Either way the chunks shrink from the first to the last ([`super::gemm::falling`]),
/// so the participants of a region finish within a small chunk of each other. (A one-off
/// comparison on a 2-core Zen 2 with 16 MiB of L3, recorded in the commit that set the
/// bound: by rows ViT-Ti and ViT-S ran faster at batch 8, ViT-B's 7 and 9.4 MB
/// weights slower.)
pub fn split(
    level: SimdLevel,
    m: usize,
    cols: usize,
    k: usize,
    t: usize,
    n: usize,
) -> ((usize, usize), (usize, usize)) {
    let (mr, nr) = tile(level);
    if m >= n * ROWS_PER_CHUNK && cols * k * 4 <= ROW_SPLIT_WEIGHT_BYTES {
        (super::gemm::falling(m, t, n, mr), (0, cols))
    } else {
        ((0, m), super::gemm::falling(cols, t, n, nr))
    }
}

/// The largest weight (bytes) whose product is split by rows.
pub const ROW_SPLIT_WEIGHT_BYTES: usize = 4 << 20;

/// The fewest rows a row split gives a chunk on average (ten tiles of the AVX2 kernel's [`MR`]).
pub const ROWS_PER_CHUNK: usize = 10 * MR;

/// `y[i, c] = bias[c] + Σₚ x[i, p] · w[c, p]` for rows `0..m` and columns `c0..c1`
/// (`c0` a multiple of [`PANEL`]), then `epilogue` on each block while it is in cache;
/// `x` has row stride `ldx`; `dst` points at `y[0, c0]` (`dst_len` elements from
/// there), `y` has row stride `ldy`.
///
/// # Safety
/// The `m × (c1 - c0)` window at `dst` must be valid for writes, not overlap `x`, and
/// be this call's alone. `level` must be one the CPU has and
/// [`available`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn linear(
    level: SimdLevel,
    m: usize,
    x: &[f32],
    ldx: usize,
    w: Panels,
    (c0, c1): (usize, usize),
    bias: Option<&[f32]>,
    (dst, dst_len, ldy): (*mut f32, usize, usize),
    epilogue: Epilogue,
) {
    let k = w.k;
    if m == 0 || c0 >= c1 {
        return;
    }
    assert!(c0 % PANEL == 0 && c1 <= w.n, "packed linear: columns {c0}..{c1} of {}", w.n);
    assert!(x.len() >= (m - 1) * ldx + k, "packed linear: x too short");
    assert!(dst_len >= (m - 1) * ldy + c1 - c0, "packed linear: destination too short");
    assert!(bias.is_none_or(|b| b.len() >= c1), "packed linear: bias too short");
    let bias = bias.map_or(std::ptr::null(), |b| b.as_ptr());
    let t = Tiles { k, x: x.as_ptr(), ldx, bias, dst, ldy, c0, gelu: epilogue == Epilogue::Gelu };
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2Fma => avx2::run256(&t, &w, m, c0, c1),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => avx512::run512(&t, &w, m, c0, c1),
        _ => panic!("packed linear at {level:?}: no kernel (check `available`)"),
    }
}

#[cfg(target_arch = "x86_64")]
mod asm512;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod gelu;
mod panels;
mod slab;

use panels::Tiles;
pub use panels::{pack_columns, packed_len, Packed, Panels, MR, PANEL};
pub use slab::SlabBuilder;

/// Panels of the `[n, k]` weight whose row `j` is `src[j * ld..j * ld + k]`, each value
/// times `scale`, into `dst` ([`packed_len`]`(n, k)` floats; the padding columns
/// zeroed); attention packs a head's keys so, the `1/√d` folded in. Whole 16 × 16
/// blocks are transposed in registers ([`avx512::transpose16`], [`avx2::transpose16`]);
/// the result does not depend on `level`, which must be one the CPU has.
pub fn pack_rows(level: SimdLevel, dst: &mut [f32], src: &[f32], (ld, n, k): (usize, usize, usize), scale: f32) {
    assert!(level.available(), "SIMD level {level:?} not available on this CPU");
    let block: Option<panels::Transpose16> = match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => Some(avx512::transpose16),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2Fma => Some(avx2::transpose16),
        _ => None,
    };
    // SAFETY: each level's transpose only at that level, checked available above.
    unsafe { panels::pack_rows(dst, src, (ld, n, k), scale, block) }
}

#[cfg(test)]
mod tests {
    use super::super::gemm::tests::seq;
    use super::*;

    /// The same sum, one fused multiply-add per reduction index in order.
    fn reference(x: &[f32], ldx: usize, w: &[f32], k: usize, bias: Option<&[f32]>, i: usize, j: usize) -> f32 {
        let mut acc = bias.map_or(0.0, |b| b[j]);
        for p in 0..k {
            acc = x[i * ldx + p].mul_add(w[j * k + p], acc);
        }
        acc
    }

    #[test]
    fn chunks_cover_the_output_once_and_give_the_whole_calls_bits() {
        let levels: Vec<SimdLevel> = SimdLevel::all_available().into_iter().filter(|&l| available(l)).collect();
        // Row splits (m past ROWS_PER_CHUNK per chunk) and column splits, partial tiles.
        // A weight past the bound splits its columns however many rows there are.
        for level in [SimdLevel::Avx2Fma, SimdLevel::Avx512] {
            let (rows, (c0, c1)) = split(level, 10_000, 2048, 1024, 0, 8);
            assert!(rows == (0, 10_000) && c0 == 0 && c1 < 2048, "by columns: {rows:?}, {c0}..{c1}");
        }
        for (m, n, k) in [(500, 40, 30), (61, 50, 20), (7, 33, 9), (131, 17, 5)] {
            assert!(n * k * 4 <= ROW_SPLIT_WEIGHT_BYTES);
            let (x, w, bias) = (seq(m * k, 1), seq(n * k, 2), seq(n, 3));
            let pk = Packed::new(&w, n, k).unwrap();
            for &level in &levels {
                let mut whole = vec![f32::NAN; m * n];
                let len = whole.len();
                unsafe {
                    linear(
                        level,
                        m,
                        &x,
                        k,
                        pk.panels(),
                        (0, n),
                        Some(&bias),
                        (whole.as_mut_ptr(), len, n),
                        Epilogue::Gelu,
                    )
                };
                for chunks in 1..=9 {
                    let mut y = vec![f32::NAN; m * n];
                    let mut written = vec![0u8; m * n];
                    for t in 0..chunks {
                        let ((r0, r1), (c0, c1)) = split(level, m, n, k, t, chunks);
                        for i in r0..r1 {
                            written[i * n + c0..i * n + c1].iter_mut().for_each(|c| *c += 1);
                        }
                        if r0 < r1 && c0 < c1 {
                            let dst = (unsafe { y.as_mut_ptr().add(r0 * n + c0) }, m * n - r0 * n - c0, n);
                            let xs = &x[r0 * k..];
                            unsafe {
                                linear(level, r1 - r0, xs, k, pk.panels(), (c0, c1), Some(&bias), dst, Epilogue::Gelu)
                            };
                        }
                    }
                    assert!(written.iter().all(|&c| c == 1), "{m}x{n}, {chunks} chunks: every element once");
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&y), bits(&whole), "{level:?} {m}x{n}x{k}, {chunks} chunks");
                }
            }
        }
    }

    /// Keys packed at every level, whole 16 × 16 blocks (transposed in registers at
    /// AVX2 and AVX-512) and partial ones (value by value), give the scaled values in
    /// their places.
    #[test]
    fn packed_rows_hold_each_scaled_value_at_every_level() {
        for (n, k) in [(1, 1), (16, 16), (33, 64), (48, 70), (84, 32), (5, 19)] {
            let ld = k + 9;
            let src = seq(n * ld, 4);
            let scale = 0.125f32;
            for level in SimdLevel::all_available() {
                let mut dst = vec![f32::NAN; packed_len(n, k)];
                pack_rows(level, &mut dst, &src, (ld, n, k), scale);
                for j in 0..n.next_multiple_of(PANEL) {
                    for p in 0..k {
                        let want = if j < n { src[j * ld + p] * scale } else { 0.0 };
                        let got = dst[(j / PANEL) * PANEL * k + p * PANEL + j % PANEL];
                        assert_eq!(got.to_bits(), want.to_bits(), "{level:?} {n}x{k} at key {j}, column {p}");
                    }
                }
            }
        }
    }

    /// A product whose `x` spans more than one row block of the AVX-512 kernel (whose
    /// block follows the CPU's L2) and of the AVX2 kernel's 256 KiB.
    fn past_a_row_block() -> Option<(usize, usize, usize)> {
        #[cfg(target_arch = "x86_64")]
        {
            let k = 40;
            Some((avx512::x_block_bytes().max(256 * 1024) / (4 * k) + 9, 33, k))
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// Every level against the same reference, so the AVX2 and AVX-512 kernels (6×16
    /// and 14×32 tiles) give the same bits; with the GELU epilogue, the elementwise
    /// kernels' GELU of those sums.
    #[test]
    fn every_tile_shape_equals_ordered_fused_sums_at_every_level() {
        let levels: Vec<SimdLevel> = SimdLevel::all_available().into_iter().filter(|&l| available(l)).collect();
        // Rows past the row block (both kernels' blocks), every tile height, columns with
        // partial panels and partial pairs; reductions shorter than four steps and not
        // whole fours (the assembly tiles' single steps).
        for (m, n, k) in [
            (1, 1, 1),
            (20, 32, 3),
            (13, 37, 19),
            (29, 64, 40),
            (44, 70, 23),
            (7, 16, 1100),
            (150, 50, 300),
            (470, 80, 300),
        ]
        .into_iter()
        .chain(past_a_row_block())
        {
            let ldx = k + 3;
            let x = seq(m * ldx, 1);
            let w = seq(n * k, 2);
            let bias = seq(n, 3);
            let packed = Packed::new(&w, n, k).unwrap();
            assert_eq!(packed.unpack().unwrap(), w, "unpacking gives the weight back");
            for &level in &levels {
                for (b, epilogue) in
                    [(None, Epilogue::None), (Some(&bias[..]), Epilogue::None), (Some(&bias[..]), Epilogue::Gelu)]
                {
                    let ldy = n + 5;
                    let mut y = vec![f32::NAN; m * ldy];
                    let len = y.len();
                    // Two column ranges, as two threads would split them.
                    let split = (n / 2).div_ceil(PANEL) * PANEL;
                    for (c0, c1) in [(0, split.min(n)), (split.min(n), n)] {
                        unsafe {
                            let dst = (y.as_mut_ptr().add(c0), len - c0, ldy);
                            linear(level, m, &x, ldx, packed.panels(), (c0, c1), b, dst, epilogue)
                        };
                    }
                    for i in 0..m {
                        for j in 0..n {
                            let mut want = [reference(&x, ldx, &w, k, b, i, j)];
                            if epilogue == Epilogue::Gelu {
                                crate::backend::native::math::gelu_erf_inplace_at(level, &mut want);
                            }
                            let want = want[0];
                            assert_eq!(y[i * ldy + j].to_bits(), want.to_bits(), "{level:?} {m}x{n}x{k} at {i},{j}");
                        }
                        assert!(y[i * ldy + n..(i + 1) * ldy].iter().all(|v| v.is_nan()), "past the last column");
                    }
                }
            }
        }
    }
}
