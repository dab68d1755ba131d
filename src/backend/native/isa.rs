//! Compiling one kernel body per instruction set: [`multiversion!`] builds it for
//! AVX-512, AVX2+FMA and the baseline and picks one per call from
//! [`super::math::level`] (the best the CPU has, or the native backend's `simd`
//! option). Kernels written with fixed lane arrays reduce in the same order in every
//! variant, so their results do not depend on the instruction set. [`l2_bytes`] tells
//! the kernels that block for it how much level-2 cache a core has.

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

/// Bytes of level-2 cache per core as CPUID describes it (Intel's deterministic cache
/// leaf 4, else AMD's leaf 0x8000_0006), read once; `None` where the CPU does not say.
pub fn l2_bytes() -> Option<usize> {
    static L2: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *L2.get_or_init(l2_from_cpuid)
}

#[cfg(target_arch = "x86_64")]
fn l2_from_cpuid() -> Option<usize> {
    use std::arch::x86_64::__cpuid_count;
    let max = __cpuid_count(0, 0).eax;
    if max >= 4 {
        // Subleaves describe one cache each until a null type: level in EAX[7:5], type in
        // EAX[4:0] (1 data, 3 unified); size = ways × partitions × line × sets.
        for sub in 0..16 {
            let r = __cpuid_count(4, sub);
            let kind = r.eax & 0x1f;
            if kind == 0 {
                break;
            }
            if (r.eax >> 5) & 0x7 == 2 && (kind == 1 || kind == 3) {
                let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
                let parts = ((r.ebx >> 12) & 0x3ff) as usize + 1;
                let line = (r.ebx & 0xfff) as usize + 1;
                let sets = r.ecx as usize + 1;
                return Some(ways * parts * line * sets);
            }
        }
    }
    if __cpuid_count(0x8000_0000, 0).eax >= 0x8000_0006 {
        let kib = (__cpuid_count(0x8000_0006, 0).ecx >> 16) as usize;
        if kib > 0 {
            return Some(kib * 1024);
        }
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn l2_from_cpuid() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    /// The size CPUID gives is the one Linux reports for cpu0's level-2 cache, which it
    /// reads from the same leaves: where a hypervisor hides them, both say nothing.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn l2_size_agrees_with_sysfs() {
        let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
        let read =
            |index: &str, file: &str| std::fs::read_to_string(dir.join(index).join(file)).map(|s| s.trim().to_string());
        let sysfs =
            (0..8).map(|i| format!("index{i}")).find(|i| read(i, "level").ok().as_deref() == Some("2")).map(|i| {
                let size = read(&i, "size").expect("the level-2 cache's size");
                size.trim_end_matches('K').parse::<usize>().expect("sysfs size in KiB") * 1024
            });
        assert_eq!(super::l2_bytes(), sysfs);
    }
}
