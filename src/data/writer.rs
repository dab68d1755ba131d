//! Writing a dataset: shards one at a time (each checked against the declared inputs
//! and written atomically), then `dataset.json` last, so a directory with a
//! `dataset.json` always describes complete shards. Usable for converting real data.

use super::error::DataError;
use super::meta::{shard_file, InputSpec, Meta, META_FILE};
use super::safetensors::encode;
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

    /// Write the next shard: `batch` must hold every required input with shape
    /// `[n, per-sample shape…]`, optional ones may be absent, labels in `0..classes`.
    pub fn write_shard(&mut self, batch: &Batch) -> Result<PathBuf, DataError> {
        let path = self.dir.join(shard_file(self.meta.shards));
        let n = batch.labels.len();
        let mut tensors: BTreeMap<String, HostTensor> = BTreeMap::new();
        for (name, spec) in &self.meta.inputs {
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
        if let Some(extra) = batch.inputs.keys().find(|k| !self.meta.inputs.contains_key(*k)) {
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
        let bytes = encode(&tensors, &metadata)?;
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
