//! Datasets for `graft train`: a directory of safetensors shards read as a stream of
//! shuffled batches, plus synthetic tasks to try the whole flow on a CPU. Pure Rust,
//! no LibTorch: a batch is host bytes ([`HostTensor`]) that a backend copies once.
//!
//! # Dataset format
//!
//! A dataset is a directory:
//!
//! ```text
//! data/multimodal/
//!   dataset.json
//!   shard-00000.safetensors
//!   shard-00001.safetensors
//!   …
//! ```
//!
//! Each shard is a safetensors file holding one tensor per model input, named exactly
//! like the model's `input` (first dimension = the samples in that shard), plus `label`
//! (`i64[n]`, values in `0..classes`). An input `dataset.json` marks `optional` may be
//! absent from a shard: that shard's samples lack the modality. All tensors of a shard
//! hold the same number of samples.
//!
//! `dataset.json`:
//!
//! ```json
//! {
//!   "task": "multimodal",
//!   "classes": 8,
//!   "class_names": ["horizontal/low/hands_up", "…"],
//!   "samples": 2000,
//!   "shards": 8,
//!   "inputs": {
//!     "audio": { "dtype": "f32", "shape": [1, 32, 64], "optional": true },
//!     "pose":  { "dtype": "f32", "shape": [8, 5, 2],   "optional": true },
//!     "video": { "dtype": "f32", "shape": [3, 8, 32, 32] }
//!   },
//!   "seed": 0
//! }
//! ```
//!
//! `shape` is per sample (without the sample dimension); `dtype` is a graft dtype
//! (`f32`, `f16`, `bf16`, `f64`, `i64`, `i32`, `bool`); `class_names` and `seed` may
//! be left out; `optional` defaults to `false`, and at least one input is not
//! optional. Shards are `shard-00000.safetensors` … `shard-{shards-1}`. Shards and
//! `dataset.json` are written atomically (a temporary file, then a rename), shards
//! first and `dataset.json` last, so a directory with a `dataset.json` is complete.
//!
//! Opening a dataset checks `dataset.json` and every shard's header (no tensor data is
//! read): a missing or unreadable shard, a file that is not safetensors, a truncated
//! one, a missing `label`, a dtype or per-sample shape that disagrees with
//! `dataset.json`, tensors whose sample counts disagree, an undeclared tensor, or a
//! missing required input is an error naming the shard file and the tensor. Batches
//! are streamed: shard order and sample order are shuffled deterministically from
//! `(seed, epoch)`, two shards are in memory at a time, and a batch never mixes
//! samples with and without an optional input. [`Dataset::check_against`] checks a
//! dataset against a model's inputs (names, dtypes, per-sample shapes; optional model
//! inputs may be missing). A stored image or video input named in [`Dataset::raw`]
//! arrives as its u8 pixels instead of normalised f32, for a model input declared
//! `normalized` that normalises them itself ([`crate::ir::PixelNorm`]).
//!
//! # Code map
//!
//! | file | what it is |
//! |---|---|
//! | `meta.rs` | `dataset.json` |
//! | `reader.rs` | [`Dataset::open`], shard validation, [`Dataset::check_against`] |
//! | `batches.rs` | the shuffled batch stream of one epoch |
//! | `writer.rs` | [`DatasetWriter`]: shards, then `dataset.json` |
//! | `render.rs`, `synth.rs` | synthetic video / audio / pose and the tasks |
//! | `stored.rs` | stored forms (`pixels`, `encoded`, `frames`, `pcm16`), transforms, [`stored::materialize`] |
//! | `decode.rs` | image files → RGB, as PIL's `convert("RGB")` |
//! | `transform.rs` | RandomResizedCrop, flip, resize + center crop, antialiased resize, normalisation |
//! | `fbank.rs` | the Kaldi filter bank of `ASTFeatureExtractor` |
//! | `audio.rs`, `video.rs` | WAV, resampling; `ffmpeg` / `ffprobe`, frame folders |
//! | `sources.rs`, `import.rs` | what `graft data import` lists and how it converts and shards it |
//! | `synth_files.rs` | `graft data synth --format files`: the video tasks as PNG frame folders, the audio task as WAVs |
//! | `sample.rs` | the first samples as the model receives them (`graft data sample`) |
//!
//! The commands (`graft data …`) live in `src/commands/data/`: this library prints
//! nothing and reports import progress through a callback.

pub mod audio;
pub mod batches;
pub mod decode;
pub mod error;
pub mod fbank;
pub mod import;
pub mod jpeg;
mod mapped;
pub mod meta;
pub mod reader;
pub mod render;
pub mod sample;
pub mod sources;
pub mod stored;
pub mod synth;
pub mod synth_files;
pub mod tensor;
pub mod transform;
pub mod video;
pub mod writer;

/// The container, shared with the rest of the crate.
pub use crate::safetensors;
pub use batches::{Batches, Pending};
pub use error::DataError;
pub use meta::{InputSpec, Meta};
pub use reader::{model_inputs, Dataset, ModelInput, ShardInfo};
pub use stored::{EvalView, Form, Transform, VideoLayout, View};
pub use synth::{synth, Summary, SynthOptions, Task};
pub use tensor::{Batch, HostTensor};
pub use writer::{DatasetWriter, StoredColumn, Written};
