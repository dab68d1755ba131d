//! `PassCtx`: everything a pass gets besides the graph.
//!
//! Every pass has one signature, [`PassFn`]: it takes the graph and the context and
//! says whether it changed the graph. User errors go into the context's
//! diagnostics (the pipeline stops after an analyzer pass that reported any); an
//! `Err` is a compiler bug. The context carries
//! - the model's declarations ([`Decls`]: components, adapters, pathways, rules…),
//! - the facts one pass leaves for a later one (the pathways' borrowed parameters,
//!   the parameters the training rules were evaluated over),
//! - the module instantiator, which the passes that insert modules or create
//!   parameters (`insert_adapters`, `build_pathways`) borrow through
//!   [`PassCtx::lend`] together with the graph.

use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::verify::VerifyError;
use crate::ir::Graph;
pub use crate::lower::Decls;
use crate::lower::{Builder, Lowered, Program, Site};
use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};

/// A pass: transform `graph`, report user errors into the context, return whether
/// anything changed; `Err` only for a compiler bug.
pub type PassFn = fn(&mut Graph, &mut PassCtx) -> Result<bool, VerifyError>;

/// What a pathway borrows (left by `build_pathways` for `apply_training_rules`): whether W′ trains, and the W′ parameter paths.
#[derive(Debug, Clone, Default)]
pub struct Borrowed {
    pub aux_trainable: bool,
    pub aux_params: Vec<String>,
    pub lambdas: Vec<String>,
}

/// The context of one compilation's passes.
pub struct PassCtx {
    pub decls: Decls,
    /// Pathway name → what it borrows (set by `build_pathways`, read by
    /// `apply_training_rules`).
    pub borrowed: HashMap<String, Borrowed>,
    /// The parameters (path, component) the training rules were evaluated over (set by
    /// `apply_training_rules`; the pipeline evaluates the rules over them again to
    /// check the final graph's flags).
    pub rule_params: Option<Vec<(String, String)>>,
    builder: Builder,
}

impl PassCtx {
    /// Split lowering's result into the graph and the context of the passes.
    pub fn new(lw: Lowered) -> (Graph, PassCtx) {
        let Lowered { mut b, decls } = lw;
        let graph = std::mem::replace(&mut b.graph, Graph::new());
        (graph, PassCtx { decls, borrowed: HashMap::new(), rule_params: None, builder: b })
    }

    /// The loaded program (sources, modules).
    pub fn program(&self) -> &Program {
        self.builder.program()
    }

    /// Adapters as `insert_adapters` placed them.
    pub fn adapter_info(&self) -> &BTreeMap<String, crate::lower::AdapterInfo> {
        &self.builder.adapter_info
    }

    pub fn diags(&self) -> &Diagnostics {
        &self.builder.diags
    }

    /// Report a user error.
    pub fn report(&mut self, d: Diagnostic) {
        self.builder.diags.push(d);
    }

    /// Enough errors that looking for more would only cost time.
    pub fn too_many_errors(&self) -> bool {
        self.builder.diags.items.len() > crate::lower::limits::MAX_DIAGNOSTICS
    }

    /// Sites in creation order, with their table.
    pub fn sites(&self) -> (&[String], &BTreeMap<String, Site>) {
        (&self.builder.site_order, &self.builder.sites)
    }

    /// The instantiator with `graph` lent to it, and the declarations beside it.
    /// The graph returns to the caller when the [`Lent`] is dropped.
    pub fn lend<'a>(&'a mut self, graph: &'a mut Graph) -> (Lent<'a>, &'a Decls) {
        std::mem::swap(&mut self.builder.graph, graph);
        (Lent { builder: &mut self.builder, graph }, &self.decls)
    }
}

/// The instantiator holding a pass's graph (as `builder.graph`) for as long as it lives.
pub struct Lent<'a> {
    builder: &'a mut Builder,
    graph: &'a mut Graph,
}

impl Deref for Lent<'_> {
    type Target = Builder;
    fn deref(&self) -> &Builder {
        self.builder
    }
}

impl DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut Builder {
        self.builder
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        std::mem::swap(&mut self.builder.graph, self.graph);
    }
}
