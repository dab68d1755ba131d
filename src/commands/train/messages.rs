//! What a run tells the user, as text: the banner when it starts, and the error (with
//! the last good checkpoint and a hint) when it stops on a non-finite value.

use super::args::Hyper;
use super::checkpoint::TRAINABLE;
use super::events::{Observer, TrainEvent};
use super::metrics::{Metrics, Record};
use super::schedule::ScheduleKind;
use crate::backend::train::ParamGroup;
use crate::backend::{Device, Plan};
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
    obs: &mut dyn Observer,
    c: &Ctx,
    step: u64,
    last: Option<&(u64, PathBuf)>,
    what: &str,
) -> anyhow::Error {
    obs.event(TrainEvent::Ended);
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

/// What the banner describes.
pub struct Banner<'a> {
    pub model: &'a str,
    pub plan: &'a Plan,
    pub groups: &'a [ParamGroup],
    pub ds: &'a Dataset,
    pub hyper: &'a Hyper,
    /// Global batches per epoch, and the global batch.
    pub per_epoch: u64,
    pub global: usize,
    pub start: u64,
    pub out: &'a Path,
    pub device: Device,
}

/// The banner's three lines.
pub fn header(b: &Banner) -> Vec<String> {
    let (mut total, mut trainable) = (0u64, 0u64);
    for p in b.plan.params() {
        total += p.numel();
        if p.trainable {
            trainable += p.numel();
        }
    }
    let groups: Vec<String> = b
        .groups
        .iter()
        .filter(|g| g.tensors > 0)
        .map(|g| match &g.pattern {
            Some(p) => format!("'{p}' lr {:e} ({} tensors)", g.lr, g.tensors),
            None => format!("lr {:e} ({} tensors)", g.lr, g.tensors),
        })
        .collect();
    let (h, global, per_epoch) = (b.hyper, b.global, b.per_epoch);
    let s = &h.schedule;
    let epochs = (s.total * h.accumulate as u64) as f64 / per_epoch as f64;
    let first = format!(
        "train {}: {} of {} parameters trainable; AdamW {}, weight decay {}{}",
        b.model,
        thousands(trainable),
        thousands(total),
        groups.join(", "),
        h.weight_decay,
        h.clip.map(|c| format!(", clip {c}")).unwrap_or_default()
    );
    let second = format!(
        "  data {}: {} samples, {per_epoch} batches of {}{} per epoch; {} steps ({epochs:.2} epochs{}), {} schedule, warmup {}",
        b.ds.dir.display(),
        b.ds.len(),
        global,
        if global != h.batch { format!(" ({} per rank)", h.batch) } else { String::new() },
        s.total,
        if h.accumulate > 1 { format!(", {} batches per step", h.accumulate) } else { String::new() },
        match s.kind {
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::Constant => "constant",
        },
        s.warmup
    );
    let from = if b.start > 0 { format!(", resuming at step {}", b.start) } else { String::new() };
    let device = match b.device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Cpu => "cpu".to_string(),
    };
    vec![first, second, format!("  device {device}, run directory {}{from}", b.out.display())]
}
