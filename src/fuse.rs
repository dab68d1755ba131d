//! Fusing: fold a model's re-parameterizations into plain backbone weights, and prove
//! the folded model computes what the trained one does.
//!
//! Both modes are compiled and their weights come from the same leaves. Every folded
//! parameter is evaluated in float64 and stored in its own dtype. Both plans then run
//! on one backend, in float32 on the CPU, on the same random inputs (declared shapes,
//! every symbol 2); the result is refused unless every output agrees to a relative
//! error ‖infer − train‖ / ‖train‖ ≤ [`TOLERANCE`]. The fused tensors hold every
//! inference-mode parameter, keyed relative to the first backbone (so they load into
//! the plain backbone spec and, for a ViT, into timm with `strict=True`); parameters
//! outside the backbone keep their full paths. Nothing here prints or writes: the
//! comparison and the tensors are returned to the caller (`graft fuse`).

use crate::backend::{inputs, Backend, BackendError, Options, Plan};
use crate::ir::ParamSource;
use crate::params::{materialise, Leaves, ParamError};
use crate::pipeline::Compiled;
use crate::syntax::ast::ComponentKind;
use crate::tensor::HostTensor;
use std::collections::BTreeSet;

/// The largest accepted relative error between the folded and unfolded model.
pub const TOLERANCE: f64 = 1e-5;

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("output `{0}` is missing in infer mode")]
    MissingOutput(String),
    #[error("output `{name}` is {train:?} in train mode but {infer:?} in infer mode")]
    Shape { name: String, train: Vec<i64>, infer: Vec<i64> },
    #[error("the folded model does not match the trained one: output `{name}` differs by {error:.3e} relative (limit {TOLERANCE:.0e}); nothing written")]
    Differs { name: String, error: f64, comparison: Comparison },
    #[error(
        "parameter `{path}` is {detail}; the outputs would be NaN, so nothing is folded or written\n  hint: {hint}"
    )]
    NonFinite { path: String, detail: String, hint: String },
    #[error("two parameters would be stored under the key `{0}`")]
    DuplicateKey(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Relative error per output, in the model's output order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    pub outputs: Vec<(String, f64)>,
}

impl Comparison {
    /// The largest relative error (NaN if any is NaN).
    pub fn worst(&self) -> f64 {
        self.outputs
            .iter()
            .map(|(_, e)| *e)
            .fold(0.0, |a, e| if e.is_nan() || a.is_nan() { f64::NAN } else { a.max(e) })
    }
}

/// A fused model: the tensors to write and what they are.
#[derive(Debug)]
pub struct Fused {
    /// Keyed relative to `backbone` where they lie under it, in parameter order.
    pub tensors: Vec<(String, HostTensor)>,
    pub comparison: Comparison,
    /// Parameter counts of the train-mode and infer-mode models.
    pub before: u64,
    pub after: u64,
    /// Parameters whose value is a fold expression.
    pub folded: usize,
    pub backbone: Option<String>,
    /// Parameters outside the backbone (they keep their full paths).
    pub outside: Vec<String>,
}

/// ‖a − b‖ / ‖b‖ in float64 (the absolute error when ‖b‖ is 0).
pub fn relative_error(a: &HostTensor, b: &HostTensor) -> f64 {
    let (a, b) = (a.to_f64(), b.to_f64());
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let base: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if base > 0.0 {
        diff / base
    } else {
        diff
    }
}

/// Every output of the folded model against the unfolded one.
pub fn compare(train: &[(String, HostTensor)], infer: &[(String, HostTensor)]) -> Result<Comparison, FuseError> {
    let mut c = Comparison::default();
    for (name, t) in train {
        let (_, i) = infer.iter().find(|(n, _)| n == name).ok_or_else(|| FuseError::MissingOutput(name.clone()))?;
        if t.shape != i.shape {
            return Err(FuseError::Shape { name: name.clone(), train: t.shape.clone(), infer: i.shape.clone() });
        }
        c.outputs.push((name.clone(), relative_error(i, t)));
    }
    Ok(c)
}

