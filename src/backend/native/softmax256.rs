//! The softmax of one row with AVX2 written out: [`super::softmax512`]'s exponential cut
//! to what a softmax needs (arguments `x − max ≤ 0`, clamped at −110; the degree-5
//! polynomial) and its order of maxes and adds (64 lanes, then 16, then one), on 8-lane
//! registers. AVX2 has no `vscalefps`. Where a 64-lane step's every `n` is at least
//! −125 (every weight normal: each score within about 87 of its row's maximum, the
//! common case) `p · 2ⁿ` is `n` added to `p`'s exponent bits, exact. Otherwise it is
//! two products by powers of two built in the exponent bits: `2^max(n, −125)`, exact
//! because `p ≥ √½` keeps the product normal, then `2^(n − max(n, −125))`, which rounds
//! once, as `vscalefps` does, and gives the subnormal weights between −110 and −87.3
//! and exactly 0 below. Both levels therefore give the same bits (the test below holds
//! each to one scalar formula, over rows that take either path). An exponential is 19
//! vector operations, 13 with the exponent add; the vectorised generic kernel
//! ([`super::math`]) guards overflow, NaN and both ends of the normal range with
//! compares and blends besides. (Paired forward by forward with that kernel on a Zen 3,
//! one thread, batch 1: ViT-S/16 0.990×, VideoMAE-B 0.977×.) A 64-lane step's eight
//! exponentials run in lockstep ([`exp_neg`] over an array of registers): one 1568-key
//! attention layer of VideoMAE-B (twelve heads, `benches/specs/videomae_attention.graft`)
//! took 0.966× the time of one register's chain at a time, paired forward by forward on
//! the same Zen 3.

use super::softmax512::{LN2, LO, POLY};
use std::arch::x86_64::*;

/// The least `n` for which `p · 2ⁿ` is normal for every `p` of the polynomial's range.
const NORMAL: i32 = -125;

/// `e^x` for `x ≤ 0` (or NaN) in each of `L` registers: [`super::softmax512`]'s
/// reduction and polynomial, then `p · 2ⁿ`: `n` added to `p`'s exponent where every
/// lane's result is normal, else as two products (a NaN stays NaN: `p` is NaN). Each
/// step runs on all `L` registers before the next, so `L` independent chains of
/// dependent operations stand side by side in the scheduler, where one register's chain
/// at a time (about 20 dependent operations) left the core waiting on latency.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp_neg<const L: usize>(x: [__m256; L]) -> [__m256; L] {
    let c = _mm256_set1_ps;
    let magic = c(12_582_912.0);
    // max(LO, x): NaN in `x` comes through as NaN.
    let xc = x.map(|x| _mm256_max_ps(c(LO), x));
    let t = xc.map(|xc| _mm256_fmadd_ps(xc, c(std::f32::consts::LOG2_E), magic));
    let nf = t.map(|t| _mm256_sub_ps(t, magic));
    let mut r = xc;
    for ln2 in LN2 {
        for (r, nf) in r.iter_mut().zip(&nf) {
            *r = _mm256_fmadd_ps(*nf, c(-ln2), *r);
        }
    }
    let mut p = [c(POLY[0]); L];
    for k in &POLY[1..] {
        for (p, r) in p.iter_mut().zip(&r) {
            *p = _mm256_fmadd_ps(*p, *r, c(*k));
        }
    }
    // Where every lane's `n` is at least NORMAL, `p · 2ⁿ` is normal, so adding `n` to
    // `p`'s exponent gives the product exactly: three operations a register instead of
    // nine. A step with a lane below (a score about 87 below its row's maximum, a
    // masked key) takes the two products.
    let mut least = nf[0];
    for nf in &nf[1..] {
        least = _mm256_min_ps(*nf, least);
    }
    // Not ≥ (unordered): a NaN `n` (from a NaN `x`) sends its lane's step to the products.
    if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NGE_UQ>(least, c(NORMAL as f32))) == 0 {
        return std::array::from_fn(|i| {
            let n = _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(nf[i]));
            _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p[i]), n))
        });
    }
    let pow2 = |e: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(e, _mm256_set1_epi32(127))));
    std::array::from_fn(|i| {
        let n = _mm256_cvtps_epi32(nf[i]);
        let n1 = _mm256_max_epi32(n, _mm256_set1_epi32(NORMAL));
        let n2 = _mm256_sub_epi32(n, n1);
        _mm256_mul_ps(_mm256_mul_ps(p[i], pow2(n1)), pow2(n2))
    })
}

