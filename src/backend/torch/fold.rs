//! Fold expressions: inference-mode weights computed from other weights.
//!
//! `fold_reparam` replaces a re-parameterization (`W + λ·W′`, `W + s·B·A`, ...) by one
//! parameter whose source is a [`FoldExpr`] over the original parameters. Here the
//! expression is evaluated once, in float64 on the CPU from its leaves' values, and
//! the result is cast to the folded parameter's dtype.

use super::kind_of;
use crate::ir::{FoldExpr, ParamInfo};
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// Evaluate `expr` in float64; `leaf` gives a leaf parameter's value (any float dtype).
pub fn eval(expr: &FoldExpr, leaf: &mut dyn FnMut(&ParamInfo) -> Result<Tensor>) -> Result<Tensor> {
    Ok(match expr {
        FoldExpr::Param { param } => {
            let t = leaf(param)?;
            if t.size() != param.shape {
                bail!("`{}` has shape {:?}, the expression expects {:?}", param.path, t.size(), param.shape);
            }
            t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?
        }
        FoldExpr::Add { a, b } => eval(a, leaf)?.f_add(&eval(b, leaf)?)?,
        FoldExpr::Mul { a, b } => eval(a, leaf)?.f_mul(&eval(b, leaf)?)?,
        FoldExpr::Scale { a, factor } => eval(a, leaf)?.f_mul_scalar(*factor)?,
        FoldExpr::MatMul { a, b } => eval(a, leaf)?.f_matmul(&eval(b, leaf)?)?,
        FoldExpr::Eye { n } => Tensor::f_eye(*n, (Kind::Double, Device::Cpu))?,
    })
}

/// The folded parameter `p`'s value: `expr` in float64, checked against `p`'s shape
/// and cast to `p`'s dtype.
pub fn fold_param(
    p: &ParamInfo,
    expr: &FoldExpr,
    leaf: &mut dyn FnMut(&ParamInfo) -> Result<Tensor>,
) -> Result<Tensor> {
    let v = eval(expr, leaf)?;
    if v.size() != p.shape {
        bail!("the expression evaluates to shape {:?}, the parameter is {:?}", v.size(), p.shape);
    }
    Ok(v.f_to_kind(kind_of(p.dtype))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Init, ParamSource};
    use std::collections::HashMap;

    fn leaf(path: &str, shape: &[i64]) -> Box<FoldExpr> {
        Box::new(FoldExpr::Param {
            param: Box::new(ParamInfo {
                path: path.into(),
                shape: shape.to_vec(),
                dtype: DType::F32,
                trainable: false,
                component: String::new(),
                source: ParamSource::Init { init: Init::Zeros },
            }),
        })
    }

    #[test]
    fn lora_and_pathway_folds_match_direct_float64() {
        let mut vals: HashMap<&str, Tensor> = HashMap::new();
        vals.insert("w", Tensor::randn([6, 4], (Kind::Float, Device::Cpu)));
        vals.insert("b_", Tensor::randn([6, 2], (Kind::Float, Device::Cpu)));
        vals.insert("a_", Tensor::randn([2, 4], (Kind::Float, Device::Cpu)));
        vals.insert("lam", Tensor::from_slice(&[0.3f32]));
        vals.insert("aux", Tensor::randn([6, 4], (Kind::Float, Device::Cpu)));
        vals.insert("bias", Tensor::randn([6], (Kind::Float, Device::Cpu)));
        vals.insert("a2", Tensor::randn([2, 6], (Kind::Float, Device::Cpu)));
        let mut get = |p: &ParamInfo| Ok(vals[p.path.as_str()].shallow_clone());
        let d = |s: &str| vals[s].to_kind(Kind::Double);
        // W + 2·(B @ A)
        let lora = FoldExpr::Add {
            a: leaf("w", &[6, 4]),
            b: Box::new(FoldExpr::Scale {
                a: Box::new(FoldExpr::MatMul { a: leaf("b_", &[6, 2]), b: leaf("a_", &[2, 4]) }),
                factor: 2.0,
            }),
        };
        let got = eval(&lora, &mut get).unwrap();
        let want = d("w") + d("b_").matmul(&d("a_")) * 2.0;
        assert_eq!(got.kind(), Kind::Double);
        assert!(got.allclose(&want, 1e-12, 1e-12, false));
        // W + λ·W′, cast to f32 by fold_param.
        let m2pt = FoldExpr::Add {
            a: leaf("w", &[6, 4]),
            b: Box::new(FoldExpr::Mul { a: leaf("lam", &[1]), b: leaf("aux", &[6, 4]) }),
        };
        let p = ParamInfo {
            path: "w".into(),
            shape: vec![6, 4],
            dtype: DType::F32,
            trainable: false,
            component: String::new(),
            source: ParamSource::Folded { expr: Box::new(m2pt.clone()) },
        };
        let got = fold_param(&p, &m2pt, &mut get).unwrap();
        assert_eq!(got.kind(), Kind::Float);
        let want = (d("w") + d("lam") * d("aux")).to_kind(Kind::Float);
        assert!(got.equal(&want));
        // Residual fold: (I + B·A2)·W and (I + B·A2)·bias (a vector right operand).
        let im = || {
            Box::new(FoldExpr::Add {
                a: Box::new(FoldExpr::Eye { n: 6 }),
                b: Box::new(FoldExpr::MatMul { a: leaf("b_", &[6, 2]), b: leaf("a2", &[2, 6]) }),
            })
        };
        let got_w = eval(&FoldExpr::MatMul { a: im(), b: leaf("w", &[6, 4]) }, &mut get).unwrap();
        let got_b = eval(&FoldExpr::MatMul { a: im(), b: leaf("bias", &[6]) }, &mut get).unwrap();
        let m = Tensor::eye(6, (Kind::Double, Device::Cpu)) + d("b_").matmul(&d("a2"));
        assert!(got_w.allclose(&m.matmul(&d("w")), 1e-12, 1e-12, false));
        assert_eq!(got_b.size(), vec![6]);
        assert!(got_b.allclose(&m.matmul(&d("bias")), 1e-12, 1e-12, false));
        // Mismatched operands are an error, not a panic.
        assert!(eval(&FoldExpr::MatMul { a: leaf("w", &[6, 4]), b: leaf("w", &[6, 4]) }, &mut get).is_err());
        // A leaf whose value has the wrong shape is an error.
        let bad = FoldExpr::Add { a: leaf("w", &[4, 6]), b: leaf("w", &[4, 6]) };
        assert!(eval(&bad, &mut get).unwrap_err().to_string().contains("shape"));
    }
}
