//! The AVX-512 kernel of [`super::linear`]: tiles of [`MR`] rows × two 16-column panels
//! (32 columns, two `zmm` registers per row, so 2·[`MR`] of the 32 hold accumulators),
//! each broadcast of `x` folded into its FMAs; a range's last odd panel takes one
//! register per row. Partial panels load their bias and store their outputs under a
//! lane mask. The sums are the AVX2 kernel's: bias, then one FMA per reduction index
//! in increasing order, so both kernels give the same bits.

use super::panels::{gelu_strip, row_block, Packed, Tiles, PANEL};
use crate::backend::native::math::SimdLevel;
use std::arch::x86_64::*;

/// Rows per tile.
pub const MR: usize = 14;

/// Bytes of `x` per row block (the CPUs with AVX-512 have 1–2 MiB of L2 per core).
const X_BLOCK_BYTES: usize = 512 * 1024;

/// Every tile, row blocks outermost so a block of `x` stays in L2 while the panel
/// pairs pass over it; while a pair's tiles run, they prefetch the next pair into L2
/// (a forward reads each weight once, from memory). (Measured on a 2-core Sapphire
/// Rapids against 8 and 12 rows, blocks of 256 reduction indices, and a copy of each
/// tile's rows of `x` into a contiguous strip: none was faster.)
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn run512(t: &Tiles, w: &Packed, m: usize, c0: usize, c1: usize) {
    let mc = row_block(t.k, MR, X_BLOCK_BYTES);
    for r0 in (0..m).step_by(mc) {
        let r1 = (r0 + mc).min(m);
        let mut c = c0;
        while c < c1 {
            let cols = (c1 - c).min(2 * PANEL);
            let b = w.panel(c / PANEL);
            // The next pair, or this one again at the end of the range.
            let next = if c + 2 * PANEL < c1 { w.panel(c / PANEL + 2) } else { b };
            let mut r = r0;
            while r < r1 {
                // A tile of fewer than 4 rows has too few accumulators to cover the FMA
                // latency: 15–17 rows go as two tiles of 7–9 (ViT's 197 tokens: 13 × 14 + 8 + 7).
                let left = r1 - r;
                let rows = if left > MR && left <= MR + 3 { left / 2 } else { left.min(MR) };
                if cols > PANEL {
                    tiles::<2>(t, (b, next), r, rows, c, cols);
                } else {
                    tiles::<1>(t, (b, next), r, rows, c, cols);
                }
                r += rows;
            }
            if t.gelu {
                gelu_strip(t, SimdLevel::Avx512, r0, r1, c, cols);
            }
            c += cols;
        }
    }
}

/// One tile of `rows` (1..=[`MR`]) rows and `NV` registers per row.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn tiles<const NV: usize>(t: &Tiles, b: (*const f32, *const f32), r: usize, rows: usize, c: usize, cols: usize) {
    match rows {
        1 => tile::<1, NV>(t, b, r, c, cols),
        2 => tile::<2, NV>(t, b, r, c, cols),
        3 => tile::<3, NV>(t, b, r, c, cols),
        4 => tile::<4, NV>(t, b, r, c, cols),
        5 => tile::<5, NV>(t, b, r, c, cols),
        6 => tile::<6, NV>(t, b, r, c, cols),
        7 => tile::<7, NV>(t, b, r, c, cols),
        8 => tile::<8, NV>(t, b, r, c, cols),
        9 => tile::<9, NV>(t, b, r, c, cols),
        10 => tile::<10, NV>(t, b, r, c, cols),
        11 => tile::<11, NV>(t, b, r, c, cols),
        12 => tile::<12, NV>(t, b, r, c, cols),
        13 => tile::<13, NV>(t, b, r, c, cols),
        _ => {
            const { assert!(MR == 14) };
            assert_eq!(rows, MR, "a tile has at most MR rows");
            tile::<MR, NV>(t, b, r, c, cols)
        }
    }
}

/// The lanes of a register that hold the first `cols` columns.
fn lanes(cols: usize) -> __mmask16 {
    if cols >= PANEL {
        0xffff
    } else {
        ((1u32 << cols) - 1) as __mmask16
    }
}

/// Rows `r..r + R`, columns `c..c + cols` (`cols` ≤ 16·`NV`; the panels at `b` and,
/// for `NV` = 2, the next): accumulators start at the bias, one FMA per reduction index.
/// Each step also prefetches one line of each of the `NV` panels at `next` into L2.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn tile<const R: usize, const NV: usize>(
    t: &Tiles,
    (b, next): (*const f32, *const f32),
    r: usize,
    c: usize,
    cols: usize,
) {
    let k = t.k;
    let mask: [__mmask16; NV] = std::array::from_fn(|v| lanes(cols.saturating_sub(v * PANEL)));
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let dst: [*mut f32; R] = std::array::from_fn(|i| t.dst.add((r + i) * t.ldy + c - t.c0));
    if !t.bias.is_null() {
        let bias: [__m512; NV] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(mask[v], t.bias.add(c + v * PANEL)));
        for row in acc.iter_mut() {
            *row = bias;
        }
    }
    let a: [*const f32; R] = std::array::from_fn(|i| t.x.add((r + i) * t.ldx));
    let panels: [*const f32; NV] = std::array::from_fn(|v| b.add(v * PANEL * k));
    // A hint only: an address past the weight (a range's last panel) is never read.
    let ahead: [*const f32; NV] = std::array::from_fn(|v| next.wrapping_add(v * PANEL * k));
    for p in 0..k {
        for pf in &ahead {
            _mm_prefetch::<_MM_HINT_T1>(pf.wrapping_add(p * PANEL).cast());
        }
        let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_load_ps(panels[v].add(p * PANEL)));
        for (row, ai) in acc.iter_mut().zip(&a) {
            let av = _mm512_set1_ps(*ai.add(p));
            for (acc, bv) in row.iter_mut().zip(&bv) {
                *acc = _mm512_fmadd_ps(av, *bv, *acc);
            }
        }
    }
    for (row, d) in acc.iter().zip(&dst) {
        for (v, acc) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(d.add(v * PANEL), mask[v], *acc);
        }
    }
}
