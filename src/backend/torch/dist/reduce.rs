//! What data-parallel training moves between ranks: the gradient buckets, the initial
//! broadcast of the trainable parameters, and the checks that every rank runs the
//! same thing (frozen weights, run signature).
//!
//! Gradients come from `autograd::grad` in graft (`Tensor::run_backward`), so DDP's
//! Reducer hooks would never fire; instead, after the last micro-batch of a step,
//! [`Buckets::reduce`] copies each gradient into a flat buffer (allocated once, at most
//! [`BUCKET_CAP`] bytes, parameters in reverse order, one buffer per dtype and
//! device), launches an asynchronous all-reduce (sum) per bucket plus one small
//! float64 tensor of statistics (which parameters had a gradient on each rank, the
//! loss), waits for all of them, divides by the world size, and hands out views of
//! the buffers as the gradients (no copy back). A parameter no rank computed a
//! gradient for stays `None`, exactly as in a single process.

use super::ffi::{Op, Work};
use super::Dist;
use crate::rng::fnv64;
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// Bucket size cap in bytes (DDP's default `bucket_cap_mb = 25`).
pub const BUCKET_CAP: usize = 25 * 1024 * 1024;

struct Member {
    /// Index into the parameter list.
    param: usize,
    offset: i64,
    numel: i64,
    shape: Vec<i64>,
}

struct Bucket {
    flat: Tensor,
    members: Vec<Member>,
}

/// The gradient buckets of a parameter list, fixed at setup (identical on every rank).
pub struct Buckets {
    buckets: Vec<Bucket>,
    stats: Tensor,
    params: usize,
    /// Bytes all-reduced per step (gradients only).
    pub bytes: usize,
    /// Wall time spent in [`Buckets::reduce`] (copies, collectives, waiting for the
    /// slowest rank), and how many calls.
    pub spent: std::time::Duration,
    pub calls: u64,
}

/// How parameters of `numel` elements × `size` bytes split into buckets of at most
/// `cap` bytes: reverse order, a new bucket when the key (dtype, device) changes or
/// the cap would be passed; a parameter larger than the cap gets a bucket of its own.
pub fn assign(sizes: &[(usize, String)], cap: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut open: Vec<(String, usize, usize)> = Vec::new(); // (key, bucket index, bytes)
    for i in (0..sizes.len()).rev() {
        let (bytes, key) = (&sizes[i].0, &sizes[i].1);
        match open.iter_mut().find(|(k, _, _)| k == key) {
            Some((_, b, used)) if *used + bytes <= cap || *used == 0 => {
                out[*b].push(i);
                *used += bytes;
            }
            Some(slot) => {
                out.push(vec![i]);
                *slot = (key.clone(), out.len() - 1, *bytes);
            }
            None => {
                out.push(vec![i]);
                open.push((key.clone(), out.len() - 1, *bytes));
            }
        }
    }
    out
}

