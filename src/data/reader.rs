//! Opening a dataset: `dataset.json`, every shard's header and every label are checked
//! up front (two small reads per shard: the header and the `label` tensor, no input
//! data), so a corrupt or mismatched dataset or a label outside `0..classes` fails
//! before training starts, with the shard file and the tensor named. Data is
//! read one shard at a time, later, by [`Dataset::batches`] or [`Dataset::read_shard`].

use super::error::DataError;
use super::mapped::ShardData;
use super::meta::{shard_file, Meta};
use super::safetensors::{read_header, Header};
use super::stored::{check_row, Form, IndexRow, View};
use super::tensor::{elem_size, numel};
use crate::ir::{DType, Dim};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A model input as `graft inspect` reports it: name, dtype, shape (leading batch
/// dimension included), optional.
pub type ModelInput = (String, DType, Vec<Dim>, bool);

/// The inputs of `graft::report::inspect(&compiled)`, in the form
/// [`Dataset::check_against`] takes.
pub fn model_inputs(inspect: &crate::report::Inspect) -> Vec<ModelInput> {
    inspect
        .inputs
        .iter()
        .filter_map(|i| Some((i.name.clone(), DType::parse(&i.dtype)?, i.shape.clone(), i.optional)))
        .collect()
}

/// One shard as its header describes it.
#[derive(Clone, Debug)]
pub struct ShardInfo {
    pub path: PathBuf,
    pub samples: usize,
    /// The inputs this shard holds (an optional one may be absent), sorted.
    pub inputs: Vec<String>,
    pub(crate) header: Header,
}

impl ShardInfo {
    /// Whether this shard holds input `name`.
    pub fn has(&self, name: &str) -> bool {
        self.inputs.iter().any(|i| i == name)
    }
}

/// An opened, validated dataset directory.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub meta: Meta,
    pub shards: Vec<ShardInfo>,
    /// The transform stored inputs get: training augmentation (the default) or eval.
    pub view: View,
    /// Reader threads that decode and transform stored samples (0: one per core, at
    /// most 8).
    pub workers: usize,
    /// Stored image and video inputs handed over as raw `u8` pixels (the transform's
    /// layout, not normalised), for a model input that normalises them itself
    /// ([`crate::ir::PixelNorm`]). Empty: every input is normalised f32.
    pub raw: std::collections::BTreeSet<String>,
}

