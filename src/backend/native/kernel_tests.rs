//! The native backend's kernels against plain f64 implementations written here, in
//! every build (no LibTorch needed; `cargo test --lib`): GEMM (`gemm.rs`), softmax rows, layer norm (and
//! its fused residual add), the mean over tokens, exact-erf GELU, exp, tanh, sigmoid
//! (`math.rs`, `rows.rs`) and one attention head (`attention.rs`), over several
//! shapes including odd sizes that leave vector tails, strided views, and every SIMD
//! level this CPU has for the `math` kernels (the `rows` kernels and GEMM pick their
//! level themselves; `rows` reduces in the same order at every level).
//!
//! Each tolerance is stated beside its check as a bound from f32 rounding (ε = 2⁻²³),
//! scaled by what the computation sums; the measured worst errors print with
//! `--nocapture`.
#![allow(clippy::print_stdout)] // the measured errors are printed with --nocapture

use super::attention::{head, Head};
use super::gemm::{gemm, Operand};
use super::math::{self, SimdLevel};
use super::rows;

const EPS: f64 = f32::EPSILON as f64;

/// Seeded values in `[lo, hi)` (SplitMix64).
fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// The spacing of f32 numbers at `|r|` (one unit in the last place).
fn ulp(r: f64) -> f64 {
    let r = (r.abs() as f32).max(f32::MIN_POSITIVE);
    (f32::from_bits(r.to_bits() + 1) - r) as f64
}

/// Records the worst error / tolerance ratio of a check and fails past 1.
struct Worst {
    what: String,
    ratio: f64,
    at: String,
}

impl Worst {
    fn new(what: impl Into<String>) -> Worst {
        Worst { what: what.into(), ratio: 0.0, at: String::new() }
    }

    #[track_caller]
    fn check(&mut self, got: f32, want: f64, tol: f64, at: impl FnOnce() -> String) {
        let got = got as f64;
        assert!(got.is_finite() == want.is_finite(), "{}: got {got:e}, want {want:e} at {}", self.what, at());
        let err = (got - want).abs();
        let ratio = if err == 0.0 { 0.0 } else { err / tol };
        assert!(
            ratio <= 1.0,
            "{}: got {got:e}, want {want:e} (error {err:e} > tolerance {tol:e}) at {}",
            self.what,
            at()
        );
        if ratio > self.ratio {
            (self.ratio, self.at) = (ratio, at());
        }
    }
}

impl Drop for Worst {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            println!("{}: worst error {:.2} of the tolerance at {}", self.what, self.ratio, self.at);
        }
    }
}

// ---------------------------------------------------------------- GEMM

/// `alpha·A·B (+ C0)` in f64; `b_trans`: B is stored `[n, k]` (a weight).
#[allow(clippy::too_many_arguments)]
fn gemm_ref(
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    b_trans: bool,
) -> (Vec<f64>, Vec<f64>) {
    let (mut c, mut mag) = (vec![0f64; m * n], vec![0f64; m * n]);
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let bv = if b_trans { b[j * ldb + p] } else { b[p * ldb + j] } as f64;
                let term = a[i * lda + p] as f64 * bv;
                c[i * n + j] += alpha * term;
                mag[i * n + j] += (alpha * term).abs();
            }
        }
    }
    (c, mag)
}

#[test]
fn gemm_matches_f64_over_shapes_strides_and_accumulation() {
    let shapes = [(1, 1, 1), (1, 7, 3), (3, 5, 7), (5, 1, 17), (17, 33, 65), (64, 64, 64), (2, 300, 129), (130, 7, 1)];
    let mut worst = Worst::new("gemm");
    for (case, &(m, n, k)) in shapes.iter().enumerate() {
        for (b_trans, accumulate, pad) in [(true, false, 0), (false, false, 3), (true, true, 5), (false, true, 0)] {
            let (lda, ldb, ldc) = (k + pad, if b_trans { k + pad } else { n + pad }, n + pad);
            let a = values(m * lda, case as u64 * 10 + 1, -1.0, 1.0);
            let brows = if b_trans { n } else { k };
            let b = values(brows * ldb, case as u64 * 10 + 2, -1.0, 1.0);
            let c0 = values(m * ldc, case as u64 * 10 + 3, -2.0, 2.0);
            let alpha = 0.75f32;
            let mut c = c0.clone();
            let rhs = if b_trans { Operand::transposed(&b, ldb) } else { Operand::rows(&b, ldb) };
            gemm(m, n, k, alpha, Operand::rows(&a, lda), rhs, &mut c, ldc, accumulate);
            let (want, mag) = gemm_ref(m, n, k, alpha as f64, &a, lda, &b, ldb, b_trans);
            for i in 0..m {
                for j in 0..n {
                    let base = if accumulate { c0[i * ldc + j] as f64 } else { 0.0 };
                    // Each product and sum rounds once: |error| ≤ (k + 2)·ε·Σ|α·a·b| + ε·|C0|.
                    let tol = (k as f64 + 2.0) * EPS * mag[i * n + j] + EPS * base.abs() + f64::MIN_POSITIVE;
                    worst.check(c[i * ldc + j], want[i * n + j] + base, tol, || {
                        format!("{m}x{n}x{k} trans {b_trans} acc {accumulate} [{i}, {j}]")
                    });
                }
                // Columns past n (the padding of the row stride) are left alone.
                for j in n..ldc {
                    assert_eq!(c[i * ldc + j], c0[i * ldc + j], "{m}x{n}x{k}: padding column {j} written");
                }
            }
        }
    }
}

