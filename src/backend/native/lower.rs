//! Plan → [`Program`]: the backend-neutral plan specialised to concrete input shapes
//! and to which optional inputs are present.
//!
//! Walks the plan's instructions once. Each result's shape is the op's own shape rule
//! ([`Op::infer`]) over the operands' run-time shapes, so the native backend agrees
//! with the compiler on every shape and reports what the rule refuses. Views cost
//! nothing (`reshape` of uniformly strided rows, `split` on the last axis,
//! `token_select`, `permute` of a token-major convolution output); other layouts are
//! copied. Absent values follow [`Op::on_absent`], as in the torch backend.
//! Elementwise ops form fusion groups ([`super::ewlower`]); a layer norm right after
//! a residual add computes both. Values passed from one linear layer to another get
//! rows padded off a 4 KiB multiple ([`super::pad`]).
//!
//! Steps only say what they read and write ([`Step::access`]); once lowering ends,
//! every arena buffer's lifetime is derived from those declarations
//! ([`arena::lifetimes`]) and the buffers get offsets from their lifetimes
//! ([`arena::plan`]).

use super::arena;
use super::attention::AttentionPath;
use super::ew::EwCompiler;
use super::ewlower::{self, EwOp};
use super::lowering::{float, internal, Lowering, Val};
use super::math::SimdLevel;
use super::pad;
use super::program::{Buffer, Epilogue, Mask, OutVal, Program, Scheduled, Step, Store, View};
use super::rows::ConvGeom;
use crate::backend::plan::{Kernel, Plan, Src};
use crate::backend::{BackendError, KernelError};
use crate::ir::{DType, Dim, Op, TensorType};

/// Concrete description of one input at run time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InputSig {
    pub shape: Vec<usize>,
    pub int: bool,
}

/// Lower `plan` for inputs described by `sigs` (`None`: absent).
pub fn lower(
    plan: &Plan,
    sigs: &[Option<InputSig>],
    threads: usize,
    (attention, level): (AttentionPath, SimdLevel),
    ew: &mut EwCompiler,
) -> Result<Program, BackendError> {
    let mut l = Lowering {
        plan,
        steps: Vec::new(),
        buffers: Vec::new(),
        ids: Vec::new(),
        threads,
        attention,
        level,
        ew,
        sites: Vec::new(),
    };
    let mut slots = load_inputs(&mut l, sigs)?;
    for ins in plan.instrs() {
        l.enter(&ins.path, ins.op.name());
        let args: Vec<Val> = ins.args.iter().map(|a| value(&l, &slots, *a)).collect();
        let absent: Vec<bool> = args.iter().map(|a| matches!(a, Val::Absent)).collect();
        slots[ins.out] = if absent.contains(&true) {
            ins.op.on_absent(&absent, &ins.data).map_or(Val::Absent, |i| args[i].clone())
        } else {
            let shape = out_shape(&l, &ins.op, &args)?;
            instr(&mut l, &ins.kernel, args, shape)?
        };
    }
    let mut outputs = Vec::new();
    let mut out_views = Vec::new();
    for o in plan.outputs() {
        let out = match value(&l, &slots, o.src) {
            Val::Absent => return Err(BackendError::AbsentOutput(o.name.clone())),
            Val::F(v) => {
                out_views.push(v.clone());
                OutVal::Float(v)
            }
            Val::I(buf, shape) => OutVal::Ids { buf, shape },
        };
        outputs.push((o.name.clone(), out));
    }
    let mut steps = ewlower::finish(&mut l, &out_views)?;
    let live_out: Vec<usize> = out_views
        .iter()
        .filter_map(|v| match v.store {
            Store::Arena(b) => Some(b),
            Store::Param(_) => None,
        })
        .collect();
    pad::pad_rows(&mut steps, &mut l.buffers, &live_out);
    let steps: Vec<Scheduled> =
        steps.into_iter().map(|(step, site)| Scheduled { access: step.access(), step, site }).collect();
    let (buffers, layout) = lay_out(&steps, &l.buffers, &live_out)?;
    Ok(Program {
        steps,
        sites: l.sites,
        buffers,
        ids: l.ids,
        outputs,
        arena_len: layout.size / 4,
        peak_live_bytes: layout.peak_live,
    })
}

