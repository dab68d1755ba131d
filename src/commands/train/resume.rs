//! Hyperparameters on `--resume`: a flag given now, or the resumed run's value, or a
//! default; the flags that decide the data stream must not change. And the one flag
//! with a syntax of its own, `--lr-for PATTERN=LR`.

use super::schedule::ScheduleKind;
use anyhow::{anyhow, bail, Result};

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

/// Parse `--lr-for PATTERN=LR` (the pattern may not contain `=`).
pub fn parse_lr_for(s: &str) -> Result<(String, f64)> {
    let (p, lr) = s
        .rsplit_once('=')
        .filter(|(p, l)| !p.is_empty() && !l.is_empty())
        .ok_or_else(|| anyhow!("--lr-for expects PATTERN=LR, e.g. 'cmr.*=1e-2', got `{s}`"))?;
    let lr: f64 = lr.trim().parse().map_err(|_| anyhow!("--lr-for {s}: `{lr}` is not a number"))?;
    if !lr.is_finite() || lr < 0.0 {
        bail!("--lr-for {s}: the learning rate must be a finite number >= 0");
    }
    Ok((p.trim().to_string(), lr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_for_parses_pattern_and_rate() {
        assert_eq!(parse_lr_for("cmr.*=1e-2").unwrap(), ("cmr.*".to_string(), 1e-2));
        assert!(parse_lr_for("cmr.*").is_err());
        assert!(parse_lr_for("x=abc").is_err());
        assert!(parse_lr_for("x=-1").unwrap_err().to_string().contains(">= 0"));
    }

    #[test]
    fn keep_merges_and_refuses_data_stream_changes() {
        let mut notes = Vec::new();
        assert_eq!(keep("lr", None, Some(0.5), false, &mut notes).unwrap(), Some(0.5));
        assert_eq!(keep("lr", Some(0.1), Some(0.5), false, &mut notes).unwrap(), Some(0.1));
        assert_eq!(notes, ["--lr is now 0.1 (the run so far used 0.5)"]);
        let e = keep("batch", Some(8usize), Some(16), true, &mut notes).unwrap_err().to_string();
        assert!(e.contains("--batch 8 differs from the resumed run's 16"), "{e}");
    }
}
