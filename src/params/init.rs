//! Init rules: parameter values drawn from graft's own seeded generator.
//!
//! Init rules are seeded per parameter from `(seed, parameter path)`, so a value does
//! not depend on creation order, on a tensor library's global generator or on other
//! threads: train and infer mode, every backend and every run with the same seed see
//! the same initial weights. Values are drawn in float64, rounded to float32, then
//! converted to the parameter's dtype (the stream graft has always drawn; resume tests
//! compare it bit for bit).

use crate::ir::{DType, Init, ParamInfo};
use crate::tensor::{numel, HostTensor};

use crate::rng::SplitMix64;

/// `numel(shape)` values drawn by `f`, each rounded to f32, as an `f32` tensor.
pub fn draw(shape: &[i64], seed: u64, path: &str, mut f: impl FnMut(&mut SplitMix64) -> f64) -> HostTensor {
    let mut rng = SplitMix64::for_param(seed, path);
    let v: Vec<f32> = (0..numel(shape).unwrap_or(0)).map(|_| f(&mut rng) as f32).collect();
    HostTensor::from_f32(shape, &v).expect("numel values")
}

/// An init rule's values in `dtype`, deterministic in `(seed, path)`.
pub fn init_values(init: &Init, shape: &[i64], dtype: DType, seed: u64, path: &str) -> HostTensor {
    let fill = |v: f64| draw(shape, seed, path, |_| v);
    let t = match *init {
        Init::Zeros => fill(0.0),
        Init::Ones => fill(1.0),
        Init::Constant { value } => fill(value),
        Init::Normal { std } => draw(shape, seed, path, |r| r.normal() * std),
        // PyTorch's trunc_normal_ default: values outside [-2, 2] are redrawn.
        Init::TruncNormal { std } => draw(shape, seed, path, |r| loop {
            let x = r.normal() * std;
            if x.abs() <= 2.0 {
                break x;
            }
        }),
        Init::Uniform { bound } => draw(shape, seed, path, |r| (2.0 * r.uniform() - 1.0) * bound),
    };
    t.to_dtype(dtype)
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

/// Random values for a parameter whatever its source (benchmarks: latency does not
/// depend on values): its init rule, or the fallback rule for a weights-file or
/// folded parameter; zero inits become small normals so no path is trivially zero.
pub fn random_values(p: &ParamInfo, seed: u64) -> HostTensor {
    let init = match &p.source {
        crate::ir::ParamSource::Init { init } => init.clone(),
        _ => fallback_init(p),
    };
    let init = if matches!(init, Init::Zeros) { Init::Normal { std: 0.02 } } else { init };
    init_values(&init, &p.shape, p.dtype, seed, &p.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &HostTensor) -> Vec<f32> {
        t.as_f32().unwrap()
    }

    #[test]
    fn init_rules_are_seeded_per_path() {
        let n = |seed, path| init_values(&Init::Normal { std: 0.02 }, &[4, 5], DType::F32, seed, path);
        assert_eq!(n(0, "m.a"), n(0, "m.a"));
        assert_ne!(n(0, "m.a"), n(0, "m.b"));
        assert_ne!(n(0, "m.a"), n(1, "m.a"));
        let u = init_values(&Init::Uniform { bound: 0.5 }, &[1000], DType::F32, 0, "u");
        assert!(f32s(&u).iter().all(|v| v.abs() <= 0.5));
        let t = init_values(&Init::TruncNormal { std: 3.0 }, &[1000], DType::F32, 0, "t");
        assert!(f32s(&t).iter().all(|v| v.abs() <= 2.0));
        let c = init_values(&Init::Constant { value: 0.25 }, &[3], DType::F64, 0, "c");
        assert_eq!(c.as_f64().unwrap(), vec![0.25; 3]);
        assert_eq!(f32s(&init_values(&Init::Zeros, &[2], DType::F32, 0, "z")), vec![0.0; 2]);
        assert_eq!(f32s(&init_values(&Init::Ones, &[2], DType::F32, 0, "o")), vec![1.0; 2]);
    }

    #[test]
    fn the_stream_is_stable() {
        // The first draws of one parameter's stream, as graft has always drawn them:
        // a change here changes every initialised weight and every resume check.
        let v = f32s(&init_values(&Init::Normal { std: 1.0 }, &[3], DType::F32, 0, "w"));
        let mut r = SplitMix64::for_param(0, "w");
        let want: Vec<f32> = (0..3).map(|_| r.normal() as f32).collect();
        assert_eq!(v, want);
        assert_eq!(
            crate::rng::param_seed(0, "w"),
            (0xcbf2_9ce4_8422_2325u64 ^ b'w' as u64).wrapping_mul(0x0100_0000_01b3) >> 1
        );
    }
}