impl Buckets {
    pub fn new(params: &[Tensor], cap: usize) -> Result<Buckets> {
        let sizes: Vec<(usize, String)> = params
            .iter()
            .map(|p| Ok((p.numel() * p.f_kind()?.elt_size_in_bytes(), format!("{:?}/{:?}", p.f_kind()?, p.device()))))
            .collect::<Result<_>>()?;
        let mut buckets = Vec::new();
        let mut bytes = 0;
        for idx in assign(&sizes, cap) {
            let first = &params[idx[0]];
            let mut members = Vec::new();
            let mut offset = 0i64;
            for i in idx {
                let numel = params[i].numel() as i64;
                members.push(Member { param: i, offset, numel, shape: params[i].size() });
                offset += numel;
                bytes += sizes[i].0;
            }
            let flat = Tensor::f_zeros([offset], (first.f_kind()?, first.device()))?;
            buckets.push(Bucket { flat, members });
        }
        let device = params.first().map_or(Device::Cpu, |p| p.device());
        let stats = Tensor::f_zeros([params.len() as i64 + 1], (Kind::Double, device))?;
        Ok(Buckets { buckets, stats, params: params.len(), bytes, spent: Default::default(), calls: 0 })
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// All-reduce the gradients of one optimizer step and the loss: returns the mean
    /// gradients (views of the buckets, valid until the next call) and the mean loss.
    pub fn reduce(&mut self, dist: &Dist, grads: Vec<Option<Tensor>>, loss: f64) -> Result<(Vec<Option<Tensor>>, f64)> {
        if grads.len() != self.params {
            bail!("internal error: {} gradients for {} parameters", grads.len(), self.params);
        }
        let t0 = std::time::Instant::now();
        let _guard = tch::no_grad_guard();
        for b in &mut self.buckets {
            for m in &b.members {
                let mut view = b.flat.f_narrow(0, m.offset, m.numel)?;
                match &grads[m.param] {
                    Some(g) => view.f_copy_(&g.f_reshape([-1])?)?,
                    None => {
                        let _ = view.f_zero_()?;
                    }
                }
            }
        }
        let mut host: Vec<f64> = grads.iter().map(|g| if g.is_some() { 1.0 } else { 0.0 }).collect();
        host.push(loss);
        drop(grads);
        self.stats.f_copy_(&Tensor::f_from_slice(&host)?)?;
        let what = "all-reducing the gradients";
        let mut works: Vec<Work> = Vec::with_capacity(self.buckets.len() + 1);
        for b in &mut self.buckets {
            works.push(dist.group().allreduce(&mut b.flat, Op::Sum).map_err(|e| dist.explain(what, e))?);
        }
        works.push(dist.group().allreduce(&mut self.stats, Op::Sum).map_err(|e| dist.explain(what, e))?);
        let mut failed = None;
        for w in works {
            if let Err(e) = w.wait() {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            return Err(dist.explain(what, e));
        }
        let world = dist.world() as f64;
        let stats = Vec::<f64>::try_from(self.stats.f_to_device(Device::Cpu)?)?;
        let mut out: Vec<Option<Tensor>> = (0..self.params).map(|_| None).collect();
        for b in &mut self.buckets {
            let _ = b.flat.f_div_scalar_(world)?;
            for m in &b.members {
                if stats[m.param] > 0.0 {
                    out[m.param] = Some(b.flat.f_narrow(0, m.offset, m.numel)?.f_view(m.shape.as_slice())?);
                }
            }
        }
        self.spent += t0.elapsed();
        self.calls += 1;
        Ok((out, stats[self.params] / world))
    }

    /// Give every rank rank 0's values of `params` (through the buckets).
    pub fn broadcast(&mut self, dist: &Dist, params: &[Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for b in &mut self.buckets {
            for m in &b.members {
                b.flat.f_narrow(0, m.offset, m.numel)?.f_copy_(&params[m.param].f_reshape([-1])?)?;
            }
            dist.group().broadcast(&b.flat, 0).map_err(|e| dist.explain("broadcasting the trainable parameters", e))?;
            for m in &b.members {
                let mut p = params[m.param].shallow_clone();
                p.f_copy_(&b.flat.f_narrow(0, m.offset, m.numel)?.f_view(m.shape.as_slice())?)?;
            }
        }
        Ok(())
    }
}

/// Sum `values` over all ranks (float64, on `device`: the group's device).
pub fn sum(dist: &Dist, values: &[f64], device: Device, what: &str) -> Result<Vec<f64>> {
    let mut t = Tensor::f_from_slice(values)?.f_to_device(device)?;
    let w = dist.group().allreduce(&mut t, Op::Sum).map_err(|e| dist.explain(what, e))?;
    w.wait().map_err(|e| dist.explain(what, e))?;
    Ok(Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?)?)
}

/// A content hash of a tensor's values (its bytes on the host, with dtype and shape).
pub fn fingerprint(t: &Tensor) -> Result<String> {
    let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let kind = t.f_kind()?;
    let mut data = vec![0u8; t.numel() * kind.elt_size_in_bytes()];
    if !data.is_empty() {
        t.f_copy_data_u8(&mut data, t.numel())?;
    }
    let head = format!("{kind:?}{:?}", t.size());
    Ok(fnv64(&[head.as_bytes(), &data]))
}

/// Check that every rank has the same `items` (name, value) as rank 0; the error (the
/// same on every rank) names the first difference. Exchanged through the store under
/// `key`, so it needs no collective and works before the parameters exist.
pub fn check_same(dist: &Dist, key: &str, what: &str, items: &[(String, String)]) -> Result<()> {
    let text = serde_json::to_string(items)?;
    dist.store().set(&format!("{key}/{}", dist.rank()), text.as_bytes())?;
    let keys: Vec<String> = (0..dist.world()).map(|r| format!("{key}/{r}")).collect();
    dist.store().wait(&keys, dist.timeout).map_err(|e| dist.explain(&format!("exchanging {what}"), e))?;
    let lists: Vec<Vec<(String, String)>> =
        keys.iter().map(|k| Ok(serde_json::from_slice(&dist.store().get(k)?)?)).collect::<Result<_>>()?;
    let base = &lists[0];
    for (r, l) in lists.iter().enumerate().skip(1) {
        if l == base {
            continue;
        }
        for i in 0..base.len().max(l.len()) {
            let (a, b) = (base.get(i), l.get(i));
            if a != b {
                let show =
                    |x: Option<&(String, String)>| x.map_or("nothing".to_string(), |(n, v)| format!("`{n}` = {v}"));
                bail!(
                    "rank {r} and rank 0 differ in {what}: rank 0 has {}, rank {r} has {}\n  hint: every rank must run the same spec, data, weights files and arguments",
                    show(a),
                    show(b)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_parameters_in_reverse_order_up_to_the_cap() {
        let f = |n: usize| (n, "f32/cpu".to_string());
        assert_eq!(assign(&[f(4), f(4), f(4)], 8), vec![vec![2, 1], vec![0]]);
        // Larger than the cap: a bucket of its own.
        assert_eq!(assign(&[f(4), f(20), f(4)], 8), vec![vec![2], vec![1], vec![0]]);
        // Another dtype: another bucket, interleaving kept per key.
        let g = |n: usize| (n, "bf16/cpu".to_string());
        assert_eq!(assign(&[f(4), g(2), f(4)], 100), vec![vec![2, 0], vec![1]]);
        assert!(assign(&[], 8).is_empty());
    }

    #[test]
    fn fingerprints_see_values_dtype_and_shape() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
        assert_eq!(fingerprint(&a).unwrap(), fingerprint(&a.copy()).unwrap());
        assert_ne!(fingerprint(&a).unwrap(), fingerprint(&a.reshape([2, 2])).unwrap());
        assert_ne!(fingerprint(&a).unwrap(), fingerprint(&(&a + 1e-6)).unwrap());
        assert_ne!(fingerprint(&a).unwrap(), fingerprint(&a.to_kind(Kind::Double)).unwrap());
    }
}
