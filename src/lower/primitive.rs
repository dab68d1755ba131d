//! Parametric primitives (`linear`, `conv2d`, `layernorm`, …) and tensor functions
//! (`gelu`, `split`, `reshape`, …): each becomes IR nodes and parameters.

use super::args::bind;
use super::eval::ArgVal;
use super::{Builder, Value, R};
use crate::diag::Diagnostic;
use crate::ir::{Init, NodeId, Op};
use crate::source::Span;

impl Builder {
    pub(super) fn primitive(
        &mut self,
        prim: &str,
        config: Vec<ArgVal>,
        inputs: Vec<ArgVal>,
        path: &str,
        span: Span,
    ) -> R<Value> {
        if prim == "param" {
            return Err(self.error(
                Diagnostic::error("E0418", "`param` takes no inputs")
                    .at(span, "called with an input list")
                    .hint("write `name = param([shape])`"),
            ));
        }
        let sig = signature(prim);
        let v = bind(self, prim, config, &sig, span)?;
        if inputs.len() != 1 {
            return Err(self.error(
                Diagnostic::error("E0412", format!("`{prim}` takes 1 input, got {}", inputs.len()))
                    .at(span, "wrong number of inputs")
                    .hint(format!("write `name = {prim}(config)(x)`")),
            ));
        }
        let Some(x) = self.tensor_arg(&inputs[0].value, "input", inputs[0].span)? else {
            return Ok(Value::Absent);
        };
        let wpath = format!("{path}.weight");
        let bpath = format!("{path}.bias");
        let node = match prim {
            "linear" | "grouped_linear" => self.linear(prim, &v, x, path, span)?,
            "layernorm" => {
                let d = self.size_arg(&v[0], "dim", span)?;
                let eps = self.float_arg(&v[1], "eps", span)?;
                let w = self.new_param(&wpath, vec![d], Init::Ones, span)?;
                let b = self.new_param(&bpath, vec![d], Init::Zeros, span)?;
                self.node(Op::LayerNorm { eps }, path, span, &[x, w, b])?
            }
            "conv2d" | "conv3d" => {
                let sp = if prim == "conv2d" { 2 } else { 3 };
                let ci = self.size_arg(&v[0], "in_channels", span)?;
                let co = self.size_arg(&v[1], "out_channels", span)?;
                let kernel = self.sizes(&v[2], sp, "kernel", span)?;
                let stride =
                    if v[3] == Value::Absent { kernel.clone() } else { self.sizes(&v[3], sp, "stride", span)? };
                let mut shape = vec![co, ci];
                shape.extend(&kernel);
                // In f64: a fuzzed or absurd size must not overflow here (the shape check
                // reports it); for real sizes the product is exact.
                let fan_in = kernel.iter().fold(ci as f64, |f, &k| f * k as f64);
                let init = Init::Uniform { bound: 1.0 / fan_in.sqrt() };
                let w = self.new_param(&wpath, shape, init.clone(), span)?;
                let mut ops = vec![x, w];
                if matches!(v[4], Value::Bool(true)) {
                    ops.push(self.new_param(&bpath, vec![co], init, span)?);
                }
                let op = if sp == 2 {
                    Op::Conv2d { stride: [stride[0], stride[1]] }
                } else {
                    Op::Conv3d { stride: [stride[0], stride[1], stride[2]] }
                };
                self.node(op, path, span, &ops)?
            }
            _ => {
                let n = self.size_arg(&v[0], "num", span)?;
                let d = self.size_arg(&v[1], "dim", span)?;
                let std = self.float_arg(&v[2], "std", span)?;
                let w = self.new_param(&wpath, vec![n, d], Init::Normal { std }, span)?;
                self.node(Op::Embedding, path, span, &[x, w])?
            }
        };
        Ok(Value::Tensor(node))
    }

