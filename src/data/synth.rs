//! Synthetic datasets: small, CPU-friendly tensors, deterministic from a seed.
//!
//! Every sample is generated from its own random stream `(seed, task, sample index,
//! purpose)`, so a dataset does not depend on the shard size, and leaving a modality
//! out of a shard (`--drop`) changes nothing else. Labels are a seeded permutation of
//! `0, 1, …, classes-1, 0, 1, …`: class counts differ by at most one.
//!
//! Tasks (renderers in [`super::render`]):
//!
//! | task | inputs | classes | label |
//! |---|---|---|---|
//! | `pretrain` | video | 4 | the shape (square, disc, cross, triangle); direction, colour, size random |
//! | `audio_pretrain` | audio | 4 | the audio band; rhythm random |
//! | `motion` | video | 4 | the direction (right, left, down, up); shape random |
//! | `multimodal` | video, audio?, pose? | 8 | axis × pitch × gesture group (below) |
//!
//! `multimodal`: label = 4·axis + 2·pitch + group, where axis is the motion axis
//! (horizontal = right/left, vertical = down/up), pitch the audio band pair (low =
//! bands 0/1, high = bands 2/3) and group the gesture pair (hands up = wave/raise,
//! hands low = clap/squat). Each modality determines exactly one of the three bits and
//! says nothing about the others (shape, colour, rhythm, the direction within the
//! axis, … are random), so the Bayes ceilings of the accuracy are:
//!
//! | inputs seen | ceiling | (chance 12.5%) |
//! |---|---|---|
//! | video only | 25% | 1 bit of 3 |
//! | video + audio | 50% | 2 bits |
//! | video + pose | 50% | 2 bits |
//! | video + audio + pose | 100% | all 3 (the noise never hides a factor) |
//!
//! A model that uses the extra modalities therefore shows it plainly: 25% → 50% → 100%.
//! `audio` and `pose` are optional inputs; `drop` writes a fraction of the shards
//! without one (whole shards, chosen by the seed), for missing-modality training and
//! evaluation.

