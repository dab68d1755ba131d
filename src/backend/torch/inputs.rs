//! Model inputs: check given tensors against the spec and bind symbolic dims.
//!
//! Every given input must be declared, with the declared dtype (float inputs may also
//! come in the run's float dtype) and shape; a symbol (`B`, `T`) takes its size from
//! the first input that has it and must agree everywhere else. All problems are
//! reported together, each naming what was expected and what was given. An absent
//! optional input declared `= zeros` becomes zeros of its declared shape; any other
//! absent optional input stays absent.

use super::lower::{Kernel, Plan, Src};
use super::params::draw;
use super::{is_float_kind, kind_name, kind_of, type_text};
use crate::ir::{Dim, TensorType};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Symbol → size.
pub type Symbols = BTreeMap<String, i64>;

/// Check `given` against the plan's inputs and place them, in plan order, on
/// `device` with float inputs in `float_kind`.
pub fn bind(
    plan: &Plan,
    given: Vec<(String, Tensor)>,
    float_kind: Kind,
    device: Device,
) -> Result<(Vec<Option<Tensor>>, Symbols)> {
    let mut given: BTreeMap<String, Tensor> = given.into_iter().collect();
    let mut problems = Vec::new();
    let declared: Vec<&str> = plan.inputs.iter().map(|i| i.name.as_str()).collect();
    for name in given.keys() {
        if !declared.contains(&name.as_str()) {
            problems.push(format!("`{name}` is not an input of this model (its inputs: {})", declared.join(", ")));
        }
    }
    let mut syms: Symbols = BTreeMap::new();
    let mut bound_by: BTreeMap<String, String> = BTreeMap::new();
    for inp in &plan.inputs {
        let want = inp.ty.to_string();
        let Some(t) = given.get(&inp.name) else {
            if !inp.optional {
                problems.push(format!("missing input `{}`: expected {want}", inp.name));
            }
            continue;
        };
        let (kind, shape) = (t.kind(), t.size());
        let got = type_text(&kind_name(kind), &shape);
        let declared_kind = kind_of(inp.ty.dtype);
        if kind != declared_kind && !(inp.ty.dtype.is_float() && kind == float_kind) {
            problems.push(format!(
                "`{}`: expected {want}, given {got} (dtype {} instead of {})",
                inp.name,
                kind_name(kind),
                inp.ty.dtype.name()
            ));
            continue;
        }
        if shape.len() != inp.ty.rank() {
            problems.push(format!(
                "`{}`: expected {want}, given {got} ({} dims instead of {})",
                inp.name,
                shape.len(),
                inp.ty.rank()
            ));
            continue;
        }
        let mut wrong = Vec::new();
        for (i, (d, &n)) in inp.ty.shape.iter().zip(&shape).enumerate() {
            match d {
                Dim::Fixed(f) if *f != n => wrong.push(format!("dim {i} is {n}, expected {f}")),
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
        bail!("inputs do not match the spec:\n  {}", problems.join("\n  "));
    }
    let mut out = Vec::with_capacity(plan.inputs.len());
    for inp in &plan.inputs {
        let t = match given.remove(&inp.name) {
            Some(t) => Some(t),
            None if inp.default_zeros => Some(zeros(&inp.name, &inp.ty, &syms)?),
            None => None,
        };
        let t = match t {
            Some(t) => {
                let k = if is_float_kind(t.kind()) { float_kind } else { t.kind() };
                Some(t.f_to_device(device)?.f_to_kind(k)?)
            }
            None => None,
        };
        out.push(t);
    }
    Ok((out, syms))
}

/// A concrete shape from a declared one.
pub fn concrete(name: &str, ty: &TensorType, syms: &Symbols) -> Result<Vec<i64>> {
    ty.shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Ok(*n),
            Dim::Sym(s) => match syms.get(s) {
                Some(&n) => Ok(n),
                None => {
                    bail!("input `{name}` ({ty}) is absent and no given input binds `{s}`, so its zeros have no size")
                }
            },
        })
        .collect()
}

fn zeros(name: &str, ty: &TensorType, syms: &Symbols) -> Result<Tensor> {
    Ok(Tensor::f_zeros(concrete(name, ty, syms)?, (kind_of(ty.dtype), Device::Cpu))?)
}

/// Random inputs of the declared shapes, every symbol `sym_size`: floats standard
/// normal; integers that index an embedding uniform below the table's rows; other
/// integers (masks) ones. Deterministic in `seed`.
pub fn random(plan: &Plan, sym_size: i64, seed: u64) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for (idx, inp) in plan.inputs.iter().enumerate() {
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
        let kind = kind_of(inp.ty.dtype);
        let path = format!("input:{}", inp.name);
        let t = if inp.ty.dtype.is_float() {
            draw(&shape, seed, &path, |r| r.normal())?.f_to_kind(kind)?
        } else {
            match embedding_rows(plan, idx) {
                Some(rows) => draw(&shape, seed, &path, |r| (r.uniform() * rows as f64).floor())?.f_to_kind(kind)?,
                None => Tensor::f_ones(&shape, (kind, Device::Cpu))?,
            }
        };
        out.push((inp.name.clone(), t));
    }
    Ok(out)
}

/// The fewest rows among the embedding tables input `idx` indexes directly.
fn embedding_rows(plan: &Plan, idx: usize) -> Option<i64> {
    let slot = plan.inputs[idx].slot?;
    let mut rows: Option<i64> = None;
    for ins in &plan.instrs {
        if ins.kernel == Kernel::Embedding && ins.args[0] == Src::Slot(slot) {
            if let Src::Param(p) = ins.args[1] {
                let n = plan.params[p].shape[0];
                rows = Some(rows.map_or(n, |r| r.min(n)));
            }
        }
        // The slot is reused once freed: later readers see another value.
        if ins.free.contains(&slot) || ins.out == slot {
            break;
        }
    }
    rows
}
