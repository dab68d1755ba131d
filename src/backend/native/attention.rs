//! Multi-head attention per (batch, head), straight from strided q/k/v views (a fused
//! qkv buffer's columns) into the head's columns of a `[B, Tq, Dv]` output: scores by
//! one GEMM with the `1/√d` scale folded in, the key mask added as the most negative
//! f32 (as LibTorch's backend and Hugging Face do, so a row with every key masked
//! averages the values instead of producing NaN), a softmax per row, one GEMM for the
//! weighted values. The `[Tq, Tk]` score matrix of a head is per-thread scratch.
//!
//! The blocked path never forms the whole score matrix: per block of [`BQ`] queries it
//! walks the keys [`BK`] at a time with an online softmax (the running row maximum and
//! sum, the partial output rescaled when the maximum grows), so its scratch is a few
//! hundred KiB where the plain path's is `Tq × Tk` per thread (VideoMAE's 1568 tokens:
//! 9.8 MB). Same masking semantics; the sums differ from the plain path's by rounding
//! only. Measured on a 2-core AMD EPYC (16 MiB L3, `bench_native.sh` part 8) it is no
//! faster than the plain path at 197, 1214 and 1568 tokens (0.98–1.08× of its time:
//! its blocks re-pack the keys and values per query block), so
//! [`AttentionPath::Auto`] takes it only where memory decides: from [`BLOCKED_FROM`]
//! keys, where one head's score matrix passes 64 MiB.

use super::gemm::{gemm, gemm_raw, Operand};
use super::math;

/// Which attention kernel the native backend runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionPath {
    /// Blocked from [`BLOCKED_FROM`] keys, plain below.
    #[default]
    Auto,
    Plain,
    Blocked,
}

impl AttentionPath {
    /// Whether attention over `tk` keys runs blocked.
    pub fn blocked(self, tk: usize) -> bool {
        match self {
            AttentionPath::Auto => tk >= BLOCKED_FROM,
            AttentionPath::Plain => false,
            AttentionPath::Blocked => true,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 reference of one head with an additive mask.
    fn naive(q: &[f32], k: &[f32], v: &[f32], tq: usize, tk: usize, d: usize, keep: &[bool]) -> Vec<f64> {
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = vec![0f64; tq * d];
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
            for c in 0..d {
                out[i * d + c] = (0..tk).map(|j| e[j] / z * v[j * d + c] as f64).sum();
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
