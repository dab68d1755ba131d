//! Vectorised f32 math for the native backend: `exp`, `erf`, `tanh`, exact-erf GELU,
//! sigmoid and a softmax row, over slices, with run-time CPU dispatch.
//!
//! Each function is one branch-free scalar formula (`*_one`) that LLVM vectorises; it is
//! compiled three times with different `#[target_feature]`s (AVX-512F, AVX2+FMA, and the
//! portable baseline). The best level the CPU has is detected once per process
//! ([`best`]); a thread runs at that level unless [`with_level`] lowers it for a scope
//! (the native backend's `simd` option, `graft run --simd`, for tests and for comparing
//! machines; the worker pool runs each region at its caller's level). A level the CPU
//! lacks is never used. `mul_add` is used only where FMA is enabled: without the
//! feature rustc calls libm's `fmaf`, which is two orders of magnitude slower.
//!
//! Accuracy (measured against f64 over wide ranges in the tests below):
//! - `exp`: ≤ 2 ulp for results in the normal range. Results below `f32::MIN_POSITIVE`
//!   are flushed to `0.0`; `x > 88.72284` gives `+inf`; `exp(-inf) = 0`, `exp(NaN) = NaN`.
//! - `erf`: a rational approximation on `[-3.925, 3.925]`, ±1 beyond (where `erf` rounds
//!   to ±1 in f32); absolute error ≤ 5e-7 (relative ≤ 1e-6). `erf(±inf) = ±1`, NaN stays NaN.
//! - `tanh`: an odd polynomial for `|x| < 0.625`, `1 − 2/(e^{2|x|}+1)` above, ≤ 4 ulp;
//!   `tanh(±inf) = ±1`, `tanh(±0) = ±0`.
//! - `gelu_erf`: `x/2·(1 + erf(x/√2))`, as LibTorch's exact GELU. Relative error ≤ 1e-6
//!   for `x ≥ -1`; below that the cancellation in `1 + erf` bounds the error absolutely
//!   (≤ 5e-7·|x|), as in LibTorch's own kernel. `gelu(+inf) = +inf`, `gelu(-inf) = -0`.
//! - `sigmoid`: `1/(1 + e^{-x})`, ≤ 4 ulp; saturates to exactly 0 and 1.
//! - NaN in gives NaN out everywhere.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level the kernels are compiled for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum SimdLevel {
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64); no FMA on x86.
    Portable,
    /// AVX2 + FMA (x86-64).
    Avx2Fma,
    /// AVX-512F + AVX2 + FMA (x86-64).
    Avx512,
}

