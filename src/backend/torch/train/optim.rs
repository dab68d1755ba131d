//! AdamW over exactly the trainable parameters, with parameter groups, global-norm
//! clipping and a state that saves and loads bit for bit.
//!
//! The update is `torch.optim.AdamW`'s (decoupled weight decay, bias-corrected
//! moments, per-parameter step counts):
//!
//! ```text
//! t += 1;  p *= 1 - lr·wd;  m = lerp(m, g, 1 - β1);  v = β2·v + (1 - β2)·g²
//! p -= lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + ε)
//! ```
//!
//! Weight decay applies to matrices and kernels (two or more dims); biases, norm
//! scales, gates and M2PT's λ scalars are not decayed. A parameter without a gradient
//! in a step (an adapter skipped because its modality was missing from every batch of
//! the step) is left alone, step count included, as PyTorch does for `grad = None`.
//!
//! The update runs as LibTorch's fused multi-tensor AdamW kernel (`_fused_adamw_`, what
//! `torch.optim.AdamW(fused=True)` calls; `csrc/optim.cpp`): one launch per parameter
//! group and decay class instead of several per tensor, the step counts float tensors
//! on the parameters' device, so a step needs no host synchronisation and a CUDA graph
//! can capture it (the learning rate then comes from a device tensor, [`Rate::Device`]).
//! It agrees with `torch.optim.AdamW(foreach=True)` to float rounding (tests/train.rs).
//!
//! Groups: `--lr-for PATTERN=LR` (a glob on full parameter paths, `*` matches any
//! text) gives the parameters it matches their own peak rate; the first matching
//! pattern wins; everything else uses `--lr`. The schedule scales every group alike.

use crate::backend::torch::convert::to_tensor;
use crate::backend::torch::shim_call;
use crate::params::glob::glob_match;
use crate::safetensors::SafeFile;
use anyhow::{anyhow, bail, Result};
use std::ffi::{c_char, c_int, c_void};
use tch::{Kind, Tensor};

mod sys {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn graft_adamw_fused(
            params: *const *mut c_void,
            grads: *const *mut c_void,
            exp_avgs: *const *mut c_void,
            exp_avg_sqs: *const *mut c_void,
            steps: *const *mut c_void,
            n: usize,
            lr_tensor: *mut c_void,
            lr_value: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
            found_inf: *mut c_void,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn graft_clip_grad_norm(
            grads: *const *mut c_void,
            n: usize,
            max_norm: f64,
            norm_out: *mut *mut c_void,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn graft_flag_non_finite(
            ts: *const *mut c_void,
            n: usize,
            found_inf: *mut c_void,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
    }
}

/// Call an optimizer shim function; non-zero → an error `what: message`.
fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    shim_call(f).map_err(|msg| anyhow!("{what}: {msg}"))
}

/// The `at::Tensor*` behind each tensor, for a shim call (they stay alive with `ts`).
fn raw(ts: &[&Tensor]) -> Vec<*mut c_void> {
    ts.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;
pub const EPS: f64 = 1e-8;

/// One parameter group.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The `--lr-for` pattern, or `None` for the default group (`--lr`).
    pub pattern: Option<String>,
    /// Peak learning rate.
    pub lr: f64,
    pub tensors: usize,
    pub numel: u64,
}

struct Slot {
    path: String,
    tensor: Tensor,
    group: usize,
    decay: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// PyTorch's `state_steps`: a 0-d float tensor on the parameter's device.
    step: Tensor,
}

/// The learning-rate factor of a step (the schedule's value): a number, or a 0-d float
/// tensor on the parameters' device that a captured CUDA graph reads at each replay.
#[derive(Clone, Copy)]
pub enum Rate<'a> {
    Value(f64),
    Device(&'a Tensor),
}

pub struct AdamW {
    pub weight_decay: f64,
    pub groups: Vec<Group>,
    slots: Vec<Slot>,
}

impl AdamW {
    /// `params`: the trainable (path, tensor) pairs; `frozen`: the other parameter
    /// paths (to explain a pattern that matches only frozen ones).
    pub fn new(
        params: Vec<(String, Tensor)>,
        lr: f64,
        lr_for: &[(String, f64)],
        weight_decay: f64,
        frozen: &[String],
    ) -> Result<AdamW> {
        if params.is_empty() {
            bail!("the model has no trainable parameters: name what trains with a `train` line in the spec");
        }
        let mut groups = vec![Group { pattern: None, lr, tensors: 0, numel: 0 }];
        groups.extend(lr_for.iter().map(|(p, lr)| Group { pattern: Some(p.clone()), lr: *lr, tensors: 0, numel: 0 }));
        let mut slots = Vec::with_capacity(params.len());
        for (path, tensor) in params {
            let group = lr_for.iter().position(|(p, _)| glob_match(p, &path)).map_or(0, |i| i + 1);
            groups[group].tensors += 1;
            groups[group].numel += tensor.numel() as u64;
            let decay = tensor.dim() >= 2;
            let zeros = || tensor.f_zeros_like();
            let (exp_avg, exp_avg_sq) = (zeros()?, zeros()?);
            let step = Tensor::f_zeros([], (Kind::Float, tensor.device()))?;
            slots.push(Slot { path, tensor, group, decay, exp_avg, exp_avg_sq, step });
        }
        for g in &groups[1..] {
            if g.tensors > 0 {
                continue;
            }
            let p = g.pattern.as_deref().unwrap_or_default();
            let shadowed = slots.iter().find(|s| glob_match(p, &s.path));
            if let Some(s) = shadowed {
                bail!(
                    "--lr-for '{p}=…': every parameter it matches (e.g. {}) is taken by an earlier --lr-for pattern",
                    s.path
                );
            }
            if let Some(f) = frozen.iter().find(|f| glob_match(p, f)) {
                bail!("--lr-for '{p}=…' matches only frozen parameters (e.g. {f}): only trainable parameters have a learning rate");
            }
            let examples: Vec<&str> = slots.iter().take(3).map(|s| s.path.as_str()).collect();
            bail!("--lr-for '{p}=…' matches no parameter (a glob on full paths, `*` matches any text); trainable parameters look like: {}", examples.join(", "));
        }
        Ok(AdamW { weight_decay, groups, slots })
    }

