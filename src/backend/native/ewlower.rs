//! Elementwise ops → fusion groups ([`super::ew::EwGroup`]).
//!
//! Each `add`/`mul`/`scale`/`relu`/`tanh`/`gelu` maps its broadcast operands onto a
//! `[rows, cols]` iteration space (every operand full, one value per column, one per
//! row, or a scalar there; otherwise the operand is expanded by a copy). An op whose
//! operand is an output of the group just before it, over the same space, joins that
//! group. When lowering ends, a group output that nothing outside the group reads is
//! dropped (its value stays in registers / L1 blocks), and each group is compiled
//! (identical groups hit the compiler's cache). A lone GELU of a linear layer's output
//! that nothing else reads becomes that linear's epilogue instead ([`Epilogue::Gelu`]).

use super::ew::{EwBroadcast, EwGroup, EwInstr, EwValue};
use super::lowering::{internal, EwSpec, Lowered, Lowering, Val};
use super::program::{Access, Epilogue, Res, Step, Store, Strided, View};
use crate::backend::BackendError;

/// The most instructions one fusion group holds: a longer chain continues in a new
/// group (reading the last one's output), so lowering stays linear in the chain's
/// length and each compiled kernel stays small.
pub const MAX_GROUP_OPS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EwOp {
    Add,
    Mul,
    Scale(f32),
    Relu,
    Tanh,
    Gelu,
    Sigmoid,
}

/// How a dense operand of shape `s` (left-padded with 1s) is read over `out` split
/// at `p` into `[Π out[..p], Π out[p..]]`.
fn classify(out: &[usize], s: &[usize], p: usize) -> Option<EwBroadcast> {
    let r = out.len();
    let pad: Vec<usize> = std::iter::repeat_n(1, r - s.len()).chain(s.iter().copied()).collect();
    let lead_full = pad[..p] == out[..p];
    let lead_one = pad[..p].iter().all(|&d| d == 1);
    let tail_full = pad[p..] == out[p..];
    let tail_one = pad[p..].iter().all(|&d| d == 1);
    match (lead_full, lead_one, tail_full, tail_one) {
        (true, _, true, _) => Some(EwBroadcast::Full),
        (_, true, true, _) => Some(EwBroadcast::Row),
        (true, _, _, true) => Some(EwBroadcast::Col),
        (_, true, _, true) => Some(EwBroadcast::Scalar),
        _ => None,
    }
}

/// The pending group that `v` is an output of, if it is the last step.
fn pending_output(l: &Lowering, v: &View) -> Option<EwValue> {
    l.last_group()?.outputs.iter().find(|(_, o)| o == v).map(|(val, _)| *val)
}

fn pending_space(l: &Lowering) -> Option<(usize, usize)> {
    l.last_group().map(|g| (g.rows, g.cols))
}

