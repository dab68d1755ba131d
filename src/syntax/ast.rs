//! The abstract syntax tree of a spec file.
//!
//! Names are unresolved here: a `Name("vit")` may be a module, a primitive, a
//! parameter or a value; the lowering stage (`crate::lower`) resolves them in an
//! explicit scope. Every node keeps its [`Span`].

use crate::source::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, Default)]
pub struct File {
    pub uses: Vec<Use>,
    pub modules: Vec<ModuleDecl>,
    pub aliases: Vec<Alias>,
    pub models: Vec<ModelDecl>,
}

#[derive(Debug, Clone)]
pub enum UseTarget {
    /// `use std.vit`
    Std(Vec<String>),
    /// `use "../base.graft"`
    File(String),
}

#[derive(Debug, Clone)]
pub struct Use {
    pub target: UseTarget,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamTy {
    Int,
    Float,
    Bool,
    Str,
    List,
}

impl ParamTy {
    pub fn name(self) -> &'static str {
        match self {
            ParamTy::Int => "int",
            ParamTy::Float => "float",
            ParamTy::Bool => "bool",
            ParamTy::Str => "str",
            ParamTy::List => "list",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ParamDecl {
    pub name: Ident,
    pub ty: ParamTy,
    pub default: Option<Expr>,
}

#[derive(Debug, Clone)]
pub struct ModuleDecl {
    pub name: Ident,
    pub params: Vec<ParamDecl>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// `module audio_vit = vit(channels: 1, height: 128, width: 1024)`: a module with
/// some parameters preset (callers may still override them). Adds no path level.
#[derive(Debug, Clone)]
pub struct Alias {
    pub name: Ident,
    pub target: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Stmt {
    In { name: Ident, optional: bool },
    Out { value: Expr, span: Span },
    If { cond: Expr, then: Vec<Stmt>, otherwise: Vec<Stmt>, span: Span },
    Let { name: Ident, value: LetValue },
}

#[derive(Debug, Clone)]
pub enum LetValue {
    Expr(Expr),
    /// `blocks = repeat(depth) block(dim: dim)(x)`: children `blocks.0 …` chained.
    Repeat {
        count: Expr,
        module: Ident,
        config: Vec<Arg>,
        inputs: Vec<Arg>,
        span: Span,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Debug, Clone)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Expr>),
    Name(String),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call { callee: Box<Expr>, args: Vec<Arg> },
    Field(Box<Expr>, Ident),
    Index(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Debug, Clone)]
pub struct ModelDecl {
    pub name: Ident,
    pub extends: Option<Ident>,
    pub items: Vec<ModelItem>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainability {
    Frozen,
    Trainable,
}

#[derive(Debug, Clone)]
pub struct InputDecl {
    pub name: Ident,
    pub dtype: String,
    pub dims: Vec<Dim>,
    pub optional: bool,
    /// `= zeros`: an absent optional input is replaced by zeros.
    pub default: Option<Ident>,
    /// `normalized imagenet` / `normalized mean [...] std [...]`.
    pub normalized: Option<InputNorm>,
    pub span: Span,
}

/// The normalisation an input declares it expects.
#[derive(Debug, Clone)]
pub enum InputNorm {
    /// Named statistics (`imagenet`, `clip`, `none`, `audioset`).
    Named(Ident),
    /// Per-channel numbers, parsed as f32.
    Stats { mean: Vec<f32>, std: Vec<f32>, span: Span },
}

#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64, Span),
    Symbolic(Ident),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    Backbone,
    Encoder,
}

/// `weights "file" [key rules]` or `weights required [key rules]`.
#[derive(Debug, Clone)]
pub struct WeightsRef {
    /// `None`: `weights required`, the file comes from the command line.
    pub file: Option<String>,
    pub span: Span,
    pub keys: crate::keymap::KeyMap,
}

#[derive(Debug, Clone)]
pub struct ComponentDecl {
    pub kind: ComponentKind,
    pub name: Ident,
    pub value: Expr,
    pub weights: Option<WeightsRef>,
    pub trainability: Option<(Trainability, Span)>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placement {
    After,
    Parallel,
    Before,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::After => "after",
            Placement::Parallel => "parallel",
            Placement::Before => "before",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdapterDecl {
    pub name: Ident,
    pub module: Ident,
    pub args: Vec<Arg>,
    pub at: Selector,
    pub placement: Placement,
    pub weights: Option<WeightsRef>,
    pub trainability: Option<(Trainability, Span)>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct PathwayDecl {
    pub name: Ident,
    pub kind: Ident,
    pub args: Vec<Arg>,
    pub from: Selector,
    pub into: Selector,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum ModelItem {
    Input(InputDecl),
    Component(ComponentDecl),
    Adapter(AdapterDecl),
    Pathway(PathwayDecl),
    Head {
        name: Ident,
        value: Expr,
        span: Span,
    },
    Output {
        name: Ident,
        value: Expr,
        span: Span,
    },
    Train {
        rules: Vec<Selector>,
        span: Span,
    },
    /// `weights mhva "runs/video/trainable.safetensors" frozen` (in an `extends` model),
    /// or `weights cls required` (the file comes from the command line).
    Bind {
        name: Ident,
        /// `None`: `required`.
        file: Option<String>,
        keys: crate::keymap::KeyMap,
        trainability: Option<Trainability>,
        span: Span,
    },
}

/// A pattern over hierarchical paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub steps: Vec<SelStep>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelStep {
    Seg { name: SegName, index: Option<IndexSel> },
    Set(Vec<Selector>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SegName {
    Exact(String),
    /// `*`: exactly one segment.
    Star,
    /// `**`: any number of segments, including none.
    DoubleStar,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IndexSel {
    All,
    One(i64),
    Range(Option<i64>, Option<i64>),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                write!(f, ".")?;
            }
            match s {
                SelStep::Seg { name, index } => {
                    match name {
                        SegName::Exact(n) => write!(f, "{n}")?,
                        SegName::Star => write!(f, "*")?,
                        SegName::DoubleStar => write!(f, "**")?,
                    }
                    match index {
                        None => {}
                        Some(IndexSel::All) => write!(f, "[*]")?,
                        Some(IndexSel::One(i)) => write!(f, "[{i}]")?,
                        Some(IndexSel::Range(a, b)) => {
                            write!(f, "[")?;
                            if let Some(a) = a {
                                write!(f, "{a}")?;
                            }
                            write!(f, "..")?;
                            if let Some(b) = b {
                                write!(f, "{b}")?;
                            }
                            write!(f, "]")?;
                        }
                    }
                }
                SelStep::Set(alts) => {
                    write!(f, "{{")?;
                    for (j, a) in alts.iter().enumerate() {
                        if j > 0 {
                            write!(f, ", ")?;
                        }
                        write!(f, "{a}")?;
                    }
                    write!(f, "}}")?;
                }
            }
        }
        Ok(())
    }
}
