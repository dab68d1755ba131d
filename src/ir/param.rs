//! Parameters: the IR's weights, with where their values come from.

use super::shape::DType;
use serde::Serialize;
use std::fmt;

/// How a parameter that is not loaded from a file is initialised.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Init {
    Zeros,
    Ones,
    Constant {
        value: f64,
    },
    Normal {
        std: f64,
    },
    TruncNormal {
        std: f64,
    },
    /// `U(-bound, bound)`; PyTorch's `nn.Linear` default is `bound = 1/sqrt(fan_in)`.
    Uniform {
        bound: f64,
    },
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Zeros => write!(f, "zeros"),
            Init::Ones => write!(f, "ones"),
            Init::Constant { value } => write!(f, "constant({value})"),
            Init::Normal { std } => write!(f, "normal(std={std})"),
            Init::TruncNormal { std } => write!(f, "trunc_normal(std={std})"),
            Init::Uniform { bound } => write!(f, "uniform({bound:.6})"),
        }
    }
}

/// A weight computed from other weights once, before inference (`fold_reparam`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FoldExpr {
    Param {
        param: Box<ParamInfo>,
    },
    Add {
        a: Box<FoldExpr>,
        b: Box<FoldExpr>,
    },
    /// Elementwise with broadcasting (λ · W′).
    Mul {
        a: Box<FoldExpr>,
        b: Box<FoldExpr>,
    },
    Scale {
        a: Box<FoldExpr>,
        factor: f64,
    },
    /// Matrix product; a 1-d right operand is a vector.
    MatMul {
        a: Box<FoldExpr>,
        b: Box<FoldExpr>,
    },
    /// The identity matrix of size n.
    Eye {
        n: i64,
    },
}

impl FoldExpr {
    /// Leaf parameters, in order.
    pub fn leaves(&self) -> Vec<&ParamInfo> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a ParamInfo>) {
        match self {
            FoldExpr::Param { param } => out.push(param),
            FoldExpr::Add { a, b } | FoldExpr::Mul { a, b } | FoldExpr::MatMul { a, b } => {
                a.collect(out);
                b.collect(out);
            }
            FoldExpr::Scale { a, .. } => a.collect(out),
            FoldExpr::Eye { .. } => {}
        }
    }
}

impl fmt::Display for FoldExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A leaf read from a file shows its binding and key, as parameters do.
            FoldExpr::Param { param } => match &param.source {
                ParamSource::Weights { binding, key } => write!(f, "{binding}:{key}"),
                _ => write!(f, "{}", param.path),
            },
            FoldExpr::Add { a, b } => write!(f, "({a} + {b})"),
            FoldExpr::Mul { a, b } => write!(f, "({a} * {b})"),
            FoldExpr::Scale { a, factor } => write!(f, "{factor} * {a}"),
            FoldExpr::MatMul { a, b } => write!(f, "({a} @ {b})"),
            FoldExpr::Eye { n } => write!(f, "eye({n})"),
        }
    }
}

/// Where a parameter's value comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParamSource {
    /// A key of the file bound to `binding` (keys are relative to the bound instance).
    Weights {
        binding: String,
        key: String,
    },
    Init {
        init: Init,
    },
    Folded {
        expr: Box<FoldExpr>,
    },
}

/// A parameter node's payload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamInfo {
    /// Hierarchical name, e.g. `target.blocks.3.attn.qkv.weight`.
    pub path: String,
    pub shape: Vec<i64>,
    pub dtype: DType,
    pub trainable: bool,
    /// The top-level component that owns it (first path segment, or the pathway).
    pub component: String,
    pub source: ParamSource,
}

impl ParamInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d.max(0) as u64).product()
    }
}
