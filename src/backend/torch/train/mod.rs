//! LibTorch's side of the training seam ([`crate::backend::train`]): autograd, the
//! optimizer, CUDA-graph step capture and data-parallel hooks. What a *run* is (the
//! run directory, resume, the schedule, checkpoints, metrics, progress) lives above,
//! in `graft train`'s command code (`crate::commands::train`).
//!
//! | file | what it is |
//! |---|---|
//! | `trainer.rs` | [`TorchTraining`] (the device, the data-parallel group) and [`TorchTrainer`] (one model being trained) |
//! | `model.rs` | the plan with its parameters in a VarStore: logits for bound inputs, cross-entropy |
//! | `step.rs` | one batch's loss and gradients, eager or from a CUDA graph |
//! | `device_step.rs` | whole steps without a host sync: eager, or captured in one CUDA graph (`bench --train`) |
//! | `optim.rs` | AdamW with parameter groups, clipping, its state |
//! | `dist.rs` | data-parallel runs: join, cross-rank checks, the replica check |
//!
//! One optimizer step: `--accumulate` batches, each forward through the plan's
//! instructions with autograd, cross-entropy of the logits output against the labels,
//! gradients with respect to the trainable parameters only (summed over the batches);
//! data-parallel, averaged over the ranks ([`crate::backend::torch::dist`]); a
//! non-finite loss or gradient norm updates nothing; global-norm clipping; one AdamW
//! step ([`optim`]) at the schedule's factor. A batch that lacks an optional modality
//! runs with that input absent: the adapters that read it are skipped and get no
//! update.

pub mod device_step;
pub mod dist;
pub mod model;
pub mod optim;
pub mod step;
pub mod trainer;

pub use model::Model;
pub use trainer::{TorchTrainer, TorchTraining};
