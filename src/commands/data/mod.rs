//! The `graft data` subcommands: `synth` writes a synthetic dataset, `import` reads
//! images, videos or audio files into one (`data/import.rs`, a progress bar here),
//! `sample` writes the first samples as the model receives them, `bench` times the
//! input pipeline over a dataset (`bench_cmd.rs`), `check` opens a
//! dataset, validates every shard header, label and stored-sample index and (with
//! `--spec`) checks it against a model's declared inputs and classes.

use crate::data::reader::{model_inputs, Dataset};
use crate::data::synth::{synth, SynthOptions, Task};
use anyhow::{bail, Context};
use std::path::PathBuf;

mod bench_cmd;
pub mod fits;
mod import_cmd;
pub use bench_cmd::{DataBench, DataBenchArgs};
pub use import_cmd::{AudioArgs, ImageArgs, ImportCmd, SampleArgs, VideoArgs};

/// `graft data …`
#[derive(clap::Subcommand, Debug)]
pub enum DataCmd {
    /// Write a synthetic dataset (deterministic from the seed).
    Synth(SynthArgs),
    /// Validate a dataset (and, with --spec, that it fits the model's inputs).
    Check(CheckArgs),
    /// Import images, videos or audio files into a dataset of compact shards.
    Import {
        #[command(subcommand)]
        cmd: ImportCmd,
    },
    /// Write the first samples exactly as the model receives them (f32) with labels.
    Sample(SampleArgs),
    /// Read a dataset through the input pipeline and report samples per second.
    Bench(DataBenchArgs),
}

/// `graft data synth --task NAME --out DIR [--n N] [--seed N] [--shard-size N] [--drop M:F]…`
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// pretrain (shape, video), audio_pretrain (band, audio), multimodal (video + audio +
    /// pose, 8 classes), motion (direction, video).
    #[arg(long, value_enum)]
    pub task: Task,
    /// The dataset directory (created; a previous dataset there is replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of samples.
    #[arg(long, default_value_t = 2000, value_parser = crate::bounds::count(crate::bounds::MAX_SYNTH_SAMPLES))]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples per shard.
    #[arg(long, default_value_t = 256, value_parser = crate::bounds::count(crate::bounds::MAX_SAMPLES))]
    pub shard_size: usize,
    /// Write this fraction of the shards without an optional input (repeatable),
    /// e.g. `--drop audio:0.25`.
    #[arg(long = "drop", value_name = "MODALITY:FRACTION", value_parser = parse_drop)]
    pub drop: Vec<(String, f64)>,
    /// tensors (a dataset), or files in class folders: a video task as PNG frame
    /// folders (for `graft data import video`), the audio task as WAV files (for
    /// `graft data import audio`).
    #[arg(long, value_enum, default_value = "tensors")]
    pub format: SynthFormat,
}

/// What `graft data synth` writes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthFormat {
    Tensors,
    Files,
}

/// `graft data check DIR [--spec SPEC]`
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    pub dir: PathBuf,
    /// A spec whose inputs the dataset must fit.
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

/// Parse `audio:0.25`.
pub fn parse_drop(s: &str) -> Result<(String, f64), String> {
    let (name, frac) =
        s.split_once(':').ok_or_else(|| format!("`{s}`: expected MODALITY:FRACTION, e.g. audio:0.25"))?;
    let f: f64 = frac.trim().parse().map_err(|_| format!("`{frac}` is not a number"))?;
    if name.is_empty() || !(0.0..=1.0).contains(&f) {
        return Err(format!("`{s}`: expected a modality name and a fraction in [0, 1]"));
    }
    Ok((name.trim().to_string(), f))
}

/// Run a `graft data` subcommand.
pub fn run(cmd: &DataCmd) -> anyhow::Result<()> {
    match cmd {
        DataCmd::Synth(a) => synth_cmd(a),
        DataCmd::Check(a) => check_cmd(a),
        DataCmd::Import { cmd } => import_cmd::run(cmd),
        DataCmd::Sample(a) => import_cmd::sample(a),
        DataCmd::Bench(a) => bench_cmd::bench(a),
    }
}

