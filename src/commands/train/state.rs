//! `state.json`, a checkpoint's resume point: where the data stream stands and the
//! hyperparameters, enough to continue a run exactly.
//!
//! `--resume` trusts nothing in it. Every number is checked against the bounds of the
//! flag it stands for ([`crate::bounds`]) and against the others (the step within the
//! schedule, the epoch within the batches taken, the position within an epoch of at
//! most [`MAX_SAMPLES`] samples), so an edited or corrupt file is refused before it
//! can wrap a counter or change the data order. And the file is bound to its
//! checkpoint's tensors: the trainable file's metadata holds the digest of the exact
//! bytes of `state.json` written beside it (`state_digest`; checked in
//! [`super::checkpoint::verify`]).

use super::args::Hyper;
use super::rundir::{STATE, TRAINABLE};
use crate::bounds::{check_count, MAX_ACCUMULATE, MAX_BATCH, MAX_SAMPLES, MAX_STEPS, MAX_WORLD};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `format` field of `state.json`.
pub const STATE_FORMAT: &str = "graft.train-state.v1";
/// The metadata key of the trainable file that holds `state.json`'s digest.
pub const STATE_DIGEST: &str = "state_digest";
/// A `state.json` larger than this is not one graft wrote.
const MAX_STATE_BYTES: usize = 16 << 20;

/// `state.json`: where a run stands, enough to continue it exactly.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct State {
    pub format: String,
    pub model: String,
    pub graph_fingerprint: String,
    /// Optimizer steps taken.
    pub step: u64,
    /// The epoch of the next batch.
    pub epoch: u64,
    /// Batches of `epoch` already consumed.
    pub position: u64,
    /// Samples seen so far.
    pub samples: u64,
    /// The training data directory, as given.
    pub data: String,
    pub hyper: Hyper,
    /// Ranks of a data-parallel run (1: a single process).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Samples per batch over all ranks (`hyper.batch` × `world_size`); `position`
    /// counts batches of this size.
    #[serde(default)]
    pub global_batch: usize,
}

fn one() -> usize {
    1
}

/// The digest of `state.json`'s bytes, as the trainable file's metadata records it.
pub fn digest(text: &[u8]) -> String {
    crate::rng::fnv64(&[b"graft state.json\0", text])
}

impl State {
    /// `dir/state.json` (`dir`: a checkpoint directory, or a run of the older layout):
    /// parsed and checked ([`Self::check`]), with the digest of its bytes.
    pub fn load(dir: &Path) -> Result<(State, String)> {
        let path = dir.join(STATE);
        let text = crate::input_file::read_capped(&path, MAX_STATE_BYTES, "a state.json").with_context(|| {
            if dir.join(TRAINABLE).exists() {
                format!("reading {} (the checkpoint has no resume state)", path.display())
            } else {
                format!("reading {}: is {} a run directory of `graft train`?", path.display(), dir.display())
            }
        })?;
        let s: State =
            serde_json::from_slice(&text).with_context(|| format!("{}: not a graft train state", path.display()))?;
        s.check().map_err(|e| anyhow!("{}: {e}; the file is corrupt or was edited", path.display()))?;
        Ok((s, digest(&text)))
    }

    /// The text of `state.json`.
    pub fn text(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }

