//! The training batch stream: epoch after epoch of [`Dataset::batches`], read ahead on
//! a thread, starting anywhere (an epoch and a position in it) for an exact resume.
//!
//! Epoch `e`'s order is `batches(batch, seed, e, drop_last)`, a pure function of the
//! dataset and those numbers, so skipping the first `position` batches of the epoch a
//! run stopped in reproduces the rest of the stream bit for bit. Skipped batches are
//! read but not computed on.
//!
//! Data-parallel runs ([`Feed::start_shard`]) read the stream of *global* batches
//! (per-rank batch × world size) and keep their rank's strided share of each, so every
//! rank takes the same number of steps, the shares are disjoint, and together they are
//! exactly the batches a single process with the global batch size sees.

use crate::data::{Batch, DataError, Dataset};
use anyhow::{anyhow, Result};
use std::sync::mpsc::{sync_channel, Receiver};

/// Batches read ahead.
const AHEAD: usize = 4;

/// One batch and where it lies in the stream.
pub struct Item {
    pub batch: Batch,
    pub epoch: u64,
    /// Its index within the epoch (0-based).
    pub index: u64,
}

pub struct Feed {
    rx: Receiver<Result<Item, DataError>>,
    /// Batches per epoch.
    pub per_epoch: u64,
}

impl Feed {
    /// Start at batch `skip` of epoch `epoch`.
    pub fn start(ds: &Dataset, batch: usize, seed: u64, drop_last: bool, epoch: u64, skip: u64) -> Feed {
        Feed::start_shard(ds, batch, seed, drop_last, epoch, skip, (0, 1))
    }

    /// Like [`Feed::start`] over global batches of `batch` samples, keeping the share of
    /// `shard = (rank, world)`.
    pub fn start_shard(
        ds: &Dataset,
        batch: usize,
        seed: u64,
        drop_last: bool,
        epoch: u64,
        skip: u64,
        shard: (usize, usize),
    ) -> Feed {
        let per_epoch = ds.num_batches(batch, drop_last) as u64;
        let (tx, rx) = sync_channel(AHEAD);
        let ds = ds.clone();
        std::thread::spawn(move || {
            let mut e = epoch;
            loop {
                let mut produced = 0u64;
                for (i, b) in ds.batches(batch, seed, e, drop_last).enumerate() {
                    let i = i as u64;
                    produced += 1;
                    if e == epoch && i < skip {
                        continue;
                    }
                    let b = if shard.1 > 1 { b.map(|b| b.shard(shard.0, shard.1)) } else { b };
                    let item = b.map(|batch| Item { batch, epoch: e, index: i });
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        return; // The trainer is gone, or the data broke.
                    }
                }
                if produced == 0 {
                    let _ = tx.send(Err(DataError::Invalid(format!("epoch {e} yields no batch of {batch}"))));
                    return;
                }
                e += 1;
            }
        });
        Feed { rx, per_epoch }
    }

    pub fn next(&self) -> Result<Item> {
        match self.rx.recv() {
            Ok(item) => Ok(item?),
            Err(_) => Err(anyhow!("internal error: the batch reader stopped")),
        }
    }
}