    /// The parameters, in order (what gradients are taken with respect to).
    pub fn params(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.tensor.shallow_clone()).collect()
    }

    pub fn paths(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.path.as_str()).collect()
    }

    /// One update. `grads` follows [`Self::params`]; `None`: no gradient this step.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr_scale: f64) -> Result<()> {
        self.step_on_device(grads, Rate::Value(lr_scale), None)
    }

    /// One update without a host synchronisation: one fused kernel per (group, decay)
    /// class of the parameters that have a gradient. With `found_inf` (a 0-d float flag
    /// on the device, see [`flag_non_finite`]) holding 1, nothing changes, step counts
    /// included.
    pub fn step_on_device(&mut self, grads: &[Option<Tensor>], rate: Rate, found_inf: Option<&Tensor>) -> Result<()> {
        if grads.len() != self.slots.len() {
            bail!("internal error: {} gradients for {} parameters", grads.len(), self.slots.len());
        }
        let _guard = tch::no_grad_guard();
        for group in 0..self.groups.len() {
            for decay in [false, true] {
                let class: Vec<(&Slot, &Tensor)> = self
                    .slots
                    .iter()
                    .zip(grads)
                    .filter(|(s, _)| s.group == group && s.decay == decay)
                    .filter_map(|(s, g)| g.as_ref().map(|g| (s, g)))
                    .collect();
                if class.is_empty() {
                    continue;
                }
                let wd = if decay { self.weight_decay } else { 0.0 };
                let peak = self.groups[group].lr;
                let lr_tensor = match rate {
                    Rate::Value(_) => None,
                    Rate::Device(t) => Some(t.f_mul_scalar(peak)?),
                };
                let lr_value = match rate {
                    Rate::Value(v) => peak * v,
                    Rate::Device(_) => 0.0,
                };
                let col = |f: fn(&Slot) -> &Tensor| raw(&class.iter().map(|(s, _)| f(s)).collect::<Vec<_>>());
                let (p, m, v, st) = (col(|s| &s.tensor), col(|s| &s.exp_avg), col(|s| &s.exp_avg_sq), col(|s| &s.step));
                let g = raw(&class.iter().map(|(_, g)| *g).collect::<Vec<_>>());
                let lr_ptr = lr_tensor.as_ref().map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut c_void);
                let inf_ptr = found_inf.map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut c_void);
                // SAFETY: every pointer is a live at::Tensor held by `self`, `grads`,
                // `lr_tensor` or `found_inf` for the whole call; the lists have `n` entries.
                call("AdamW step", |e, n| unsafe {
                    sys::graft_adamw_fused(
                        p.as_ptr(),
                        g.as_ptr(),
                        m.as_ptr(),
                        v.as_ptr(),
                        st.as_ptr(),
                        class.len(),
                        lr_ptr,
                        lr_value,
                        BETA1,
                        BETA2,
                        wd,
                        EPS,
                        inf_ptr,
                        e,
                        n,
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The state as named tensors: `PATH.exp_avg`, `PATH.exp_avg_sq`, `PATH.step` (i64[1]).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.slots.len());
        for s in &self.slots {
            out.push((format!("{}.exp_avg", s.path), s.exp_avg.shallow_clone()));
            out.push((format!("{}.exp_avg_sq", s.path), s.exp_avg_sq.shallow_clone()));
            let step = s.step.f_to_device(tch::Device::Cpu)?.f_double_value(&[])? as i64;
            out.push((format!("{}.step", s.path), Tensor::f_from_slice(&[step])?));
        }
        Ok(out)
    }

    /// Restore the state written by [`Self::state_tensors`].
    pub fn load_state(&mut self, f: &SafeFile) -> Result<()> {
        let mut missing = Vec::new();
        for s in &self.slots {
            for k in ["exp_avg", "exp_avg_sq", "step"] {
                if !f.entries().contains_key(&format!("{}.{k}", s.path)) {
                    missing.push(format!("{}.{k}", s.path));
                }
            }
        }
        if !missing.is_empty() {
            bail!("{} lacks the optimizer state of {} tensor(s), e.g. {}", f.path.display(), missing.len(), missing[0]);
        }
        let _guard = tch::no_grad_guard();
        for s in &mut self.slots {
            for (k, dst) in [("exp_avg", &mut s.exp_avg), ("exp_avg_sq", &mut s.exp_avg_sq)] {
                let t = to_tensor(&f.tensor(&format!("{}.{k}", s.path))?)?;
                if t.size() != dst.size() {
                    bail!("{}: `{}.{k}` is {:?}, the parameter {:?}", f.path.display(), s.path, t.size(), dst.size());
                }
                dst.f_copy_(&t.f_to_kind(dst.kind())?)?;
            }
            let step =
                to_tensor(&f.tensor(&format!("{}.step", s.path))?)?.f_to_kind(Kind::Int64)?.f_int64_value(&[0])?;
            if !(0..=1 << 24).contains(&step) {
                bail!(
                    "{}: `{}.step` is {step}, outside 0..=2^24 (steps count exactly in float32)",
                    f.path.display(),
                    s.path
                );
            }
            let _ = s.step.f_fill_(step as f64)?;
        }
        Ok(())
    }
}

/// The global L2 norm of the present gradients (`‖[‖g₁‖, ‖g₂‖, …]‖`, as PyTorch's
/// `clip_grad_norm_` computes it with `_foreach_norm`), as a 0-d tensor on the
/// gradients' device; with `max_norm`, the gradients are then scaled in place by
/// `min(1, max_norm / (norm + 1e-6))`, on the device (no host synchronisation).
/// `None` when no gradient is present.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: Option<f64>) -> Result<Option<Tensor>> {
    norm_and_clip(grads, max_norm)
}