/// Fold `infer`'s parameters from `leaves` (loaded for both modes' parameters, a
/// trained run already laid over them), check the folded model against `train` on
/// `backend`, and return the tensors to write.
pub fn fuse(
    backend: &dyn Backend,
    train: &Compiled,
    infer: &Compiled,
    leaves: &Leaves,
    seed: u64,
) -> Result<Fused, FuseError> {
    let (ptrain, pinfer) = (Plan::new(&train.graph), Plan::new(&infer.graph));
    // The folded values are computed once: the check runs on exactly what is returned.
    let values = materialise(pinfer.params(), leaves)?;
    // A non-finite value is named here, not found later as a NaN output difference.
    let train_values = materialise(ptrain.params(), leaves)?;
    for (p, v) in ptrain.params().iter().zip(&train_values).chain(pinfer.params().iter().zip(&values)) {
        if let Some(d) = crate::params::weights::nonfinite(v) {
            let folded = matches!(p.source, ParamSource::Folded { .. });
            return Err(FuseError::NonFinite {
                path: p.path.clone(),
                detail: if folded {
                    format!("folded to a non-finite value ({d})")
                } else {
                    format!("not finite ({d})")
                },
                hint: if folded {
                    "its inputs are finite, so the fold overflows: check the scales (λ, alpha) of the run".into()
                } else {
                    "it comes from a weights file or run loaded with --allow-nonfinite; fix that file".into()
                },
            });
        }
    }
    let folded = pinfer.params().iter().filter(|p| matches!(p.source, ParamSource::Folded { .. })).count();
    let opts = Options::default();
    let mut etrain = backend.prepare(&ptrain, train_values, &opts)?;
    let mut einfer = backend.prepare(&pinfer, values.clone(), &opts)?;
    let given = inputs::random(&ptrain, 2, seed)?;
    let otrain = etrain.run(&inputs::bind(&ptrain, given.clone(), opts.float)?.values)?;
    let oinfer = einfer.run(&inputs::bind(&pinfer, given, opts.float)?.values)?;
    let comparison = compare(&otrain, &oinfer)?;
    if let Some((name, error)) = comparison.outputs.iter().find(|(_, e)| e.is_nan() || *e > TOLERANCE) {
        return Err(FuseError::Differs { name: name.clone(), error: *error, comparison: comparison.clone() });
    }

    let backbone = train.components.iter().find(|c| c.kind == ComponentKind::Backbone).map(|c| c.name.clone());
    let prefix = backbone.as_ref().map(|b| format!("{b}."));
    let mut tensors = Vec::with_capacity(values.len());
    let mut keys = BTreeSet::new();
    let mut outside = Vec::new();
    for (p, v) in pinfer.params().iter().zip(values) {
        let key = match prefix.as_deref().and_then(|pre| p.path.strip_prefix(pre)) {
            Some(k) => k.to_string(),
            None => {
                outside.push(p.path.clone());
                p.path.clone()
            }
        };
        if !keys.insert(key.clone()) {
            return Err(FuseError::DuplicateKey(key));
        }
        tensors.push((key, v));
    }
    let after = infer.graph.param_count();
    let written: u64 = tensors.iter().map(|(_, t)| t.numel() as u64).sum();
    if written != after {
        return Err(FuseError::Internal(format!("{written} parameters to write, but infer mode has {after}")));
    }
    Ok(Fused { tensors, comparison, before: train.graph.param_count(), after, folded, backbone, outside })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Vec<(String, HostTensor)> {
        vec![("y".to_string(), HostTensor::from_f32(&[v.len() as i64], v).unwrap())]
    }

    #[test]
    fn comparison_measures_each_output() {
        let a = t(&[1.0, 2.0, 3.0]);
        assert_eq!(compare(&a, &a).unwrap().worst(), 0.0);
        let close = compare(&a, &t(&[1.0, 2.0, 3.00001])).unwrap().worst();
        assert!(close > 0.0 && close < TOLERANCE, "{close}");
        assert!(compare(&a, &t(&[1.0, 2.0, 3.001])).unwrap().worst() > TOLERANCE);
        assert!(compare(&a, &t(&[1.0, f32::NAN, 3.0])).unwrap().worst().is_nan());
        assert!(matches!(compare(&a, &[]), Err(FuseError::MissingOutput(_))));
        assert!(matches!(compare(&a, &t(&[1.0])), Err(FuseError::Shape { .. })));
    }
}
