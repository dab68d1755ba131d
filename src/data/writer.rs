//! Writing a dataset: shards one at a time (each checked against the declared inputs
//! and written atomically), then `dataset.json` last, so a directory with a
//! `dataset.json` always describes complete shards. Usable for converting real data.

use super::error::DataError;
use super::meta::{shard_file, InputSpec, Meta, META_FILE};
use super::safetensors::{encode_raw, RawTensor};
use super::stored::{check_row, IndexRow};
use super::tensor::st_tag;
use super::tensor::{Batch, HostTensor};
use crate::durable::write_atomic;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Writes `shard-00000.safetensors`, … and finally `dataset.json` into a directory.
pub struct DatasetWriter {
    dir: PathBuf,
    meta: Meta,
    bytes: u64,
    per_class: Vec<usize>,
}

impl DatasetWriter {
    /// Prepare `dir` (created if missing). A directory that already holds a dataset is
    /// emptied of it (its `dataset.json` goes first); a directory holding anything else
    /// is refused rather than mixed into.
    pub fn create(
        dir: &Path,
        task: &str,
        classes: usize,
        class_names: Vec<String>,
        inputs: BTreeMap<String, InputSpec>,
        seed: Option<u64>,
    ) -> Result<DatasetWriter, DataError> {
        let meta = Meta { task: task.into(), classes, class_names, samples: 0, shards: 0, inputs, seed };
        // Validate the declaration the same way a reader will.
        Meta::parse(&meta.to_json()).map_err(|msg| DataError::Meta { path: dir.join(META_FILE), msg })?;
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let mut old = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
            let entry = entry.map_err(|e| DataError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name == META_FILE
                || name == super::meta::IMPORT_STATE
                || (name.starts_with("shard-") && name.ends_with(".safetensors"))
                || (name.starts_with('.') && name.contains(".tmp-"));
            if !ours {
                return Err(DataError::Invalid(format!(
                    "refusing to write a dataset into {}: it holds `{name}`, which is not part of a dataset",
                    dir.display()
                )));
            }
            old.push(entry.path());
        }
        old.sort_by_key(|p| p.file_name() != Some(META_FILE.as_ref()));
        for p in old {
            std::fs::remove_file(&p).map_err(|e| DataError::io(&p, e))?;
        }
        Ok(DatasetWriter { dir: dir.to_path_buf(), per_class: vec![0; classes], meta, bytes: 0 })
    }

    /// Continue a dataset whose first `meta.shards` shards are written (an import
    /// resumed after an interruption): nothing is removed.
    pub fn resume(dir: &Path, meta: Meta, per_class: Vec<usize>, bytes: u64) -> Result<DatasetWriter, DataError> {
        Meta::parse(&meta.to_json()).map_err(|msg| DataError::Meta { path: dir.join(META_FILE), msg })?;
        if per_class.len() != meta.classes {
            return Err(DataError::Invalid(format!("{} class counts for {} classes", per_class.len(), meta.classes)));
        }
        Ok(DatasetWriter { dir: dir.to_path_buf(), meta, bytes, per_class })
    }