/// The global gradient norm (see [`clip_grad_norm`]), without clipping.
pub fn global_norm(grads: &[Option<Tensor>]) -> Result<Option<Tensor>> {
    norm_and_clip(grads, None)
}

/// Both of the above: the shim scales the tensors in place only when `max_norm` is given
/// (then the caller holds them mutably).
fn norm_and_clip(grads: &[Option<Tensor>], max_norm: Option<f64>) -> Result<Option<Tensor>> {
    let present: Vec<&Tensor> = grads.iter().flatten().collect();
    if present.is_empty() {
        return Ok(None);
    }
    let ptrs = raw(&present);
    let max = max_norm.unwrap_or(0.0);
    if max_norm.is_some() && !(max.is_finite() && max > 0.0) {
        bail!("internal error: clipping to a norm of {max}");
    }
    let mut out: *mut c_void = std::ptr::null_mut();
    let _guard = tch::no_grad_guard();
    // SAFETY: the gradients are live for the call; on success the shim hands over a new
    // at::Tensor*, which tch owns (and frees) from here on.
    call("gradient norm", |e, n| unsafe { sys::graft_clip_grad_norm(ptrs.as_ptr(), ptrs.len(), max, &mut out, e, n) })?;
    if out.is_null() {
        bail!("gradient norm: the shim returned no tensor");
    }
    // SAFETY: `out` is a fresh at::Tensor* allocated with `new`, as tch's own are.
    Ok(Some(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) }))
}

