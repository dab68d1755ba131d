//! Accuracy of the vectorised math against f64 references, at every SIMD level this
//! CPU has (the portable level always runs), over wide ranges and edge values.
#![allow(clippy::print_stderr)] // the measured accuracy is printed with --nocapture

use super::*;

/// Deterministic samples: a dense grid over `[lo, hi]` plus seeded uniform values.
fn samples(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..=n).map(|i| lo + (hi - lo) * (i as f32 / n as f32)).collect();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..n {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let u = (s >> 40) as f32 / (1u64 << 24) as f32;
        v.push(lo + (hi - lo) * u);
    }
    v
}

/// Distance in units of the last place of `reference` (rounded to f32).
fn ulps(y: f32, reference: f64) -> f64 {
    let r = reference as f32;
    let spacing = f32::from_bits(r.abs().to_bits() + 1) - r.abs();
    (y as f64 - reference).abs() / (spacing.max(f32::MIN_POSITIVE * f32::EPSILON) as f64)
}

type Kernel = fn(SimdLevel, &mut [f32]);

/// Runs `f` at every available level on `xs`; returns the worst ulp error versus `reference`.
fn worst_ulps(f: Kernel, xs: &[f32], reference: fn(f64) -> f64) -> Vec<(SimdLevel, f64, f32)> {
    SimdLevel::all_available()
        .into_iter()
        .map(|level| {
            let mut y = xs.to_vec();
            f(level, &mut y);
            let (mut worst, mut at) = (0.0f64, 0.0f32);
            for (&x, &y) in xs.iter().zip(&y) {
                let e = ulps(y, reference(x as f64));
                if e > worst {
                    (worst, at) = (e, x);
                }
            }
            (level, worst, at)
        })
        .collect()
}

fn check_ulps(name: &str, f: Kernel, xs: &[f32], reference: fn(f64) -> f64, max: f64) {
    for (level, worst, at) in worst_ulps(f, xs, reference) {
        assert!(worst <= max, "{name} at {level:?}: {worst:.2} ulp at x = {at:e} (max {max})");
    }
}

/// Exact values at every level for the edge inputs.
fn check_edges(f: Kernel, cases: &[(f32, f32)]) {
    for level in SimdLevel::all_available() {
        let mut y: Vec<f32> = cases.iter().map(|c| c.0).collect();
        f(level, &mut y);
        for (&(x, want), &got) in cases.iter().zip(&y) {
            let same = (want.is_nan() && got.is_nan()) || want.to_bits() == got.to_bits();
            assert!(same, "{level:?}: f({x:e}) = {got:e}, expected {want:e}");
        }
    }
}

fn erf64(x: f64) -> f64 {
    libm::erf(x)
}

fn gelu64(x: f64) -> f64 {
    0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2)
}

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

#[test]
fn the_portable_level_is_always_available_and_the_detected_level_is_available() {
    assert!(SimdLevel::Portable.available());
    assert!(level().available());
    assert_eq!(SimdLevel::all_available()[0], SimdLevel::Portable);
}

#[test]
fn exp_is_within_2_ulp_over_the_normal_range() {
    check_ulps("exp", exp_inplace_at, &samples(-87.3, 88.7, 200_000), f64::exp, 2.0);
    check_ulps("exp", exp_inplace_at, &samples(-1.0, 1.0, 50_000), f64::exp, 2.0);
    check_ulps("exp", exp_inplace_at, &samples(88.0, 88.72, 10_000), f64::exp, 2.0);
}

#[test]
fn exp_edges() {
    check_edges(
        exp_inplace_at,
        &[
            (0.0, 1.0),
            (-0.0, 1.0),
            (88.8, INF),
            (1e30, INF),
            (INF, INF),
            (-88.0, 0.0),
            (-1e30, 0.0),
            (-INF, 0.0),
            (NAN, NAN),
        ],
    );
    for level in SimdLevel::all_available() {
        let mut y = [88.72f32, EXP_LO];
        exp_inplace_at(level, &mut y);
        assert!(y[0].is_finite() && y[0] > 3.3e38, "{level:?}: exp(88.72) = {}", y[0]);
        assert!(y[1] >= f32::MIN_POSITIVE * 0.999, "{level:?}: exp(lo) = {:e}", y[1]);
    }
}