/// Lower one elementwise op over operands `xs` (made dense) whose broadcast result
/// has `out_shape` (the op's shape rule).
pub(super) fn lower(l: &mut Lowering, op: EwOp, xs: Vec<View>, out_shape: Vec<usize>) -> Result<Val, BackendError> {
    let mut xs: Vec<View> = xs.into_iter().map(|x| l.dense(x)).collect();
    let r = out_shape.len();
    // Split points that classify every operand, the pending group's space first.
    let fits = |p: usize, xs: &[View]| xs.iter().all(|x| classify(&out_shape, &x.shape, p).is_some());
    let space = |p: usize| (out_shape[..p].iter().product::<usize>(), out_shape[p..].iter().product::<usize>());
    // Rows of the last dim first: splitting after it (`[numel, 1]`) would leave the
    // kernels one column per row, and a JIT'd group a scalar loop.
    let mut cands: Vec<usize> = (0..r).rev().chain([r]).collect();
    if let Some(sp) = pending_space(l) {
        cands.sort_by_key(|&p| space(p) != sp);
    }
    let p = match cands.iter().copied().find(|&p| fits(p, &xs)) {
        Some(p) => p,
        None => {
            // Expand operands that do not fit the row split into full tensors.
            let p = r.saturating_sub(1);
            for x in xs.iter_mut() {
                if classify(&out_shape, &x.shape, p).is_none() {
                    *x = expand(l, x, &out_shape);
                }
            }
            p
        }
    };
    let (rows, cols) = space(p);
    let kinds: Vec<EwBroadcast> =
        xs.iter().map(|x| classify(&out_shape, &x.shape, p).unwrap_or(EwBroadcast::Full)).collect();
    let room = l.last_group().is_some_and(|g| g.body.len() < MAX_GROUP_OPS);
    let join = room && pending_space(l) == Some((rows, cols));
    // Join only if some operand is one of the group's outputs, and no operand reads a
    // group output's buffer through another view (the kernel would read what it writes).
    let written: Vec<Store> = l.last_group().map_or(Vec::new(), |g| g.outputs.iter().map(|(_, o)| o.store).collect());
    // Each operand's value in the pending group, read before the group is taken over.
    let pending: Vec<Option<EwValue>> = xs.iter().map(|x| pending_output(l, x)).collect();
    let joined = join
        && pending.iter().any(Option::is_some)
        && xs
            .iter()
            .zip(&kinds)
            .zip(&pending)
            .all(|((x, k), p)| !written.contains(&x.store) || (p.is_some() && *k == EwBroadcast::Full));
    // Joining takes the pending group over (no copy: a chain lowers in linear time).
    let mut spec = if joined {
        l.pop_group().ok_or_else(|| internal("a joined fusion group vanished"))?
    } else {
        EwSpec::new(rows, cols)
    };
    let mut operands = Vec::new();
    for ((x, kind), p) in xs.iter().zip(kinds).zip(pending) {
        let from_group = if joined { p.filter(|_| kind == EwBroadcast::Full) } else { None };
        let v = match from_group {
            Some(v) => v,
            None => match spec.inputs.iter().position(|(v, k)| v == x && *k == kind) {
                Some(i) => EwValue::Input(i),
                None => {
                    spec.inputs.push((x.clone(), kind));
                    EwValue::Input(spec.inputs.len() - 1)
                }
            },
        };
        operands.push(v);
    }
    let ins = match op {
        EwOp::Add => EwInstr::Add(operands[0], operands[1]),
        EwOp::Mul => EwInstr::Mul(operands[0], operands[1]),
        EwOp::Scale(f) => EwInstr::Scale(operands[0], f),
        EwOp::Relu => EwInstr::Relu(operands[0]),
        EwOp::Tanh => EwInstr::Tanh(operands[0]),
        EwOp::Gelu => EwInstr::Gelu(operands[0]),
        EwOp::Sigmoid => EwInstr::Sigmoid(operands[0]),
    };
    spec.body.push(ins);
    let out = l.fresh(out_shape);
    spec.outputs.push((EwValue::Instr(spec.body.len() - 1), out.clone()));
    l.push_group(spec);
    Ok(Val::F(out))
}

/// `x` broadcast to `shape` as a new dense buffer.
fn expand(l: &mut Lowering, x: &View, shape: &[usize]) -> View {
    let r = shape.len();
    let st = x.strides();
    let lead = r - x.shape.len();
    let strides =
        (0..r).map(|i| if i < lead || (x.shape[i - lead] == 1 && shape[i] != 1) { 0 } else { st[i - lead] }).collect();
    let src = Strided { store: x.store, offset: x.offset, shape: shape.to_vec(), strides };
    let dst = l.fresh(shape.to_vec());
    l.push(Step::Copy { src, dst: Strided::of(&dst) });
    dst
}

