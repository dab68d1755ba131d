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
//! time per linear layer of ViT-S, medians of 31 rounds).

use super::super::isa::l2_bytes;
use super::gelu::gelu512 as gelu;
use super::panels::{row_block, Panels, Tiles, PANEL};
use std::arch::x86_64::*;

/// Rows per tile.
pub const MR: usize = 14;

/// Lines of the next panel pair prefetched per iteration of the full tiles' loop, shared
/// among a row block's tiles ([`Prefetch`]).
const SPREAD: usize = 8;

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

/// A full tile's share of the prefetch of the next pair: `lines` (1, 2, 4 or 8) of the
/// SPREAD lines of each iteration, from `lane` on, every SPREAD / `lines`-th: line `ℓ`
/// is panel A's line 4i + ℓ for ℓ < 4, panel B's 4i + ℓ − 4 for the others. A block of
/// eight tiles or more prefetches one line a tile, fewer tiles more each; every tile
/// prefetching the whole pair, as all blocks of fewer than eight tiles once did, took
/// 1.06× the time of this for VideoMAE's fc2 (1568 × 768 × 3072, blocks of 84 rows;
/// measured on a 2-core Sapphire Rapids, one process, paired rounds alternated); one
/// line a tile in a block of fewer than eight leaves lines unprefetched (CLIP's batch-1
/// forward, four tiles a block, went 7% slower with that).
#[derive(Clone, Copy)]
struct Prefetch {
    lines: usize,
    lane: usize,
}

impl Prefetch {
    /// Lines per tile for a block of `tiles` tiles.
    fn lines(tiles: usize) -> usize {
        match tiles {
            8.. => 1,
            4..=7 => 2,
            2 | 3 => 4,
            _ => 8,
        }
    }

