//! Model inputs: check given host tensors against the plan and bind symbolic dims.
//!
//! Every given input must be declared, with the declared dtype (float inputs may also
//! come in the run's float dtype, and an input declared `normalized` as raw `u8`
//! pixels: [`crate::ir::PixelNorm`]) and shape; a symbol (`B`, `T`) takes its size from
//! the first input that has it and must agree everywhere else. All problems are
//! reported together, each naming what was expected and what was given. An absent
//! optional input declared `= zeros` becomes zeros of its declared shape; any other
//! absent optional input stays absent. Backend-neutral: a backend converts float
//! inputs to its compute dtype as it places them on its device.

use super::error::BackendError;
use super::plan::Plan;
use crate::ir::{DType, Dim, TensorType};
use crate::params::init::draw;
use crate::tensor::{type_text, HostTensor};
use std::collections::BTreeMap;

/// Symbol → size.
pub type Symbols = BTreeMap<String, i64>;

/// Inputs in plan order (`None`: absent) and the sizes their symbols took.
#[derive(Clone, Debug)]
pub struct Bound {
    pub values: Vec<Option<HostTensor>>,
    pub symbols: Symbols,
}

/// Check `given` against the plan's inputs and order them as the plan does. `float`
/// is the run's float dtype, which float inputs may also come in.
pub fn bind(plan: &Plan, given: Vec<(String, HostTensor)>, float: DType) -> Result<Bound, BackendError> {
    let mut given: BTreeMap<String, HostTensor> = given.into_iter().collect();
    let mut problems = Vec::new();
    let declared: Vec<&str> = plan.inputs().iter().map(|i| i.name.as_str()).collect();
    for name in given.keys() {
        if !declared.contains(&name.as_str()) {
            problems.push(format!("`{name}` is not an input of this model (its inputs: {})", declared.join(", ")));
        }
    }
    let mut syms: Symbols = BTreeMap::new();
    let mut bound_by: BTreeMap<String, String> = BTreeMap::new();
    for inp in plan.inputs() {
        let want = inp.ty.to_string();
        let Some(t) = given.get(&inp.name) else {
            if !inp.optional {
                problems.push(format!("missing input `{}`: expected {want}", inp.name));
            }
            continue;
        };
        let got = t.type_text();
        let raw = t.dtype == DType::U8 && inp.norm.is_some();
        if t.dtype != inp.ty.dtype && !(inp.ty.dtype.is_float() && t.dtype == float) && !raw {
            let hint = match (t.dtype, inp.ty.dtype.is_float()) {
                (DType::U8, true) => {
                    "; raw u8 pixels need the input declared `normalized` (e.g. `normalized imagenet`)"
                }
                _ => "",
            };
            problems.push(format!(
                "`{}`: expected {want}, given {got} (dtype {} instead of {}){hint}",
                inp.name,
                t.dtype.name(),
                inp.ty.dtype.name()
            ));
            continue;
        }
        if t.shape.len() != inp.ty.rank() {
            problems.push(format!(
                "`{}`: expected {want}, given {got} ({} dims instead of {})",
                inp.name,
                t.shape.len(),
                inp.ty.rank()
            ));
            continue;
        }
        let mut wrong = Vec::new();
        for (i, (d, &n)) in inp.ty.shape.iter().zip(&t.shape).enumerate() {
            match d {
                Dim::Fixed(f) if *f != n => wrong.push(format!("dim {i} is {n}, expected {f}")),
                // An empty batch or sequence would fail deep inside the model.
                Dim::Sym(s) if n < 1 => wrong.push(format!("{s} (dim {i}) is {n}; it must be at least 1")),
                Dim::Sym(s) => match syms.get(s) {
                    Some(&v) if v != n => wrong.push(format!("{s} is {v} from `{}`, here {n}", bound_by[s])),
                    Some(_) => {}
                    None => {
                        syms.insert(s.clone(), n);
                        bound_by.insert(s.clone(), inp.name.clone());
                    }
                },
                _ => {}
            }
        }
        if !wrong.is_empty() {
            problems.push(format!("`{}`: expected {want}, given {got} ({})", inp.name, wrong.join("; ")));
        }
    }
    if !problems.is_empty() {
        return Err(BackendError::Inputs(problems));
    }
    let mut values = Vec::with_capacity(plan.inputs().len());
    for inp in plan.inputs() {
        values.push(match given.remove(&inp.name) {
            Some(t) => Some(t),
            None if inp.default_zeros => {
                let shape = concrete(&inp.name, &inp.ty, &syms)?;
                Some(zeros(inp.ty.dtype, &shape)?)
            }
            None => None,
        });
    }
    Ok(Bound { values, symbols: syms })
}

/// A concrete shape from a declared one.
pub fn concrete(name: &str, ty: &TensorType, syms: &Symbols) -> Result<Vec<i64>, BackendError> {
    ty.shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Ok(*n),
            Dim::Sym(s) => syms.get(s).copied().ok_or_else(|| BackendError::Unbound {
                input: name.to_string(),
                ty: ty.to_string(),
                symbol: s.clone(),
            }),
        })
        .collect()
}

fn zeros(dtype: DType, shape: &[i64]) -> Result<HostTensor, BackendError> {
    HostTensor::zeros(dtype, shape)
        .ok_or_else(|| BackendError::Internal(format!("cannot allocate {}", type_text(dtype, shape))))
}

/// Random inputs of the declared shapes, every symbol `sym_size`: floats standard
/// normal; integers that index an embedding uniform below the table's rows; other
/// integers (masks) ones. Deterministic in `seed` (the values LibTorch-era graft drew).
pub fn random(plan: &Plan, sym_size: i64, seed: u64) -> Result<Vec<(String, HostTensor)>, BackendError> {
    let mut out = Vec::new();
    for (idx, inp) in plan.inputs().iter().enumerate() {
        let syms: Symbols = inp
            .ty
            .shape
            .iter()
            .filter_map(|d| match d {
                Dim::Sym(s) => Some((s.clone(), sym_size)),
                Dim::Fixed(_) => None,
            })
            .collect();
        let shape = concrete(&inp.name, &inp.ty, &syms)?;
        // The values are drawn as f32 and then stored as bytes: two copies at once.
        let n = crate::tensor::numel(&shape).unwrap_or(usize::MAX);
        crate::backend::alloc::probe(
            n.saturating_mul(8),
            &format!("input `{}` ({})", inp.name, type_text(inp.ty.dtype, &shape)),
        )?;
        let path = format!("input:{}", inp.name);
        let dtype = inp.ty.dtype;
        let t = if dtype.is_float() {
            draw(&shape, seed, &path, |r| r.normal()).to_dtype(dtype)
        } else {
            match plan.embedding_rows(idx) {
                Some(rows) => draw(&shape, seed, &path, |r| (r.uniform() * rows as f64).floor()).to_dtype(dtype),
                None => HostTensor::from_f64_as(dtype, &shape, &vec![1.0; crate::tensor::numel(&shape).unwrap_or(0)])
                    .ok_or_else(|| BackendError::Internal(format!("bad shape {shape:?}")))?,
            }
        };
        out.push((inp.name.clone(), t));
    }
    Ok(out)
}
