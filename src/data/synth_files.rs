//! `graft data synth --format files`: a synthetic task written as the files people
//! have, in class folders, so the demo trains through the real import and decoding
//! path. The tree is staged and published in one rename.
//!
//! - Video tasks (pretrain, motion): one folder of PNG frames per sample
//!   (`OUT/CLASS/00000/img_00001.png …`, the frame-dump layout `graft data import
//!   video` reads). The samples are exactly those of the tensor form (same seed, same
//!   labels); each value `v` (about −1.2…1.2) is stored as the 8-bit level
//!   `round((v + 1.2) / 2.4 · 255)`, so importing with `--mean 0.5,0.5,0.5 --std`
//!   [`FILES_STD`] gives back `v` to within one level.
//! - The audio task (audio_pretrain): one 16 kHz mono 16-bit WAV per sample
//!   (`OUT/CLASS/00000.wav`, the layout `graft data import audio` reads), the sound the
//!   tensor form draws as a spectrogram: a tone at the centre of the class's band of
//!   a 32-bin Kaldi mel scale (± 1.5 bins), pulsing slow or fast, over a noise floor
//!   with two clicks; 0.655 s, exactly 64 filter-bank frames. The labels and factors
//!   are the tensor form's; the features are the filter bank's, not its numbers.

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
    /// What each sample was written as ("WAV files", …).
    pub kind: &'static str,
    pub per_class: Vec<(String, usize)>,
}

/// Samples of a synthetic WAV: 64 frames of 25 ms every 10 ms at 16 kHz.
pub const WAV_SAMPLES: usize = 400 + 63 * 160;
pub const WAV_RATE: u32 = 16000;
/// Mel bins and frames of the filter bank the WAVs are made for.
pub const WAV_MEL_BINS: u32 = 32;
pub const WAV_FRAMES: u32 = 64;

/// What each sample is written as.
fn kind(task: Task) -> Result<&'static str, DataError> {
    match task {
        Task::Pretrain | Task::Motion => Ok("PNG frame folders"),
        Task::AudioPretrain => Ok("WAV files"),
        Task::Multimodal => Err(DataError::Invalid(
            "--format files writes the video tasks (pretrain, motion) and the audio task (audio_pretrain); \
             task multimodal has pose tensors"
                .into(),
        )),
    }
}

/// How to import what [`synth_files`] wrote for `task` into `out` (the arguments
/// after `graft data import`).
pub fn import_hint(task: Task, files: &Path) -> String {
    match task {
        Task::AudioPretrain => format!(
            "audio {} --out DS --sample-rate {WAV_RATE} --mel-bins {WAV_MEL_BINS} --frames {WAV_FRAMES} --layout 1ft",
            files.display()
        ),
        _ => format!(
            "video {} --out DS --frames 8 --sampling-rate 1 --image-size 32 --crop-pct 1 --mean 0.5,0.5,0.5 --std {s},{s},{s} --hflip 0 --min-scale 1",
            files.display(),
            s = FILES_STD
        ),
    }
}

/// Write the task's samples as files under `out` (which must not exist): frame
/// folders for a video task, WAVs for the audio task.
pub fn synth_files(opts: &SynthOptions, out: &Path) -> Result<FilesSummary, DataError> {
    let task = opts.task;
    let kind = kind(task)?;
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
        if task == Task::AudioPretrain {
            let folder = staged.path().join(classes[label].as_str());
            std::fs::create_dir_all(&folder).map_err(|e| DataError::io(&out.join(&classes[label]), e))?;
            let wav = wav_bytes(&waveform(f.band, f.rhythm, &mut stream("audio")))?;
            staged.write(&format!("{}/{i:05}.wav", classes[label]), &wav)?;
            per_class[label] += 1;
            continue;
        }
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
    Ok(FilesSummary { samples: opts.n, kind, per_class: classes.into_iter().zip(per_class).collect() })
}

/// The frequency at fractional bin `bin` of a `WAV_MEL_BINS`-bin Kaldi mel scale
/// (20 Hz to Nyquist; bin `b` centred at `lo + (b + 1) · delta`).
fn bin_hz(bin: f64) -> f64 {
    let mel = |f: f64| 1127.0 * (1.0 + f / 700.0).ln();
    let (lo, hi) = (mel(20.0), mel(WAV_RATE as f64 / 2.0));
    let m = lo + (bin + 1.0) * (hi - lo) / (WAV_MEL_BINS + 1) as f64;
    700.0 * ((m / 1127.0).exp() - 1.0)
}

/// One sample's sound in `[-1, 1]`: the tone of `band`, on for half of each period of
/// 16 (`rhythm` 0) or 8 frames, over noise, with two clicks (one-sample impulses).
/// Levels are set for what the filter bank sees after its pre-emphasis
/// (`x[i] − 0.97 x[i−1]`): the tone equally loud in every band, the noise white.
fn waveform(band: usize, rhythm: usize, rng: &mut Rng) -> Vec<f32> {
    use std::f64::consts::TAU;
    let hz = bin_hz((render::BAND_CENTRES[band] + rng.range(-1.5, 1.5)) as f64);
    let w = TAU * hz / WAV_RATE as f64;
    let emphasis = (1.0 - 2.0 * 0.97 * w.cos() + 0.97 * 0.97).sqrt();
    let amp = rng.range(0.05, 0.1) as f64 / emphasis;
    let period = if rhythm == 0 { 16 } else { 8 };
    let phase = rng.below(period as u64) as usize;
    let clicks = [rng.below(WAV_FRAMES as u64) as usize, rng.below(WAV_FRAMES as u64) as usize];
    let start = rng.range(0.0, std::f32::consts::TAU) as f64;
    let mut white = vec![0.0f32; WAV_SAMPLES];
    rng.fill_noise(&mut white, 0.003);
    let mut noise = 0.0f32;
    let mut x = vec![0.0f32; WAV_SAMPLES];
    for (s, v) in x.iter_mut().enumerate() {
        noise = 0.97 * noise + white[s];
        *v = noise;
        let frame = s / 160;
        if (frame + phase) % period < period / 2 {
            *v += (amp * (start + w * s as f64).sin()) as f32;
        }
        if clicks.contains(&frame) && s % 160 == 80 {
            *v += 0.1;
        }
    }
    x
}

/// A 16-bit mono WAV of `x` at [`WAV_RATE`].
fn wav_bytes(x: &[f32]) -> Result<Vec<u8>, DataError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: WAV_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = Vec::new();
    let fail = |e: hound::Error| DataError::Invalid(format!("encoding a WAV file: {e}"));
    let mut w = hound::WavWriter::new(std::io::Cursor::new(&mut bytes), spec).map_err(fail)?;
    for &v in x {
        w.write_sample((v.clamp(-1.0, 1.0) * 32767.0).round() as i16).map_err(fail)?;
    }
    w.finalize().map_err(fail)?;
    Ok(bytes)
}
