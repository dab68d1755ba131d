//! pest parse tree → AST; the grammar and input limits are in `grammar.rs`, syntax
//! errors in `errors.rs`.

use super::ast::*;
use super::errors::{check_limits, syntax_error};
use super::grammar::{GraftParser, Rule, MAX_EXPR_DEPTH};
use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{FileId, Span};
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;
use std::sync::OnceLock;

fn pratt() -> &'static PrattParser<Rule> {
    static P: OnceLock<PrattParser<Rule>> = OnceLock::new();
    P.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::or_op, Assoc::Left))
            .op(Op::infix(Rule::and_op, Assoc::Left))
            .op(Op::infix(Rule::eq, Assoc::Left) | Op::infix(Rule::ne, Assoc::Left))
            .op(Op::infix(Rule::lt, Assoc::Left)
                | Op::infix(Rule::le, Assoc::Left)
                | Op::infix(Rule::gt, Assoc::Left)
                | Op::infix(Rule::ge, Assoc::Left))
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::rem, Assoc::Left))
            .op(Op::prefix(Rule::neg) | Op::prefix(Rule::not))
    })
}

/// Parse one file. Errors carry spans in `file`.
pub fn parse(file: FileId, text: &str) -> Result<File, Diagnostics> {
    check_limits(file, text)?;
    let pairs = GraftParser::parse(Rule::file, text).map_err(|e| syntax_error(file, text, e))?;
    let mut b = Builder { file, diags: Diagnostics::default(), depth: 0 };
    let out = b.file(pairs);
    if b.diags.has_errors() {
        Err(b.diags)
    } else {
        Ok(out)
    }
}

/// Parse a selector on its own (a command-line pattern). Errors carry spans in `file`.
pub fn parse_selector(file: FileId, text: &str) -> Result<Selector, Diagnostics> {
    check_limits(file, text)?;
    let mut pairs = GraftParser::parse(Rule::selector_only, text).map_err(|e| syntax_error(file, text, e))?;
    let sel = pairs.next().and_then(|p| p.into_inner().find(|x| x.as_rule() == Rule::selector));
    let sel = sel.expect("the grammar's selector_only holds one selector");
    let mut b = Builder { file, diags: Diagnostics::default(), depth: 0 };
    let out = b.selector(sel);
    if b.diags.has_errors() {
        Err(b.diags)
    } else {
        Ok(out)
    }
}

pub(super) struct Builder {
    file: FileId,
    pub(super) diags: Diagnostics,
    /// Operators and postfixes on the way from the statement to the expression being
    /// built: a bound on the depth of the expression tree.
    depth: usize,
}

