//! `graft data bench`: how fast the input pipeline reads a dataset, nothing written.
//! The batches are exactly the ones training or evaluation reads (shuffled from the
//! seed, decoded and transformed on the reader threads); the clock runs from before
//! the stream opens to the last sample, as a `DataLoader` loop is timed.
//!
//! ```text
//! graft data bench DS [--train|--eval] [--batch N] [--n N] [--workers N] [--raw] [--seed S] [--json]
//! ```

use crate::data::{Dataset, EvalView, View};
use anyhow::bail;
use std::path::PathBuf;
use std::time::Instant;

/// `graft data bench`
#[derive(clap::Args, Debug)]
pub struct DataBenchArgs {
    pub dir: PathBuf,
    /// The training augmentation (the default).
    #[arg(long, conflicts_with = "eval")]
    pub train: bool,
    /// The evaluation transform.
    #[arg(long)]
    pub eval: bool,
    /// Samples per batch.
    #[arg(long, default_value_t = 64, value_parser = crate::bounds::count(crate::bounds::MAX_BATCH))]
    pub batch: usize,
    /// Samples to read (default: one epoch); the stream goes on into later epochs.
    #[arg(long, value_parser = crate::bounds::count(crate::bounds::MAX_SAMPLES))]
    pub n: Option<usize>,
    /// Reader threads (default: one per core, at most 8).
    #[arg(long, value_parser = crate::bounds::count(crate::data::batches::MAX_WORKERS))]
    pub workers: Option<usize>,
    /// Image and video pixels as raw u8 (the transform's layout, not normalised), as
    /// a model input declared `normalized` takes them.
    #[arg(long)]
    pub raw: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What one `graft data bench` measured.
#[derive(serde::Serialize, Debug)]
pub struct DataBench {
    pub samples: u64,
    pub batches: u64,
    pub seconds: f64,
    pub samples_per_s: f64,
    pub workers: usize,
    pub samples_per_s_per_worker: f64,
    /// From opening the stream to the first batch.
    pub first_batch_s: f64,
    /// Pixels handed over raw (u8) rather than normalised (f32).
    pub raw: bool,
}

/// Run `graft data bench`.
pub fn bench(a: &DataBenchArgs) -> anyhow::Result<()> {
    let view = if a.eval { View::Eval(EvalView::CENTRE) } else { View::Train };
    let ds = Dataset::open(&a.dir)?.with_view(view).with_workers(a.workers.unwrap_or(0));
    let ds = match a.raw {
        true => {
            let raw = ds.pixel_inputs();
            ds.with_raw(raw)
        }
        false => ds,
    };
    if ds.is_empty() {
        bail!("{}: no samples", a.dir.display());
    }
    let want = a.n.unwrap_or(ds.len()) as u64;
    let workers = crate::data::batches::workers(&ds);
    let (mut samples, mut batches, mut first) = (0u64, 0u64, None);
    let start = Instant::now();
    'epochs: for epoch in 0.. {
        for b in ds.batches(a.batch, a.seed, epoch, false) {
            let b = b?;
            first.get_or_insert_with(|| start.elapsed().as_secs_f64());
            samples += b.len() as u64;
            batches += 1;
            if samples >= want {
                break 'epochs;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let rate = samples as f64 / seconds;
    let r = DataBench {
        samples,
        batches,
        seconds,
        samples_per_s: rate,
        workers,
        samples_per_s_per_worker: rate / workers as f64,
        first_batch_s: first.unwrap_or(seconds),
        raw: !ds.raw.is_empty(),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: {} samples in {} batches of {} ({} view{}, {} reader thread{}) in {:.2} s: {:.1} samples/s, {:.1} per thread; first batch after {:.2} s",
            a.dir.display(),
            r.samples,
            r.batches,
            a.batch,
            if a.eval { "eval" } else { "train" },
            if r.raw { ", raw u8 pixels" } else { "" },
            workers,
            if workers == 1 { "" } else { "s" },
            r.seconds,
            r.samples_per_s,
            r.samples_per_s_per_worker,
            r.first_batch_s
        );
    }
    Ok(())
}
