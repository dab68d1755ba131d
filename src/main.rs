//! The `graft` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use graft::api::{compile_spec, render_failure, SpecErrors};
use graft::commands::ModeArg;
use graft::pipeline::{CompileOptions, Compiled, Failure, Mode};
use graft::report;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "graft",
    version,
    about = "A declarative model-graph compiler for parameter-efficient multimodal transformers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check specs and report every error (file:line:col, the line, a caret, a hint).
    Check {
        #[arg(required = true)]
        specs: Vec<PathBuf>,
    },
    /// Format specs in the canonical layout (files, or directories of .graft files).
    Fmt {
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        /// Write nothing: print a diff of each file that would change, exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// A language server over stdio (diagnostics, hover, definitions, completion, formatting).
    Lsp,
    /// Compile a spec to a verified graph and write its forms.
    Compile {
        spec: PathBuf,
        #[arg(long, value_enum, default_value = "train")]
        mode: ModeArg,
        /// Comma-separated: ir, yaml, dot, params.
        #[arg(long, value_delimiter = ',', default_value = "ir")]
        emit: Vec<Emit>,
        /// Directory to write `MODEL.MODE.{ir,yaml,dot,params.txt}` into (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print how long each stage of the pipeline took (to stderr).
        #[arg(long)]
        timings: bool,
        /// Run the IR verifier after lowering and after every pass (default in debug
        /// builds), naming the pass that breaks an invariant.
        #[arg(long)]
        verify_each_pass: bool,
        /// Print the IR right after this stage (`lower` or a pass) and stop there.
        #[arg(long, value_name = "PASS", value_parser = clap::builder::PossibleValuesParser::new(graft::pipeline::stages(Mode::Infer)))]
        stop_after: Option<String>,
    },
    /// Parameter table: total, trainable, frozen, per component, % of backbone.
    Params {
        spec: PathBuf,
        #[arg(long, value_enum, default_value = "train")]
        mode: ModeArg,
        #[arg(long)]
        json: bool,
    },
    /// Inputs, outputs, weights bindings and parameter totals.
    Inspect {
        spec: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Dry run of a selector: every match with its parameter count.
    Select { spec: PathBuf, pattern: String },
    /// Datasets: write a synthetic one, or check one (against a spec's inputs).
    Data {
        #[command(subcommand)]
        cmd: graft::commands::data::DataCmd,
    },
    /// Run a model on named inputs and write its outputs by name.
    Run(graft::commands::run::RunArgs),
    /// Fold re-parameterizations into the backbone's weights, check, write a checkpoint.
    Fuse(graft::commands::fuse::FuseArgs),
    /// Train the spec's trainable parameters on a dataset; checkpoints resume exactly.
    #[cfg(feature = "torch")]
    Train(Box<graft::commands::train::TrainArgs>),
    /// Loss, accuracy and confusions of a model (and a trained run) on a dataset.
    #[cfg(feature = "torch")]
    Eval(graft::commands::eval::EvalArgs),
    /// `train` / `eval` in a build without LibTorch: refused with how to get them.
    #[cfg(not(feature = "torch"))]
    #[command(name = "train", hide = true, disable_help_flag = true)]
    Train {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    #[cfg(not(feature = "torch"))]
    #[command(name = "eval", hide = true, disable_help_flag = true)]
    Eval {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Compile time and forward latency of specs, side by side (random weights).
    Bench(graft::commands::bench::BenchArgs),
    /// Write a model or a trained adapter for other tools (`export pytorch|onnx|peft`).
    Export {
        #[command(subcommand)]
        cmd: ExportCmd,
    },
}

#[derive(Subcommand)]
enum ExportCmd {
    /// A run's LoRA adapter as a PEFT directory (adapter_config.json + adapter_model.safetensors).
    Peft(graft::commands::export::ExportPeftArgs),
    /// The model as a PyTorch package: model.py (an nn.Module tree with graft's
    /// parameter names) and weights.safetensors.
    Pytorch(graft::commands::export::ExportPytorchArgs),
    /// The folded model as an ONNX file (standard ops, weights as initializers).
    Onnx(graft::commands::export::ExportOnnxArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Emit {
    Ir,
    Yaml,
    Dot,
    Params,
}

fn main() -> ExitCode {
    // Output into a closed pipe (`graft params … | head -1`) ends the process quietly,
    // as it ends `cat` or `grep`, instead of a panic in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<SpecErrors>() {
                // The spec's own diagnostics, as `check` prints them.
                Some(s) => eprint!("{}", s.render(color())),
                None => eprintln!("error: {}", chain_text(&e)),
            }
            ExitCode::from(1)
        }
    }
}

/// The error and its causes joined with ": ", as `{:#}` prints them, leaving out a
/// cause whose text the message already holds (an error that prints its source and
/// also reports it as its source would otherwise say it twice).
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text = format!("{text}: {c}");
        }
    }
    text
}

fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Compile or print the failure; `None` means "exit 1".
fn compiled(spec: &Path, mode: Mode) -> Option<Compiled> {
    match compile_spec(spec, mode) {
        Ok(c) => Some(c),
        Err(e) => {
            eprint!("{}", e.render(color()));
            None
        }
    }
}

fn print_failure(spec: &Path, failure: Failure) {
    eprint!("{}", SpecErrors { spec: spec.to_path_buf(), failure }.render(color()));
}

/// `graft compile --stop-after STAGE`: the IR text right after that stage.
fn stop_after(spec: &Path, mode: Mode, mode_name: &str, stage: &str, opts: &CompileOptions) -> ExitCode {
    let prog = match graft::lower::load_file(spec) {
        Ok(p) => p,
        Err((s, d)) => {
            print_failure(spec, Failure::User(s, d));
            return ExitCode::from(1);
        }
    };
    let model = prog.root_model.clone().unwrap_or_default();
    match graft::pipeline::graph_after(prog, mode, stage, opts) {
        None => {
            eprintln!("error: `{stage}` does not run in {mode_name} mode");
            eprintln!("  hint: the stages of {mode_name} mode are {}", graft::pipeline::stages(mode).join(", "));
            ExitCode::from(2)
        }
        Some(Err(f)) => {
            print_failure(spec, f);
            ExitCode::from(1)
        }
        Some(Ok(g)) => {
            print!(
                "{}",
                graft::ir::print::to_text(&g, &format!("graft ir: model {model} mode {mode_name} after {stage}"))
            );
            ExitCode::SUCCESS
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Data { cmd } => graft::commands::data::run(&cmd).map(|()| ExitCode::SUCCESS),
        Cmd::Run(a) => graft::commands::run::run(a).map(|()| ExitCode::SUCCESS),
        Cmd::Fuse(a) => graft::commands::fuse::run(&a).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "torch")]
        Cmd::Train(a) => graft::commands::train::train(*a),
        #[cfg(feature = "torch")]
        Cmd::Eval(a) => graft::commands::eval::run(a).map(|()| ExitCode::SUCCESS),
        #[cfg(not(feature = "torch"))]
        Cmd::Train { .. } | Cmd::Eval { .. } => {
            eprintln!("error: this graft was built without LibTorch, and `train` and `eval` need its autograd");
            eprintln!("  hint: run `bash scripts/setup.sh`, then `cargo build --release --features torch`; the native build runs check, compile, run, fuse and bench");
            Ok(ExitCode::from(1))
        }
        Cmd::Bench(a) if a.paced => graft::commands::bench_paced::run(&a).map(|()| ExitCode::SUCCESS),
        Cmd::Bench(a) => graft::commands::bench::run(a).map(|()| ExitCode::SUCCESS),
        Cmd::Export { cmd: ExportCmd::Peft(a) } => graft::commands::export::peft(&a),
        Cmd::Export { cmd: ExportCmd::Pytorch(a) } => graft::commands::export::pytorch(&a),
        Cmd::Export { cmd: ExportCmd::Onnx(a) } => graft::commands::export::onnx(&a),
        Cmd::Check { specs } => Ok(check(&specs)),
        Cmd::Fmt { specs, check } => fmt(&specs, check),
        Cmd::Lsp => match graft::lsp::run_stdio().map_err(|e| anyhow::anyhow!("graft lsp: {e}"))? {
            graft::lsp::Ending::Clean => Ok(ExitCode::SUCCESS),
            // The protocol's exit code for `exit` without `shutdown` (or a closed input).
            graft::lsp::Ending::Unclean => Ok(ExitCode::from(1)),
        },
        Cmd::Compile { spec, mode, emit, out, timings, verify_each_pass, stop_after: stop } => {
            compile(&spec, mode, &emit, out.as_deref(), timings, verify_each_pass, stop.as_deref())
        }
        Cmd::Params { spec, mode, json } => params(&spec, mode, json),
        Cmd::Inspect { spec, json } => inspect(&spec, json),
        Cmd::Select { spec, pattern } => Ok(select(&spec, &pattern)),
    }
}

