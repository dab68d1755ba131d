//! Multi-head attention per (batch, head), straight from strided q/k/v views (a fused
//! qkv buffer's columns) into the head's columns of a `[B, Tq, Dv]` output: scores by
//! one GEMM with the `1/√d` scale folded in, the key mask added as the most negative
//! f32 (as LibTorch's backend and Hugging Face do, so a row with every key masked
//! averages the values instead of producing NaN), a softmax per row, one GEMM for the
//! weighted values. The `[Tq, Tk]` score matrix of a head is per-thread scratch.

use super::gemm::{gemm, gemm_raw, Operand};
use super::math;

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
    if let Some(keep) = h.keep {
        for j in (0..tk).filter(|&j| !keep(j)) {
            for i in 0..tq {
                s[i * tk + j] += f32::MIN;
            }
        }
    }
    for row in s.chunks_exact_mut(tk) {
        math::softmax_row(row);
    }
    gemm_raw(tq, dvh, tk, 1.0, Operand::rows(s, tk), Operand::rows(h.v, h.ldv), out, out_len, ldo, false);
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
