//! What a run tells the user: the banner when it starts, and the error (with the
//! last good checkpoint and a hint) when it stops on a non-finite value.

#![allow(clippy::print_stderr)] // `graft train`'s banner goes to the terminal

use super::checkpoint::TRAINABLE;
use super::metrics::{Metrics, Record};
use super::model::Model;
use super::optim::AdamW;
use super::progress::Progress;
use super::schedule::ScheduleKind;
use super::Hyper;
use crate::data::Dataset;
use crate::report::thousands;
use std::path::{Path, PathBuf};

/// The run's fixed context, for stop messages.
pub struct Ctx<'a> {
    pub hyper: &'a Hyper,
    pub ckpt_every: u64,
}

/// Record why the run stops and build the error (exit status 1).
pub fn stop(
    metrics: &mut Metrics,
    progress: &Progress,
    c: &Ctx,
    step: u64,
    last: Option<&(u64, PathBuf)>,
    what: &str,
) -> anyhow::Error {
    progress.finish();
    let _ = metrics.push(Record::Stop { step, reason: what.to_string() });
    let _ = metrics.plot();
    let kept = match last {
        Some((k, dir)) => format!(
            "the last good checkpoint (step {k}) is kept in {}; continue from it with --resume {}",
            dir.join(TRAINABLE).display(),
            dir.display()
        ),
        None => format!(
            "no checkpoint was written yet (the first is due at step {})",
            c.ckpt_every.min(c.hyper.schedule.total)
        ),
    };
    anyhow::anyhow!(
        "training stopped: {what}; {kept}\n  hint: lower --lr (now {:e}), add --warmup N or --clip X",
        c.hyper.lr
    )
}

#[allow(clippy::too_many_arguments)]
pub fn header(
    model: &Model,
    opt: &AdamW,
    ds: &Dataset,
    h: &Hyper,
    per_epoch: u64,
    start: u64,
    out: &Path,
    device: tch::Device,
) {
    let (mut total, mut trainable) = (0u64, 0u64);
    for (p, _) in model.params() {
        total += p.numel();
        if p.trainable {
            trainable += p.numel();
        }
    }
    let groups: Vec<String> = opt
        .groups
        .iter()
        .filter(|g| g.tensors > 0)
        .map(|g| match &g.pattern {
            Some(p) => format!("'{p}' lr {:e} ({} tensors)", g.lr, g.tensors),
            None => format!("lr {:e} ({} tensors)", g.lr, g.tensors),
        })
        .collect();
    let s = &h.schedule;
    let epochs = (s.total * h.accumulate as u64) as f64 / per_epoch as f64;
    eprintln!(
        "train {}: {} of {} parameters trainable; AdamW {}, weight decay {}{}",
        model.spec.compiled.model,
        thousands(trainable),
        thousands(total),
        groups.join(", "),
        h.weight_decay,
        h.clip.map(|c| format!(", clip {c}")).unwrap_or_default()
    );
    eprintln!(
        "  data {}: {} samples, {per_epoch} batches of {} per epoch; {} steps ({epochs:.2} epochs{}), {} schedule, warmup {}",
        ds.dir.display(),
        ds.len(),
        h.batch,
        s.total,
        if h.accumulate > 1 { format!(", {} batches per step", h.accumulate) } else { String::new() },
        match s.kind {
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::Constant => "constant",
        },
        s.warmup
    );
    let from = if start > 0 { format!(", resuming at step {start}") } else { String::new() };
    let device = match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    };
    eprintln!("  device {device}, run directory {}{from}", out.display());
}