impl Builder {
    pub(super) fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        // A rule ending in an optional or repeated part takes the whitespace and
        // comments after it: keep them out of the span so that carets stay on the code.
        Span::new(self.file, s.start(), s.start() + trimmed_len(p.as_str()))
    }

    pub(super) fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident { name: p.as_str().to_string(), span: self.span(&p) }
    }

    fn file(&mut self, mut pairs: Pairs<Rule>) -> File {
        let mut f = File::default();
        let file = pairs.next().expect("file rule");
        for item in file.into_inner() {
            match item.as_rule() {
                Rule::use_decl => f.uses.push(self.use_decl(item)),
                Rule::module_decl => f.modules.push(self.module_decl(item)),
                Rule::module_alias => f.aliases.push(self.alias(item)),
                Rule::model_decl => f.models.push(self.model_decl(item)),
                _ => {}
            }
        }
        f
    }

    fn use_decl(&mut self, p: Pair<Rule>) -> Use {
        let span = self.span(&p);
        let target = p.into_inner().find(|x| x.as_rule() != Rule::kw_use).expect("use target");
        let target = match target.as_rule() {
            Rule::string => UseTarget::File(string_value(target)),
            _ => UseTarget::Std(target.as_str().split('.').map(str::to_string).collect()),
        };
        Use { target, span }
    }

    fn module_decl(&mut self, p: Pair<Rule>) -> ModuleDecl {
        let span = self.span(&p);
        let mut name = None;
        let mut params = Vec::new();
        let mut body = Vec::new();
        for x in p.into_inner() {
            match x.as_rule() {
                Rule::ident => name = Some(self.ident(x)),
                Rule::params => params = x.into_inner().map(|q| self.param(q)).collect(),
                Rule::block => body = self.block(x),
                _ => {}
            }
        }
        ModuleDecl { name: name.expect("module name"), params, body, span }
    }

    fn alias(&mut self, p: Pair<Rule>) -> Alias {
        let span = self.span(&p);
        let mut idents = Vec::new();
        let mut args = Vec::new();
        for x in p.into_inner() {
            match x.as_rule() {
                Rule::ident => idents.push(self.ident(x)),
                Rule::args => args = self.args(x),
                _ => {}
            }
        }
        let target = idents.pop().expect("alias target");
        let name = idents.pop().expect("alias name");
        Alias { name, target, args, span }
    }

    fn param(&mut self, p: Pair<Rule>) -> ParamDecl {
        let mut it = p.into_inner();
        let name = self.ident(it.next().expect("param name"));
        let ty = match it.next().expect("param type").as_str() {
            "int" => ParamTy::Int,
            "float" => ParamTy::Float,
            "bool" => ParamTy::Bool,
            "str" => ParamTy::Str,
            _ => ParamTy::List,
        };
        let default = it.next().map(|e| self.expr(e));
        ParamDecl { name, ty, default }
    }

    fn block(&mut self, p: Pair<Rule>) -> Vec<Stmt> {
        p.into_inner().map(|s| self.stmt(s)).collect()
    }

    fn stmt(&mut self, p: Pair<Rule>) -> Stmt {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::in_stmt => {
                let mut name = None;
                let mut optional = false;
                for x in p.into_inner() {
                    match x.as_rule() {
                        Rule::ident => name = Some(self.ident(x)),
                        Rule::optional_kw => optional = true,
                        _ => {}
                    }
                }
                Stmt::In { name: name.expect("in name"), optional }
            }
            Rule::out_stmt => {
                let e = p.into_inner().find(|x| x.as_rule() == Rule::expr).expect("out expr");
                Stmt::Out { value: self.expr(e), span }
            }
            Rule::if_stmt => {
                let mut cond = None;
                let mut then = Vec::new();
                let mut otherwise = Vec::new();
                for x in p.into_inner() {
                    match x.as_rule() {
                        Rule::expr => cond = Some(self.expr(x)),
                        Rule::block if cond.is_some() && then.is_empty() => then = self.block(x),
                        Rule::block => otherwise = self.block(x),
                        Rule::if_stmt => otherwise = vec![self.stmt(x)],
                        _ => {}
                    }
                }
                Stmt::If { cond: cond.expect("if cond"), then, otherwise, span }
            }
            Rule::let_stmt => {
                let mut it = p.into_inner();
                let name = self.ident(it.next().expect("let name"));
                let v = it.next().expect("let value");
                let value = if v.as_rule() == Rule::repeat_expr {
                    let rspan = self.span(&v);
                    let mut count = None;
                    let mut module = None;
                    let mut arglists = Vec::new();
                    for x in v.into_inner() {
                        match x.as_rule() {
                            Rule::expr => count = Some(self.expr(x)),
                            Rule::ident => module = Some(self.ident(x)),
                            Rule::args => arglists.push(self.args(x)),
                            _ => {}
                        }
                    }
                    // `repeat(n) m()(x)`: an empty first list leaves only the inputs.
                    let (config, inputs) = match arglists.len() {
                        2 => {
                            let inputs = arglists.pop().expect("two lists");
                            (arglists.pop().expect("two lists"), inputs)
                        }
                        1 => (Vec::new(), arglists.pop().expect("one list")),
                        _ => (Vec::new(), Vec::new()),
                    };
                    LetValue::Repeat {
                        count: count.expect("repeat count"),
                        module: module.expect("repeat module"),
                        config,
                        inputs,
                        span: rspan,
                    }
                } else {
                    LetValue::Expr(self.expr(v))
                };
                Stmt::Let { name, value }
            }
            _ => unreachable!("statement rule {:?}", p.as_rule()),
        }
    }

    pub(super) fn args(&mut self, p: Pair<Rule>) -> Vec<Arg> {
        p.into_inner()
            .map(|a| {
                let mut it = a.into_inner();
                let first = it.next().expect("arg");
                if first.as_rule() == Rule::ident {
                    let value = self.expr(it.next().expect("arg value"));
                    Arg { name: Some(self.ident(first)), value }
                } else {
                    Arg { name: None, value: self.expr(first) }
                }
            })
            .collect()
    }

    /// Refuse expressions whose tree would be deeper than MAX_EXPR_DEPTH (long operator
    /// chains nest as deeply as brackets); `None` when the limit is hit.
    fn enter(&mut self, p: &Pair<Rule>, n: usize) -> Option<()> {
        self.depth += n;
        if self.depth > MAX_EXPR_DEPTH {
            self.depth -= n;
            let sp = self.span(p);
            if !self.diags.items.iter().any(|d| d.code == "E0002") {
                self.diags.push(
                    Diagnostic::error("E0002", format!("expression nested more than {MAX_EXPR_DEPTH} operations deep"))
                        .at(sp, "too deep here")
                        .hint("name intermediate values with `name = ...` instead of chaining"),
                );
            }
            return None;
        }
        Some(())
    }

    pub(super) fn expr(&mut self, p: Pair<Rule>) -> Expr {
        // The tree this expression becomes is as deep as its operators are many
        // (`a + b + c` is two levels): its operands are not levels.
        let n = 1 + p.clone().into_inner().filter(|x| x.as_rule() != Rule::postfix_expr).count();
        if self.enter(&p, n).is_none() {
            return Expr { kind: ExprKind::Int(0), span: self.span(&p) };
        }
        let e = self.expr_inner(p);
        self.depth -= n;
        e
    }

    fn expr_inner(&mut self, p: Pair<Rule>) -> Expr {
        let file = self.file;
        let this = std::cell::RefCell::new(self);
        let sp = move |p: &Pair<Rule>| {
            let s = p.as_span();
            Span::new(file, s.start(), s.end())
        };
        let result = pratt()
            .map_primary(|x| this.borrow_mut().postfix_expr(x))
            .map_prefix(move |op, rhs| {
                let span = sp(&op).to(rhs.span);
                let op = if op.as_rule() == Rule::neg { UnOp::Neg } else { UnOp::Not };
                Expr { kind: ExprKind::Unary(op, Box::new(rhs)), span }
            })
            .map_infix(|lhs, op, rhs| {
                let op = match op.as_rule() {
                    Rule::or_op => BinOp::Or,
                    Rule::and_op => BinOp::And,
                    Rule::eq => BinOp::Eq,
                    Rule::ne => BinOp::Ne,
                    Rule::lt => BinOp::Lt,
                    Rule::le => BinOp::Le,
                    Rule::gt => BinOp::Gt,
                    Rule::ge => BinOp::Ge,
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    _ => BinOp::Rem,
                };
                let span = lhs.span.to(rhs.span);
                Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span }
            })
            .parse(p.into_inner());
        result
    }

    fn postfix_expr(&mut self, p: Pair<Rule>) -> Expr {
        let n = p.clone().into_inner().count();
        if self.enter(&p, n).is_none() {
            return Expr { kind: ExprKind::Int(0), span: self.span(&p) };
        }
        let e = self.postfix_expr_inner(p);
        self.depth -= n;
        e
    }

    fn postfix_expr_inner(&mut self, p: Pair<Rule>) -> Expr {
        let mut it = p.into_inner();
        let mut e = self.primary(it.next().expect("primary"));
        for post in it {
            let span = e.span.to(self.span(&post));
            e = match post.as_rule() {
                Rule::call => {
                    let args = post.into_inner().next().map(|a| self.args(a)).unwrap_or_default();
                    Expr { kind: ExprKind::Call { callee: Box::new(e), args }, span }
                }
                Rule::field => {
                    let f = post.into_inner().next().expect("field name");
                    Expr { kind: ExprKind::Field(Box::new(e), self.ident(f)), span }
                }
                _ => {
                    let i = post.into_inner().next().expect("index expr");
                    Expr { kind: ExprKind::Index(Box::new(e), Box::new(self.expr(i))), span }
                }
            };
        }
        e
    }

    fn primary(&mut self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::int => match p.as_str().parse::<i64>() {
                Ok(v) => ExprKind::Int(v),
                Err(_) => {
                    self.diags.push(
                        Diagnostic::error("E0004", "integer literal too large")
                            .at(span, "does not fit in 64 bits")
                            .hint("sizes in graft are at most 9223372036854775807"),
                    );
                    ExprKind::Int(0)
                }
            },
            Rule::float => match p.as_str().parse::<f64>() {
                Ok(v) if v.is_finite() => ExprKind::Float(v),
                _ => {
                    self.diags.push(
                        Diagnostic::error("E0004", "number literal out of range")
                            .at(span, "not a finite 64-bit float")
                            .hint("write a smaller number"),
                    );
                    ExprKind::Float(0.0)
                }
            },
            Rule::boolean => ExprKind::Bool(p.as_str() == "true"),
            Rule::string => ExprKind::Str(string_value(p)),
            Rule::list => ExprKind::List(p.into_inner().map(|x| self.expr(x)).collect()),
            Rule::ident => ExprKind::Name(p.as_str().to_string()),
            Rule::expr => return self.expr(p),
            r => unreachable!("primary rule {r:?}"),
        };
        Expr { kind, span }
    }
}

/// Length of `s` without trailing whitespace and comments.
fn trimmed_len(s: &str) -> usize {
    let mut t = s.trim_end();
    loop {
        if t.ends_with("*/") {
            if let Some(i) = t[..t.len() - 2].rfind("/*") {
                t = t[..i].trim_end();
                continue;
            }
        }
        // A line comment: `//` on the last line, outside a string (strings hold no newline).
        let line_start = t.rfind('\n').map_or(0, |i| i + 1);
        let line = &t[line_start..];
        let mut in_string = false;
        let mut cut = None;
        for (i, c) in line.char_indices() {
            match c {
                '"' => in_string = !in_string,
                '/' if !in_string && line[i..].starts_with("//") => {
                    cut = Some(i);
                    break;
                }
                _ => {}
            }
        }
        match cut {
            Some(i) => t = t[..line_start + i].trim_end(),
            None => return t.len(),
        }
    }
}

pub(super) fn string_value(p: Pair<Rule>) -> String {
    p.into_inner().next().map(|s| s.as_str().to_string()).unwrap_or_default()
}
