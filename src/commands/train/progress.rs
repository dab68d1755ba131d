//! The terminal's view of a run ([`Terminal`], an [`Observer`]): notes and the banner
//! on stderr, the summary on stdout, and progress on stderr: a live bar (loss,
//! samples/s, ETA) when stderr is a terminal, otherwise a plain line every tenth of
//! the run, so logs of CI and tests stay short.

use super::events::{Observer, TrainEvent};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    start_step: u64,
    every: u64,
    started: Instant,
    /// Print nothing (the ranks other than 0 of a data-parallel run).
    quiet: bool,
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
        Progress { bar, total, start_step, every, started: Instant::now(), quiet: false }
    }

    /// A progress that prints nothing.
    pub fn quiet(start_step: u64, total: u64) -> Progress {
        Progress { bar: None, total, start_step, every: 1, started: Instant::now(), quiet: true }
    }

    /// After optimizer step `step` (1-based count of steps taken).
    pub fn step(&mut self, step: u64, loss: f32, lr: f64, samples_per_s: f64) {
        let msg = format!("loss {loss:.4} · lr {lr:.2e} · {samples_per_s:.0} samples/s");
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(msg);
            }
            None if self.quiet => {}
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
            None if self.quiet => {}
            None => eprintln!("{text}"),
        }
    }

    /// A line every rank shows, above the bar if there is one.
    pub fn note(&self, text: &str) {
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

/// `graft train` on the terminal.
#[derive(Default)]
pub struct Terminal {
    progress: Option<Progress>,
}

impl Observer for Terminal {
    fn event(&mut self, e: TrainEvent<'_>) {
        match e {
            TrainEvent::Note(n) => match &self.progress {
                Some(p) => p.note(&format!("note: {n}")),
                None => eprintln!("note: {n}"),
            },
            TrainEvent::Info(line) => eprintln!("{line}"),
            TrainEvent::Started { start, total, quiet } => {
                self.progress = Some(if quiet { Progress::quiet(start, total) } else { Progress::new(start, total) });
            }
            TrainEvent::Step { step, loss, lr, samples_per_s } => {
                if let Some(p) = &mut self.progress {
                    p.step(step, loss, lr, samples_per_s);
                }
            }
            TrainEvent::Validated { step, loss, accuracy, samples } => {
                if let Some(p) = &self.progress {
                    let pct = 100.0 * accuracy;
                    p.line(&format!("step {step}: val loss {loss:.4}, accuracy {pct:.2}% ({samples} samples)"));
                }
            }
            TrainEvent::Ended => {
                if let Some(p) = &self.progress {
                    p.finish();
                }
            }
            TrainEvent::Result(line) => println!("{line}"),
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
