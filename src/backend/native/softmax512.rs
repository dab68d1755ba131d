//! The softmax of one row with AVX-512 written out, its exponential cut to what a
//! softmax needs. Its arguments `x − max` are at most 0, so there is no overflow to
//! guard; below −110 the result is exactly 0 (`vscalefps` underflows there), so a
//! masked key (the most negative f32) still weighs nothing, and between −110 and
//! −87.3 it is subnormal rather than flushed. The polynomial is a degree-5 minimax fit
//! of `e^r` on `|r| ≤ ln2/2` with `p(0) = 1` (relative error 1.5e-7 in f32, where the
//! elementwise kernels' degree-7 Cephes form reaches 6e-8), and `vscalefps` gives
//! `p · 2ⁿ` in one instruction: 11 vector operations an exponential where the
//! vectorised generic kernel ([`super::math`]) spends 17. The max and the sum keep the
//! generic kernel's lanes (64, then 16, then one). (One 1568-wide row in L1 on a
//! 2-core Sapphire Rapids, fastest of 20 rounds of 1000: 0.36 ns an element for the
//! vectorised generic kernel, 0.22 for this one; VideoMAE-B computes 144 score
//! matrices of 1568² a forward.)

use std::arch::x86_64::*;

/// Where the exponential is exactly 0: `vscalefps` gives `p · 2⁻¹⁵⁹` there, below half
/// the least subnormal.
pub(super) const LO: f32 = -110.0;
/// `ln 2` in two parts for the reduction (Cody–Waite): `r = x − n·LN2[0] − n·LN2[1]`.
pub(super) const LN2: [f32; 2] = [0.693_359_4, -2.121_944_4e-4];
/// The polynomial `p(r) ≈ e^r`, highest power first.
pub(super) const POLY: [f32; 6] = [8.290_225e-3, 4.189_839_2e-2, 1.666_764e-1, 4.999_914_5e-1, 9.999_997e-1, 1.0];

/// `e^x` for `x ≤ 0` (or NaN): `x` clamped at [`LO`], `n` the integer nearest
/// `x·log₂e` (by adding 1.5·2²³ in the fused multiply-add), `r = x − n·ln2` in two
/// fused steps (Cody–Waite), then `p(r) · 2ⁿ`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn exp_neg(x: __m512) -> __m512 {
    let magic = _mm512_set1_ps(12_582_912.0);
    // max(LO, x): NaN in `x` comes through as NaN.
    let xc = _mm512_max_ps(_mm512_set1_ps(LO), x);
    let t = _mm512_fmadd_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E), magic);
    let nf = _mm512_sub_ps(t, magic);
    let r = _mm512_fmadd_ps(nf, _mm512_set1_ps(-LN2[0]), xc);
    let r = _mm512_fmadd_ps(nf, _mm512_set1_ps(-LN2[1]), r);
    let mut p = _mm512_set1_ps(POLY[0]);
    for k in &POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*k));
    }
    _mm512_scalef_ps(p, nf)
}

/// Softmax of `x` in place (its maximum finite).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn softmax_row(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let sixteens = n / 16 * 16;
    let k: __mmask16 = ((1u32 << (n - sixteens)) - 1) as __mmask16;
    let inv = _mm512_set1_ps(1.0 / softmax_weights(x));
    for i in (0..sixteens).step_by(16) {
        _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv));
    }
    if sixteens < n {
        _mm512_mask_storeu_ps(p.add(sixteens), k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p.add(sixteens)), inv));
    }
}

/// The weights `e^{x−max}` of the softmax of `x` in place, unscaled, and their sum
/// (its maximum finite).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn softmax_weights(x: &mut [f32]) -> f32 {
    let n = x.len();
    let p = x.as_mut_ptr();
    let (wide, sixteens) = (n / 64 * 64, n / 16 * 16);
    let neg = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut m = [neg; 4];
    for i in (0..wide).step_by(64) {
        for (j, m) in m.iter_mut().enumerate() {
            // max(v, m): a NaN in `v` leaves `m`, as the generic kernel's `larger`.
            *m = _mm512_max_ps(_mm512_loadu_ps(p.add(i + 16 * j)), *m);
        }
    }
    let mut lanes = neg;
    for m in m {
        lanes = _mm512_max_ps(m, lanes);
    }
    for i in (wide..sixteens).step_by(16) {
        lanes = _mm512_max_ps(_mm512_loadu_ps(p.add(i)), lanes);
    }
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let mut l = [0f32; 16];
    _mm512_storeu_ps(l.as_mut_ptr(), lanes);
    let max = x[sixteens..].iter().fold(l.iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v)), |m, &v| larger(m, v));

    let vmax = _mm512_set1_ps(max);
    let mut s = [_mm512_setzero_ps(); 4];
    for i in (0..wide).step_by(64) {
        for (j, s) in s.iter_mut().enumerate() {
            let e = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(p.add(i + 16 * j)), vmax));
            _mm512_storeu_ps(p.add(i + 16 * j), e);
            *s = _mm512_add_ps(*s, e);
        }
    }
    let mut lanes = _mm512_setzero_ps();
    for s in s {
        lanes = _mm512_add_ps(lanes, s);
    }
    for i in (wide..sixteens).step_by(16) {
        let e = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), vmax));
        _mm512_storeu_ps(p.add(i), e);
        lanes = _mm512_add_ps(lanes, e);
    }
    _mm512_storeu_ps(l.as_mut_ptr(), lanes);
    let mut sum = l.iter().sum::<f32>();
    // The lanes of the last, partial register (none when the row is whole registers).
    let k: __mmask16 = ((1u32 << (n - sixteens)) - 1) as __mmask16;
    if sixteens < n {
        let e = exp_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p.add(sixteens)), vmax));
        _mm512_mask_storeu_ps(p.add(sixteens), k, e);
        sum = x[sixteens..].iter().fold(sum, |s, &v| s + v);
    }
    sum
}
