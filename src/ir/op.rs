//! The closed set of IR operations, and what each op says about itself: its name,
//! arity, shape rule ([`Op::infer`], the rules in [`super::rules`]), the run-time
//! rule for absent operands ([`Op::on_absent`]), the weights it takes
//! ([`Op::weight_name`]), its fold expression ([`Op::fold`]) and its printed
//! attributes ([`Op::attributes`]).
//!
//! Backends dispatch on the op; passes, the printer and the backends' shared rules
//! ask the op through these methods and never list op kinds, except where a rewrite
//! rule names the pattern it rewrites.

use super::param::{FoldExpr, ParamInfo};
use super::shape::TensorType;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A model input. `optional` inputs may be absent at run time; with
    /// `default_zeros` an absent one is replaced by zeros. With `norm` (declared
    /// `normalized`) it also accepts raw `u8` pixels, normalised by the backend.
    Input {
        name: String,
        ty: TensorType,
        optional: bool,
        default_zeros: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        norm: Option<super::PixelNorm>,
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
    /// `1 / (1 + exp(-x))` (CLIP's quick-GELU is `x · sigmoid(1.702 x)`).
    Sigmoid,
    /// The fixed sinusoidal position table of `x` `[B, T, D]`: `[1, T, D]` with
    /// `sin(t / 10000^(2⌊j/2⌋/D))` at even `j` and `cos` at odd `j` (VideoMAE's
    /// `get_sinusoid_encoding_table`), computed in float64, in `x`'s dtype.
    SinusoidPositions,
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
            Op::Sigmoid => "sigmoid",
            Op::SinusoidPositions => "sinusoid_positions",
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

    /// The run-time rule for absent operands (a missing optional input, and what is
    /// computed from it), given which operands are absent (`absent`, at least one) and
    /// which are computed from a model input (`data`, not from parameters alone): the
    /// operand whose value the result is, or `None` when the result is absent too.
    ///
    /// `add` passes through a present operand computed from the data, so an adapter
    /// `x + gate · f(x, context)` vanishes with its context (a parameter alone, like a
    /// positional embedding, does not stand in for a missing input); every other op's
    /// result is absent. The compiler's check ([`crate::passes::check_optional_inputs`])
    /// and both backends apply this one rule.
    pub fn on_absent(&self, absent: &[bool], data: &[bool]) -> Option<usize> {
        match self {
            Op::Add => (0..absent.len()).find(|&i| !absent[i] && data.get(i) == Some(&true)),
            _ => None,
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
            | Op::Sigmoid
            | Op::SinusoidPositions
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

    /// The shape rule: the result type from the operand types, or what is wrong (each
    /// op's rule is a function of [`super::rules`]).
    pub fn infer(&self, ins: &[&TensorType]) -> Result<TensorType, String> {
        use super::rules as r;
        match self {
            Op::Input { ty, .. } => Ok(ty.clone()),
            Op::Parameter(p) => Ok(TensorType::fixed(p.dtype, &p.shape)),
            Op::Unbound => Err("an unbound input has no type".into()),
            Op::Output { .. } | Op::Gelu | Op::Relu | Op::Tanh | Op::Sigmoid | Op::Scale { .. } => {
                Ok(ins.first().copied().expect("arity").clone())
            }
            Op::SinusoidPositions => r::sinusoid_positions(ins[0]),
            Op::Linear => r::linear(ins),
            Op::GroupedLinear { groups } => r::grouped_linear(ins, *groups),
            Op::Conv2d { stride } => r::conv(ins, &stride[..]),
            Op::Conv3d { stride } => r::conv(ins, &stride[..]),
            Op::LayerNorm { .. } => r::layer_norm(ins),
            Op::Attention { heads } => r::attention(ins, *heads),
            Op::Add | Op::Mul => r::elementwise(ins[0], ins[1]),
            Op::Reshape { dims } => r::reshape(ins[0], dims),
            Op::Permute { perm } => r::permute(ins[0], perm),
            Op::Split { axis, parts, index } => r::split(ins[0], *axis, *parts, *index),
            Op::Concat { axis } => r::concat(ins, *axis),
            Op::Embedding => r::embedding(ins[0], ins[1]),
            Op::TokenSelect { index } => r::token_select(ins[0], *index),
            Op::MeanTokens => r::mean_tokens(ins[0]),
            Op::Positions => r::positions(ins[0]),
            Op::MatMul => r::matmul(ins[0], ins[1]),
        }
    }

    /// The op's attributes as the text IR prints them (`{heads=12}`; empty for ops
    /// without attributes, and for graph ops, which print their own fields).
    pub fn attributes(&self) -> String {
        match self {
            Op::GroupedLinear { groups } => format!("{{groups={groups}}}"),
            Op::Conv2d { stride } => format!("{{stride={stride:?}}}"),
            Op::Conv3d { stride } => format!("{{stride={stride:?}}}"),
            Op::LayerNorm { eps } => format!("{{eps={eps:e}}}"),
            Op::Attention { heads } => format!("{{heads={heads}}}"),
            Op::Scale { factor } => format!("{{factor={factor}}}"),
            Op::Reshape { dims } => format!("{{dims={dims:?}}}"),
            Op::Permute { perm } => format!("{{perm={perm:?}}}"),
            Op::Split { axis, parts, index } => format!("{{axis={axis}, parts={parts}, index={index}}}"),
            Op::Concat { axis } => format!("{{axis={axis}}}"),
            Op::TokenSelect { index } => format!("{{index={index}}}"),
            Op::Input { .. }
            | Op::Output { .. }
            | Op::Parameter(_)
            | Op::Unbound
            | Op::Linear
            | Op::Gelu
            | Op::Relu
            | Op::Tanh
            | Op::Sigmoid
            | Op::SinusoidPositions
            | Op::Add
            | Op::Mul
            | Op::Embedding
            | Op::MeanTokens
            | Op::Positions
            | Op::MatMul => String::new(),
        }
    }

    /// For ops that take weights: the name of the weight operand `slot` holds
    /// (`weight`, `bias`), as checkpoints name them (`fc.weight`). `None` for a data
    /// operand or an op without weights.
    pub fn weight_name(&self, slot: usize) -> Option<&'static str> {
        match self {
            Op::Linear
            | Op::GroupedLinear { .. }
            | Op::Conv2d { .. }
            | Op::Conv3d { .. }
            | Op::LayerNorm { .. }
            | Op::Embedding => match slot {
                1 => Some("weight"),
                2 => Some("bias"),
                _ => None,
            },
            _ => None,
        }
    }

    /// The op applied to weight-level values `args` as a fold expression, evaluated
    /// once when weights load ([`FoldExpr`]); `None` for ops that are not folded.
    pub fn fold(&self, args: &[FoldExpr]) -> Option<FoldExpr> {
        let arg = |i: usize| args.get(i).cloned().map(Box::new);
        Some(match self {
            Op::Add => FoldExpr::Add { a: arg(0)?, b: arg(1)? },
            Op::Mul => FoldExpr::Mul { a: arg(0)?, b: arg(1)? },
            Op::MatMul => FoldExpr::MatMul { a: arg(0)?, b: arg(1)? },
            Op::Scale { factor } => FoldExpr::Scale { a: arg(0)?, factor: *factor },
            _ => return None,
        })
    }
}
