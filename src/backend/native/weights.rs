//! The native backend's parameters: each widened to f32 once at `prepare`, then held
//! plain, packed for the linear layers' kernel ([`Packed`]), or both.
//!
//! A parameter read only as a packed weight is held packed only. Packing happens the
//! first time a program uses the weight, and each plain copy is released as soon as
//! its packed form exists, so at most one weight is held twice at any time (the peak
//! memory is about one copy of the parameters). The weights packed for one program
//! share one mapping ([`SlabBuilder`]: huge pages where the system gives them). A host
//! tensor is dropped as soon as it is widened.

use super::math::SimdLevel;
use super::packed::{self, Packed, SlabBuilder};
use super::program::{OutVal, Program, Res, Step, Store, View};
use crate::backend::alloc::release;
use crate::backend::BackendError;
use crate::ir::DType;
use crate::tensor::HostTensor;

/// Every parameter of an executable, plain or packed.
pub(crate) struct Weights {
    /// Per parameter: its values, or empty when it is held packed only.
    pub params: Vec<Vec<f32>>,
    /// Per parameter: the packed form of a linear layer's weight, made the first time
    /// a program uses it and shared by every program after.
    pub packed: Vec<Option<Packed>>,
    /// Per parameter: whether some program reads it other than as a packed weight
    /// (then its plain copy is kept).
    plain: Vec<bool>,
}

impl Weights {
    /// The host tensors widened to f32, each dropped once widened.
    pub fn new(params: Vec<HostTensor>) -> Weights {
        let params: Vec<Vec<f32>> = params.into_iter().map(widen).collect();
        let packed = params.iter().map(|_| None).collect();
        let plain = vec![false; params.len()];
        Weights { params, packed, plain }
    }

    /// Bytes held in plain form (f32).
    pub fn param_bytes(&self) -> usize {
        self.params.iter().map(|p| p.len() * 4).sum()
    }

    /// Bytes of the packed weights.
    pub fn packed_bytes(&self) -> usize {
        self.packed.iter().flatten().map(Packed::bytes).sum()
    }

    /// Pack the weights of `prog`'s linear layers not packed yet: whole parameters
    /// used as a `[n, k]` weight (a convolution's as `[out, patch]`). Nothing is packed
    /// where the kernels' level has no packed kernel. A parameter that no program so
    /// far reads other than as a packed weight is then held packed only: its plain
    /// copy is released as soon as its packed form exists, so at most one weight is
    /// held twice at a time. One that a new program reads plainly is unpacked back
    /// first.
    pub fn pack(&mut self, prog: &Program, simd: SimdLevel) -> Result<(), BackendError> {
        if !packed::available(simd) {
            return Ok(());
        }
        // The `(n, k)` each parameter is packed at: the first use that fits decides.
        let mut shape: Vec<Option<(usize, usize)>> =
            self.packed.iter().map(|pk| pk.as_ref().map(|pk| (pk.n, pk.k))).collect();
        for s in &prog.steps {
            let Some((p, n, k)) = s.step.packable_weight() else { continue };
            if shape[p].is_none() && self.params[p].len() == n * k {
                shape[p] = Some((n, k));
            }
        }
        let mut plainly = Vec::new();
        for s in &prog.steps {
            // The weight this step reads packed; a parameter it also reads as its input
            // or bias (aliased) is read plainly too.
            let packed_w = s
                .step
                .packable_weight()
                .filter(|&(p, n, k)| shape[p] == Some((n, k)))
                .map(|(p, _, _)| p)
                .filter(|&p| match &s.step {
                    Step::Linear { x, bias, .. } => std::iter::once(x).chain(bias).all(|v| v.store != Store::Param(p)),
                    _ => false,
                });
            for r in &s.access.reads {
                match *r {
                    Res::Param(p) if Some(p) != packed_w => plainly.push(p),
                    _ => {}
                }
            }
        }
        for (_, out) in &prog.outputs {
            if let OutVal::Float(View { store: Store::Param(p), .. }) = out {
                plainly.push(*p);
            }
        }
        for p in plainly {
            self.read_plainly(p)?;
        }
        let todo: Vec<(usize, (usize, usize))> = shape
            .into_iter()
            .enumerate()
            .filter_map(|(p, s)| s.filter(|_| self.packed[p].is_none()).map(|s| (p, s)))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let mut slab = SlabBuilder::new(&todo.iter().map(|&(_, s)| s).collect::<Vec<_>>())?;
        for (i, &(p, _)) in todo.iter().enumerate() {
            slab.fill(i, &self.params[p]);
            if !self.plain[p] {
                release(std::mem::take(&mut self.params[p]));
            }
        }
        for ((p, _), pk) in todo.into_iter().zip(slab.finish()) {
            self.packed[p] = Some(pk);
        }
        Ok(())
    }

    /// Mark parameter `p` as read plainly by some program, unpacking it if its plain
    /// copy was released.
    pub fn read_plainly(&mut self, p: usize) -> Result<(), BackendError> {
        self.plain[p] = true;
        if let (true, Some(pk)) = (self.params[p].is_empty(), &self.packed[p]) {
            self.params[p] = pk.unpack()?;
        }
        Ok(())
    }
}

/// A parameter's values as f32 (exact for every float dtype; 16-bit floats are
/// widened directly, with no f64 copy of the tensor in between).
fn widen(t: HostTensor) -> Vec<f32> {
    let c = |n: usize| t.data.chunks_exact(n);
    match t.dtype {
        DType::F32 => c(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        DType::BF16 => c(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        DType::F16 => c(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => t.to_f64().into_iter().map(|v| v as f32).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_float_dtype_widens_to_the_value_its_f64_reading_rounds_to() {
        let vals =
            [0.0, -0.0, 1.5, -3.25e-5, 6.1e-5, 65504.0, 1e30, -7.0e-8, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
        let bytes = |f: &dyn Fn(f64) -> Vec<u8>| vals.iter().flat_map(|&v| f(v)).collect::<Vec<u8>>();
        let tensors = [
            (DType::F32, bytes(&|v| (v as f32).to_le_bytes().to_vec())),
            (DType::F64, bytes(&|v| v.to_le_bytes().to_vec())),
            (DType::BF16, bytes(&|v| half::bf16::from_f64(v).to_le_bytes().to_vec())),
            (DType::F16, bytes(&|v| half::f16::from_f64(v).to_le_bytes().to_vec())),
        ];
        for (dtype, data) in tensors {
            let t = HostTensor { dtype, shape: vec![vals.len() as i64], data };
            let want: Vec<u32> = t.to_f64().into_iter().map(|v| (v as f32).to_bits()).collect();
            let got: Vec<u32> = widen(t).into_iter().map(f32::to_bits).collect();
            assert_eq!(got, want, "{dtype:?}");
        }
    }
}
