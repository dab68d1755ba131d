//! The canonical layout: a walk over the lossless tree that decides, for every token,
//! whether it starts a line (and at which indent), or how many spaces precede it.
//!
//! Rules (see also README "graft fmt"):
//! - items, statements and model declarations one per line; blocks indent by 2;
//!   at most one blank line is kept where the author left one; a `module` or `model`
//!   is always set apart from its neighbours by one blank line;
//! - a continuation (`weights`, `at`, `from`, `into`) starts its own line, indented 4;
//! - a run of `name = value` lines in a module, and a run of `input`s, is aligned;
//! - a module's parameter list fills lines up to [`MAX_WIDTH`], continuing under the
//!   first parameter;
//! - spacing inside a line depends on the two tokens only (`f(x)`, `a + b`,
//!   `name: v`, `blocks[*].{attn.qkv, mlp.fc1}`, `f32[B, 197, 384]`);
//! - comments stay where they are: a trailing comment stays at the end of its line
//!   (a line comment ends the line: what follows continues on the next, indented 4),
//!   a comment on its own line stays on its own line, indented like the code after it.

use crate::syntax::cst::{Elem, Node, TokKind, Token};
use crate::syntax::Rule;

/// Lines are filled up to this width where the layout breaks lines (parameter lists).
pub const MAX_WIDTH: usize = 120;
const INDENT: usize = 2;
const CONTINUATION: usize = 4;

/// How the next token is placed.
#[derive(Clone, Copy)]
enum Lead {
    /// On the current line, spaced by the spacing rule.
    Inline,
    /// On the current line after exactly this many spaces.
    Spaces(usize),
    /// On a new line at this indent, with at least `min_blank` blank lines before it.
    Line { indent: usize, min_blank: usize, closes_block: bool },
}

/// What the previous token was, for the spacing rule.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Identifiers, literals, `repeat`: a `(` or `[` right after is a call or an index.
    Word,
    /// Other keywords (`out`, `if`, `model`…): a `(` after one opens a group.
    Keyword,
    Open,
    Close,
    BlockOpen,
    BlockClose,
    SetOpen,
    SetClose,
    Comma,
    Colon,
    Dot,
    Equals,
    BinOp,
    /// `-x`, `!x`: nothing between the operator and its operand.
    UnOp,
    Comment,
}

pub(super) struct Printer<'a> {
    src: &'a str,
    out: String,
    line: String,
    line_indent: usize,
    /// Indent of a line that continues the current statement.
    cont: usize,
    pending: Vec<Token>,
    lead: Lead,
    /// A line comment ended the line: the next token starts a continuation line.
    need_break: bool,
    prev: Option<Class>,
    /// Nothing printed yet in the current block (no blank line may open it).
    block_start: bool,
}

