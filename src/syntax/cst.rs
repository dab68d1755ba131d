//! The lossless concrete syntax tree: pest's parse tree with every byte accounted for.
//!
//! The AST ([`super::ast`]) drops comments and punctuation. Tools that must give the
//! text back (the formatter, the language server's semantic tokens) use this tree
//! instead. It is built from the same grammar run: every rule that has structure
//! becomes a [`Node`]; every leaf rule (identifiers, literals, keywords, operators)
//! becomes a [`Token`]; the text *between* pest's pairs, which pest does not report,
//! is lexed here into punctuation tokens (`( ) [ ] { } , : = . ..`) and comment
//! tokens. Whitespace is implied by the tokens' offsets ([`Token::nl_before`] counts
//! its newlines). Comments that pest folds into the end of a rule (a rule ending in an
//! optional part takes the trivia after it) are hoisted to the parent, so a comment
//! always sits between the two nodes it is written between.

use super::grammar::{GraftParser, Rule};
use pest::iterators::Pair;
use pest::Parser;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokKind {
    /// A leaf rule of the grammar: `ident`, `int`, `string`, `kw_model`, `add`, …
    Leaf(Rule),
    /// A literal of the grammar that pest does not report: `( ) [ ] { } , : = . ..`
    Punct,
    /// `// …` up to the end of the line (the newline is not part of it).
    LineComment,
    /// `/* … */`
    BlockComment,
}

/// One token: a byte range of the source.
#[derive(Debug, Clone, Copy)]
pub struct Token {
    pub kind: TokKind,
    pub start: usize,
    pub end: usize,
    /// Newlines in the whitespace between the previous token (or comment) and this one.
    pub nl_before: u32,
}

impl Token {
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        &src[self.start..self.end]
    }

    pub fn is_comment(&self) -> bool {
        matches!(self.kind, TokKind::LineComment | TokKind::BlockComment)
    }
}

/// A child of a node.
#[derive(Debug, Clone)]
pub enum Elem {
    Node(Node),
    Token(Token),
}

/// A grammar rule with structure and its children in source order.
#[derive(Debug, Clone)]
pub struct Node {
    pub rule: Rule,
    pub start: usize,
    /// End of the last child that is not a comment.
    pub end: usize,
    pub children: Vec<Elem>,
}

impl Node {
    /// The first token of the node (comments included), if any.
    pub fn first_token(&self) -> Option<Token> {
        self.children.iter().find_map(|c| match c {
            Elem::Token(t) => Some(*t),
            Elem::Node(n) => n.first_token(),
        })
    }

    /// Every token of the subtree in source order.
    pub fn tokens(&self, out: &mut Vec<Token>) {
        for c in &self.children {
            match c {
                Elem::Token(t) => out.push(*t),
                Elem::Node(n) => n.tokens(out),
            }
        }
    }

    /// The child nodes (no tokens).
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.children.iter().filter_map(|c| match c {
            Elem::Node(n) => Some(n),
            Elem::Token(_) => None,
        })
    }
}

/// Rules with structure; every other rule the parser reports is a leaf token.
fn is_node(rule: Rule) -> bool {
    use Rule::*;
    matches!(
        rule,
        file | use_decl
            | module_decl
            | module_alias
            | params
            | param
            | ty
            | block
            | in_stmt
            | out_stmt
            | if_stmt
            | let_stmt
            | repeat_expr
            | model_decl
            | extends
            | input_decl
            | input_default
            | input_norm
            | norm_stats
            | num_list
            | tensor_type
            | dim
            | component_decl
            | component_kind
            | weights
            | trainability
            | adapter_decl
            | placement
            | pathway_decl
            | head_decl
            | output_decl
            | train_decl
            | bind_decl
            | optional_kw
            | selector
            | sel_set
            | sel_seg
            | sel_index
            | index_range
            | range_lo
            | range_hi
            | index_one
            | expr
            | postfix_expr
            | call
            | field
            | index
            | list
            | args
            | arg
    )
}

/// Build the tree of a file that parses. `None` when the text has a syntax error:
/// callers run [`super::parse`] first for the diagnostics.
pub fn build(text: &str) -> Option<Node> {
    let mut pairs = GraftParser::parse(Rule::file, text).ok()?;
    let file = pairs.next()?;
    let mut b = Builder { text, last_end: 0 };
    let (mut root, trailing) = b.node(file);
    root.children.extend(trailing);
    root.end = text.len();
    Some(root)
}

struct Builder<'a> {
    text: &'a str,
    last_end: usize,
}

impl Builder<'_> {
    fn token(&mut self, kind: TokKind, start: usize, end: usize) -> Token {
        let gap = self.text.get(self.last_end.min(start)..start).unwrap_or("");
        let nl_before = gap.bytes().filter(|&b| b == b'\n').count() as u32;
        self.last_end = end;
        Token { kind, start, end, nl_before }
    }

    /// The node for `pair` and the comments that trail it (for the parent).
    fn node(&mut self, pair: Pair<Rule>) -> (Node, Vec<Elem>) {
        let rule = pair.as_rule();
        let span = pair.as_span();
        let mut children = Vec::new();
        let mut cursor = span.start();
        for child in pair.into_inner() {
            let cs = child.as_span();
            self.gap(cursor, cs.start(), &mut children);
            if is_node(child.as_rule()) {
                let (n, trail) = self.node(child);
                children.push(Elem::Node(n));
                children.extend(trail);
            } else if cs.end() > cs.start() {
                let t = self.token(TokKind::Leaf(child.as_rule()), cs.start(), cs.end());
                children.push(Elem::Token(t));
            }
            cursor = cs.end();
        }
        self.gap(cursor, span.end(), &mut children);
        let mut trail = Vec::new();
        while matches!(children.last(), Some(Elem::Token(t)) if t.is_comment()) {
            trail.push(children.pop().expect("last child"));
        }
        trail.reverse();
        let end = children
            .iter()
            .rev()
            .map(|c| match c {
                Elem::Token(t) => t.end,
                Elem::Node(n) => n.end,
            })
            .next()
            .unwrap_or(span.start());
        (Node { rule, start: span.start(), end, children }, trail)
    }

    /// Lex the text between two reported pairs: whitespace, comments, punctuation.
    fn gap(&mut self, from: usize, to: usize, out: &mut Vec<Elem>) {
        let bytes = self.text.as_bytes();
        let mut i = from;
        while i < to {
            let c = bytes[i];
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let (kind, end) = if self.text[i..to].starts_with("//") {
                // To the end of the line, without its break (`\n` or `\r\n`).
                let end = self.text[i..to].find('\n').map_or(to, |n| i + n);
                let end = if end > i + 2 && self.text.as_bytes()[end - 1] == b'\r' { end - 1 } else { end };
                (TokKind::LineComment, end)
            } else if self.text[i..to].starts_with("/*") {
                let end = self.text[i + 2..to].find("*/").map_or(to, |n| i + 2 + n + 2);
                (TokKind::BlockComment, end)
            } else if self.text[i..to].starts_with("..") {
                (TokKind::Punct, i + 2)
            } else {
                let len = self.text[i..].chars().next().map_or(1, char::len_utf8);
                (TokKind::Punct, (i + len).min(to))
            };
            let t = self.token(kind, i, end);
            out.push(Elem::Token(t));
            i = end;
        }
    }
}
