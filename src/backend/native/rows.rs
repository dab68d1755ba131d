//! Row kernels compiled per instruction set ([`super::isa`]): layer norm (fused with
//! the residual add before it), mean over tokens, embedding gather and im2col for
//! patch embeddings (written token-major).
//!
//! Reductions use 16 fixed lanes, so the summation order, and hence every result bit,
//! is the same for the AVX-512, AVX2 and portable variants.

use super::isa::multiversion;
use crate::backend::KernelError;

const LANES: usize = 16;

/// Sum with 16 lane accumulators, reduced as a tree.
#[inline(always)]
fn lane_sum(x: &[f32], mut f: impl FnMut(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        acc[l] += f(v);
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
}

/// One row: `out = (x − μ)/√(σ² + eps) · γ + β` (biased variance, two passes).
#[inline(always)]
fn norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let d = x.len() as f32;
    let mean = lane_sum(x, |v| v) / d;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / d;
    let rstd = 1.0 / (var + eps).sqrt();
    for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
        *o = (v - mean) * rstd * g + b;
    }
}

multiversion! {
    /// Layer norm over rows of `d`, the output's rows `ldo` apart (`ldo ≥ d`; longer
    /// where `pad.rs` padded them; the last row may stop at `d`).
    pub fn layernorm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32], ldo: usize) {
        let d = gamma.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_mut(ldo)) {
            norm_row(xr, gamma, beta, eps, &mut or[..d]);
        }
    }
}

multiversion! {
    /// `sum = a + b` (kept: the residual stream) and `out = layernorm(sum)`, row by row
    /// while the row is in L1; the output's rows `ldo` apart, as [`layernorm`]'s.
    pub fn add_layernorm(a: &[f32], b: &[f32], sum: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32, out: (&mut [f32], usize)) {
        let (d, (out, ldo)) = (gamma.len(), out);
        for (((ar, br), sr), or) in a.chunks_exact(d).zip(b.chunks_exact(d)).zip(sum.chunks_exact_mut(d)).zip(out.chunks_mut(ldo)) {
            for ((s, &x), &y) in sr.iter_mut().zip(ar).zip(br) {
                *s = x + y;
            }
            norm_row(sr, gamma, beta, eps, &mut or[..d]);
        }
    }
}

multiversion! {
    /// `[B, T, D]` → `[B, D]`: the mean over T (`out` holds `out.len() / d` batch rows).
    pub fn mean_tokens(x: &[f32], t: usize, d: usize, out: &mut [f32]) {
        for (xb, ob) in x.chunks_exact(t * d).zip(out.chunks_exact_mut(d)) {
            ob.fill(0.0);
            for row in xb.chunks_exact(d) {
                for (o, &v) in ob.iter_mut().zip(row) {
                    *o += v;
                }
            }
            let inv = 1.0 / t as f32;
            for o in ob.iter_mut() {
                *o *= inv;
            }
        }
    }
}

/// `out[i] = table[ids[i]]` for rows of `d`. An id outside the table is an error naming
/// it (and the valid range).
pub fn embedding(ids: &[i64], table: &[f32], d: usize, out: &mut [f32]) -> Result<(), KernelError> {
    let n = table.len() / d.max(1);
    for (&id, o) in ids.iter().zip(out.chunks_exact_mut(d)) {
        if id < 0 || id >= n as i64 {
            return Err(KernelError::IdOutOfRange { id, rows: n });
        }
        let s = id as usize * d;
        o.copy_from_slice(&table[s..s + d]);
    }
    Ok(())
}

/// Geometry of a convolution without padding or dilation over N spatial dims.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGeom {
    pub batch: usize,
    pub channels: usize,
    /// Input spatial sizes.
    pub size: Vec<usize>,
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
}

/// Entry `(pos, j)` of the sine-cosine position table of width `d` (Vaswani et al.;
/// AST, VideoMAE): `sin` on even `j`, `cos` on odd, of `pos / 10000^(2⌊j/2⌋/d)`.
#[cfg(test)]
pub fn sinusoid(pos: usize, j: usize, d: usize) -> f64 {
    sin_or_cos(pos as f64 / denominator(j, d), j)
}

/// `10000^(2⌊j/2⌋/d)`, what entry `(pos, j)` divides `pos` by.
fn denominator(j: usize, d: usize) -> f64 {
    10000f64.powf((2 * (j / 2)) as f64 / d as f64)
}

fn sin_or_cos(angle: f64, j: usize) -> f64 {
    if j.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }
}

/// The `[t, d]` table of [`sinusoid`] rounded to f32, the `d` powers taken once.
pub fn sinusoid_table(t: usize, d: usize) -> Vec<f32> {
    let denominators: Vec<f64> = (0..d).map(|j| denominator(j, d)).collect();
    (0..t)
        .flat_map(|pos| denominators.iter().enumerate().map(move |(j, den)| sin_or_cos(pos as f64 / den, j) as f32))
        .collect()
}

impl ConvGeom {
    /// Output spatial sizes.
    pub fn out_size(&self) -> Vec<usize> {
        self.size.iter().zip(&self.kernel).zip(&self.stride).map(|((&s, &k), &st)| (s - k) / st + 1).collect()
    }
    /// Output positions per batch element (tokens).
    pub fn tokens(&self) -> usize {
        self.out_size().iter().product()
    }
    /// Elements of one patch: C · Π kernel (the GEMM's k).
    pub fn patch(&self) -> usize {
        self.channels * self.kernel.iter().product::<usize>()
    }
}