/// Place every buffer some step touches, by the lifetimes the steps declare.
fn lay_out(
    steps: &[Scheduled],
    lens: &[usize],
    live_out: &[usize],
) -> Result<(Vec<Buffer>, arena::Layout), BackendError> {
    let life = arena::lifetimes(steps.iter().map(|s| &s.access), lens.len(), live_out).map_err(internal)?;
    let used: Vec<usize> = (0..lens.len()).filter(|&b| life[b].is_some()).collect();
    let reqs: Vec<arena::Request> = used
        .iter()
        .filter_map(|&b| life[b].map(|(first, last)| arena::Request { bytes: lens[b] * 4, first, last }))
        .collect();
    let layout = arena::plan(&reqs);
    let mut buffers: Vec<Buffer> = lens.iter().map(|_| Buffer { len: 0, offset: 0 }).collect();
    for (&b, off) in used.iter().zip(&layout.offsets) {
        buffers[b] = Buffer { len: lens[b], offset: off / 4 };
    }
    Ok((buffers, layout))
}

/// The value a plan operand names.
fn value(l: &Lowering, slots: &[Val], src: Src) -> Val {
    match src {
        Src::Slot(s) => slots[s].clone(),
        Src::Param(p) => Val::F(l.param(p)),
    }
}

/// The slots with the model inputs loaded (absent `= zeros` inputs zero-filled).
fn load_inputs(l: &mut Lowering, sigs: &[Option<InputSig>]) -> Result<Vec<Val>, BackendError> {
    let plan = l.plan;
    let mut slots: Vec<Val> = vec![Val::Absent; plan.slots()];
    for (i, (inp, sig)) in plan.inputs().iter().zip(sigs).enumerate() {
        let Some(slot) = inp.slot else { continue };
        l.enter(&inp.name, "input");
        slots[slot] = match sig {
            Some(s) if s.int => {
                l.ids.push(vec![0; s.shape.iter().product()]);
                l.push(Step::LoadIds { input: i, dst: l.ids.len() - 1 });
                Val::I(l.ids.len() - 1, s.shape.clone())
            }
            Some(s) => {
                let dst = l.fresh(s.shape.clone());
                l.push(Step::LoadInput { input: i, dst: dst.clone() });
                Val::F(dst)
            }
            None if inp.default_zeros => {
                let shape = concrete_zeros(plan, sigs, i)?;
                if inp.ty.dtype.is_int() {
                    l.ids.push(vec![0; shape.iter().product()]);
                    Val::I(l.ids.len() - 1, shape)
                } else {
                    let dst = l.fresh(shape);
                    l.push(Step::Zero { dst: dst.clone() });
                    Val::F(dst)
                }
            }
            None => Val::Absent,
        };
    }
    Ok(slots)
}

/// The concrete shape of absent input `i` (replaced by zeros) from the symbols the
/// present inputs bind.
fn concrete_zeros(plan: &Plan, sigs: &[Option<InputSig>], i: usize) -> Result<Vec<usize>, BackendError> {
    let mut syms = std::collections::BTreeMap::new();
    for (inp, sig) in plan.inputs().iter().zip(sigs) {
        if let Some(s) = sig {
            for (d, &n) in inp.ty.shape.iter().zip(&s.shape) {
                if let Dim::Sym(name) = d {
                    syms.insert(name.clone(), n);
                }
            }
        }
    }
    let inp = &plan.inputs()[i];
    inp.ty
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Ok(*n as usize),
            Dim::Sym(s) => syms.get(s).copied().ok_or_else(|| BackendError::Unbound {
                input: inp.name.clone(),
                ty: inp.ty.to_string(),
                symbol: s.clone(),
            }),
        })
        .collect()
}

