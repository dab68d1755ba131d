//! `dataset.json`: what a dataset holds (task, classes, inputs with their per-sample
//! dtype and shape) and how many samples and shards. Read strictly: every field is
//! checked before a shard is opened. An input may name its stored form (`stored`:
//! `pixels`, `encoded`, `frames`, `pcm16`) and its `transform` (see [`super::stored`]);
//! `dtype` and `shape` are then what the model receives after the transform, and
//! must be the transform's f32 output.

use super::error::DataError;
use super::stored::{Form, Transform};
use super::tensor::type_text;
use crate::ir::DType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The metadata file's name inside a dataset directory.
pub const META_FILE: &str = "dataset.json";

/// An interrupted import's state (removed when the import finishes).
pub const IMPORT_STATE: &str = "import-state.json";

/// The file name of shard `i`: `shard-00000.safetensors`.
pub fn shard_file(i: usize) -> String {
    format!("shard-{i:05}.safetensors")
}

/// One input as the dataset declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub dtype: DType,
    /// Per sample (without the leading sample dimension).
    pub shape: Vec<i64>,
    /// Whether shards may lack this input.
    pub optional: bool,
    /// The stored form (`None`: a plain tensor of `dtype` and `shape`).
    pub stored: Option<Form>,
    /// The transform from the stored form (or recorded for a precomputed input).
    pub transform: Option<Transform>,
}

impl InputSpec {
    /// A plain input: one tensor of this dtype and per-sample shape.
    pub fn plain(dtype: DType, shape: Vec<i64>, optional: bool) -> InputSpec {
        InputSpec { dtype, shape, optional, stored: None, transform: None }
    }

    /// `f32[3, 8, 32, 32]`.
    pub fn type_text(&self) -> String {
        type_text(self.dtype, &self.shape)
    }
}

/// The parsed `dataset.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub task: String,
    pub classes: usize,
    /// One name per class (may be empty).
    pub class_names: Vec<String>,
    pub samples: usize,
    pub shards: usize,
    pub inputs: BTreeMap<String, InputSpec>,
    pub seed: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct RawInput {
    dtype: String,
    shape: Vec<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    optional: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stored: Option<Form>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    transform: Option<Transform>,
}

#[derive(Serialize, Deserialize)]
struct RawMeta {
    task: String,
    classes: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    class_names: Vec<String>,
    samples: usize,
    shards: usize,
    inputs: BTreeMap<String, RawInput>,
    #[serde(default)]
    seed: Option<u64>,
}

