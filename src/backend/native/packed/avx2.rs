//! The AVX2+FMA kernel of [`super::linear`]: tiles of 6 rows × one 16-column panel in
//! 12 of the 16 `ymm` registers (two per row), the FMA units' peak on this register
//! file; the GELU epilogue on a tile's registers before they are stored
//! ([`super::gelu::gelu256`]).

use super::gelu::gelu256;
use super::panels::{row_block, Panels, Tiles, MR as MR256, PANEL};
use std::arch::x86_64::*;

/// Every tile, row blocks outermost so a block of `x` stays in L2 while the
/// panels pass over it.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run256(t: &Tiles, w: &Panels, m: usize, c0: usize, c1: usize) {
    let mc = row_block(t.k, MR256, 256 * 1024);
    for r0 in (0..m).step_by(mc) {
        let r1 = (r0 + mc).min(m);
        let mut c = c0;
        while c < c1 {
            let cols = (c1 - c).min(PANEL);
            let b = w.panel(c / PANEL);
            let mut r = r0;
            while r < r1 {
                let rows = (r1 - r).min(MR256);
                if t.gelu {
                    tiles::<true>(t, b, r, rows, c, cols);
                } else {
                    tiles::<false>(t, b, r, rows, c, cols);
                }
                r += rows;
            }
            c += cols;
        }
    }
}

/// One tile of `rows` (1..=6) rows, the GELU applied when `GELU`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tiles<const GELU: bool>(t: &Tiles, b: *const f32, r: usize, rows: usize, c: usize, cols: usize) {
    match rows {
        1 => tile256::<1, GELU>(t, b, r, c, cols),
        2 => tile256::<2, GELU>(t, b, r, c, cols),
        3 => tile256::<3, GELU>(t, b, r, c, cols),
        4 => tile256::<4, GELU>(t, b, r, c, cols),
        5 => tile256::<5, GELU>(t, b, r, c, cols),
        _ => tile256::<6, GELU>(t, b, r, c, cols),
    }
}

/// Rows `r..r + MR`, columns `c..c + cols` (`cols` ≤ 16) in two 8-lane registers
/// per row: accumulators start at the bias, one FMA per reduction index, then the GELU
/// where `GELU`; a partial tile goes out through a stack tile.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile256<const MR: usize, const GELU: bool>(t: &Tiles, b: *const f32, r: usize, c: usize, cols: usize) {
    let k = t.k;
    let mut edge = [0f32; PANEL];
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    if !t.bias.is_null() {
        edge[..cols].copy_from_slice(std::slice::from_raw_parts(t.bias.add(c), cols));
        let (b0, b1) = (_mm256_loadu_ps(edge.as_ptr()), _mm256_loadu_ps(edge.as_ptr().add(8)));
        for row in acc.iter_mut() {
            *row = [b0, b1];
        }
    }
    let a: [*const f32; MR] = std::array::from_fn(|i| t.x.add((r + i) * t.ldx));
    let mut bp = b;
    for p in 0..k {
        let b0 = _mm256_load_ps(bp);
        let b1 = _mm256_load_ps(bp.add(8));
        for (row, ai) in acc.iter_mut().zip(&a) {
            let av = _mm256_set1_ps(*ai.add(p));
            row[0] = _mm256_fmadd_ps(av, b0, row[0]);
            row[1] = _mm256_fmadd_ps(av, b1, row[1]);
        }
        bp = bp.add(PANEL);
    }
    if GELU {
        for row in acc.iter_mut() {
            *row = [gelu256(row[0]), gelu256(row[1])];
        }
    }
    for (i, row) in acc.iter().enumerate() {
        let d = t.dst.add((r + i) * t.ldy + c - t.c0);
        if cols == PANEL {
            _mm256_storeu_ps(d, row[0]);
            _mm256_storeu_ps(d.add(8), row[1]);
        } else {
            _mm256_storeu_ps(edge.as_mut_ptr(), row[0]);
            _mm256_storeu_ps(edge.as_mut_ptr().add(8), row[1]);
            std::ptr::copy_nonoverlapping(edge.as_ptr(), d, cols);
        }
    }
}
