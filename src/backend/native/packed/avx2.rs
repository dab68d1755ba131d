//! The AVX2+FMA kernel of [`super::linear`]: tiles of 6 rows × one 16-column panel in
//! 12 of the 16 `ymm` registers (two per row), the FMA units' peak on this register
//! file; a full tile's reduction loop in assembly ([`full_tile_loop`]), a partial one's
//! from intrinsics; the GELU epilogue on a tile's registers before they are stored
//! ([`super::gelu::gelu256`]). Without the GELU, a block's full tiles of one panel run
//! in one piece of assembly ([`full_tiles`]), accumulators, reduction and stores.
//! While a panel's tiles run they prefetch the next panel ([`run256`]).
//! Attention's keys go into panels through [`transpose16`].

use super::gelu::gelu256;
use super::panels::{row_block, Panels, Tiles, MR as MR256, PANEL};
use std::arch::x86_64::*;

/// Every tile, row blocks outermost so a block of `x` stays in L2 while the panels pass
/// over it. A forward reads each weight once, from memory, and a panel's first tile
/// waited on it: so every full tile prefetches, once per four reduction steps, one line
/// of the panel after its own (the next in memory), line `4i + lane` at iteration `i`,
/// the lane turning with the tile, so four successive tiles of a block cover the whole
/// next panel, one line per 24 cycles of FMAs. (A block of fewer than four tiles leaves
/// lines to the hardware; so may the step from [`full_tiles`], whose lane is the count
/// of tiles left, to the compiled last tile, whose lane is its index.) (Paired forward
/// by forward against the kernel without it on a 2-core Zen 3, one thread: ViT-S took
/// 0.946 [0.897–0.982] of the time at batch 1 and 0.967 [0.926–1.002] at batch 8,
/// medians and quartiles of 30 rounds' ratios.) The address is a hint only: past the
/// last panel of the weight it is never read.
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
            let full = (r1 - r0) / MR256;
            if !t.gelu && cols == PANEL && t.k > 0 && full > 0 {
                full_tiles(t, b, r0, c, full);
                r = r0 + full * MR256;
            }
            while r < r1 {
                // Rows left over after the full tiles go as one more full tile ending
                // at the block's last row, over rows the call already wrote: the same
                // sums in the same order give them the same bits again (as in the
                // AVX-512 kernel). Only a call of fewer than six rows runs a partial
                // tile, on the compiled loop.
                let left = r1 - r;
                let (top, rows) = if left >= MR256 || r1 < MR256 { (r, left.min(MR256)) } else { (r1 - MR256, MR256) };
                let lane = (r - r0) / MR256 % 4;
                if t.gelu {
                    tiles::<true>(t, b, top, rows, c, cols, lane);
                } else {
                    tiles::<false>(t, b, top, rows, c, cols, lane);
                }
                r += left.min(MR256);
            }
            c += cols;
        }
    }
}

/// One tile of `rows` (1..=6) rows, the GELU applied when `GELU`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tiles<const GELU: bool>(t: &Tiles, b: *const f32, r: usize, rows: usize, c: usize, cols: usize, lane: usize) {
    match rows {
        1 => tile256::<1, GELU>(t, b, r, c, cols, lane),
        2 => tile256::<2, GELU>(t, b, r, c, cols, lane),
        3 => tile256::<3, GELU>(t, b, r, c, cols, lane),
        4 => tile256::<4, GELU>(t, b, r, c, cols, lane),
        5 => tile256::<5, GELU>(t, b, r, c, cols, lane),
        _ => tile256::<6, GELU>(t, b, r, c, cols, lane),
    }
}

