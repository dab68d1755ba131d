//! Fold expressions: inference-mode weights computed from other weights.
//!
//! `fold_reparam` replaces a re-parameterization (`W + λ·W′`, `W + s·B·A`, ...) by one
//! parameter whose source is a [`FoldExpr`] over the original parameters. Here the
//! expression is evaluated once, in float64 from its leaves' values (no tensor
//! library: plain loops, broadcasting as NumPy does), and the result is rounded to the
//! folded parameter's dtype.

use super::ParamError;
use crate::ir::verified::broadcast;
use crate::ir::{FoldExpr, ParamInfo};
use crate::tensor::HostTensor;

/// A float64 array: row-major values and a shape.
#[derive(Clone, Debug, PartialEq)]
pub struct F64Array {
    pub shape: Vec<i64>,
    pub values: Vec<f64>,
}

type Leaf<'a> = dyn FnMut(&ParamInfo) -> Result<HostTensor, ParamError> + 'a;

fn fail(message: String) -> ParamError {
    ParamError::Fold { message }
}

/// Evaluate `expr` in float64; `leaf` gives a leaf parameter's value (any dtype).
pub fn eval(expr: &FoldExpr, leaf: &mut Leaf<'_>) -> Result<F64Array, ParamError> {
    Ok(match expr {
        FoldExpr::Param { param } => {
            let t = leaf(param)?;
            if t.shape != param.shape {
                return Err(fail(format!(
                    "`{}` has shape {:?}, the expression expects {:?}",
                    param.path, t.shape, param.shape
                )));
            }
            F64Array { values: t.to_f64(), shape: t.shape }
        }
        FoldExpr::Add { a, b } => zip(eval(a, leaf)?, eval(b, leaf)?, |x, y| x + y)?,
        FoldExpr::Mul { a, b } => zip(eval(a, leaf)?, eval(b, leaf)?, |x, y| x * y)?,
        FoldExpr::Scale { a, factor } => {
            let mut v = eval(a, leaf)?;
            v.values.iter_mut().for_each(|x| *x *= factor);
            v
        }
        FoldExpr::MatMul { a, b } => matmul(&eval(a, leaf)?, &eval(b, leaf)?)?,
        FoldExpr::Eye { n } => {
            let n = *n as usize;
            let mut values = vec![0.0; n * n];
            (0..n).for_each(|i| values[i * n + i] = 1.0);
            F64Array { shape: vec![n as i64, n as i64], values }
        }
    })
}

/// Elementwise with broadcasting.
fn zip(a: F64Array, b: F64Array, f: impl Fn(f64, f64) -> f64) -> Result<F64Array, ParamError> {
    let shape = broadcast(&a.shape, &b.shape)
        .ok_or_else(|| fail(format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape)))?;
    if a.shape == b.shape {
        let values = a.values.iter().zip(&b.values).map(|(&x, &y)| f(x, y)).collect();
        return Ok(F64Array { shape, values });
    }
    let (ia, ib) = (strides_for(&a.shape, &shape), strides_for(&b.shape, &shape));
    let n: usize = shape.iter().map(|&d| d as usize).product();
    let mut values = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let (mut pa, mut pb) = (0, 0);
        for (k, &i) in idx.iter().enumerate() {
            pa += i * ia[k];
            pb += i * ib[k];
        }
        values.push(f(a.values[pa], b.values[pb]));
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] as usize {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(F64Array { shape, values })
}

/// Row-major strides of `shape` seen in the broadcast shape `to` (0 on broadcast dims).
fn strides_for(shape: &[i64], to: &[i64]) -> Vec<usize> {
    let lead = to.len() - shape.len();
    let mut strides = vec![0usize; to.len()];
    let mut s = 1usize;
    for k in (0..shape.len()).rev() {
        strides[lead + k] = if shape[k] == 1 { 0 } else { s };
        s *= shape[k] as usize;
    }
    strides
}

/// `[m, k] @ [k, n]` or `[m, k] @ [k]`, summing over `k` in order.
fn matmul(a: &F64Array, b: &F64Array) -> Result<F64Array, ParamError> {
    let bad = || fail(format!("matmul of {:?} and {:?}", a.shape, b.shape));
    let [m, k] = a.shape[..] else { return Err(bad()) };
    let (m, k) = (m as usize, k as usize);
    let (n, vector) = match b.shape[..] {
        [k2, n] if k2 as usize == k => (n as usize, false),
        [k2] if k2 as usize == k => (1, true),
        _ => return Err(bad()),
    };
    let mut values = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a.values[i * k + p];
            for j in 0..n {
                values[i * n + j] += x * b.values[p * n + j];
            }
        }
    }
    let shape = if vector { vec![m as i64] } else { vec![m as i64, n as i64] };
    Ok(F64Array { shape, values })
}

