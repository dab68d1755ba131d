//! Multi-head attention per (batch, head), straight from strided q/k/v views (a fused
//! qkv buffer's columns) into the head's columns of a `[B, Tq, Dv]` output: scores by
//! one GEMM with the `1/√d` scale folded in, the key mask added as the most negative
//! f32 (as LibTorch's backend and Hugging Face do, so a row with every key masked
//! averages the values instead of producing NaN), a softmax per row, one GEMM for the
//! weighted values. The `[Tq, Tk]` score matrix of a head is per-thread scratch.
//!
//! The packed path ([`head_packed`]) runs both products on the packed linear kernel
//! ([`super::packed`]): the head's keys (the scale folded in) and values are packed
//! into panels once, then per block of [`query_rows`] queries the scores, a softmax per
//! row while the block is in L2, and the block's output rows. The plain path's score
//! matrix outgrows L2 for long sequences (VideoMAE's 1568 tokens: 9.8 MB a head), so
//! it is written and read twice more from L3, and its general GEMM packs both operands
//! on every call. Measured in one process on a 2-core Sapphire Rapids, twelve heads,
//! fastest of eleven rounds alternated, it took 0.93, 0.88 and 0.91 of the plain path's
//! time at 197, 1214 and 1568 tokens, so [`AttentionPath::Auto`] takes it wherever the
//! packed kernel runs (AVX2 with FMA, AVX-512). Its scratch grows with the keys, not
//! their square.
//!
//! The blocked path never forms the whole score matrix either: per block of [`BQ`]
//! queries it walks the keys [`BK`] at a time with an online softmax (the running row
//! maximum and sum, the partial output rescaled when the maximum grows), so its scratch
//! is a few hundred KiB. Measured on a 2-core AMD EPYC (16 MiB L3, `bench_native.sh`
//! part 8) it was no faster than the plain path at 197, 1214 and 1568 tokens (0.98–1.08×
//! of its time: its blocks re-pack the keys and values per query block), so `Auto`
//! takes it only without the packed kernel and where memory decides: from
//! [`BLOCKED_FROM`] keys, where one head's score matrix passes 64 MiB. All paths mask
//! alike; their sums differ by rounding only.

use super::gemm::{gemm, gemm_raw, Operand};
use super::isa::l2_bytes;
use super::math::{self, SimdLevel};
use super::packed::{self, pack_columns, pack_rows, packed_len, Panels, PANEL};
use super::program::{AttentionKernel, Epilogue};

/// Which attention kernel the native backend runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionPath {
    /// Packed where the CPU has the packed kernel; otherwise blocked from
    /// [`BLOCKED_FROM`] keys, plain below.
    #[default]
    Auto,
    Plain,
    Blocked,
    Packed,
}

impl AttentionPath {
    /// The kernel for attention over `tk` keys at `level`; where the packed linear
    /// kernel is missing, `Packed` comes to the blocked kernel (the same bounded scratch).
    pub fn kernel(self, tk: usize, level: SimdLevel) -> AttentionKernel {
        let packs = packed::available(level);
        match self {
            AttentionPath::Auto if packs => AttentionKernel::Packed,
            AttentionPath::Auto if tk >= BLOCKED_FROM => AttentionKernel::Blocked,
            AttentionPath::Auto | AttentionPath::Plain => AttentionKernel::Plain,
            AttentionPath::Packed if packs => AttentionKernel::Packed,
            AttentionPath::Blocked | AttentionPath::Packed => AttentionKernel::Blocked,
        }
    }

    /// Per-thread scratch (f32 elements) of `kernel` for one head.
    pub fn scratch(kernel: AttentionKernel, tq: usize, tk: usize, dh: usize, dvh: usize) -> usize {
        match kernel {
            AttentionKernel::Plain => tq * tk,
            AttentionKernel::Blocked => blocked_scratch(dvh),
            AttentionKernel::Packed => packed_scratch(tk, dh, dvh),
        }
    }
}

