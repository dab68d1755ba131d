//! The compiler pipeline: the ordered pass list [`PASSES`] and the one function that
//! runs it ([`run_passes`]).
//!
//! ```text
//! source ─parse─▶ AST ─lower─▶ IR ─infer_shapes─▶ insert_adapters ─▶ check_optional_inputs
//!        ─▶ build_pathways ─▶ apply_training_rules ─▶ [infer: fold_reparam] ─▶ eliminate_dead_code
//! ```
//! Every pass has one signature ([`PassFn`]). The IR verifier runs after every pass
//! when [`CompileOptions::verify_each_pass`] says so (the default in debug builds, so
//! in every `cargo test`; `graft compile --verify-each-pass` in a release binary); the
//! final verification stage ([`Verified::new`]) runs in every build and produces the
//! only graph a backend accepts. `graft compile --timings` prints each stage's time;
//! `--stop-after PASS` prints the IR after it.

use crate::diag::Diagnostics;
use crate::ir::verified::Verified;
use crate::ir::verify::{verify, verify_trainable, Stage, VerifyError};
use crate::ir::Graph;
use crate::lower::{lower, Component, Program};
use crate::passes::ctx::{PassCtx, PassFn};
use crate::passes::{
    apply_training_rules::{apply_training_rules, named_by_rules},
    build_pathways::build_pathways,
    check_optional_inputs::check_optional_inputs,
    eliminate_dead_code::eliminate_dead_code,
    fold_reparam::fold_reparam,
    infer_shapes::infer_shapes,
    insert_adapters::insert_adapters,
};
use crate::source::SourceMap;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `train` keeps adapters, pathways and LoRA as separate parameters; `infer` folds
/// every re-parameterization into plain weights.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Train,
    Infer,
}

/// A verified, compiled model.
pub struct Compiled {
    /// The graph, read-only: it passed the final verification stage.
    pub graph: Verified,
    pub model: String,
    pub mode: Mode,
    pub sources: SourceMap,
    pub components: Vec<Component>,
    pub heads: Vec<String>,
    pub adapters: Vec<String>,
    pub pathways: Vec<String>,
    /// Weights bindings: binding → file as written in the spec.
    pub weights: BTreeMap<String, String>,
    /// Key rules of the bindings that have any.
    pub key_maps: BTreeMap<String, crate::keymap::KeyMap>,
    /// Bindings whose file the command line must give (`weights required`).
    pub required_weights: std::collections::BTreeSet<String>,
    /// The normalisation each input declares it expects (`normalized imagenet`).
    pub input_norms: BTreeMap<String, crate::lower::norm::Normalized>,
    /// Adapters: module, numeric configuration, sites.
    pub adapter_info: BTreeMap<String, crate::lower::AdapterInfo>,
    /// Sites (path, kind) in creation order, for `graft select`.
    pub sites: Vec<(String, String)>,
    /// The output type of each site still in the graph (for editor hovers).
    pub site_types: BTreeMap<String, crate::ir::TensorType>,
    /// Each module instance's parameters as bound, by path (`graft export pytorch`
    /// passes them to the instance's class).
    pub instance_args: BTreeMap<String, Vec<(String, crate::lower::Value)>>,
    /// The program's modules by name, as parsed (the exporter reads their parameters
    /// and the expressions their instances are configured with).
    pub modules: BTreeMap<String, std::sync::Arc<crate::lower::ModuleEntry>>,
}

/// Why a compilation failed.
pub enum Failure {
    /// Mistakes in the spec, with the sources to render them against.
    User(SourceMap, Diagnostics),
    /// A compiler bug caught by the verifier.
    Bug(VerifyError),
}

/// Analyzer passes make the graph valid and may report user errors; optimizer passes
/// preserve meaning, and a failure in one is a compiler bug.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PassKind {
    Analyzer,
    Optimizer,
}

/// One entry of the pass list.
pub struct Pass {
    pub name: &'static str,
    pub kind: PassKind,
    /// Runs only when compiling for inference.
    pub infer_only: bool,
    pub run: PassFn,
    /// Why the pass sits where it does.
    pub why: &'static str,
}

impl Pass {
    pub fn runs_in(&self, mode: Mode) -> bool {
        !self.infer_only || mode == Mode::Infer
    }
}

