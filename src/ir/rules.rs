//! The shape rules of the ops ([`super::Op::infer`] dispatches here): each computes
//! an op's result type from its operand types, or says what is wrong. Operand counts
//! were checked against [`super::Op::arity`] before a rule runs.

use super::shape::{broadcast, dims_compatible, DType, Dim, Shape, TensorType};

pub(super) fn sinusoid_positions(x: &TensorType) -> Result<TensorType, String> {
    let x = tokens(x)?;
    float(x)?;
    let (t, d) = (fixed(&x.shape[1])?, fixed(&x.shape[2])?);
    Ok(TensorType::new(x.dtype, vec![Dim::Fixed(1), Dim::Fixed(t), Dim::Fixed(d)]))
}

pub(super) fn linear(ins: &[&TensorType]) -> Result<TensorType, String> {
    let (x, w) = (ins[0], ins[1]);
    float(x)?;
    if w.rank() != 2 {
        return Err(format!("linear weight must be 2-d, got {w}"));
    }
    let (out, inf) = (&w.shape[0], &w.shape[1]);
    let last = x.dim(-1).ok_or("linear input must have at least 1 dim")?;
    if !dims_compatible(last, inf) {
        return Err(format!("linear expects input features {inf}, but the input is {x}"));
    }
    if let Some(b) = ins.get(2) {
        if b.shape != [out.clone()] {
            return Err(format!("linear bias must be [{out}], got {b}"));
        }
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank >= 1") = out.clone();
    Ok(TensorType::new(x.dtype, shape))
}

pub(super) fn grouped_linear(ins: &[&TensorType], groups: i64) -> Result<TensorType, String> {
    let (x, w) = (ins[0], ins[1]);
    float(x)?;
    let last = fixed(x.dim(-1).ok_or("grouped linear input must have a dim")?)?;
    if w.rank() != 2 {
        return Err(format!("grouped linear weight must be 2-d, got {w}"));
    }
    let (out, per) = (fixed(&w.shape[0])?, fixed(&w.shape[1])?);
    if groups <= 0 || last % groups != 0 || out % groups != 0 {
        return Err(format!("{groups} groups must divide both {last} input and {out} output features"));
    }
    if per != last / groups {
        return Err(format!("grouped linear expects {per} input features per group, the input has {last} / {groups}"));
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank >= 1") = Dim::Fixed(out);
    Ok(TensorType::new(x.dtype, shape))
}

pub(super) fn layer_norm(ins: &[&TensorType]) -> Result<TensorType, String> {
    let x = ins[0];
    float(x)?;
    let last = x.dim(-1).ok_or("layernorm input must have a dim")?;
    for p in &ins[1..] {
        if p.rank() != 1 || !dims_compatible(&p.shape[0], last) {
            return Err(format!("layernorm over {last} features got a parameter {p}"));
        }
    }
    Ok(x.clone())
}

pub(super) fn attention(ins: &[&TensorType], heads: i64) -> Result<TensorType, String> {
    let (q, k, v) = (ins[0], ins[1], ins[2]);
    for t in [q, k, v] {
        if t.rank() != 3 {
            return Err(format!("attention expects [batch, tokens, dim] operands, got {t}"));
        }
    }
    if !dims_compatible(&q.shape[2], &k.shape[2]) {
        return Err(format!("attention query {q} and key {k} differ in width"));
    }
    if !dims_compatible(&k.shape[1], &v.shape[1]) {
        return Err(format!("attention key {k} and value {v} differ in length"));
    }
    for d in [&q.shape[2], &v.shape[2]] {
        if let Dim::Fixed(n) = d {
            if heads <= 0 || n % heads != 0 {
                return Err(format!("{heads} heads do not divide width {n}"));
            }
        }
    }
    if let Some(m) = ins.get(3) {
        if m.rank() != 2 || !dims_compatible(&m.shape[1], &k.shape[1]) {
            return Err(format!("attention mask must be [batch, keys], got {m}"));
        }
    }
    Ok(TensorType::new(q.dtype, vec![q.shape[0].clone(), q.shape[1].clone(), v.shape[2].clone()]))
}

/// `add`, `mul`: broadcasting, one dtype.
pub(super) fn elementwise(a: &TensorType, b: &TensorType) -> Result<TensorType, String> {
    let shape = broadcast(&a.shape, &b.shape).ok_or_else(|| format!("cannot broadcast {a} with {b}"))?;
    if a.dtype != b.dtype {
        return Err(format!("operands differ in dtype: {a} and {b}"));
    }
    Ok(TensorType::new(a.dtype, shape))
}

pub(super) fn reshape(x: &TensorType, dims: &[i64]) -> Result<TensorType, String> {
    let mut shape = Vec::new();
    let mut infer_at = None;
    let mut known: i64 = 1;
    for (i, &d) in dims.iter().enumerate() {
        match d {
            0 => {
                let d = x.shape.get(i).ok_or("reshape keeps a dim the input lacks")?;
                if let Dim::Fixed(n) = d {
                    known = known.saturating_mul(*n);
                }
                shape.push(d.clone());
            }
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                shape.push(Dim::Fixed(-1));
            }
            n if n > 0 => {
                known = known.saturating_mul(n);
                shape.push(Dim::Fixed(n));
            }
            _ => return Err(format!("bad reshape target {dims:?}")),
        }
    }
    // Total size over the fixed dims (symbolic dims kept with 0 match themselves).
    let total: Option<i64> = x
        .shape
        .iter()
        .enumerate()
        .filter(|(i, d)| !(dims.get(*i) == Some(&0) && d.fixed().is_none()))
        .map(|(_, d)| d.fixed())
        .try_fold(1i64, |acc, d| d.map(|d| acc.saturating_mul(d)));
    let total = total.ok_or_else(|| format!("cannot reshape {x}: symbolic sizes move"))?;
    if let Some(i) = infer_at {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {x} to {dims:?}"));
        }
        shape[i] = Dim::Fixed(total / known);
    } else if known != total {
        return Err(format!("cannot reshape {x} to {dims:?}"));
    }
    Ok(TensorType::new(x.dtype, shape))
}