impl Dataset {
    /// Read `dataset.json`, check every shard's header against it and every label
    /// against `classes`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset, DataError> {
        let dir = dir.as_ref().to_path_buf();
        let meta = Meta::read(&dir)?;
        let meta_path = dir.join(super::meta::META_FILE);
        if meta.shards == 0 {
            return Err(DataError::Meta { path: meta_path, msg: "`shards` is 0: the dataset is empty".into() });
        }
        let mut shards = Vec::new();
        for i in 0..meta.shards {
            let path = dir.join(shard_file(i));
            let header = read_header(&path)?;
            shards.push(check_shard(path, header, &meta)?);
        }
        for s in &shards {
            check_labels(s, &meta)?;
        }
        let found: usize = shards.iter().map(|s| s.samples).sum();
        if found != meta.samples {
            let msg = format!("`samples` is {}, but the {} shards hold {found}", meta.samples, meta.shards);
            return Err(DataError::Meta { path: meta_path, msg });
        }
        Ok(Dataset { dir, meta, shards, view: View::Train, workers: 0, raw: Default::default() })
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.meta.samples
    }

    pub fn is_empty(&self) -> bool {
        self.meta.samples == 0
    }

    /// The same dataset with another view (training augmentation or eval transform).
    pub fn with_view(mut self, view: View) -> Dataset {
        self.view = view;
        self
    }

    /// The same dataset read by `workers` threads (0: one per core, at most 8).
    pub fn with_workers(mut self, workers: usize) -> Dataset {
        self.workers = workers;
        self
    }

    /// The same dataset handing over `inputs` as raw pixels ([`Dataset::raw`]).
    pub fn with_raw(mut self, inputs: std::collections::BTreeSet<String>) -> Dataset {
        self.raw = inputs;
        self
    }

    /// The stored image and video inputs: those [`Dataset::raw`] may name.
    pub fn pixel_inputs(&self) -> std::collections::BTreeSet<String> {
        use super::stored::Transform;
        let pixels = |i: &super::meta::InputSpec| {
            i.stored.is_some() && matches!(i.transform, Some(Transform::Image(_) | Transform::Video(_)))
        };
        self.meta.inputs.iter().filter(|(_, i)| pixels(i)).map(|(n, _)| n.clone()).collect()
    }

    /// Whether any input is stored (decoded and transformed while reading).
    pub fn has_stored(&self) -> bool {
        self.meta.inputs.values().any(|i| i.stored.is_some())
    }

    /// The index of the first sample of each shard, in file order.
    pub fn shard_starts(&self) -> Vec<u64> {
        let mut at = 0u64;
        self.shards
            .iter()
            .map(|s| {
                let start = at;
                at += s.samples as u64;
                start
            })
            .collect()
    }

    /// Check the dataset against a model's declared inputs: every required model input
    /// is in every shard, dtypes agree, and per-sample shapes agree (symbolic dims are
    /// bound consistently). Returns notes (inputs the model ignores, optional inputs
    /// the dataset lacks) or every problem at once.
    pub fn check_against(&self, model: &[ModelInput]) -> Result<Vec<String>, DataError> {
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let mut bound: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
        for (name, dtype, shape, optional) in model {
            let Some(spec) = self.meta.inputs.get(name) else {
                if *optional {
                    notes.push(format!("optional input `{name}` is not in the dataset: every batch lacks it"));
                } else {
                    let have: Vec<&str> = self.meta.inputs.keys().map(String::as_str).collect();
                    problems.push(format!("model input `{name}` is not in the dataset (it has: {})", have.join(", ")));
                }
                continue;
            };
            if dtype != &spec.dtype {
                problems.push(format!(
                    "input `{name}`: the model takes {}, the dataset holds {}",
                    dtype.name(),
                    spec.dtype.name()
                ));
            }
            let model_text =
                format!("{}[{}]", dtype.name(), shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
            let expected = format!(
                "the model takes {model_text} (batch first), the dataset holds {} per sample",
                spec.type_text()
            );
            if shape.len() != spec.shape.len() + 1 {
                problems.push(format!("input `{name}`: {expected}"));
            } else {
                for (d, &have) in shape[1..].iter().zip(&spec.shape) {
                    match d {
                        Dim::Fixed(n) if *n != have => {
                            problems.push(format!("input `{name}`: {expected}"));
                            break;
                        }
                        Dim::Sym(s) => match bound.get(s.as_str()) {
                            Some(&(v, other)) if v != have => {
                                problems
                                    .push(format!("input `{name}`: `{s}` is {have} here but {v} in input `{other}`"));
                            }
                            Some(_) => {}
                            None => {
                                bound.insert(s, (have, name));
                            }
                        },
                        _ => {}
                    }
                }
            }
            let lacking: Vec<String> = self
                .shards
                .iter()
                .filter(|s| !s.has(name))
                .map(|s| s.path.file_name().unwrap_or_default().to_string_lossy().into_owned())
                .collect();
            if !lacking.is_empty() {
                let list = if lacking.len() > 3 {
                    format!("{}, … ({} shards)", lacking[..3].join(", "), lacking.len())
                } else {
                    lacking.join(", ")
                };
                if *optional {
                    notes.push(format!("optional input `{name}` is absent from {list}"));
                } else {
                    problems.push(format!(
                        "input `{name}` is required by the model but absent from {list}: mark it `optional` in the spec"
                    ));
                }
            }
        }
        let used: BTreeSet<&str> = model.iter().map(|m| m.0.as_str()).collect();
        for name in self.meta.inputs.keys().filter(|n| !used.contains(n.as_str())) {
            notes.push(format!("dataset input `{name}` is not a model input: it is ignored"));
        }
        if problems.is_empty() {
            Ok(notes)
        } else {
            Err(DataError::Incompatible { problems })
        }
    }
}

