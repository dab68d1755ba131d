//! Hyperparameters on `--resume`: a flag given now, or the resumed run's value, or a
//! default; the flags that decide the data stream must not change.

use super::schedule::ScheduleKind;
use anyhow::{bail, Result};

/// A value given now, or the resumed run's, or a default. Values that decide the data
/// stream must not change on resume.
pub fn keep<T: PartialEq + Shown + Clone>(
    flag: &str,
    now: Option<T>,
    before: Option<T>,
    fixed: bool,
    notes: &mut Vec<String>,
) -> Result<Option<T>> {
    match (now, before) {
        (Some(n), Some(b)) if n != b => {
            if fixed {
                bail!(
                    "--{flag} {} differs from the resumed run's {}: an exact resume needs the same data stream (leave --{flag} out to keep it)",
                    n.shown(),
                    b.shown()
                );
            }
            notes.push(format!("--{flag} is now {} (the run so far used {})", n.shown(), b.shown()));
            Ok(Some(n))
        }
        (Some(n), _) => Ok(Some(n)),
        (None, b) => Ok(b),
    }
}

/// A flag's value as it is written on the command line (`0.5`, `none`, `cosine`,
/// `cmr.*=0.01`), for notes and errors.
pub trait Shown {
    fn shown(&self) -> String;
}

macro_rules! shown_display {
    ($($t:ty),*) => {$(impl Shown for $t {
        fn shown(&self) -> String {
            self.to_string()
        }
    })*};
}
shown_display!(usize, u64, f64);

impl Shown for Option<f64> {
    fn shown(&self) -> String {
        self.map_or_else(|| "none".to_string(), |v| v.to_string())
    }
}

impl Shown for ScheduleKind {
    fn shown(&self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

impl Shown for Vec<(String, f64)> {
    fn shown(&self) -> String {
        if self.is_empty() {
            return "none".to_string();
        }
        self.iter().map(|(p, lr)| format!("{p}={lr}")).collect::<Vec<_>>().join(", ")
    }
}
