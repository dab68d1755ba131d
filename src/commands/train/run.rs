//! A run from its arguments to its first step: lock and recover the run directory,
//! resolve the hyperparameters (fresh, or merged with `state.json`'s), compile the
//! spec and check the data, load the model onto the backend, open the metrics, show
//! the banner; then the loop ([`super::session`]).
//!
//! The run directory is locked before anything in it is read, and what a killed
//! writer left there is cleaned up; a new directory is locked when it is created.
//! `--resume A --out B` only reads A: its newest good checkpoint is chosen where it
//! lies, nothing in A is locked, moved or removed.
//! Under torchrun only rank 0 touches the run directory.

use super::args::{Hyper, TrainArgs, DEFAULT_CHECKPOINT_EVERY, DEFAULT_LOG_EVERY_CUDA, DEFAULT_WEIGHT_DECAY};
use super::checkpoint::{self, Proof, State, TrainableFile, STATE};
use super::events::{Observer, TrainEvent};
use super::messages::{header, Banner};
use super::metrics::Metrics;
use super::progress::Terminal;
use super::resume::{keep, parse_lr_for};
use super::rundir::{self, RunLock};
use super::schedule::{Schedule, ScheduleKind};
use super::session::{Loop, Position, Trained};
use super::spec::Spec;
use crate::backend::torch::dist::Env;
use crate::backend::torch::train::dist::DistOptions;
use crate::backend::torch::train::{TorchTrainer, TorchTraining};
use crate::backend::torch::TorchBackend;
use crate::backend::train::{TrainOptions, Trainer, Training};
use crate::data::Dataset;
use crate::safetensors::SafeFile;
use anyhow::{anyhow, bail, Context, Result};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// Run `graft train` on LibTorch, shown on the terminal; `None` when the spec has
/// errors (printed).
pub fn run(a: &TrainArgs) -> Result<Option<Trained<TorchTrainer>>> {
    run_with(a, &mut Terminal::default())
}

/// [`run`], reporting to `obs`. Under torchrun, joins the data-parallel run first.
pub fn run_with(a: &TrainArgs, obs: &mut dyn Observer) -> Result<Option<Trained<TorchTrainer>>> {
    let device = a.device.device(&TorchBackend)?;
    let env = Env::from_env()?;
    let dist = DistOptions { backend: a.dist_backend, timeout_s: a.dist_timeout, pinned: a.device.pinned() };
    let training = TorchTraining::join(device, env, dist)?;
    train_on(&training, a, obs)
}

/// Train on a backend's [`Training`]; a rank that fails tells the others why.
pub fn train_on<S: Training>(s: &S, a: &TrainArgs, obs: &mut dyn Observer) -> Result<Option<Trained<S::Trainer>>> {
    let r = train(s, a, obs);
    match &r {
        // Every rank sees a finished run for itself: not a failure.
        Err(e) if e.is::<Finished>() => {}
        Err(e) => s.publish_failure(e.to_string().lines().next().unwrap_or("unknown error")),
        Ok(None) => s.publish_failure("the spec has errors"),
        Ok(Some(_)) => {}
    }
    r
}