/// The folded parameter `p`'s value: `expr` in float64, checked against `p`'s shape
/// and rounded to `p`'s dtype.
pub fn fold_param(p: &ParamInfo, expr: &FoldExpr, leaf: &mut Leaf<'_>) -> Result<HostTensor, ParamError> {
    let v = eval(expr, leaf)?;
    if v.shape != p.shape {
        return Err(fail(format!("the expression evaluates to shape {:?}, the parameter is {:?}", v.shape, p.shape)));
    }
    HostTensor::from_f64_as(p.dtype, &v.shape, &v.values).ok_or_else(|| fail("bad shape".into()))
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

    fn t(shape: &[i64], v: &[f32]) -> HostTensor {
        HostTensor::from_f32(shape, v).unwrap()
    }

    #[test]
    fn lora_pathway_and_residual_folds_in_float64() {
        let mut vals: HashMap<&str, HostTensor> = HashMap::new();
        vals.insert("w", t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        vals.insert("b_", t(&[2, 1], &[0.5, -1.0]));
        vals.insert("a_", t(&[1, 3], &[1.0, 0.0, 2.0]));
        vals.insert("lam", t(&[1], &[0.1]));
        vals.insert("aux", t(&[2, 3], &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]));
        vals.insert("bias", t(&[2], &[1.0, -1.0]));
        vals.insert("a2", t(&[1, 2], &[2.0, 1.0]));
        let mut get = |p: &ParamInfo| Ok(vals[p.path.as_str()].clone());
        // W + 2·(B @ A)
        let lora = FoldExpr::Add {
            a: leaf("w", &[2, 3]),
            b: Box::new(FoldExpr::Scale {
                a: Box::new(FoldExpr::MatMul { a: leaf("b_", &[2, 1]), b: leaf("a_", &[1, 3]) }),
                factor: 2.0,
            }),
        };
        assert_eq!(eval(&lora, &mut get).unwrap().values, vec![2.0, 2.0, 5.0, 2.0, 5.0, 2.0]);
        // W + λ·W′ in float64, then rounded once to f32.
        let m2pt = FoldExpr::Add {
            a: leaf("w", &[2, 3]),
            b: Box::new(FoldExpr::Mul { a: leaf("lam", &[1]), b: leaf("aux", &[2, 3]) }),
        };
        let p = ParamInfo {
            path: "w".into(),
            shape: vec![2, 3],
            dtype: DType::F32,
            trainable: false,
            component: String::new(),
            source: ParamSource::Folded { expr: Box::new(m2pt.clone()) },
        };
        let got = fold_param(&p, &m2pt, &mut get).unwrap();
        let lam = 0.1f32 as f64;
        let want: Vec<f32> = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].iter().map(|w| (w + lam) as f32).collect();
        assert_eq!(got.as_f32().unwrap(), want);
        // Residual fold: (I + B·A2)·W and (I + B·A2)·bias (a vector right operand).
        let im = || {
            Box::new(FoldExpr::Add {
                a: Box::new(FoldExpr::Eye { n: 2 }),
                b: Box::new(FoldExpr::MatMul { a: leaf("b_", &[2, 1]), b: leaf("a2", &[1, 2]) }),
            })
        };
        // I + B·A2 = [[2, 0.5], [-2, 0]]
        let w = eval(&FoldExpr::MatMul { a: im(), b: leaf("w", &[2, 3]) }, &mut get).unwrap();
        assert_eq!(w.values, vec![4.0, 6.5, 9.0, -2.0, -4.0, -6.0]);
        let b = eval(&FoldExpr::MatMul { a: im(), b: leaf("bias", &[2]) }, &mut get).unwrap();
        assert_eq!((b.shape, b.values), (vec![2], vec![1.5, -2.0]));
        // Mismatched operands are an error, not a panic.
        assert!(eval(&FoldExpr::MatMul { a: leaf("w", &[2, 3]), b: leaf("w", &[2, 3]) }, &mut get).is_err());
        // A leaf whose value has the wrong shape is an error.
        let bad = FoldExpr::Add { a: leaf("w", &[3, 2]), b: leaf("w", &[3, 2]) };
        assert!(eval(&bad, &mut get).unwrap_err().to_string().contains("shape"));
    }

    #[test]
    fn broadcasting_follows_numpy() {
        let a = F64Array { shape: vec![2, 1], values: vec![1.0, 2.0] };
        let b = F64Array { shape: vec![3], values: vec![10.0, 20.0, 30.0] };
        let c = zip(a, b, |x, y| x + y).unwrap();
        assert_eq!(c.shape, vec![2, 3]);
        assert_eq!(c.values, vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }
}
