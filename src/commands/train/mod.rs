//! `graft train`: fine-tune exactly the trainable parameters of a compiled spec on a
//! dataset, with checkpoints that resume bit for bit.
//!
//! ```text
//! graft train SPEC --data DIR [--val DIR] (--steps N | --epochs N) --batch N --lr X
//!     [--weight-decay X] [--schedule cosine|constant] [--warmup N] [--clip X]
//!     [--accumulate N] [--seed N] [--device cpu|cuda|cuda:N|auto] [--weights BINDING=FILE]...
//!     [--allow-missing PATTERN]... [--lr-for PATTERN=LR]... [--checkpoint-every K]
//!     [--eval-every K] [--resume RUN_DIR] --out RUN_DIR [--cuda-graph] [--autocast bf16]
//!     [--dist-backend gloo|nccl] [--dist-timeout SECS]
//! ```
//!
//! Under `torchrun` (or with `WORLD_SIZE`, `RANK`, `MASTER_ADDR`, `MASTER_PORT` set) the
//! same command trains data-parallel on c10d: `--batch` is per rank, the logged loss
//! and metrics are means over all ranks, rank 0 writes the run directory.
//!
//! This is application code: it drives a backend through the training seam
//! ([`crate::backend::train`]: a `Training` session and its `Trainer`) and owns
//! what a *run* is. The flow ([`run::run`]): lock and recover the run directory,
//! resolve the hyperparameters (fresh, or merged with the resumed run's), compile the
//! spec in train mode, check the dataset against the model's inputs and classes, load
//! the weights (a resumed run lays its checkpoint over them), prepare the trainer,
//! then per optimizer step: `--accumulate` batches through `Trainer::step`, one
//! `Trainer::update` at the schedule's factor ([`schedule`]); validation, metrics
//! and checkpoints at their intervals. A NaN/Inf loss or gradient norm stops the run
//! (exit 1) before anything is updated. What the run tells the user goes out as
//! [`events::TrainEvent`]s, which the terminal renders ([`progress`]).
//!
//! Seeds: `--seed` seeds the initialisation of parameters with an init rule and the
//! data order (`Dataset::batches(batch, seed, epoch, …)`); nothing else draws random
//! numbers, so a run is a function of its arguments. On CPU, a run of 2N steps and a
//! run of N steps resumed for N more give bit-identical losses and checkpoints (with
//! `--schedule constant`: a cosine curve depends on the total, which the short run
//! sets to N). CUDA kernels may differ in the last bits between runs.
//!
//! Files ([`checkpoint`], [`rundir`]): RUN_DIR holds the newest checkpoint
//! (`checkpoint-STEP/` with `trainable.safetensors`, `optimizer.safetensors`,
//! `state.json`), `trainable.safetensors` (the newest trained tensors),
//! `metrics.jsonl` ([`metrics`]) and `loss.svg`. A killed run continues with
//! `--resume RUN_DIR` from its newest complete checkpoint, bit for bit.
//!
//! | file | what it is |
//! |---|---|
//! | `mod.rs` | the arguments and the hyperparameters a run records |
//! | `run.rs` | the run: open, resolve, load, then the loop ([`session`]) |
//! | `session.rs` | the loop: steps, validation, checkpoints, the summary |
//! | `spec.rs` | compile, check a dataset, the parameter values (+ a checkpoint) |
//! | `messages.rs` | the banner at the start, the error when a run stops |
//! | `schedule.rs` | warmup + cosine / constant |
//! | `feed.rs` | the batch stream across epochs, resumable, read ahead |
//! | `checkpoint.rs` | the checkpoint files, fingerprints, the names/shapes diff |
//! | `rundir.rs` | checkpoints published in one rename, the run's lock, crash recovery |
//! | `resume.rs` | a flag given now or the resumed run's, and which may change |
//! | `metrics.rs` | `metrics.jsonl`, `loss.svg` |
//! | `events.rs`, `progress.rs` | what a run reports, and the terminal that shows it |

pub mod checkpoint;
pub mod events;
pub mod feed;
pub mod messages;
pub mod metrics;
pub mod progress;
pub mod resume;
pub mod run;
pub mod rundir;
pub mod schedule;
pub mod session;
pub mod spec;

pub use run::{run, run_with, train_on, Finished};
pub use session::Trained;

use crate::commands::choices::DeviceArg;
use anyhow::Result;
use schedule::{Schedule, ScheduleKind};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::ExitCode;

