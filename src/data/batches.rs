//! The batch stream of one epoch. Shards are visited in a shuffled order, two at a
//! time: both are loaded, their samples shuffled together, and samples are appended to
//! a staging buffer per *input combination* (the set of inputs a shard holds), so a
//! batch never mixes samples with and without an optional modality. At most two
//! shards plus less than one batch per combination are in memory.

use super::error::DataError;
use super::reader::{Dataset, LoadedShard};
use super::tensor::{Batch, HostTensor};
use crate::rng::{hash_str, Rng};
use std::collections::BTreeMap;

/// Shards loaded together (their samples are interleaved).
const WINDOW: usize = 2;

#[derive(Default)]
struct Staging {
    inputs: BTreeMap<String, Vec<u8>>,
    labels: Vec<i64>,
}

/// An iterator over one epoch's batches; see [`Dataset::batches`]. It owns what it
/// needs (no borrow of the dataset), so it can run on a prefetch thread. After an
/// error it ends.
pub struct Batches {
    ds: Dataset,
    batch_size: usize,
    drop_last: bool,
    rng: Rng,
    order: Vec<usize>,
    next_shard: usize,
    /// (shard index, its data) for the current window.
    loaded: Vec<(usize, LoadedShard)>,
    /// (slot in `loaded`, sample index), shuffled.
    queue: Vec<(usize, usize)>,
    cursor: usize,
    staging: BTreeMap<Vec<String>, Staging>,
    done: bool,
}

impl Batches {
    pub(crate) fn new(ds: Dataset, batch_size: usize, seed: u64, epoch: u64, drop_last: bool) -> Batches {
        let mut rng = Rng::derive(&[seed, epoch, hash_str("graft.data.batches")]);
        let mut order: Vec<usize> = (0..ds.shards.len()).collect();
        rng.shuffle(&mut order);
        Batches {
            ds,
            batch_size,
            drop_last,
            rng,
            order,
            next_shard: 0,
            loaded: Vec::new(),
            queue: Vec::new(),
            cursor: 0,
            staging: BTreeMap::new(),
            done: false,
        }
    }

    /// Load the next window of shards and shuffle their samples together.
    fn load_window(&mut self) -> Result<(), DataError> {
        self.loaded.clear();
        self.queue.clear();
        self.cursor = 0;
        let end = (self.next_shard + WINDOW).min(self.order.len());
        for &s in &self.order[self.next_shard..end] {
            let l = LoadedShard::load(&self.ds.shards[s], &self.ds.meta)?;
            let slot = self.loaded.len();
            self.queue.extend((0..l.labels.len()).map(|i| (slot, i)));
            self.loaded.push((s, l));
        }
        self.next_shard = end;
        self.rng.shuffle(&mut self.queue);
        Ok(())
    }

    /// Append one sample to its combination's staging buffer; a full buffer becomes a batch.
    fn stage(&mut self, slot: usize, i: usize) -> Option<Batch> {
        let (s, l) = &self.loaded[slot];
        let key = &self.ds.shards[*s].inputs;
        if !self.staging.contains_key(key) {
            self.staging.insert(key.clone(), Staging::default());
        }
        let st = self.staging.get_mut(key)?;
        for t in &l.tensors {
            let buf =
                st.inputs.entry(t.name.clone()).or_insert_with(|| Vec::with_capacity(t.sample_bytes * self.batch_size));
            buf.extend_from_slice(l.sample(t, i));
        }
        st.labels.push(l.labels[i]);
        if st.labels.len() < self.batch_size {
            return None;
        }
        let st = std::mem::take(st);
        Some(self.finish(st))
    }

    fn finish(&self, st: Staging) -> Batch {
        let n = st.labels.len() as i64;
        let inputs = st
            .inputs
            .into_iter()
            .map(|(name, data)| {
                let spec = &self.ds.meta.inputs[&name];
                let mut shape = vec![n];
                shape.extend_from_slice(&spec.shape);
                (name, HostTensor { dtype: spec.dtype, shape, data })
            })
            .collect();
        Batch { inputs, labels: st.labels }
    }
}

impl Iterator for Batches {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.batch_size == 0 {
            self.done = true;
            return Some(Err(DataError::Invalid("batch size must be at least 1".into())));
        }
        loop {
            if self.cursor < self.queue.len() {
                let (slot, i) = self.queue[self.cursor];
                self.cursor += 1;
                if let Some(b) = self.stage(slot, i) {
                    return Some(Ok(b));
                }
            } else if self.next_shard < self.order.len() {
                if let Err(e) = self.load_window() {
                    self.done = true;
                    return Some(Err(e));
                }
            } else {
                self.loaded.clear();
                // The remainders, one short batch per input combination.
                let key = self.staging.iter().find(|(_, s)| !s.labels.is_empty()).map(|(k, _)| k.clone());
                match key.and_then(|k| self.staging.remove(&k)) {
                    Some(st) if !self.drop_last => return Some(Ok(self.finish(st))),
                    Some(_) => {}
                    None => {
                        self.done = true;
                        return None;
                    }
                }
            }
        }
    }
}

impl Dataset {
    /// Stream batches: shard order and sample order are shuffled deterministically
    /// from `(seed, epoch)`; two shards are held in memory at a time and their samples
    /// are interleaved; a batch never mixes samples with and without an optional input.
    /// With `drop_last = false` every sample appears exactly once per epoch (the last
    /// batch of each input combination may be short).
    pub fn batches(&self, batch_size: usize, seed: u64, epoch: u64, drop_last: bool) -> Batches {
        Batches::new(self.clone(), batch_size, seed, epoch, drop_last)
    }

    /// How many batches one epoch yields (the same for every seed and epoch).
    pub fn num_batches(&self, batch_size: usize, drop_last: bool) -> usize {
        let mut per_combination: BTreeMap<&[String], usize> = BTreeMap::new();
        for s in &self.shards {
            *per_combination.entry(&s.inputs).or_default() += s.samples;
        }
        let bs = batch_size.max(1);
        per_combination.values().map(|&n| if drop_last { n / bs } else { n.div_ceil(bs) }).sum()
    }
}
