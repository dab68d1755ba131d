//! Plan → [`Program`]: the backend-neutral plan specialised to concrete input shapes
//! and to which optional inputs are present.
//!
//! Walks the plan's instructions once. Views cost nothing (`reshape` of uniformly
//! strided rows, `split` on the last axis, `token_select`, `permute` of a token-major
//! convolution output); other layouts are copied. Absent values propagate exactly as
//! in the torch backend: everything computed from an absent input is absent, except
//! that `add` passes through a present operand computed from the data. Elementwise
//! ops form fusion groups ([`super::ewlower`]); a layer norm right after a
//! residual add computes both. Buffers get arena offsets from their lifetimes
//! ([`super::arena`]).

use super::arena;
use super::ew::EwCompiler;
use super::ewlower::{self, EwOp};
use super::lowering::{internal, Lowering, Val};
use super::program::{Mask, OutVal, Program, Step, Store, Strided, View};
use super::rows::ConvGeom;
use crate::backend::plan::{Kernel, Plan, Src};
use crate::backend::BackendError;

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
    ew: &mut EwCompiler,
) -> Result<Program, BackendError> {
    let mut l = Lowering {
        plan,
        steps: Vec::new(),
        buffers: Vec::new(),
        ids: Vec::new(),
        threads,
        ew,
        path: String::new(),
        op: "",
    };
    let mut slots: Vec<Val> = vec![Val::Absent; plan.slots()];
    for (i, (inp, sig)) in plan.inputs().iter().zip(sigs).enumerate() {
        let Some(slot) = inp.slot else { continue };
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
    for ins in plan.instrs() {
        l.path.clone_from(&ins.path);
        l.op = ins.op;
        let args: Vec<Val> = ins
            .args
            .iter()
            .map(|a| match *a {
                Src::Slot(s) => slots[s].clone(),
                Src::Param(p) => Val::F(l.param(p)),
            })
            .collect();
        let value = if args.iter().any(|a| matches!(a, Val::Absent)) {
            if ins.kernel == Kernel::Add {
                args.iter()
                    .zip(&ins.data)
                    .find(|(a, &d)| d && !matches!(a, Val::Absent))
                    .map(|(a, _)| a.clone())
                    .unwrap_or(Val::Absent)
            } else {
                Val::Absent
            }
        } else {
            instr(&mut l, &ins.kernel, args)?
        };
        slots[ins.out] = value;
    }
    let mut outputs = Vec::new();
    let mut out_views = Vec::new();
    for o in plan.outputs() {
        let v = match o.src {
            Src::Slot(s) => slots[s].clone(),
            Src::Param(p) => Val::F(l.param(p)),
        };
        let out = match v {
            Val::Absent => return Err(BackendError::AbsentOutput(o.name.clone())),
            Val::F(v) => {
                if let Store::Arena(b) = v.store {
                    l.buffers[b].last = usize::MAX;
                }
                out_views.push(v.clone());
                OutVal::Float(v)
            }
            Val::I(buf, shape) => OutVal::Ids { buf, shape },
        };
        outputs.push((o.name.clone(), out));
    }
    ewlower::finish(&mut l, &out_views)?;
    // Lay out the arena: buffers live from their writer to their last reader.
    let end = l.steps.len();
    let reqs: Vec<arena::Request> =
        l.buffers.iter().map(|b| arena::Request { bytes: b.len * 4, first: b.first, last: b.last.min(end) }).collect();
    let layout = arena::plan(&reqs);
    for (b, off) in l.buffers.iter_mut().zip(&layout.offsets) {
        b.offset = off / 4;
    }
    Ok(Program {
        steps: l.steps,
        buffers: l.buffers,
        ids: l.ids,
        outputs,
        arena_len: layout.size / 4,
        peak_live_bytes: layout.peak_live,
    })
}

/// The concrete shape of absent input `i` (replaced by zeros) from the symbols the
/// present inputs bind.
fn concrete_zeros(plan: &Plan, sigs: &[Option<InputSig>], i: usize) -> Result<Vec<usize>, BackendError> {
    use crate::ir::Dim;
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

fn float(l: &Lowering, v: Val) -> Result<View, BackendError> {
    match v {
        Val::F(v) => Ok(v),
        Val::I(..) => Err(l.err("expects a float tensor, got integer ids (the native backend computes in f32)")),
        Val::Absent => Err(internal("absent operand reached a kernel")),
    }
}

fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}

/// One instruction on present operands.
fn instr(l: &mut Lowering, k: &Kernel, mut a: Vec<Val>) -> Result<Val, BackendError> {
    Ok(match k {
        Kernel::Linear | Kernel::GroupedLinear { .. } => {
            let groups = match k {
                Kernel::GroupedLinear { groups } => *groups as usize,
                _ => 1,
            };
            let x = l.rowwise(float(l, a.remove(0))?);
            let w = float(l, a.remove(0))?;
            let w = l.dense(w);
            let bias = a.pop().map(|b| float(l, b)).transpose()?;
            let bias = bias.map(|b| l.dense(b));
            let mut shape = x.shape.clone();
            *shape.last_mut().ok_or_else(|| internal("linear of a 0-d value"))? = w.shape[0];
            let y = l.fresh(shape);
            for v in [&x, &w].into_iter().chain(bias.as_ref()) {
                l.touch(v);
            }
            l.push(Step::Linear { x, w, bias, y: y.clone(), groups });
            Val::F(y)
        }
        Kernel::Conv { stride } => {
            let x = l.dense(float(l, a.remove(0))?);
            let w = l.dense(float(l, a.remove(0))?);
            let bias = a.pop().map(|b| float(l, b)).transpose()?;
            let nd = stride.len();
            let geom = ConvGeom {
                batch: x.shape[0],
                channels: x.shape[1],
                size: x.shape[2..].to_vec(),
                kernel: w.shape[2..].to_vec(),
                stride: stride.iter().map(|&s| s as usize).collect(),
            };
            if geom.size.len() != nd || geom.size.iter().zip(&geom.kernel).any(|(s, k)| k > s) {
                return Err(l.err(format!("input {:?} is smaller than the kernel {:?}", x.shape, w.shape)));
            }
            let (tokens, patch, o) = (geom.tokens(), geom.patch(), w.shape[0]);
            let cols = l.fresh(vec![geom.batch * tokens, patch]);
            l.touch(&x);
            l.push(Step::Im2col { x, geom: geom.clone(), dst: cols.clone() });
            let y = l.fresh(vec![geom.batch * tokens, o]);
            let wm = View::plain(w.store, w.offset, vec![o, patch]);
            for v in [&cols, &wm].into_iter().chain(bias.as_ref()) {
                l.touch(v);
            }
            l.push(Step::Linear { x: cols, w: wm, bias, y: y.clone(), groups: 1 });
            let mut shape = vec![geom.batch, o];
            shape.extend(geom.out_size());
            Val::F(View { store: y.store, offset: y.offset, rs: o, shape, token_major: true })
        }
        Kernel::LayerNorm { eps } => {
            let x = l.dense(float(l, a.remove(0))?);
            let gamma = l.dense(float(l, a.remove(0))?);
            let beta = l.dense(float(l, a.remove(0))?);
            // A residual add just before that wrote `x`: compute both in one pass.
            let add = ewlower::take_plain_add(l, &x);
            let out = l.fresh(x.shape.clone());
            for v in [&x, &gamma, &beta] {
                l.touch(v);
            }
            if let Some((p, q)) = &add {
                l.touch(p);
                l.touch(q);
            }
            l.push(Step::LayerNorm { x, gamma, beta, eps: *eps as f32, out: out.clone(), add });
            Val::F(out)
        }
        Kernel::Gelu => ewlower::unary(l, EwOp::Gelu, float(l, a.remove(0))?)?,
        Kernel::Relu => ewlower::unary(l, EwOp::Relu, float(l, a.remove(0))?)?,
        Kernel::Tanh => ewlower::unary(l, EwOp::Tanh, float(l, a.remove(0))?)?,
        Kernel::Sigmoid => ewlower::unary(l, EwOp::Sigmoid, float(l, a.remove(0))?)?,
        Kernel::SinusoidPositions => {
            // The table depends on the input's shape only.
            let x = float(l, a.remove(0))?;
            let (t, d) = (x.shape[1], x.shape[2]);
            let dst = l.fresh(vec![1, t, d]);
            l.push(Step::Sinusoid { dst: dst.clone() });
            Val::F(dst)
        }
        Kernel::Scale { factor } => ewlower::unary(l, EwOp::Scale(*factor as f32), float(l, a.remove(0))?)?,
        Kernel::Add | Kernel::Mul => {
            let x = float(l, a.remove(0))?;
            let y = float(l, a.remove(0))?;
            ewlower::binary(l, if *k == Kernel::Add { EwOp::Add } else { EwOp::Mul }, x, y)?
        }
        Kernel::Attention { heads } => {
            let q = l.rowwise(float(l, a.remove(0))?);
            let k = l.rowwise(float(l, a.remove(0))?);
            let v = l.rowwise(float(l, a.remove(0))?);
            let mask = match a.pop() {
                None => None,
                Some(Val::I(b, _)) => Some(Mask::Ids(b)),
                Some(m) => Some(Mask::Float(l.dense(float(l, m)?))),
            };
            let heads = *heads as usize;
            let (b, tq, tk, dv) = (q.shape[0], q.shape[1], k.shape[1], v.shape[2]);
            let dh = q.shape[2] / heads;
            let out = l.fresh(vec![b, tq, dv]);
            let scratch = l.fresh(vec![l.threads, tq * tk]);
            for t in [&q, &k, &v] {
                l.touch(t);
            }
            if let Some(Mask::Float(m)) = &mask {
                l.touch(m);
            }
            let scale = 1.0 / (dh as f32).sqrt();
            l.push(Step::Attention { q, k, v, mask, out: out.clone(), heads, scale, scratch });
            Val::F(out)
        }
        Kernel::Reshape { dims } => {
            let (shape, v, ids) = match a.remove(0) {
                Val::I(b, s) => (s, None, b),
                Val::F(v) => (v.shape.clone(), Some(v), 0),
                Val::Absent => return Err(internal("absent reshape")),
            };
            let numel: usize = shape.iter().product();
            let mut to: Vec<i64> = dims
                .iter()
                .enumerate()
                .map(|(i, &d)| if d == 0 { shape.get(i).copied().unwrap_or(0) as i64 } else { d })
                .collect();
            if let Some(p) = to.iter().position(|&d| d == -1) {
                let known: i64 = to.iter().filter(|&&d| d != -1).product();
                to[p] = if known == 0 { 0 } else { numel as i64 / known };
            }
            let to: Vec<usize> = to.iter().map(|&d| d as usize).collect();
            if to.iter().product::<usize>() != numel {
                return Err(l.err(format!("cannot reshape {shape:?} to {dims:?}")));
            }
            match v {
                None => Val::I(ids, to),
                Some(v) => Val::F(reshape(l, v, to)),
            }
        }
        Kernel::Permute { perm } => {
            let v = float(l, a.remove(0))?;
            let perm: Vec<usize> = perm.iter().map(|&p| norm_axis(p, v.shape.len())).collect();
            let shape: Vec<usize> = perm.iter().map(|&p| v.shape[p]).collect();
            // [B, C, T] token-major permuted to [B, T, C] is the stored matrix itself.
            if v.token_major && v.shape.len() == 3 && perm == [0, 2, 1] {
                return Ok(Val::F(View { store: v.store, offset: v.offset, rs: v.rs, shape, token_major: false }));
            }
            let st = v.strides();
            let src = Strided {
                store: v.store,
                offset: v.offset,
                shape: shape.clone(),
                strides: perm.iter().map(|&p| st[p]).collect(),
            };
            let dst = l.fresh(shape);
            l.touch(&v);
            l.push(Step::Copy { src, dst: Strided::of(&dst) });
            Val::F(dst)
        }
        Kernel::Split { axis, parts, index } => {
            let v = float(l, a.remove(0))?;
            let ax = norm_axis(*axis, v.shape.len());
            let n = v.shape[ax] / *parts as usize;
            let mut shape = v.shape.clone();
            shape[ax] = n;
            let st = v.strides();
            let offset = v.offset + *index as usize * n * st[ax];
            if !v.token_major && ax + 1 == v.shape.len() {
                Val::F(View { store: v.store, offset, rs: v.rs, shape, token_major: false })
            } else if v.contiguous() && v.shape[..ax].iter().all(|&d| d == 1) {
                Val::F(View::plain(v.store, offset, shape))
            } else {
                let src = Strided { store: v.store, offset, shape: shape.clone(), strides: st };
                let dst = l.fresh(shape);
                l.touch(&v);
                l.push(Step::Copy { src, dst: Strided::of(&dst) });
                Val::F(dst)
            }
        }
        Kernel::Concat { axis } => concat(l, *axis, a)?,
        Kernel::Embedding => {
            let Val::I(ids, shape) = a.remove(0) else {
                return Err(l.err("embedding ids must be an integer tensor"));
            };
            let table = l.dense(float(l, a.remove(0))?);
            let d = table.shape[1];
            let mut oshape = shape;
            oshape.push(d);
            let out = l.fresh(oshape);
            l.touch(&table);
            let path = l.path.clone();
            l.push(Step::Embedding { ids, table, out: out.clone(), path });
            Val::F(out)
        }
        Kernel::TokenSelect { index } => {
            let v = l.rowwise(float(l, a.remove(0))?);
            let (b, t, d) = (v.shape[0], v.shape[1], v.shape[2]);
            let idx = if *index < 0 { *index + t as i64 } else { *index };
            if idx < 0 || idx >= t as i64 {
                return Err(l.err(format!("token {index} is out of range for {t} tokens")));
            }
            Val::F(View {
                store: v.store,
                offset: v.offset + idx as usize * v.rs,
                rs: v.rs * t,
                shape: vec![b, d],
                token_major: false,
            })
        }
        Kernel::MeanTokens => {
            let x = l.dense(float(l, a.remove(0))?);
            let out = l.fresh(vec![x.shape[0], x.shape[2]]);
            l.touch(&x);
            l.push(Step::MeanTokens { x, out: out.clone() });
            Val::F(out)
        }
        Kernel::Positions => {
            let shape = match &a[0] {
                Val::I(_, s) => s.clone(),
                Val::F(v) => v.shape.clone(),
                Val::Absent => return Err(internal("absent positions")),
            };
            let t = shape.get(1).copied().unwrap_or(0);
            l.ids.push((0..t as i64).collect());
            Val::I(l.ids.len() - 1, vec![1, t])
        }
        Kernel::MatMul => {
            let x = l.dense(float(l, a.remove(0))?);
            let w = l.dense(float(l, a.remove(0))?);
            let (r, wr) = (x.shape.len(), w.shape.len());
            if r < 2 || wr < 2 {
                return Err(l.err("matmul needs operands of rank 2 or more"));
            }
            let (m, n) = (x.shape[r - 2], w.shape[wr - 1]);
            let shared = wr == 2;
            let batch: usize = x.shape[..r - 2].iter().product();
            if !shared && w.shape[..wr - 2].iter().product::<usize>() != batch {
                return Err(l.err("matmul batch dims differ"));
            }
            let mut shape = x.shape.clone();
            shape[r - 1] = n;
            shape[r - 2] = m;
            let out = l.fresh(shape);
            l.touch(&x);
            l.touch(&w);
            l.push(Step::MatMul { a: x, w, out: out.clone(), batch, shared });
            Val::F(out)
        }
    })
}

/// A reshape: free when the last dim stays and rows stay uniformly strided, or when
/// the value is contiguous.
fn reshape(l: &mut Lowering, v: View, to: Vec<usize>) -> View {
    if v.contiguous() {
        return View::plain(v.store, v.offset, to);
    }
    // [B, C, s1, s2] token-major flattened to [B, C, s1·s2] stays token-major.
    if v.token_major && to.len() >= 2 && to[..2] == v.shape[..2] {
        return View { shape: to, ..v };
    }
    if !v.token_major && to.last() == v.shape.last() {
        return View { shape: to, ..v };
    }
    let d = l.dense(v);
    View::plain(d.store, d.offset, to)
}

/// Concat along `axis`: each part copied into its slice of one buffer, size-1 dims
/// off the axis broadcast to the largest size (a class token against the patches).
fn concat(l: &mut Lowering, axis: i64, a: Vec<Val>) -> Result<Val, BackendError> {
    let parts: Vec<View> = a.into_iter().map(|v| float(l, v)).collect::<Result<_, _>>()?;
    let rank = parts[0].shape.len();
    let ax = norm_axis(axis, rank);
    let mut target = vec![1usize; rank];
    for p in &parts {
        for (i, &d) in p.shape.iter().enumerate() {
            if i != ax && d != 1 {
                target[i] = d;
            }
        }
    }
    target[ax] = parts.iter().map(|p| p.shape[ax]).sum();
    let out = l.fresh(target.clone());
    let ost = out.strides();
    let mut at = 0usize;
    for p in &parts {
        let mut shape = target.clone();
        shape[ax] = p.shape[ax];
        let pst = p.strides();
        let strides = (0..rank).map(|i| if p.shape[i] == 1 && shape[i] != 1 { 0 } else { pst[i] }).collect();
        let src = Strided { store: p.store, offset: p.offset, shape: shape.clone(), strides };
        let dst = Strided { store: out.store, offset: at * ost[ax], shape, strides: ost.clone() };
        l.touch(p);
        l.touch(&out);
        l.push(Step::Copy { src, dst });
        at += p.shape[ax];
    }
    Ok(Val::F(out))
}
