//! The batch stream of one epoch. Shards are visited in a shuffled order, two at a
//! time: both are loaded, their samples shuffled together, and samples are appended to
//! a staging buffer per *input combination* (the set of inputs a shard holds), so a
//! batch never mixes samples with and without an optional modality. At most two
//! shards plus less than one batch per combination are in memory.
//!
//! Stored inputs (pixels, encoded images, frames, audio) are decoded and transformed
//! when a batch is complete ([`Pending::assemble`]), on the dataset's reader threads
//! (`workers`, scoped to the batch): sample `k` of the dataset (file order) is
//! transformed from its own random stream `(seed, epoch, k, input)`, so a batch is the
//! same for any number of workers and wherever it is assembled. The training feed
//! takes the [`Pending`] batches ([`Batches::next_pending`]) and assembles whole
//! batches on its own reader threads instead.

use super::error::DataError;
use super::mapped::ShardData;
use super::reader::{Dataset, LoadedShard};
use super::stored::{materialize, IndexRow, Sink};
use super::tensor::{Batch, HostTensor};
use crate::ir::DType;
use crate::rng::{hash_str, Rng};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

/// Shards loaded together (their samples are interleaved).
const WINDOW: usize = 2;

/// One sample waiting for its batch: where its bytes lie in its (shared, mapped)
/// shard, so staging copies nothing.
pub(crate) struct Staged {
    label: i64,
    /// Its index in the dataset (file order): the key of its random stream.
    global: u64,
    shard: Arc<ShardData>,
    /// (input, its bytes' range in the shard, the index row of a stored input).
    parts: Vec<(String, Range<usize>, Option<IndexRow>)>,
}

impl Staged {
    pub(crate) fn of(l: &LoadedShard, i: usize, global: u64) -> Staged {
        let parts = l
            .tensors
            .iter()
            .map(|t| (t.name.clone(), l.sample_range(t, i), t.stored.as_ref().map(|(_, rows)| rows[i])))
            .collect();
        Staged { label: l.labels[i], global, shard: Arc::clone(&l.data), parts }
    }

    /// The bytes of part `k`.
    fn bytes(&self, k: usize) -> &[u8] {
        &self.shard[self.parts[k].1.clone()]
    }
}

/// The most reader threads a command accepts (`--workers`).
pub const MAX_WORKERS: u64 = 256;

/// The reader threads for `ds` (0: one per core, at most 8).
pub fn workers(ds: &Dataset) -> usize {
    match ds.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8),
        n => n,
    }
}

/// One sample's values: normalised, or raw pixels ([`Dataset::raw`]).
enum Values {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl Values {
    fn sink(&mut self) -> Sink<'_> {
        match self {
            Values::F32(v) => Sink::F32(v),
            Values::U8(v) => Sink::U8(v),
        }
    }

    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::U8(v) => v.len(),
        }
    }

    fn clear(&mut self) {
        match self {
            Values::F32(v) => v.clear(),
            Values::U8(v) => v.clear(),
        }
    }

    /// The values as the batch stores them (f32 little-endian), into `slot`.
    fn write_le(&self, slot: &mut [u8]) {
        match self {
            Values::F32(v) => super::tensor::write_le_bytes(slot, v),
            Values::U8(v) => slot.copy_from_slice(v),
        }
    }
}