pub(super) fn permute(x: &TensorType, perm: &[usize]) -> Result<TensorType, String> {
    let mut seen = vec![false; x.rank()];
    for &p in perm {
        if p >= x.rank() || seen[p] {
            return Err(format!("permutation {perm:?} does not fit {x}"));
        }
        seen[p] = true;
    }
    if perm.len() != x.rank() {
        return Err(format!("permutation {perm:?} does not fit {x}"));
    }
    Ok(TensorType::new(x.dtype, perm.iter().map(|&p| x.shape[p].clone()).collect()))
}

pub(super) fn split(x: &TensorType, axis: i64, parts: i64, index: i64) -> Result<TensorType, String> {
    let ax = axis_index(x, axis)?;
    let n = fixed(&x.shape[ax])?;
    if parts <= 0 || n % parts != 0 || index < 0 || index >= parts {
        return Err(format!("cannot take part {index} of {parts} from {n} features"));
    }
    let mut shape = x.shape.clone();
    shape[ax] = Dim::Fixed(n / parts);
    Ok(TensorType::new(x.dtype, shape))
}

pub(super) fn concat(ins: &[&TensorType], axis: i64) -> Result<TensorType, String> {
    let first = ins[0];
    let ax = axis_index(first, axis)?;
    let mut shape = first.shape.clone();
    let mut total = Some(0i64);
    for t in ins {
        if t.rank() != first.rank() {
            return Err(format!("concat operands differ in rank: {first} and {t}"));
        }
        for (i, d) in t.shape.iter().enumerate() {
            if i == ax {
                total = match (total, d.fixed()) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
            } else if shape[i] == Dim::Fixed(1) {
                shape[i] = d.clone();
            } else if *d != Dim::Fixed(1) && !dims_compatible(&shape[i], d) {
                return Err(format!("concat operands differ off the axis: {first} and {t}"));
            }
        }
    }
    shape[ax] = Dim::Fixed(total.ok_or("concat along a symbolic dim")?);
    Ok(TensorType::new(first.dtype, shape))
}