/// Rows `r..r + MR`, columns `c..c + cols` (`cols` ≤ 16) in two 8-lane registers
/// per row: accumulators start at the bias, one FMA per reduction index, then the GELU
/// where `GELU`; a partial tile goes out through a stack tile. A full tile prefetches
/// the next panel's lines `4i + lane` ([`run256`]).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile256<const MR: usize, const GELU: bool>(
    t: &Tiles,
    b: *const f32,
    r: usize,
    c: usize,
    cols: usize,
    lane: usize,
) {
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
    if MR == MR256 {
        // SAFETY: `acc` is `[[__m256; 2]; MR]` and MR is 6 here.
        let acc = &mut *acc.as_mut_ptr().cast::<[[__m256; 2]; MR256]>();
        full_tile_loop(acc, t.x.add(r * t.ldx), t.ldx, b, k, (k + lane) * PANEL * 4);
    } else {
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

/// The six rows' broadcasts at reduction index `p + $d4 / 4` and their 12 FMAs, after
/// the panel's two registers at byte offsets `$lo` and `$hi`.
macro_rules! step256 {
    ($d4:literal, $lo:literal, $hi:literal) => {
        concat!(
            concat!("vmovaps ymm12, ymmword ptr [{bp} + ", $lo, "]\n"),
            concat!("vmovaps ymm13, ymmword ptr [{bp} + ", $hi, "]\n"),
            concat!("vbroadcastss ymm14, dword ptr [{a0} + ", $d4, "]\n"),
            "vfmadd231ps ymm0, ymm12, ymm14\n",
            "vfmadd231ps ymm1, ymm13, ymm14\n",
            concat!("vbroadcastss ymm15, dword ptr [{a0} + {l} + ", $d4, "]\n"),
            "vfmadd231ps ymm2, ymm12, ymm15\n",
            "vfmadd231ps ymm3, ymm13, ymm15\n",
            concat!("vbroadcastss ymm14, dword ptr [{a0} + {l}*2 + ", $d4, "]\n"),
            "vfmadd231ps ymm4, ymm12, ymm14\n",
            "vfmadd231ps ymm5, ymm13, ymm14\n",
            concat!("vbroadcastss ymm15, dword ptr [{a3} + ", $d4, "]\n"),
            "vfmadd231ps ymm6, ymm12, ymm15\n",
            "vfmadd231ps ymm7, ymm13, ymm15\n",
            concat!("vbroadcastss ymm14, dword ptr [{a3} + {l} + ", $d4, "]\n"),
            "vfmadd231ps ymm8, ymm12, ymm14\n",
            "vfmadd231ps ymm9, ymm13, ymm14\n",
            concat!("vbroadcastss ymm15, dword ptr [{a3} + {l}*2 + ", $d4, "]\n"),
            "vfmadd231ps ymm10, ymm12, ymm15\n",
            "vfmadd231ps ymm11, ymm13, ymm15\n",
        )
    };
}

/// Four reduction steps ([`step256`]), a prefetch of the line `{dl}` bytes past the
/// panel's, and the row and panel pointers moved past them: the body of both assembly
/// loops.
macro_rules! four_steps256 {
    () => {
        concat!(
            step256!("0", "0", "32"),
            step256!("4", "64", "96"),
            step256!("8", "128", "160"),
            step256!("12", "192", "224"),
            "prefetcht1 byte ptr [{bp} + {dl}]\n",
            "add {a0}, 16\n",
            "add {a3}, 16\n",
            "add {bp}, 256\n",
        )
    };
}

/// One reduction step ([`step256`]) and the row and panel pointers moved past it: the
/// body of both assembly loops' tails (a reduction that is not whole fours).
macro_rules! one_step256 {
    () => {
        concat!(step256!("0", "0", "32"), "add {a0}, 4\n", "add {a3}, 4\n", "add {bp}, 64\n",)
    };
}

/// The reduction loop of a full tile (6 rows × one panel) in assembly, the sums of
/// [`tile256`]'s loop in the same order (one FMA per accumulator and reduction index,
/// in increasing order). Rows of `x` are addressed from two bases (rows 0 and 3) with
/// the row stride as a scaled index, so a step spends no instruction on addresses;
/// four steps per iteration, their offsets as displacements. (Compiled from the
/// intrinsics, each step took an `add` per row address, a chain the broadcasts waited
/// on, and the loop's own three instructions.) `ahead`: bytes from the panel's line to
/// the line prefetched with each four steps.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn full_tile_loop(
    acc: &mut [[__m256; 2]; MR256],
    x: *const f32,
    ldx: usize,
    b: *const f32,
    k: usize,
    ahead: usize,
) {
    std::arch::asm!(
        "test {n4}, {n4}",
        "jz 3f",
        "2:",
        four_steps256!(),
        "dec {n4}",
        "jnz 2b",
        "3:",
        "test {n1}, {n1}",
        "jz 5f",
        "4:",
        one_step256!(),
        "dec {n1}",
        "jnz 4b",
        "5:",
        a0 = inout(reg) x => _,
        a3 = inout(reg) x.add(3 * ldx) => _,
        l = in(reg) ldx * 4,
        bp = inout(reg) b => _,
        dl = in(reg) ahead,
        n4 = inout(reg) k / 4 => _,
        n1 = inout(reg) k % 4 => _,
        inout("ymm0") acc[0][0],
        inout("ymm1") acc[0][1],
        inout("ymm2") acc[1][0],
        inout("ymm3") acc[1][1],
        inout("ymm4") acc[2][0],
        inout("ymm5") acc[2][1],
        inout("ymm6") acc[3][0],
        inout("ymm7") acc[3][1],
        inout("ymm8") acc[4][0],
        inout("ymm9") acc[4][1],
        inout("ymm10") acc[5][0],
        inout("ymm11") acc[5][1],
        out("ymm12") _,
        out("ymm13") _,
        out("ymm14") _,
        out("ymm15") _,
        options(nostack, readonly),
    );
}

/// Zeros where a call has no bias: [`full_tiles`] starts its accumulators from 16
/// floats in memory.
#[repr(C, align(64))]
struct Zeros([f32; PANEL]);
static ZEROS: Zeros = Zeros([0.0; PANEL]);

/// `n` full tiles of one whole panel (16 columns) from row `r` down, without an
/// epilogue, in one piece of assembly: per tile the accumulators from the bias (or
/// zeros), [`full_tile_loop`]'s reduction (the same steps, so the same sums in the same
/// order), the twelve stores, then the next six rows, with no compiled code between
/// tiles (set-up, the stack tile's checks, the loop in [`run256`]): that cost weighs
/// most where the reduction is short, as in attention's scores (64 long). Any positive
/// reduction length: four steps at a time, then the rest one at a time, as
/// [`full_tile_loop`] takes them (attention's weighted values reduce over the keys,
/// 197 for ViT's tokens). Each tile prefetches the next panel's lines `4i + lane`, the
/// lane the count of tiles left modulo 4 ([`run256`]).
#[target_feature(enable = "avx2,fma")]
unsafe fn full_tiles(t: &Tiles, b: *const f32, r: usize, c: usize, n: usize) {
    debug_assert!(t.k > 0 && n > 0);
    let bias = if t.bias.is_null() { ZEROS.0.as_ptr() } else { t.bias.add(c) };
    std::arch::asm!(
        "2:",
        "vmovups ymm0, ymmword ptr [{bias}]",
        "vmovups ymm1, ymmword ptr [{bias} + 32]",
        "vmovaps ymm2, ymm0",
        "vmovaps ymm3, ymm1",
        "vmovaps ymm4, ymm0",
        "vmovaps ymm5, ymm1",
        "vmovaps ymm6, ymm0",
        "vmovaps ymm7, ymm1",
        "vmovaps ymm8, ymm0",
        "vmovaps ymm9, ymm1",
        "vmovaps ymm10, ymm0",
        "vmovaps ymm11, ymm1",
        "mov {a0}, {x}",
        "lea {a3}, [{x} + {l}*2]",
        "add {a3}, {l}",
        "mov {bp}, {b}",
        "mov {dl}, {n}",
        "and {dl}, 3",
        "shl {dl}, 6",
        "add {dl}, {k64}",
        "mov {i}, {k64}",
        "shr {i}, 8",
        "jz 4f",
        "3:",
        four_steps256!(),
        "dec {i}",
        "jnz 3b",
        "4:",
        "mov {i}, {k64}",
        "shr {i}, 6",
        "and {i}, 3",
        "jz 6f",
        "5:",
        one_step256!(),
        "dec {i}",
        "jnz 5b",
        "6:",
        "vmovups ymmword ptr [{d}], ymm0",
        "vmovups ymmword ptr [{d} + 32], ymm1",
        "vmovups ymmword ptr [{d} + {ly}], ymm2",
        "vmovups ymmword ptr [{d} + {ly} + 32], ymm3",
        "vmovups ymmword ptr [{d} + {ly}*2], ymm4",
        "vmovups ymmword ptr [{d} + {ly}*2 + 32], ymm5",
        "lea {d}, [{d} + {ly}*2]",
        "add {d}, {ly}",
        "vmovups ymmword ptr [{d}], ymm6",
        "vmovups ymmword ptr [{d} + 32], ymm7",
        "vmovups ymmword ptr [{d} + {ly}], ymm8",
        "vmovups ymmword ptr [{d} + {ly} + 32], ymm9",
        "vmovups ymmword ptr [{d} + {ly}*2], ymm10",
        "vmovups ymmword ptr [{d} + {ly}*2 + 32], ymm11",
        "lea {d}, [{d} + {ly}*2]",
        "add {d}, {ly}",
        "lea {x}, [{x} + {l}*4]",
        "lea {x}, [{x} + {l}*2]",
        "dec {n}",
        "jnz 2b",
        x = inout(reg) t.x.add(r * t.ldx) => _,
        l = in(reg) t.ldx * 4,
        b = in(reg) b,
        k64 = in(reg) t.k * PANEL * 4,
        bias = in(reg) bias,
        d = inout(reg) t.dst.add(r * t.ldy + c - t.c0) => _,
        ly = in(reg) t.ldy * 4,
        n = inout(reg) n => _,
        a0 = out(reg) _,
        a3 = out(reg) _,
        bp = out(reg) _,
        i = out(reg) _,
        dl = out(reg) _,
        out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
        out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
        out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
        out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
        options(nostack),
    );
}

/// A 16 × 16 block transposed, times a scale, as four 8 × 8 blocks in registers:
/// `dst[p * PANEL + c] = scale · src[c * ld + p]` for `c, p < 16` (attention's keys into
/// panels; [`super::avx512::transpose16`] at AVX-512, the same products in the same
/// places), where value by value a panel of 16 keys × 64 took 1,024 scalar stores.
///
/// # Safety
/// The CPU must have AVX2 and FMA (the kernel's level); `src` valid for 16 rows of 16
/// floats at stride `ld`, `dst` for 256 floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transpose16(src: *const f32, ld: usize, dst: *mut f32, scale: f32) {
    let s = _mm256_set1_ps(scale);
    for cb in [0, 8] {
        for pb in [0, 8] {
            let r: [__m256; 8] =
                std::array::from_fn(|c| _mm256_mul_ps(_mm256_loadu_ps(src.add((cb + c) * ld + pb)), s));
            // Rows 2i, 2i + 1 interleaved (within each 128-bit half), then by pairs:
            // u[4h + m] holds rows 4h..4h + 4 at columns m and m + 4.
            let t: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm256_unpacklo_ps(a, b)
                } else {
                    _mm256_unpackhi_ps(a, b)
                }
            });
            let u: [__m256; 8] = std::array::from_fn(|i| {
                let (h, m) = (i / 4 * 4, i % 4);
                let (a, b) = (t[h + m / 2], t[h + 2 + m / 2]);
                if m % 2 == 0 {
                    _mm256_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm256_shuffle_ps::<0xee>(a, b)
                }
            });
            // Column m of the eight rows from the low halves, column m + 4 from the high.
            for m in 0..4 {
                let lo = _mm256_permute2f128_ps::<0x20>(u[m], u[4 + m]);
                let hi = _mm256_permute2f128_ps::<0x31>(u[m], u[4 + m]);
                _mm256_storeu_ps(dst.add((pb + m) * PANEL + cb), lo);
                _mm256_storeu_ps(dst.add((pb + m + 4) * PANEL + cb), hi);
            }
        }
    }
}
