//! One Python expression per IR op, and the few helper functions `model.py` defines
//! for ops PyTorch has no single call for.
//!
//! Expressions are kept as small trees ([`Py`]) so statements can be laid out the way
//! `ruff format` lays them out: on one line when they fit in 88 columns, otherwise one
//! argument per line with a trailing comma (which the formatter keeps exploded).

use crate::ir::{DType, Dim, Op, TensorType};

/// A Python expression.
#[derive(Clone, Debug)]
pub(crate) enum Py {
    /// Text that is never split.
    Atom(String),
    /// `open` items `close`, e.g. `f(` … `)`, `[` … `]`; each item with a prefix
    /// (`eps=`, `"key": `).
    Group(String, Vec<(String, Py)>, &'static str),
    /// `[item for _ in range(n)]` (`n` as text: `depth` or `12`).
    Repeat(Box<Py>, String),
}

/// Maximum line length of the formatter.
pub(crate) const WIDTH: usize = 88;

impl Py {
    pub fn atom(s: impl Into<String>) -> Py {
        Py::Atom(s.into())
    }

    pub fn call(f: impl Into<String>, args: Vec<Py>) -> Py {
        Py::Group(format!("{}(", f.into()), args.into_iter().map(|a| (String::new(), a)).collect(), ")")
    }

    pub fn list(items: Vec<Py>) -> Py {
        Py::Group("[".into(), items.into_iter().map(|a| (String::new(), a)).collect(), "]")
    }

    /// `{"key": value, …}`.
    pub fn dict(items: Vec<(String, Py)>) -> Py {
        let items = items.into_iter().map(|(k, v)| (format!("{}: ", quote(&k)), v)).collect();
        Py::Group("{".into(), items, "}")
    }

    /// The one-line text.
    pub fn flat(&self) -> String {
        match self {
            Py::Atom(s) => s.clone(),
            Py::Group(open, items, close) => {
                let inner: Vec<String> = items.iter().map(|(p, a)| format!("{p}{}", a.flat())).collect();
                format!("{open}{}{close}", inner.join(", "))
            }
            Py::Repeat(item, n) => format!("[{} for _ in range({n})]", item.flat()),
        }
    }

    /// Lines of `prefix` + this expression + `suffix` at `indent` columns.
    pub fn lines(&self, indent: usize, prefix: &str, suffix: &str) -> Vec<String> {
        let pad = " ".repeat(indent);
        let one = format!("{pad}{prefix}{}{suffix}", self.flat());
        match self {
            Py::Group(open, items, close) if one.chars().count() > WIDTH && !items.is_empty() => {
                let mut out = vec![format!("{pad}{prefix}{open}")];
                for (p, a) in items {
                    out.extend(a.lines(indent + 4, p, ","));
                }
                out.push(format!("{pad}{close}{suffix}"));
                out
            }
            Py::Repeat(item, n) if one.chars().count() > WIDTH => {
                let mut out = vec![format!("{pad}{prefix}[")];
                out.extend(item.lines(indent + 4, "", ""));
                out.push(format!("{pad}    for _ in range({n})"));
                out.push(format!("{pad}]{suffix}"));
                out
            }
            _ => vec![one],
        }
    }
}

/// A Python string literal (double quotes, as the formatter writes them).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Python float literal (`1e-06` style is accepted by Python and ruff alike).
pub(crate) fn float(v: f64) -> String {
    let s = format!("{v:?}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// `torch.float32` and friends.
pub(crate) fn torch_dtype(d: DType) -> &'static str {
    match d {
        DType::F32 => "torch.float32",
        DType::F16 => "torch.float16",
        DType::BF16 => "torch.bfloat16",
        DType::F64 => "torch.float64",
        DType::I64 => "torch.int64",
        DType::I32 => "torch.int32",
        DType::Bool => "torch.bool",
        DType::U8 => "torch.uint8",
    }
}

/// Helpers `model.py` defines when an op needs them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Helper {
    Attention,
    GroupedLinear,
    Positions,
    Sinusoid,
}

impl Helper {
    pub fn source(self) -> &'static str {
        match self {
            Helper::Attention => ATTENTION,
            Helper::GroupedLinear => GROUPED_LINEAR,
            Helper::Positions => POSITIONS,
            Helper::Sinusoid => SINUSOID,
        }
    }
}

