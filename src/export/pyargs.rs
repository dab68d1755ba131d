//! Constructor parameters: each emitted class's `__init__` takes its spec module's
//! parameters (keyword-only, the spec's literal defaults as Python defaults), a parent
//! builds each child with the instance's values by keyword (`Block(dim=384, heads=6)`),
//! and sizes in a class are written as the spec writes them (`nn.Linear(dim, dim * 3)`).
//!
//! A value is written as a spec expression (an argument of the call in the module's
//! body, read from the program's syntax tree) only when the expression uses the
//! module's parameters, numbers, `+ - * /`, `int`, `float`, `min`, `max` and lists, and
//! evaluated with Python's semantics on this instance's arguments gives exactly the
//! value in the compiled graph (folding may have changed it). Otherwise the concrete
//! value is written, so the text always builds the compiled model; instances whose
//! concrete values differ then get classes of their own.

use super::pyforward::is_identifier;
use super::pyops::{float, quote};
use crate::lower::{ModuleEntry, Value};
use crate::pipeline::Compiled;
use crate::syntax::ast::{Arg, BinOp, Expr, ExprKind, LetValue, ModuleDecl, ParamTy, Stmt, UnOp};
use std::collections::HashMap;

/// Names a parameter may not take in Python: builtins the emitted `__init__` calls.
const SHADOWED: &[&str] = &["super", "range", "int", "float", "min", "max", "getattr", "tuple", "dict", "list"];

/// One `__init__` parameter of a class.
pub(crate) struct ClassParam {
    /// The name in the spec.
    pub spec: String,
    /// The name in Python (the spec's, with `_` appended where Python reserves it).
    pub py: String,
    pub ty: &'static str,
    /// The spec's default when it is a literal.
    pub default: Option<Value>,
}

/// The declaration of module `module`.
pub(crate) fn decl<'c>(c: &'c Compiled, module: &str) -> Option<&'c ModuleDecl> {
    match c.modules.get(module)?.as_ref() {
        ModuleEntry::Decl(d) => Some(d),
        ModuleEntry::Alias(_) => None,
    }
}

/// The `__init__` parameters of module `module`'s class, in declaration order.
pub(crate) fn class_params(c: &Compiled, module: &str) -> Vec<ClassParam> {
    let Some(d) = decl(c, module) else { return Vec::new() };
    d.params
        .iter()
        .map(|p| {
            let name = &p.name.name;
            let py = if is_identifier(name) && !SHADOWED.contains(&name.as_str()) {
                name.clone()
            } else {
                format!("{name}_")
            };
            let ty = match p.ty {
                ParamTy::Int => "int",
                ParamTy::Float => "float",
                ParamTy::Bool => "bool",
                ParamTy::Str => "str",
                ParamTy::List => "list",
            };
            let default = p.default.as_ref().and_then(|e| literal(e, p.ty));
            ClassParam { spec: name.clone(), py, ty, default }
        })
        .collect()
}

/// A literal default as the value it binds (an int given for a float is a float).
fn literal(e: &Expr, ty: ParamTy) -> Option<Value> {
    let v = match &e.kind {
        ExprKind::Int(i) => Value::Int(*i),
        ExprKind::Float(f) => Value::Float(*f),
        ExprKind::Bool(b) => Value::Bool(*b),
        ExprKind::Str(s) => Value::Str(s.clone()),
        ExprKind::Unary(UnOp::Neg, x) => match &x.kind {
            ExprKind::Int(i) => Value::Int(i.checked_neg()?),
            ExprKind::Float(f) => Value::Float(-f),
            _ => return None,
        },
        _ => return None,
    };
    match (ty, v) {
        (ParamTy::Float, Value::Int(i)) => Some(Value::Float(i as f64)),
        (ParamTy::Int, v @ Value::Int(_))
        | (ParamTy::Float, v @ Value::Float(_))
        | (ParamTy::Bool, v @ Value::Bool(_))
        | (ParamTy::Str, v @ Value::Str(_)) => Some(v),
        _ => None,
    }
}