fn train<S: Training>(s: &S, a: &TrainArgs, obs: &mut dyn Observer) -> Result<Option<Trained<S::Trainer>>> {
    let main = s.rank() == 0;
    let mut dir = open_dir(a, main)?;
    let f = flags(a, dir.prev.as_ref(), &mut dir.notes)?;
    let cuda = matches!(s.device(), crate::backend::Device::Cuda(_));
    let log_every = log_every(a, s);
    let opts = TrainOptions {
        seed: f.seed,
        lr: f.lr,
        lr_for: f.lr_for.clone(),
        weight_decay: f.weight_decay,
        clip: f.clip,
        accumulate: f.accumulate,
        graph_capture: a.cuda_graph,
        autocast: a.autocast.is_some(),
        log_every: log_every as usize,
    };
    s.check(&opts)?;
    let (spec, ds, val) = load_data(a, main, cuda, obs)?;
    let plan = plan_run(a, &dir, &f, &ds, s.world())?;
    let mut trainer = load_model(a, s, &spec, &mut dir, &plan.hyper, &opts)?;
    let (lock, metrics) = open_outputs(&dir, main)?;
    let settings = vec![
        ("graph".to_string(), spec.identity.fingerprint.clone()),
        ("hyperparameters".to_string(), serde_json::to_string(&plan.hyper)?),
        (
            "data".to_string(),
            format!("{} samples in {} shards, {} classes", ds.len(), ds.shards.len(), ds.meta.classes),
        ),
        ("start step".to_string(), plan.start.to_string()),
        ("device".to_string(), if cuda { "cuda" } else { "cpu" }.to_string()),
    ];
    trainer.replicate(&settings)?;
    if a.log_every.is_some_and(|n| n > 1) && !trainer.defers() && main {
        let why = "--log-every: steps of several batches (--accumulate) or several ranks read every step's loss";
        obs.event(TrainEvent::Note(why));
    }
    if main {
        banner(a, s, &spec, &trainer, &ds, &dir, &plan, obs);
    }
    let ckpt_every = a.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT_EVERY).max(1);
    let at = Position::resumed(dir.prev.as_ref(), plan.global, s.world(), main, obs);
    let run = Loop {
        s,
        a,
        spec: &spec,
        trainer,
        hyper: plan.hyper,
        ckpt_every,
        eval_every: a.eval_every.unwrap_or(ckpt_every).max(1),
        log_every,
        out: dir.out.clone(),
        last_ckpt: dir.prev.as_ref().zip(dir.resume.clone()).map(|(p, d)| (p.step, d)),
        metrics,
        _lock: lock,
    };
    run.run(&ds, val.as_ref(), plan.start, at, obs).map(Some)
}

/// The run directory as this invocation found it.
struct RunDir {
    out: PathBuf,
    /// `--resume` names `out` itself.
    in_place: bool,
    lock: Option<RunLock>,
    /// The resumed run's state (none for a fresh run, or a resumed one killed
    /// before its first checkpoint).
    prev: Option<State>,
    /// The resumed run's directory, when there is a state to resume.
    resume: Option<PathBuf>,
    /// The checkpoint in it that is resumed, proven, its files held open from the proof
    /// to the load.
    ckpt: Option<Held>,
    notes: Vec<String>,
}