/// The passes, in order, after lowering (names resolved, modules instantiated).
pub const PASSES: [Pass; 7] = [
    Pass {
        name: "infer_shapes",
        kind: PassKind::Analyzer,
        infer_only: false,
        run: infer_shapes,
        why: "types first, so adapter and pathway insertion can check widths against sites",
    },
    Pass {
        name: "insert_adapters",
        kind: PassKind::Analyzer,
        infer_only: false,
        run: insert_adapters,
        why: "adapters change the dataflow; pathways later change only weights",
    },
    Pass {
        name: "check_optional_inputs",
        kind: PassKind::Analyzer,
        infer_only: false,
        run: check_optional_inputs,
        why: "once adapters are in, every output must survive a missing modality",
    },
    Pass {
        name: "build_pathways",
        kind: PassKind::Analyzer,
        infer_only: false,
        run: build_pathways,
        why: "W + λ·W′ on the target weights; after adapters so a pathway never targets an adapter's copy",
    },
    Pass {
        name: "apply_training_rules",
        kind: PassKind::Analyzer,
        infer_only: false,
        run: apply_training_rules,
        why: "all parameters now exist: decide what trains, then assert exactly that trains",
    },
    Pass {
        name: "fold_reparam",
        kind: PassKind::Optimizer,
        infer_only: true,
        run: fold_reparam,
        why: "inference folds every re-parameterization once the trainable set is known",
    },
    Pass {
        name: "eliminate_dead_code",
        kind: PassKind::Optimizer,
        infer_only: false,
        run: eliminate_dead_code,
        why: "last: drop what no output needs (unused auxiliary layers, folded leftovers)",
    },
];

/// The first stage: name resolution and module instantiation.
pub const LOWER: &str = "lower";
/// The last stage, in every build: the final verification that makes a [`Verified`].
pub const FINAL: &str = "verify_final";

/// The stages `--stop-after` accepts in `mode`: `lower`, then each pass that runs.
pub fn stages(mode: Mode) -> Vec<&'static str> {
    std::iter::once(LOWER).chain(PASSES.iter().filter(|p| p.runs_in(mode)).map(|p| p.name)).collect()
}

/// How long one stage took and what it did.
#[derive(Clone, Debug)]
pub struct Timing {
    pub stage: &'static str,
    pub elapsed: Duration,
    pub changed: bool,
    /// Nodes in the graph after the stage.
    pub nodes: usize,
}

/// How the pipeline runs (what the compiler's callers choose; nothing is read from the
/// environment).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// Run the IR verifier after lowering and after every pass, so a pass that breaks
    /// an invariant is named as the culprit (the final verification runs regardless).
    /// Default: on in debug builds (every test), off in release builds.
    pub verify_each_pass: bool,
}

// In a release build `cfg!(debug_assertions)` is `false`, the derived default, so clippy
// there calls this impl derivable; in a debug build it is not.
#[allow(clippy::derivable_impls)]
impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { verify_each_pass: cfg!(debug_assertions) }
    }
}

fn checked(g: &Graph, pass: &str, stage: Stage, opts: &CompileOptions) -> Result<(), Failure> {
    if opts.verify_each_pass {
        verify(g, pass, stage).map_err(Failure::Bug)?;
    }
    Ok(())
}

/// The pipeline: lower, then every pass of [`PASSES`] that runs in `mode`, stopping
/// at the first user error, a compiler bug, or after the stage `stop_after`.
pub fn run_passes(
    prog: Program,
    mode: Mode,
    stop_after: Option<&str>,
    opts: &CompileOptions,
    timings: &mut Vec<Timing>,
) -> Result<(Graph, PassCtx), Failure> {
    let start = Instant::now();
    let lw = lower(prog).map_err(|(s, d)| Failure::User(s, d))?;
    let (mut g, mut cx) = PassCtx::new(lw);
    timings.push(Timing { stage: LOWER, elapsed: start.elapsed(), changed: true, nodes: g.len() });
    checked(&g, LOWER, Stage::Lowered, opts)?;
    if stop_after == Some(LOWER) {
        return Ok((g, cx));
    }
    let mut last = LOWER;
    for pass in PASSES.iter().filter(|p| p.runs_in(mode)) {
        last = pass.name;
        let start = Instant::now();
        let changed = (pass.run)(&mut g, &mut cx).map_err(Failure::Bug)?;
        timings.push(Timing { stage: pass.name, elapsed: start.elapsed(), changed, nodes: g.len() });
        if pass.kind == PassKind::Optimizer && cx.diags().has_errors() {
            // Every user error is found by the analyzer passes, which all run first.
            let message = "an optimizer pass reported a user error".to_string();
            return Err(Failure::Bug(VerifyError { pass: pass.name.to_string(), node: None, message }));
        }
        if cx.diags().has_errors() {
            return Err(Failure::User(cx.program().sources.clone(), cx.diags().clone()));
        }
        checked(&g, pass.name, Stage::Typed, opts)?;
        if stop_after == Some(pass.name) {
            break;
        }
    }
    check_trainable(&g, &cx, last).map_err(Failure::Bug)?;
    Ok((g, cx))
}

/// Architecture invariant: the trainable set is what the training rules name. Once
/// `apply_training_rules` has run, the rules are evaluated again from the model's
/// declarations (over the parameters they were first evaluated over) and every
/// parameter of `g` must carry that flag: the passes after it (folding, dead-code
/// elimination) keep or drop parameters but never change what trains. In every build;
/// `after` names the last pass that ran, for the report.
pub fn check_trainable(g: &Graph, cx: &PassCtx, after: &str) -> Result<(), VerifyError> {
    let Some(params) = &cx.rule_params else { return Ok(()) };
    let (named, _) = named_by_rules(params, &cx.decls, &cx.borrowed);
    verify_trainable(g, &named, after)
}

