//! Learning-rate schedules: a linear warmup, then cosine decay to zero or a constant.
//!
//! The schedule is a pure function of the optimizer step, so a resumed run continues
//! on exactly the curve it left. Every parameter group's rate is multiplied by the
//! same factor.

use serde::{Deserialize, Serialize};

/// `--schedule`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Half a cosine from the peak rate (after warmup) to zero at the last step.
    Cosine,
    /// The peak rate throughout (after warmup).
    Constant,
}

#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Steps of linear warmup.
    pub warmup: u64,
    /// Total optimizer steps of the run.
    pub total: u64,
}

impl Schedule {
    /// The factor on the peak rate for optimizer step `step` (0-based: the first step
    /// taken is step 0). Warmup climbs linearly to 1 over `warmup` steps (step `i`
    /// gets `(i + 1) / warmup`); cosine then reaches 0 at `total`.
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup {
            return (step + 1) as f64 / self.warmup as f64;
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Cosine => {
                let span = self.total.saturating_sub(self.warmup).max(1) as f64;
                let progress = ((step - self.warmup) as f64 / span).min(1.0);
                0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_or_constant() {
        let s = Schedule { kind: ScheduleKind::Cosine, warmup: 4, total: 14 };
        assert_eq!(s.factor(0), 0.25);
        assert_eq!(s.factor(3), 1.0);
        assert_eq!(s.factor(4), 1.0);
        assert!((s.factor(9) - 0.5).abs() < 1e-12);
        assert!(s.factor(13) > 0.0 && s.factor(13) < 0.03);
        let c = Schedule { kind: ScheduleKind::Constant, ..s };
        assert_eq!(c.factor(1), 0.5);
        assert_eq!(c.factor(100), 1.0);
        let none = Schedule { kind: ScheduleKind::Cosine, warmup: 0, total: 1 };
        assert_eq!(none.factor(0), 1.0);
    }
}
