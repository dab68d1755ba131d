//! Fused elementwise groups: the interface the backend compiles against. This
//! version interprets a group row block by row block with the [`super::math`]
//! kernels; the compiled strategies replace it behind the same API.

use super::math;
use std::sync::Arc;

/// One elementwise fusion group over a `[rows, cols]` iteration space; all buffers
/// f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct EwGroup {
    pub inputs: Vec<EwBroadcast>,
    pub body: Vec<EwInstr>,
    pub outputs: Vec<EwValue>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EwBroadcast {
    Full,
    Row,
    Col,
    Scalar,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum EwValue {
    Input(usize),
    Instr(usize),
    Const(f32),
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum EwInstr {
    Add(EwValue, EwValue),
    Sub(EwValue, EwValue),
    Mul(EwValue, EwValue),
    Scale(EwValue, f32),
    Relu(EwValue),
    Tanh(EwValue),
    Gelu(EwValue),
    Sigmoid(EwValue),
    Exp(EwValue),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EwStrategy {
    Unfused,
    Blocks,
    Jit,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EwStats {
    pub compiled: usize,
    pub cache_hits: usize,
    pub compile_seconds: f64,
}

#[derive(thiserror::Error, Debug)]
pub enum EwError {
    #[error("malformed elementwise group: {0}")]
    Malformed(String),
}

pub struct EwCompiler {
    stats: EwStats,
}

impl EwCompiler {
    pub fn new(_strategy: EwStrategy) -> Result<Self, EwError> {
        Ok(EwCompiler { stats: EwStats::default() })
    }
    pub fn compile(&mut self, group: &EwGroup) -> Result<EwKernel, EwError> {
        self.stats.compiled += 1;
        Ok(EwKernel(Arc::new(group.clone())))
    }
    pub fn stats(&self) -> EwStats {
        self.stats
    }
}

#[derive(Clone, Debug)]
pub struct EwKernel(Arc<EwGroup>);

impl EwKernel {
    pub fn run(&self, rows: usize, cols: usize, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let g = &self.0;
        let mut vals: Vec<Vec<f32>> = vec![vec![0.0; cols]; g.body.len()];
        let mut tmp = vec![vec![0.0f32; cols]; 2];
        for r in 0..rows {
            let load = |v: EwValue, vals: &Vec<Vec<f32>>, out: &mut Vec<f32>| match v {
                EwValue::Const(c) => out.fill(c),
                EwValue::Instr(i) => out.copy_from_slice(&vals[i]),
                EwValue::Input(i) => match g.inputs[i] {
                    EwBroadcast::Full => out.copy_from_slice(&inputs[i][r * cols..(r + 1) * cols]),
                    EwBroadcast::Row => out.copy_from_slice(&inputs[i][..cols]),
                    EwBroadcast::Col => out.fill(inputs[i][r]),
                    EwBroadcast::Scalar => out.fill(inputs[i][0]),
                },
            };
            for (k, ins) in g.body.iter().enumerate() {
                let (a, b) = tmp.split_at_mut(1);
                let (a, b) = (&mut a[0], &mut b[0]);
                let mut res = match *ins {
                    EwInstr::Add(x, y) | EwInstr::Sub(x, y) | EwInstr::Mul(x, y) => {
                        load(x, &vals, a);
                        load(y, &vals, b);
                        a.iter()
                            .zip(b.iter())
                            .map(|(&p, &q)| match ins {
                                EwInstr::Add(..) => p + q,
                                EwInstr::Sub(..) => p - q,
                                _ => p * q,
                            })
                            .collect::<Vec<f32>>()
                    }
                    EwInstr::Scale(x, f) => {
                        load(x, &vals, a);
                        a.iter().map(|&p| p * f).collect()
                    }
                    EwInstr::Relu(x) | EwInstr::Tanh(x) | EwInstr::Gelu(x) | EwInstr::Sigmoid(x) | EwInstr::Exp(x) => {
                        load(x, &vals, a);
                        a.clone()
                    }
                };
                match ins {
                    EwInstr::Relu(_) => res.iter_mut().for_each(|v| *v = v.max(0.0)),
                    EwInstr::Tanh(_) => math::tanh_inplace(&mut res),
                    EwInstr::Gelu(_) => math::gelu_erf_inplace(&mut res),
                    EwInstr::Sigmoid(_) => math::sigmoid_inplace(&mut res),
                    EwInstr::Exp(_) => math::exp_inplace(&mut res),
                    _ => {}
                }
                vals[k] = res;
            }
            for (o, v) in outputs.iter_mut().zip(&g.outputs) {
                let (a, _) = tmp.split_at_mut(1);
                load(*v, &vals, &mut a[0]);
                o[r * cols..(r + 1) * cols].copy_from_slice(&a[0]);
            }
        }
    }
}