impl SimdLevel {
    /// Whether this CPU can run kernels compiled for `self`.
    pub fn available(self) -> bool {
        match self {
            SimdLevel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => SimdLevel::Avx2Fma.available() && is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every level this CPU can run, lowest first.
    pub fn all_available() -> Vec<SimdLevel> {
        [SimdLevel::Portable, SimdLevel::Avx2Fma, SimdLevel::Avx512].into_iter().filter(|l| l.available()).collect()
    }

    /// Lower-case name, as `--simd` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Portable => "portable",
            SimdLevel::Avx2Fma => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    fn from_u8(v: u8) -> Option<SimdLevel> {
        match v {
            0 => Some(SimdLevel::Portable),
            1 => Some(SimdLevel::Avx2Fma),
            2 => Some(SimdLevel::Avx512),
            _ => None,
        }
    }
}

/// The best level this CPU has: detected once, then cached.
pub fn best() -> SimdLevel {
    static BEST: AtomicU8 = AtomicU8::new(u8::MAX);
    SimdLevel::from_u8(BEST.load(Ordering::Relaxed)).unwrap_or_else(|| {
        let l = *SimdLevel::all_available().last().unwrap_or(&SimdLevel::Portable);
        BEST.store(l as u8, Ordering::Relaxed);
        l
    })
}

thread_local! {
    /// This thread's level while a [`with_level`] scope runs (`u8::MAX`: none).
    static SCOPED: Cell<u8> = const { Cell::new(u8::MAX) };
}

/// The level every dispatched function here uses on this thread: the innermost
/// [`with_level`] scope's, else [`best`]. Always one the CPU has.
pub fn level() -> SimdLevel {
    SimdLevel::from_u8(SCOPED.with(Cell::get)).unwrap_or_else(best)
}

/// Run `f` with this thread's dispatched kernels at `level` (the previous level comes
/// back afterwards, also when `f` panics).
///
/// # Panics
/// When the CPU does not have `level` ([`SimdLevel::available`]): callers check first.
pub fn with_level<R>(level: SimdLevel, f: impl FnOnce() -> R) -> R {
    assert!(level.available(), "SIMD level {level:?} not available on this CPU");
    struct Restore(u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(SCOPED.with(|c| c.replace(level as u8)));
    f()
}

/// `a·b + c`, fused when the level has FMA (the choice is made at compile time).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

const EXP_HI: f32 = 88.722_84; // ln(f32::MAX)
const EXP_LO: f32 = -87.336_55; // ln(f32::MIN_POSITIVE)

/// `e^x`: Cody–Waite reduction `x = n·ln2 + r`, a degree-6 polynomial on
/// `|r| ≤ ln2/2` (Cephes' `expf` coefficients), `2^n` built in the exponent bits.
#[inline(always)]
fn exp_one<const FMA: bool>(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let xc = x.clamp(EXP_LO, EXP_HI); // NaN stays NaN
    let t = madd::<FMA>(xc, std::f32::consts::LOG2_E, MAGIC);
    let n = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32); // in [-126, 128]
    let nf = t - MAGIC;
    let r = madd::<FMA>(nf, -0.693_359_4, xc);
    let r = madd::<FMA>(nf, 2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 5e-1);
    let p = madd::<FMA>(p, r * r, r) + 1.0;
    // 2^n for n ≤ 127 directly; n = 128 as 2·2^127 so exp(88.5) stays finite.
    let big = n > 127;
    let n = if big { 127 } else { n };
    let scale = f32::from_bits(((n + 127) as u32) << 23);
    let p = if big { p * 2.0 } else { p };
    let y = p * scale;
    if x > EXP_HI {
        f32::INFINITY
    } else if x < EXP_LO {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// `erf(x)`: odd rational `x·P(x²)/Q(x²)` on `[-3.925, 3.925]` (the form Eigen and XLA use).
#[inline(always)]
fn erf_one<const FMA: bool>(x: f32) -> f32 {
    // Beyond ±3.925, erf rounds to ±1 in f32; the rational's tail does not reach it.
    let x = x.clamp(-3.925, 3.925);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10;
    p = madd::<FMA>(p, x2, 2.770_681_4e-8);
    p = madd::<FMA>(p, x2, -2.101_024e-6);
    p = madd::<FMA>(p, x2, -5.692_506_4e-5);
    p = madd::<FMA>(p, x2, -7.349_906_3e-4);
    p = madd::<FMA>(p, x2, -2.954_6e-3);
    p = madd::<FMA>(p, x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5;
    q = madd::<FMA>(q, x2, -2.133_740_6e-4);
    q = madd::<FMA>(q, x2, -1.682_827e-3);
    q = madd::<FMA>(q, x2, -7.373_329e-3);
    q = madd::<FMA>(q, x2, -1.426_474e-2);
    let y = x * p / q;
    if x.abs() >= 3.925 {
        1.0f32.copysign(x)
    } else {
        y
    }
}

/// `tanh(x)`: Cephes' `tanhf` (odd polynomial below 0.625, exp form above).
#[inline(always)]
fn tanh_one<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let mut p = -5.704_988_7e-3;
    p = madd::<FMA>(p, z, 2.063_909e-2);
    p = madd::<FMA>(p, z, -5.373_971_6e-2);
    p = madd::<FMA>(p, z, 1.333_144_2e-1);
    p = madd::<FMA>(p, z, -3.333_328e-1);
    let small = madd::<FMA>(p * z, x, x).copysign(x); // keeps tanh(-0) = -0
    let e = exp_one::<FMA>(2.0 * a.min(10.0));
    let large = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else if x.is_nan() {
        x
    } else {
        large
    }
}

/// Exact-erf GELU: `x/2·(1 + erf(x/√2))`.
#[inline(always)]
fn gelu_one<const FMA: bool>(x: f32) -> f32 {
    let y = 0.5 * x * (1.0 + erf_one::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2));
    if x < -10.0 {
        -0.0
    } else {
        y
    }
}

/// `1 / (1 + e^{-x})`.
#[inline(always)]
fn sigmoid_one<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp_one::<FMA>(-x))
}

/// Softmax of one row in place: [`softmax_weights_generic`], then the scale.
#[inline(always)]
fn softmax_row_generic<const FMA: bool>(x: &mut [f32]) {
    let inv = 1.0 / softmax_weights_generic::<FMA>(x);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The weights of a softmax of one row in place, unscaled, and their sum: max, then
/// `e^{x−max}` with the sum taken as it is stored. The row must have a finite maximum
/// (masking is the caller's business). The max and the sum keep 64 lanes (four AVX-512
/// registers, eight AVX2 ones; float adds are not reassociated, so the lanes are spelt
/// out), then 16 for what is left of the row, then one: with only 16 each pass was a chain of dependent adds or maxes, four
/// cycles a register, and the softmax over VideoMAE's 1568-wide score rows ran at
/// about a cycle per element.
#[inline(always)]
fn softmax_weights_generic<const FMA: bool>(x: &mut [f32]) -> f32 {
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let mut wide = [f32::NEG_INFINITY; 64];
    let mut chunks = x.chunks_exact(64);
    for c in &mut chunks {
        for (m, &v) in wide.iter_mut().zip(c) {
            *m = larger(*m, v);
        }
    }
    let mut lanes = [f32::NEG_INFINITY; 16];
    for part in wide.chunks_exact(16) {
        for (m, &v) in lanes.iter_mut().zip(part) {
            *m = larger(*m, v);
        }
    }
    let mut rest = chunks.remainder().chunks_exact(16);
    for c in &mut rest {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = larger(*m, v);
        }
    }
    let max =
        rest.remainder().iter().fold(lanes.iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v)), |m, &v| larger(m, v));
    let mut wide = [0.0f32; 64];
    let mut chunks = x.chunks_exact_mut(64);
    for c in &mut chunks {
        for (a, v) in wide.iter_mut().zip(c) {
            *v = exp_one::<FMA>(*v - max);
            *a += *v;
        }
    }
    let mut lanes = [0.0f32; 16];
    for part in wide.chunks_exact(16) {
        for (a, &v) in lanes.iter_mut().zip(part) {
            *a += v;
        }
    }
    let mut rest = chunks.into_remainder().chunks_exact_mut(16);
    for c in &mut rest {
        for (a, v) in lanes.iter_mut().zip(c) {
            *v = exp_one::<FMA>(*v - max);
            *a += *v;
        }
    }
    let mut sum = lanes.iter().sum::<f32>();
    for v in rest.into_remainder() {
        *v = exp_one::<FMA>(*v - max);
        sum += *v;
    }
    sum
}