#[test]
fn gemm_with_an_empty_reduction_writes_zeros_or_keeps_the_destination() {
    let mut c = vec![3.0f32; 6];
    gemm(2, 3, 0, 1.0, Operand::rows(&[], 0), Operand::rows(&[], 3), &mut c, 3, true);
    assert_eq!(c, [3.0; 6]);
    gemm(2, 3, 0, 1.0, Operand::rows(&[], 0), Operand::rows(&[], 3), &mut c, 3, false);
    assert_eq!(c, [0.0; 6]);
}

// ---------------------------------------------------------------- math (every SIMD level)

/// Lengths that exercise the vector bodies and every tail.
const LENGTHS: [usize; 8] = [1, 2, 7, 15, 16, 17, 33, 1001];

type Kernel = fn(SimdLevel, &mut [f32]);

/// `f` at every level on inputs drawn from `[lo, hi)`, every length, against `reference`
/// within `tol(x, reference)`.
fn elementwise(name: &str, f: Kernel, lo: f32, hi: f32, reference: fn(f64) -> f64, tol: fn(f64, f64) -> f64) {
    let levels = SimdLevel::all_available();
    assert!(levels.contains(&SimdLevel::Portable));
    for level in levels {
        let mut worst = Worst::new(format!("{name} at {level:?}"));
        for (s, &n) in LENGTHS.iter().enumerate() {
            let x = values(n, 100 + s as u64, lo, hi);
            let mut y = x.clone();
            f(level, &mut y);
            for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
                let r = reference(xi as f64);
                worst.check(yi, r, tol(xi as f64, r), || format!("length {n}, element {i}, x = {xi:e}"));
            }
        }
    }
}

#[test]
fn exp_is_within_2_ulp() {
    // Results in the normal range (x ≥ −87.3); math.rs states ≤ 2 ulp.
    elementwise("exp", math::exp_inplace_at, -87.0, 88.0, f64::exp, |_, r| 2.0 * ulp(r));
}

#[test]
fn tanh_is_within_4_ulp() {
    elementwise("tanh", math::tanh_inplace_at, -12.0, 12.0, f64::tanh, |_, r| 4.0 * ulp(r));
}

#[test]
fn sigmoid_is_within_4_ulp() {
    elementwise("sigmoid", math::sigmoid_inplace_at, -30.0, 30.0, |x| 1.0 / (1.0 + (-x).exp()), |_, r| 4.0 * ulp(r));
}