/// A batch from staged samples: plain inputs concatenated, stored inputs decoded and
/// transformed in parallel, each from its own random stream.
pub(crate) fn assemble(ds: &Dataset, samples: &[Staged], seed: u64, epoch: u64) -> Result<Batch, DataError> {
    let n = samples.len();
    let mut inputs = BTreeMap::new();
    let Some(first) = samples.first() else {
        return Ok(Batch { inputs, labels: Vec::new() });
    };
    for (k, (name, _, _)) in first.parts.iter().enumerate() {
        let spec = &ds.meta.inputs[name];
        let mut shape = vec![n as i64];
        shape.extend_from_slice(&spec.shape);
        let raw = ds.raw.contains(name);
        let data = match (spec.stored, &spec.transform) {
            (Some(form), Some(t)) => {
                let per = super::tensor::numel(&spec.shape).unwrap_or(0);
                // Each reader thread decodes its samples into one scratch buffer and
                // writes each straight into its slot of the batch: no allocation per
                // sample, and no serial copy after the threads join.
                let one = |s: &Staged, scratch: &mut Values, slot: &mut [u8]| -> Result<(), DataError> {
                    let (bytes, row) = (s.bytes(k), &s.parts[k].2);
                    let mut rng = Rng::derive(&[seed, epoch, s.global, hash_str(name)]);
                    let row = row.unwrap_or_default();
                    scratch.clear();
                    materialize(form, t, bytes, &row, ds.view, &mut rng, scratch.sink()).map_err(|reason| {
                        DataError::Invalid(format!(
                            "{}: sample {} of input `{name}` ({}): {reason}",
                            ds.dir.display(),
                            s.global,
                            form.name()
                        ))
                    })?;
                    if scratch.len() != per {
                        return Err(DataError::Invalid(format!(
                            "{}: sample {} of input `{name}` gave {} values, expected {per}",
                            ds.dir.display(),
                            s.global,
                            scratch.len()
                        )));
                    }
                    scratch.write_le(slot);
                    Ok(())
                };
                let elem = if raw { 1 } else { 4 };
                // Zeroed by the allocator (fresh pages for a batch this size), not a sweep.
                let mut data = vec![0u8; n * per * elem];
                let threads = workers(ds).min(n).max(1);
                let chunk = n.div_ceil(threads);
                let mut slots: Vec<&mut [u8]> = data.chunks_mut((per * elem).max(1)).collect();
                slots.resize_with(n, Default::default);
                let done: Vec<Result<(), DataError>> = std::thread::scope(|scope| {
                    let handles: Vec<_> = samples
                        .chunks(chunk)
                        .zip(slots.chunks_mut(chunk))
                        .map(|(c, slots)| {
                            scope.spawn(move || {
                                let mut scratch = if raw { Values::U8(Vec::new()) } else { Values::F32(Vec::new()) };
                                c.iter().zip(slots.iter_mut()).try_for_each(|(s, slot)| one(s, &mut scratch, slot))
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| Err(DataError::Invalid("a reader thread panicked".into())))
                        })
                        .collect()
                });
                done.into_iter().collect::<Result<(), DataError>>()?;
                data
            }
            _ => {
                let mut data = Vec::with_capacity(samples.iter().map(|s| s.parts[k].1.len()).sum());
                for s in samples {
                    data.extend_from_slice(s.bytes(k));
                }
                data
            }
        };
        let dtype = match (raw, spec.stored) {
            (true, Some(_)) => DType::U8,
            _ => spec.dtype,
        };
        inputs.insert(name.clone(), HostTensor { dtype, shape, data });
    }
    Ok(Batch { inputs, labels: samples.iter().map(|s| s.label).collect() })
}

/// An iterator over one epoch's batches; see [`Dataset::batches`]. It owns what it
/// needs (no borrow of the dataset), so it can run on a prefetch thread. After an
/// error it ends.
pub struct Batches {
    ds: Dataset,
    batch_size: usize,
    drop_last: bool,
    seed: u64,
    epoch: u64,
    /// The first sample index of each shard.
    starts: Vec<u64>,
    rng: Rng,
    order: Vec<usize>,
    next_shard: usize,
    /// (shard index, its data) for the current window.
    loaded: Vec<(usize, LoadedShard)>,
    /// (slot in `loaded`, sample index), shuffled.
    queue: Vec<(usize, usize)>,
    cursor: usize,
    staging: BTreeMap<Vec<String>, Vec<Staged>>,
    done: bool,
}

impl Batches {
    pub(crate) fn new(ds: Dataset, batch_size: usize, seed: u64, epoch: u64, drop_last: bool) -> Batches {
        let mut rng = Rng::derive(&[seed, epoch, hash_str("graft.data.batches")]);
        let mut order: Vec<usize> = (0..ds.shards.len()).collect();
        rng.shuffle(&mut order);
        Batches {
            starts: ds.shard_starts(),
            ds,
            batch_size,
            drop_last,
            seed,
            epoch,
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
    fn stage(&mut self, slot: usize, i: usize) -> Option<Pending> {
        let (s, l) = &self.loaded[slot];
        let staged = Staged::of(l, i, self.starts[*s] + i as u64);
        let st = self.staging.entry(self.ds.shards[*s].inputs.clone()).or_default();
        st.push(staged);
        if st.len() < self.batch_size {
            return None;
        }
        let st = std::mem::take(st);
        Some(self.finish(st))
    }

    fn finish(&self, samples: Vec<Staged>) -> Pending {
        Pending { samples, seed: self.seed, epoch: self.epoch }
    }

    /// The next batch with its samples copied out of their shards but not yet decoded
    /// or transformed: cheap, so one thread can plan the stream while others assemble.
    /// After an error the stream ends.
    pub fn next_pending(&mut self) -> Option<Result<Pending, DataError>> {
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
                let key = self.staging.iter().find(|(_, s)| !s.is_empty()).map(|(k, _)| k.clone());
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

impl Iterator for Batches {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.next_pending()?.and_then(|p| p.assemble(&self.ds));
        self.done |= b.is_err();
        Some(b)
    }
}

/// One batch of the stream before its stored inputs are decoded: the samples' bytes,
/// labels and dataset indices, and the `(seed, epoch)` their random streams derive from.
pub struct Pending {
    samples: Vec<Staged>,
    seed: u64,
    epoch: u64,
}

impl Pending {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Rank `rank`'s strided share over `world` ranks, as [`Batch::shard`] takes it
    /// from the assembled batch (each sample's transform depends on the sample only,
    /// so sharding first gives the same share and decodes only it).
    pub fn shard(mut self, rank: usize, world: usize) -> Pending {
        if world > 1 {
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                (i - 1) % world == rank
            });
        }
        self
    }

    /// Decode and transform: the batch exactly as [`Dataset::batches`] yields it.
    /// Stored inputs are spread over `ds`'s reader threads (`ds` is the dataset the
    /// stream came from, in the view and with the workers to use).
    pub fn assemble(&self, ds: &Dataset) -> Result<Batch, DataError> {
        assemble(ds, &self.samples, self.seed, self.epoch)
    }
}

impl Dataset {
    /// Shard `i` whole, samples in file order (labels are range-checked), stored
    /// inputs transformed in this dataset's view from `(seed 0, epoch 0)`.
    pub fn read_shard(&self, i: usize) -> Result<Batch, DataError> {
        let shard = self.shards.get(i).ok_or_else(|| DataError::Invalid(format!("no shard {i}")))?;
        let l = LoadedShard::load(shard, &self.meta)?;
        let first = self.shard_starts()[i];
        let staged: Vec<_> = (0..l.labels.len()).map(|j| Staged::of(&l, j, first + j as u64)).collect();
        assemble(self, &staged, 0, 0)
    }

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
