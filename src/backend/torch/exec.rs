//! Execution: run a [`Plan`]'s instruction list with LibTorch.
//!
//! Slots hold `Option<Tensor>`: `None` is an absent value (a missing optional input
//! and what is computed from it, by the op's rule [`crate::ir::Op::on_absent`]).
//! Kernels use LibTorch's fused operators (`linear`, `layer_norm`, exact-erf `gelu`,
//! `scaled_dot_product_attention`) and the fallible `f_` API, so a LibTorch error
//! becomes an error naming the instance that failed, not a panic.
//! Devices and dtypes are whatever the parameters and inputs were placed on.

use crate::backend::plan::{Kernel, Plan, Src};
use crate::backend::{BackendError, KernelError};
use tch::{Kind, TchError, Tensor};

/// Run the plan. `params` follows `plan.params()`; `inputs` follows `plan.inputs()`
/// (`None`: absent). Returns the outputs in `plan.outputs()` order.
pub fn run(plan: &Plan, params: &[Tensor], inputs: Vec<Option<Tensor>>) -> Result<Vec<(String, Tensor)>, BackendError> {
    if params.len() != plan.params().len() || inputs.len() != plan.inputs().len() {
        return Err(BackendError::Internal(format!(
            "the plan needs {} parameters and {} inputs, given {} and {}",
            plan.params().len(),
            plan.inputs().len(),
            params.len(),
            inputs.len()
        )));
    }
    let mut slots: Vec<Option<Tensor>> = (0..plan.slots()).map(|_| None).collect();
    for (spec, t) in plan.inputs().iter().zip(inputs) {
        if let Some(s) = spec.slot {
            slots[s] = t;
        }
    }
    for ins in plan.instrs() {
        let args: Vec<Option<&Tensor>> = ins
            .args
            .iter()
            .map(|a| match *a {
                Src::Slot(s) => slots[s].as_ref(),
                Src::Param(p) => Some(&params[p]),
            })
            .collect();
        let present: Vec<&Tensor> = args.iter().flatten().copied().collect();
        let value = if present.len() == args.len() {
            Some(kernel(&ins.kernel, &present).map_err(|e| {
                let hint = match ins.kernel {
                    Kernel::Embedding => format!(" (ids must lie in 0..{} for this table)", present[1].size()[0]),
                    _ => String::new(),
                };
                BackendError::Kernel {
                    path: ins.path.clone(),
                    op: ins.op.name(),
                    error: KernelError::Library(format!("{}{hint}", torch_message(&e))),
                }
            })?)
        } else {
            let absent: Vec<bool> = args.iter().map(Option::is_none).collect();
            ins.op.on_absent(&absent, &ins.data).and_then(|i| args[i]).map(Tensor::shallow_clone)
        };
        for &f in &ins.free {
            slots[f] = None;
        }
        slots[ins.out] = value;
    }
    plan.outputs()
        .iter()
        .map(|o| {
            let t = match o.src {
                Src::Slot(s) => slots[s].as_ref().map(|t| t.shallow_clone()),
                Src::Param(p) => Some(params[p].shallow_clone()),
            };
            t.map(|t| (o.name.clone(), t)).ok_or_else(|| BackendError::AbsentOutput(o.name.clone()))
        })
        .collect()
}

/// A LibTorch error's first line, without the C++ backtrace.
pub fn torch_message(e: &TchError) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    first.strip_prefix("Internal torch error: ").unwrap_or(first).to_string()
}

/// Normalise a possibly negative axis.
fn axis(t: &Tensor, a: i64) -> i64 {
    if a < 0 {
        a + t.dim() as i64
    } else {
        a
    }
}

/// The most negative finite value of a float kind (HF's additive mask value).
fn min_value(k: Kind) -> f64 {
    match k {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.3895313892515355e38,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    }
}