/// Compile a loaded program's model in `mode` with the default [`CompileOptions`].
pub fn compile(prog: Program, mode: Mode) -> Result<Compiled, Failure> {
    compile_timed(prog, mode, &CompileOptions::default()).0
}

/// Compile with `opts`.
pub fn compile_with(prog: Program, mode: Mode, opts: &CompileOptions) -> Result<Compiled, Failure> {
    compile_timed(prog, mode, opts).0
}

/// Compile, and say how long each stage took.
pub fn compile_timed(prog: Program, mode: Mode, opts: &CompileOptions) -> (Result<Compiled, Failure>, Vec<Timing>) {
    let mut timings = Vec::new();
    let result = run_passes(prog, mode, None, opts, &mut timings).and_then(|(g, cx)| {
        // In every build: what a backend relies on (typed, no unbound input, outputs,
        // parameter sources that resolve). The graph is read-only from here on.
        let start = Instant::now();
        let bindings = cx.decls.weights.keys().chain(&cx.decls.required_weights).cloned().collect();
        let nodes = g.len();
        let graph = Verified::new(g, &bindings).map_err(Failure::Bug)?;
        timings.push(Timing { stage: FINAL, elapsed: start.elapsed(), changed: false, nodes });
        Ok(finish(graph, cx, mode))
    });
    (result, timings)
}

/// The graph right after the stage `stage` (one of [`stages`]`(mode)`); `None` when
/// no such stage runs in `mode`.
pub fn graph_after(prog: Program, mode: Mode, stage: &str, opts: &CompileOptions) -> Option<Result<Graph, Failure>> {
    if !stages(mode).contains(&stage) {
        return None;
    }
    Some(run_passes(prog, mode, Some(stage), opts, &mut Vec::new()).map(|(g, _)| g))
}

fn finish(graph: Verified, cx: PassCtx, mode: Mode) -> Compiled {
    let (order, table) = cx.sites();
    let sites = order
        .iter()
        .map(|p| {
            let kind = match &table[p].kind {
                crate::lower::SiteKind::Module(m) => m.clone(),
                crate::lower::SiteKind::Primitive(m) => m.clone(),
                crate::lower::SiteKind::Value => "value".to_string(),
            };
            (p.clone(), kind)
        })
        .collect();
    let site_types = table
        .iter()
        .filter(|(_, s)| graph.contains(s.output))
        .filter_map(|(p, s)| graph.node(s.output).ty.clone().map(|t| (p.clone(), t)))
        .collect();
    let instance_args = table
        .iter()
        .filter(|(_, s)| matches!(s.kind, crate::lower::SiteKind::Module(_)))
        .map(|(p, s)| (p.clone(), s.args.clone()))
        .collect();
    let sources = cx.program().sources.clone();
    let modules = cx.program().modules.clone();
    let adapter_info = cx.adapter_info().clone();
    let d = cx.decls;
    Compiled {
        model: d.model,
        mode,
        sources,
        components: d.components,
        heads: d.heads.into_iter().map(|(h, _)| h).collect(),
        adapters: d.adapters.into_iter().map(|a| a.name.name).collect(),
        pathways: d.pathways.into_iter().map(|p| p.name.name).collect(),
        weights: d.weights,
        key_maps: d.key_maps,
        required_weights: d.required_weights,
        input_norms: d.input_norms,
        adapter_info,
        sites,
        site_types,
        instance_args,
        modules,
        graph,
    }
}

#[cfg(test)]
mod tests {
    use super::{checked, CompileOptions, Failure, PassKind, PASSES};
    use crate::ir::verify::Stage;
    use crate::ir::{Graph, Op};

    #[test]
    fn verify_each_pass_is_what_decides_whether_a_broken_graph_is_caught_after_a_pass() {
        // A `relu` with no operand: the verifier rejects it.
        let mut g = Graph::new();
        g.add(Op::Relu, "r", None, &[]);
        let on = CompileOptions { verify_each_pass: true };
        match checked(&g, "some_pass", Stage::Lowered, &on) {
            Err(Failure::Bug(e)) => assert_eq!(e.pass, "some_pass"),
            _ => panic!("the verifier after the pass must reject the graph"),
        }
        let off = CompileOptions { verify_each_pass: false };
        assert!(checked(&g, "some_pass", Stage::Lowered, &off).is_ok());
        assert_eq!(CompileOptions::default().verify_each_pass, cfg!(debug_assertions));
    }

    #[test]
    fn the_pass_list_is_well_formed() {
        // Analyzers first: the pipeline treats a user error from an optimizer as a bug.
        let first_optimizer = PASSES.iter().position(|p| p.kind == PassKind::Optimizer).expect("an optimizer");
        assert!(PASSES[first_optimizer..].iter().all(|p| p.kind == PassKind::Optimizer));
        let mut names: Vec<_> = PASSES.iter().map(|p| p.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PASSES.len(), "pass names are unique");
        assert!(PASSES.iter().all(|p| !p.why.is_empty()));
        assert_eq!(PASSES.last().map(|p| p.name), Some("eliminate_dead_code"));
    }
}
