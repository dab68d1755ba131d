//! The `graft data` subcommands: `synth` writes a synthetic dataset, `check` opens a
//! dataset, validates every shard header and (with `--spec`) checks it against a
//! model's declared inputs.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command: it reports on the terminal

use super::reader::{model_inputs, Dataset};
use super::synth::{synth, SynthOptions, Task};
use anyhow::{bail, Context};
use std::path::PathBuf;

/// `graft data …`
#[derive(clap::Subcommand, Debug)]
pub enum DataCmd {
    /// Write a synthetic dataset (deterministic from the seed).
    Synth(SynthArgs),
    /// Validate a dataset (and, with --spec, that it fits the model's inputs).
    Check(CheckArgs),
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
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples per shard.
    #[arg(long, default_value_t = 256)]
    pub shard_size: usize,
    /// Write this fraction of the shards without an optional input (repeatable),
    /// e.g. `--drop audio:0.25`.
    #[arg(long = "drop", value_name = "MODALITY:FRACTION", value_parser = parse_drop)]
    pub drop: Vec<(String, f64)>,
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
    for (name, i) in &m.inputs {
        let with = ds.shards.iter().filter(|s| s.has(name)).count();
        let opt = if i.optional { format!(" optional, in {with} of {} shards", m.shards) } else { String::new() };
        println!("  input {name}: {}{opt}", i.type_text());
    }
    if let Some(spec) = &args.spec {
        let compiled = crate::api::compile_file(spec, crate::pipeline::Mode::Train)
            .map_err(|f| anyhow::anyhow!("{}", crate::api::render_failure(&f, false)))
            .with_context(|| format!("compiling {}", spec.display()))?;
        let inputs = model_inputs(&crate::report::inspect(&compiled));
        match ds.check_against(&inputs) {
            Ok(notes) => {
                for n in notes {
                    println!("  note: {n}");
                }
                println!("fits model {}", compiled.model);
            }
            Err(e) => bail!("{e}"),
        }
    }
    Ok(())
}
