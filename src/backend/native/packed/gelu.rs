//! The exact-erf GELU on one register, the packed kernels' epilogue: applied to a tile's
//! accumulators before they are stored ([`gelu512`] for the AVX-512 kernel, [`gelu256`]
//! for the AVX2 one), not in a separate sweep over the output (measured on a 2-core
//! Sapphire Rapids, in one process paired by round: a 197 × 384 → 1536 linear layer
//! with its GELU took 0.94–0.95 of the time of gathering each block back out of
//! memory). The operations of `math`'s scalar formulas (`erf_one`, `gelu_one`) in the
//! same order, each one IEEE operation, so every lane gets the bits the elementwise
//! kernels give; the tests compare them bit for bit.

use std::arch::x86_64::*;

/// Where erf rounds to ±1 in f32: `erf` is clamped to this.
const CUT: f32 = 3.925;
/// The erf rational's numerator in `x²`, highest power first.
const P: [f32; 7] =
    [-2.726_142_3e-10, 2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.954_6e-3, -1.609_603_3e-2];
/// Its denominator, highest power first.
const Q: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];

/// `x/2·(1 + erf(x/√2))` in every lane (`-0.0` below -10), bit for bit
/// `math::gelu_erf_inplace`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(super) fn gelu512(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    let xe = _mm512_mul_ps(x, c(std::f32::consts::FRAC_1_SQRT_2));
    let xc = _mm512_max_ps(c(-CUT), _mm512_min_ps(c(CUT), xe));
    let x2 = _mm512_mul_ps(xc, xc);
    let mut p = c(P[0]);
    for k in &P[1..] {
        p = _mm512_fmadd_ps(p, x2, c(*k));
    }
    let mut q = c(Q[0]);
    for k in &Q[1..] {
        q = _mm512_fmadd_ps(q, x2, c(*k));
    }
    let y = _mm512_div_ps(_mm512_mul_ps(xc, p), q);
    // |xc| ≥ CUT: ±1 with the sign of xc.
    // (AVX-512F has the bitwise operations on integers only.)
    let sign = _mm512_and_si512(_mm512_set1_epi32(i32::MIN), _mm512_castps_si512(xc));
    let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(xc), c(CUT));
    let one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(c(1.0)), sign));
    let erf = _mm512_mask_blend_ps(big, y, one);
    let g = _mm512_mul_ps(_mm512_mul_ps(c(0.5), x), _mm512_add_ps(c(1.0), erf));
    let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, c(-10.0));
    _mm512_mask_blend_ps(below, g, c(-0.0))
}

/// [`gelu512`] on an AVX2 register: the same operations, bit for bit
/// `math::gelu_erf_inplace`.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) fn gelu256(x: __m256) -> __m256 {
    let c = _mm256_set1_ps;
    let xe = _mm256_mul_ps(x, c(std::f32::consts::FRAC_1_SQRT_2));
    let xc = _mm256_max_ps(c(-CUT), _mm256_min_ps(c(CUT), xe));
    let x2 = _mm256_mul_ps(xc, xc);
    let mut p = c(P[0]);
    for k in &P[1..] {
        p = _mm256_fmadd_ps(p, x2, c(*k));
    }
    let mut q = c(Q[0]);
    for k in &Q[1..] {
        q = _mm256_fmadd_ps(q, x2, c(*k));
    }
    let y = _mm256_div_ps(_mm256_mul_ps(xc, p), q);
    // |xc| ≥ CUT: ±1 with the sign of xc.
    let sign = _mm256_and_ps(c(-0.0), xc);
    let big = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_andnot_ps(c(-0.0), xc), c(CUT));
    let one = _mm256_or_ps(c(1.0), sign);
    let erf = _mm256_blendv_ps(y, one, big);
    let g = _mm256_mul_ps(_mm256_mul_ps(c(0.5), x), _mm256_add_ps(c(1.0), erf));
    let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, c(-10.0));
    _mm256_blendv_ps(g, c(-0.0), below)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::native::math::{self, SimdLevel};

    /// Signed zeros, tiny values, the cut-offs, huge values, ±∞, NaNs with payloads,
    /// every binade of ±2^±30 and a dense sweep, padded to whole registers of 16.
    fn inputs() -> Vec<f32> {
        let mut xs = vec![0.0, -0.0, 1e-30, -1e-30, f32::MIN_POSITIVE, 5.55, -5.551, 3.925, -3.925];
        xs.extend([-10.0, -10.001, -9.999, 1e30, -1e30, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY]);
        xs.extend([f32::NAN, -f32::NAN, f32::from_bits(0x7fc0_1234), f32::from_bits(0xffa0_0001)]);
        for e in -30..=30 {
            for m in [1.0f32, 1.1, 1.37, 1.5, 1.999] {
                xs.extend([m * 2f32.powi(e), -m * 2f32.powi(e)]);
            }
        }
        xs.extend((0..20_000).map(|i| (i as f32 - 10_000.0) * 1.37e-2));
        xs.resize(xs.len().div_ceil(16) * 16, 0.5);
        xs
    }

    /// Every lane of `got` (the register GELU over `xs` in registers of `lanes`) has the
    /// bits of the elementwise kernels' GELU at `level`.
    fn check(level: SimdLevel, lanes: usize, xs: &[f32], got: &[f32]) {
        let mut want = xs.to_vec();
        math::gelu_erf_inplace_at(level, &mut want);
        assert_eq!((want.len(), got.len()), (xs.len(), xs.len()));
        for (i, ((g, w), x)) in got.iter().zip(&want).zip(xs).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "lane {} of {lanes}: gelu({x:e}): {g:e} vs {w:e}", i % lanes);
        }
    }

    #[test]
    #[ignore = "needs a CPU with AVX-512F; scripts/test.sh runs it where /proc/cpuinfo lists avx512f \
                (by hand: cargo test --lib -- --ignored packed::gelu::tests::the_gelu_gives)"]
    fn the_gelu_gives_maths_bits_in_every_lane() {
        assert!(SimdLevel::Avx512.available(), "this CPU has no AVX-512F");
        let xs = inputs();
        let mut got = vec![0f32; xs.len()];
        for (x, g) in xs.chunks_exact(16).zip(got.chunks_exact_mut(16)) {
            // SAFETY: AVX-512F asserted above (AVX2 and FMA come with it in `available`).
            unsafe { _mm512_storeu_ps(g.as_mut_ptr(), gelu512(_mm512_loadu_ps(x.as_ptr()))) };
        }
        check(SimdLevel::Avx512, 16, &xs, &got);
    }

    #[test]
    #[ignore = "needs a CPU with AVX2 and FMA; scripts/test.sh runs it where /proc/cpuinfo lists avx2 and fma \
                (by hand: cargo test --lib -- --ignored packed::gelu::tests::the_avx2_gelu)"]
    fn the_avx2_gelu_gives_maths_bits_in_every_lane() {
        assert!(SimdLevel::Avx2Fma.available(), "this CPU has no AVX2 and FMA");
        let xs = inputs();
        let mut got = vec![0f32; xs.len()];
        for (x, g) in xs.chunks_exact(8).zip(got.chunks_exact_mut(8)) {
            // SAFETY: AVX2 and FMA asserted above.
            unsafe { _mm256_storeu_ps(g.as_mut_ptr(), gelu256(_mm256_loadu_ps(x.as_ptr()))) };
        }
        check(SimdLevel::Avx2Fma, 8, &xs, &got);
    }
}
