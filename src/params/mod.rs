//! Parameter materialisation: every parameter's value as a backend-neutral host
//! tensor, computed once before a backend sees the plan.
//!
//! A parameter's [`ParamSource`] says where its value comes from:
//!
//! - a key of a bound weights file ([`bindings`] says which file, [`weights`] reads
//!   safetensors, or PyTorch checkpoints through a reader the caller supplies;
//!   [`leaves`] loads strictly, every problem reported together);
//! - a seeded init rule ([`init`]: graft's own generator, so every backend and every
//!   run with one seed sees the same weights);
//! - a fold expression over such leaves ([`fold`]: evaluated in float64, inference
//!   mode).
//!
//! [`Leaves::load`] loads or initialises every leaf once (a trained checkpoint may then
//! replace some with [`Leaves::set`]); [`materialise`] turns them into one host tensor
//! per parameter, in the order asked for (a plan's parameter table).

pub mod bindings;
mod error;
mod file_check;
pub mod fold;
pub mod glob;
pub mod init;
pub mod leaves;
pub mod peft;
pub mod resample;
pub mod spellings;
pub mod weights;

pub use bindings::{Bindings, Declared};
pub use error::ParamError;
pub use leaves::Leaves;
pub use weights::WeightFile;

use crate::ir::{ParamInfo, ParamSource};
use crate::tensor::HostTensor;

/// A parameter's value in its own dtype: loaded, initialised or folded.
pub fn value_of(p: &ParamInfo, leaves: &Leaves) -> Result<HostTensor, ParamError> {
    match &p.source {
        ParamSource::Folded { expr } => fold::fold_param(p, expr, &mut |leaf| leaves.get(leaf).cloned())
            .map_err(|e| ParamError::Fold { message: format!("folding `{}` = {expr}: {e}", p.path) }),
        _ => leaves.get(p).cloned(),
    }
}

/// The values of `params`, in order.
pub fn materialise(params: &[ParamInfo], leaves: &Leaves) -> Result<Vec<HostTensor>, ParamError> {
    params.iter().map(|p| value_of(p, leaves)).collect()
}
