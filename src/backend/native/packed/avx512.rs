//! The AVX-512 kernel of [`super::linear`]: tiles of [`MR`] rows × two 16-column panels
//! (32 columns, two `zmm` registers per row, so 2·[`MR`] of the 32 hold accumulators),
//! one broadcast of `x` per row and reduction index feeding both panels' FMAs; a
//! range's last odd panel takes one register per row. Partial panels load their bias
//! and store their outputs under a lane mask. The sums are the AVX2 kernel's: bias, then
//! one FMA per reduction index in increasing order, so both kernels give the same bits.
//! A full tile's reduction loop ([`full_tile_loop`]) is inline assembly: compiled from
//! the intrinsics each of the fourteen row addresses cost an `add` per reduction index,
//! and those compete with the FMAs for their ports (measured in one process, paired by
//! round on a 2-core Sapphire Rapids: the assembly took 0.94–0.98 of the intrinsics'
//! time per linear layer of ViT-S, medians of 31 rounds). Without an epilogue a row
//! block's full tiles of a whole pair run as one piece of assembly ([`full_tiles`]);
//! the assembly lives in [`super::asm512`].

use super::super::isa::l2_bytes;
pub use super::asm512::MR;
use super::asm512::{full_tile_loop, full_tiles, Prefetch, SPREAD};
use super::gelu::gelu512 as gelu;
use super::panels::{row_block, Panels, Tiles, PANEL};
use std::arch::x86_64::*;

/// Bytes of `x` per row block: half of a core's L2 as CPUID gives it, so a block stays
/// there while the weight's panel pairs stream past it (512 KiB where the CPU does not
/// say; CPUs with AVX-512 have 1–2 MiB). On a 2-core Sapphire Rapids (2 MiB) 1 MiB
/// blocks took 0.95 of 512 KiB's time for ViT-S's GELU layer at batch 8 (1576 rows;
/// medians of 20 rounds, paired, the order alternated), the other layers 0.99–1.03.
pub(super) fn x_block_bytes() -> usize {
    l2_bytes().map_or(512 * 1024, |l2| (l2 / 2).clamp(256 * 1024, 4 << 20))
}

/// Every tile, row blocks outermost so a block of `x` stays in L2 while the panel
/// pairs pass over it; while a pair's tiles run, they prefetch the next pair into L2
/// (a forward reads each weight once, from memory). (Measured on a 2-core Sapphire
/// Rapids against 8 and 12 rows, blocks of 256 reduction indices, and a copy of each
/// tile's rows of `x` into a contiguous strip: none was faster.)
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn run512(t: &Tiles, w: &Panels, m: usize, c0: usize, c1: usize) {
    let mc = row_block(t.k, MR, x_block_bytes());
    for r0 in (0..m).step_by(mc) {
        let r1 = (r0 + mc).min(m);
        // The block's tiles share the prefetch of the next pair: SPREAD lines an
        // iteration (four of each panel), `lines` of them per tile, so the first
        // SPREAD / lines tiles cover the pair once (see `Prefetch`).
        let lines = Prefetch::lines((r1 - r0).div_ceil(MR));
        let mut c = c0;
        while c < c1 {
            let cols = (c1 - c).min(2 * PANEL);
            let b = w.panel(c / PANEL);
            // The pair this call reads next: the next one of the range, at its end the
            // range's first for the next row block; after the last row block the pair
            // past the range, which another chunk of the same product (of a region split
            // by columns) reads next, or this one again at the weight's end.
            let next = if r1 < m && c + 2 * PANEL >= c1 {
                w.panel(c0 / PANEL)
            } else if c + 2 * PANEL < w.n {
                w.panel(c / PANEL + 2)
            } else {
                b
            };
            let mut r = r0;
            let full = (r1 - r0) / MR;
            if !t.gelu && cols == 2 * PANEL && t.k > 0 && full > 0 {
                full_tiles(t, (b, next), r0, c, full, lines);
                r = r0 + full * MR;
            }
            while r < r1 {
                // Rows left over after the full tiles go as one more full tile ending
                // at the block's last row, over rows the call already wrote: the
                // same sums in the same order give them the same bits again. A
                // partial tile runs the compiled loop at about a third of the
                // assembly's rate (ViT's 197 tokens as 13 × 14 + 8 + 7 rows took 1.17×
                // the time of 196 rows); only a call of fewer than MR rows takes one.
                let left = r1 - r;
                let (top, rows) = if left >= MR || r1 < MR { (r, left.min(MR)) } else { (r1 - MR, MR) };
                let share = Prefetch { lines, lane: ((r - r0) / MR) % (SPREAD / lines) };
                match (cols > PANEL, t.gelu) {
                    (true, false) => tiles::<2, false>(t, (b, next), top, rows, c, cols, share),
                    (true, true) => tiles::<2, true>(t, (b, next), top, rows, c, cols, share),
                    (false, false) => tiles::<1, false>(t, (b, next), top, rows, c, cols, share),
                    (false, true) => tiles::<1, true>(t, (b, next), top, rows, c, cols, share),
                }
                r += left.min(MR);
            }
            c += cols;
        }
    }
}

