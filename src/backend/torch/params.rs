//! Parameters: values for a plan's parameter table, kept in a `tch` VarStore.
//!
//! Trainable parameters are VarStore variables that require gradients (what an
//! optimizer built on the store updates); frozen ones are stored without gradients.
//! A parameter's value comes from its source: a weights-file key (see [`super::weights`]),
//! a seeded init rule, or a fold expression over such leaves ([`super::fold`]).
//!
//! Init rules are seeded per parameter from `(seed, parameter path)`, so a value does
//! not depend on creation order: train and infer mode, and every run with the same
//! seed, see the same initial weights.

use super::fold;
use super::lower::Plan;
use super::weights::Leaves;
use crate::ir::{Init, ParamInfo, ParamSource};
use anyhow::{Context, Result};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Values for one plan's parameters.
pub struct ParamStore {
    pub vs: VarStore,
    /// In plan order; shallow clones of the VarStore's variables.
    pub tensors: Vec<Tensor>,
}

impl ParamStore {
    /// Build every parameter of `plan` from `leaves`, on `device`, with float
    /// parameters in `float_kind`.
    pub fn build(plan: &Plan, leaves: &Leaves, device: Device, float_kind: Kind) -> Result<ParamStore> {
        let values = plan.params.iter().map(|p| value_of(p, leaves)).collect::<Result<Vec<_>>>()?;
        ParamStore::from_values(plan, values, device, float_kind)
    }

    /// Store given values (in plan order, any device and dtype).
    pub fn from_values(plan: &Plan, values: Vec<Tensor>, device: Device, float_kind: Kind) -> Result<ParamStore> {
        let vs = VarStore::new(device);
        let mut tensors = Vec::with_capacity(plan.params.len());
        for (p, value) in plan.params.iter().zip(values) {
            let kind = if super::is_float_kind(value.kind()) { float_kind } else { value.kind() };
            let t = value.f_to_device(device)?.f_to_kind(kind)?.f_detach()?;
            let mut at = vs.root();
            let segs: Vec<&str> = p.path.split('.').collect();
            for s in &segs[..segs.len() - 1] {
                at = at.sub(*s);
            }
            tensors.push(at.add(segs[segs.len() - 1], t, p.trainable));
        }
        Ok(ParamStore { vs, tensors })
    }

    pub fn trainable_count(&self) -> usize {
        self.vs.trainable_variables().len()
    }
}

/// A parameter's value in its own dtype, on the CPU: loaded, initialised or folded.
pub fn value_of(p: &ParamInfo, leaves: &Leaves) -> Result<Tensor> {
    match &p.source {
        ParamSource::Folded { expr } => fold::fold_param(p, expr, &mut |leaf| leaves.get(leaf))
            .with_context(|| format!("folding `{}` = {expr}", p.path)),
        _ => leaves.get(p),
    }
}

/// A 63-bit seed from the run seed and a parameter path (FNV-1a).
pub fn param_seed(seed: u64, path: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in path.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h >> 1
}

/// SplitMix64: a small generator private to each parameter, so values depend only on
/// `(seed, path)`, never on LibTorch's global generator or on other threads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, path: &str) -> Rng {
        Rng(param_seed(seed, path))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn numel(shape: &[i64]) -> usize {
    shape.iter().map(|&d| d.max(0) as usize).product()
}

/// `n` values drawn by `f`, as a CPU f32 tensor of `shape`.
pub fn draw(shape: &[i64], seed: u64, path: &str, mut f: impl FnMut(&mut Rng) -> f64) -> Result<Tensor> {
    let mut rng = Rng::new(seed, path);
    let v: Vec<f32> = (0..numel(shape)).map(|_| f(&mut rng) as f32).collect();
    Ok(Tensor::f_from_slice(&v)?.f_reshape(shape)?)
}

/// An init rule's tensor (CPU, `kind`), deterministic in `(seed, path)`.
pub fn init_tensor(init: &Init, shape: &[i64], kind: Kind, seed: u64, path: &str) -> Result<Tensor> {
    let opts = (Kind::Float, Device::Cpu);
    let t = match *init {
        Init::Zeros => Tensor::f_zeros(shape, opts)?,
        Init::Ones => Tensor::f_ones(shape, opts)?,
        Init::Constant { value } => Tensor::f_full(shape, value, opts)?,
        Init::Normal { std } => draw(shape, seed, path, |r| r.normal() * std)?,
        // PyTorch's trunc_normal_ default: values outside [-2, 2] are redrawn.
        Init::TruncNormal { std } => draw(shape, seed, path, |r| loop {
            let x = r.normal() * std;
            if x.abs() <= 2.0 {
                break x;
            }
        })?,
        Init::Uniform { bound } => draw(shape, seed, path, |r| (2.0 * r.uniform() - 1.0) * bound)?,
    };
    Ok(t.f_to_kind(kind)?)
}

/// The rule for a weights-file parameter whose key `--allow-missing` excused (the
/// file does not say how it was initialised): biases zero, 1-d weights (norm scales)
/// one, everything else timm's truncated normal with std 0.02.
pub fn fallback_init(p: &ParamInfo) -> Init {
    if p.path.ends_with("bias") {
        Init::Zeros
    } else if p.shape.len() == 1 && p.path.ends_with("weight") {
        Init::Ones
    } else {
        Init::TruncNormal { std: 0.02 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_rules_are_seeded_per_path() {
        let a = init_tensor(&Init::Normal { std: 0.02 }, &[4, 5], Kind::Float, 0, "m.a").unwrap();
        let a2 = init_tensor(&Init::Normal { std: 0.02 }, &[4, 5], Kind::Float, 0, "m.a").unwrap();
        let b = init_tensor(&Init::Normal { std: 0.02 }, &[4, 5], Kind::Float, 0, "m.b").unwrap();
        let a3 = init_tensor(&Init::Normal { std: 0.02 }, &[4, 5], Kind::Float, 1, "m.a").unwrap();
        assert!(a.equal(&a2));
        assert!(!a.equal(&b));
        assert!(!a.equal(&a3));
        let u = init_tensor(&Init::Uniform { bound: 0.5 }, &[1000], Kind::Float, 0, "u").unwrap();
        assert!(u.abs().max().double_value(&[]) <= 0.5);
        let t = init_tensor(&Init::TruncNormal { std: 3.0 }, &[1000], Kind::Float, 0, "t").unwrap();
        assert!(t.abs().max().double_value(&[]) <= 2.0);
        let c = init_tensor(&Init::Constant { value: 0.25 }, &[3], Kind::Double, 0, "c").unwrap();
        assert_eq!(c.kind(), Kind::Double);
        assert_eq!(c.sum(Kind::Double).double_value(&[]), 0.75);
        assert_eq!(
            init_tensor(&Init::Zeros, &[2], Kind::Float, 0, "z").unwrap().sum(Kind::Float).double_value(&[]),
            0.0
        );
        assert_eq!(
            init_tensor(&Init::Ones, &[2], Kind::Float, 0, "o").unwrap().sum(Kind::Float).double_value(&[]),
            2.0
        );
    }
}
