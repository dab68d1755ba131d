//! `graft train`'s arguments (clap) and the hyperparameters a run records in
//! `state.json` ([`Hyper`]).

use super::schedule::{Schedule, ScheduleKind};
use crate::commands::choices::{DeviceArg, NormalizeOn};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Checkpoint interval when `--checkpoint-every` is not given.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 500;
pub const DEFAULT_WEIGHT_DECAY: f64 = 0.01;
/// `--log-every` on CUDA when not given (on the CPU: 1).
pub const DEFAULT_LOG_EVERY_CUDA: u64 = 10;
/// The largest `--log-every` (the device keeps each step's loss and norm until read).
pub const MAX_LOG_EVERY: u64 = 100_000;

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
    /// Reader threads that decode and augment batches, each a whole batch at a time
    /// (default: one per core, at most 8). Batches are the same for any number.
    #[arg(long, value_name = "N", value_parser = crate::bounds::count(crate::data::batches::MAX_WORKERS))]
    pub workers: Option<usize>,
    /// Where image and video pixels are normalised, for inputs declared `normalized`
    /// with the dataset's own statistics: `device` hands the model raw u8 pixels,
    /// normalised where it runs; `host` normalises them in the reader; `auto`
    /// (default) is `device` on a GPU and `host` on the CPU. The model receives the
    /// same bits either way.
    #[arg(long = "normalize-on", value_enum, default_value_t = NormalizeOn::Auto)]
    pub normalize_on: NormalizeOn,
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
    /// Capture the training step in a CUDA graph once per batch shape and replay it:
    /// the whole step (forward, backward, clipping, AdamW) with one batch per step on
    /// one process, forward + backward otherwise (CUDA only; `cuda-graphs` build).
    #[arg(long = "cuda-graph")]
    pub cuda_graph: bool,
    /// Read the loss and gradient norm back every N steps (default: 1 on the CPU, 10 on
    /// CUDA): the steps between run without waiting for the device. With one batch per
    /// step on one process; a non-finite step is still found and named, and changes
    /// nothing.
    #[arg(long = "log-every", value_name = "N", value_parser = crate::bounds::count64(MAX_LOG_EVERY))]
    pub log_every: Option<u64>,
    /// Autocast the forward pass's CUDA ops (CUDA only; `cuda-graphs` build).
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub autocast: Option<crate::backend::torch::cuda_graph::AutocastDtype>,
    /// Collective backend of a data-parallel run (default: nccl on CUDA, gloo on the
    /// CPU; `distributed` build, launched by torchrun).
    #[arg(long = "dist-backend", value_enum)]
    pub dist_backend: Option<crate::backend::torch::dist::BackendArg>,
    /// Seconds the rendezvous and each collective wait for the other ranks before the
    /// run stops with an error naming the rank at fault (at most a week).
    #[arg(long = "dist-timeout", value_name = "SECS", default_value_t = crate::backend::torch::dist::DEFAULT_TIMEOUT_S as f64, value_parser = crate::bounds::timeout_secs)]
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