/// Keys from which [`AttentionPath::Auto`] takes the blocked path (a 4096² score
/// matrix is 64 MiB per thread).
pub const BLOCKED_FROM: usize = 4096;
/// Queries and keys per block of the blocked path.
pub const BQ: usize = 256;
pub const BK: usize = 256;

/// Per-thread scratch (f32 elements) of the blocked path for `dvh` value columns.
pub fn blocked_scratch(dvh: usize) -> usize {
    BQ * BK + BQ * dvh + 2 * BQ
}

/// Rows of a score block of the packed kernel over `tk` keys: a quarter of a core's L2
/// (128 KiB where the CPU does not say), whole multiples of both packed kernels' tile
/// heights (14 and 6), from one such multiple (42 rows) to twelve (504).
pub fn query_rows(tk: usize) -> usize {
    let bytes = l2_bytes().unwrap_or(512 * 1024) / 4;
    (bytes / (4 * tk.next_multiple_of(PANEL)) / QUERY_STEP).clamp(1, MAX_QUERY_ROWS / QUERY_STEP) * QUERY_STEP
}

/// [`query_rows`]' unit: a multiple of both packed kernels' tile heights.
const QUERY_STEP: usize = 42;
/// The most rows [`query_rows`] gives.
const MAX_QUERY_ROWS: usize = 12 * QUERY_STEP;

/// Per-thread scratch (f32 elements) of the packed kernel: a head's keys and values as
/// panels, the mask as a bias row, one score block ([`query_rows`]); each part whole
/// panels' lines, so every part stays 64-byte aligned.
pub fn packed_scratch(tk: usize, dh: usize, dvh: usize) -> usize {
    let lds = tk.next_multiple_of(PANEL);
    packed_len(tk, dh) + packed_len(dvh, tk) + lds + query_rows(tk) * lds
}

/// One head's operands: slices starting at the head's first element, row strides.
pub struct Head<'a> {
    pub q: &'a [f32],
    pub ldq: usize,
    pub k: &'a [f32],
    pub ldk: usize,
    pub v: &'a [f32],
    pub ldv: usize,
    /// Per key: attend (true) or masked; `None` attends to all.
    pub keep: Option<&'a dyn Fn(usize) -> bool>,
}

/// `out[tq, dvh]` (row stride `ldo`, `out_len` elements from `out`) =
/// softmax(scale · q kᵀ + mask) · v for one head.
///
/// # Safety
/// The `tq × dvh` window at `out` must be valid for writes and this call's alone.
#[allow(clippy::too_many_arguments)]
pub unsafe fn head(
    h: &Head,
    tq: usize,
    tk: usize,
    dh: usize,
    dvh: usize,
    scale: f32,
    scores: &mut [f32],
    out: *mut f32,
    out_len: usize,
    ldo: usize,
) {
    let s = &mut scores[..tq * tk];
    gemm(tq, tk, dh, scale, Operand::rows(h.q, h.ldq), Operand::transposed(h.k, h.ldk), s, tk, false);
    mask(s, tk, 0, h.keep);
    for row in s.chunks_exact_mut(tk) {
        math::softmax_row(row);
    }
    gemm_raw(tq, dvh, tk, 1.0, Operand::rows(s, tk), Operand::rows(h.v, h.ldv), out, out_len, ldo, false);
}

/// Add the most negative f32 to the scores (rows of `cols`, keys `k0..`) of every
/// key `keep` masks.
fn mask(scores: &mut [f32], cols: usize, k0: usize, keep: Option<&dyn Fn(usize) -> bool>) {
    let Some(keep) = keep else { return };
    for j in (0..cols).filter(|&j| !keep(k0 + j)) {
        for row in scores.chunks_exact_mut(cols) {
            row[j] += f32::MIN;
        }
    }
}