/// If the last step is a lone `a + b` of two full operands that wrote `x`, remove it
/// and return `(a, b)`: the layer norm reading `x` will compute the sum itself.
pub(super) fn take_plain_add(l: &mut Lowering, x: &View) -> Option<(View, View)> {
    let spec = l.last_group()?;
    let plain = spec.body.len() == 1
        && spec.outputs.len() == 1
        && spec.outputs[0].1 == *x
        && spec.inputs.iter().all(|(v, k)| *k == EwBroadcast::Full && v.contiguous())
        && spec.body[0] == EwInstr::Add(EwValue::Input(0), EwValue::Input(1));
    if !plain || spec.inputs.len() != 2 {
        return None;
    }
    let (a, b) = (spec.inputs[0].0.clone(), spec.inputs[1].0.clone());
    l.pop_group();
    Some((a, b))
}

/// Drop group outputs nobody else reads, then compile every group: the lowering's
/// steps as runtime steps, each with its site.
pub(super) fn finish(l: &mut Lowering, model_outputs: &[View]) -> Result<Vec<(Step, usize)>, BackendError> {
    // Steps outside the group that read each arena buffer.
    let mut readers: Vec<usize> = vec![0; l.buffers.len()];
    for (s, _) in &l.steps {
        let reads: Vec<Res> = match s {
            Lowered::Step(s) => s.access().reads,
            Lowered::Group(g) => g.inputs.iter().map(|(v, _)| v.store.into()).collect(),
        };
        for b in Access::arena(&reads) {
            readers[b] += 1;
        }
    }
    for v in model_outputs {
        if let Store::Arena(b) = v.store {
            readers[b] += 1;
        }
    }
    let mut steps = Vec::with_capacity(l.steps.len());
    for (s, site) in std::mem::take(&mut l.steps) {
        let spec = match s {
            Lowered::Step(s) => {
                steps.push((s, site));
                continue;
            }
            Lowered::Group(g) => g,
        };
        let mut outputs: Vec<(EwValue, View)> = spec
            .outputs
            .iter()
            .filter(|(_, o)| matches!(o.store, Store::Arena(b) if readers[b] > 0))
            .cloned()
            .collect();
        if outputs.is_empty() {
            outputs.push(spec.outputs.last().cloned().ok_or_else(|| internal("a fusion group without outputs"))?);
        }
        if gelu_epilogue(steps.last_mut(), &spec, &outputs, &readers) {
            continue;
        }
        let group = EwGroup {
            inputs: spec.inputs.iter().map(|(_, k)| *k).collect(),
            body: spec.body.clone(),
            outputs: outputs.iter().map(|(v, _)| *v).collect(),
        };
        let kernel = l.ew.compile(&group).map_err(|e| BackendError::Internal(e.to_string()))?;
        let step = Step::Ew {
            kernel,
            rows: spec.rows,
            cols: spec.cols,
            inputs: spec.inputs,
            outputs: outputs.into_iter().map(|(_, v)| v).collect(),
        };
        steps.push((step, site));
    }
    Ok(steps)
}

/// If `spec` is a lone GELU of the output of `prev`, a linear step without an
/// epilogue, and nothing else reads that output, let the linear apply the GELU to its
/// output tiles and write the group's output itself (true): the separate sweep and the
/// linear's own output buffer go away. The linear calls the GELU the group's kernel
/// calls, so the bits are the same.
fn gelu_epilogue(
    prev: Option<&mut (Step, usize)>,
    spec: &EwSpec,
    outputs: &[(EwValue, View)],
    readers: &[usize],
) -> bool {
    let Some((Step::Linear { y, epilogue, .. }, _)) = prev else { return false };
    let [(input, EwBroadcast::Full)] = &spec.inputs[..] else { return false };
    let [(EwValue::Instr(0), out)] = outputs else { return false };
    let sole = matches!(y.store, Store::Arena(b) if readers[b] == 1);
    let fits = out.contiguous() && y.contiguous() && out.shape == y.shape;
    if spec.body != [EwInstr::Gelu(EwValue::Input(0))] || *epilogue != Epilogue::None || input != y || !sole || !fits {
        return false;
    }
    *y = out.clone();
    *epilogue = Epilogue::Gelu;
    true
}