/// One instruction on present operands.
pub fn kernel(k: &Kernel, a: &[&Tensor]) -> Result<Tensor, TchError> {
    let x = a[0];
    match k {
        Kernel::Linear => x.f_linear(a[1], a.get(2).copied()),
        Kernel::GroupedLinear { groups } => {
            let g = *groups;
            let (w, mut size) = (a[1], x.size());
            let (fin, fout) = (*size.last().unwrap_or(&0), w.size()[0]);
            let xg = x.f_reshape([-1, g, fin / g])?;
            let wg = w.f_reshape([g, fout / g, fin / g])?;
            let y = Tensor::f_einsum("ngi,goi->ngo", &[&xg, &wg], None::<&[i64]>)?;
            *size.last_mut().expect("rank >= 1") = fout;
            let y = y.f_reshape(&size)?;
            match a.get(2) {
                Some(b) => y.f_add(b),
                None => Ok(y),
            }
        }
        Kernel::Conv { stride } => {
            let zeros = vec![0i64; stride.len()];
            let ones = vec![1i64; stride.len()];
            match stride.len() {
                2 => x.f_conv2d(a[1], a.get(2).copied(), stride.as_slice(), zeros.as_slice(), ones.as_slice(), 1),
                _ => x.f_conv3d(a[1], a.get(2).copied(), stride.as_slice(), zeros.as_slice(), ones.as_slice(), 1),
            }
        }
        Kernel::LayerNorm { eps } => {
            let d = *x.size().last().unwrap_or(&1);
            x.f_layer_norm([d], Some(a[1]), Some(a[2]), *eps, true)
        }
        Kernel::Gelu => x.f_gelu("none"),
        Kernel::Relu => x.f_relu(),
        Kernel::Tanh => x.f_tanh(),
        Kernel::Sigmoid => x.f_sigmoid(),
        Kernel::SinusoidPositions => sinusoid_table(x),
        Kernel::Attention { heads } => attention(a[0], a[1], a[2], a.get(3).copied(), *heads),
        Kernel::Add => x.f_add(a[1]),
        Kernel::Mul => x.f_mul(a[1]),
        Kernel::Scale { factor } => x.f_mul_scalar(*factor),
        Kernel::Reshape { dims } => {
            let size = x.size();
            let to: Vec<i64> = dims
                .iter()
                .enumerate()
                .map(|(i, &d)| if d == 0 { size.get(i).copied().unwrap_or(0) } else { d })
                .collect();
            x.f_reshape(&to)
        }
        Kernel::Permute { perm } => x.f_permute(perm.as_slice()),
        Kernel::Split { axis: ax, parts, index } => {
            let ax = axis(x, *ax);
            let n = x.size().get(ax as usize).copied().unwrap_or(0) / parts;
            x.f_narrow(ax, index * n, n)
        }
        Kernel::Concat { axis: ax } => {
            let ax = axis(x, *ax) as usize;
            // Size-1 dims off the axis broadcast to the largest size (a class token
            // [1, 1, D] against [B, N, D] patches).
            let rank = x.dim();
            let mut target = vec![1i64; rank];
            for t in a {
                for (i, &d) in t.size().iter().enumerate().take(rank) {
                    if i != ax && d != 1 {
                        target[i] = d;
                    }
                }
            }
            let parts: Vec<Tensor> = a
                .iter()
                .map(|t| {
                    let mut want = target.clone();
                    let size = t.size();
                    want[ax] = size.get(ax).copied().unwrap_or(0);
                    if size == want {
                        Ok(t.shallow_clone())
                    } else {
                        t.f_expand(want.as_slice(), false)
                    }
                })
                .collect::<Result<_, _>>()?;
            Tensor::f_cat(&parts, ax as i64)
        }
        Kernel::Embedding => {
            let ids = if x.kind() == Kind::Int64 || x.kind() == Kind::Int {
                x.shallow_clone()
            } else {
                x.f_to_kind(Kind::Int64)?
            };
            Tensor::f_embedding(a[1], &ids, -1, false, false)
        }
        Kernel::TokenSelect { index } => x.f_select(1, *index),
        Kernel::MeanTokens => x.f_mean_dim([1i64].as_slice(), false, None::<Kind>),
        Kernel::Positions => {
            let t = x.size().get(1).copied().unwrap_or(0);
            Tensor::f_arange(t, (Kind::Int64, x.device()))?.f_unsqueeze(0)
        }
        Kernel::MatMul => x.f_matmul(a[1]),
    }
}

/// `[1, T, D]`: `sin(t / 10000^(2⌊j/2⌋/D))` at even `j`, `cos` at odd `j`, computed in
/// float64 (as VideoMAE's numpy table), then in `x`'s dtype and device.
fn sinusoid_table(x: &Tensor) -> Result<Tensor, TchError> {
    let s = x.size();
    let (t, d) = (s[1], s[2]);
    let f64_cpu = (Kind::Double, tch::Device::Cpu);
    let pos = Tensor::f_arange(t, f64_cpu)?.f_unsqueeze(1)?;
    let j = Tensor::f_arange(d, (Kind::Int64, tch::Device::Cpu))?;
    let pair = j.f_floor_divide_scalar(2)?.f_to_kind(Kind::Double)?;
    let denom = Tensor::f_full([d], 10000.0, f64_cpu)?.f_pow(&pair.f_mul_scalar(2.0)?.f_div_scalar(d as f64)?)?;
    let angle = pos.f_div(&denom.f_unsqueeze(0)?)?;
    let even = j.f_remainder(2)?.f_eq(0)?.f_unsqueeze(0)?;
    let table = angle.f_sin()?.f_where_self(&even, &angle.f_cos()?)?;
    table.f_unsqueeze(0)?.f_to_kind(x.kind())?.f_to_device(x.device())
}

/// Multi-head attention over `[B, T, D]` q, k, v; `mask` `[B, Tk]`, non-zero = attend.
/// The mask is additive with the dtype's most negative value, as in Hugging Face
/// BERT, so a row with every key masked averages instead of producing NaN.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, heads: i64) -> Result<Tensor, TchError> {
    let split = |t: &Tensor| -> Result<Tensor, TchError> {
        let s = t.size();
        t.f_reshape([s[0], s[1], heads, s[2] / heads])?.f_transpose(1, 2)
    };
    let (qh, kh, vh) = (split(q)?, split(k)?, split(v)?);
    let bias = match mask {
        Some(m) => {
            let s = m.size();
            let blocked = m.f_eq(0)?.f_to_kind(q.kind())?;
            Some(blocked.f_mul_scalar(min_value(q.kind()))?.f_reshape([s[0], 1, 1, s[1]])?)
        }
        None => None,
    };
    let o = Tensor::f_scaled_dot_product_attention(&qh, &kh, &vh, bias.as_ref(), 0.0, false, None::<f64>, false)?;
    let (b, t, dv) = (q.size()[0], q.size()[1], v.size()[2]);
    o.f_transpose(1, 2)?.f_reshape([b, t, dv])
}