/// [`head`] without the full score matrix (see the module doc); `scratch` holds
/// [`blocked_scratch`]`(dvh)` elements.
///
/// # Safety
/// As [`head`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn head_blocked(
    h: &Head,
    tq: usize,
    tk: usize,
    dh: usize,
    dvh: usize,
    scale: f32,
    scratch: &mut [f32],
    out: *mut f32,
    out_len: usize,
    ldo: usize,
) {
    assert!(tq == 0 || (tq - 1) * ldo + dvh <= out_len, "attention: output window too short");
    let (s, rest) = scratch.split_at_mut(BQ * BK);
    let (acc, rest) = rest.split_at_mut(BQ * dvh);
    let (max, sum) = rest[..2 * BQ].split_at_mut(BQ);
    for q0 in (0..tq).step_by(BQ) {
        let bq = BQ.min(tq - q0);
        acc[..bq * dvh].fill(0.0);
        max[..bq].fill(f32::NEG_INFINITY);
        sum[..bq].fill(0.0);
        for k0 in (0..tk).step_by(BK) {
            let bk = BK.min(tk - k0);
            let sb = &mut s[..bq * bk];
            let q = Operand::rows(&h.q[q0 * h.ldq..], h.ldq);
            gemm(bq, bk, dh, scale, q, Operand::transposed(&h.k[k0 * h.ldk..], h.ldk), sb, bk, false);
            mask(sb, bk, k0, h.keep);
            for (i, row) in sb.chunks_exact_mut(bk).enumerate() {
                let m = row.iter().fold(max[i], |m, &v| if v > m { v } else { m });
                // The running sum and output were taken against the old maximum.
                let carry = if max[i] == f32::NEG_INFINITY { 0.0 } else { (max[i] - m).exp() };
                for v in row.iter_mut() {
                    *v -= m;
                }
                math::exp_inplace(row);
                sum[i] = sum[i] * carry + row.iter().sum::<f32>();
                max[i] = m;
                if carry != 1.0 {
                    for a in &mut acc[i * dvh..(i + 1) * dvh] {
                        *a *= carry;
                    }
                }
            }
            gemm(bq, dvh, bk, 1.0, Operand::rows(sb, bk), Operand::rows(&h.v[k0 * h.ldv..], h.ldv), acc, dvh, true);
        }
        for i in 0..bq {
            let inv = 1.0 / sum[i];
            // SAFETY: inside the window (asserted above), which is this call's alone.
            let o = std::slice::from_raw_parts_mut(out.add((q0 + i) * ldo), dvh);
            for (o, a) in o.iter_mut().zip(&acc[i * dvh..(i + 1) * dvh]) {
                *o = a * inv;
            }
        }
    }
}