/// Check one shard's header against `dataset.json`.
fn check_shard(path: PathBuf, header: Header, meta: &Meta) -> Result<ShardInfo, DataError> {
    let label = header.entries.get("label").ok_or_else(|| DataError::MissingLabel { path: path.clone() })?;
    if label.dtype != Some(DType::I64) {
        let found = label.dtype.map(|d| d.name().to_string()).unwrap_or_else(|| label.tag.clone());
        return Err(DataError::WrongDtype { path, key: "label".into(), found, expected: "i64".into() });
    }
    let [n] = label.shape[..] else {
        return Err(DataError::WrongShape {
            path,
            key: "label".into(),
            found: label.shape.clone(),
            expected: "[n]".into(),
        });
    };
    let mut present = Vec::new();
    for (key, e) in &header.entries {
        if key == "label" {
            continue;
        }
        if let Some((base, part)) = key.rsplit_once('.') {
            if meta.inputs.get(base).is_some_and(|s| s.stored.is_some()) {
                let (tag, shape_ok, expected) = match part {
                    "data" => ("U8", e.shape.len() == 1, "u8[bytes]".to_string()),
                    "index" => ("I64", e.shape == [n, 5], format!("i64[{n}, 5]")),
                    _ => return Err(DataError::UnknownTensor { path, key: key.clone() }),
                };
                if e.tag != tag {
                    let expected = expected.split('[').next().unwrap_or_default().to_string();
                    return Err(DataError::WrongDtype {
                        path,
                        key: key.clone(),
                        found: e.tag.to_lowercase(),
                        expected,
                    });
                }
                if !shape_ok {
                    return Err(DataError::WrongShape { path, key: key.clone(), found: e.shape.clone(), expected });
                }
                if part == "index" {
                    present.push(base.to_string());
                }
                continue;
            }
        }
        let Some(spec) = meta.inputs.get(key).filter(|s| s.stored.is_none()) else {
            return Err(DataError::UnknownTensor { path, key: key.clone() });
        };
        if e.dtype != Some(spec.dtype) {
            let found = e.dtype.map(|d| d.name().to_string()).unwrap_or_else(|| e.tag.clone());
            return Err(DataError::WrongDtype { path, key: key.clone(), found, expected: spec.dtype.name().into() });
        }
        if e.shape.len() != spec.shape.len() + 1 || e.shape[1..] != spec.shape[..] {
            let expected = format!("[{n}, …] ({} per sample, from dataset.json)", spec.type_text());
            return Err(DataError::WrongShape { path, key: key.clone(), found: e.shape.clone(), expected });
        }
        if e.shape[0] != n {
            return Err(DataError::SampleCount {
                path,
                key: key.clone(),
                found: e.shape[0] as u64,
                expected: n as u64,
            });
        }
        present.push(key.clone());
    }
    for (key, spec) in meta.inputs.iter().filter(|(_, s)| s.stored.is_some()) {
        let (data, index) = (format!("{key}.data"), format!("{key}.index"));
        let has = |k: &String| header.entries.contains_key(k);
        if has(&data) != has(&index) {
            let missing = if has(&data) { index } else { data };
            return Err(DataError::MissingInput { path, key: missing });
        }
        if !spec.optional && !has(&index) {
            return Err(DataError::MissingInput { path, key: index });
        }
    }
    if let Some((key, _)) =
        meta.inputs.iter().find(|(k, s)| !s.optional && s.stored.is_none() && !header.entries.contains_key(*k))
    {
        return Err(DataError::MissingInput { path, key: key.clone() });
    }
    present.sort();
    Ok(ShardInfo { path, samples: n as usize, inputs: present, header })
}