const ATTENTION: &str = r#"def attention(
    q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None
) -> Tensor:
    """Multi-head scaled dot-product attention over [B, T, D] queries, keys, values.

    `mask` [B, Tk] (non-zero = attend) is additive with the dtype's most negative
    value, as in Hugging Face BERT.
    """
    b, t = q.shape[0], q.shape[1]
    q = q.reshape(b, t, heads, -1).transpose(1, 2)
    k = k.reshape(k.shape[0], k.shape[1], heads, -1).transpose(1, 2)
    v = v.reshape(v.shape[0], v.shape[1], heads, -1).transpose(1, 2)
    bias = None
    if mask is not None:
        blocked = (mask == 0).to(q.dtype) * torch.finfo(q.dtype).min
        bias = blocked[:, None, None, :]
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return o.transpose(1, 2).reshape(b, t, -1)
"#;

const GROUPED_LINEAR: &str = r#"def grouped_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, groups: int
) -> Tensor:
    """Channels split into `groups`, one linear map per group."""
    xg = x.reshape(-1, groups, x.shape[-1] // groups)
    wg = weight.reshape(groups, weight.shape[0] // groups, -1)
    y = torch.einsum("ngi,goi->ngo", xg, wg)
    y = y.reshape(*x.shape[:-1], weight.shape[0])
    return y if bias is None else y + bias
"#;

const POSITIONS: &str = r#"def positions(ids: Tensor) -> Tensor:
    """[1, T] positions 0..T of [B, T] ids."""
    return torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
"#;

const SINUSOID: &str = r#"def sinusoid_positions(x: Tensor) -> Tensor:
    """The fixed sinusoidal position table of x [B, T, D] (VideoMAE's), [1, T, D]."""
    t, d = x.shape[1], x.shape[2]
    pos = torch.arange(t, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(d)
    pair = torch.div(j, 2, rounding_mode="floor").to(torch.float64)
    angle = pos / torch.pow(10000.0, pair * 2.0 / d).unsqueeze(0)
    table = torch.where(j % 2 == 0, angle.sin(), angle.cos())
    return table.unsqueeze(0).to(dtype=x.dtype, device=x.device)
"#;

/// The expression of `op` over operand expressions `a` (typed `tys`), and the
/// helper it needs. `out` is the result's type.
pub(crate) fn expr(op: &Op, a: &[Py], tys: &[&TensorType], out: &TensorType) -> (Py, Option<Helper>) {
    let x = || a[0].clone();
    let dot = |m: &str, args: Vec<Py>| Py::call(format!("{}.{m}", a[0].flat()), args);
    let bin = |sym: &str| Py::atom(format!("{} {sym} {}", a[0].flat(), a[1].flat()));
    let int = |v: i64| Py::atom(v.to_string());
    let e = match op {
        Op::Linear => Py::call("F.linear", a.to_vec()),
        Op::GroupedLinear { groups } => {
            let bias = a.get(2).cloned().unwrap_or(Py::atom("None"));
            return (
                Py::call("grouped_linear", vec![x(), a[1].clone(), bias, int(*groups)]),
                Some(Helper::GroupedLinear),
            );
        }
        Op::Conv2d { stride } => conv("F.conv2d", a, stride),
        Op::Conv3d { stride } => conv("F.conv3d", a, stride),
        Op::LayerNorm { eps } => {
            let d = tys[0].dim(-1).and_then(Dim::fixed).map_or("-1".into(), |d| d.to_string());
            let mut args = vec![x(), Py::atom(format!("({d},)")), a[1].clone(), a[2].clone()];
            args.push(Py::atom(format!("eps={}", float(*eps))));
            Py::call("F.layer_norm", args)
        }
        Op::Gelu => Py::call("F.gelu", vec![x()]),
        Op::Relu => Py::call("F.relu", vec![x()]),
        Op::Tanh => Py::call("torch.tanh", vec![x()]),
        Op::Sigmoid => Py::call("torch.sigmoid", vec![x()]),
        Op::SinusoidPositions => return (Py::call("sinusoid_positions", vec![x()]), Some(Helper::Sinusoid)),
        Op::Attention { heads } => {
            let mut args = vec![x(), a[1].clone(), a[2].clone(), int(*heads)];
            if let Some(m) = a.get(3) {
                args.push(m.clone());
            }
            return (Py::call("attention", args), Some(Helper::Attention));
        }
        Op::Add => bin("+"),
        Op::Mul => bin("*"),
        Op::MatMul => bin("@"),
        Op::Scale { factor } => Py::atom(format!("{} * {}", a[0].flat(), float(*factor))),
        Op::Reshape { dims } => {
            let args = dims
                .iter()
                .enumerate()
                // A kept size is read, not written: no width in the code.
                .map(|(i, &d)| match d {
                    0 => Py::atom(format!("{}.shape[{i}]", a[0].flat())),
                    d => int(d),
                })
                .collect();
            dot("reshape", args)
        }
        Op::Permute { perm } => dot("permute", perm.iter().map(|&p| int(p as i64)).collect()),
        Op::Split { axis, index, parts } => {
            let rank = tys[0].rank() as i64;
            let ax = if *axis < 0 { axis + rank } else { *axis };
            // Equal parts (the rule's): no size to write, so instances of different
            // widths share their code.
            if tys[0].shape.get(ax as usize).and_then(Dim::fixed).is_some_and(|n| *parts > 0 && n % parts == 0) {
                let dim = if ax == rank - 1 { -1 } else { ax };
                return (Py::atom(format!("{}.chunk({parts}, dim={dim})[{index}]", a[0].flat())), None);
            }
            let n = out.shape.get(ax as usize).and_then(Dim::fixed).unwrap_or(0);
            let (lo, hi) = (index * n, (index + 1) * n);
            if ax == rank - 1 {
                Py::atom(format!("{}[..., {lo}:{hi}]", a[0].flat()))
            } else {
                dot("narrow", vec![int(ax), int(lo), int(n)])
            }
        }
        Op::Concat { axis } => {
            let rank = out.rank() as i64;
            let ax = if *axis < 0 { axis + rank } else { *axis } as usize;
            let parts = a
                .iter()
                .zip(tys)
                .map(|(p, t)| {
                    let grow: Vec<usize> = (0..out.rank())
                        .filter(|&i| i != ax && t.shape[i] == Dim::Fixed(1) && out.shape[i] != Dim::Fixed(1))
                        .collect();
                    if grow.is_empty() {
                        return p.clone();
                    }
                    let sizes = (0..out.rank())
                        .map(|i| {
                            if !grow.contains(&i) {
                                return int(-1);
                            }
                            match &out.shape[i] {
                                Dim::Fixed(n) => int(*n),
                                Dim::Sym(_) => {
                                    // Another operand has the full size there.
                                    let from = a.iter().zip(tys).find(|(_, u)| u.shape[i] != Dim::Fixed(1));
                                    Py::atom(format!("{}.shape[{i}]", from.map_or(p, |f| f.0).flat()))
                                }
                            }
                        })
                        .collect();
                    Py::call(format!("{}.expand", p.flat()), sizes)
                })
                .collect::<Vec<_>>();
            Py::call("torch.cat", vec![Py::list(parts), Py::atom(format!("dim={ax}"))])
        }
        Op::Embedding => {
            let ids = if tys[0].dtype == DType::I64 { x() } else { Py::atom(format!("{}.long()", a[0].flat())) };
            Py::call("F.embedding", vec![ids, a[1].clone()])
        }
        Op::TokenSelect { index } => Py::atom(format!("{}[:, {index}]", a[0].flat())),
        Op::MeanTokens => dot("mean", vec![Py::atom("dim=1")]),
        Op::Positions => return (Py::call("positions", vec![x()]), Some(Helper::Positions)),
        Op::Input { .. } | Op::Output { .. } | Op::Parameter(_) | Op::Unbound => Py::atom("None"),
    };
    (e, None)
}

fn conv(f: &str, a: &[Py], stride: &[i64]) -> Py {
    let mut args = a.to_vec();
    if args.len() == 2 {
        args.push(Py::atom("None"));
    }
    let s: Vec<String> = stride.iter().map(|s| s.to_string()).collect();
    args.push(Py::atom(format!("stride=({})", s.join(", "))));
    Py::call(f, args)
}