    /// A (grouped) linear from its bound configuration `v`: weight `[out, in/groups]`
    /// and an optional bias.
    fn linear(&mut self, prim: &str, v: &[Value], x: NodeId, path: &str, span: Span) -> R<NodeId> {
        let i = self.size_arg(&v[0], "in_features", span)?;
        let o = self.size_arg(&v[1], "out_features", span)?;
        let (groups, rest) =
            if prim == "grouped_linear" { (self.size_arg(&v[2], "groups", span)?, &v[3..]) } else { (1, &v[2..]) };
        if i % groups != 0 || o % groups != 0 {
            return Err(self.error(
                Diagnostic::error("E0419", format!("{groups} groups do not divide {i} → {o} features"))
                    .at(span, "uneven groups")
                    .hint("groups must divide both feature counts"),
            ));
        }
        let bias = matches!(rest[0], Value::Bool(true));
        let fan_in = i / groups;
        let init = self.init_rule(&rest[1], &rest[2], &rest[3], 1.0 / (fan_in as f64).sqrt(), span)?;
        let w = self.new_param(&format!("{path}.weight"), vec![o, fan_in], init.clone(), span)?;
        let mut ops = vec![x, w];
        if bias {
            let binit = match init {
                Init::Normal { .. } | Init::TruncNormal { .. } | Init::Constant { .. } => Init::Zeros,
                other => other,
            };
            ops.push(self.new_param(&format!("{path}.bias"), vec![o], binit, span)?);
        }
        let op = if prim == "linear" { Op::Linear } else { Op::GroupedLinear { groups } };
        self.node(op, path, span, &ops)
    }

