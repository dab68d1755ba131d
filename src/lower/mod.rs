//! Resolve and instantiate: a loaded [`Program`] → an IR [`Graph`] plus the tables
//! the later passes need (sites, components, the model's declarations).
//!
//! This is the analyzer stage: it may report user errors. Module instances are
//! expanded eagerly; every named statement of every instance becomes a *site* with a
//! hierarchical path (`target.blocks.3.mlp`) that selectors match. Adapters and
//! pathways are not inserted here; the passes `insert_adapters` and `build_pathways`
//! do that on the typed graph, using the [`Builder`] to instantiate adapter modules.

mod args;
pub mod builtins;
mod eval;
mod instance;
pub mod load;
mod model;
pub mod norm;
mod params;
mod primitive;
mod stmt;

pub use eval::{ArgVal, Env};
pub use load::{load_file, load_str, ModuleEntry, Program, STD};
pub use model::lower;
pub(crate) use primitive::signature as primitive_signature;

use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::{Graph, NodeId};
use crate::source::Span;
use crate::syntax::ast::{AdapterDecl, ComponentKind, PathwayDecl, Selector, Trainability};
use std::collections::{BTreeMap, HashMap};

/// Marker: a diagnostic has been pushed; unwind the current construct.
#[derive(Debug, Clone, Copy)]
pub struct Reported;

pub type R<T> = Result<T, Reported>;

/// Limits that keep hostile or mistaken specs from exhausting time or memory.
pub mod limits {
    /// Nested module instances (also catches recursion through aliases).
    pub const MAX_INSTANCE_DEPTH: usize = 48;
    /// IR nodes in one model. The largest gallery model has under 2,000; a ViT-g with
    /// adapters everywhere under 20,000. At this limit `check`, `compile` and `select`
    /// take seconds and well under 1 GB (a chain of 2^14 linears, measured).
    pub const MAX_NODES: usize = 50_000;
    /// Module and primitive instances in one model (modules without operations cost
    /// time and site paths too).
    pub const MAX_INSTANCES: usize = 50_000;
    /// `repeat(n)`.
    pub const MAX_REPEAT: i64 = 4096;
    /// Elements of one parameter tensor (2^40 ≈ 1.1e12).
    pub const MAX_PARAM_ELEMENTS: u128 = 1 << 40;
    /// Elements of all parameters of a model (2^42 ≈ 4.4e12).
    pub const MAX_TOTAL_ELEMENTS: u128 = 1 << 42;
    /// Elements of one list value.
    pub const MAX_LIST: usize = 4096;
    /// Segments of one site path (`target.blocks.3.mlp` has 4); paths grow when adapters
    /// are placed inside adapters.
    pub const MAX_PATH_DEPTH: usize = 128;
    /// Diagnostics after which a stage stops looking for more (each may cost a search
    /// for suggestions; hundreds of errors help nobody).
    pub const MAX_DIAGNOSTICS: usize = 200;
}

/// A compile-time value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Value>),
    Tensor(NodeId),
    /// An optional module input that was not passed.
    Absent,
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Tensor(_) => "tensor",
            Value::Absent => "absent input",
        }
    }

    /// The kind with its article: "an int", "a tensor".
    pub fn a_kind(&self) -> String {
        let k = self.kind();
        let article = if k.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        format!("{article} {k}")
    }
}

/// What a site is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteKind {
    /// An instance of a graft module.
    Module(String),
    /// An instance of a parametric primitive (`linear`, `layernorm`, …).
    Primitive(String),
    /// A named value (`x1 = x + attn`, `k = split(qkv, 3, 1)`).
    Value,
}

/// A named point of the graph that selectors can match.
#[derive(Debug, Clone)]
pub struct Site {
    pub path: String,
    pub kind: SiteKind,
    /// The value fed in (first input of an instance, first operand of a value).
    pub input: Option<NodeId>,
    pub output: NodeId,
    pub span: Span,
    /// A module instance's parameters as bound (given or default), in declaration
    /// order; empty for primitives and values.
    pub args: Vec<(String, Value)>,
}

/// A backbone or encoder as declared.
#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    pub kind: ComponentKind,
    pub weights: Option<String>,
    pub trainability: Option<Trainability>,
    /// Built without inputs, for its weights only (an M2PT auxiliary model).
    pub weights_only: bool,
    pub span: Span,
}

/// An adapter as inserted: its module, its numeric configuration (given or a literal
/// default, e.g. a LoRA's `rank` and `alpha`) and the sites it was placed at. What
/// an adapter file from another tool (a PEFT directory) is checked against.
#[derive(Debug, Clone, Default)]
pub struct AdapterInfo {
    pub module: String,
    pub args: BTreeMap<String, f64>,
    pub sites: Vec<String>,
}

