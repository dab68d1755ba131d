//! The FMA peak of one core: multiply-accumulates per second that the native
//! backend's SIMD level can issue when nothing waits on memory, measured rather than
//! looked up (clocks move under a hypervisor, with load and with the number of busy
//! cores). `graft bench` divides a forward's matrix-multiply work by its time and by
//! this figure, so a latency reads as a share of what the core can do at most.
//!
//! The loop keeps 12 independent accumulators (more than an FMA's latency times the
//! FMA units of current x86 cores, so the units never wait on a result), each an
//! `a = a·b + c` over a full vector register. The portable level has no FMA on x86:
//! there a multiply and an add count as one multiply-accumulate, as its kernels do.

use super::math::SimdLevel;
use std::time::{Duration, Instant};

/// How long to measure: 12 rounds of ~4 ms, the fastest kept (a descheduled round
/// reads slow, never fast).
const ROUNDS: usize = 12;
const ROUND: Duration = Duration::from_millis(4);

/// Multiply-accumulates per second of one core at `level` (the fastest of several
/// short rounds on the calling thread).
pub fn fma_macs_per_sec(level: SimdLevel) -> f64 {
    let lanes = lanes(level) as f64;
    // Iterations per round, calibrated once so a round lasts about ROUND.
    let mut iters = 1 << 12;
    loop {
        let t = time(level, iters);
        if t >= ROUND / 4 {
            iters = ((iters as f64) * ROUND.as_secs_f64() / t.as_secs_f64()).ceil() as usize;
            break;
        }
        iters *= 4;
    }
    let best = (0..ROUNDS).map(|_| time(level, iters)).min().unwrap_or(ROUND);
    (iters * ACC) as f64 * lanes / best.as_secs_f64().max(1e-9)
}

/// Accumulators of the loop.
const ACC: usize = 12;

fn lanes(level: SimdLevel) -> usize {
    match level {
        SimdLevel::Avx512 => 16,
        SimdLevel::Avx2Fma => 8,
        SimdLevel::Portable => 4,
    }
}

fn time(level: SimdLevel, iters: usize) -> Duration {
    let t0 = Instant::now();
    let sink = run(level, iters);
    let dt = t0.elapsed();
    std::hint::black_box(sink);
    dt
}

fn run(level: SimdLevel, iters: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: each variant runs only at a level the CPU has (`math::level` and
        // `--simd` admit no other).
        match level {
            SimdLevel::Avx512 if level.available() => return unsafe { x86::avx512(iters) },
            SimdLevel::Avx2Fma if level.available() => return unsafe { x86::avx2(iters) },
            _ => {}
        }
    }
    portable(iters)
}

/// Four-lane multiply then add (what the portable kernels issue), 12 chains.
fn portable(iters: usize) -> f32 {
    let mut acc = [[1.0f32; 4]; ACC];
    let (b, c) = (std::hint::black_box(0.999_999f32), std::hint::black_box(1e-7f32));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            for v in a.iter_mut() {
                *v = *v * b + c;
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::ACC;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(iters: usize) -> f32 {
        let mut acc = [_mm256_set1_ps(1.0); ACC];
        let (b, c) = (_mm256_set1_ps(std::hint::black_box(0.999_999)), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        let mut s = _mm256_setzero_ps();
        for a in acc {
            s = _mm256_add_ps(s, a);
        }
        _mm_cvtss_f32(_mm256_castps256_ps128(s))
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn avx512(iters: usize) -> f32 {
        let mut acc = [_mm512_set1_ps(1.0); ACC];
        let (b, c) = (_mm512_set1_ps(std::hint::black_box(0.999_999)), _mm512_set1_ps(1e-7));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        let mut s = _mm512_setzero_ps();
        for a in acc {
            s = _mm512_add_ps(s, a);
        }
        _mm512_reduce_add_ps(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_available_level_measures_a_finite_positive_rate() {
        let levels = SimdLevel::all_available();
        let rates: Vec<f64> = levels.iter().map(|&l| fma_macs_per_sec(l)).collect();
        for (l, r) in levels.iter().zip(&rates) {
            // Above 10 MMAC/s (any core of this century), below 10 TMAC/s (none).
            assert!(r.is_finite() && *r > 1e7 && *r < 1e13, "{l:?}: {r}");
        }
    }
}