impl<'a> Printer<'a> {
    pub(super) fn new(src: &'a str) -> Printer<'a> {
        Printer {
            src,
            out: String::new(),
            line: String::new(),
            line_indent: 0,
            cont: CONTINUATION,
            pending: Vec::new(),
            lead: Lead::Line { indent: 0, min_blank: 0, closes_block: false },
            need_break: false,
            prev: None,
            block_start: true,
        }
    }

    pub(super) fn finish(mut self) -> String {
        self.flush_comments(0, 0);
        self.end_line();
        self.out
    }

    fn col(&self) -> usize {
        self.line_indent + self.line.rsplit('\n').next().map_or(0, |l| l.chars().count())
    }

    fn end_line(&mut self) {
        if !self.line.is_empty() {
            self.out.push_str(&" ".repeat(self.line_indent));
            self.out.push_str(self.line.trim_end());
            self.out.push('\n');
            self.line.clear();
        }
    }

    fn start_line(&mut self, indent: usize, blank: bool) {
        self.end_line();
        if blank && !self.out.is_empty() && !self.block_start {
            self.out.push('\n');
        }
        self.block_start = false;
        self.line_indent = indent;
        self.need_break = false;
        self.prev = None;
    }

    /// Print the comments seen since the last token; own-line ones at `indent`, the
    /// first after at least `min_blank` blank lines. True when one started a line.
    fn flush_comments(&mut self, indent: usize, min_blank: usize) -> bool {
        let mut started = false;
        for c in std::mem::take(&mut self.pending) {
            let text = c.text(self.src);
            if c.nl_before == 0 && !self.line.is_empty() {
                self.line.push(' ');
                self.line.push_str(text);
            } else {
                self.start_line(indent, c.nl_before >= 2 || (min_blank > 0 && !started));
                started = true;
                self.line.push_str(text);
            }
            self.prev = Some(Class::Comment);
            if c.kind == TokKind::LineComment || c.nl_before > 0 {
                self.need_break = true;
            }
        }
        started
    }

    fn class(&self, t: &Token, parent: Rule) -> Class {
        match t.kind {
            TokKind::Leaf(r) => match r {
                r if r.is_binary_operator() => Class::BinOp,
                Rule::neg => Class::UnOp,
                Rule::not if t.text(self.src) == "!" => Class::UnOp,
                Rule::not => Class::Keyword,
                Rule::kw_repeat | Rule::kw_int | Rule::kw_float | Rule::kw_bool | Rule::kw_str | Rule::kw_list => {
                    Class::Word
                }
                r if format!("{r:?}").starts_with("kw_") => Class::Keyword,
                _ => Class::Word,
            },
            TokKind::LineComment | TokKind::BlockComment => Class::Comment,
            TokKind::Punct => match t.text(self.src) {
                "(" | "[" => Class::Open,
                ")" | "]" => Class::Close,
                "{" if parent == Rule::sel_set => Class::SetOpen,
                "}" if parent == Rule::sel_set => Class::SetClose,
                "{" => Class::BlockOpen,
                "}" => Class::BlockClose,
                "," => Class::Comma,
                ":" => Class::Colon,
                "=" => Class::Equals,
                _ => Class::Dot,
            },
        }
    }

    /// Does a space separate `prev` from `cur` on one line?
    fn space(prev: Class, cur: Class) -> bool {
        use Class::*;
        match (prev, cur) {
            (_, Comma | Colon | Close | SetClose) => false,
            (Comment, _) => true,
            (BlockOpen, BlockClose) => false,
            (Dot, _) | (_, Dot) => false,
            (Open | SetOpen | UnOp, _) => false,
            (Word | Close, Open) => false,
            _ => true,
        }
    }

    fn token(&mut self, t: Token, parent: Rule) {
        let class = self.class(&t, parent);
        let lead = std::mem::replace(&mut self.lead, Lead::Inline);
        match lead {
            Lead::Line { indent, min_blank, closes_block } => {
                let comment_indent = if closes_block { indent + INDENT } else { indent };
                let commented = self.flush_comments(comment_indent, min_blank);
                let blank = (t.nl_before >= 2 || (min_blank > 0 && !commented)) && !closes_block;
                self.start_line(indent, blank);
                self.cont = indent + CONTINUATION;
            }
            Lead::Inline | Lead::Spaces(_) => {
                let cont = self.cont;
                self.flush_comments(cont, 0);
                if self.need_break {
                    self.start_line(cont, false);
                } else if let Lead::Spaces(n) = lead {
                    self.line.push_str(&" ".repeat(n));
                } else if let Some(p) = self.prev {
                    if Self::space(p, class) {
                        self.line.push(' ');
                    }
                }
            }
        }
        self.line.push_str(t.text(self.src));
        self.prev = Some(class);
        self.block_start = class == Class::BlockOpen;
    }

    fn set_line(&mut self, indent: usize, min_blank: usize) {
        self.lead = Lead::Line { indent, min_blank, closes_block: false };
    }

    /// Print a child element with the generic rules.
    fn elem(&mut self, e: &Elem, parent: Rule, indent: usize) {
        match e {
            Elem::Token(t) if t.is_comment() => self.pending.push(*t),
            Elem::Token(t) => self.token(*t, parent),
            Elem::Node(n) => self.node(n, indent),
        }
    }

    /// Print a node whose first token is already placed (by `self.lead`).
    pub(super) fn node(&mut self, n: &Node, indent: usize) {
        match n.rule {
            Rule::file => self.file(n),
            Rule::block | Rule::model_decl => self.block(n, indent),
            Rule::params => self.params(n, indent),
            _ => self.generic(n, indent),
        }
    }

    fn generic(&mut self, n: &Node, indent: usize) {
        for c in &n.children {
            if let Elem::Node(child) = c {
                if breaks_before(n.rule, child) {
                    self.set_line(indent + CONTINUATION, 0);
                }
            } else if let Elem::Token(t) = c {
                if matches!(t.kind, TokKind::Leaf(Rule::kw_at | Rule::kw_from | Rule::kw_into)) {
                    self.set_line(indent + CONTINUATION, 0);
                }
            }
            self.elem(c, n.rule, indent);
        }
    }

    fn file(&mut self, n: &Node) {
        let mut prev_decl = false;
        for c in &n.children {
            if let Elem::Node(item) = c {
                let decl = matches!(item.rule, Rule::module_decl | Rule::model_decl);
                let min_blank = usize::from(decl || prev_decl);
                self.set_line(0, min_blank);
                prev_decl = decl;
                self.node(item, 0);
            } else {
                self.elem(c, n.rule, 0);
            }
        }
    }

    /// A `{ … }` with one statement or model item per line (module bodies, the model).
    fn block(&mut self, n: &Node, indent: usize) {
        let inner = indent + INDENT;
        let pads = alignment(self.src, n);
        let mut opened = false;
        let mut items = 0;
        for (i, c) in n.children.iter().enumerate() {
            match c {
                Elem::Token(t) if !t.is_comment() && t.text(self.src) == "{" && !opened => {
                    opened = true;
                    self.token(*t, n.rule);
                }
                Elem::Token(t) if !t.is_comment() && t.text(self.src) == "}" && opened => {
                    if items > 0 || !self.pending.is_empty() {
                        self.lead = Lead::Line { indent, min_blank: 0, closes_block: true };
                    }
                    self.token(*t, n.rule);
                }
                Elem::Node(item) if opened => {
                    items += 1;
                    self.set_line(inner, 0);
                    match pads[i] {
                        Some(Pad::Eq(w)) => self.let_stmt(item, inner, w),
                        Some(Pad::Input(name, ty)) => self.input(item, inner, name, ty),
                        None => self.node(item, inner),
                    }
                }
                _ => self.elem(c, n.rule, indent),
            }
        }
    }

    fn let_stmt(&mut self, n: &Node, indent: usize, width: usize) {
        let mut name_len = 0;
        for c in &n.children {
            match c {
                Elem::Token(t) if t.kind == TokKind::Leaf(Rule::ident) && name_len == 0 => {
                    name_len = t.text(self.src).chars().count();
                    self.token(*t, n.rule);
                }
                Elem::Token(t) if t.kind == TokKind::Punct && t.text(self.src) == "=" => {
                    self.lead = Lead::Spaces(width.saturating_sub(name_len) + 1);
                    self.token(*t, n.rule);
                }
                _ => self.elem(c, n.rule, indent),
            }
        }
    }

    fn input(&mut self, n: &Node, indent: usize, name_w: usize, ty_w: usize) {
        let mut name_len = 0;
        let mut suffixed = false;
        let mut ty_len = 0;
        for c in &n.children {
            match c {
                Elem::Token(t) if t.kind == TokKind::Leaf(Rule::ident) && name_len == 0 => {
                    name_len = t.text(self.src).chars().count();
                    self.token(*t, n.rule);
                }
                Elem::Node(ty) if ty.rule == Rule::tensor_type => {
                    ty_len = self.measure(ty);
                    self.lead = Lead::Spaces(name_w.saturating_sub(name_len) + 1);
                    self.node(ty, indent);
                }
                Elem::Node(suffix)
                    if matches!(suffix.rule, Rule::input_norm | Rule::optional_kw | Rule::input_default) =>
                {
                    // The first suffix starts the aligned column; the rest follow it.
                    self.lead = Lead::Spaces(if suffixed { 1 } else { ty_w.saturating_sub(ty_len) + 1 });
                    suffixed = true;
                    self.node(suffix, indent);
                }
                _ => self.elem(c, n.rule, indent),
            }
        }
    }

    /// A module's parameters: as many per line as fit, continuing under the first.
    fn params(&mut self, n: &Node, indent: usize) {
        let column = self.col();
        let saved = self.cont;
        self.cont = column;
        let count = n.nodes().count();
        let mut seen = 0;
        for c in &n.children {
            if let Elem::Node(p) = c {
                seen += 1;
                // The parameter, then `,` or (for the last one) `) {`.
                let width = self.measure(p) + if seen == count { 3 } else { 1 };
                if seen > 1 && self.col() + 1 + width > MAX_WIDTH {
                    self.need_break = true;
                }
            }
            self.elem(c, n.rule, indent);
        }
        self.cont = saved;
    }

    /// Width of a node printed flat on one line (comments make it count as too wide).
    fn measure(&self, n: &Node) -> usize {
        let mut p = Printer::new(self.src);
        p.lead = Lead::Inline;
        p.node(n, 0);
        let text = p.finish();
        let text = text.trim_end_matches('\n');
        if text.contains('\n') {
            MAX_WIDTH
        } else {
            text.chars().count()
        }
    }
}

/// Does `child` of `parent` start a continuation line?
fn breaks_before(parent: Rule, child: &Node) -> bool {
    child.rule == Rule::weights && matches!(parent, Rule::component_decl | Rule::adapter_decl)
}

#[derive(Clone, Copy)]
enum Pad {
    /// Pad the name of a `name = value` line to this width.
    Eq(usize),
    /// Pad an input's name and tensor type to these widths.
    Input(usize, usize),
}

/// The alignment of each child of a block: runs of `let`s (or of `input`s) that follow
/// one another with no blank line or comment between them are aligned together.
fn alignment(src: &str, n: &Node) -> Vec<Option<Pad>> {
    let mut pads = vec![None; n.children.len()];
    let mut run: Vec<usize> = Vec::new();
    let mut run_rule = None;
    let close = |run: &mut Vec<usize>, pads: &mut Vec<Option<Pad>>| {
        if run.is_empty() {
            return;
        }
        let nodes: Vec<&Node> = run
            .iter()
            .map(|&i| match &n.children[i] {
                Elem::Node(x) => x,
                Elem::Token(_) => unreachable!("runs hold nodes"),
            })
            .collect();
        let name_w = nodes.iter().map(|x| name_of(src, x)).max().unwrap_or(0);
        if nodes[0].rule == Rule::let_stmt {
            for &i in run.iter() {
                pads[i] = Some(Pad::Eq(name_w));
            }
        } else {
            let has_suffix = |x: &&&Node| {
                x.nodes().any(|c| matches!(c.rule, Rule::input_norm | Rule::optional_kw | Rule::input_default))
            };
            let ty_w = nodes
                .iter()
                .filter(has_suffix)
                .map(|x| {
                    x.nodes().find(|c| c.rule == Rule::tensor_type).map_or(0, |t| {
                        let mut p = Printer::new(src);
                        p.lead = Lead::Inline;
                        p.node(t, 0);
                        p.finish().trim_end().chars().count()
                    })
                })
                .max()
                .unwrap_or(0);
            for &i in run.iter() {
                pads[i] = Some(Pad::Input(name_w, ty_w));
            }
        }
        run.clear();
    };
    for (i, c) in n.children.iter().enumerate() {
        match c {
            Elem::Node(x) if matches!(x.rule, Rule::let_stmt | Rule::input_decl) => {
                // The next line (or the same line: each item gets its own line, so a spec
                // written on one line aligns on the first pass, as on the second).
                let joins = run_rule == Some(x.rule) && x.first_token().is_some_and(|t| t.nl_before <= 1);
                if !joins {
                    close(&mut run, &mut pads);
                }
                run.push(i);
                run_rule = Some(x.rule);
            }
            Elem::Token(t) if t.is_comment() && t.nl_before == 0 => {}
            _ => {
                close(&mut run, &mut pads);
                run_rule = None;
            }
        }
    }
    close(&mut run, &mut pads);
    pads
}

/// Length of the declared name of a `let` or `input`.
fn name_of(src: &str, n: &Node) -> usize {
    n.children
        .iter()
        .find_map(|c| match c {
            Elem::Token(t) if t.kind == TokKind::Leaf(Rule::ident) => Some(t.text(src).chars().count()),
            _ => None,
        })
        .unwrap_or(0)
}