/// Everything `lower` produces; consumed by the passes.
pub struct Lowered {
    pub b: Builder,
    pub decls: Decls,
}

/// What the model declares, as lowering found it.
#[derive(Default)]
pub struct Decls {
    pub model: String,
    pub components: Vec<Component>,
    /// Heads: (name, span).
    pub heads: Vec<(String, Span)>,
    pub adapters: Vec<AdapterDecl>,
    /// Adapter name → (weights file, frozen) from `weights NAME "file"` bindings.
    pub adapter_weights: HashMap<String, (String, Option<Trainability>)>,
    pub pathways: Vec<PathwayDecl>,
    pub train: Vec<Selector>,
    /// Model-level names → values (for adapter arguments such as `context: audio_enc.norm`).
    pub env: Env,
    /// Weights bindings: binding name → file as written.
    pub weights: BTreeMap<String, String>,
    /// Key rules of the bindings that have any.
    pub key_maps: BTreeMap<String, crate::keymap::KeyMap>,
    /// Bindings declared `weights required`.
    pub required_weights: std::collections::BTreeSet<String>,
    /// Inputs that declare the normalisation they expect.
    pub input_norms: BTreeMap<String, norm::Normalized>,
}

/// Graph construction state shared by lowering and the passes that instantiate.
pub struct Builder {
    pub graph: Graph,
    pub sites: BTreeMap<String, Site>,
    /// Site paths in creation order (selectors report matches in this order).
    pub site_order: Vec<String>,
    pub diags: Diagnostics,
    pub(crate) prog: Program,
    /// The top-level component being built (owner of new parameters).
    pub(crate) component: String,
    /// The weights binding new parameters load from, if any.
    pub(crate) binding: Option<String>,
    pub(crate) stack: Vec<(String, Span)>,
    pub(crate) total_elements: u128,
    /// Instances created so far (bounded by [`limits::MAX_INSTANCES`]).
    pub(crate) instances: usize,
    /// While an adapter module is instantiated: the features it receives and the
    /// features it returns at its site (`site_in`, `site_out` in its defaults).
    pub(crate) adapter_site: Option<(i64, i64)>,
    /// Adapters by name as placed (filled by `insert_adapters`).
    pub(crate) adapter_info: BTreeMap<String, AdapterInfo>,
}

impl Builder {
    pub fn new(prog: Program) -> Builder {
        Builder {
            graph: Graph::new(),
            sites: BTreeMap::new(),
            site_order: Vec::new(),
            diags: Diagnostics::default(),
            prog,
            component: String::new(),
            binding: None,
            stack: Vec::new(),
            total_elements: 0,
            instances: 0,
            adapter_site: None,
            adapter_info: BTreeMap::new(),
        }
    }

    pub fn program(&self) -> &Program {
        &self.prog
    }

    pub(crate) fn error(&mut self, mut d: Diagnostic) -> Reported {
        // An error inside a library module also points at the user's instance of it.
        let root = self.prog.root;
        let in_library = d.primary.as_ref().is_some_and(|(s, _)| s.file != root);
        if in_library && d.secondary.iter().all(|(s, _)| s.file != root) {
            if let Some((m, sp)) = self.stack.iter().rev().find(|(_, sp)| sp.file == root) {
                d = d.also(*sp, format!("in this instance of `{m}`"));
            }
        }
        self.diags.push(d);
        Reported
    }

    /// Set who owns the parameters created next.
    pub fn set_owner(&mut self, component: &str, binding: Option<String>) {
        self.component = component.to_string();
        self.binding = binding;
    }

    pub(crate) fn add_site(&mut self, site: Site) -> R<()> {
        let depth = site.path.split('.').count();
        if depth > limits::MAX_PATH_DEPTH {
            return Err(self.error(
                Diagnostic::error(
                    "E0202",
                    format!("instance path {depth} levels deep; the limit is {}", limits::MAX_PATH_DEPTH),
                )
                .at(site.span, "too deep here")
                .hint("adapters placed inside adapters nest their paths: place them at the backbone's sites"),
            ));
        }
        if let Some(prev) = self.sites.get(&site.path) {
            let prev = prev.span;
            return Err(self.error(
                Diagnostic::error("E0201", format!("`{}` is defined twice", site.path))
                    .at(site.span, "redefined here")
                    .also(prev, "first defined here")
                    .hint("every instance and named value needs its own name"),
            ));
        }
        self.site_order.push(site.path.clone());
        self.sites.insert(site.path.clone(), site);
        Ok(())
    }
}

/// An unnamed argument holding `value` (for inputs the compiler passes itself).
pub fn eval_arg(value: Value, span: Span) -> ArgVal {
    ArgVal { name: None, value, span }
}
