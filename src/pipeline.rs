//! The compiler pipeline, in one function.
//!
//! ```text
//! source ─parse─▶ AST ─lower─▶ IR ─infer_shapes─▶ insert_adapters ─▶ check_optional_inputs
//!        ─▶ build_pathways ─▶ apply_training_rules ─▶ [infer: fold_reparam] ─▶ eliminate_dead_code
//! ```
//! The IR verifier runs after every pass in debug and test builds (and always when
//! `GRAFT_VERIFY=1`); the final verification stage ([`Verified::new`]) runs in every
//! build and produces the only graph a backend accepts.

use crate::diag::Diagnostics;
use crate::ir::verified::Verified;
use crate::ir::verify::{verify, verify_trainable, Stage, VerifyError};
use crate::ir::Graph;
use crate::lower::{lower, Component, Lowered, Program};
use crate::passes::{
    apply_training_rules::apply_training_rules, build_pathways::build_pathways,
    check_optional_inputs::check_optional_inputs, eliminate_dead_code::eliminate_dead_code, fold_reparam::fold_reparam,
    infer_shapes::infer_shapes, insert_adapters::insert_adapters,
};
use crate::source::SourceMap;
use std::collections::BTreeMap;

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
    /// Sites (path, kind) in creation order, for `graft select`.
    pub sites: Vec<(String, String)>,
}

/// Why a compilation failed.
pub enum Failure {
    /// Mistakes in the spec, with the sources to render them against.
    User(SourceMap, Diagnostics),
    /// A compiler bug caught by the verifier.
    Bug(VerifyError),
}

fn checked(g: &Graph, pass: &str, stage: Stage) -> Result<(), Failure> {
    if cfg!(debug_assertions) || std::env::var_os("GRAFT_VERIFY").is_some() {
        verify(g, pass, stage).map_err(Failure::Bug)?;
    }
    Ok(())
}

fn user_errors(lw: &Lowered) -> Result<(), Failure> {
    if lw.b.diags.has_errors() {
        Err(Failure::User(lw.b.program().sources.clone(), lw.b.diags.clone()))
    } else {
        Ok(())
    }
}

/// A shape error found inside a library module (`<std>/vit.graft`) also points at the
/// model's declaration that instantiated it, so the user sees which of their lines to fix.
fn from_user_code(lw: &Lowered, id: crate::ir::NodeId, d: crate::diag::Diagnostic) -> crate::diag::Diagnostic {
    use crate::syntax::ast::ModelItem;
    let prog = lw.b.program();
    if d.primary.as_ref().is_none_or(|(span, _)| span.file == prog.root) {
        return d;
    }
    let path = lw.b.graph.node(id).path.clone();
    let top = path.split('.').next().unwrap_or_default();
    let root_first = prog.models.get(&lw.model).into_iter().chain(prog.models.values());
    let decl = root_first.flat_map(|m| m.items.iter()).find_map(|it| match it {
        ModelItem::Component(c) if c.name.name == top => Some(c.value.span),
        ModelItem::Head { name, value, .. } if name.name == top => Some(value.span),
        _ => None,
    });
    match decl {
        Some(span) => d.also(span, format!("`{path}` is part of this instance")),
        None => d,
    }
}

/// Compile a loaded program's model in `mode`.
pub fn compile(prog: Program, mode: Mode) -> Result<Compiled, Failure> {
    // Resolve names and instantiate modules: the backbones, encoders, heads, outputs.
    let mut lw = lower(prog).map_err(|(s, d)| Failure::User(s, d))?;
    checked(&lw.b.graph, "lower", Stage::Lowered)?;
    // Types first, so adapter and pathway insertion can check widths against sites.
    let errors = infer_shapes(&mut lw.b.graph);
    let errors: Vec<_> = errors.into_iter().map(|(id, d)| from_user_code(&lw, id, d)).collect();
    lw.b.diags.items.extend(errors);
    user_errors(&lw)?;
    checked(&lw.b.graph, "infer_shapes", Stage::Typed)?;
    // Adapters change the dataflow; pathways change only weights.
    insert_adapters(&mut lw);
    user_errors(&lw)?;
    checked(&lw.b.graph, "insert_adapters", Stage::Typed)?;
    // Once adapters are in, every output must survive a missing modality.
    let errors = check_optional_inputs(&lw.b.graph);
    lw.b.diags.items.extend(errors);
    user_errors(&lw)?;
    let borrowed = build_pathways(&mut lw);
    user_errors(&lw)?;
    checked(&lw.b.graph, "build_pathways", Stage::Typed)?;
    // All parameters now exist: decide what trains, then assert exactly that trains.
    let expected = apply_training_rules(&mut lw, &borrowed);
    user_errors(&lw)?;
    verify_trainable(&lw.b.graph, &expected, "apply_training_rules").map_err(Failure::Bug)?;
    checked(&lw.b.graph, "apply_training_rules", Stage::Typed)?;
    if mode == Mode::Infer {
        fold_reparam(&mut lw.b.graph);
        checked(&lw.b.graph, "fold_reparam", Stage::Typed)?;
    }
    // Last: drop what no output needs (unused auxiliary layers, folded leftovers).
    eliminate_dead_code(&mut lw.b.graph);
    checked(&lw.b.graph, "eliminate_dead_code", Stage::Typed)?;
    // In every build: what a backend relies on (typed, no unbound input, outputs,
    // parameter sources that resolve). The graph is read-only from here on.
    let sites = site_kinds(&lw);
    let bindings = lw.weights.keys().cloned().collect();
    let graph = Verified::new(std::mem::take(&mut lw.b.graph), &bindings).map_err(Failure::Bug)?;
    Ok(Compiled {
        model: lw.model.clone(),
        mode,
        sources: lw.b.program().sources.clone(),
        components: lw.components.clone(),
        heads: lw.heads.iter().map(|(h, _)| h.clone()).collect(),
        adapters: lw.adapters.iter().map(|a| a.name.name.clone()).collect(),
        pathways: lw.pathways.iter().map(|p| p.name.name.clone()).collect(),
        weights: lw.weights.clone(),
        sites,
        graph,
    })
}

/// Sites (path, kind) in creation order.
fn site_kinds(lw: &Lowered) -> Vec<(String, String)> {
    lw.b.site_order
        .iter()
        .map(|p| {
            let kind = match &lw.b.sites[p].kind {
                crate::lower::SiteKind::Module(m) => m.clone(),
                crate::lower::SiteKind::Primitive(m) => m.clone(),
                crate::lower::SiteKind::Value => "value".to_string(),
            };
            (p.clone(), kind)
        })
        .collect()
}
