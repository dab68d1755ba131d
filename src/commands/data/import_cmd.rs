//! `graft data import images|video|audio …` and `graft data sample`: flags onto the
//! data library's options, a progress bar (rate, ETA) fed by its callback, and the
//! summary with every skipped file and its reason.

use crate::data::import::{import, ImportOptions, ImportReport, Progress, Store};
use crate::data::sources::{detect, list_folder, list_manifest, list_webdataset, Layout, Listing};
use crate::data::stored::{AudioLayout, AudioTransform, EvalView, Transform, VideoLayout, VideoTransform, View};
use crate::data::transform::{ImageTransform, Interpolation, Normalize};
use crate::data::{fbank, Dataset};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// `graft data import …`
#[derive(clap::Subcommand, Debug)]
pub enum ImportCmd {
    /// An image-folder tree (ROOT/CLASS/*.jpg|png|webp), a CSV/JSONL manifest or WebDataset tars.
    Images(ImageArgs),
    /// Videos (mp4/webm/avi/mkv, through ffmpeg) or folders of frames, in class folders or a manifest.
    Video(VideoArgs),
    /// Audio files (WAV; others through ffmpeg) in class folders, a manifest or WebDataset tars.
    Audio(AudioArgs),
}

/// What every import takes.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// A class-folder tree, a `.csv`/`.jsonl` manifest, or a `.tar` / folder of `.tar`s.
    pub root: PathBuf,
    /// The dataset directory (created; a previous dataset there is replaced, an
    /// interrupted import of the same files continues).
    #[arg(long)]
    pub out: PathBuf,
    /// The layout of ROOT (default: detected).
    #[arg(long, value_enum)]
    pub format: Option<Layout>,
    /// Only the manifest rows of this split.
    #[arg(long)]
    pub split: Option<String>,
    /// The model input's name (default: image, video or audio).
    #[arg(long)]
    pub input: Option<String>,
    /// Samples per shard.
    #[arg(long, default_value_t = 512, value_parser = crate::bounds::count(crate::bounds::MAX_SAMPLES))]
    pub shard_size: usize,
    /// Seeds the order samples are stored in.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Make any skipped file an error.
    #[arg(long)]
    pub strict: bool,
    /// Converter threads (default: one per core, at most 8).
    #[arg(long, value_parser = crate::bounds::count(256))]
    pub workers: Option<usize>,
}

/// Image size, resize and normalisation (timm's conventions).
#[derive(clap::Args, Debug)]
pub struct ImageFlags {
    /// The model's input size (square).
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// Eval resizes the short side to image-size / crop-pct, then center-crops.
    #[arg(long)]
    pub crop_pct: Option<f64>,
    #[arg(long, value_enum, default_value = "bilinear")]
    pub interpolation: Interpolation,
    /// imagenet, clip, 0.5, none, or R,G,B.
    #[arg(long)]
    pub mean: Option<String>,
    /// The same name, or R,G,B.
    #[arg(long)]
    pub std: Option<String>,
    /// Stored pixels keep their short side at most this (default: the eval short side; 0: full size).
    #[arg(long)]
    pub store_short_side: Option<u32>,
    /// Training's horizontal-flip probability (0 where left and right matter).
    #[arg(long, default_value_t = 0.5)]
    pub hflip: f64,
    /// Training's smallest RandomResizedCrop area fraction (1: the whole image).
    #[arg(long, default_value_t = 0.08)]
    pub min_scale: f64,
}

impl ImageFlags {
    fn transform(&self, crop_pct: f64, mean: &str) -> anyhow::Result<ImageTransform> {
        let mut t = ImageTransform::new(self.image_size);
        t.crop_pct = self.crop_pct.unwrap_or(crop_pct);
        t.interpolation = self.interpolation;
        t.hflip = self.hflip;
        t.scale = (self.min_scale, 1.0);
        t.normalize =
            Normalize::parse(self.mean.as_deref().unwrap_or(mean), self.std.as_deref()).map_err(anyhow::Error::msg)?;
        t.validate().map_err(anyhow::Error::msg)?;
        Ok(t)
    }
}

/// `graft data import images ROOT --out DS …`
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub image: ImageFlags,
    /// pixels (uint8) or encoded (the files' bytes: crops at full resolution).
    #[arg(long, value_enum, default_value = "pixels")]
    pub store: Store,
}

/// `graft data import video ROOT --out DS …`
#[derive(clap::Args, Debug)]
pub struct VideoArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub image: ImageFlags,
    /// Frames per clip.
    #[arg(long, default_value_t = 16)]
    pub frames: u32,
    /// Frames between two picked frames (VideoMAE: 4).
    #[arg(long, default_value_t = 4)]
    pub sampling_rate: u32,
    /// The input's layout: cthw ([3, T, H, W]) or tchw ([T, 3, H, W]).
    #[arg(long, value_enum, default_value = "cthw")]
    pub layout: VideoLayout,
    /// Frames kept per video.
    #[arg(long, default_value_t = 600, value_parser = crate::bounds::count(100_000))]
    pub max_frames: usize,
}

