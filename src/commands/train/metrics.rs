//! `metrics.jsonl` (one JSON object per step, validation and stop) and `loss.svg`.
//!
//! Records carry a `kind`: `train` (step, epoch, loss, lr, grad norm, samples,
//! throughput, the time the step waited for data, the optional inputs the step's
//! batches lacked; with `--log-every N`, throughput and elapsed time are measured
//! when the values are read, so they are those of the interval), `val` (step, loss,
//! accuracy, samples) or `stop` (a run ended early, and why). Losses are f32 and print
//! in the shortest form that reads back to the same f32, so two runs can be compared
//! bit for bit from their files. A resumed run keeps the records up to its checkpoint
//! and appends after them.
//!
//! The plot is plain SVG written by hand: train loss on the left axis, validation
//! accuracy (0–100%) on the right, steps along the bottom.

use super::checkpoint::{METRICS, PLOT};
use crate::durable::write_atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Train {
        step: u64,
        epoch: u64,
        loss: f32,
        lr: f64,
        grad_norm: f64,
        samples: u64,
        samples_per_s: f64,
        elapsed_s: f64,
        /// Seconds the step waited for its batches from the reader.
        #[serde(default)]
        data_wait_s: f64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        missing: Vec<String>,
    },
    Val {
        step: u64,
        loss: f64,
        accuracy: f64,
        samples: u64,
    },
    Stop {
        step: u64,
        reason: String,
    },
}

impl Record {
    pub fn step(&self) -> u64 {
        match self {
            Record::Train { step, .. } | Record::Val { step, .. } | Record::Stop { step, .. } => *step,
        }
    }
}

/// The largest `metrics.jsonl` a resume reads back (about ten million records).
pub const MAX_METRICS_BYTES: usize = 4 << 30;

/// Read a `metrics.jsonl` (lines that do not parse are skipped): a regular file of at
/// most [`MAX_METRICS_BYTES`], so a FIFO or a device in its place is an error, not a
/// hang.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let bytes = crate::input_file::read_capped(path, MAX_METRICS_BYTES, "a metrics.jsonl")
        .with_context(|| format!("reading {} (the resumed run's metrics)", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// The open metrics file of a run and everything it holds.
pub struct Metrics {
    dir: PathBuf,
    /// `None`: records are kept but nothing is written (ranks other than 0).
    file: Option<std::fs::File>,
    pub records: Vec<Record>,
}

impl Metrics {
    /// Start `dir/metrics.jsonl`. Resuming from `from = (old run dir, step)` keeps the
    /// old run's train and val records up to that step.
    pub fn open(dir: &Path, from: Option<(&Path, u64)>) -> Result<Metrics> {
        let path = dir.join(METRICS);
        let mut records = Vec::new();
        if let Some((old, step)) = from {
            let old = old.join(METRICS);
            if old.exists() {
                records =
                    read(&old)?.into_iter().filter(|r| r.step() <= step && !matches!(r, Record::Stop { .. })).collect();
            }
        }
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        write_atomic(&path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Metrics { dir: dir.to_path_buf(), file: Some(file), records })
    }

    /// Metrics that are never written (a data-parallel rank other than 0).
    pub fn unwritten() -> Metrics {
        Metrics { dir: PathBuf::new(), file: None, records: Vec::new() }
    }

    pub fn push(&mut self, r: Record) -> Result<()> {
        let line = serde_json::to_string(&r)? + "\n";
        let Some(file) = &mut self.file else {
            self.records.push(r);
            return Ok(());
        };
        file.write_all(line.as_bytes()).with_context(|| format!("writing {}", self.dir.join(METRICS).display()))?;
        self.records.push(r);
        Ok(())
    }

    /// Write `loss.svg`.
    pub fn plot(&self) -> Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        Ok(write_atomic(&self.dir.join(PLOT), svg(&self.records).as_bytes())?)
    }
}

/// The plot of train loss and validation accuracy.
pub fn svg(records: &[Record]) -> String {
    let (w, h) = (640.0f64, 320.0f64);
    let (left, right, top, bottom) = (56.0, 56.0, 28.0, 40.0);
    let loss: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Train { step, loss, .. } if loss.is_finite() => Some((*step as f64, *loss as f64)),
            _ => None,
        })
        .collect();
    let acc: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Val { step, accuracy, .. } => Some((*step as f64, *accuracy)),
            _ => None,
        })
        .collect();
    let steps = loss.iter().chain(&acc).map(|p| p.0);
    let x0 = steps.clone().fold(f64::INFINITY, f64::min).min(0.0);
    let x1 = steps.fold(1.0f64, f64::max);
    let ymax = loss.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-6) * 1.05;
    let px = |x: f64| left + (x - x0) / (x1 - x0).max(1e-9) * (w - left - right);
    let py = |y: f64, max: f64| top + (1.0 - y / max) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let (xa, xb, ya, yb) = (left, w - right, top, h - bottom);
    let _ = writeln!(s, r##"<path d="M{xa} {ya}V{yb}H{xb}V{ya}" fill="none" stroke="#888"/>"##);
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let y = ya + (1.0 - f) * (yb - ya);
        let _ = writeln!(s, r##"<line x1="{xa}" y1="{y:.1}" x2="{xb}" y2="{y:.1}" stroke="#eee"/>"##);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#1f77b4">{}</text>"##,
            xa - 4.0,
            y + 4.0,
            short(f * ymax)
        );
        if !acc.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#d62728">{:.0}%</text>"##,
                xb + 4.0,
                y + 4.0,
                f * 100.0
            );
        }
        let step = x0 + f * (x1 - x0);
        let x = px(step);
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text>"##,
            yb + 14.0,
            step.round()
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">step</text>"##,
        (xa + xb) / 2.0,
        h - 6.0
    );
    let _ = writeln!(s, r##"<text x="{xa}" y="16" fill="#1f77b4">train loss</text>"##);
    if !acc.is_empty() {
        let _ = writeln!(s, r##"<text x="{xb}" y="16" text-anchor="end" fill="#d62728">val accuracy</text>"##);
    }
    let line = |pts: &[(f64, f64)], max: f64| {
        pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y, max))).collect::<Vec<_>>().join(" ")
    };
    if !loss.is_empty() {
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##,
            line(&loss, ymax)
        );
    }
    if !acc.is_empty() {
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#d62728" stroke-width="1.5"/>"##,
            line(&acc, 1.0)
        );
        for &(x, y) in &acc {
            let _ = writeln!(s, r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#d62728"/>"##, px(x), py(y, 1.0));
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A compact axis label.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_plot() {
        let r = Record::Train {
            step: 3,
            epoch: 0,
            loss: 0.1,
            lr: 1e-3,
            grad_norm: 2.0,
            samples: 48,
            samples_per_s: 100.0,
            elapsed_s: 0.5,
            data_wait_s: 0.25,
            missing: vec!["audio".into()],
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.starts_with(r#"{"kind":"train","step":3"#), "{line}");
        assert!(line.contains(r#""loss":0.1,"#), "f32 printed shortest: {line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        let v = Record::Val { step: 3, loss: 1.0, accuracy: 0.5, samples: 10 };
        let s = svg(&[r, v]);
        assert!(s.starts_with("<svg") && s.contains("polyline") && s.contains("val accuracy"));
        assert!(svg(&[]).contains("</svg>"));
    }
}