pub(super) fn embedding(ids: &TensorType, table: &TensorType) -> Result<TensorType, String> {
    if !ids.dtype.is_int() {
        return Err(format!("embedding ids must be integers, got {ids}"));
    }
    if table.rank() != 2 {
        return Err(format!("embedding table must be 2-d, got {table}"));
    }
    let mut shape = ids.shape.clone();
    shape.push(table.shape[1].clone());
    Ok(TensorType::new(table.dtype, shape))
}

pub(super) fn token_select(x: &TensorType, index: i64) -> Result<TensorType, String> {
    let x = tokens(x)?;
    if let Dim::Fixed(t) = x.shape[1] {
        if index >= t || index < -t {
            return Err(format!("token {index} is out of range for {x}"));
        }
    }
    Ok(TensorType::new(x.dtype, vec![x.shape[0].clone(), x.shape[2].clone()]))
}

pub(super) fn mean_tokens(x: &TensorType) -> Result<TensorType, String> {
    let x = tokens(x)?;
    Ok(TensorType::new(x.dtype, vec![x.shape[0].clone(), x.shape[2].clone()]))
}

pub(super) fn positions(x: &TensorType) -> Result<TensorType, String> {
    if x.rank() != 2 {
        return Err(format!("positions expects [batch, tokens] ids, got {x}"));
    }
    Ok(TensorType::new(DType::I64, vec![Dim::Fixed(1), x.shape[1].clone()]))
}

pub(super) fn matmul(a: &TensorType, b: &TensorType) -> Result<TensorType, String> {
    if a.rank() != 2 || !(1..=2).contains(&b.rank()) || !dims_compatible(&a.shape[1], &b.shape[0]) {
        return Err(format!("cannot multiply {a} by {b}"));
    }
    let mut shape = vec![a.shape[0].clone()];
    if b.rank() == 2 {
        shape.push(b.shape[1].clone());
    }
    Ok(TensorType::new(a.dtype, shape))
}

fn float(x: &TensorType) -> Result<(), String> {
    if x.dtype.is_float() {
        Ok(())
    } else {
        Err(format!("expected a floating-point tensor, got {x}"))
    }
}

fn fixed(d: &Dim) -> Result<i64, String> {
    d.fixed().ok_or_else(|| format!("dimension {d} must be a known size here"))
}

fn tokens(x: &TensorType) -> Result<&TensorType, String> {
    if x.rank() != 3 {
        return Err(format!("expected [batch, tokens, dim], got {x}"));
    }
    Ok(x)
}

fn axis_index(x: &TensorType, axis: i64) -> Result<usize, String> {
    let r = x.rank() as i64;
    let a = if axis < 0 { r + axis } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for {x}"));
    }
    Ok(a as usize)
}

pub(super) fn conv(ins: &[&TensorType], stride: &[i64]) -> Result<TensorType, String> {
    let (x, w) = (ins[0], ins[1]);
    let sp = stride.len();
    float(x)?;
    if x.rank() != sp + 2 || w.rank() != sp + 2 {
        return Err(format!("conv{sp}d expects a {}-d input, got {x}", sp + 2));
    }
    if !dims_compatible(&x.shape[1], &w.shape[1]) {
        return Err(format!("conv expects {} input channels, the input is {x}", w.shape[1]));
    }
    if let Some(b) = ins.get(2) {
        if b.shape != [w.shape[0].clone()] {
            return Err(format!("conv bias must be [{}], got {b}", w.shape[0]));
        }
    }
    let mut shape: Shape = vec![x.shape[0].clone(), w.shape[0].clone()];
    for (i, &s) in stride.iter().enumerate() {
        let n = fixed(&x.shape[2 + i])?;
        let k = fixed(&w.shape[2 + i])?;
        if s <= 0 || n < k {
            return Err(format!("kernel {k} with stride {s} does not fit size {n} of {x}"));
        }
        // Patches (stride ≥ kernel) must tile the input; overlapping windows (AST's
        // stride 10 over 16) drop the remainder, as PyTorch does.
        if s >= k && (n - k) % s != 0 {
            return Err(format!("size {n} of {x} is not a whole number of patches of {k} with stride {s}"));
        }
        shape.push(Dim::Fixed((n - k) / s + 1));
    }
    Ok(TensorType::new(x.dtype, shape))
}