#[test]
fn erf_is_within_5e_7() {
    elementwise("erf", math::erf_inplace_at, -5.0, 5.0, libm::erf, |_, _| 5e-7);
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

#[test]
fn gelu_with_the_exact_erf() {
    // Relative 1e-6 for x ≥ −1; below, the cancellation in 1 + erf bounds it
    // absolutely by 5e-7·|x| (math.rs; LibTorch's own kernel does the same).
    elementwise("gelu", math::gelu_erf_inplace_at, -8.0, 8.0, gelu, |x, r| {
        if x >= -1.0 {
            1e-6 * r.abs() + ulp(r)
        } else {
            5e-7 * x.abs()
        }
    });
}

#[test]
fn softmax_rows_match_f64() {
    for level in SimdLevel::all_available() {
        let mut worst = Worst::new(format!("softmax at {level:?}"));
        for (s, &n) in LENGTHS.iter().enumerate() {
            // Moderate values, and a large common offset the maximum must remove.
            for offset in [0.0f32, 1e4] {
                let x: Vec<f32> = values(n, 200 + s as u64, -30.0, 30.0).iter().map(|v| v + offset).collect();
                let mut y = x.clone();
                math::softmax_row_at(level, &mut y);
                let max = x.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
                let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (i, ((&yi, ei), &xi)) in y.iter().zip(&e).zip(&x).enumerate() {
                    let r = ei / z;
                    // x − max rounds (relative |x − max|·ε/2 after exp), exp ≤ 2 ulp, the
                    // sum over 16 lanes rounds ≈ n/16 + 4 times, one product: relative
                    // (8 + n/16 + |x − max|)·ε; exp flushes results below the normal
                    // range to zero.
                    let spread = max - xi as f64;
                    let tol = (8.0 + n as f64 / 16.0 + spread) * EPS * r + f32::MIN_POSITIVE as f64;
                    worst.check(yi, r, tol, || format!("length {n}, offset {offset}, element {i}"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------- rows

/// Layer norm of one row in f64 (biased variance); also the row's mean and σ.
fn layernorm_ref(x: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> (Vec<f64>, f64, f64) {
    let d = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d;
    let rstd = 1.0 / (var + eps).sqrt();
    let y =
        x.iter().zip(gamma).zip(beta).map(|((&v, &g), &b)| (v as f64 - mean) * rstd * g as f64 + b as f64).collect();
    (y, mean, (var + eps).sqrt())
}

/// |error| of one normalised element: the mean and variance are f32 sums over d
/// (16 lanes, ≈ d/16 + 4 roundings), and x − μ inherits μ's error relative to σ.
fn layernorm_tol(d: usize, mean: f64, sigma: f64, xhat: f64, gamma: f32, beta: f32) -> f64 {
    let sums = (8.0 + d as f64 / 16.0) * EPS;
    (sums * (1.0 + mean.abs() / sigma) * (1.0 + xhat.abs()) + 4.0 * EPS) * (gamma.abs() as f64)
        + 2.0 * EPS * beta.abs() as f64
}

#[test]
fn layer_norm_and_its_fused_residual_add_match_f64() {
    let mut worst = Worst::new("layernorm");
    for (s, &d) in [1usize, 3, 16, 17, 64, 384, 769].iter().enumerate() {
        for (eps, offset, rows_n) in [(1e-5f32, 0.0f32, 3), (1e-6, 100.0, 2), (1e-12, -3.0, 1)] {
            let x: Vec<f32> = values(rows_n * d, 300 + s as u64, -2.0, 2.0).iter().map(|v| v + offset).collect();
            let gamma = values(d, 301 + s as u64, 0.5, 1.5);
            let beta = values(d, 302 + s as u64, -0.5, 0.5);
            let mut out = vec![f32::NAN; x.len()];
            rows::layernorm(&x, &gamma, &beta, eps, &mut out, d);
            // The fused form: the residual sum is kept, bit for bit a + b.
            let a: Vec<f32> = x.iter().map(|v| v * 0.5).collect();
            let b: Vec<f32> = x.iter().zip(&a).map(|(v, h)| v - h).collect();
            let mut sum = vec![f32::NAN; x.len()];
            let mut fused = vec![f32::NAN; x.len()];
            rows::add_layernorm(&a, &b, &mut sum, &gamma, &beta, eps, (&mut fused, d));
            for (i, s) in sum.iter().enumerate() {
                assert_eq!(s.to_bits(), (a[i] + b[i]).to_bits(), "d {d}: the residual sum at {i}");
            }
            for r in 0..rows_n {
                let row = r * d..(r + 1) * d;
                for (what, input, got) in [("layernorm", &x, &out), ("add_layernorm", &sum, &fused)] {
                    let (want, mean, sigma) = layernorm_ref(&input[row.clone()], &gamma, &beta, eps as f64);
                    for j in 0..d {
                        let xhat = (input[r * d + j] as f64 - mean) / sigma;
                        let tol = layernorm_tol(d, mean, sigma, xhat, gamma[j], beta[j]);
                        worst.check(got[r * d + j], want[j], tol, || {
                            format!("{what} d {d} eps {eps} offset {offset} [{r}, {j}]")
                        });
                    }
                }
            }
        }
    }
}

#[test]
fn mean_over_tokens_matches_f64() {
    let mut worst = Worst::new("mean_tokens");
    for (s, &(b, t, d)) in [(1, 1, 1), (2, 3, 5), (3, 17, 33), (1, 197, 64)].iter().enumerate() {
        let x = values(b * t * d, 400 + s as u64, -3.0, 3.0);
        let mut out = vec![f32::NAN; b * d];
        rows::mean_tokens(&x, t, d, &mut out);
        for i in 0..b {
            for j in 0..d {
                let col: Vec<f64> = (0..t).map(|k| x[(i * t + k) * d + j] as f64).collect();
                let want = col.iter().sum::<f64>() / t as f64;
                // A running f32 sum over t, then one product.
                let tol = (t as f64 + 2.0) * EPS * col.iter().map(|v| v.abs()).sum::<f64>() / t as f64;
                worst.check(out[i * d + j], want, tol + f64::MIN_POSITIVE, || format!("{b}x{t}x{d} [{i}, {j}]"));
            }
        }
    }
}

// ---------------------------------------------------------------- attention

/// One head in f64: softmax(scale·q·kᵀ + mask)·v, with masked keys at f32::MIN.
#[allow(clippy::too_many_arguments)]
fn head_ref(
    q: &[f32],
    ldq: usize,
    k: &[f32],
    ldk: usize,
    v: &[f32],
    ldv: usize,
    tq: usize,
    tk: usize,
    dh: usize,
    dv: usize,
    keep: &[bool],
) -> Vec<f64> {
    let scale = 1.0 / (dh as f64).sqrt();
    let mut out = vec![0f64; tq * dv];
    for i in 0..tq {
        let s: Vec<f64> = (0..tk)
            .map(|j| {
                let dot: f64 = (0..dh).map(|c| q[i * ldq + c] as f64 * k[j * ldk + c] as f64).sum();
                dot * scale + if keep[j] { 0.0 } else { f32::MIN as f64 }
            })
            .collect();
        let m = s.iter().copied().fold(f64::MIN, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        for c in 0..dv {
            out[i * dv + c] = (0..tk).map(|j| e[j] / z * v[j * ldv + c] as f64).sum();
        }
    }
    out
}

#[test]
fn attention_heads_match_f64_over_shapes_masks_and_fused_qkv_views() {
    let mut worst = Worst::new("attention");
    for (s, &(tq, tk, dh, dv)) in
        [(1, 1, 1, 1), (3, 5, 4, 4), (7, 13, 16, 8), (17, 33, 64, 64), (2, 65, 8, 3)].iter().enumerate()
    {
        // q, k and v as column blocks of one fused row-major buffer (row stride 2·dh + dv
        // plus padding), as a fused qkv projection lays them out.
        let ld = 2 * dh + dv + 3;
        let rows_n = tq.max(tk);
        let qkv = values(rows_n * ld, 500 + s as u64, -1.0, 1.0);
        let (q, k, v) = (&qkv[..], &qkv[dh..], &qkv[2 * dh..]);
        let masks: [Vec<bool>; 3] = [vec![true; tk], (0..tk).map(|j| j % 3 != 1).collect(), vec![false; tk]];
        for keep in &masks {
            let keep_fn = |j: usize| keep[j];
            let h = Head { q, ldq: ld, k, ldk: ld, v, ldv: ld, keep: Some(&keep_fn) };
            // The head writes its columns of a wider output (row stride ldo).
            let ldo = dv + 2;
            let mut out = vec![7.0f32; tq * ldo];
            let mut scores = vec![0f32; tq * tk];
            let n = out.len();
            // SAFETY: `out` is this call's alone and holds tq rows of stride ldo.
            unsafe { head(&h, tq, tk, dh, dv, 1.0 / (dh as f32).sqrt(), &mut scores, out.as_mut_ptr(), n, ldo) };
            let want = head_ref(q, ld, k, ld, v, ld, tq, tk, dh, dv, keep);
            let vmax = (0..tk)
                .flat_map(|j| (0..dv).map(move |c| (j, c)))
                .fold(0f64, |m, (j, c)| m.max(v[j * ld + c].abs() as f64));
            for i in 0..tq {
                for c in 0..dv {
                    // Scores carry (dh + 2)·ε of Σ|q·k|·scale (≤ √dh here), exp and the
                    // normalisation (8 + tk/16)·ε, the weighted sum (tk + 2)·ε: all
                    // relative to max|v|.
                    let tol = ((dh as f64 + 2.0) * (dh as f64).sqrt() + 2.0 * tk as f64 + 12.0) * EPS * vmax;
                    worst.check(out[i * ldo + c], want[i * dv + c], tol + f64::MIN_POSITIVE, || {
                        format!("tq {tq} tk {tk} dh {dh} dv {dv} mask {keep:?} [{i}, {c}]")
                    });
                }
                for c in dv..ldo {
                    assert_eq!(out[i * ldo + c], 7.0, "columns past the head's are left alone");
                }
            }
        }
    }
}