#[test]
fn erf_is_within_5e_7_absolute_and_1e_6_relative() {
    for level in SimdLevel::all_available() {
        let xs = samples(-6.0, 6.0, 200_000);
        let mut y = xs.clone();
        erf_inplace_at(level, &mut y);
        for (&x, &y) in xs.iter().zip(&y) {
            let r = erf64(x as f64);
            let e = (y as f64 - r).abs();
            assert!(e <= 5e-7 && e <= 1e-6 * r.abs(), "{level:?}: erf({x}) = {y}, want {r}");
        }
    }
    check_ulps("erf", erf_inplace_at, &samples(-1e-3, 1e-3, 10_000), erf64, 8.0);
    check_edges(erf_inplace_at, &[(0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (10.0, 1.0), (NAN, NAN)]);
}

#[test]
fn tanh_is_within_4_ulp() {
    check_ulps("tanh", tanh_inplace_at, &samples(-12.0, 12.0, 200_000), f64::tanh, 4.0);
    check_ulps("tanh", tanh_inplace_at, &samples(-0.7, 0.7, 50_000), f64::tanh, 4.0);
    check_ulps("tanh", tanh_inplace_at, &samples(-1e-20, 1e-20, 1_000), f64::tanh, 1.0);
    check_edges(
        tanh_inplace_at,
        &[(0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (20.0, 1.0), (-20.0, -1.0), (NAN, NAN)],
    );
}

const GELU_REL_FROM: f32 = -1.0;

#[test]
fn gelu_is_within_1e_6_relative_above_minus_1_5_and_absolutely_below() {
    for level in SimdLevel::all_available() {
        let xs = samples(-12.0, 12.0, 200_000);
        let mut y = xs.clone();
        gelu_erf_inplace_at(level, &mut y);
        let (mut rel, mut abs) = (0.0f64, 0.0f64);
        for (&x, &y) in xs.iter().zip(&y) {
            let r = gelu64(x as f64);
            let e = (y as f64 - r).abs();
            if x >= GELU_REL_FROM {
                rel = rel.max(e / r.abs().max(1e-30));
            } else {
                abs = abs.max(e / x.abs() as f64);
            }
        }
        assert!(rel <= 1e-6 && abs <= 5e-7, "{level:?}: rel {rel:e}, abs/|x| {abs:e}");
    }
    check_edges(gelu_erf_inplace_at, &[(0.0, 0.0), (INF, INF), (-INF, -0.0), (-20.0, -0.0), (20.0, 20.0), (NAN, NAN)]);
}

#[test]
fn sigmoid_is_within_4_ulp_and_saturates() {
    let reference = |x: f64| 1.0 / (1.0 + (-x).exp());
    check_ulps("sigmoid", sigmoid_inplace_at, &samples(-80.0, 80.0, 200_000), reference, 4.0);
    check_edges(sigmoid_inplace_at, &[(0.0, 0.5), (INF, 1.0), (-INF, 0.0), (100.0, 1.0), (-100.0, 0.0), (NAN, NAN)]);
}

#[test]
fn softmax_row_matches_f64_and_sums_to_one() {
    for level in SimdLevel::all_available() {
        for n in [1usize, 7, 8, 9, 197, 1000] {
            let xs: Vec<f32> = samples(-20.0, 20.0, n).into_iter().take(n).collect();
            let max = xs.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let sum: f64 = xs.iter().map(|&v| (v as f64 - max).exp()).sum();
            let mut y = xs.clone();
            softmax_row_at(level, &mut y);
            for (&x, &y) in xs.iter().zip(&y) {
                let d = x as f64 - max;
                let r = d.exp() / sum;
                // `x − max` itself rounds in f32: half an ulp of |d| is an error of e^d.
                let tol = r * (2e-6 + d.abs() * f32::EPSILON as f64 / 2.0) + 1e-37;
                assert!((y as f64 - r).abs() <= tol, "{level:?} n={n}: {y} vs {r}");
            }
        }
    }
}

/// Every length's split into 64-, 16- and 1-wide parts: within 3e-7 of the f64
/// softmax (relative, plus what `x − max` rounds); masked keys (the most negative f32)
/// weigh exactly 0, a row of them only averages, values far below the maximum give
/// their tiny weights or, under the least normal f32, possibly 0.
#[test]
fn softmax_rows_of_every_length_with_masked_keys() {
    for level in SimdLevel::all_available() {
        for n in (1..=200).chain([1568, 1571]) {
            let base: Vec<f32> = samples(-30.0, 30.0, n).into_iter().take(n).collect();
            let masked: Vec<f32> =
                base.iter().enumerate().map(|(i, &v)| if i % 5 == 2 { f32::MIN } else { v }).collect();
            let far: Vec<f32> = base.iter().enumerate().map(|(i, &v)| if i % 7 == 0 { v - 95.0 } else { v }).collect();
            for row in [base, masked, far, vec![f32::MIN; n]] {
                let mut y = row.clone();
                softmax_row_at(level, &mut y);
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let e: Vec<f64> = row
                    .iter()
                    .map(|&v| if v == f32::MIN && max > f32::MIN as f64 { 0.0 } else { (v as f64 - max).exp() })
                    .collect();
                let sum: f64 = e.iter().sum();
                for ((&x, &y), &e) in row.iter().zip(&y).zip(&e) {
                    let r = e / sum;
                    if x == f32::MIN && max > f32::MIN as f64 {
                        assert_eq!(y, 0.0, "{level:?} n={n}: a masked key weighs exactly 0");
                        continue;
                    }
                    let d = x as f64 - max;
                    let tol = r * (3e-7 + d.abs() * f32::EPSILON as f64 / 2.0) + f32::MIN_POSITIVE as f64;
                    assert!((y as f64 - r).abs() <= tol, "{level:?} n={n}: {y} vs {r}");
                }
            }
        }
    }
}

/// The unscaled weights and their sum are the softmax before its scale: the weights
/// times the sum's reciprocal give the softmax's bits at every level, and the sum is
/// that of the weights (to the rounding of a different order of adds).
#[test]
fn softmax_weights_are_the_softmax_before_its_scale() {
    for level in SimdLevel::all_available() {
        for n in [1, 15, 16, 17, 64, 100, 197, 1568, 1571] {
            let row: Vec<f32> = samples(-20.0, 20.0, n).into_iter().take(n).collect();
            let (mut w, mut y) = (row.clone(), row);
            let sum = softmax_weights_at(level, &mut w);
            softmax_row_at(level, &mut y);
            let inv = 1.0 / sum;
            for (w, y) in w.iter().zip(&y) {
                assert_eq!((w * inv).to_bits(), y.to_bits(), "{level:?} n={n}");
            }
            let direct: f64 = w.iter().map(|&v| v as f64).sum();
            assert!((sum as f64 - direct).abs() <= direct * 1e-6, "{level:?} n={n}: {sum} vs {direct}");
        }
    }
}

/// Vector bodies and scalar tails compute the same formula, so a value's result never
/// depends on where it sits in a slice — the property that makes row splits exact.
#[test]
fn results_do_not_depend_on_position_or_slice_length() {
    let kernels: [(&str, Kernel); 5] = [
        ("exp", exp_inplace_at),
        ("erf", erf_inplace_at),
        ("tanh", tanh_inplace_at),
        ("gelu", gelu_erf_inplace_at),
        ("sigmoid", sigmoid_inplace_at),
    ];
    let xs = samples(-9.0, 9.0, 100);
    for level in SimdLevel::all_available() {
        for (name, f) in kernels {
            let mut whole = xs.clone();
            f(level, &mut whole);
            for len in [1usize, 3, 7, 16, 17, 33] {
                let mut parts = xs.clone();
                parts.chunks_mut(len).for_each(|c| f(level, c));
                assert_eq!(whole, parts, "{name} at {level:?} differs with pieces of {len}");
            }
        }
    }
}

#[test]
fn a_level_scope_holds_on_this_thread_only_and_is_restored_after_a_panic() {
    let outer = level();
    assert_eq!(outer, best());
    with_level(SimdLevel::Portable, || {
        assert_eq!(level(), SimdLevel::Portable);
        // Another thread keeps the best level; a nested scope wins and unwinds.
        assert_eq!(std::thread::spawn(level).join().unwrap(), best());
        with_level(best(), || assert_eq!(level(), best()));
        assert_eq!(level(), SimdLevel::Portable);
    });
    assert_eq!(level(), outer);
    let r = std::panic::catch_unwind(|| with_level(SimdLevel::Portable, || panic!("inside")));
    assert!(r.is_err());
    assert_eq!(level(), outer);
}