/// Set the 0-d float flag `found_inf` (on the device) to 1 if any of `ts` holds a NaN or
/// an infinity; it stays 1 once set. No host synchronisation.
pub fn flag_non_finite(ts: &[&Tensor], found_inf: &Tensor) -> Result<()> {
    let ptrs = raw(ts);
    let _guard = tch::no_grad_guard();
    // SAFETY: every tensor is live for the call.
    call("non-finite check", |e, n| unsafe {
        sys::graft_flag_non_finite(ptrs.as_ptr(), ptrs.len(), found_inf.as_ptr() as *mut c_void, e, n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_matches_the_formula() {
        let w = Tensor::from_slice(&[1.0f32, -2.0, 0.5, 3.0]).reshape([2, 2]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32, 0.25]).set_requires_grad(true);
        let mut opt =
            AdamW::new(vec![("w".into(), w.shallow_clone()), ("b".into(), b.shallow_clone())], 0.1, &[], 0.01, &[])
                .unwrap();
        let g = Tensor::from_slice(&[0.1f32, 0.2, -0.3, 0.4]).reshape([2, 2]);
        opt.step(&[Some(g.copy()), None], 1.0).unwrap();
        // t = 1: m̂ = g, v̂ = g², so the step is lr·g/(|g| + ε) ≈ lr·sign(g), after decay.
        let want: Vec<f64> = [1.0, -2.0, 0.5, 3.0]
            .iter()
            .zip([0.1, 0.2, -0.3, 0.4])
            .map(|(p, gv): (&f64, f64)| p * (1.0 - 0.1 * 0.01) - 0.1 * gv / (gv.abs() + 1e-8))
            .collect();
        let got: Vec<f64> = Vec::<f64>::try_from(w.to_kind(Kind::Double).reshape([4])).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        assert!(b.equal(&Tensor::from_slice(&[0.5f32, 0.25])), "no gradient: untouched");
        let st = opt.state_tensors().unwrap();
        assert_eq!(st.len(), 6);
        assert_eq!(st[2].1.int64_value(&[0]), 1);
        assert_eq!(st[5].1.int64_value(&[0]), 0);
    }

    #[test]
    fn groups_and_their_errors() {
        let t = || Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let params = || vec![("cmr.l0".to_string(), t()), ("cls.weight".to_string(), t())];
        let opt = AdamW::new(params(), 1e-3, &[("cmr.*".into(), 1e-2)], 0.0, &[]).unwrap();
        assert_eq!(opt.groups[1].tensors, 1);
        assert_eq!(opt.groups[0].tensors, 1);
        let frozen = vec!["vit.blocks.0.w".to_string()];
        let e = AdamW::new(params(), 1e-3, &[("vit.*".into(), 1e-2)], 0.0, &frozen).err().unwrap().to_string();
        assert!(e.contains("only frozen"), "{e}");
        let e = AdamW::new(params(), 1e-3, &[("nope*".into(), 1e-2)], 0.0, &frozen).err().unwrap().to_string();
        assert!(e.contains("matches no parameter"), "{e}");
    }

    #[test]
    fn clipping_caps_the_global_norm() {
        let mut g = vec![Some(Tensor::from_slice(&[3.0f32])), None, Some(Tensor::from_slice(&[4.0f32]))];
        let n = global_norm(&g).unwrap().unwrap().double_value(&[]);
        assert!((n - 5.0).abs() < 1e-6);
        let before = clip_grad_norm(&mut g, Some(1.0)).unwrap().unwrap().double_value(&[]);
        assert!((before - 5.0).abs() < 1e-6, "the norm before clipping is returned");
        let after = global_norm(&g).unwrap().unwrap().double_value(&[]);
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        // Under the cap nothing changes, bit for bit.
        let kept = g[0].as_ref().unwrap().copy();
        clip_grad_norm(&mut g, Some(10.0)).unwrap();
        assert!(g[0].as_ref().unwrap().equal(&kept));
        assert!(clip_grad_norm(&mut [None], Some(1.0)).unwrap().is_none());
    }
}