/// Read one tensor's bytes alone.
fn read_entry(shard: &ShardInfo, key: &str) -> Result<Vec<u8>, DataError> {
    use std::io::{Read, Seek, SeekFrom};
    let path = &shard.path;
    let le = &shard.header.entries[key];
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    f.seek(SeekFrom::Start(shard.header.data_start + le.start)).map_err(|e| DataError::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(le.end - le.start).read_to_end(&mut bytes).map_err(|e| DataError::io(path, e))?;
    if (bytes.len() as u64) < le.end - le.start {
        let actual = shard.header.data_start + le.start + bytes.len() as u64;
        let expected = shard.header.data_start + le.end;
        return Err(DataError::Truncated { path: path.clone(), key: Some(key.into()), expected, actual });
    }
    Ok(bytes)
}

/// The rows of an `i64[n, 5]` index tensor.
pub(crate) fn index_rows(bytes: &[u8]) -> Vec<IndexRow> {
    let v: Vec<i64> = bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
    v.chunks_exact(5).map(|r| [r[0], r[1], r[2], r[3], r[4]]).collect()
}

/// Check every index row of a stored input against its form and its data tensor.
fn check_index(shard: &ShardInfo, name: &str, form: Form) -> Result<(), DataError> {
    let data_len = shard.header.entries[&format!("{name}.data")].shape[0] as u64;
    let key = format!("{name}.index");
    for (i, row) in index_rows(&read_entry(shard, &key)?).iter().enumerate() {
        check_row(form, row, data_len).map_err(|reason| DataError::NotSafetensors {
            path: shard.path.clone(),
            key: Some(key.clone()),
            reason: format!("sample {i}: {reason}"),
        })?;
    }
    Ok(())
}

/// Read a shard's `label` tensor alone and check every value is in `0..classes`;
/// check the index of every stored input.
fn check_labels(shard: &ShardInfo, meta: &Meta) -> Result<(), DataError> {
    let path = &shard.path;
    for (name, spec) in &meta.inputs {
        if let (Some(form), true) = (spec.stored, shard.has(name)) {
            check_index(shard, name, form)?;
        }
    }
    let bytes = read_entry(shard, "label")?;
    let bad = bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
        .enumerate()
        .find(|&(_, l)| l < 0 || l as u64 >= meta.classes as u64);
    match bad {
        Some((index, value)) => Err(DataError::LabelRange { path: path.clone(), index, value, classes: meta.classes }),
        None => Ok(()),
    }
}

/// One input's bytes inside a loaded shard's data section.
pub(crate) struct LoadedTensor {
    pub name: String,
    pub start: usize,
    /// Per sample in the batch (after the transform, for a stored input).
    pub sample_bytes: usize,
    /// A stored input: its form and index rows (offsets from `start`).
    pub stored: Option<(Form, Vec<IndexRow>)>,
}

/// A shard's data section (mapped, [`ShardData`]), with its labels decoded and
/// range-checked. Samples staged for a batch share it.
pub(crate) struct LoadedShard {
    pub data: std::sync::Arc<ShardData>,
    pub tensors: Vec<LoadedTensor>,
    pub labels: Vec<i64>,
}

impl LoadedShard {
    pub fn load(shard: &ShardInfo, meta: &Meta) -> Result<LoadedShard, DataError> {
        let data = std::sync::Arc::new(ShardData::open(&shard.path, &shard.header)?);
        let le = &shard.header.entries["label"];
        let labels: Vec<i64> = data[le.start as usize..le.end as usize]
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        if let Some((index, &value)) =
            labels.iter().enumerate().find(|(_, &l)| l < 0 || l as u64 >= meta.classes as u64)
        {
            return Err(DataError::LabelRange { path: shard.path.clone(), index, value, classes: meta.classes });
        }
        let tensors = shard
            .inputs
            .iter()
            .map(|name| {
                let spec = &meta.inputs[name];
                let sample_bytes = numel(&spec.shape).unwrap_or(0) * elem_size(spec.dtype);
                let Some(form) = spec.stored else {
                    let start = shard.header.entries[name].start as usize;
                    return Ok(LoadedTensor { name: name.clone(), start, sample_bytes, stored: None });
                };
                let ie = &shard.header.entries[&format!("{name}.index")];
                let de = &shard.header.entries[&format!("{name}.data")];
                let rows = index_rows(&data[ie.start as usize..ie.end as usize]);
                for (i, row) in rows.iter().enumerate() {
                    check_row(form, row, de.end - de.start).map_err(|reason| DataError::NotSafetensors {
                        path: shard.path.clone(),
                        key: Some(format!("{name}.index")),
                        reason: format!("sample {i}: {reason}"),
                    })?;
                }
                let start = de.start as usize;
                Ok(LoadedTensor { name: name.clone(), start, sample_bytes, stored: Some((form, rows)) })
            })
            .collect::<Result<_, DataError>>()?;
        Ok(LoadedShard { data, tensors, labels })
    }

    /// Where sample `i` of tensor `t` lies in [`LoadedShard::data`] (the stored bytes
    /// of a stored input).
    pub fn sample_range(&self, t: &LoadedTensor, i: usize) -> std::ops::Range<usize> {
        match &t.stored {
            Some((_, rows)) => {
                let at = t.start + rows[i][0] as usize;
                at..at + rows[i][1] as usize
            }
            None => {
                let at = t.start + i * t.sample_bytes;
                at..at + t.sample_bytes
            }
        }
    }
}