/// `graft data synth`: generate, then print the summary.
pub fn synth_cmd(args: &SynthArgs) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let opts = SynthOptions {
        task: args.task,
        n: args.n,
        seed: args.seed,
        shard_size: args.shard_size,
        drop: args.drop.clone(),
    };
    if args.format == SynthFormat::Files {
        let s = crate::data::synth_files::synth_files(&opts, &args.out)?;
        println!("wrote {} samples of task {} as {} to {}", s.samples, args.task.name(), s.kind, args.out.display());
        for (c, n) in &s.per_class {
            println!("  class {c}  {n}");
        }
        println!("  import: graft data import {}", crate::data::synth_files::import_hint(args.task, &args.out));
        return Ok(());
    }
    let summary = synth(&opts, &args.out)?;
    print!("{summary}");
    println!("  time     {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// `graft data check`: open (every header checked), summarise, optionally fit a spec.
pub fn check_cmd(args: &CheckArgs) -> anyhow::Result<()> {
    let ds = Dataset::open(&args.dir)?;
    let m = &ds.meta;
    println!(
        "{}: task {}, {} samples in {} shards, {} classes",
        args.dir.display(),
        m.task,
        m.samples,
        m.shards,
        m.classes
    );
    println!("  labels: all {} in 0..{}", m.samples, m.classes);
    for (name, i) in &m.inputs {
        let with = ds.shards.iter().filter(|s| s.has(name)).count();
        let opt = if i.optional { format!(" optional, in {with} of {} shards", m.shards) } else { String::new() };
        let stored = i.stored.map(|f| format!(", stored as {}", f.name())).unwrap_or_default();
        println!("  input {name}: {}{opt}{stored}", i.type_text());
        if let Some(t) = &i.transform {
            println!("    transform: {}", import_cmd::describe(t));
        }
    }
    if ds.has_stored() {
        // Decode and transform the first sample both ways: a stored sample that does
        // not decode fails here, not at step 1.
        for view in [crate::data::View::Train, crate::data::View::Eval(crate::data::EvalView::CENTRE)] {
            let d = ds.clone().with_view(view).with_workers(1);
            crate::data::sample::first_samples(&d, 1, 0)?;
        }
        println!("  stored samples: indexes valid, the first decodes and transforms");
    }
    if let Some(spec) = &args.spec {
        let compiled = crate::api::compile_file(spec, crate::pipeline::Mode::Train)
            .map_err(|f| anyhow::anyhow!("{}", crate::api::render_failure(&f, false)))
            .with_context(|| format!("compiling {}", spec.display()))?;
        let inspect = crate::report::inspect(&compiled);
        let inputs = model_inputs(&inspect);
        // Every problem at once: the inputs (a transform that does not fit the spec)
        // and the classes (training reads the first output as logits [B, classes]).
        let inputs_fit = ds.check_against(&inputs).map_err(|e| e.to_string());
        let mut problems: Vec<String> = inputs_fit.as_ref().err().cloned().into_iter().collect();
        let (norm_problems, norm_notes) = fits::check_normalization(&compiled, &ds);
        problems.extend(norm_problems);
        if let Some(o) = inspect.outputs.first() {
            if let [_, crate::ir::Dim::Fixed(c)] = o.shape[..] {
                if c != m.classes as i64 {
                    problems.push(format!(
                        "{} has {} classes (dataset.json), but model `{}`'s output `{}` has {c}: make the head's width {}",
                        args.dir.display(),
                        m.classes,
                        compiled.model,
                        o.name,
                        m.classes
                    ));
                }
            }
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        let notes = inputs_fit.unwrap_or_default().into_iter().chain(norm_notes);
        for n in notes {
            println!("  note: {n}");
        }
        println!("fits model {}", compiled.model);
    }
    Ok(())
}