/// A resumed checkpoint's directory and its proven files, still open.
struct Held {
    dir: PathBuf,
    trainable: TrainableFile,
    optimizer: SafeFile,
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Refuse a directory that already holds a run, unless resuming it in place.
fn no_run_in(dir: &Path, in_place: bool) -> Result<()> {
    if rundir::latest(dir)?.is_some() && !in_place {
        bail!(
            "{} already holds a run: pass --resume {} to continue it, or choose another --out",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Lock and recover `--out` (rank 0), and read the resumed run's state.
fn open_dir(a: &TrainArgs, main: bool) -> Result<RunDir> {
    let out = a.out.clone().or_else(|| a.resume.clone()).ok_or_else(|| anyhow!("--out RUN_DIR is required"))?;
    let in_place = a.resume.as_deref().is_some_and(|r| same_dir(r, &out));
    let mut notes = Vec::new();
    let mut lock = None;
    let mut ckpt = None;
    let was_run = rundir::is_run(&out);
    let proven = Proven::default();
    if main && out.is_dir() {
        let l = rundir::lock(&out)?;
        if was_run {
            notes.extend(rundir::recover(&out, &l, |d| proven.good(d))?);
        }
        lock = Some(l);
    }
    no_run_in(&out, in_place)?;
    let prev = match a.resume.as_deref() {
        // A run killed before its first checkpoint: the same command starts it afresh.
        Some(r) if in_place && was_run && rundir::latest(r)?.is_none() && a.batch.is_some() && a.lr.is_some() => {
            notes.push(format!("{} has no complete checkpoint yet: starting from step 0", r.display()));
            None
        }
        Some(r) => {
            // The newest checkpoint (in place: the one recovery kept), proven before
            // anything of it is used.
            let dir = if in_place {
                rundir::latest(r)?.unwrap_or_else(|| r.to_path_buf())
            } else {
                resume_point(r, &out, &proven, &mut notes)?
            };
            let Proof { state, notes: checked, trainable, optimizer } = proven.verify(&dir)?;
            notes.extend(checked);
            ckpt = Some(Held { dir, trainable, optimizer });
            Some(state)
        }
        None => None,
    };
    let resume = prev.as_ref().and(a.resume.clone());
    Ok(RunDir { out, in_place, lock, prev, resume, ckpt, notes })
}

/// `--resume A --out B`: A is only read, so it is neither locked nor recovered. Its
/// newest good checkpoint by the rule of recovery ([`rundir::newest_good`]), chosen
/// where it lies; notes say which step and which newer checkpoints were skipped and
/// why. With no good checkpoint, the newest (proven next) says what is wrong. A trainer
/// may still be writing A and removing its older checkpoints: where the listing changed
/// while a checkpoint was skipped, or none was good, A is read again (at most three
/// times), and the chosen one's files stay open from its proof to the load.
fn resume_point(run: &Path, out: &Path, proven: &Proven, notes: &mut Vec<String>) -> Result<PathBuf> {
    let mut tries = 0;
    let choice = loop {
        let seen = rundir::checkpoints(run)?;
        let c = rundir::newest_good(run, |d| proven.good(d))?;
        let doubtful = c.as_ref().is_none_or(|c| !c.skipped.is_empty());
        if doubtful && tries < 3 && rundir::checkpoints(run)? != seen {
            tries += 1;
            continue;
        }
        break c;
    };
    let Some(c) = choice else {
        return Ok(rundir::latest(run)?.unwrap_or_else(|| run.to_path_buf()));
    };
    if c.skipped.is_empty() && c.temporaries == 0 {
        return Ok(c.dir);
    }
    notes.push(format!(
        "--resume {}: resuming from step {}, its newest good checkpoint ({})",
        run.display(),
        c.step,
        c.dir.display()
    ));
    for (step, dir, why) in &c.skipped {
        notes.push(format!("skipped the newer checkpoint of step {step} ({}): {why}", dir.display()));
    }
    if c.temporaries > 0 {
        notes.push(format!("ignored {} temporary file(s) an interrupted run left in {}", c.temporaries, run.display()));
    }
    notes.push(format!(
        "{} is left as it is (the run continues in {}); `--resume {}` alone would recover it",
        run.display(),
        out.display(),
        run.display()
    ));
    Ok(c.dir)
}

/// [`checkpoint::verify`] remembering its last success, so that the checkpoint recovery
/// or [`rundir::newest_good`] has just proven is not read and checksummed again.
#[derive(Default)]
struct Proven(RefCell<Option<(PathBuf, Proof)>>);

impl Proven {
    /// Prove `dir` (the `good` of recovery and `newest_good`).
    fn good(&self, dir: &Path) -> Result<()> {
        let proof = checkpoint::prove(dir)?;
        *self.0.borrow_mut() = Some((dir.to_path_buf(), proof));
        Ok(())
    }

    /// `dir`'s state and notes: the last proof's if it was of `dir`, else proven now.
    fn verify(&self, dir: &Path) -> Result<Proof> {
        match self.0.borrow_mut().take() {
            Some((d, proof)) if d == dir => Ok(proof),
            _ => checkpoint::prove(dir),
        }
    }
}

/// The flags as given, or the resumed run's (see [`keep`]), checked.
struct Flags {
    batch: usize,
    accumulate: usize,
    seed: u64,
    lr: f64,
    weight_decay: f64,
    lr_for: Vec<(String, f64)>,
    clip: Option<f64>,
    kind: ScheduleKind,
    warmup: u64,
}

fn flags(a: &TrainArgs, prev: Option<&State>, notes: &mut Vec<String>) -> Result<Flags> {
    let ph = prev.map(|p| &p.hyper);
    let batch =
        keep("batch", a.batch, ph.map(|h| h.batch), true, notes)?.ok_or_else(|| anyhow!("--batch N is required"))?;
    let accumulate = keep("accumulate", a.accumulate, ph.map(|h| h.accumulate), true, notes)?.unwrap_or(1);
    let seed = keep("seed", a.seed, ph.map(|h| h.seed), true, notes)?.unwrap_or(0);
    let lr = keep("lr", a.lr, ph.map(|h| h.lr), false, notes)?.ok_or_else(|| anyhow!("--lr X is required"))?;
    let weight_decay =
        keep("weight-decay", a.weight_decay, ph.map(|h| h.weight_decay), false, notes)?.unwrap_or(DEFAULT_WEIGHT_DECAY);
    let lr_for_now = if a.lr_for.is_empty() {
        None
    } else {
        Some(a.lr_for.iter().map(|s| parse_lr_for(s)).collect::<Result<Vec<_>>>()?)
    };
    let lr_for = keep("lr-for", lr_for_now, ph.map(|h| h.lr_for.clone()), false, notes)?.unwrap_or_default();
    let clip = keep("clip", a.clip.map(Some), ph.map(|h| h.clip), false, notes)?.flatten();
    let kind = keep("schedule", a.schedule, ph.map(|h| h.schedule.kind), false, notes)?.unwrap_or(ScheduleKind::Cosine);
    let warmup = keep("warmup", a.warmup, ph.map(|h| h.schedule.warmup), false, notes)?.unwrap_or(0);
    if batch == 0 || accumulate == 0 {
        bail!("--batch and --accumulate must be at least 1");
    }
    let finite_nonneg = |x: f64| x.is_finite() && x >= 0.0;
    if !finite_nonneg(lr) || !finite_nonneg(weight_decay) {
        bail!("--lr and --weight-decay must be finite numbers >= 0");
    }
    if clip.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        bail!("--clip must be a finite number > 0");
    }
    Ok(Flags { batch, accumulate, seed, lr, weight_decay, lr_for, clip, kind, warmup })
}

fn open_data(dir: &Path, flag: &str, workers: Option<usize>) -> Result<Dataset> {
    let ds = Dataset::open(dir).map_err(|e| anyhow!("--{flag} {}: {e}", dir.display()))?;
    Ok(ds.with_workers(workers.unwrap_or(0)))
}

/// The spec first (its errors are the likeliest), then the data against it.
fn load_data(a: &TrainArgs, main: bool, gpu: bool, obs: &mut dyn Observer) -> Result<(Spec, Dataset, Option<Dataset>)> {
    let mut spec = Spec::compile(&a.spec)?;
    spec.allow_nonfinite = a.allow_nonfinite;
    let ds = open_data(&a.data, "data", a.workers)?;
    for n in spec.check_dataset(&ds, "training data")? {
        if main {
            obs.event(TrainEvent::Note(&n));
        }
    }
    let raw = a.normalize_on.raw_inputs(&spec.plan, &ds, gpu);
    if main {
        for input in &raw {
            let note = format!("input `{input}` reads raw u8 pixels, normalised where the model runs (`--normalize-on host` normalises in the reader)");
            obs.event(TrainEvent::Note(&note));
        }
    }
    let ds = ds.with_raw(raw);
    let val = match &a.val {
        Some(v) => {
            let vds = open_data(v, "val", a.workers)?;
            for n in spec.check_dataset(&vds, "validation data")? {
                if main {
                    obs.event(TrainEvent::Note(&n));
                }
            }
            let raw = a.normalize_on.raw_inputs(&spec.plan, &vds, gpu);
            Some(vds.with_raw(raw))
        }
        None => None,
    };
    Ok((spec, ds, val))
}

/// The run's length and its hyperparameters.
struct RunPlan {
    hyper: Hyper,
    /// Global batches per epoch, and the global batch (per-rank batch × ranks).
    per_epoch: u64,
    global: usize,
    /// The step this invocation starts at.
    start: u64,
}

fn plan_run(a: &TrainArgs, dir: &RunDir, f: &Flags, ds: &Dataset, world: usize) -> Result<RunPlan> {
    let ph = dir.prev.as_ref().map(|p| &p.hyper);
    // Data-parallel: every rank reads the stream of global batches and keeps its share.
    let (batch, global) = (f.batch, f.batch * world);
    let drop_last = ph.map(|h| h.drop_last).unwrap_or_else(|| ds.num_batches(global, true) > 0);
    let per_epoch = ds.num_batches(global, drop_last) as u64;
    if per_epoch == 0 {
        bail!("--data {}: no batch of {global} (the dataset has {} samples)", a.data.display(), ds.len());
    }
    if world > 1 && (!drop_last || ds.num_batches(global, true) == 0) {
        bail!(
            "--data {}: {world} ranks need at least one full global batch of {global} samples (--batch {batch} × {world} ranks) per input combination",
            a.data.display()
        );
    }
    let total = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => crate::bounds::total_steps(e, per_epoch, f.accumulate as u64).map_err(|e| anyhow!(e))?,
        (None, None) => match ph {
            Some(h) => h.schedule.total,
            None => bail!("pass --steps N or --epochs N"),
        },
    };
    if let Some(p) = dir.prev.as_ref().filter(|p| p.world_size == world && Path::new(&p.data) == a.data) {
        if p.position >= per_epoch {
            bail!(
                "{}: `position` is {}, but an epoch of --data {} has {per_epoch} batches of {global}: {STATE} is corrupt or was edited",
                dir.resume.as_deref().unwrap_or(&dir.out).display(),
                p.position,
                a.data.display()
            );
        }
    }
    let start = dir.prev.as_ref().map_or(0, |p| p.step);
    if let (Some(d), true) = (&dir.resume, total == start) {
        return Err(anyhow!(Finished { dir: d.clone(), step: start }));
    }
    if total == 0 || total <= start {
        bail!("nothing to do: the run is at step {start} and --steps/--epochs give {total} steps in total");
    }
    let hyper = Hyper {
        batch,
        accumulate: f.accumulate,
        seed: f.seed,
        drop_last,
        lr: f.lr,
        weight_decay: f.weight_decay,
        lr_for: f.lr_for.clone(),
        clip: f.clip,
        schedule: Schedule { kind: f.kind, warmup: f.warmup, total },
    };
    Ok(RunPlan { hyper, per_epoch, global, start })
}

/// Notes about what a resume changes that no flag merge names.
fn resume_notes(a: &TrainArgs, dir: &mut RunDir, total: u64, kind: ScheduleKind) {
    let Some(p) = &dir.prev else { return };
    if p.hyper.schedule.total != total && kind == ScheduleKind::Cosine {
        dir.notes.push(format!(
            "the cosine schedule now spans {total} steps (was {}): the rate continues on the new curve",
            p.hyper.schedule.total
        ));
    }
    if Path::new(&p.data) != a.data {
        dir.notes.push(format!("--data {} (the run so far used {})", a.data.display(), p.data));
    }
}

/// The model on the backend, with the resumed run's tensors over the spec's weights
/// and its optimizer state.
fn load_model<S: Training>(
    a: &TrainArgs,
    s: &S,
    spec: &Spec,
    dir: &mut RunDir,
    hyper: &Hyper,
    opts: &TrainOptions,
) -> Result<S::Trainer> {
    resume_notes(a, dir, hyper.schedule.total, hyper.schedule.kind);
    // The files `open_dir` proved (their steps are the state's), read through the
    // handles it kept open.
    let held = dir.ckpt.take();
    let run = held.as_ref().map(|h| (&h.trainable, true));
    let (values, load_notes) = spec.materialise(&a.weights, &a.allow_missing, hyper.seed, run)?;
    dir.notes.extend(load_notes);
    let mut trainer = s.prepare(&spec.plan, spec.output, values, opts)?;
    if let Some(h) = &held {
        trainer.load_optimizer_state(&h.optimizer).with_context(|| format!("resuming from {}", h.dir.display()))?;
    }
    Ok(trainer)
}

/// Rank 0: create and lock `--out`, and start its metrics (a resumed run's records
/// up to its checkpoint first). Other ranks write nothing.
fn open_outputs(dir: &RunDir, main: bool) -> Result<(Option<RunLock>, Metrics)> {
    if !main {
        return Ok((None, Metrics::unwritten()));
    }
    let out = &dir.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let lock = match &dir.lock {
        Some(_) => None,
        None => {
            let l = rundir::lock(out)?;
            no_run_in(out, dir.in_place)?;
            Some(l)
        }
    };
    let from = dir.resume.as_deref().zip(dir.prev.as_ref().map(|p| p.step));
    Ok((lock, Metrics::open(out, from)?))
}

/// Steps between two reads of the losses: `--log-every`, else 10 on CUDA and 1 on the
/// CPU (where waiting for a step costs nothing).
fn log_every<S: Training>(a: &TrainArgs, s: &S) -> u64 {
    let cuda = matches!(s.device(), crate::backend::Device::Cuda(_));
    a.log_every.unwrap_or(if cuda { DEFAULT_LOG_EVERY_CUDA } else { 1 })
}

/// Rank 0: the notes gathered so far, the banner, and how the steps run.
#[allow(clippy::too_many_arguments)]
fn banner<S: Training>(
    a: &TrainArgs,
    s: &S,
    spec: &Spec,
    trainer: &S::Trainer,
    ds: &Dataset,
    dir: &RunDir,
    plan: &RunPlan,
    obs: &mut dyn Observer,
) {
    for n in &dir.notes {
        obs.event(TrainEvent::Note(n));
    }
    let groups = trainer.groups();
    let b = Banner {
        model: &spec.compiled.model,
        plan: &spec.plan,
        groups: &groups,
        ds,
        hyper: &plan.hyper,
        per_epoch: plan.per_epoch,
        global: plan.global,
        start: plan.start,
        out: &dir.out,
        device: s.device(),
    };
    for line in header(&b) {
        obs.event(TrainEvent::Info(&line));
    }
    if let Some(r) = trainer.reduction() {
        obs.event(TrainEvent::Info(&format!(
            "  data-parallel: {} ranks ({}), global batch {}; {} bucket(s), {:.2} MB all-reduced per step",
            s.world(),
            r.collective,
            plan.global,
            r.buckets,
            r.bytes as f64 / 1e6
        )));
    }
    let autocast = a.autocast.is_some();
    let graph = match (a.cuda_graph, trainer.defers()) {
        (true, true) => "the whole step in a CUDA graph",
        (true, false) => "forward + backward in a CUDA graph (optimizer eager)",
        (false, _) => "eager",
    };
    let read = match (trainer.defers(), log_every(a, s)) {
        (true, n) if n > 1 => format!(", losses read every {n} steps"),
        _ => String::new(),
    };
    if a.cuda_graph || autocast || !read.is_empty() {
        obs.event(TrainEvent::Info(&format!("  {graph}{}{read}", if autocast { ", autocast bf16" } else { "" })));
    }
}

/// `--resume` of a run that already reached its last step: nothing to do, which is
/// success (a script re-runs its command after a crash without looking).
#[derive(Debug)]
pub struct Finished {
    pub dir: PathBuf,
    pub step: u64,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} already finished: it is at step {}, its last; pass a larger --steps (or --epochs) to train on",
            self.dir.display(),
            self.step
        )
    }
}

impl std::error::Error for Finished {}
