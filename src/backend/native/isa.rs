//! Run-time CPU dispatch for the rustc kernels: AVX-512 → AVX2+FMA → portable.
//!
//! [`isa`] detects the best instruction set once; `GRAFT_NATIVE_ISA=scalar|avx2|avx512`
//! lowers it (never raises it past what the CPU has), so tests can run the portable
//! and the best variant on any machine. [`multiversion!`] compiles one kernel body
//! three times with different `target_feature`s. Kernels written with fixed lane
//! arrays reduce in the same order in every variant, so results do not depend on the
//! instruction set.

use std::sync::OnceLock;

/// An instruction-set level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512",
        }
    }
}

fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// The level the kernels use in this process.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = detected();
        let wanted = match std::env::var("GRAFT_NATIVE_ISA").as_deref() {
            Ok("scalar") => Isa::Scalar,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        best.min(wanted)
    })
}

/// Define `pub fn name(args)` whose body is compiled for AVX-512, AVX2+FMA and the
/// baseline, and picked by [`isa`] at each call (one well-predicted branch).
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            unsafe fn v4($($arg: $ty),*) { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn v3($($arg: $ty),*) { body($($arg),*) }
            match $crate::backend::native::isa::isa() {
                // SAFETY: `isa()` reports only features the CPU has.
                #[cfg(target_arch = "x86_64")]
                $crate::backend::native::isa::Isa::Avx512 => unsafe { v4($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::backend::native::isa::Isa::Avx2 => unsafe { v3($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
