//! The data-parallel side of LibTorch training (DDP semantics on c10d, see
//! [`crate::backend::torch::dist`]): joining the run, the checks before the first step,
//! and the replica check at each checkpoint.
//!
//! `--batch` is per rank; the global batch is `--batch` × world size. Every rank loads
//! the model the same way, then: the run's settings and every frozen tensor's
//! fingerprint are compared across ranks (a mismatch is refused, naming the first
//! difference), rank 0's trainable tensors are broadcast, and each step's gradients
//! are all-reduced and averaged ([`Buckets::reduce`]) before the identical AdamW step
//! on every rank. At each checkpoint the ranks compare their trainable tensors' hashes
//! (they must be bitwise equal); rank 0 alone writes the run directory. Validation
//! sums its tallies over the ranks ([`crate::backend::train::Training::sum`]).

use super::model::Model;
use crate::backend::torch::dist::reduce::{check_same, fingerprint, Buckets, BUCKET_CAP};
use crate::backend::torch::dist::{BackendArg, Dist, Env};
use anyhow::{anyhow, bail, Result};
use std::time::Duration;
use tch::{Device, Tensor};

/// How a data-parallel run is joined (`--dist-backend`, `--dist-timeout`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistOptions {
    /// The collective backend; `None`: NCCL on CUDA, Gloo on the CPU.
    pub backend: Option<BackendArg>,
    /// Seconds the rendezvous and each collective wait for the other ranks.
    pub timeout_s: f64,
    /// `--device cuda:N`: every rank on that one GPU (otherwise rank r takes
    /// `cuda:LOCAL_RANK`).
    pub pinned: bool,
}

/// Join the data-parallel run `env` describes (torchrun's variables, read by the
/// caller), if any. Returns the device this rank computes on (CUDA:
/// `cuda:LOCAL_RANK`). One rank (`WORLD_SIZE=1`) is a plain run unless `--dist-backend`
/// asks for a group of one.
pub fn join(env: Option<Env>, device: Device, a: DistOptions) -> Result<(Option<Dist>, Device)> {
    let env = env.filter(|e| e.world > 1 || a.backend.is_some());
    let Some(env) = env else {
        if a.backend.is_some() {
            bail!("--dist-backend needs a data-parallel launch (torchrun, or WORLD_SIZE, RANK, MASTER_ADDR and MASTER_PORT set)");
        }
        return Ok((None, device));
    };
    crate::bounds::check_timeout(a.timeout_s).map_err(|e| anyhow!("--dist-timeout {e}"))?;
    let (device, cuda) = match device {
        // `--device cuda:N`: every rank on that GPU.
        Device::Cuda(n) if a.pinned => (Device::Cuda(n), Some(n)),
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
    let backend = a.backend.unwrap_or(if cuda.is_some() { BackendArg::Nccl } else { BackendArg::Gloo });
    if backend == BackendArg::Nccl && cuda.is_none() {
        bail!("--dist-backend nccl needs CUDA tensors, but this run is on the CPU (pass --device cuda, or --dist-backend gloo)");
    }
    if backend == BackendArg::Nccl && a.pinned && env.world > 1 {
        bail!(
            "--dist-backend nccl with --device {}: NCCL needs one GPU per rank, and {} ranks would share it (use \
             --device cuda to give rank r the GPU LOCAL_RANK, or --dist-backend gloo)",
            device_name(device),
            env.world
        );
    }
    let timeout =
        Duration::try_from_secs_f64(a.timeout_s).map_err(|e| anyhow!("--dist-timeout {}: {e}", a.timeout_s))?;
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
    crate::rng::fnv64(&parts)
}