    /// Tensor functions applied inline.
    pub(crate) fn tensor_fn(&mut self, name: &str, args: Vec<ArgVal>, span: Span, path: &str) -> R<Value> {
        if name == "concat" {
            let mut ts = Vec::new();
            let mut axis = 1;
            for a in args {
                match &a.name {
                    Some((n, _)) if n == "axis" => axis = self.int_arg(&a.value, "axis", a.span)?,
                    Some((n, ns)) => {
                        return Err(self.error(
                            Diagnostic::error("E0402", format!("`concat` has no parameter `{n}`"))
                                .at(*ns, "unknown parameter")
                                .hint("concat(a, b, ..., axis: 1)"),
                        ))
                    }
                    None => match self.tensor_arg(&a.value, "concat operand", a.span)? {
                        Some(t) => ts.push(t),
                        None => return Ok(Value::Absent),
                    },
                }
            }
            if ts.len() < 2 {
                return Err(self.error(
                    Diagnostic::error("E0404", "`concat` needs at least two tensors")
                        .at(span, "too few operands")
                        .hint("concat(a, b, axis: 1)"),
                ));
            }
            return Ok(Value::Tensor(self.node(Op::Concat { axis }, path, span, &ts)?));
        }
        let sig: Vec<(&str, Option<Value>)> = match name {
            "gelu" | "relu" | "tanh" | "sigmoid" | "sinusoid_positions" | "mean_tokens" | "positions"
            | "flatten_tokens" => vec![("x", None)],
            "sdpa" => vec![("q", None), ("k", None), ("v", None), ("heads", None), ("mask", Some(Value::Absent))],
            "split" => vec![("x", None), ("parts", None), ("index", None), ("axis", Some(Value::Int(-1)))],
            "token" => vec![("x", None), ("index", Some(Value::Int(0)))],
            "reshape" => vec![("x", None), ("dims", None)],
            "permute" => vec![("x", None), ("perm", None)],
            _ => unreachable!("tensor fn {name}"),
        };
        let v = bind(self, name, args, &sig, span)?;
        let Some(x) = self.tensor_arg(&v[0], "x", span)? else {
            return Ok(Value::Absent);
        };
        let ints = |b: &mut Builder, val: &Value, what: &str| -> R<Vec<i64>> {
            match val {
                Value::List(items) => items.iter().map(|i| b.int_arg(i, what, span)).collect(),
                other => Err(b.error(
                    Diagnostic::error("E0405", format!("`{what}` must be a list of ints"))
                        .at(span, format!("got {}", other.a_kind()))
                        .hint(format!("write {what}: [0, 2, 1]")),
                )),
            }
        };
        let node = match name {
            "gelu" => self.node(Op::Gelu, path, span, &[x])?,
            "relu" => self.node(Op::Relu, path, span, &[x])?,
            "tanh" => self.node(Op::Tanh, path, span, &[x])?,
            "sigmoid" => self.node(Op::Sigmoid, path, span, &[x])?,
            "sinusoid_positions" => self.node(Op::SinusoidPositions, path, span, &[x])?,
            "mean_tokens" => self.node(Op::MeanTokens, path, span, &[x])?,
            "positions" => self.node(Op::Positions, path, span, &[x])?,
            "flatten_tokens" => {
                let r = self.node(Op::Reshape { dims: vec![0, 0, -1] }, path, span, &[x])?;
                self.node(Op::Permute { perm: vec![0, 2, 1] }, path, span, &[r])?
            }
            "sdpa" => {
                let mut ops = vec![x];
                for (i, w) in ["k", "v"].iter().enumerate() {
                    match self.tensor_arg(&v[i + 1], w, span)? {
                        Some(t) => ops.push(t),
                        None => return Ok(Value::Absent),
                    }
                }
                let heads = self.size_arg(&v[3], "heads", span)?;
                if let Some(m) = self.tensor_arg(&v[4], "mask", span)? {
                    ops.push(m);
                }
                self.node(Op::Attention { heads }, path, span, &ops)?
            }
            "split" => {
                let parts = self.size_arg(&v[1], "parts", span)?;
                let index = self.int_arg(&v[2], "index", span)?;
                let axis = self.int_arg(&v[3], "axis", span)?;
                self.node(Op::Split { axis, parts, index }, path, span, &[x])?
            }
            "token" => {
                let index = self.int_arg(&v[1], "index", span)?;
                self.node(Op::TokenSelect { index }, path, span, &[x])?
            }
            "reshape" => {
                let dims = ints(self, &v[1], "dims")?;
                self.node(Op::Reshape { dims }, path, span, &[x])?
            }
            _ => {
                let perm = ints(self, &v[1], "perm")?;
                if perm.iter().any(|&p| p < 0) {
                    return Err(self.error(
                        Diagnostic::error("E0405", "permutation entries must be non-negative")
                            .at(span, format!("got {perm:?}"))
                            .hint("write perm: [0, 2, 1]"),
                    ));
                }
                self.node(Op::Permute { perm: perm.iter().map(|&p| p as usize).collect() }, path, span, &[x])?
            }
        };
        Ok(Value::Tensor(node))
    }
}

/// A primitive's configuration parameters with their defaults (`None`: required).
pub(crate) fn signature(prim: &str) -> Vec<(&'static str, Option<Value>)> {
    let s = |v: &str| Some(Value::Str(v.into()));
    let t = Some(Value::Bool(true));
    let f02 = Some(Value::Float(0.02));
    let f0 = Some(Value::Float(0.0));
    match prim {
        "linear" => vec![
            ("in_features", None),
            ("out_features", None),
            ("bias", t),
            ("init", s("default")),
            ("std", f02),
            ("value", f0),
        ],
        "grouped_linear" => vec![
            ("in_features", None),
            ("out_features", None),
            ("groups", None),
            ("bias", t),
            ("init", s("default")),
            ("std", f02),
            ("value", f0),
        ],
        "layernorm" => vec![("dim", None), ("eps", Some(Value::Float(1e-5)))],
        "conv2d" | "conv3d" => vec![
            ("in_channels", None),
            ("out_channels", None),
            ("kernel", None),
            ("stride", Some(Value::Absent)),
            ("bias", t),
        ],
        "embedding" => vec![("num", None), ("dim", None), ("std", Some(Value::Float(1.0)))],
        _ => unreachable!("primitive {prim}"),
    }
}