/// `graft data import audio ROOT --out DS …`
#[derive(clap::Args, Debug)]
pub struct AudioArgs {
    #[command(flatten)]
    pub common: Common,
    /// The rate audio is resampled to.
    #[arg(long, default_value_t = 16000)]
    pub sample_rate: u32,
    #[arg(long, default_value_t = 128)]
    pub mel_bins: u32,
    /// Filter-bank frames (10 ms each), padded or cut (AST: 1024).
    #[arg(long, default_value_t = 1024)]
    pub frames: u32,
    /// tf ([T, F], ASTFeatureExtractor), ft, 1tf, 1ft.
    #[arg(long, value_enum, default_value = "tf")]
    pub layout: AudioLayout,
    #[arg(long, default_value_t = fbank::AST_MEAN, allow_hyphen_values = true)]
    pub mean: f32,
    #[arg(long, default_value_t = fbank::AST_STD)]
    pub std: f32,
    /// pcm16 (int16 samples, filter bank while reading) or fbank (precomputed f32).
    #[arg(long, value_enum, default_value = "pcm16")]
    pub store: Store,
}

/// `graft data sample DS [--train|--eval [--clip I/K] [--crop J/C]] [--seed S] [--n N] [--raw] --out FILE.safetensors`
#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    pub dir: PathBuf,
    /// The training augmentation (the default).
    #[arg(long, conflicts_with = "eval")]
    pub train: bool,
    /// The evaluation transform.
    #[arg(long)]
    pub eval: bool,
    /// With --eval: temporal window I (from 0) of K spread over each video, as
    /// `graft eval --clips K` reads them (default: 0/1, the central window).
    #[arg(long, value_name = "I/K", requires = "eval", value_parser = crate::bounds::view_of)]
    pub clip: Option<(u32, u32)>,
    /// With --eval: square crop J (from 0) of C spread along the long side, as
    /// `graft eval --crops C` reads them (default: 0/1, the center crop).
    #[arg(long, value_name = "J/C", requires = "eval", value_parser = crate::bounds::view_of)]
    pub crop: Option<(u32, u32)>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 8, value_parser = crate::bounds::count(crate::bounds::MAX_SAMPLES))]
    pub n: usize,
    #[arg(long)]
    pub out: PathBuf,
    /// Reader threads (default: one per core, at most 8).
    #[arg(long, value_parser = crate::bounds::count(256))]
    pub workers: Option<usize>,
    /// Image and video pixels as raw u8 (the transform's layout, not normalised), as
    /// a model input declared `normalized` takes them.
    #[arg(long)]
    pub raw: bool,
}

fn listing(c: &Common, is_sample: fn(&str) -> bool, frame_dirs: bool) -> anyhow::Result<Listing> {
    if !c.root.exists() {
        bail!("{}: no such file or folder", c.root.display());
    }
    Ok(match c.format.unwrap_or_else(|| detect(&c.root)) {
        Layout::Folder => list_folder(&c.root, is_sample, frame_dirs)?,
        Layout::Manifest => list_manifest(&c.root, c.split.as_deref())?,
        Layout::Webdataset => list_webdataset(&c.root, is_sample)?,
    })
}

fn workers(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8))
}