/// The result's shape: the op's shape rule over the operands' run-time types.
fn out_shape(l: &Lowering, op: &Op, args: &[Val]) -> Result<Vec<usize>, BackendError> {
    let dims = |s: &[usize]| s.iter().map(|&d| d as i64).collect::<Vec<i64>>();
    let tys = args
        .iter()
        .map(|a| match a {
            Val::F(v) => Ok(TensorType::fixed(DType::F32, &dims(&v.shape))),
            Val::I(_, s) => Ok(TensorType::fixed(DType::I64, &dims(s))),
            Val::Absent => Err(internal("absent operand reached a kernel")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&TensorType> = tys.iter().collect();
    let ty = op.infer(&refs).map_err(|m| l.err(KernelError::Shape(m)))?;
    ty.shape
        .iter()
        .map(|d| match d.fixed() {
            Some(n) if n >= 0 => Ok(n as usize),
            _ => Err(internal(format!("the shape rule of `{}` left {d} unknown", op.name()))),
        })
        .collect()
}

/// One instruction on present operands; `out` is the result's shape.
fn instr(l: &mut Lowering, k: &Kernel, mut a: Vec<Val>, out: Vec<usize>) -> Result<Val, BackendError> {
    let unary = |l: &mut Lowering, op, mut a: Vec<Val>, out| ewlower::lower(l, op, vec![float(l, a.remove(0))?], out);
    match k {
        Kernel::Linear => linear(l, a, 1, out),
        Kernel::GroupedLinear { groups } => linear(l, a, *groups as usize, out),
        Kernel::Conv { stride } => conv(l, a, stride, out),
        Kernel::LayerNorm { eps } => layer_norm(l, a, *eps as f32),
        Kernel::Gelu => unary(l, EwOp::Gelu, a, out),
        Kernel::Relu => unary(l, EwOp::Relu, a, out),
        Kernel::Tanh => unary(l, EwOp::Tanh, a, out),
        Kernel::Sigmoid => unary(l, EwOp::Sigmoid, a, out),
        Kernel::Scale { factor } => unary(l, EwOp::Scale(*factor as f32), a, out),
        Kernel::Add | Kernel::Mul => {
            let x = float(l, a.remove(0))?;
            let y = float(l, a.remove(0))?;
            ewlower::lower(l, if *k == Kernel::Add { EwOp::Add } else { EwOp::Mul }, vec![x, y], out)
        }
        Kernel::SinusoidPositions => {
            // The table depends on the input's shape only: made once, here.
            let dst = l.fresh(out);
            let d = dst.shape[2];
            let t = dst.numel().checked_div(d).unwrap_or(0);
            let table = super::rows::sinusoid_table(t, d).into();
            l.push(Step::Sinusoid { dst: dst.clone(), table });
            Ok(Val::F(dst))
        }
        Kernel::Attention { heads } => attention(l, a, *heads as usize, out),
        Kernel::Reshape { .. } => super::views::reshape(l, a.remove(0), out),
        Kernel::Permute { perm } => super::views::permute(l, float(l, a.remove(0))?, perm, out),
        Kernel::Split { axis, index, .. } => super::views::split(l, float(l, a.remove(0))?, *axis, *index, out),
        Kernel::Concat { axis } => super::views::concat(l, *axis, a, out),
        Kernel::TokenSelect { index } => super::views::token_select(l, float(l, a.remove(0))?, *index, out),
        Kernel::Embedding => {
            let Val::I(ids, _) = a.remove(0) else { return Err(l.err(KernelError::FloatOperand)) };
            let table = l.dense(float(l, a.remove(0))?);
            let dst = l.fresh(out);
            l.push(Step::Embedding { ids, table, out: dst.clone() });
            Ok(Val::F(dst))
        }
        Kernel::MeanTokens => {
            let x = l.dense(float(l, a.remove(0))?);
            let dst = l.fresh(out);
            l.push(Step::MeanTokens { x, out: dst.clone() });
            Ok(Val::F(dst))
        }
        Kernel::Positions => {
            // `[1, T]`: the constant `0..T`.
            l.ids.push((0..out[1] as i64).collect());
            Ok(Val::I(l.ids.len() - 1, out))
        }
        Kernel::MatMul => {
            let x = l.dense(float(l, a.remove(0))?);
            let w = l.dense(float(l, a.remove(0))?);
            // `[m, k] · [k]` is `[m, k] · [k, 1]`.
            let w = View::plain(w.store, w.offset, vec![w.shape[0], w.shape.get(1).copied().unwrap_or(1)]);
            let dst = l.fresh(out);
            l.push(Step::MatMul { a: x, w, out: dst.clone() });
            Ok(Val::F(dst))
        }
    }
}

/// A (grouped) linear: `x · wᵀ (+ bias)` over `groups` channel groups.
fn linear(l: &mut Lowering, mut a: Vec<Val>, groups: usize, out: Vec<usize>) -> Result<Val, BackendError> {
    let x = l.rowwise(float(l, a.remove(0))?);
    let w = float(l, a.remove(0))?;
    let w = l.dense(w);
    let bias = a.pop().map(|b| float(l, b)).transpose()?;
    let bias = bias.map(|b| l.dense(b));
    let y = l.fresh(out);
    l.push(Step::Linear { x, w, bias, y: y.clone(), groups, epilogue: Epilogue::None });
    Ok(Val::F(y))
}

/// A convolution without padding: token-major patches, then one GEMM. The result
/// stays token-major (`[B, Π out, O]` stored for the logical `[B, O, out…]`).
fn conv(l: &mut Lowering, mut a: Vec<Val>, stride: &[i64], out: Vec<usize>) -> Result<Val, BackendError> {
    let x = l.dense(float(l, a.remove(0))?);
    let w = l.dense(float(l, a.remove(0))?);
    let bias = a.pop().map(|b| float(l, b)).transpose()?;
    let geom = ConvGeom {
        batch: x.shape[0],
        channels: x.shape[1],
        size: x.shape[2..].to_vec(),
        kernel: w.shape[2..].to_vec(),
        stride: stride.iter().map(|&s| s as usize).collect(),
    };
    let (tokens, patch, o) = (geom.tokens(), geom.patch(), w.shape[0]);
    let cols = l.fresh(vec![geom.batch * tokens, patch]);
    l.push(Step::Im2col { x, geom: geom.clone(), dst: cols.clone() });
    let y = l.fresh(vec![geom.batch * tokens, o]);
    let wm = View::plain(w.store, w.offset, vec![o, patch]);
    l.push(Step::Linear { x: cols, w: wm, bias, y: y.clone(), groups: 1, epilogue: Epilogue::None });
    Ok(Val::F(View { store: y.store, offset: y.offset, rs: o, shape: out, token_major: true }))
}

/// A layer norm over the last dim; a residual add just before that wrote `x` is
/// computed in the same pass.
fn layer_norm(l: &mut Lowering, mut a: Vec<Val>, eps: f32) -> Result<Val, BackendError> {
    let x = l.dense(float(l, a.remove(0))?);
    let gamma = l.dense(float(l, a.remove(0))?);
    let beta = l.dense(float(l, a.remove(0))?);
    let add = ewlower::take_plain_add(l, &x);
    let out = l.fresh(x.shape.clone());
    l.push(Step::LayerNorm { x, gamma, beta, eps, out: out.clone(), add });
    Ok(Val::F(out))
}

/// Multi-head attention with an optional key mask (float or integer).
fn attention(l: &mut Lowering, mut a: Vec<Val>, heads: usize, out: Vec<usize>) -> Result<Val, BackendError> {
    let q = l.rowwise(float(l, a.remove(0))?);
    let k = l.rowwise(float(l, a.remove(0))?);
    let v = l.rowwise(float(l, a.remove(0))?);
    let mask = match a.pop() {
        None => None,
        Some(Val::I(b, _)) => Some(Mask::Ids(b)),
        Some(m) => Some(Mask::Float(l.dense(float(l, m)?))),
    };
    let (tq, tk) = (q.shape[1], k.shape[1]);
    let dh = q.shape[2] / heads;
    let dst = l.fresh(out);
    let kernel = l.attention.kernel(tk, l.level);
    let per = AttentionPath::scratch(kernel, tq, tk, dh, v.shape[2] / heads);
    // Whole cache lines a thread, so every thread's scratch starts 64-byte aligned like
    // the arena (the packed path's panels are read with aligned loads).
    let scratch = l.fresh(vec![l.threads, per.next_multiple_of(16)]);
    let scale = 1.0 / (dh as f32).sqrt();
    l.push(Step::Attention { q, k, v, mask, out: dst.clone(), heads, scale, scratch, kernel });
    Ok(Val::F(dst))
}