/// Defines one slice kernel at every level plus its dispatchers.
macro_rules! kernels {
    ($($(#[$doc:meta])* $name:ident / $with:ident = |$v:ident, $fma:ident| $(-> $ret:ty,)? $body:expr;)*) => {
        #[cfg(target_arch = "x86_64")]
        mod avx512 {
            use super::*;
            $(
                #[target_feature(enable = "avx512f,avx2,fma")]
                pub(super) fn $name($v: &mut [f32]) $(-> $ret)? {
                    const $fma: bool = true;
                    $body
                }
            )*
        }
        #[cfg(target_arch = "x86_64")]
        mod avx2 {
            use super::*;
            $(
                #[target_feature(enable = "avx2,fma")]
                pub(super) fn $name($v: &mut [f32]) $(-> $ret)? {
                    const $fma: bool = true;
                    $body
                }
            )*
        }
        mod portable {
            use super::*;
            $(
                pub(super) fn $name($v: &mut [f32]) $(-> $ret)? {
                    // aarch64 has FMA in its baseline; x86-64's baseline (SSE2) does not.
                    const $fma: bool = cfg!(target_arch = "aarch64");
                    $body
                }
            )*
        }
        $(
            $(#[$doc])*
            pub fn $name(x: &mut [f32]) $(-> $ret)? {
                $with(level(), x)
            }

            #[doc = concat!("[`", stringify!($name), "`] at a given level (which must be available).")]
            pub fn $with(level: SimdLevel, x: &mut [f32]) $(-> $ret)? {
                assert!(level.available(), "SIMD level {level:?} not available on this CPU");
                match level {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `available()` checked AVX-512F, AVX2 and FMA just above.
                    SimdLevel::Avx512 => unsafe { avx512::$name(x) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `available()` checked AVX2 and FMA just above.
                    SimdLevel::Avx2Fma => unsafe { avx2::$name(x) },
                    _ => portable::$name(x),
                }
            }
        )*
    };
}

kernels! {
    /// `x ← e^x` elementwise.
    exp_inplace / exp_inplace_at = |x, FMA| for v in x.iter_mut() { *v = exp_one::<FMA>(*v) };
    /// `x ← erf(x)` elementwise.
    erf_inplace / erf_inplace_at = |x, FMA| for v in x.iter_mut() { *v = erf_one::<FMA>(*v) };
    /// `x ← tanh(x)` elementwise.
    tanh_inplace / tanh_inplace_at = |x, FMA| for v in x.iter_mut() { *v = tanh_one::<FMA>(*v) };
    /// `x ← x/2·(1 + erf(x/√2))` elementwise (exact-erf GELU, as LibTorch's default).
    gelu_erf_inplace / gelu_erf_inplace_at =
        |x, FMA| for v in x.iter_mut() { *v = gelu_one::<FMA>(*v) };
    /// `x ← 1/(1 + e^{-x})` elementwise.
    sigmoid_inplace / sigmoid_inplace_at =
        |x, FMA| for v in x.iter_mut() { *v = sigmoid_one::<FMA>(*v) };
    /// [`softmax_row`] as the compiler vectorises it (the AVX-512 and AVX2 levels run
    /// the kernels written out in [`super::softmax512`] and [`super::softmax256`]).
    #[allow(dead_code)]
    softmax_row_lanes / softmax_row_lanes_at = |x, FMA| softmax_row_generic::<FMA>(x);
    /// [`softmax_weights`] as the compiler vectorises it.
    #[allow(dead_code)]
    softmax_weights_lanes / softmax_weights_lanes_at = |x, FMA| -> f32, softmax_weights_generic::<FMA>(x);
}

/// Softmax of one row in place (`e^{x−max} / Σ`); the row needs a finite maximum.
pub fn softmax_row(x: &mut [f32]) {
    softmax_row_at(level(), x)
}

/// [`softmax_row`] at a given level (which must be available): at AVX-512 the kernel
/// written out in [`super::softmax512`], at AVX2 the one in [`super::softmax256`] (the
/// same bits), elsewhere the vectorised loops.
pub fn softmax_row_at(level: SimdLevel, x: &mut [f32]) {
    assert!(level.available(), "SIMD level {level:?} not available on this CPU");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` checked AVX-512F just above.
        SimdLevel::Avx512 => unsafe { super::softmax512::softmax_row(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` checked AVX2 and FMA just above.
        SimdLevel::Avx2Fma => unsafe { super::softmax256::softmax_row(x) },
        _ => softmax_row_lanes_at(level, x),
    }
}

/// The weights `e^{x−max}` of a softmax of one row in place, unscaled, and their sum
/// (what [`softmax_row`] divides by; a caller that takes a weighted sum of the row can
/// scale that instead); the row needs a finite maximum.
pub fn softmax_weights(x: &mut [f32]) -> f32 {
    softmax_weights_at(level(), x)
}

/// [`softmax_weights`] at a given level (which must be available), as
/// [`softmax_row_at`] picks its kernels.
pub fn softmax_weights_at(level: SimdLevel, x: &mut [f32]) -> f32 {
    assert!(level.available(), "SIMD level {level:?} not available on this CPU");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` checked AVX-512F just above.
        SimdLevel::Avx512 => unsafe { super::softmax512::softmax_weights(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` checked AVX2 and FMA just above.
        SimdLevel::Avx2Fma => unsafe { super::softmax256::softmax_weights(x) },
        _ => softmax_weights_lanes_at(level, x),
    }
}

#[cfg(test)]
#[path = "math_tests.rs"]
mod tests;
