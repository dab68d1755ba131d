//! What a run reports while it trains, as values: the training loop emits
//! [`TrainEvent`]s to an [`Observer`] and never writes to the terminal itself. The
//! terminal observer ([`super::progress::Terminal`]) renders them as `graft train`
//! always has (notes and the banner on stderr, a progress bar or plain lines, the
//! summary on stdout); tests and library callers pass their own ([`Quiet`], or one
//! that records).

/// One thing a run reports.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainEvent<'a> {
    /// A note about the run (`note: …` on stderr).
    Note(&'a str),
    /// A line of the banner: the run's settings, before the first step (stderr).
    Info(&'a str),
    /// The loop starts at step `start` of `total`; `quiet`: show no progress (the
    /// ranks other than 0 of a data-parallel run).
    Started { start: u64, total: u64, quiet: bool },
    /// Optimizer step `step` (a count of steps taken) is done.
    Step { step: u64, loss: f32, lr: f64, samples_per_s: f64 },
    /// A validation after `step`.
    Validated { step: u64, loss: f64, accuracy: f64, samples: u64 },
    /// The loop ended, finished or stopped: the progress display goes.
    Ended,
    /// A line of the result (stdout).
    Result(&'a str),
}

/// Receives a run's events, in order.
pub trait Observer {
    fn event(&mut self, e: TrainEvent<'_>);
}

/// An observer that drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _: TrainEvent<'_>) {}
}