impl Meta {
    /// Read and check `DIR/dataset.json`.
    pub fn read(dir: &Path) -> Result<Meta, DataError> {
        let path = dir.join(META_FILE);
        // A regular file of plausible size (class names included): never a FIFO.
        let bytes = crate::input_file::read_limited(&path, 64 << 20).map_err(|e| DataError::io(&path, e))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| DataError::Meta { path: path.clone(), msg: "not UTF-8 text".into() })?;
        Meta::parse(&text).map_err(|msg| DataError::Meta { path, msg })
    }

    /// Parse and check the text of a `dataset.json`.
    pub fn parse(text: &str) -> Result<Meta, String> {
        let raw: RawMeta = serde_json::from_str(text).map_err(|e| format!("not a valid dataset.json: {e}"))?;
        use crate::bounds::{check_count, MAX_CLASSES, MAX_SAMPLES, MAX_SHARDS};
        check_count("classes", raw.classes as u64, MAX_CLASSES, false)?;
        check_count("samples", raw.samples as u64, MAX_SAMPLES, true)?;
        check_count("shards", raw.shards as u64, MAX_SHARDS, true)?;
        if !raw.class_names.is_empty() && raw.class_names.len() != raw.classes {
            return Err(format!("{} `class_names` for {} classes", raw.class_names.len(), raw.classes));
        }
        if raw.inputs.is_empty() {
            return Err("`inputs` is empty".into());
        }
        let mut inputs = BTreeMap::new();
        for (name, i) in raw.inputs {
            if name == "label" || name.starts_with("__") {
                return Err(format!("`{name}` is reserved and cannot be an input"));
            }
            let dtype = DType::parse(&i.dtype).ok_or_else(|| {
                format!("input `{name}`: unknown dtype `{}` (f32, f16, bf16, f64, i64, i32, bool)", i.dtype)
            })?;
            if i.shape.iter().any(|&d| d < 0) {
                return Err(format!("input `{name}`: negative dimension in {:?}", i.shape));
            }
            let bytes = super::tensor::numel(&i.shape).and_then(|n| n.checked_mul(super::tensor::elem_size(dtype)));
            if bytes.is_none_or(|b| b as u64 > crate::bounds::MAX_SAMPLE_BYTES) {
                return Err(format!(
                    "input `{name}`: one sample of shape {:?} is more than {} bytes",
                    i.shape,
                    crate::bounds::MAX_SAMPLE_BYTES
                ));
            }
            check_transform(&name, dtype, &i.shape, i.stored, i.transform.as_ref())?;
            if name.contains('.') {
                return Err(format!("input `{name}`: a name with `.` would clash with stored tensors' names"));
            }
            let spec =
                InputSpec { dtype, shape: i.shape, optional: i.optional, stored: i.stored, transform: i.transform };
            inputs.insert(name, spec);
        }
        if inputs.values().all(|i| i.optional) {
            return Err("every input is optional: at least one must be in every shard".into());
        }
        Ok(Meta {
            task: raw.task,
            classes: raw.classes,
            class_names: raw.class_names,
            samples: raw.samples,
            shards: raw.shards,
            inputs,
            seed: raw.seed,
        })
    }

    /// The JSON text (pretty, keys in a fixed order).
    pub fn to_json(&self) -> String {
        let raw = RawMeta {
            task: self.task.clone(),
            classes: self.classes,
            class_names: self.class_names.clone(),
            samples: self.samples,
            shards: self.shards,
            inputs: self
                .inputs
                .iter()
                .map(|(k, i)| {
                    (
                        k.clone(),
                        RawInput {
                            dtype: i.dtype.name().to_string(),
                            shape: i.shape.clone(),
                            optional: i.optional,
                            stored: i.stored,
                            transform: i.transform.clone(),
                        },
                    )
                })
                .collect(),
            seed: self.seed,
        };
        serde_json::to_string_pretty(&raw).unwrap_or_default() + "\n"
    }

    /// The name of class `c` (its number when unnamed).
    pub fn class_name(&self, c: usize) -> String {
        self.class_names.get(c).cloned().unwrap_or_else(|| c.to_string())
    }
}

/// A stored form needs a transform that reads it, and a transform's f32 output is
/// the declared dtype and shape.
fn check_transform(
    name: &str,
    dtype: DType,
    shape: &[i64],
    stored: Option<Form>,
    t: Option<&Transform>,
) -> Result<(), String> {
    let Some(t) = t else {
        return match stored {
            Some(f) => Err(format!("input `{name}` is stored as {} but has no `transform`", f.name())),
            None => Ok(()),
        };
    };
    t.validate().map_err(|e| format!("input `{name}`: transform: {e}"))?;
    if let Some(f) = stored.filter(|&f| !t.reads(f)) {
        return Err(format!("input `{name}`: its transform cannot read samples stored as {}", f.name()));
    }
    let out = t.output_shape();
    if dtype != DType::F32 || shape != out {
        return Err(format!(
            "input `{name}` is declared {}, but its transform gives {}",
            type_text(dtype, shape),
            type_text(DType::F32, &out)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_nonsense() {
        let text = r#"{"task": "t", "classes": 2, "samples": 4, "shards": 1, "seed": 3,
            "inputs": {"x": {"dtype": "f32", "shape": [2, 3]}, "y": {"dtype": "i64", "shape": [], "optional": true}}}"#;
        let m = Meta::parse(text).unwrap();
        assert_eq!(m.inputs["x"].type_text(), "f32[2, 3]");
        assert!(m.inputs["y"].optional);
        assert_eq!(Meta::parse(&m.to_json()).unwrap(), m);
        for bad in [
            text.replace("\"f32\"", "\"f8\""),
            text.replace("\"classes\": 2", "\"classes\": 0"),
            text.replace("\"x\"", "\"label\""),
            text.replace("[2, 3]", "[-2, 3]"),
            text.replace("\"samples\": 4,", ""),
            text.replace("\"shards\": 1", "\"shards\": 1000000000000"),
            text.replace("\"samples\": 4", "\"samples\": 10000000000000"),
            text.replace("\"classes\": 2", "\"classes\": 1000000000"),
        ] {
            assert!(Meta::parse(&bad).is_err(), "{bad}");
        }
    }
}
