//! The AVX-512 kernel's assembly ([`super::avx512`]): a full tile's reduction loop
//! ([`full_tile_loop`]), a row block's full tiles of one pair without an epilogue
//! ([`full_tiles`]), and how the tiles of a row block share the prefetch of the next
//! pair ([`Prefetch`]). The tile is [`MR`] rows × two 16-column panels: 28 of the 32
//! `zmm` registers hold accumulators, two a step's panel values, two the broadcasts.

use super::panels::{Tiles, PANEL};
use std::arch::x86_64::*;
use std::mem::offset_of;

/// Rows per tile.
pub const MR: usize = 14;

/// Lines of the next panel pair prefetched per iteration of the full tiles' loop, shared
/// among a row block's tiles ([`Prefetch`]).
pub(super) const SPREAD: usize = 8;

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
pub(super) struct Prefetch {
    pub lines: usize,
    pub lane: usize,
}

impl Prefetch {
    /// Lines per tile for a block of `tiles` tiles.
    pub fn lines(tiles: usize) -> usize {
        match tiles {
            8.. => 1,
            4..=7 => 2,
            2 | 3 => 4,
            _ => 8,
        }
    }

    /// Floats from the next pair's start to this tile's first line.
    pub fn offset(self, k: usize) -> usize {
        match self.lines {
            1 => (self.lane % 4) * PANEL + (self.lane / 4) * PANEL * k,
            _ => self.lane * PANEL,
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

/// Four steps of the reduction (indices `p..p + 4`) with the prefetch text `$pf`, the
/// row and panel pointers and the prefetch pointer moved on by four.
macro_rules! four_steps {
    ($pf:expr) => {
        concat!(
            step!("0", "0"),
            step!("4", "64"),
            step!("8", "128"),
            step!("12", "192"),
            $pf,
            "\n",
            "add {a0}, 16\n",
            "add {a5}, 16\n",
            "add {a10}, 16\n",
            "add {bp}, 256\n",
            "add {pf}, 256\n",
        )
    };
}

/// One step of the reduction, the row and panel pointers moved on by one.
macro_rules! one_step {
    () => {
        concat!(step!("0", "0"), "add {a0}, 4\n", "add {a5}, 4\n", "add {a10}, 4\n", "add {bp}, 64\n")
    };
}

/// `$run!` (a local macro wrapping one of the loops' `asm!`) with `$lines` (1, 2, 4 or
/// 8) prefetches of the next pair an iteration from `{pf}` ([`Prefetch`]): one line; one
/// line of each panel; two of each, 128 bytes apart; four of each.
macro_rules! with_prefetch {
    ($run:ident, $lines:expr) => {
        match $lines {
            1 => $run!("prefetcht1 byte ptr [{pf}]"),
            2 => $run!(concat!("prefetcht1 byte ptr [{pf}]\n", "prefetcht1 byte ptr [{pf} + {koff}]")),
            4 => $run!(concat!(
                "prefetcht1 byte ptr [{pf}]\n",
                "prefetcht1 byte ptr [{pf} + 128]\n",
                "prefetcht1 byte ptr [{pf} + {koff}]\n",
                "prefetcht1 byte ptr [{pf} + {koff} + 128]",
            )),
            _ => $run!(concat!(
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
    };
}

/// The reduction loop of a full tile (14 rows × two panels) in assembly, the sums of
/// the compiled tile's loop ([`super::avx512`]) in the same order. Rows of `x` are
/// addressed from three bases with the row stride and three times it as scaled indices,
/// so a step spends no instruction on addresses; four steps per iteration, their
/// offsets as displacements. (Compiled from the intrinsics, the fourteen row addresses
/// took an `add` each per step, which compete with the FMAs for their ports; unrolled,
/// LLVM hoisted the broadcasts and spilled.) Each iteration prefetches `LINES` lines of
/// the next pair from `pf` into L2 (see [`Prefetch`]).
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(super) unsafe fn full_tile_loop<const LINES: usize>(
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
                four_steps!($pf),
                "dec {n4}",
                "jnz 2b",
                "3:",
                "test {n1}, {n1}",
                "jz 5f",
                "4:",
                one_step!(),
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
    with_prefetch!(run, LINES)
}

/// Every accumulator row of a tile set to the first row's (`zmm0`, `zmm1`).
macro_rules! accumulators_from_zmm0_zmm1 {
    () => {
        concat!(
            "vmovaps zmm2, zmm0\n",
            "vmovaps zmm3, zmm1\n",
            "vmovaps zmm4, zmm0\n",
            "vmovaps zmm5, zmm1\n",
            "vmovaps zmm6, zmm0\n",
            "vmovaps zmm7, zmm1\n",
            "vmovaps zmm8, zmm0\n",
            "vmovaps zmm9, zmm1\n",
            "vmovaps zmm10, zmm0\n",
            "vmovaps zmm11, zmm1\n",
            "vmovaps zmm12, zmm0\n",
            "vmovaps zmm13, zmm1\n",
            "vmovaps zmm14, zmm0\n",
            "vmovaps zmm15, zmm1\n",
            "vmovaps zmm16, zmm0\n",
            "vmovaps zmm17, zmm1\n",
            "vmovaps zmm18, zmm0\n",
            "vmovaps zmm19, zmm1\n",
            "vmovaps zmm20, zmm0\n",
            "vmovaps zmm21, zmm1\n",
            "vmovaps zmm22, zmm0\n",
            "vmovaps zmm23, zmm1\n",
            "vmovaps zmm24, zmm0\n",
            "vmovaps zmm25, zmm1\n",
            "vmovaps zmm26, zmm0\n",
            "vmovaps zmm27, zmm1\n",
        )
    };
}

/// One output row's two registers `zmm$lo`, `zmm$hi` stored at `{d}`, which then steps
/// by the row stride `{i}`.
macro_rules! store_row {
    ($lo:literal, $hi:literal) => {
        concat!(
            "vmovups zmmword ptr [{d}], zmm",
            $lo,
            "\n",
            "vmovups zmmword ptr [{d} + 64], zmm",
            $hi,
            "\n",
            "add {d}, {i}\n",
        )
    };
}

/// A tile's fourteen rows stored ([`store_row`]).
macro_rules! store_rows {
    () => {
        concat!(
            store_row!("0", "1"),
            store_row!("2", "3"),
            store_row!("4", "5"),
            store_row!("6", "7"),
            store_row!("8", "9"),
            store_row!("10", "11"),
            store_row!("12", "13"),
            store_row!("14", "15"),
            store_row!("16", "17"),
            store_row!("18", "19"),
            store_row!("20", "21"),
            store_row!("22", "23"),
            store_row!("24", "25"),
            store_row!("26", "27"),
        )
    };
}

/// Zeros for a bias-less call of [`full_tiles`]: a pair's 32 columns.
#[repr(align(64))]
struct Zeros([f32; 2 * PANEL]);
static ZEROS: Zeros = Zeros([0.0; 2 * PANEL]);

/// What [`full_tiles`] reads from memory between its tiles (its loop holds twelve general
/// registers, near all that inline assembly may take beside the frame pointer and
/// LLVM's `rbx`), in bytes where an offset: the pair, the bias (or [`ZEROS`]), the
/// output row stride, a row of the reduction (to step `x` back), fourteen rows of `x`,
/// the loops' counts, the number of tiles, and each prefetch lane's first line of the
/// next pair. The assembly addresses the fields by `offset_of!`.
#[repr(C)]
struct Between {
    pair: *const f32,
    bias: *const f32,
    ly: usize,
    k4: usize,
    l14: usize,
    n4: usize,
    n1: usize,
    lane_mask: usize,
    tiles: usize,
    pf: [*const f32; SPREAD],
}

impl Between {
    /// For `n` tiles of `t` on the pair at `b` from column `c`, prefetching the pair at
    /// `next` in `lines` lines a tile.
    unsafe fn new(t: &Tiles, (b, next): (*const f32, *const f32), c: usize, n: usize, lines: usize) -> Between {
        let k = t.k;
        let period = SPREAD / lines;
        Between {
            pair: b,
            bias: if t.bias.is_null() { ZEROS.0.as_ptr() } else { t.bias.add(c) },
            ly: t.ldy * 4,
            k4: k * 4,
            l14: MR * t.ldx * 4,
            n4: k / 4,
            n1: k % 4,
            lane_mask: period - 1,
            tiles: n,
            pf: std::array::from_fn(|lane| next.wrapping_add(Prefetch { lines, lane: lane % period }.offset(k))),
        }
    }
}

/// `n` full tiles (14 rows × one whole pair) from row `r` down, without an epilogue,
/// in one piece of assembly: per tile the accumulators from the bias (or zeros),
/// [`full_tile_loop`]'s reduction (the same steps, so the same sums in the same order),
/// the 28 stores, then the next fourteen rows, with no compiled code between tiles. The
/// compiled tile spent ~10% of a 64-long reduction (attention's scores) on its set-up
/// and stores (fourteen output addresses multiplied out and spilled, the accumulators
/// moved in from the stack). Tile `j` prefetches the next pair's lines of lane `j` of
/// the block's `SPREAD / lines` ([`Prefetch`]), as the compiled tiles do, so with a
/// row block's last tile (compiled, where rows are left over) the lanes cover the pair.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn full_tiles(
    t: &Tiles,
    (b, next): (*const f32, *const f32),
    r: usize,
    c: usize,
    n: usize,
    lines: usize,
) {
    debug_assert!(t.k > 0 && n > 0);
    let k = t.k;
    let between = Between::new(t, (b, next), c, n, lines);
    let (x, d) = (t.x.add(r * t.ldx), t.dst.add(r * t.ldy + c - t.c0));
    macro_rules! run {
        ($pf:expr) => {
            std::arch::asm!(
                "2:",
                "mov {i}, qword ptr [{ctx} + {o_bias}]",
                "vmovups zmm0, zmmword ptr [{i}]",
                "vmovups zmm1, zmmword ptr [{i} + 64]",
                accumulators_from_zmm0_zmm1!(),
                "mov {bp}, qword ptr [{ctx} + {o_pair}]",
                "mov {i}, qword ptr [{ctx} + {o_tiles}]",
                "sub {i}, {n}",
                "and {i}, qword ptr [{ctx} + {o_lane_mask}]",
                "mov {pf}, qword ptr [{ctx} + {i}*8 + {o_pf}]",
                "lea {a5}, [{a0} + {l}*4]",
                "add {a5}, {l}",
                "lea {a10}, [{a5} + {l}*4]",
                "add {a10}, {l}",
                "mov {i}, qword ptr [{ctx} + {o_n4}]",
                "test {i}, {i}",
                "jz 4f",
                "3:",
                four_steps!($pf),
                "dec {i}",
                "jnz 3b",
                "4:",
                "mov {i}, qword ptr [{ctx} + {o_n1}]",
                "test {i}, {i}",
                "jz 6f",
                "5:",
                one_step!(),
                "dec {i}",
                "jnz 5b",
                "6:",
                "mov {i}, qword ptr [{ctx} + {o_ly}]",
                store_rows!(),
                "sub {a0}, qword ptr [{ctx} + {o_k4}]",
                "add {a0}, qword ptr [{ctx} + {o_l14}]",
                "dec {n}",
                "jnz 2b",
                ctx = in(reg) &between,
                o_pair = const offset_of!(Between, pair),
                o_bias = const offset_of!(Between, bias),
                o_ly = const offset_of!(Between, ly),
                o_k4 = const offset_of!(Between, k4),
                o_l14 = const offset_of!(Between, l14),
                o_n4 = const offset_of!(Between, n4),
                o_n1 = const offset_of!(Between, n1),
                o_lane_mask = const offset_of!(Between, lane_mask),
                o_tiles = const offset_of!(Between, tiles),
                o_pf = const offset_of!(Between, pf),
                a0 = inout(reg) x => _,
                a5 = out(reg) _,
                a10 = out(reg) _,
                l = in(reg) t.ldx * 4,
                l3 = in(reg) 3 * t.ldx * 4,
                bp = out(reg) _,
                pf = out(reg) _,
                koff = in(reg) k * PANEL * 4,
                i = out(reg) _,
                d = inout(reg) d => _,
                n = inout(reg) n => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
                out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
                options(nostack),
            )
        };
    }
    with_prefetch!(run, lines)
}
