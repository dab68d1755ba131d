//! Progress on stderr: a live bar (loss, samples/s, ETA) when stderr is a terminal,
//! otherwise a plain line every tenth of the run, so logs of CI and tests stay short.

#![allow(clippy::print_stdout, clippy::print_stderr)] // the progress display of `graft train`

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    start_step: u64,
    every: u64,
    started: Instant,
}

impl Progress {
    /// A run from `start_step` to `total` optimizer steps.
    pub fn new(start_step: u64, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{spinner} step {pos}/{len} [{wide_bar}] {msg} · ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            b.set_style(style);
            b.set_position(start_step);
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let every = (total.saturating_sub(start_step) / 10).max(1);
        Progress { bar, total, start_step, every, started: Instant::now() }
    }

    /// After optimizer step `step` (1-based count of steps taken).
    pub fn step(&mut self, step: u64, loss: f32, lr: f64, samples_per_s: f64) {
        let msg = format!("loss {loss:.4} · lr {lr:.2e} · {samples_per_s:.0} samples/s");
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(msg);
            }
            None => {
                let done = step - self.start_step;
                if done == 1 || done.is_multiple_of(self.every) || step == self.total {
                    let elapsed = self.started.elapsed().as_secs_f64();
                    let eta = elapsed / done as f64 * (self.total - step) as f64;
                    eprintln!("step {step}/{}  {msg}  eta {}", self.total, clock(eta));
                }
            }
        }
    }

    /// A line that does not disturb the bar.
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `1:02:03` or `2:03`.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}
