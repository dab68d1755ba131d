//! `graft train`: fine-tune exactly the trainable parameters of a compiled spec on a
//! dataset, with checkpoints that resume bit for bit.
//!
//! ```text
//! graft train SPEC --data DIR [--val DIR] (--steps N | --epochs N) --batch N --lr X
//!     [--weight-decay X] [--schedule cosine|constant] [--warmup N] [--clip X]
//!     [--accumulate N] [--workers N] [--seed N] [--device cpu|cuda|cuda:N|auto] [--weights BINDING=FILE]...
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
//! | `args.rs` | the arguments and the hyperparameters a run records |
//! | `run.rs` | the run: open, resolve, load, then the loop ([`session`]) |
//! | `session.rs` | the loop: steps, validation, checkpoints, the summary |
//! | `spec.rs` | compile, check a dataset, the parameter values (+ a checkpoint) |
//! | `messages.rs` | the banner at the start, the error when a run stops |
//! | `schedule.rs` | warmup + cosine / constant |
//! | `feed.rs` | the batch stream across epochs, resumable, read ahead |
//! | `reader.rs` | `--workers` reader threads, each assembling whole batches, results in stream order |
//! | `checkpoint.rs` | the checkpoint files, fingerprints, the names/shapes diff, a checkpoint proven before use |
//! | `state.rs` | `state.json`: every field bounded, bound to its checkpoint by a digest |
//! | `rundir.rs` | checkpoints published in one rename, the run's lock, crash recovery |
//! | `resume.rs` | a flag given now or the resumed run's, and which may change |
//! | `metrics.rs` | `metrics.jsonl`, `loss.svg` |
//! | `events.rs`, `progress.rs` | what a run reports, and the terminal that shows it |

pub mod args;
pub mod checkpoint;
pub mod events;
pub mod feed;
pub mod messages;
pub mod metrics;
pub mod progress;
pub mod reader;
pub mod resume;
pub mod run;
pub mod rundir;
pub mod schedule;
pub mod session;
pub mod spec;
pub mod state;

pub use args::{Hyper, TrainArgs, DEFAULT_CHECKPOINT_EVERY, DEFAULT_WEIGHT_DECAY};
pub use run::{run, run_with, train_on, Finished};
pub use session::Trained;

use anyhow::Result;
use std::process::ExitCode;

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
