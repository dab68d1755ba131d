//! The data-parallel side of `graft train` (DDP semantics on c10d, see
//! [`crate::backend::torch::dist`]): joining the run, the checks before the first step,
//! the sharded validation, and the replica check at each checkpoint.
//!
//! `--batch` is per rank; the global batch is `--batch` × world size. Every rank loads
//! the model the same way, then: the run's settings and every frozen tensor's
//! fingerprint are compared across ranks (a mismatch is refused, naming the first
//! difference), rank 0's trainable tensors are broadcast, and each step's gradients
//! are all-reduced and averaged ([`Buckets::reduce`]) before the identical AdamW step
//! on every rank. At each checkpoint the ranks compare their trainable tensors' hashes
//! (they must be bitwise equal); rank 0 alone writes the run directory.

use super::model::Model;
use super::TrainArgs;
use crate::backend::torch::dist::reduce::{check_same, fingerprint, sum, Buckets, BUCKET_CAP};
use crate::backend::torch::dist::{BackendArg, Dist, Env};
use crate::data::Dataset;
use crate::evaluate::{report, tally, Evaluated, Report, Tally};
use anyhow::{bail, Result};
use std::time::Duration;
use tch::{Device, Tensor};

/// Join the data-parallel run described by the environment (torchrun's variables), if
/// any. Returns the device this rank computes on (CUDA: `cuda:LOCAL_RANK`). One rank
/// (`WORLD_SIZE=1`) is a plain run unless `--dist-backend` asks for a group of one.
pub fn join(a: &TrainArgs, device: Device) -> Result<(Option<Dist>, Device)> {
    let env = Env::from_env()?.filter(|e| e.world > 1 || a.dist_backend.is_some());
    let Some(env) = env else {
        if a.dist_backend.is_some() {
            bail!("--dist-backend needs a data-parallel launch (torchrun, or WORLD_SIZE, RANK, MASTER_ADDR and MASTER_PORT set)");
        }
        return Ok((None, device));
    };
    if !(a.dist_timeout.is_finite() && a.dist_timeout > 0.0) {
        bail!("--dist-timeout must be a number of seconds > 0");
    }
    let (device, cuda) = match device {
        // `--device cuda:N`: every rank on that GPU.
        Device::Cuda(n) if a.device.pinned() => (Device::Cuda(n), Some(n)),
        Device::Cuda(_) => {
            let visible = tch::Cuda::device_count().max(0) as usize;
            if env.local_rank >= visible {
                bail!(
                    "rank {}: LOCAL_RANK is {} but this node has {visible} visible CUDA device(s): launch at most {visible} \
                     rank(s) per node (torchrun --nproc-per-node {visible}), or pass --device cuda:N to put every rank on \
                     one GPU (Gloo only: NCCL needs a GPU per rank)",
                    env.rank,
                    env.local_rank
                );
            }
            (Device::Cuda(env.local_rank), Some(env.local_rank))
        }
        other => (other, None),
    };
    let backend = a.dist_backend.unwrap_or(if cuda.is_some() { BackendArg::Nccl } else { BackendArg::Gloo });
    if backend == BackendArg::Nccl && cuda.is_none() {
        bail!("--dist-backend nccl needs CUDA tensors, but this run is on the CPU (pass --device cuda, or --dist-backend gloo)");
    }
    if backend == BackendArg::Nccl && a.device.pinned() && env.world > 1 {
        bail!(
            "--dist-backend nccl with --device {}: NCCL needs one GPU per rank, and {} ranks would share it (use \
             --device cuda to give rank r the GPU LOCAL_RANK, or --dist-backend gloo)",
            device_name(device),
            env.world
        );
    }
    let timeout = Duration::from_secs_f64(a.dist_timeout);
    Ok((Some(Dist::init(env, backend, timeout, cuda)?), device))
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

/// Before the first step: the same settings and frozen weights everywhere, then rank
/// 0's trainable tensors everywhere. Returns the gradient buckets.
pub fn prepare(dist: &Dist, model: &Model, params: &[Tensor], settings: Vec<(String, String)>) -> Result<Buckets> {
    check_same(dist, "settings", "the run's settings", &settings)?;
    let frozen = model
        .params()
        .filter(|(p, _)| !p.trainable)
        .map(|(p, t)| Ok((p.path.clone(), fingerprint(t)?)))
        .collect::<Result<Vec<_>>>()?;
    check_same(dist, "frozen", "the frozen weights (fingerprints)", &frozen)?;
    let mut buckets = Buckets::new(params, BUCKET_CAP)?;
    buckets.broadcast(dist, params)?;
    Ok(buckets)
}

/// Check that every rank holds bitwise the same trainable tensors after `step`;
/// returns their combined fingerprint.
pub fn check_replicas(dist: &Dist, step: u64, trainable: &[(String, Tensor)]) -> Result<String> {
    let items = trainable.iter().map(|(n, t)| Ok((n.clone(), fingerprint(t)?))).collect::<Result<Vec<_>>>()?;
    check_same(
        dist,
        &format!("replica/{step}"),
        &format!("the trainable tensors after step {step} (the replicas diverged)"),
        &items,
    )?;
    Ok(combined(&items))
}

/// One hash over (name, fingerprint) pairs, in name order.
pub fn combined(items: &[(String, String)]) -> String {
    let mut items: Vec<&(String, String)> = items.iter().collect();
    items.sort();
    let parts: Vec<&[u8]> = items.iter().flat_map(|(n, f)| [n.as_bytes(), f.as_bytes()]).collect();
    super::checkpoint::fnv64(&parts)
}

/// Validate on this rank's share of the batches and sum the tallies over all ranks.
pub fn validate(dist: &Dist, m: Evaluated<'_>, ds: &Dataset, batch: usize, device: Device) -> Result<Report> {
    let model = m.model.to_string();
    let t = tally(m, ds, batch, &[], (dist.rank(), dist.world()))?;
    let classes = t.confusion.len();
    let mut flat: Vec<f64> = t.confusion.iter().flatten().map(|&c| c as f64).collect();
    flat.extend([t.loss_sum, t.samples as f64]);
    let device = if dist.backend == BackendArg::Nccl { device } else { Device::Cpu };
    let s = sum(dist, &flat, device, "reducing the validation metrics")?;
    let confusion =
        (0..classes).map(|i| s[i * classes..(i + 1) * classes].iter().map(|&c| c as u64).collect()).collect();
    let total = Tally { confusion, loss_sum: s[classes * classes], samples: s[classes * classes + 1] as u64 };
    Ok(report(&model, ds, &[], total)?)
}