    /// Floats from the next pair's start to this tile's first line.
    fn offset(self, k: usize) -> usize {
        match self.lines {
            1 => (self.lane % 4) * PANEL + (self.lane / 4) * PANEL * k,
            _ => self.lane * PANEL,
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
    let dst: [*mut f32; R] = std::array::from_fn(|i| t.dst.add((r + i) * t.ldy + c - t.c0));
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
    for (row, d) in acc.iter().zip(&dst) {
        for (v, acc) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(d.add(v * PANEL), mask[v], *acc);
        }
    }
}

/// The two panels' 16 floats at reduction index `p + $d64 / 64` of [`full_tile_loop`].
macro_rules! loads {
    ($d64:literal) => {
        concat!(
            concat!("vmovaps zmm28, zmmword ptr [{bp} + ", $d64, "]\n"),
            concat!("vmovaps zmm29, zmmword ptr [{bp} + {koff} + ", $d64, "]\n"),
        )
    };
}

/// The fourteen rows' broadcasts at reduction index `p + $d4 / 4` and their 28 FMAs.
macro_rules! fmas {
    ($d4:literal) => {
        concat!(
            concat!("vbroadcastss zmm30, dword ptr [{a0} + ", $d4, "]\n"),
            "vfmadd231ps zmm0, zmm28, zmm30\n",
            "vfmadd231ps zmm1, zmm29, zmm30\n",
            concat!("vbroadcastss zmm31, dword ptr [{a0} + {l} + ", $d4, "]\n"),
            "vfmadd231ps zmm2, zmm28, zmm31\n",
            "vfmadd231ps zmm3, zmm29, zmm31\n",
            concat!("vbroadcastss zmm30, dword ptr [{a0} + {l}*2 + ", $d4, "]\n"),
            "vfmadd231ps zmm4, zmm28, zmm30\n",
            "vfmadd231ps zmm5, zmm29, zmm30\n",
            concat!("vbroadcastss zmm31, dword ptr [{a0} + {l3} + ", $d4, "]\n"),
            "vfmadd231ps zmm6, zmm28, zmm31\n",
            "vfmadd231ps zmm7, zmm29, zmm31\n",
            concat!("vbroadcastss zmm30, dword ptr [{a0} + {l}*4 + ", $d4, "]\n"),
            "vfmadd231ps zmm8, zmm28, zmm30\n",
            "vfmadd231ps zmm9, zmm29, zmm30\n",
            concat!("vbroadcastss zmm31, dword ptr [{a5} + ", $d4, "]\n"),
            "vfmadd231ps zmm10, zmm28, zmm31\n",
            "vfmadd231ps zmm11, zmm29, zmm31\n",
            concat!("vbroadcastss zmm30, dword ptr [{a0} + {l3}*2 + ", $d4, "]\n"),
            "vfmadd231ps zmm12, zmm28, zmm30\n",
            "vfmadd231ps zmm13, zmm29, zmm30\n",
            concat!("vbroadcastss zmm31, dword ptr [{a5} + {l}*2 + ", $d4, "]\n"),
            "vfmadd231ps zmm14, zmm28, zmm31\n",
            "vfmadd231ps zmm15, zmm29, zmm31\n",
            concat!("vbroadcastss zmm30, dword ptr [{a0} + {l}*8 + ", $d4, "]\n"),
            "vfmadd231ps zmm16, zmm28, zmm30\n",
            "vfmadd231ps zmm17, zmm29, zmm30\n",
            concat!("vbroadcastss zmm31, dword ptr [{a5} + {l}*4 + ", $d4, "]\n"),
            "vfmadd231ps zmm18, zmm28, zmm31\n",
            "vfmadd231ps zmm19, zmm29, zmm31\n",
            concat!("vbroadcastss zmm30, dword ptr [{a10} + ", $d4, "]\n"),
            "vfmadd231ps zmm20, zmm28, zmm30\n",
            "vfmadd231ps zmm21, zmm29, zmm30\n",
            concat!("vbroadcastss zmm31, dword ptr [{a5} + {l3}*2 + ", $d4, "]\n"),
            "vfmadd231ps zmm22, zmm28, zmm31\n",
            "vfmadd231ps zmm23, zmm29, zmm31\n",
            concat!("vbroadcastss zmm30, dword ptr [{a0} + {l3}*4 + ", $d4, "]\n"),
            "vfmadd231ps zmm24, zmm28, zmm30\n",
            "vfmadd231ps zmm25, zmm29, zmm30\n",
            concat!("vbroadcastss zmm31, dword ptr [{a5} + {l}*8 + ", $d4, "]\n"),
            "vfmadd231ps zmm26, zmm28, zmm31\n",
            "vfmadd231ps zmm27, zmm29, zmm31\n",
        )
    };
}

/// One step of [`full_tile_loop`]: reduction index `p + $d4 / 4` (`$d4` and `$d64` the
/// byte offsets of that index in a row of `x` and in a panel).
macro_rules! step {
    ($d4:literal, $d64:literal) => {
        concat!(loads!($d64), fmas!($d4))
    };
}

/// The reduction loop of a full tile (14 rows × two panels) in assembly, the sums of
/// [`tile`]'s loop in the same order. Rows of `x` are addressed from three bases with
/// the row stride and three times it as scaled indices, so a step spends no instruction
/// on addresses; four steps per iteration, their offsets as displacements. (Compiled
/// from the intrinsics, the fourteen row addresses took an `add` each per step, which
/// compete with the FMAs for their ports; unrolled, LLVM hoisted the broadcasts and
/// spilled.) Each iteration prefetches `LINES` lines of the next pair from `pf` into L2
/// (see [`Prefetch`]).
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn full_tile_loop<const LINES: usize>(
    acc: &mut [[__m512; 2]; MR],
    x: *const f32,
    ldx: usize,
    b: *const f32,
    pf: *const f32,
    k: usize,
) {
    let l = ldx * 4;
    macro_rules! run {
        ($pf:expr) => {
            std::arch::asm!(
                "test {n4}, {n4}",
                "jz 3f",
                "2:",
                step!("0", "0"),
                step!("4", "64"),
                step!("8", "128"),
                step!("12", "192"),
                $pf,
                "add {a0}, 16",
                "add {a5}, 16",
                "add {a10}, 16",
                "add {bp}, 256",
                "add {pf}, 256",
                "dec {n4}",
                "jnz 2b",
                "3:",
                "test {n1}, {n1}",
                "jz 5f",
                "4:",
                step!("0", "0"),
                "add {a0}, 4",
                "add {a5}, 4",
                "add {a10}, 4",
                "add {bp}, 64",
                "add {pf}, 64",
                "dec {n1}",
                "jnz 4b",
                "5:",
                a0 = inout(reg) x => _,
                a5 = inout(reg) x.add(5 * ldx) => _,
                a10 = inout(reg) x.add(10 * ldx) => _,
                l = in(reg) l,
                l3 = in(reg) 3 * l,
                bp = inout(reg) b => _,
                pf = inout(reg) pf => _,
                koff = in(reg) k * PANEL * 4,
                n4 = inout(reg) k / 4 => _,
                n1 = inout(reg) k % 4 => _,
                inout("zmm0") acc[0][0],
                inout("zmm1") acc[0][1],
                inout("zmm2") acc[1][0],
                inout("zmm3") acc[1][1],
                inout("zmm4") acc[2][0],
                inout("zmm5") acc[2][1],
                inout("zmm6") acc[3][0],
                inout("zmm7") acc[3][1],
                inout("zmm8") acc[4][0],
                inout("zmm9") acc[4][1],
                inout("zmm10") acc[5][0],
                inout("zmm11") acc[5][1],
                inout("zmm12") acc[6][0],
                inout("zmm13") acc[6][1],
                inout("zmm14") acc[7][0],
                inout("zmm15") acc[7][1],
                inout("zmm16") acc[8][0],
                inout("zmm17") acc[8][1],
                inout("zmm18") acc[9][0],
                inout("zmm19") acc[9][1],
                inout("zmm20") acc[10][0],
                inout("zmm21") acc[10][1],
                inout("zmm22") acc[11][0],
                inout("zmm23") acc[11][1],
                inout("zmm24") acc[12][0],
                inout("zmm25") acc[12][1],
                inout("zmm26") acc[13][0],
                inout("zmm27") acc[13][1],
                out("zmm28") _,
                out("zmm29") _,
                out("zmm30") _,
                out("zmm31") _,
                options(nostack, readonly),
            )
        };
    }
    match LINES {
        1 => run!("prefetcht1 byte ptr [{pf}]"),
        2 => run!(concat!("prefetcht1 byte ptr [{pf}]\n", "prefetcht1 byte ptr [{pf} + {koff}]")),
        4 => run!(concat!(
            "prefetcht1 byte ptr [{pf}]\n",
            "prefetcht1 byte ptr [{pf} + 128]\n",
            "prefetcht1 byte ptr [{pf} + {koff}]\n",
            "prefetcht1 byte ptr [{pf} + {koff} + 128]",
        )),
        _ => run!(concat!(
            "prefetcht1 byte ptr [{pf}]\n",
            "prefetcht1 byte ptr [{pf} + 64]\n",
            "prefetcht1 byte ptr [{pf} + 128]\n",
            "prefetcht1 byte ptr [{pf} + 192]\n",
            "prefetcht1 byte ptr [{pf} + {koff}]\n",
            "prefetcht1 byte ptr [{pf} + {koff} + 64]\n",
            "prefetcht1 byte ptr [{pf} + {koff} + 128]\n",
            "prefetcht1 byte ptr [{pf} + {koff} + 192]",
        )),
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
