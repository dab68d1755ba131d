//! Opening a dataset: `dataset.json` and every shard's header are checked up front
//! (one small read per shard, no tensor data), so a corrupt or mismatched dataset
//! fails before training starts, with the shard file and the tensor named. Data is
//! read one shard at a time, later, by [`Dataset::batches`] or [`Dataset::read_shard`].

use super::error::DataError;
use super::meta::{shard_file, Meta};
use super::safetensors::{read_data, read_header, Header};
use super::tensor::{elem_size, numel, Batch, HostTensor};
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
}

impl Dataset {
    /// Read `dataset.json` and check every shard's header against it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset, DataError> {
        let dir = dir.as_ref().to_path_buf();
        let meta = Meta::read(&dir)?;
        let meta_path = dir.join(super::meta::META_FILE);
        if meta.shards == 0 {
            return Err(DataError::Meta { path: meta_path, msg: "`shards` is 0: the dataset is empty".into() });
        }
        let mut shards = Vec::with_capacity(meta.shards);
        for i in 0..meta.shards {
            let path = dir.join(shard_file(i));
            let header = read_header(&path)?;
            shards.push(check_shard(path, header, &meta)?);
        }
        let found: usize = shards.iter().map(|s| s.samples).sum();
        if found != meta.samples {
            let msg = format!("`samples` is {}, but the {} shards hold {found}", meta.samples, meta.shards);
            return Err(DataError::Meta { path: meta_path, msg });
        }
        Ok(Dataset { dir, meta, shards })
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.meta.samples
    }

    pub fn is_empty(&self) -> bool {
        self.meta.samples == 0
    }

    /// Shard `i` whole, samples in file order (labels are range-checked).
    pub fn read_shard(&self, i: usize) -> Result<Batch, DataError> {
        let shard = self.shards.get(i).ok_or_else(|| DataError::Invalid(format!("no shard {i}")))?;
        let l = LoadedShard::load(shard, &self.meta)?;
        let mut inputs = BTreeMap::new();
        for t in &l.tensors {
            let spec = &self.meta.inputs[&t.name];
            let mut shape = vec![l.labels.len() as i64];
            shape.extend_from_slice(&spec.shape);
            let bytes = l.data[t.start..t.start + t.sample_bytes * l.labels.len()].to_vec();
            inputs.insert(t.name.clone(), HostTensor { dtype: spec.dtype, shape, data: bytes });
        }
        Ok(Batch { inputs, labels: l.labels })
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
        let Some(spec) = meta.inputs.get(key) else {
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
    if let Some((key, _)) = meta.inputs.iter().find(|(k, s)| !s.optional && !header.entries.contains_key(*k)) {
        return Err(DataError::MissingInput { path, key: key.clone() });
    }
    Ok(ShardInfo { path, samples: n as usize, inputs: present, header })
}

/// One input's bytes inside a loaded shard's data section.
pub(crate) struct LoadedTensor {
    pub name: String,
    pub start: usize,
    pub sample_bytes: usize,
}

/// A shard's data section in memory, with its labels decoded and range-checked.
pub(crate) struct LoadedShard {
    pub data: Vec<u8>,
    pub tensors: Vec<LoadedTensor>,
    pub labels: Vec<i64>,
}

impl LoadedShard {
    pub fn load(shard: &ShardInfo, meta: &Meta) -> Result<LoadedShard, DataError> {
        let data = read_data(&shard.path, &shard.header)?;
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
                LoadedTensor { name: name.clone(), start: shard.header.entries[name].start as usize, sample_bytes }
            })
            .collect();
        Ok(LoadedShard { data, tensors, labels })
    }

    /// The bytes of sample `i` of tensor `t`.
    pub fn sample(&self, t: &LoadedTensor, i: usize) -> &[u8] {
        let at = t.start + i * t.sample_bytes;
        &self.data[at..at + t.sample_bytes]
    }
}