/// `def __init__(self, *, dim: int, …) -> None:`, one parameter a line when long.
pub(crate) fn init_signature(params: &[ClassParam]) -> Vec<String> {
    if params.is_empty() {
        return vec!["    def __init__(self) -> None:".to_string()];
    }
    let mut items = vec!["self".to_string(), "*".to_string()];
    for p in params {
        match p.default.as_ref().and_then(text_of) {
            Some(d) => items.push(format!("{}: {} = {d}", p.py, p.ty)),
            None => items.push(format!("{}: {}", p.py, p.ty)),
        }
    }
    let one = format!("    def __init__({}) -> None:", items.join(", "));
    if one.chars().count() <= super::pyops::WIDTH {
        return vec![one];
    }
    let mut out = vec!["    def __init__(".to_string()];
    out.extend(items.iter().map(|i| format!("        {i},")));
    out.push("    ) -> None:".to_string());
    out
}

/// A value as a Python literal.
pub(crate) fn text_of(v: &Value) -> Option<String> {
    Some(match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float(*f),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::Str(s) => quote(s),
        Value::List(items) => format!("[{}]", items.iter().map(text_of).collect::<Option<Vec<_>>>()?.join(", ")),
        Value::Tensor(_) | Value::Absent => return None,
    })
}

/// The spec parameters visible in one class: name → (Python text, this instance's value).
#[derive(Default)]
pub(crate) struct Env {
    vars: HashMap<String, (String, Value)>,
}

impl Env {
    /// The parameters of the instance at `path` as `prefix` + Python name (`dim` in
    /// `__init__`, `self.dim` in `forward`), leaving out names `skip` refuses.
    pub fn new(c: &Compiled, path: &str, params: &[ClassParam], prefix: &str, skip: &dyn Fn(&str) -> bool) -> Env {
        let mut vars = HashMap::new();
        let Some(values) = c.instance_args.get(path) else { return Env { vars } };
        for p in params.iter().filter(|p| !skip(&p.py)) {
            if let Some((_, v)) = values.iter().find(|(n, _)| n == &p.spec) {
                vars.insert(p.spec.clone(), (format!("{prefix}{}", p.py), v.clone()));
            }
        }
        Env { vars }
    }
}

