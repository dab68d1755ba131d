//! The training batch stream: epoch after epoch of [`Dataset::batches`], read ahead,
//! starting anywhere (an epoch and a position in it) for an exact resume.
//!
//! Epoch `e`'s order is `batches(batch, seed, e, drop_last)`, a pure function of the
//! dataset and those numbers, so skipping the first `position` batches of the epoch a
//! run stopped in reproduces the rest of the stream bit for bit. Skipped batches are
//! staged (their samples' bytes copied out of the shards) but not decoded.
//!
//! One thread stages the stream; `--workers` reader threads ([`super::reader`]) each
//! decode and transform whole batches, handed back in stream order. Every sample's
//! augmentation draws from its own stream `(seed, epoch, sample, input)`, so the
//! batches, and the run, are bit-identical for any number of workers.
//!
//! Data-parallel runs ([`Feed::start_shard`]) read the stream of *global* batches
//! (per-rank batch × world size) and keep their rank's strided share of each, so every
//! rank takes the same number of steps, the shares are disjoint, and together they are
//! exactly the batches a single process with the global batch size sees.

use super::reader::Ordered;
use crate::data::{Batch, Batches, DataError, Dataset, Pending};
use anyhow::{anyhow, Result};
use std::cell::RefCell;

/// Batches read ahead (in all, over the reader threads).
const AHEAD: usize = 4;

/// One batch and where it lies in the stream.
pub struct Item {
    pub batch: Batch,
    pub epoch: u64,
    /// Its index within the epoch (0-based).
    pub index: u64,
}

pub struct Feed {
    readers: RefCell<Ordered<Result<Item, DataError>>>,
    /// Batches per epoch.
    pub per_epoch: u64,
}

/// A staged batch and where it lies in the stream.
type Job = Result<(Pending, u64, u64), DataError>;

impl Feed {
    /// Start at batch `skip` of epoch `epoch`.
    pub fn start(ds: &Dataset, batch: usize, seed: u64, drop_last: bool, epoch: u64, skip: u64) -> Feed {
        Feed::start_shard(ds, batch, seed, drop_last, epoch, skip, (0, 1))
    }

    /// Like [`Feed::start`] over global batches of `batch` samples, keeping the share of
    /// `shard = (rank, world)`. The batches are assembled on `ds`'s reader threads
    /// ([`crate::data::batches::workers`]), each thread a whole batch at a time.
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
        let workers = crate::data::batches::workers(ds);
        let jobs = Stream { ds: ds.clone(), batch, seed, drop_last, epoch, skip, shard, current: None, failed: false };
        // Each reader assembles its batch alone: the parallelism is across batches.
        let one = ds.clone().with_workers(1);
        let assemble = move |job: Job| {
            let (pending, epoch, index) = job?;
            Ok(Item { batch: pending.assemble(&one)?, epoch, index })
        };
        Feed { readers: RefCell::new(Ordered::start(jobs, workers, AHEAD.max(workers), assemble)), per_epoch }
    }

    pub fn next(&self) -> Result<Item> {
        match self.readers.borrow_mut().next() {
            Some(item) => Ok(item?),
            None => Err(anyhow!("internal error: the batch reader stopped")),
        }
    }
}

/// The staged batches of epoch after epoch from batch `skip` of `epoch`, this rank's
/// share of each; ends after an error. Staging is cheap (no decoding), so the skipped
/// batches of a resumed epoch cost little.
struct Stream {
    ds: Dataset,
    batch: usize,
    seed: u64,
    drop_last: bool,
    epoch: u64,
    skip: u64,
    shard: (usize, usize),
    /// The current epoch's batches and the index of the next one.
    current: Option<(Batches, u64)>,
    failed: bool,
}

impl Iterator for Stream {
    type Item = Job;

    fn next(&mut self) -> Option<Job> {
        if self.failed {
            return None;
        }
        let job = self.next_job();
        self.failed = job.is_err();
        Some(job)
    }
}

impl Stream {
    fn next_job(&mut self) -> Job {
        loop {
            let (batches, index) = self
                .current
                .get_or_insert_with(|| (self.ds.batches(self.batch, self.seed, self.epoch, self.drop_last), 0));
            match batches.next_pending() {
                Some(p) => {
                    let (p, i) = (p?, *index);
                    *index += 1;
                    if i >= self.skip {
                        return Ok((p.shard(self.shard.0, self.shard.1), self.epoch, i));
                    }
                }
                None if *index == 0 => {
                    return Err(DataError::Invalid(format!("epoch {} yields no batch of {}", self.epoch, self.batch)))
                }
                None => (self.current, self.epoch, self.skip) = (None, self.epoch + 1, 0),
            }
        }
    }
}