    /// Every field within the bounds of its flag and consistent with the others
    /// (the error names the field).
    pub fn check(&self) -> Result<()> {
        if self.format != STATE_FORMAT {
            bail!("`format` is `{}`, expected `{STATE_FORMAT}`", self.format);
        }
        let h = &self.hyper;
        let count = |what: &str, v: u64, max: u64, zero: bool| check_count(what, v, max, zero).map_err(|e| anyhow!(e));
        count("hyper.batch", h.batch as u64, MAX_BATCH, false)?;
        count("hyper.accumulate", h.accumulate as u64, MAX_ACCUMULATE, false)?;
        count("world_size", self.world_size as u64, MAX_WORLD, false)?;
        count("hyper.schedule.total", h.schedule.total, MAX_STEPS, false)?;
        count("hyper.schedule.warmup", h.schedule.warmup, MAX_STEPS, true)?;
        let global = h.batch * self.world_size;
        if self.global_batch != 0 && self.global_batch != global {
            bail!(
                "`global_batch` is {}, but `hyper.batch` {} × `world_size` {} is {global}",
                self.global_batch,
                h.batch,
                self.world_size
            );
        }
        if self.step > h.schedule.total {
            bail!("`step` is {}, past the run's last step (`hyper.schedule.total` {})", self.step, h.schedule.total);
        }
        // Each step takes `accumulate` batches and each epoch at least one of them (one
        // more per resume onto smaller data, which can skip an epoch's end).
        let epochs = self.step * (h.accumulate as u64 + 1);
        if self.epoch > epochs {
            bail!(
                "`epoch` is {}; {} steps of {} batch(es) each cannot get past epoch {epochs}",
                self.epoch,
                self.step,
                h.accumulate
            );
        }
        // An epoch is at most MAX_SAMPLES samples, in batches of `global`.
        let per_epoch = MAX_SAMPLES / global as u64;
        if self.position >= per_epoch {
            bail!("`position` is {}; an epoch has fewer than {per_epoch} batches of {global}", self.position);
        }
        let most = self.step as u128 * h.accumulate as u128 * MAX_BATCH as u128 * MAX_WORLD as u128;
        if self.samples as u128 > most.min(u64::MAX as u128 / 2) {
            bail!("`samples` is {}; {} steps see at most {most} samples", self.samples, self.step);
        }
        let finite = |what: &str, v: f64, zero: bool| {
            if !(v.is_finite() && (v > 0.0 || (zero && v == 0.0))) {
                bail!("`{what}` is {v}; expected a finite number {}", if zero { ">= 0" } else { "> 0" });
            }
            Ok(())
        };
        finite("hyper.lr", h.lr, true)?;
        finite("hyper.weight_decay", h.weight_decay, true)?;
        for (pattern, lr) in &h.lr_for {
            finite(&format!("hyper.lr_for {pattern}"), *lr, true)?;
        }
        if let Some(c) = h.clip {
            finite("hyper.clip", c, false)?;
        }
        Ok(())
    }

    /// Write `dir/state.json` durably.
    pub fn write(&self, dir: &Path) -> Result<()> {
        Ok(crate::durable::write_atomic(&dir.join(STATE), self.text()?.as_bytes())?)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::schedule::{Schedule, ScheduleKind};
    use super::*;

    /// A state in bounds, of step 4 (the checkpoint tests write it too).
    pub(in crate::commands::train) fn state() -> State {
        let schedule = Schedule { kind: ScheduleKind::Constant, warmup: 0, total: 10 };
        let hyper = Hyper {
            batch: 8,
            accumulate: 2,
            seed: 0,
            drop_last: true,
            lr: 0.01,
            weight_decay: 0.01,
            lr_for: vec![],
            clip: None,
            schedule,
        };
        State {
            format: STATE_FORMAT.into(),
            model: "m".into(),
            graph_fingerprint: "00".into(),
            step: 4,
            epoch: 2,
            position: 1,
            samples: 64,
            data: "data".into(),
            hyper,
            world_size: 1,
            global_batch: 8,
        }
    }

    #[test]
    fn every_field_is_bounded() {
        state().check().unwrap();
        let refused = |edit: fn(&mut State), want: &str| {
            let mut s = state();
            edit(&mut s);
            let e = s.check().unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        };
        refused(|s| s.epoch = u64::MAX, "`epoch` is 18446744073709551615");
        refused(|s| s.position = u64::MAX, "`position` is");
        refused(|s| s.step = 11, "past the run's last step");
        refused(|s| s.hyper.accumulate = 1_000_000_000, "`hyper.accumulate` is 1000000000; at most 4096");
        refused(|s| s.hyper.batch = 0, "`hyper.batch` is 0");
        refused(|s| s.world_size = 1 << 20, "`world_size` is 1048576");
        refused(|s| s.global_batch = 16, "`global_batch` is 16");
        refused(|s| s.samples = u64::MAX, "`samples` is");
        refused(|s| s.hyper.schedule.total = u64::MAX, "`hyper.schedule.total`");
        refused(|s| s.hyper.lr = f64::NAN, "`hyper.lr` is NaN");
        refused(|s| s.hyper.clip = Some(0.0), "`hyper.clip` is 0");
        refused(|s| s.format = "x".into(), "`format` is `x`");
    }
}