/// `e` as Python when it evaluates to exactly `want`; with the Python names it reads.
pub(crate) fn recover(e: &Expr, env: &Env, want: &Value) -> Option<(String, Vec<String>)> {
    let mut used = Vec::new();
    let (text, got, _) = tr(e, env, &mut used)?;
    same(&got, want).then_some((text, used))
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        _ => false,
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

const SUM: u8 = 1;
const PRODUCT: u8 = 2;
const UNARY: u8 = 3;
const ATOM: u8 = 4;

/// Python text, its value under Python's rules, and its precedence.
fn tr(e: &Expr, env: &Env, used: &mut Vec<String>) -> Option<(String, Value, u8)> {
    Some(match &e.kind {
        ExprKind::Int(i) => (i.to_string(), Value::Int(*i), ATOM),
        ExprKind::Float(f) => (float(*f), Value::Float(*f), ATOM),
        ExprKind::Bool(b) => (text_of(&Value::Bool(*b))?, Value::Bool(*b), ATOM),
        ExprKind::Name(n) => {
            let (text, v) = env.vars.get(n)?;
            used.push(text.rsplit('.').next().unwrap_or(text).to_string());
            (text.clone(), v.clone(), ATOM)
        }
        ExprKind::List(items) => {
            let mut texts = Vec::new();
            let mut vals = Vec::new();
            for i in items {
                let (t, v, _) = tr(i, env, used)?;
                texts.push(t);
                vals.push(v);
            }
            (format!("[{}]", texts.join(", ")), Value::List(vals), ATOM)
        }
        ExprKind::Unary(UnOp::Neg, x) => {
            let (t, v, p) = tr(x, env, used)?;
            let v = match v {
                Value::Int(i) => Value::Int(i.checked_neg()?),
                Value::Float(f) => Value::Float(-f),
                _ => return None,
            };
            (if p < UNARY { format!("-({t})") } else { format!("-{t}") }, v, UNARY)
        }
        ExprKind::Binary(op, a, b) => {
            let (ta, va, pa) = tr(a, env, used)?;
            let (tb, vb, pb) = tr(b, env, used)?;
            let (mut sym, prec) = match op {
                BinOp::Add => ("+", SUM),
                BinOp::Sub => ("-", SUM),
                BinOp::Mul => ("*", PRODUCT),
                BinOp::Div => ("/", PRODUCT),
                _ => return None,
            };
            let v = match (&va, &vb) {
                (Value::Int(x), Value::Int(y)) => Value::Int(match op {
                    BinOp::Add => x.checked_add(*y)?,
                    BinOp::Sub => x.checked_sub(*y)?,
                    BinOp::Mul => x.checked_mul(*y)?,
                    _ => {
                        sym = "//";
                        floor_div(*x, *y)?
                    }
                }),
                _ => {
                    let (x, y) = (num(&va)?, num(&vb)?);
                    Value::Float(match op {
                        BinOp::Add => x + y,
                        BinOp::Sub => x - y,
                        BinOp::Mul => x * y,
                        _ if y == 0.0 => return None,
                        _ => x / y,
                    })
                }
            };
            // Parentheses keep the spec's grouping exactly (float arithmetic is not
            // associative).
            let l = if pa < prec { format!("({ta})") } else { ta };
            let r = if pb <= prec { format!("({tb})") } else { tb };
            (format!("{l} {sym} {r}"), v, prec)
        }
        ExprKind::Call { callee, args } => {
            let ExprKind::Name(f) = &callee.kind else { return None };
            if args.is_empty() || args.iter().any(|a| a.name.is_some()) {
                return None;
            }
            let mut texts = Vec::new();
            let mut vals = Vec::new();
            for a in args {
                let (t, v, _) = tr(&a.value, env, used)?;
                texts.push(t);
                vals.push(v);
            }
            let v = match (f.as_str(), vals.as_slice()) {
                ("int", [Value::Int(i)]) => Value::Int(*i),
                ("int", [Value::Float(x)]) if x.is_finite() && x.abs() < 9.0e18 => Value::Int(x.trunc() as i64),
                ("float", [x]) => Value::Float(num(x)?),
                ("min" | "max", [_, _, ..]) => {
                    // Python keeps the first of equal candidates.
                    let mut best = &vals[0];
                    for v in &vals[1..] {
                        let (x, y) = (num(v)?, num(best)?);
                        if (f == "min" && x < y) || (f == "max" && x > y) {
                            best = v;
                        }
                    }
                    num(best)?;
                    best.clone()
                }
                _ => return None,
            };
            (format!("{f}({})", texts.join(", ")), v, ATOM)
        }
        _ => return None,
    })
}

/// Python's `//` on ints.
fn floor_div(x: i64, y: i64) -> Option<i64> {
    let q = x.checked_div(y)?;
    Some(if x % y != 0 && ((x < 0) != (y < 0)) { q - 1 } else { q })
}

/// The first `name = …` statement of a body (in `if` branches too).
fn let_of<'d>(body: &'d [Stmt], name: &str) -> Option<&'d LetValue> {
    body.iter().find_map(|s| match s {
        Stmt::Let { name: n, value } if n.name == name => Some(value),
        Stmt::If { then, otherwise, .. } => let_of(then, name).or_else(|| let_of(otherwise, name)),
        _ => None,
    })
}