/// Softmax of `x` in place (its maximum finite).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_row(x: &mut [f32]) {
    let inv = 1.0 / softmax_weights(x);
    let mut eights = x.chunks_exact_mut(8);
    let vinv = _mm256_set1_ps(inv);
    for c in &mut eights {
        _mm256_storeu_ps(c.as_mut_ptr(), _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), vinv));
    }
    for v in eights.into_remainder() {
        *v *= inv;
    }
}

/// The weights `e^{x−max}` of the softmax of `x` in place, unscaled, and their sum
/// (its maximum finite). Register `2j + h` holds lanes `8h..8h + 8` of the AVX-512
/// kernel's register `j`.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_weights(x: &mut [f32]) -> f32 {
    let n = x.len();
    let p = x.as_mut_ptr();
    let (wide, sixteens) = (n / 64 * 64, n / 16 * 16);
    let neg = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut m = [neg; 8];
    for i in (0..wide).step_by(64) {
        for (j, m) in m.iter_mut().enumerate() {
            // max(v, m): a NaN in `v` leaves `m`, as the generic kernel's `larger`.
            *m = _mm256_max_ps(_mm256_loadu_ps(p.add(i + 8 * j)), *m);
        }
    }
    let mut lanes = [neg; 2];
    for pair in m.chunks_exact(2) {
        lanes = [_mm256_max_ps(pair[0], lanes[0]), _mm256_max_ps(pair[1], lanes[1])];
    }
    for i in (wide..sixteens).step_by(16) {
        lanes = [
            _mm256_max_ps(_mm256_loadu_ps(p.add(i)), lanes[0]),
            _mm256_max_ps(_mm256_loadu_ps(p.add(i + 8)), lanes[1]),
        ];
    }
    // The sixteen lanes' maximum by halves in registers: a maximum does not depend on
    // the order it is taken in (no lane is NaN: each started at −∞ and kept its value
    // over a NaN), where one lane at a time was a chain of sixteen dependent steps.
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let m8 = _mm256_max_ps(lanes[0], lanes[1]);
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps::<1>(m8));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m1 = _mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2));
    let max = x[sixteens..].iter().fold(_mm_cvtss_f32(m1), |m, &v| larger(m, v));
    let mut l = [0f32; 16];

    let vmax = _mm256_set1_ps(max);
    let weigh = |at: *mut f32| {
        let [e] = exp_neg([_mm256_sub_ps(_mm256_loadu_ps(at), vmax)]);
        _mm256_storeu_ps(at, e);
        e
    };
    let mut s = [_mm256_setzero_ps(); 8];
    for i in (0..wide).step_by(64) {
        // The eight registers of 64 lanes in lockstep.
        let e = exp_neg(std::array::from_fn::<_, 8, _>(|j| _mm256_sub_ps(_mm256_loadu_ps(p.add(i + 8 * j)), vmax)));
        for (j, (s, e)) in s.iter_mut().zip(e).enumerate() {
            _mm256_storeu_ps(p.add(i + 8 * j), e);
            *s = _mm256_add_ps(*s, e);
        }
    }
    let mut lanes = [_mm256_setzero_ps(); 2];
    for pair in s.chunks_exact(2) {
        lanes = [_mm256_add_ps(lanes[0], pair[0]), _mm256_add_ps(lanes[1], pair[1])];
    }
    for i in (wide..sixteens).step_by(16) {
        lanes = [_mm256_add_ps(lanes[0], weigh(p.add(i))), _mm256_add_ps(lanes[1], weigh(p.add(i + 8)))];
    }
    _mm256_storeu_ps(l.as_mut_ptr(), lanes[0]);
    _mm256_storeu_ps(l.as_mut_ptr().add(8), lanes[1]);
    let mut sum = l.iter().sum::<f32>();
    // The last, partial sixteen (none when the row is whole sixteens), through a stack
    // copy: its weights, then added one by one.
    if sixteens < n {
        let tail = &mut x[sixteens..];
        let mut buf = [0f32; 16];
        buf[..tail.len()].copy_from_slice(tail);
        weigh(buf.as_mut_ptr());
        weigh(buf.as_mut_ptr().add(8));
        tail.copy_from_slice(&buf[..tail.len()]);
        sum = tail.iter().fold(sum, |s, &v| s + v);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::super::math::{softmax_row_at, softmax_weights_at, SimdLevel};
    use super::{LN2, LO, POLY};

    /// The cut exponential in scalar steps: the same fused multiply-adds, and `p · 2ⁿ`
    /// rounded once (exact in f64, then to f32).
    fn exp_neg(x: f32) -> f32 {
        let xc = if x.is_nan() { x } else { x.max(LO) };
        let t = xc.mul_add(std::f32::consts::LOG2_E, 12_582_912.0);
        let nf = t - 12_582_912.0;
        let r = nf.mul_add(-LN2[0], xc);
        let r = nf.mul_add(-LN2[1], r);
        let mut p = POLY[0];
        for c in &POLY[1..] {
            p = p.mul_add(r, *c);
        }
        (p as f64 * 2f64.powi(nf as i32)) as f32
    }

    /// The softmax weights and their sum in the kernels' order: 64 lanes, then 16, then
    /// one at a time.
    fn weights(x: &mut [f32]) -> f32 {
        let larger = |a: f32, b: f32| if b > a { b } else { a };
        let (wide, sixteens) = (x.len() / 64 * 64, x.len() / 16 * 16);
        let mut m = [f32::NEG_INFINITY; 64];
        for (i, &v) in x[..wide].iter().enumerate() {
            m[i % 64] = larger(m[i % 64], v);
        }
        let mut lanes = [f32::NEG_INFINITY; 16];
        for (i, &v) in m.iter().chain(&x[wide..sixteens]).enumerate() {
            lanes[i % 16] = larger(lanes[i % 16], v);
        }
        let max =
            x[sixteens..].iter().fold(lanes.iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v)), |m, &v| larger(m, v));
        x.iter_mut().for_each(|v| *v = exp_neg(*v - max));
        let mut s = [0f32; 64];
        for (i, &v) in x[..wide].iter().enumerate() {
            s[i % 64] += v;
        }
        let mut lanes = [0f32; 16];
        for (i, &v) in s.iter().chain(&x[wide..sixteens]).enumerate() {
            lanes[i % 16] += v;
        }
        x[sixteens..].iter().fold(lanes.iter().sum::<f32>(), |s, &v| s + v)
    }

    /// Rows of every split into 64-, 16- and 1-wide parts: spread values, masked keys
    /// (the most negative f32), values about 87 to 120 below the maximum (subnormal
    /// weights and zeros), a NaN.
    fn rows() -> Vec<Vec<f32>> {
        let mut rows = Vec::new();
        for n in (1..=130).chain([197, 1568, 1571]) {
            let base: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 60.0).collect();
            let masked = base.iter().enumerate().map(|(i, &v)| if i % 5 == 2 { f32::MIN } else { v }).collect();
            let far =
                base.iter().enumerate().map(|(i, &v)| if i % 3 == 0 { -57.0 - (i % 34) as f32 } else { v }).collect();
            let nan = base.iter().enumerate().map(|(i, &v)| if i == n / 2 && n > 1 { f32::NAN } else { v }).collect();
            rows.extend([base, masked, far, nan]);
        }
        rows
    }

    /// The AVX2 softmax gives the scalar formula's bits: each weight, the sum and the
    /// scaled row.
    #[test]
    #[ignore = "needs AVX2 and FMA: scripts/test.sh runs it where /proc/cpuinfo lists them"]
    fn the_avx2_softmax_gives_the_scalar_formulas_bits() {
        same_bits_at(SimdLevel::Avx2Fma);
    }

    /// The AVX-512 softmax gives the same scalar formula's bits, so the two levels agree.
    #[test]
    #[ignore = "needs AVX-512F: scripts/test.sh runs it where /proc/cpuinfo lists it"]
    fn the_avx512_softmax_gives_the_scalar_formulas_bits() {
        same_bits_at(SimdLevel::Avx512);
    }

    fn same_bits_at(level: SimdLevel) {
        assert!(level.available(), "this CPU lacks {level:?}");
        // Bits, where a NaN only has to be a NaN (its payload is the hardware's business).
        let bits = |v: &[f32]| v.iter().map(|f| if f.is_nan() { u32::MAX } else { f.to_bits() }).collect::<Vec<_>>();
        for row in rows() {
            let (mut want, mut got, mut scaled) = (row.clone(), row.clone(), row.clone());
            let sum = weights(&mut want);
            let got_sum = softmax_weights_at(level, &mut got);
            let n = row.len();
            assert_eq!(bits(&got), bits(&want), "{level:?} weights, n={n}");
            assert_eq!(bits(&[got_sum]), bits(&[sum]), "{level:?} sum, n={n}");
            softmax_row_at(level, &mut scaled);
            let inv = 1.0 / sum;
            assert_eq!(bits(&scaled), bits(&want.iter().map(|w| w * inv).collect::<Vec<_>>()), "{level:?} row, n={n}");
        }
    }
}