/// One tile of `rows` (1..=[`MR`]) rows and `NV` registers per row, the GELU applied
/// when `GELU`; `share`: see [`tile`].
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<const NV: usize, const GELU: bool>(
    t: &Tiles,
    b: (*const f32, *const f32),
    r: usize,
    rows: usize,
    c: usize,
    cols: usize,
    share: Prefetch,
) {
    // One monomorphised tile per height, so each keeps its accumulators in registers.
    macro_rules! by_height {
        ($($h:literal)*) => {
            match rows {
                $($h => tile::<$h, NV, GELU>(t, b, r, c, cols, share),)*
                _ => {
                    const { assert!(MR == 14) };
                    assert_eq!(rows, MR, "a tile has at most MR rows");
                    tile::<MR, NV, GELU>(t, b, r, c, cols, share)
                }
            }
        };
    }
    by_height!(1 2 3 4 5 6 7 8 9 10 11 12 13)
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
/// The GELU is a parameter of the type: compiled in one body with a run-time branch it
/// made the compiler spill the accumulators to the stack after every tile's loop and
/// reload them to store them (measured on a 2-core Sapphire Rapids, one process: the
/// 1568 × 1568 × 64 score product of VideoMAE's attention went from 0.80 to 0.84 of the
/// FMA peak, the 1568 × 64 × 1568 value product from 0.88 to 0.91).
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn tile<const R: usize, const NV: usize, const GELU: bool>(
    t: &Tiles,
    (b, next): (*const f32, *const f32),
    r: usize,
    c: usize,
    cols: usize,
    share: Prefetch,
) {
    let k = t.k;
    let mask: [__mmask16; NV] = std::array::from_fn(|v| lanes(cols.saturating_sub(v * PANEL)));
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    if !t.bias.is_null() {
        let bias: [__m512; NV] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(mask[v], t.bias.add(c + v * PANEL)));
        for row in acc.iter_mut() {
            *row = bias;
        }
    }
    let a: [*const f32; R] = std::array::from_fn(|i| t.x.add((r + i) * t.ldx));
    if R == MR && NV == 2 {
        // SAFETY: R == 14 and NV == 2, so the cast is to the same type.
        let acc = &mut *(acc.as_mut_ptr() as *mut [[__m512; 2]; MR]);
        let pf = next.wrapping_add(share.offset(k));
        match share.lines {
            1 => full_tile_loop::<1>(acc, a[0], t.ldx, b, pf, k),
            2 => full_tile_loop::<2>(acc, a[0], t.ldx, b, pf, k),
            4 => full_tile_loop::<4>(acc, a[0], t.ldx, b, pf, k),
            _ => full_tile_loop::<8>(acc, a[0], t.ldx, b, pf, k),
        }
    } else {
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
    }
    if GELU {
        for v in acc.iter_mut().flatten() {
            *v = gelu(*v);
        }
    }
    let mut d = t.dst.add(r * t.ldy + c - t.c0);
    for row in &acc {
        for (v, acc) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(d.add(v * PANEL), mask[v], *acc);
        }
        d = d.add(t.ldy);
    }
}

/// A 16 × 16 block of `src` (16 rows of stride `ld`) times `scale`, transposed into the
/// 256 floats at `dst` (line `p` = column `p` of the block): interleaved by pairs of
/// floats, then of doubles, then 128-bit lanes twice, 64 shuffles a block. (Attention's
/// keys, value by value, took ~1.4 ms a VideoMAE layer, as long as a twelfth of the
/// score product.)
///
/// # Safety
/// The CPU must have AVX-512F; `src` valid for 16 rows of 16 floats at stride `ld`,
/// `dst` for 256 floats.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose16(src: *const f32, ld: usize, dst: *mut f32, scale: f32) {
    let s = _mm512_set1_ps(scale);
    let r: [__m512; 16] = std::array::from_fn(|c| _mm512_mul_ps(_mm512_loadu_ps(src.add(c * ld)), s));
    // Rows 2i, 2i + 1 interleaved by floats (within each 128-bit lane).
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // By pairs of floats: u[4g + m] holds rows 4g..4g + 4 at columns m, m + 4, m + 8,
    // m + 12 (one per lane).
    let pd = |a: __m512, b: __m512, hi: bool| {
        let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
        _mm512_castpd_ps(if hi { _mm512_unpackhi_pd(a, b) } else { _mm512_unpacklo_pd(a, b) })
    };
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, m) = (i / 4 * 4, i % 4);
        pd(t[g + m / 2], t[g + 2 + m / 2], m % 2 == 1)
    });
    // Lanes 0 and 2 (columns m, m + 8), lanes 1 and 3 (m + 4, m + 12) of rows 0..8
    // (from u[m], u[4 + m]) and 8..16 (u[8 + m], u[12 + m]); then the same pairing once
    // more gives whole columns.
    for m in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[m], u[4 + m]);
        let v1 = _mm512_shuffle_f32x4::<0xdd>(u[m], u[4 + m]);
        let w0 = _mm512_shuffle_f32x4::<0x88>(u[8 + m], u[12 + m]);
        let w1 = _mm512_shuffle_f32x4::<0xdd>(u[8 + m], u[12 + m]);
        _mm512_storeu_ps(dst.add(m * PANEL), _mm512_shuffle_f32x4::<0x88>(v0, w0));
        _mm512_storeu_ps(dst.add((m + 8) * PANEL), _mm512_shuffle_f32x4::<0xdd>(v0, w0));
        _mm512_storeu_ps(dst.add((m + 4) * PANEL), _mm512_shuffle_f32x4::<0x88>(v1, w1));
        _mm512_storeu_ps(dst.add((m + 12) * PANEL), _mm512_shuffle_f32x4::<0xdd>(v1, w1));
    }
}