/// `graft check`: each spec checked, its parameter counts or its diagnostics printed.
fn check(specs: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for spec in specs {
        let result =
            graft::lower::load_file(spec).map_err(|(s, d)| Failure::User(s, d)).and_then(graft::api::check_program);
        match result {
            Ok(Some(c)) => {
                let r = report::param_report(&c);
                println!(
                    "{}: ok, model {} ({} parameters, {} trainable)",
                    spec.display(),
                    c.model,
                    report::thousands(r.total),
                    report::thousands(r.trainable)
                );
            }
            Ok(None) => println!("{}: ok (modules only)", spec.display()),
            Err(f) => {
                ok = false;
                eprint!("{}", render_failure(&f, color()));
            }
        }
    }
    ExitCode::from(if ok { 0 } else { 1 })
}

/// `graft compile`: the spec compiled, and each form asked for written or printed.
fn compile(
    spec: &Path,
    mode: ModeArg,
    emit: &[Emit],
    out: Option<&Path>,
    timings: bool,
    verify_each_pass: bool,
    stop: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mode = Mode::from(mode);
    let mode_name = if mode == Mode::Train { "train" } else { "infer" };
    let opts = CompileOptions { verify_each_pass: verify_each_pass || CompileOptions::default().verify_each_pass };
    if let Some(stage) = stop {
        return Ok(stop_after(spec, mode, mode_name, stage, &opts));
    }
    let prog = graft::lower::load_file(spec).map_err(|(s, d)| Failure::User(s, d));
    let (result, t) = match prog {
        Ok(prog) => graft::pipeline::compile_timed(prog, mode, &opts),
        Err(f) => (Err(f), Vec::new()),
    };
    if timings {
        eprint!("{}", graft::api::timings_table(&t));
    }
    let c = match result {
        Ok(c) => c,
        Err(f) => {
            print_failure(spec, f);
            return Ok(ExitCode::from(1));
        }
    };
    for e in emit {
        let (ext, text) = match e {
            Emit::Ir => {
                ("ir", graft::ir::print::to_text(&c.graph, &format!("graft ir: model {} mode {mode_name}", c.model)))
            }
            Emit::Yaml => ("yaml", graft::ir::print::to_yaml(&c.graph)),
            Emit::Dot => ("dot", graft::ir::print::to_dot(&c.graph, &c.model)),
            Emit::Params => ("params.txt", report::param_table(&report::param_report(&c))),
        };
        match out {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                let path = dir.join(format!("{}.{mode_name}.{ext}", c.model));
                graft::durable::write_atomic(&path, text.as_bytes())?;
                println!("wrote {}", path.display());
            }
            None => print!("{text}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `graft params`: the parameter table (or JSON), with what no output uses.
fn params(spec: &Path, mode: ModeArg, json: bool) -> anyhow::Result<ExitCode> {
    let Some(c) = compiled(spec, mode.into()) else { return Ok(ExitCode::from(1)) };
    let r = report::param_report(&c);
    // What no output uses is not in the table: say so instead of dropping it.
    let unused = graft::api::unused_params(spec, mode.into(), &c).unwrap_or_default();
    if json {
        #[derive(serde::Serialize)]
        struct WithUnused<'a> {
            #[serde(flatten)]
            report: &'a report::ParamReport,
            unused: &'a report::UnusedParams,
        }
        println!("{}", serde_json::to_string_pretty(&WithUnused { report: &r, unused: &unused })?);
    } else {
        print!("{}{}", report::param_table(&r), report::unused_line(&unused));
    }
    Ok(ExitCode::SUCCESS)
}

/// `graft inspect`: inputs, outputs, weights bindings and parameter totals.
fn inspect(spec: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let Some(c) = compiled(spec, Mode::Train) else { return Ok(ExitCode::from(1)) };
    let i = report::inspect(&c);
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
    } else {
        println!("model {}", i.model);
        for x in &i.inputs {
            let shape: Vec<String> = x.shape.iter().map(|d| d.to_string()).collect();
            println!(
                "input  {}: {}[{}]{}",
                x.name,
                x.dtype,
                shape.join(", "),
                if x.optional { " optional" } else { "" }
            );
        }
        for o in &i.outputs {
            let shape: Vec<String> = o.shape.iter().map(|d| d.to_string()).collect();
            println!("output {}: [{}]", o.name, shape.join(", "));
        }
        for w in &i.weights {
            let file = w.file.as_deref().unwrap_or("required (--weights on the command line)");
            let keys = if w.keys.is_identity() { String::new() } else { format!(" {}", w.keys.describe()) };
            println!("weights {} = {file}{keys}", w.binding);
        }
        println!(
            "params total {} trainable {} frozen {}",
            report::thousands(i.params.total),
            report::thousands(i.params.trainable),
            report::thousands(i.params.frozen)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `graft select`: every match of a selector with its parameter count.
fn select(spec: &Path, pattern: &str) -> ExitCode {
    let Some(c) = compiled(spec, Mode::Train) else { return ExitCode::from(1) };
    let sel = match graft::select::parse_selector(pattern) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}\n  hint: selectors look like vit.blocks[*].mlp, blocks[-2..], {{attn.qkv, mlp.fc1}}");
            return ExitCode::from(1);
        }
    };
    let rows = graft::api::select(&c, &sel);
    match rows {
        Ok(rows) => {
            let mut total = 0;
            for r in &rows {
                println!("{:<48} {:<22} {:>14} params", r.path, r.kind, report::thousands(r.params));
                total += r.params;
            }
            println!(
                "{} match{}, {} params",
                rows.len(),
                if rows.len() == 1 { "" } else { "es" },
                report::thousands(total)
            );
            ExitCode::SUCCESS
        }
        Err(near) => {
            eprintln!("error: `{pattern}` matches nothing in {}", spec.display());
            if near.is_empty() {
                eprintln!("  hint: `graft select {} '*'` lists the top level", spec.display());
            } else {
                eprintln!("  hint: nearest existing paths: {}", near.join(", "));
            }
            ExitCode::from(1)
        }
    }
}

/// `graft fmt`: exit 1 when a file does not parse, or (with `--check`) would change.
fn fmt(specs: &[PathBuf], check: bool) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for s in specs {
        graft::fmt::collect_specs(s, &mut files).with_context(|| format!("reading {}", s.display()))?;
    }
    let mut ok = true;
    for path in &files {
        let name = path.display().to_string();
        // A regular file no larger than a spec may be, checked before reading it.
        let bytes = match graft::input_file::read_capped(path, graft::syntax::MAX_SOURCE_BYTES, "a spec") {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {name}: {e}");
                ok = false;
                continue;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            eprintln!("error: {name} is not UTF-8 text\n  hint: a spec is a text file written in the graft language");
            ok = false;
            continue;
        };
        match graft::fmt::format_text(&name, &text) {
            Ok(out) if out == text => {}
            Ok(out) if check => {
                print!("{}", graft::fmt::diff(&name, &text, &out));
                ok = false;
            }
            Ok(out) => {
                // Through a symlink to its target, keeping the file's mode.
                graft::durable::rewrite_atomic(path, out.as_bytes())?;
                println!("formatted {name}");
            }
            Err(graft::fmt::FmtError::Syntax(sources, d)) => {
                eprint!("{}", graft::diag::render(&sources, &d, color()));
                eprintln!("{name}: not formatted (fix the errors above first)");
                ok = false;
            }
            Err(graft::fmt::FmtError::Internal(e)) => {
                eprintln!("internal error in graft fmt: {e}\nthis is a bug in graft; {name} was left as it is");
                ok = false;
            }
        }
    }
    if check && !ok {
        eprintln!("run `graft fmt` on the files above to format them");
    }
    Ok(ExitCode::from(if ok { 0 } else { 1 }))
}
