//! Bounds on every number a user gives graft outside a spec: command-line counts
//! (batch sizes, threads, iterations, steps, epochs, accumulation, `--dist-timeout`),
//! the counts in a dataset's `dataset.json`, and the same numbers read back from a
//! run's `state.json` on `--resume`. The spec front end has its own limits
//! ([`crate::lower::limits`]); these are the same idea for everything else.
//!
//! A number outside its range is refused before anything is allocated or started,
//! with the range in the message: a command-line value through clap's ranged parsers
//! (a usage error, exit 2), a derived value (epochs × batches per epoch) through
//! [`total_steps`] (exit 1). The ranges are far above any real run and far below
//! what would overflow, allocate without bound or loop for ever.

pub use clap::builder::{RangedI64ValueParser, RangedU64ValueParser};

/// Samples per batch (`--batch` of train, eval, bench).
pub const MAX_BATCH: u64 = 1 << 16;
/// Batches per optimizer step (`--accumulate`).
pub const MAX_ACCUMULATE: u64 = 1 << 12;
/// LibTorch intra-op threads (`bench --threads`).
pub const MAX_THREADS: i64 = 1024;
/// Timed or warmup iterations (`bench --iters`, `--warmup`).
pub const MAX_ITERS: u64 = 1_000_000;
/// Optimizer steps of a run (`--steps`, epochs × steps per epoch, `--warmup`,
/// `--checkpoint-every`, `--eval-every`).
pub const MAX_STEPS: u64 = 1 << 32;
/// Shards of one dataset (`shards` in `dataset.json`).
pub const MAX_SHARDS: u64 = 1 << 20;
/// Samples of one dataset (`samples` in `dataset.json`, `data synth --n`).
pub const MAX_SAMPLES: u64 = 1 << 40;
/// Samples `graft data synth --n` generates.
pub const MAX_SYNTH_SAMPLES: u64 = 1 << 24;
/// Bytes of one sample of one dataset input (its per-sample shape × element size).
pub const MAX_SAMPLE_BYTES: u64 = 1 << 32;
/// Classes of one dataset (`classes` in `dataset.json`).
pub const MAX_CLASSES: u64 = 1 << 24;
/// Ranks of one data-parallel run (`world_size` in a run's `state.json`).
pub const MAX_WORLD: u64 = 1 << 16;
/// Seconds the rendezvous and each collective may wait (`--dist-timeout`): a week.
/// Far below what c10d's nanosecond clocks overflow at (about 9.2e9 s).
pub const MAX_TIMEOUT_S: f64 = 7.0 * 24.0 * 3600.0;

/// Temporal clips or spatial crops per sample at evaluation (`eval --clips`,
/// `--crops`; VideoMAE tests with 5 × 3, or 2 × 3).
pub const MAX_VIEWS: u64 = 32;

/// `I/K` (`data sample --clip 1/3`): view `I`, counted from 0, of `K` in
/// `1..=MAX_VIEWS`.
pub fn view_of(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}`: expected I/K, view I (from 0) of K, with I < K ≤ {MAX_VIEWS}, e.g. 0/3");
    let (i, k) = s.split_once('/').ok_or_else(bad)?;
    let (i, k) = (i.trim().parse::<u32>().map_err(|_| bad())?, k.trim().parse::<u32>().map_err(|_| bad())?);
    if k == 0 || k as u64 > MAX_VIEWS || i >= k {
        return Err(bad());
    }
    Ok((i, k))
}

/// A `usize` count in `1..=max`.
pub fn count(max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(1..=max)
}

/// A `u64` count in `1..=max`.
pub fn count64(max: u64) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::<u64>::new().range(1..=max)
}

/// A `u64` in `0..=max`.
pub fn upto64(max: u64) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::<u64>::new().range(0..=max)
}

/// A `usize` iteration count in `0..=MAX_ITERS` (`--warmup`).
pub fn iters_or_zero() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(0..=MAX_ITERS)
}

/// An `i64` batch size in `1..=MAX_BATCH` (bench's `--batch 1,8`).
pub fn batch_i64() -> RangedI64ValueParser<i64> {
    RangedI64ValueParser::<i64>::new().range(1..=MAX_BATCH as i64)
}

/// A thread count in `1..=MAX_THREADS`.
pub fn threads() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(1..=MAX_THREADS as u64)
}

/// A number of seconds in `(0, MAX_TIMEOUT_S]` (`--dist-timeout`), for clap.
pub fn timeout_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    check_timeout(v)?;
    Ok(v)
}

/// A timeout in seconds: finite, above 0 and at most [`MAX_TIMEOUT_S`].
pub fn check_timeout(v: f64) -> Result<(), String> {
    if !(v.is_finite() && v > 0.0 && v <= MAX_TIMEOUT_S) {
        let shown = if v.abs() < 1e15 { v.to_string() } else { format!("{v:e}") };
        return Err(format!("{shown} s is outside 0 < SECS <= {MAX_TIMEOUT_S} (a week)"));
    }
    Ok(())
}

/// Optimizer steps for `epochs` epochs of `per_epoch` batches, `accumulate` batches
/// per step: checked, and at most [`MAX_STEPS`].
pub fn total_steps(epochs: u64, per_epoch: u64, accumulate: u64) -> Result<u64, String> {
    let steps = epochs
        .checked_mul(per_epoch)
        .map(|b| b.div_ceil(accumulate.max(1)))
        .filter(|&s| s <= MAX_STEPS)
        .ok_or_else(|| {
            format!(
                "--epochs {epochs} × {per_epoch} batches per epoch / --accumulate {accumulate} is more than {MAX_STEPS} optimizer steps"
            )
        })?;
    Ok(steps)
}

/// A count read from a file, checked against `1..=max` (or `0..=max` when `zero`).
pub fn check_count(what: &str, value: u64, max: u64, zero: bool) -> Result<(), String> {
    if value == 0 && !zero {
        return Err(format!("`{what}` is 0; it must be at least 1"));
    }
    if value > max {
        return Err(format!("`{what}` is {value}; at most {max} is supported"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_times_steps_never_wraps() {
        assert_eq!(total_steps(3, 10, 4), Ok(8));
        assert!(total_steps(1 << 40, 1 << 30, 1).unwrap_err().contains("more than"));
        assert!(total_steps(u64::MAX, 2, 1).is_err());
        assert!(check_count("shards", 1_000_000_000_000, MAX_SHARDS, false).unwrap_err().contains("at most"));
        assert!(check_count("shards", 0, MAX_SHARDS, false).is_err());
        assert!(check_count("samples", 0, MAX_SAMPLES, true).is_ok());
    }

    #[test]
    fn timeouts_are_bounded_before_any_duration_is_made() {
        assert_eq!(timeout_secs("8"), Ok(8.0));
        assert_eq!(timeout_secs("604800"), Ok(MAX_TIMEOUT_S));
        for bad in ["0", "-1", "nan", "inf", "18446744073709551615", "9.3e9", "604800.5"] {
            let e = timeout_secs(bad).unwrap_err();
            assert!(e.contains("0 < SECS <= 604800") || e.contains("not a number"), "{bad}: {e}");
        }
    }
}