/// [`head`] on the packed linear kernel at `level` (one [`packed::available`]): the
/// head's keys (times `scale`) and values packed into panels once, then per block of
/// [`query_rows`] queries the scores by the kernel (the mask as its bias: 0 or the most
/// negative f32), a softmax's weights per row while the block is in L2 (unscaled), and
/// the block's output rows by the kernel again, each then divided by its row's sum
/// (dvh values a row where scaling the weights took tk). The plain path writes the
/// whole `[tq, tk]` score matrix and reads it twice more (VideoMAE's 1568 tokens: 9.8 MB a head, past L2), and its
/// general GEMM packs both operands per call. `scratch` holds
/// [`packed_scratch`]`(tk, dh, dvh)` elements.
///
/// # Safety
/// As [`head`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn head_packed(
    h: &Head,
    level: SimdLevel,
    (tq, tk, dh, dvh): (usize, usize, usize, usize),
    scale: f32,
    scratch: &mut [f32],
    out: *mut f32,
    out_len: usize,
    ldo: usize,
) {
    if tq == 0 || dvh == 0 {
        return;
    }
    assert!((tq - 1) * ldo + dvh <= out_len, "attention: output window too short");
    let lds = tk.next_multiple_of(PANEL);
    let (kp, rest) = scratch.split_at_mut(packed_len(tk, dh));
    let (vp, rest) = rest.split_at_mut(packed_len(dvh, tk));
    let (bias, s) = rest.split_at_mut(lds);
    pack_rows(level, kp, h.k, (h.ldk, tk, dh), scale);
    pack_columns(vp, h.v, h.ldv, tk, dvh);
    let bias = h.keep.map(|keep| {
        for (j, b) in bias.iter_mut().enumerate() {
            *b = if j >= tk || keep(j) { 0.0 } else { f32::MIN };
        }
        &bias[..]
    });
    // The keys as whole panels: the last one's padding columns are zero, so their
    // scores are their bias, in the score rows' padding, which nothing reads. Every
    // tile of the scores is then a full one (a partial last panel ran tile by tile).
    let (keys, values) = (Panels::new(kp, lds, dh), Panels::new(vp, dvh, tk));
    let bq = query_rows(tk);
    for q0 in (0..tq).step_by(bq) {
        let rows = bq.min(tq - q0);
        let sb = &mut s[..rows * lds];
        let dst = (sb.as_mut_ptr(), sb.len(), lds);
        packed::linear(level, rows, &h.q[q0 * h.ldq..], h.ldq, keys, (0, lds), bias, dst, Epilogue::None);
        // The weights unscaled: each output row is scaled instead (dvh values, not tk).
        let mut inv = [0f32; MAX_QUERY_ROWS];
        for (row, inv) in sb.chunks_exact_mut(lds).zip(&mut inv) {
            *inv = 1.0 / math::softmax_weights(&mut row[..tk]);
        }
        // SAFETY: rows q0.. of the window, which is this call's alone.
        let o = (out.add(q0 * ldo), out_len - q0 * ldo, ldo);
        packed::linear(level, rows, sb, lds, values, (0, dvh), None, o, Epilogue::None);
        for (i, &inv) in inv[..rows].iter().enumerate() {
            // SAFETY: as above; row q0 + i's dvh values, just written.
            for v in std::slice::from_raw_parts_mut(out.add((q0 + i) * ldo), dvh) {
                *v *= inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 reference of one head with an additive mask.
    fn naive(q: &[f32], k: &[f32], v: &[f32], tq: usize, tk: usize, d: usize, keep: &[bool]) -> Vec<f64> {
        naive_qkv(q, k, v, tq, tk, d, d, keep)
    }

    /// [`naive`] with `dh` query/key and `dvh` value columns.
    #[allow(clippy::too_many_arguments)]
    fn naive_qkv(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        tq: usize,
        tk: usize,
        d: usize,
        dv: usize,
        keep: &[bool],
    ) -> Vec<f64> {
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = vec![0f64; tq * dv];
        for i in 0..tq {
            let s: Vec<f64> = (0..tk)
                .map(|j| {
                    let dot: f64 = (0..d).map(|c| q[i * d + c] as f64 * k[j * d + c] as f64).sum();
                    dot * scale + if keep[j] { 0.0 } else { f32::MIN as f64 }
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..dv {
                out[i * dv + c] = (0..tk).map(|j| e[j] / z * v[j * dv + c] as f64).sum();
            }
        }
        out
    }

    #[test]
    fn the_blocked_path_matches_the_reference_across_blocks_with_masks() {
        // Queries and keys past one block and not a multiple of it.
        let (tq, tk, d) = (BQ + 7, 2 * BK + 33, 8);
        let f = |n: usize, s: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + s) % 11) as f32 / 5.0 - 1.0).collect() };
        let (q, k, v) = (f(tq * d, 1), f(tk * d, 2), f(tk * d, 3));
        let masks = [
            vec![true; tk],
            (0..tk).map(|j| j % 3 != 0 && j < BK + 5).collect::<Vec<_>>(),
            // Only keys of the last block: earlier blocks' masked scores must vanish.
            (0..tk).map(|j| j >= 2 * BK).collect(),
            vec![false; tk],
        ];
        for keep in masks {
            let mask = |j: usize| keep[j];
            let h = Head { q: &q, ldq: d, k: &k, ldk: d, v: &v, ldv: d, keep: Some(&mask) };
            let mut scratch = vec![0f32; blocked_scratch(d)];
            let mut out = vec![0f32; tq * d];
            let n = out.len();
            unsafe { head_blocked(&h, tq, tk, d, d, 1.0 / (d as f32).sqrt(), &mut scratch, out.as_mut_ptr(), n, d) };
            let want = naive(&q, &k, &v, tq, tk, d, &keep);
            for (a, b) in out.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    /// Scratch whose start is 64-byte aligned, as the arena gives it.
    fn aligned(n: usize) -> (Vec<f32>, usize) {
        let v = vec![0f32; n + 16];
        let off = v.as_ptr().align_offset(64);
        (v, off)
    }

    #[test]
    fn the_packed_path_matches_the_reference_across_query_blocks_with_masks() {
        let levels: Vec<SimdLevel> = SimdLevel::all_available().into_iter().filter(|&l| packed::available(l)).collect();
        // Queries past one block and not a multiple of it; keys past a panel, not a
        // multiple; a row stride wider than the head (a fused qkv buffer's columns);
        // q and k narrower than v; and a single query against a single key.
        for (tq, tk, dh, dvh) in [(query_rows(37) + 9, 37, 8, 24), (5, 1, 3, 16), (1, 1, 1, 1), (70, 130, 16, 16)] {
            let ld = 3 * dvh.max(dh) + 5;
            let f =
                |n: usize, s: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + s) % 11) as f32 / 5.0 - 1.0).collect() };
            let (q, k, v) = (f(tq * ld, 1), f(tk * ld, 2), f(tk * ld, 3));
            let masks = [
                vec![true; tk],
                (0..tk).map(|j| j % 3 != 0).collect::<Vec<_>>(),
                (0..tk).map(|j| j + 1 == tk).collect(),
                vec![false; tk],
            ];
            for keep in masks {
                let mask = |j: usize| keep[j];
                let h = Head { q: &q, ldq: ld, k: &k, ldk: ld, v: &v, ldv: ld, keep: Some(&mask) };
                // The reference on contiguous copies of the head's columns.
                let cols = |m: &[f32], rows: usize, w: usize| -> Vec<f32> {
                    (0..rows).flat_map(|i| m[i * ld..i * ld + w].to_vec()).collect()
                };
                let want = naive_qkv(&cols(&q, tq, dh), &cols(&k, tk, dh), &cols(&v, tk, dvh), tq, tk, dh, dvh, &keep);
                for &level in &levels {
                    let (mut sb, off) = aligned(packed_scratch(tk, dh, dvh));
                    let ldo = dvh + 2;
                    let mut out = vec![f32::NAN; tq * ldo];
                    let n = out.len();
                    let scale = 1.0 / (dh as f32).sqrt();
                    unsafe {
                        head_packed(&h, level, (tq, tk, dh, dvh), scale, &mut sb[off..], out.as_mut_ptr(), n, ldo)
                    };
                    for i in 0..tq {
                        for c in 0..dvh {
                            let (a, b) = (out[i * ldo + c] as f64, want[i * dvh + c]);
                            assert!((a - b).abs() < 1e-5, "{level:?} {tq}x{tk}: {a} vs {b}");
                        }
                        assert!(
                            out[i * ldo + dvh..(i + 1) * ldo].iter().all(|v| v.is_nan()),
                            "past the head's columns"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn one_head_matches_reference_and_fully_masked_rows_average() {
        let (tq, tk, d) = (3, 5, 4);
        let f = |n: usize, s: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + s) % 11) as f32 / 5.0 - 1.0).collect() };
        let (q, k, v) = (f(tq * d, 1), f(tk * d, 2), f(tk * d, 3));
        for keep in [vec![true; 5], vec![true, false, true, false, false], vec![false; 5]] {
            let mask = |j: usize| keep[j];
            let h = Head { q: &q, ldq: d, k: &k, ldk: d, v: &v, ldv: d, keep: Some(&mask) };
            let mut scores = vec![0f32; tq * tk];
            let mut out = vec![0f32; tq * d];
            let n = out.len();
            unsafe { head(&h, tq, tk, d, d, 1.0 / (d as f32).sqrt(), &mut scores, out.as_mut_ptr(), n, d) };
            let want = naive(&q, &k, &v, tq, tk, d, &keep);
            for (a, b) in out.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-5, "{keep:?}: {a} vs {b}");
            }
        }
    }
}
