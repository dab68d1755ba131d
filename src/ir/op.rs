//! The closed set of IR operations, each with its arity and shape rule.
//!
//! Backends match on [`Op`]; passes use [`Op::infer`] and [`Op::arity`] and never
//! switch on op kinds except where a rewrite rule names the pattern it rewrites.

use super::param::ParamInfo;
use super::shape::{broadcast, dims_compatible, DType, Dim, Shape, TensorType};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A model input. `optional` inputs may be absent at run time; with
    /// `default_zeros` an absent one is replaced by zeros.
    Input {
        name: String,
        ty: TensorType,
        optional: bool,
        default_zeros: bool,
    },
    /// A named model output; operand 0 is its value.
    Output {
        name: String,
    },
    Parameter(ParamInfo),
    /// The input of an instance built without a call (an auxiliary model whose
    /// weights are borrowed): everything computed from it is dead.
    Unbound,
    /// `x @ w.T (+ b)`: x `[.., in]`, w `[out, in]`, b `[out]`.
    Linear,
    /// Channels split into `groups`, one linear per group: w `[out, in/groups]`.
    GroupedLinear {
        groups: i64,
    },
    /// x `[B, C, H, W]`, w `[O, C, kh, kw]`, b `[O]`.
    Conv2d {
        stride: [i64; 2],
    },
    /// x `[B, C, T, H, W]`, w `[O, C, kt, kh, kw]`, b `[O]`.
    Conv3d {
        stride: [i64; 3],
    },
    /// Over the last dim: x, weight, bias.
    LayerNorm {
        eps: f64,
    },
    Gelu,
    Relu,
    Tanh,
    /// Scaled dot-product attention over `[B, T, D]` q, k, v with `heads` heads;
    /// an optional key mask `[B, Tk]` (non-zero = attend).
    Attention {
        heads: i64,
    },
    /// Elementwise with broadcasting. At run time an absent operand (a missing
    /// optional modality) makes `Add` pass the other operand through.
    Add,
    Mul,
    Scale {
        factor: f64,
    },
    /// `0` keeps the input dim, `-1` is inferred.
    Reshape {
        dims: Vec<i64>,
    },
    Permute {
        perm: Vec<usize>,
    },
    /// Part `index` of `parts` equal parts along `axis`.
    Split {
        axis: i64,
        parts: i64,
        index: i64,
    },
    /// Along `axis`; size-1 leading dims broadcast (a `[1, 1, D]` class token
    /// against `[B, N, D]` patches).
    Concat {
        axis: i64,
    },
    /// ids (integer), table `[N, D]`.
    Embedding,
    /// `x[:, index]` of `[B, T, D]`.
    TokenSelect {
        index: i64,
    },
    /// Mean over dim 1 of `[B, T, D]`.
    MeanTokens,
    /// `[B, T]` ids → `[1, T]` positions `0..T` (i64).
    Positions,
    /// Weight-level matrix product (appears only between parameters).
    MatMul,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Output { .. } => "output",
            Op::Parameter(_) => "param",
            Op::Unbound => "unbound",
            Op::Linear => "linear",
            Op::GroupedLinear { .. } => "grouped_linear",
            Op::Conv2d { .. } => "conv2d",
            Op::Conv3d { .. } => "conv3d",
            Op::LayerNorm { .. } => "layernorm",
            Op::Gelu => "gelu",
            Op::Relu => "relu",
            Op::Tanh => "tanh",
            Op::Attention { .. } => "attention",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Scale { .. } => "scale",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Split { .. } => "split",
            Op::Concat { .. } => "concat",
            Op::Embedding => "embedding",
            Op::TokenSelect { .. } => "token_select",
            Op::MeanTokens => "mean_tokens",
            Op::Positions => "positions",
            Op::MatMul => "matmul",
        }
    }

    /// Allowed operand counts (min, max).
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Input { .. } | Op::Parameter(_) | Op::Unbound => (0, 0),
            Op::Output { .. }
            | Op::Gelu
            | Op::Relu
            | Op::Tanh
            | Op::Scale { .. }
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Split { .. }
            | Op::TokenSelect { .. }
            | Op::MeanTokens
            | Op::Positions => (1, 1),
            Op::Linear | Op::GroupedLinear { .. } | Op::Conv2d { .. } | Op::Conv3d { .. } => (2, 3),
            Op::LayerNorm { .. } => (3, 3),
            Op::Attention { .. } => (3, 4),
            Op::Add | Op::Mul | Op::Embedding | Op::MatMul => (2, 2),
            Op::Concat { .. } => (2, usize::MAX),
        }
    }

    /// The shape rule: the result type from the operand types, or what is wrong.
    pub fn infer(&self, ins: &[&TensorType]) -> Result<TensorType, String> {
        let x = ins.first().copied();
        match self {
            Op::Input { ty, .. } => Ok(ty.clone()),
            Op::Parameter(p) => Ok(TensorType::fixed(p.dtype, &p.shape)),
            Op::Unbound => Err("an unbound input has no type".into()),
            Op::Output { .. } | Op::Gelu | Op::Relu | Op::Tanh | Op::Scale { .. } => Ok(x.expect("arity").clone()),
            Op::Linear => {
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
            Op::GroupedLinear { groups } => {
                let (x, w) = (ins[0], ins[1]);
                float(x)?;
                let last = fixed(x.dim(-1).ok_or("grouped linear input must have a dim")?)?;
                let (out, per) = (fixed(&w.shape[0])?, fixed(&w.shape[1])?);
                if *groups <= 0 || last % groups != 0 || out % groups != 0 {
                    return Err(format!("{groups} groups must divide both {last} input and {out} output features"));
                }
                if per != last / groups {
                    return Err(format!(
                        "grouped linear expects {} input features per group, the input has {} / {groups}",
                        per, last
                    ));
                }
                let mut shape = x.shape.clone();
                *shape.last_mut().expect("rank >= 1") = Dim::Fixed(out);
                Ok(TensorType::new(x.dtype, shape))
            }
            Op::Conv2d { stride } => conv(ins, &stride[..]),
            Op::Conv3d { stride } => conv(ins, &stride[..]),
            Op::LayerNorm { .. } => {
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
            Op::Attention { heads } => {
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
                        if *heads <= 0 || n % heads != 0 {
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
            Op::Add | Op::Mul => {
                let (a, b) = (ins[0], ins[1]);
                let shape = broadcast(&a.shape, &b.shape).ok_or_else(|| format!("cannot broadcast {a} with {b}"))?;
                if a.dtype != b.dtype {
                    return Err(format!("operands differ in dtype: {a} and {b}"));
                }
                Ok(TensorType::new(a.dtype, shape))
            }
            Op::Reshape { dims } => {
                let x = ins[0];
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
            Op::Permute { perm } => {
                let x = ins[0];
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
            Op::Split { axis, parts, index } => {
                let x = ins[0];
                let ax = axis_index(x, *axis)?;
                let n = fixed(&x.shape[ax])?;
                if *parts <= 0 || n % parts != 0 || *index < 0 || index >= parts {
                    return Err(format!("cannot take part {index} of {parts} from {n} features"));
                }
                let mut shape = x.shape.clone();
                shape[ax] = Dim::Fixed(n / parts);
                Ok(TensorType::new(x.dtype, shape))
            }
            Op::Concat { axis } => {
                let first = ins[0];
                let ax = axis_index(first, *axis)?;
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
            Op::Embedding => {
                let (ids, table) = (ins[0], ins[1]);
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
            Op::TokenSelect { index } => {
                let x = tokens(ins[0])?;
                if let Dim::Fixed(t) = x.shape[1] {
                    if *index >= t || *index < -t {
                        return Err(format!("token {index} is out of range for {x}"));
                    }
                }
                Ok(TensorType::new(x.dtype, vec![x.shape[0].clone(), x.shape[2].clone()]))
            }
            Op::MeanTokens => {
                let x = tokens(ins[0])?;
                Ok(TensorType::new(x.dtype, vec![x.shape[0].clone(), x.shape[2].clone()]))
            }
            Op::Positions => {
                let x = ins[0];
                if x.rank() != 2 {
                    return Err(format!("positions expects [batch, tokens] ids, got {x}"));
                }
                Ok(TensorType::new(DType::I64, vec![Dim::Fixed(1), x.shape[1].clone()]))
            }
            Op::MatMul => {
                let (a, b) = (ins[0], ins[1]);
                if a.rank() != 2 || !(1..=2).contains(&b.rank()) || !dims_compatible(&a.shape[1], &b.shape[0]) {
                    return Err(format!("cannot multiply {a} by {b}"));
                }
                let mut shape = vec![a.shape[0].clone()];
                if b.rank() == 2 {
                    shape.push(b.shape[1].clone());
                }
                Ok(TensorType::new(a.dtype, shape))
            }
        }
    }
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

fn conv(ins: &[&TensorType], stride: &[i64]) -> Result<TensorType, String> {
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
        if (n - k) % s != 0 {
            return Err(format!("size {n} of {x} is not a whole number of patches of {k} with stride {s}"));
        }
        shape.push(Dim::Fixed((n - k) / s + 1));
    }
    Ok(TensorType::new(x.dtype, shape))
}