/// im2col, token-major: row `(b, token)` of `out` holds the patch under that output
/// position in `(c, k…)` order, the order of a `[O, C, k…]` weight's rows. With
/// stride = kernel this is a pure gather. Rows `[row0, row0 + out.len()/patch)` only,
/// so threads can split it.
pub fn im2col(x: &[f32], g: &ConvGeom, row0: usize, out: &mut [f32]) {
    let osz = g.out_size();
    let (tokens, patch, nd) = (g.tokens(), g.patch(), g.size.len());
    let plane: usize = g.size.iter().product();
    let kvol: usize = g.kernel.iter().product();
    // Innermost kernel dim is copied as one run.
    let (klast, slast) = (g.kernel[nd - 1], g.size[nd - 1]);
    let mut opos = vec![0usize; nd];
    let mut kpos = vec![0usize; nd];
    for (r, orow) in out.chunks_exact_mut(patch).enumerate() {
        let row = row0 + r;
        let (b, mut tok) = (row / tokens, row % tokens);
        for i in (0..nd).rev() {
            opos[i] = tok % osz[i];
            tok /= osz[i];
        }
        for c in 0..g.channels {
            let base = (b * g.channels + c) * plane;
            for kr in 0..kvol / klast {
                let mut rest = kr;
                for i in (0..nd - 1).rev() {
                    kpos[i] = rest % g.kernel[i];
                    rest /= g.kernel[i];
                }
                let mut off = 0;
                for i in 0..nd - 1 {
                    off = off * g.size[i] + opos[i] * g.stride[i] + kpos[i];
                }
                let start = base + off * slast + opos[nd - 1] * g.stride[nd - 1];
                let dst = c * kvol + kr * klast;
                orow[dst..dst + klast].copy_from_slice(&x[start..start + klast]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sinusoid_table_holds_each_entrys_bits() {
        for (t, d) in [(1, 2), (7, 6), (197, 768), (40, 33)] {
            let table = sinusoid_table(t, d);
            assert_eq!(table.len(), t * d);
            for (i, v) in table.iter().enumerate() {
                assert_eq!(v.to_bits(), (sinusoid(i / d, i % d, d) as f32).to_bits(), "{t}x{d} at {i}");
            }
        }
    }

    fn seq(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 + 11) % 23) as f32 / 7.0 - 1.5).collect()
    }

    #[test]
    fn layernorm_matches_f64_reference_and_fused_add() {
        let d = 37;
        let x = seq(3 * d);
        let r: Vec<f32> = seq(3 * d).iter().map(|v| v * 0.5 + 0.25).collect();
        let (g, b): (Vec<f32>, Vec<f32>) =
            ((0..d).map(|i| 1.0 + i as f32 * 0.01).collect(), (0..d).map(|i| i as f32 * -0.02).collect());
        let mut sum = vec![0f32; 3 * d];
        let mut out = vec![0f32; 3 * d];
        add_layernorm(&x, &r, &mut sum, &g, &b, 1e-6, (&mut out, d));
        for row in 0..3 {
            let s: Vec<f64> = (0..d).map(|j| x[row * d + j] as f64 + r[row * d + j] as f64).collect();
            let mean = s.iter().sum::<f64>() / d as f64;
            let var = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
            for j in 0..d {
                let want = (s[j] - mean) / (var + 1e-6).sqrt() * g[j] as f64 + b[j] as f64;
                assert!((out[row * d + j] as f64 - want).abs() < 1e-5, "{row},{j}");
                assert_eq!(sum[row * d + j], x[row * d + j] + r[row * d + j]);
            }
        }
        let mut plain = vec![0f32; 3 * d];
        layernorm(&sum, &g, &b, 1e-6, &mut plain, d);
        assert_eq!(plain, out);
    }

    #[test]
    fn mean_and_embedding() {
        let x = seq(2 * 3 * 4);
        let mut m = vec![0f32; 8];
        mean_tokens(&x, 3, 4, &mut m);
        for b in 0..2 {
            for j in 0..4 {
                let want = (0..3).map(|t| x[b * 12 + t * 4 + j]).sum::<f32>() / 3.0;
                assert!((m[b * 4 + j] - want).abs() < 1e-6);
            }
        }
        let table = seq(5 * 2);
        let mut out = vec![0f32; 4];
        embedding(&[4, 0], &table, 2, &mut out).unwrap();
        assert_eq!(out, [table[8], table[9], table[0], table[1]]);
        let err = embedding(&[5], &table, 2, &mut out[..2]).unwrap_err();
        assert_eq!(err, crate::backend::KernelError::IdOutOfRange { id: 5, rows: 5 });
    }

    #[test]
    fn im2col_gathers_patches_token_major() {
        // [1, 2, 4, 6] input, kernel 2x3, stride 2x3 → 2x2 tokens of 12.
        let g = ConvGeom { batch: 1, channels: 2, size: vec![4, 6], kernel: vec![2, 3], stride: vec![2, 3] };
        let x: Vec<f32> = (0..48).map(|v| v as f32).collect();
        let mut out = vec![0f32; 4 * 12];
        im2col(&x, &g, 0, &mut out);
        for tok in 0..4 {
            let (oh, ow) = (tok / 2, tok % 2);
            for c in 0..2 {
                for i in 0..2 {
                    for j in 0..3 {
                        let want = x[c * 24 + (oh * 2 + i) * 6 + ow * 3 + j];
                        assert_eq!(out[tok * 12 + c * 6 + i * 3 + j], want);
                    }
                }
            }
        }
        // Overlapping windows (stride 1) and a row range.
        let g = ConvGeom { batch: 1, channels: 1, size: vec![3, 3], kernel: vec![2, 2], stride: vec![1, 1] };
        let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut out = vec![0f32; 2 * 4];
        im2col(&x, &g, 2, &mut out);
        assert_eq!(out, [3., 4., 6., 7., 4., 5., 7., 8.]);
    }
}