    /// Samples written so far per class.
    pub fn per_class(&self) -> &[usize] {
        &self.per_class
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Write the next shard: `batch` must hold every required input with shape
    /// `[n, per-sample shape…]`, optional ones may be absent, labels in `0..classes`.
    pub fn write_shard(&mut self, batch: &Batch) -> Result<PathBuf, DataError> {
        self.write_shard_with(batch, &BTreeMap::new())
    }

    /// [`Self::write_shard`] where the stored inputs come as [`StoredColumn`]s
    /// (`batch.inputs` holds the plain ones; `batch.labels` every sample's label).
    pub fn write_shard_with(
        &mut self,
        batch: &Batch,
        stored: &BTreeMap<String, StoredColumn>,
    ) -> Result<PathBuf, DataError> {
        let path = self.dir.join(shard_file(self.meta.shards));
        let n = batch.labels.len();
        let mut tensors: BTreeMap<String, HostTensor> = BTreeMap::new();
        for (name, spec) in &self.meta.inputs {
            if let Some(form) = spec.stored {
                let Some(col) = stored.get(name) else {
                    if spec.optional {
                        continue;
                    }
                    return Err(DataError::MissingInput { path, key: format!("{name}.index") });
                };
                let bad = col.index.iter().enumerate().find_map(|(i, r)| {
                    check_row(form, r, col.data.len() as u64).err().map(|e| format!("sample {i}: {e}"))
                });
                if col.index.len() != n || bad.is_some() {
                    let reason = bad.unwrap_or_else(|| format!("{} index rows for {n} samples", col.index.len()));
                    return Err(DataError::NotSafetensors { path, key: Some(format!("{name}.index")), reason });
                }
                continue;
            }
            let Some(t) = batch.inputs.get(name) else {
                if spec.optional {
                    continue;
                }
                return Err(DataError::MissingInput { path, key: name.clone() });
            };
            if t.dtype != spec.dtype {
                let (found, expected) = (t.dtype.name().to_string(), spec.dtype.name().to_string());
                return Err(DataError::WrongDtype { path, key: name.clone(), found, expected });
            }
            let mut want = vec![n as i64];
            want.extend_from_slice(&spec.shape);
            if t.shape != want || t.data.len() != t.numel() * super::tensor::elem_size(t.dtype) {
                let expected = format!("{want:?} with matching data");
                return Err(DataError::WrongShape { path, key: name.clone(), found: t.shape.clone(), expected });
            }
            tensors.insert(name.clone(), t.clone());
        }
        let plain = |k: &String| self.meta.inputs.get(k).is_some_and(|s| s.stored.is_none());
        if let Some(extra) = batch.inputs.keys().find(|k| !plain(k)) {
            return Err(DataError::UnknownTensor { path, key: extra.clone() });
        }
        let is_stored = |k: &String| self.meta.inputs.get(k).is_some_and(|s| s.stored.is_some());
        if let Some(extra) = stored.keys().find(|k| !is_stored(k)) {
            return Err(DataError::UnknownTensor { path, key: extra.clone() });
        }
        for (index, &value) in batch.labels.iter().enumerate() {
            if value < 0 || value as u64 >= self.meta.classes as u64 {
                return Err(DataError::LabelRange { path, index, value, classes: self.meta.classes });
            }
            self.per_class[value as usize] += 1;
        }
        tensors.insert("label".into(), batch.label_tensor());
        let metadata = BTreeMap::from([("format".to_string(), "graft-dataset-shard".to_string())]);
        let index: Vec<Vec<u8>> =
            stored.values().map(|c| c.index.iter().flatten().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let names: Vec<[String; 2]> = stored.keys().map(|k| [format!("{k}.data"), format!("{k}.index")]).collect();
        let shapes: Vec<[Vec<i64>; 2]> =
            stored.values().map(|c| [vec![c.data.len() as i64], vec![c.index.len() as i64, 5]]).collect();
        let mut raw: Vec<RawTensor> = tensors
            .iter()
            .map(|(name, t)| RawTensor { name, tag: st_tag(t.dtype), shape: &t.shape, data: &t.data })
            .collect();
        for (j, c) in stored.values().enumerate() {
            raw.push(RawTensor { name: &names[j][0], tag: "U8", shape: &shapes[j][0], data: &c.data });
            raw.push(RawTensor { name: &names[j][1], tag: "I64", shape: &shapes[j][1], data: &index[j] });
        }
        let bytes = encode_raw(&raw, &metadata)?;
        write_atomic(&path, &bytes)?;
        self.bytes += bytes.len() as u64;
        self.meta.shards += 1;
        self.meta.samples += n;
        Ok(path)
    }

    /// Write `dataset.json`; the dataset is complete from here on.
    pub fn finish(self) -> Result<Written, DataError> {
        let text = self.meta.to_json();
        write_atomic(&self.dir.join(META_FILE), text.as_bytes())?;
        Ok(Written { bytes: self.bytes + text.len() as u64, per_class: self.per_class, meta: self.meta })
    }

    /// What has been declared and written so far.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
}

/// A finished dataset: its metadata, the bytes written (shards and `dataset.json`)
/// and the samples per class.
#[derive(Clone, Debug)]
pub struct Written {
    pub meta: Meta,
    pub bytes: u64,
    pub per_class: Vec<usize>,
}

/// One shard's samples of a stored input: their bytes end to end and an index row
/// each (see [`super::stored`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredColumn {
    pub data: Vec<u8>,
    pub index: Vec<IndexRow>,
}

impl StoredColumn {
    /// Append one sample's bytes with its dims.
    pub fn push(&mut self, bytes: &[u8], dims: [i64; 3]) {
        self.index.push([self.data.len() as i64, bytes.len() as i64, dims[0], dims[1], dims[2]]);
        self.data.extend_from_slice(bytes);
    }
}