/// Checkpoint interval when `--checkpoint-every` is not given.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 500;
pub const DEFAULT_WEIGHT_DECAY: f64 = 0.01;

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// The spec file; its weights paths are relative to its directory.
    pub spec: PathBuf,
    /// Training dataset directory (`dataset.json` + shards).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Validation dataset: loss and accuracy every --eval-every steps and at the end.
    #[arg(long, value_name = "DIR")]
    pub val: Option<PathBuf>,
    /// Total optimizer steps (a resumed run counts the steps already taken).
    #[arg(long, value_name = "N", conflicts_with = "epochs", value_parser = crate::bounds::count64(crate::bounds::MAX_STEPS))]
    pub steps: Option<u64>,
    /// Total epochs over the training data (rounded up to whole optimizer steps).
    #[arg(long, value_name = "N", value_parser = crate::bounds::count64(crate::bounds::MAX_STEPS))]
    pub epochs: Option<u64>,
    /// Samples per batch (per forward pass; see --accumulate).
    #[arg(long, value_name = "N", required_unless_present = "resume", value_parser = crate::bounds::count(crate::bounds::MAX_BATCH))]
    pub batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long, value_name = "X", required_unless_present = "resume")]
    pub lr: Option<f64>,
    /// Decoupled weight decay on matrices and kernels (default 0.01).
    #[arg(long = "weight-decay", value_name = "X")]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule after warmup (default cosine).
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// Steps of linear warmup (default 0).
    #[arg(long, value_name = "N", value_parser = crate::bounds::upto64(crate::bounds::MAX_STEPS))]
    pub warmup: Option<u64>,
    /// Clip gradients to this global L2 norm.
    #[arg(long, value_name = "X")]
    pub clip: Option<f64>,
    /// Batches per optimizer step (gradient accumulation; default 1).
    #[arg(long, value_name = "N", value_parser = crate::bounds::count(crate::bounds::MAX_ACCUMULATE))]
    pub accumulate: Option<usize>,
    /// Seeds initialisation and data order (default 0).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    #[arg(long, default_value = "auto", value_parser = DeviceArg::parse, value_name = "cpu|cuda|cuda:N|auto")]
    pub device: DeviceArg,
    /// Weights file for a binding, overriding the spec's (repeatable).
    #[arg(long = "weights", value_name = "BINDING=FILE")]
    pub weights: Vec<String>,
    /// Glob of weight keys that may be missing from (or extra in) a file (repeatable).
    #[arg(long = "allow-missing", value_name = "PATTERN")]
    pub allow_missing: Vec<String>,
    /// Load weights that hold NaN or infinity (otherwise an error naming the file and
    /// the tensor).
    #[arg(long = "allow-nonfinite")]
    pub allow_nonfinite: bool,
    /// Own learning rate for the trainable parameters a glob matches, e.g.
    /// 'cmr.*=1e-2' (repeatable; the first matching pattern wins).
    #[arg(long = "lr-for", value_name = "PATTERN=LR")]
    pub lr_for: Vec<String>,
    /// Write a checkpoint every K steps (and at the end; default 500).
    #[arg(long = "checkpoint-every", value_name = "K", value_parser = crate::bounds::count64(crate::bounds::MAX_STEPS))]
    pub checkpoint_every: Option<u64>,
    /// Validate every K steps (and at the end; default: with each checkpoint).
    #[arg(long = "eval-every", value_name = "K", value_parser = crate::bounds::count64(crate::bounds::MAX_STEPS))]
    pub eval_every: Option<u64>,
    /// Continue the run in RUN_DIR exactly where its last checkpoint left it.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// The run directory to write (default with --resume: the resumed one).
    #[arg(long, value_name = "RUN_DIR", required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Capture forward + backward of a batch in a CUDA graph once and replay it; the
    /// optimizer step stays eager (CUDA only; `cuda-graphs` build).
    #[arg(long = "cuda-graph")]
    pub cuda_graph: bool,
    /// Autocast the forward pass's CUDA ops (CUDA only; `cuda-graphs` build).
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub autocast: Option<crate::backend::torch::cuda_graph::AutocastDtype>,
    /// Collective backend of a data-parallel run (default: nccl on CUDA, gloo on the
    /// CPU; `distributed` build, launched by torchrun).
    #[arg(long = "dist-backend", value_enum)]
    pub dist_backend: Option<crate::backend::torch::dist::BackendArg>,
    /// Seconds the rendezvous and each collective wait for the other ranks before the
    /// run stops with an error naming the rank at fault.
    #[arg(long = "dist-timeout", value_name = "SECS", default_value_t = crate::backend::torch::dist::DEFAULT_TIMEOUT_S as f64)]
    pub dist_timeout: f64,
}

/// What a run was started with, recorded in `state.json`. Those that decide the data
/// stream (batch, accumulate, seed) cannot change on resume; the others may.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Hyper {
    pub batch: usize,
    pub accumulate: usize,
    pub seed: u64,
    /// Whether each epoch's short last batches are dropped (only when that leaves at
    /// least one batch).
    pub drop_last: bool,
    pub lr: f64,
    pub weight_decay: f64,
    pub lr_for: Vec<(String, f64)>,
    pub clip: Option<f64>,
    pub schedule: Schedule,
}

impl TrainArgs {
    /// Parse the words after `graft train` (for library callers and tests).
    pub fn parse<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString> + Clone>(words: I) -> Result<TrainArgs> {
        use clap::Parser;
        #[derive(clap::Parser)]
        #[command(name = "graft train")]
        struct Words {
            #[command(flatten)]
            args: TrainArgs,
        }
        let all = std::iter::once(std::ffi::OsString::from("graft train")).chain(words.into_iter().map(Into::into));
        Ok(Words::try_parse_from(all)?.args)
    }
}

/// `graft train`.
/// `--resume` of a finished run prints so and exits 0.
pub fn train(a: TrainArgs) -> Result<ExitCode> {
    match run(&a) {
        Ok(Some(_)) => Ok(ExitCode::SUCCESS),
        Ok(None) => Ok(ExitCode::from(1)),
        Err(e) => match e.downcast_ref::<Finished>() {
            Some(f) => {
                println!("{f}");
                Ok(ExitCode::SUCCESS)
            }
            None => Err(e),
        },
    }
}
