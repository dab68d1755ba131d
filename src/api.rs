//! Entry points for the CLI, tests and benchmarks: load a spec and compile it.

use crate::diag::Diagnostics;
use crate::lower::{load_file, load_str, Program};
use crate::pipeline::{compile, compile_with, CompileOptions, Compiled, Failure, Mode};
use crate::source::SourceMap;
use std::path::Path;

/// Load and compile a spec file.
pub fn compile_file(path: &Path, mode: Mode) -> Result<Compiled, Failure> {
    let prog = load_file(path).map_err(|(s, d)| Failure::User(s, d))?;
    compile(prog, mode)
}

/// Load and compile spec text (relative `use`s resolve against `dir`).
pub fn compile_str(name: &str, dir: Option<&Path>, text: &str, mode: Mode) -> Result<Compiled, Failure> {
    compile_str_with(name, dir, text, mode, &CompileOptions::default())
}

/// [`compile_file`] with `opts` (e.g. the verifier after every pass).
pub fn compile_file_with(path: &Path, mode: Mode, opts: &CompileOptions) -> Result<Compiled, Failure> {
    let prog = load_file(path).map_err(|(s, d)| Failure::User(s, d))?;
    compile_with(prog, mode, opts)
}

/// [`compile_str`] with `opts`.
pub fn compile_str_with(
    name: &str,
    dir: Option<&Path>,
    text: &str,
    mode: Mode,
    opts: &CompileOptions,
) -> Result<Compiled, Failure> {
    let prog = load_str(name, dir, text).map_err(|(s, d)| Failure::User(s, d))?;
    compile_with(prog, mode, opts)
}

/// A spec that does not compile: the failure and the file, for the caller to render
/// ([`SpecErrors::render`]; the CLI prints it and exits 1).
pub struct SpecErrors {
    pub spec: std::path::PathBuf,
    pub failure: Failure,
}

impl SpecErrors {
    /// The diagnostics, then `N errors in SPEC` for user errors.
    pub fn render(&self, color: bool) -> String {
        let mut s = render_failure(&self.failure, color);
        if let Failure::User(_, d) = &self.failure {
            let n = d.items.len();
            s.push_str(&format!("{n} error{} in {}\n", if n == 1 { "" } else { "s" }, self.spec.display()));
        }
        s
    }
}

impl std::fmt::Debug for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.render(false).trim_end())
    }
}

impl std::error::Error for SpecErrors {}

/// Load and compile a spec file; the error keeps the file's name for the report.
pub fn compile_spec(path: &Path, mode: Mode) -> Result<Compiled, SpecErrors> {
    compile_file(path, mode).map_err(|failure| SpecErrors { spec: path.to_path_buf(), failure })
}

/// Check a program: a file with a model compiles it (train mode); a file of modules
/// only is parsed and resolved.
pub fn check_program(prog: Program) -> Result<Option<Compiled>, Failure> {
    if prog.root_model.is_none() {
        return Ok(None);
    }
    compile(prog, Mode::Train).map(Some)
}

/// Render a failure as text (colour off): the snapshot and CLI format.
pub fn render_failure(f: &Failure, color: bool) -> String {
    match f {
        Failure::User(sources, diags) => crate::diag::render(sources, diags, color),
        Failure::Bug(e) => format!("internal compiler error: {e}\nthis is a bug in graft, not in the spec\n"),
    }
}

/// Diagnostics with no sources (file-level problems).
pub fn user_failure(d: Diagnostics) -> Failure {
    Failure::User(SourceMap::new(), d)
}

/// One row of `graft select`.
pub struct SelectRow {
    pub path: String,
    pub kind: String,
    pub params: u64,
}

/// Every site or parameter prefix the selector matches, with the parameters under it;
/// `Err` carries the nearest existing paths when nothing matches.
pub fn select(c: &Compiled, sel: &crate::syntax::ast::Selector) -> Result<Vec<SelectRow>, Vec<String>> {
    let params: Vec<(&str, u64)> = c.graph.params().map(|(_, p)| (p.path.as_str(), p.numel())).collect();
    let paths = c.sites.iter().map(|(p, _)| p.as_str()).chain(params.iter().map(|(p, _)| *p));
    let universe = crate::select::Universe::new(paths);
    let matches = universe.prefix_matches(sel);
    if matches.is_empty() {
        return Err(universe.suggest(sel, 3));
    }
    Ok(matches
        .into_iter()
        .map(|m| {
            let prefix = format!("{m}.");
            let n = params.iter().filter(|(p, _)| *p == m || p.starts_with(&prefix)).map(|(_, n)| n).sum();
            let kind = c.sites.iter().find(|(p, _)| *p == m).map_or("param".to_string(), |(_, k)| k.clone());
            SelectRow { path: m, kind, params: n }
        })
        .collect())
}

/// The `graft compile --timings` table: each stage's time, whether it changed the
/// graph, and the node count after it.
pub fn timings_table(t: &[crate::pipeline::Timing]) -> String {
    let mut out = format!("{:<24} {:>12} {:>8}  {}\n", "stage", "time", "nodes", "changed");
    for s in t {
        let ms = s.elapsed.as_secs_f64() * 1e3;
        let changed = if s.changed { "yes" } else { "no" };
        out += &format!("{:<24} {:>9.3} ms {:>8}  {changed}\n", s.stage, ms, s.nodes);
    }
    let total: f64 = t.iter().map(|s| s.elapsed.as_secs_f64() * 1e3).sum();
    out += &format!("{:<24} {:>9.3} ms\n", "total", total);
    out
}

/// The parameters of `path` that no output of `c` (compiled from it in `mode`) uses:
/// the graph just before dead-code elimination against the compiled one. `None` when
/// the spec cannot be loaded again.
pub fn unused_params(path: &Path, mode: Mode, c: &Compiled) -> Option<crate::report::UnusedParams> {
    let stages = crate::pipeline::stages(mode);
    let before = stages.iter().position(|s| *s == "eliminate_dead_code").and_then(|i| i.checked_sub(1))?;
    let prog = load_file(path).ok()?;
    let graph = crate::pipeline::graph_after(prog, mode, stages[before], &Default::default())?.ok()?;
    Some(crate::report::unused_params(&graph, c))
}