/// Run `graft data import …`.
pub fn run(cmd: &ImportCmd) -> anyhow::Result<()> {
    let (common, listing, opts, task) = match cmd {
        ImportCmd::Images(a) => {
            if !matches!(a.store, Store::Pixels | Store::Encoded) {
                bail!("--store for images is pixels or encoded");
            }
            let t = a.image.transform(0.875, "imagenet")?;
            let short = a.image.store_short_side.unwrap_or_else(|| t.eval_short_side());
            let l = listing(&a.common, crate::data::decode::is_image_name, false)?;
            (&a.common, l, (Transform::Image(t), a.store, short, 0, "image"), "images")
        }
        ImportCmd::Video(a) => {
            // VideoMAE evaluates at the short side = the crop (crop_pct 1).
            let t = a.image.transform(1.0, "imagenet")?;
            let short = a.image.store_short_side.unwrap_or_else(|| t.eval_short_side());
            let is_video = |n: &str| crate::data::video::is_video_name(n);
            let l = listing(&a.common, is_video, true)?;
            if l.items.iter().any(|i| matches!(i.source, crate::data::sources::ItemSource::File(_))) {
                crate::data::video::find_ffmpeg().map_err(anyhow::Error::msg)?;
            }
            let v = VideoTransform { frames: a.frames, sampling_rate: a.sampling_rate, layout: a.layout, image: t };
            (&a.common, l, (Transform::Video(v), Store::Frames, short, a.max_frames, "video"), "video")
        }
        ImportCmd::Audio(a) => {
            if !matches!(a.store, Store::Pcm16 | Store::Fbank) {
                bail!("--store for audio is pcm16 or fbank");
            }
            let t = AudioTransform {
                sample_rate: a.sample_rate,
                mel_bins: a.mel_bins,
                frames: a.frames,
                mean: a.mean,
                std: a.std,
                layout: a.layout,
            };
            Transform::Audio(t.clone()).validate().map_err(anyhow::Error::msg)?;
            let l = listing(&a.common, crate::data::audio::is_audio_name, false)?;
            let needs_ffmpeg = l.items.iter().any(|i| !i.name.to_ascii_lowercase().ends_with(".wav"));
            if needs_ffmpeg {
                crate::data::video::find_ffmpeg().map_err(anyhow::Error::msg)?;
            }
            (&a.common, l, (Transform::Audio(t), a.store, 0, 0, "audio"), "audio")
        }
    };
    let (transform, store, store_short_side, max_frames, default_input) = opts;
    let opts = ImportOptions {
        input: common.input.clone().unwrap_or_else(|| default_input.to_string()),
        store,
        transform,
        store_short_side,
        max_frames,
        shard_size: common.shard_size,
        seed: common.seed,
        strict: common.strict,
        workers: workers(common.workers),
    };
    let start = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(listing.items.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} importing [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut on_progress = |p: &Progress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(format!("{} skipped, {}", p.skipped, mib(p.bytes)));
    };
    let report = import(listing, &common.out, task, &opts, &mut on_progress)
        .with_context(|| format!("importing {} into {}", common.root.display(), common.out.display()))?;
    bar.finish_and_clear();
    summary(&common.out, &report, start.elapsed().as_secs_f64());
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn summary(out: &Path, r: &ImportReport, secs: f64) {
    let m = &r.written.meta;
    println!(
        "{}: {} samples in {} shards, {} classes, {}",
        out.display(),
        m.samples,
        m.shards,
        m.classes,
        mib(r.written.bytes)
    );
    if r.resumed > 0 {
        println!("  resumed after {} samples imported before", r.resumed);
    }
    for (name, i) in &m.inputs {
        let stored = i.stored.map(|f| format!(", stored as {}", f.name())).unwrap_or_default();
        println!("  input {name}: {}{stored}", i.type_text());
        if let Some(t) = &i.transform {
            println!("    transform: {}", describe(t));
        }
    }
    println!("  time     {secs:.2} s ({:.0} samples/s)", m.samples as f64 / secs.max(1e-9));
    if !r.skipped.is_empty() {
        println!("  skipped  {} files:", r.skipped.len());
        for s in &r.skipped {
            println!("    {}: {}", s.item, s.reason);
        }
    }
}

/// One line describing a transform (for `check` and `import`).
pub fn describe(t: &Transform) -> String {
    let image = |i: &ImageTransform| {
        let stats = i
            .normalize
            .name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("mean {:?} std {:?}", i.normalize.mean, i.normalize.std));
        format!(
            "{}² ({:?}; train RandomResizedCrop + flip, eval short side {} + center crop), normalised {stats}",
            i.size,
            i.interpolation,
            i.eval_short_side()
        )
        .to_lowercase()
    };
    match t {
        Transform::Image(i) => image(i),
        Transform::Video(v) => {
            format!("{} frames every {} ({:?}), {}", v.frames, v.sampling_rate, v.layout, image(&v.image))
        }
        Transform::Audio(a) => format!(
            "kaldi fbank, {} mel bins × {} frames at {} Hz ({:?}), (x - {}) / (2 × {})",
            a.mel_bins, a.frames, a.sample_rate, a.layout, a.mean, a.std
        ),
    }
}

/// Run `graft data sample`.
pub fn sample(a: &SampleArgs) -> anyhow::Result<()> {
    let (clip, clips) = a.clip.unwrap_or((0, 1));
    let (crop, crops) = a.crop.unwrap_or((0, 1));
    let view = if a.eval { View::Eval(EvalView { clip, clips, crop, crops }) } else { View::Train };
    let ds = Dataset::open(&a.dir)?.with_view(view).with_workers(a.workers.unwrap_or(0));
    let ds = match a.raw {
        true => {
            let raw = ds.pixel_inputs();
            ds.with_raw(raw)
        }
        false => ds,
    };
    if a.out.starts_with(&a.dir) {
        bail!("--out {} is inside the dataset {}: choose a path outside it", a.out.display(), a.dir.display());
    }
    let batch = crate::data::sample::first_samples(&ds, a.n, a.seed)?;
    crate::data::sample::write_batch(&batch, &a.out)?;
    let shapes: Vec<String> = batch.inputs.iter().map(|(k, t)| format!("{k} {}", t.type_text())).collect();
    println!(
        "{}: {} samples ({}, seed {}): {}, label i64[{}]",
        a.out.display(),
        batch.len(),
        if !a.eval {
            "train".to_string()
        } else if view == View::Eval(EvalView::CENTRE) {
            "eval".to_string()
        } else {
            format!("eval, clip {clip}/{clips}, crop {crop}/{crops}")
        },
        a.seed,
        shapes.join(", "),
        batch.len()
    );
    Ok(())
}