/// Arguments by the parameter names they bind (`names` in positional order).
fn bind<'d>(args: &'d [Arg], names: &[&str]) -> HashMap<String, &'d Expr> {
    let mut out = HashMap::new();
    let mut pos = 0;
    for a in args {
        match &a.name {
            Some(n) => {
                out.insert(n.name.clone(), &a.value);
            }
            None => {
                if let Some(n) = names.get(pos) {
                    out.insert(n.to_string(), &a.value);
                }
                pos += 1;
            }
        }
    }
    out
}

/// The configuration of what module `d`'s body builds at `rel` (`qkv`, or `blocks.3`
/// for a `repeat`) with `callee`, by the callee's parameter names.
pub(crate) fn call_args<'d>(d: &'d ModuleDecl, rel: &str, callee: &str, names: &[&str]) -> HashMap<String, &'d Expr> {
    let segs: Vec<&str> = rel.split('.').collect();
    let found = match (segs.as_slice(), segs.first().and_then(|s| let_of(&d.body, s))) {
        ([_], Some(LetValue::Expr(e))) => match &e.kind {
            ExprKind::Call { callee: inner, args } => match &inner.kind {
                ExprKind::Call { callee: m, args: config } if is_name(m, callee) => Some(config),
                ExprKind::Name(m) if m == "param" && callee == "param" => Some(args),
                _ => None,
            },
            _ => None,
        },
        ([_, i], Some(LetValue::Repeat { module, config, .. }))
            if module.name == callee && i.chars().all(|c| c.is_ascii_digit()) =>
        {
            Some(config)
        }
        _ => None,
    };
    found.map(|args| bind(args, names)).unwrap_or_default()
}

fn is_name(e: &Expr, name: &str) -> bool {
    matches!(&e.kind, ExprKind::Name(n) if n == name)
}

/// The count of the `repeat` that builds `seg` in module `d`'s body.
pub(crate) fn repeat_count<'d>(d: &'d ModuleDecl, seg: &str) -> Option<&'d Expr> {
    match let_of(&d.body, seg)? {
        LetValue::Repeat { count, .. } => Some(count),
        LetValue::Expr(_) => None,
    }
}

/// The arguments of the one call of function `f` in the statement that names `seg`
/// (`""`: the `out` statements).
pub(crate) fn value_call<'d>(
    d: &'d ModuleDecl,
    seg: &str,
    f: &str,
    names: &[&str],
) -> Option<HashMap<String, &'d Expr>> {
    let mut calls = Vec::new();
    if seg.is_empty() {
        outs_of(&d.body).into_iter().for_each(|e| calls_of(e, f, &mut calls));
    } else {
        let LetValue::Expr(e) = let_of(&d.body, seg)? else { return None };
        calls_of(e, f, &mut calls);
    }
    match calls.as_slice() {
        [args] => Some(bind(args, names)),
        _ => None,
    }
}

/// The values of a body's `out` statements (in `if` branches too).
fn outs_of(body: &[Stmt]) -> Vec<&Expr> {
    body.iter()
        .flat_map(|s| match s {
            Stmt::Out { value, .. } => vec![value],
            Stmt::If { then, otherwise, .. } => [outs_of(then), outs_of(otherwise)].concat(),
            _ => vec![],
        })
        .collect()
}

fn calls_of<'d>(e: &'d Expr, f: &str, out: &mut Vec<&'d [Arg]>) {
    match &e.kind {
        ExprKind::Call { callee, args } => {
            if is_name(callee, f) {
                out.push(args);
            }
            calls_of(callee, f, out);
            args.iter().for_each(|a| calls_of(&a.value, f, out));
        }
        ExprKind::List(items) => items.iter().for_each(|i| calls_of(i, f, out)),
        ExprKind::Unary(_, x) | ExprKind::Field(x, _) => calls_of(x, f, out),
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
            calls_of(a, f, out);
            calls_of(b, f, out);
        }
        _ => {}
    }
}