use super::error::DataError;
use super::meta::InputSpec;
use super::render::{self, AUDIO_LEN, POSE_LEN, VIDEO_LEN};
use super::tensor::{Batch, HostTensor};
use super::writer::{DatasetWriter, Written};
use crate::ir::DType;
use crate::rng::{hash_str, Rng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A synthetic task.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// Shape class from video (4 classes): pretraining a tiny video ViT.
    Pretrain,
    /// Audio band from the spectrogram (4 classes): an auxiliary audio model.
    #[value(name = "audio_pretrain", alias = "audio-pretrain")]
    AudioPretrain,
    /// Video + audio + pose, 8 classes; each modality carries one bit.
    Multimodal,
    /// Motion direction from video (4 classes): a transfer task.
    Motion,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Pretrain => "pretrain",
            Task::AudioPretrain => "audio_pretrain",
            Task::Multimodal => "multimodal",
            Task::Motion => "motion",
        }
    }

    pub fn class_names(self) -> Vec<String> {
        let own = |xs: [&str; 4]| xs.iter().map(|s| s.to_string()).collect();
        match self {
            Task::Pretrain => own(render::SHAPES),
            Task::AudioPretrain => own(render::BANDS),
            Task::Motion => own(render::DIRECTIONS),
            Task::Multimodal => (0..8)
                .map(|l| {
                    let axis = ["horizontal", "vertical"][l >> 2];
                    let pitch = ["low", "high"][(l >> 1) & 1];
                    let group = ["hands_up", "hands_low"][l & 1];
                    format!("{axis}/{pitch}/{group}")
                })
                .collect(),
        }
    }

    /// Inputs with their per-sample shape; `optional` marks what `drop` may leave out.
    pub fn inputs(self) -> BTreeMap<String, InputSpec> {
        let spec = |shape: &[i64], optional| InputSpec::plain(DType::F32, shape.to_vec(), optional);
        let mut m = BTreeMap::new();
        if self != Task::AudioPretrain {
            m.insert("video".to_string(), spec(&render::VIDEO_SHAPE, false));
        }
        match self {
            Task::AudioPretrain => {
                m.insert("audio".to_string(), spec(&render::AUDIO_SHAPE, false));
            }
            Task::Multimodal => {
                m.insert("audio".to_string(), spec(&render::AUDIO_SHAPE, true));
                m.insert("pose".to_string(), spec(&render::POSE_SHAPE, true));
            }
            _ => {}
        }
        m
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub task: Task,
    pub n: usize,
    pub seed: u64,
    pub shard_size: usize,
    /// (optional input, fraction of shards written without it).
    pub drop: Vec<(String, f64)>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Summary {
    pub out: PathBuf,
    pub written: Written,
    /// (input, shards without it, samples without it).
    pub dropped: Vec<(String, usize, usize)>,
}

/// The factors behind one sample.
pub(super) struct Factors {
    pub shape: usize,
    pub direction: usize,
    pub band: usize,
    pub rhythm: usize,
    gesture: usize,
}

pub(super) fn factors(task: Task, label: usize, rng: &mut Rng) -> Factors {
    let mut f = Factors {
        shape: rng.below(4) as usize,
        direction: rng.below(4) as usize,
        band: rng.below(4) as usize,
        rhythm: rng.below(2) as usize,
        gesture: rng.below(4) as usize,
    };
    match task {
        Task::Pretrain => f.shape = label,
        Task::AudioPretrain => f.band = label,
        Task::Motion => f.direction = label,
        Task::Multimodal => {
            // The random draws above pick the member of each pair.
            f.direction = 2 * (label >> 2) + f.direction % 2;
            f.band = 2 * ((label >> 1) & 1) + f.band % 2;
            f.gesture = 2 * (label & 1) + f.gesture % 2;
        }
    }
    f
}

/// Generate the dataset into `out` and return what was written.
pub fn synth(opts: &SynthOptions, out: &Path) -> Result<Summary, DataError> {
    let task = opts.task;
    if opts.n == 0 || opts.shard_size == 0 {
        return Err(DataError::Invalid("--n and --shard-size must be at least 1".into()));
    }
    let inputs = task.inputs();
    let shards = opts.n.div_ceil(opts.shard_size);
    let tid = hash_str(task.name());
    // Which shards lack which input.
    let mut absent: Vec<Vec<&str>> = vec![Vec::new(); shards];
    let mut dropped = Vec::new();
    for (name, fraction) in &opts.drop {
        match inputs.get(name) {
            Some(s) if s.optional => {}
            Some(_) => {
                return Err(DataError::Invalid(format!(
                    "--drop {name}: `{name}` is a required input of task {}",
                    task.name()
                )))
            }
            None => {
                let have: Vec<&str> = inputs.keys().map(String::as_str).collect();
                return Err(DataError::Invalid(format!(
                    "--drop {name}: task {} has no input `{name}` (it has {})",
                    task.name(),
                    have.join(", ")
                )));
            }
        }
        if !(0.0..=1.0).contains(fraction) {
            return Err(DataError::Invalid(format!("--drop {name}:{fraction}: the fraction must be in [0, 1]")));
        }
        let k = (fraction * shards as f64).round() as usize;
        let mut order: Vec<usize> = (0..shards).collect();
        Rng::derive(&[opts.seed, tid, hash_str(name), hash_str("drop")]).shuffle(&mut order);
        let mut samples = 0;
        for &s in &order[..k] {
            absent[s].push(name);
            samples += opts.shard_size.min(opts.n - s * opts.shard_size);
        }
        dropped.push((name.clone(), k, samples));
    }

    let classes = task.class_names();
    let mut labels: Vec<usize> = (0..opts.n).map(|i| i % classes.len()).collect();
    Rng::derive(&[opts.seed, tid, hash_str("labels")]).shuffle(&mut labels);
    let mut w = DatasetWriter::create(out, task.name(), classes.len(), classes, inputs.clone(), Some(opts.seed))?;
    for (s, absent) in absent.iter().enumerate() {
        let range = s * opts.shard_size..((s + 1) * opts.shard_size).min(opts.n);
        let m = range.len();
        let wanted = |name: &str| inputs.contains_key(name) && !absent.contains(&name);
        let mut video = vec![0.0f32; if wanted("video") { m * VIDEO_LEN } else { 0 }];
        let mut audio = vec![0.0f32; if wanted("audio") { m * AUDIO_LEN } else { 0 }];
        let mut pose = vec![0.0f32; if wanted("pose") { m * POSE_LEN } else { 0 }];
        let mut batch_labels = Vec::with_capacity(m);
        for (j, i) in range.enumerate() {
            let stream = |purpose: &str| Rng::derive(&[opts.seed, tid, i as u64, hash_str(purpose)]);
            let label = labels[i];
            let f = factors(task, label, &mut stream("factors"));
            if !video.is_empty() {
                render::video(
                    f.shape,
                    f.direction,
                    &mut stream("video"),
                    &mut video[j * VIDEO_LEN..(j + 1) * VIDEO_LEN],
                );
            }
            if !audio.is_empty() {
                render::audio(f.band, f.rhythm, &mut stream("audio"), &mut audio[j * AUDIO_LEN..(j + 1) * AUDIO_LEN]);
            }
            if !pose.is_empty() {
                render::pose(f.gesture, &mut stream("pose"), &mut pose[j * POSE_LEN..(j + 1) * POSE_LEN]);
            }
            batch_labels.push(label as i64);
        }
        let mut batch = Batch { inputs: BTreeMap::new(), labels: batch_labels };
        for (name, values) in [("video", video), ("audio", audio), ("pose", pose)] {
            if values.is_empty() {
                continue;
            }
            let mut shape = vec![m as i64];
            shape.extend_from_slice(&inputs[name].shape);
            let t = HostTensor::from_f32(&shape, &values)
                .ok_or_else(|| DataError::Invalid(format!("bad shape for `{name}`")))?;
            batch.inputs.insert(name.to_string(), t);
        }
        w.write_shard(&batch)?;
    }
    let written = w.finish()?;
    Ok(Summary { out: out.to_path_buf(), written, dropped })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.written.meta;
        writeln!(f, "wrote {} dataset to {} (seed {})", m.task, self.out.display(), m.seed.unwrap_or(0))?;
        writeln!(
            f,
            "  samples  {} in {} shard{}, {} classes",
            m.samples,
            m.shards,
            if m.shards == 1 { "" } else { "s" },
            m.classes
        )?;
        for (name, i) in &m.inputs {
            writeln!(f, "  input    {name}: {}{}", i.type_text(), if i.optional { " optional" } else { "" })?;
        }
        for (name, shards, samples) in &self.dropped {
            writeln!(f, "  absent   {name} from {shards} of {} shards ({samples} samples)", m.shards)?;
        }
        let width = m.class_names.iter().map(String::len).max().unwrap_or(0);
        for (c, n) in self.written.per_class.iter().enumerate() {
            writeln!(f, "  class {c}  {:<width$}  {n}", m.class_name(c))?;
        }
        writeln!(
            f,
            "  bytes    {} ({:.1} MiB)",
            crate::report::thousands(self.written.bytes),
            self.written.bytes as f64 / (1 << 20) as f64
        )
    }
}
