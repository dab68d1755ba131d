//! `graft data synth --format files`: a synthetic video task written as the files
//! people have — one folder of PNG frames per sample, in class folders
//! (`OUT/CLASS/00000/img_00001.png …`, the frame-dump layout `graft data import video`
//! reads) — so the demo trains through the real import and decoding path.
//!
//! The samples are exactly those of the tensor form (same seed, same labels); each
//! value `v` (about −1.2…1.2) is stored as the 8-bit level `round((v + 1.2) / 2.4 ·
//! 255)`, so importing with `--mean 0.5,0.5,0.5 --std` [`FILES_STD`] gives back `v`
//! to within one level. The tree is staged and published in one rename.

use super::error::DataError;
use super::render::{self, VIDEO_LEN};
use super::synth::{factors, SynthOptions, Task};
use crate::durable::StagedDir;
use crate::rng::{hash_str, Rng};
use std::path::Path;

/// The std that maps the stored levels back onto the tensor values (mean 0.5).
pub const FILES_STD: f32 = 1.0 / 2.4;
/// Frames and size of a synthetic clip.
const T: usize = 8;
const S: usize = 32;

/// What was written: samples per class.
#[derive(Clone, Debug)]
pub struct FilesSummary {
    pub samples: usize,
    pub per_class: Vec<(String, usize)>,
}

/// Write the task's samples as frame folders under `out` (which must not exist).
pub fn synth_files(opts: &SynthOptions, out: &Path) -> Result<FilesSummary, DataError> {
    let task = opts.task;
    if !matches!(task, Task::Pretrain | Task::Motion) {
        return Err(DataError::Invalid(format!(
            "--format files writes the video tasks (pretrain, motion); task {} has audio or pose tensors",
            task.name()
        )));
    }
    if opts.n == 0 {
        return Err(DataError::Invalid("--n must be at least 1".into()));
    }
    if out.exists() {
        return Err(DataError::Invalid(format!("{} exists: --format files writes a new folder", out.display())));
    }
    let tid = hash_str(task.name());
    let classes = task.class_names();
    let mut labels: Vec<usize> = (0..opts.n).map(|i| i % classes.len()).collect();
    Rng::derive(&[opts.seed, tid, hash_str("labels")]).shuffle(&mut labels);
    let staged = StagedDir::new(out)?;
    let mut per_class = vec![0usize; classes.len()];
    let mut video = vec![0.0f32; VIDEO_LEN];
    for (i, &label) in labels.iter().enumerate() {
        let stream = |purpose: &str| Rng::derive(&[opts.seed, tid, i as u64, hash_str(purpose)]);
        let f = factors(task, label, &mut stream("factors"));
        render::video(f.shape, f.direction, &mut stream("video"), &mut video);
        let folder = format!("{}/{i:05}", classes[label]);
        std::fs::create_dir_all(staged.path().join(&folder)).map_err(|e| DataError::io(&out.join(&folder), e))?;
        for t in 0..T {
            let mut rgb = vec![0u8; S * S * 3];
            for (p, px) in rgb.chunks_exact_mut(3).enumerate() {
                for (c, v) in px.iter_mut().enumerate() {
                    let x = video[(c * T + t) * S * S + p];
                    *v = (((x + 1.2) / 2.4).clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
            let mut png = Vec::new();
            image::write_buffer_with_format(
                &mut std::io::Cursor::new(&mut png),
                &rgb,
                S as u32,
                S as u32,
                image::ExtendedColorType::Rgb8,
                image::ImageFormat::Png,
            )
            .map_err(|e| DataError::Invalid(format!("encoding a PNG frame: {e}")))?;
            staged.write(&format!("{folder}/img_{:05}.png", t + 1), &png)?;
        }
        per_class[label] += 1;
    }
    staged.publish()?;
    Ok(FilesSummary { samples: opts.n, per_class: classes.into_iter().zip(per_class).collect() })
}
