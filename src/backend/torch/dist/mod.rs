//! Data-parallel training on PyTorch's c10d (feature `distributed`): the launch
//! environment, the rendezvous, the process group, and errors that name the rank
//! that failed.
//!
//! ```text
//! torchrun / hand-set env ─Env::from_env─▶ Env (rank, world, store address, restart)
//!   ─Dist::init─▶ TCPStore (+ PrefixStore "graft/<restart>/") ─▶ join keys ─▶ ProcessGroupGloo | NCCL
//!   heartbeat thread: its own store connection, `alive/<rank>` += 1 every 250 ms
//! ```
//!
//! Every wait of the rendezvous is bounded by `--dist-timeout`, the store
//! connection (and its handshake) of every rank included.
//!
//! - [`ffi`]: the C++ shim's handles (store, group, async work).
//! - [`reduce`]: gradient buckets (flat buffers, reverse order, async all-reduce),
//!   the parameter broadcast and the cross-rank checks.
//!
//! Without torchrun's variables (`WORLD_SIZE` unset or 1) nothing here runs.
//! When a collective fails, the error says which rank is at fault, from the store:
//! a rank that failed publishes `error/<rank>` before it exits; a rank whose
//! heartbeat stopped is gone; a rank whose `step/<rank>` lags is stuck.

pub mod ffi;
pub mod reduce;

use anyhow::{anyhow, bail, Result};
use ffi::{Group, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `--dist-timeout` default: every collective and the rendezvous.
pub const DEFAULT_TIMEOUT_S: u64 = 300;
/// How often a rank's heartbeat ticks, and how long a diagnosis watches them.
const BEAT: Duration = Duration::from_millis(250);
const WATCH: Duration = Duration::from_millis(1500);

/// `--dist-backend`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Gloo,
    Nccl,
}

impl BackendArg {
    pub fn name(self) -> &'static str {
        match self {
            BackendArg::Gloo => "gloo",
            BackendArg::Nccl => "nccl",
        }
    }
}

/// What torchrun (or a user starting ranks by hand) puts in the environment.
#[derive(Clone, Debug, PartialEq)]
pub struct Env {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// `TORCHELASTIC_RESTART_COUNT`: keys are namespaced by it (the agent's store
    /// outlives a restart).
    pub restart: u64,
    /// `TORCHELASTIC_USE_AGENT_STORE=True`: torchrun's agent serves the store, every
    /// rank is a client. Otherwise rank 0 serves it.
    pub agent_store: bool,
}

impl Env {
    /// `None` without `WORLD_SIZE`: a single-process run. (With `WORLD_SIZE=1` the
    /// caller decides: a group of one only when a backend is asked for.)
    pub fn from_env() -> Result<Option<Env>> {
        Env::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Env>> {
        let Some(world) = get("WORLD_SIZE") else { return Ok(None) };
        let num = |k: &str, v: &str| -> Result<u64> {
            v.trim().parse::<u64>().map_err(|_| anyhow!("{k}={v:?}: expected a non-negative integer"))
        };
        let world = num("WORLD_SIZE", &world)? as usize;
        if world == 0 {
            bail!("WORLD_SIZE=0: expected at least 1");
        }
        let need = |k: &str| {
            get(k).ok_or_else(|| {
                anyhow!("WORLD_SIZE={world} but {k} is not set: launch with torchrun, or set RANK, MASTER_ADDR and MASTER_PORT for every rank")
            })
        };
        let rank = num("RANK", &need("RANK")?)? as usize;
        if rank >= world {
            bail!("RANK={rank} is not below WORLD_SIZE={world}");
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", &v)? as usize,
            None => rank,
        };
        let port = num("MASTER_PORT", &need("MASTER_PORT")?)?;
        let master_port =
            u16::try_from(port).ok().filter(|&p| p > 0).ok_or_else(|| anyhow!("MASTER_PORT={port}: not a TCP port"))?;
        let restart = match get("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => num("TORCHELASTIC_RESTART_COUNT", &v)?,
            None => 0,
        };
        let agent_store =
            get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        Ok(Some(Env { rank, world, local_rank, master_addr: need("MASTER_ADDR")?, master_port, restart, agent_store }))
    }

    fn store_owner(&self) -> &'static str {
        if self.agent_store {
            "torchrun's agent"
        } else {
            "rank 0"
        }
    }
}

