//! Compiling one kernel body per instruction set: [`multiversion!`] builds it for
//! AVX-512, AVX2+FMA and the baseline and picks one per call from
//! [`super::math::level`] (the best the CPU has, or the native backend's `simd`
//! option). Kernels written with fixed lane arrays reduce in the same order in every
//! variant, so their results do not depend on the instruction set.

/// Define `pub fn name(args)` whose body is compiled for AVX-512, AVX2+FMA and the
/// baseline, and picked at each call (one well-predicted branch).
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn v4($($arg: $ty),*) { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn v3($($arg: $ty),*) { body($($arg),*) }
            match $crate::backend::native::math::level() {
                // SAFETY: `level()` reports only features the CPU has.
                #[cfg(target_arch = "x86_64")]
                $crate::backend::native::math::SimdLevel::Avx512 => unsafe { v4($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::backend::native::math::SimdLevel::Avx2Fma => unsafe { v3($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