/// This process's place in a data-parallel run.
pub struct Dist {
    pub env: Env,
    pub backend: BackendArg,
    pub timeout: Duration,
    store: Store,
    group: Group,
    stop: Arc<AtomicBool>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Dist {
    /// Rendezvous with the other ranks and create the process group. Fails within
    /// `timeout` when a rank never joins, naming it.
    pub fn init(env: Env, backend: BackendArg, timeout: Duration, cuda_device: Option<usize>) -> Result<Dist> {
        if !ffi::BUILT {
            bail!("WORLD_SIZE={}: {}", env.world, ffi::NOT_BUILT);
        }
        if backend == BackendArg::Nccl && !ffi::has_nccl() {
            bail!("--dist-backend nccl: this graft was built without the `nccl` feature (rebuild with `--features nccl`, or pass --dist-backend gloo)");
        }
        let prefix = format!("graft/{}", env.restart);
        let serve = env.rank == 0 && !env.agent_store;
        let at = format!("{}:{}", env.master_addr, env.master_port);
        let store = connect_within(&env, serve, timeout, &prefix).map_err(|e| {
                if serve {
                    anyhow!("rank 0 could not serve the rendezvous store on {at}: {e}\n  hint: is MASTER_PORT free?")
                } else {
                    anyhow!(
                        "rank {} could not reach the rendezvous store at {at} (MASTER_ADDR:MASTER_PORT, served by {}) within {}: {e}",
                        env.rank,
                        env.store_owner(),
                        secs(timeout)
                    )
                }
            })?;
        store.set(&format!("join/{}", env.rank), std::process::id().to_string().as_bytes())?;
        let joins: Vec<String> = (0..env.world).map(|r| format!("join/{r}")).collect();
        if let Err(e) = store.wait(&joins, timeout) {
            let missing: Vec<String> = (0..env.world)
                .filter(|r| !store.check(&format!("join/{r}")).unwrap_or(false))
                .map(|r| format!("rank {r}"))
                .collect();
            if missing.is_empty() {
                bail!("rendezvous at {at} failed: {e}");
            }
            bail!(
                "rendezvous at {at} failed: {} did not join within {} (WORLD_SIZE={}); {e}",
                missing.join(", "),
                secs(timeout),
                env.world
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = spawn_heartbeat(&env, &prefix, timeout, stop.clone())?;
        let group = Group::new(&store, backend.name(), env.rank, env.world, timeout, cuda_device).map_err(|e| {
            anyhow!("creating the {} process group (rank {} of {}): {e}", backend.name(), env.rank, env.world)
        })?;
        let d = Dist { env, backend, timeout, store, group, stop, heartbeat: Some(heartbeat) };
        Ok(d)
    }

    pub fn rank(&self) -> usize {
        self.env.rank
    }

    pub fn world(&self) -> usize {
        self.env.world
    }

    pub fn is_main(&self) -> bool {
        self.env.rank == 0
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Record where this rank is (for diagnosing a stuck rank).
    pub fn mark_step(&self, step: u64) -> Result<()> {
        self.store.set(&format!("step/{}", self.env.rank), step.to_string().as_bytes())
    }

    /// Tell the other ranks why this one stops (best effort: the store may be gone).
    pub fn publish_failure(&self, msg: &str) {
        let _ = self.store.set(&format!("error/{}", self.env.rank), msg.as_bytes());
    }

    /// Barrier over all ranks.
    pub fn barrier(&self, what: &str) -> Result<()> {
        self.group.barrier().map_err(|e| self.explain(what, e))
    }

    /// Turn a failed collective into an error that names the rank at fault.
    pub fn explain(&self, what: &str, err: anyhow::Error) -> anyhow::Error {
        let me = self.env.rank;
        let others: Vec<usize> = (0..self.env.world).filter(|&r| r != me).collect();
        let read = |k: &str| -> Result<Option<Vec<u8>>> {
            if self.store.check(k)? {
                Ok(Some(self.store.get(k)?))
            } else {
                Ok(None)
            }
        };
        let cause = (|| -> Result<String> {
            for &r in &others {
                if let Some(m) = read(&format!("error/{r}"))? {
                    return Ok(format!("rank {r} failed: {}", String::from_utf8_lossy(&m)));
                }
            }
            let beats = |r: usize| self.store.add(&format!("alive/{r}"), 0);
            let before: Vec<i64> = others.iter().map(|&r| beats(r)).collect::<Result<_>>()?;
            std::thread::sleep(WATCH);
            let mut dead = Vec::new();
            for (i, &r) in others.iter().enumerate() {
                if beats(r)? == before[i] {
                    dead.push(format!("rank {r}"));
                }
            }
            if !dead.is_empty() {
                return Ok(format!(
                    "{} stopped (no heartbeat for {:.1} s: the process exited, was killed or is frozen)",
                    dead.join(", "),
                    WATCH.as_secs_f64()
                ));
            }
            let step = |r: usize| -> Result<Option<u64>> {
                Ok(read(&format!("step/{r}"))?.and_then(|v| String::from_utf8_lossy(&v).parse().ok()))
            };
            let mine = step(me)?;
            let mut behind = Vec::new();
            for &r in &others {
                let s = step(r)?;
                if s < mine {
                    behind.push(format!("rank {r} (at step {})", s.map_or("none".into(), |s| s.to_string())));
                }
            }
            if !behind.is_empty() {
                return Ok(format!("{} did not reach step {} in time: stuck", behind.join(", "), mine.unwrap_or(0)));
            }
            Ok("every other rank is alive; the network between them failed".into())
        })()
        .unwrap_or_else(|e| {
            if me != 0 && !self.env.agent_store {
                format!("rank 0 is gone (the store it served is unreachable: {e})")
            } else {
                format!("the rendezvous store is unreachable ({e})")
            }
        });
        anyhow!("{what} failed on rank {me} of {}: {cause}\n  c10d: {err}", self.env.world)
    }
}

impl Drop for Dist {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// [`Store::connect`], given up after `timeout` whatever c10d does: its client
/// connects, then waits for the server's answer to a ping without a deadline of its
/// own, so a listener on MASTER_PORT that never answers would hold a rank for ever.
/// The connection runs on a thread of its own; past the timeout it is abandoned (its
/// store is freed if it ever completes); the callers' errors name the address.
fn connect_within(env: &Env, serve: bool, timeout: Duration, prefix: &str) -> Result<Store> {
    let (addr, port, world, pre) = (env.master_addr.clone(), env.master_port, env.world, prefix.to_string());
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("graft-store-connect".into())
        .spawn(move || {
            // A receiver that gave up drops the store here.
            let _ = tx.send(Store::connect(&addr, port, serve, world, timeout, &pre));
        })
        .map_err(|e| anyhow!("starting the store connection: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => bail!(
            "no answer within {}: {} is not serving the store there, or another service holds MASTER_PORT and never answers",
            secs(timeout),
            env.store_owner()
        ),
    }
}

/// Tick `alive/<rank>` on a connection of its own until `stop`; quits quietly when the
/// store goes away (the main thread reports that).
fn spawn_heartbeat(
    env: &Env,
    prefix: &str,
    timeout: Duration,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let s = connect_within(env, false, timeout, prefix).map_err(|e| {
        anyhow!(
            "rank {}: the heartbeat's connection to {}:{} (MASTER_ADDR:MASTER_PORT): {e}",
            env.rank,
            env.master_addr,
            env.master_port
        )
    })?;
    let key = format!("alive/{}", env.rank);
    s.add(&key, 1)?;
    Ok(std::thread::spawn(move || {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if next.elapsed() >= BEAT {
                if s.add(&key, 1).is_err() {
                    return;
                }
                next = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<Env>> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn no_world_size_is_a_single_process_run() {
        assert_eq!(env(&[]).unwrap(), None);
        assert!(env(&[("WORLD_SIZE", "0")]).is_err());
    }

    #[test]
    fn torchrun_variables_are_read() {
        let e = env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world, e.local_rank, e.restart, e.agent_store), (3, 4, 1, 2, true));
        assert_eq!((e.master_addr.as_str(), e.master_port), ("node0", 29500));
    }

    #[test]
    fn missing_or_bad_variables_are_named() {
        let err = env(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "x")]).unwrap_err().to_string();
        assert!(err.contains("MASTER_PORT is not set"), "{err}");
        let err = env(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "x"), ("MASTER_PORT", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RANK=2 is not below WORLD_SIZE=2"), "{err}");
        let err = env(&[("WORLD_SIZE", "two")]).unwrap_err().to_string();
        assert!(err.contains("WORLD_SIZE=\"two\""), "{err}");
    }
}
