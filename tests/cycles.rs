//! No import cycles, at two levels: between the modules of `src/` (each file one
//! module) and between the crate's top-level modules (`backend`, `pipeline`, …,
//! every file of a module counting as that module).
//!
//! A dependency is every path a file names outside comments, strings and test code:
//! `use` trees expanded (`use crate::a::{b::c, d}` names `a::b::c` and `a::d`), paths
//! in code (`crate::…`, `super::…`, `self::…`, `$crate::…`, a child module's name, or
//! a name a `use` bound), each resolved to the deepest module file that exists and,
//! through named `pub use` re-exports, to the module that defines the item (a named
//! re-export is not itself a dependency: it forwards a name). A parent and its
//! children are modules like any other: a `mod.rs` whose code calls into a child, and
//! a child that imports from the `mod.rs`, form a cycle. The checker is tested on
//! planted cycles.

mod common;

use common::rust_src::{code_paths, item_end, lex, use_paths, without_tests, Kind, Tok, UsePath};
use common::tree::{library_modules, source_files};
use std::collections::{BTreeMap, BTreeSet};

/// One module: its code tokens (test code removed) and `use` paths.
struct Module {
    file: String,
    code: Vec<Tok>,
    uses: Vec<UsePath>,
}

/// Why one module depends on another: the first place it says so.
#[derive(Clone, Debug)]
struct Why {
    file: String,
    line: usize,
    path: String,
}

struct Graph {
    modules: BTreeMap<String, Module>,
    /// module → module it depends on → why.
    edges: BTreeMap<String, BTreeMap<String, Why>>,
}

/// The identifiers of `code` outside `use` declarations.
fn idents_outside_use(code: &[Tok]) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < code.len() {
        if code[i].is("use") {
            i = item_end(code, i);
            continue;
        }
        if code[i].kind == Kind::Ident {
            out.insert(code[i].text.as_str());
        }
        i += 1;
    }
    out
}

fn join(base: &[&str], rest: &[String]) -> Vec<String> {
    base.iter().map(|s| s.to_string()).chain(rest.iter().cloned()).collect()
}

impl Graph {
    /// The module graph of a crate given as relative path → source text. Files no
    /// `mod` declaration reaches outside test code (test-only files) are left out.
    fn new(files: &BTreeMap<String, String>) -> Graph {
        let modules = library_modules(files)
            .into_iter()
            .map(|(m, rel)| {
                let toks = lex(&files[&rel]).unwrap_or_else(|e| panic!("{rel}: {e}"));
                let code = without_tests(&toks);
                let uses = use_paths(&code);
                (m, Module { file: rel, code, uses })
            })
            .collect();
        let mut g = Graph { modules, edges: BTreeMap::new() };
        g.link();
        g
    }

    fn link(&mut self) {
        let mut edges = BTreeMap::new();
        for (m, module) in &self.modules {
            let mut deps: BTreeMap<String, Why> = BTreeMap::new();
            let mut add = |segs: &[String], line: usize| {
                if let Some(t) = self.resolve(m, segs).and_then(|abs| self.leaf(&abs, 0)) {
                    if t != *m {
                        let why = Why { file: module.file.clone(), line, path: segs.join("::") };
                        deps.entry(t).or_insert(why);
                    }
                }
            };
            // A named re-export (`pub use child::Item;`) only forwards a name: whoever
            // uses the name depends on the module that defines it (see `leaf`), not on
            // the one that forwards it, unless its own code uses the name too. A glob
            // re-export is not followed, so it counts.
            let used = idents_outside_use(&module.code);
            for u in module.uses.iter().filter(|u| !u.public || u.alias == "*" || used.contains(u.alias.as_str())) {
                let path: Vec<String> = u.path.iter().filter(|s| *s != "*").cloned().collect();
                add(&path, u.line);
            }
            for (segs, line) in code_paths(&module.code) {
                add(&segs, line);
            }
            edges.insert(m.clone(), deps);
        }
        self.edges = edges;
    }

    /// The absolute path (segments from the crate root) that `segs`, written in
    /// module `m`, names; `None` for other crates and local names.
    fn resolve(&self, m: &str, segs: &[String]) -> Option<Vec<String>> {
        let here: Vec<&str> = if m.is_empty() { Vec::new() } else { m.split("::").collect() };
        let first = segs.first()?.as_str();
        match first {
            "crate" | "$crate" => Some(segs[1..].to_vec()),
            "self" => Some(join(&here, &segs[1..])),
            "super" => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let base = here.get(..here.len().checked_sub(ups)?)?;
                Some(join(base, &segs[ups..]))
            }
            _ => {
                let child = join(&here, &segs[..1]).join("::");
                if self.modules.contains_key(&child) {
                    return Some(join(&here, segs));
                }
                // A name a `use` of this module bound.
                let u = self
                    .modules
                    .get(m)?
                    .uses
                    .iter()
                    .find(|u| u.alias == first && u.path.last().is_some_and(|s| s != "*"))?;
                if u.path.first() == segs.first() {
                    return None; // `use std;`-like: not ours
                }
                let base = self.resolve(m, &u.path)?;
                Some(base.into_iter().chain(segs[1..].iter().cloned()).collect())
            }
        }
    }

    /// The deepest module of `abs`, following `pub use` re-exports of the item after it.
    fn leaf(&self, abs: &[String], depth: usize) -> Option<String> {
        let k = (0..=abs.len()).rev().find(|&k| self.modules.contains_key(&abs[..k].join("::")))?;
        let m = abs[..k].join("::");
        if let (Some(item), true) = (abs.get(k), depth < 8) {
            let export = self.modules[&m].uses.iter().find(|u| u.public && u.alias == *item);
            if let Some(target) = export.and_then(|u| self.resolve(&m, &u.path)) {
                let rest: Vec<String> = target.into_iter().chain(abs[k + 1..].iter().cloned()).collect();
                return self.leaf(&rest, depth + 1);
            }
        }
        (!m.is_empty()).then_some(m)
    }

    /// The same graph with every module replaced by its top-level module.
    fn top_level(&self) -> BTreeMap<String, BTreeMap<String, Why>> {
        let top = |m: &str| m.split("::").next().unwrap_or_default().to_string();
        let mut out: BTreeMap<String, BTreeMap<String, Why>> = BTreeMap::new();
        for (m, deps) in &self.edges {
            let entry = out.entry(top(m)).or_default();
            for (t, why) in deps {
                if top(t) != top(m) {
                    entry.entry(top(t)).or_insert_with(|| why.clone());
                }
            }
        }
        out
    }
}

/// Every cycle of `edges` (one per strongly connected component of more than one
/// node), each as `a -> b -> … -> a` with the place that makes each arrow.
fn cycles(edges: &BTreeMap<String, BTreeMap<String, Why>>) -> Vec<(String, String)> {
    // Tarjan's algorithm, recursive (graphs of a few hundred nodes).
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, Why>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        sccs: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.edges.get(v).into_iter().flat_map(|d| d.keys()) {
            if !t.index.contains_key(w.as_str()) {
                visit(t, w);
                let lw = t.low[w.as_str()];
                t.low.insert(v, t.low[v].min(lw));
            } else if t.on.contains(w.as_str()) {
                let iw = t.index[w.as_str()];
                t.low.insert(v, t.low[v].min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            t.sccs.push(scc);
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        sccs: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    let mut out = Vec::new();
    for scc in t.sccs.into_iter().filter(|s| s.len() > 1) {
        let members: BTreeSet<&str> = scc.iter().copied().collect();
        // A shortest way back to the start inside the component (breadth-first).
        let start = *members.iter().next().unwrap_or(&"");
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut back = None;
        while let Some(v) = queue.pop_front() {
            for w in edges[v].keys().map(String::as_str).filter(|w| members.contains(w)) {
                if w == start {
                    back = Some(v);
                    break;
                }
                if !prev.contains_key(w) {
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
            if back.is_some() {
                break;
            }
        }
        let mut path = vec![start];
        let mut v = back.unwrap_or(start);
        while v != start {
            path.insert(1, v);
            v = prev[v];
        }
        path.push(start);
        let arrows: Vec<String> = path
            .windows(2)
            .map(|w| {
                let why = &edges[w[0]][w[1]];
                format!("  {} -> {}   ({}:{}: `{}`)", w[0], w[1], why.file, why.line, why.path)
            })
            .collect();
        let names = members.into_iter().collect::<Vec<_>>().join(", ");
        out.push((names.clone(), format!("cycle among {{{names}}}:\n{}", arrows.join("\n"))));
    }
    out
}

fn real() -> Graph {
    let g = Graph::new(&source_files());
    assert!(g.modules.len() > 100, "found only {} modules", g.modules.len());
    g
}

/// Cycles in the tree today (their modules, sorted), each to be broken; an entry
/// that matches no cycle fails the test, so the list only shrinks.
///
/// - `lower` ↔ `lower::eval`: the `Builder` (in `lower/mod.rs`) holds the evaluator's
///   `Env`, and the evaluator works on the `Builder`.
/// - `backend::native::ew`: `ew/mod.rs` defines the group IR the strategies
///   (`blocks`, `jit`, `unfused`) read and also dispatches to them.
const MODULE_CYCLES_ALLOWED: &[&str] = &[
    "lower, lower::eval",
    "backend::native::ew, backend::native::ew::blocks, backend::native::ew::jit, backend::native::ew::unfused",
];

/// Top-level cycles today: none.
const TOP_LEVEL_CYCLES_ALLOWED: &[&str] = &[];

/// Fails on every cycle not allowed and on every allowed cycle that is gone.
#[track_caller]
fn assert_acyclic(found: Vec<(String, String)>, allowed: &[&str], hint: &str) {
    let mut problems: Vec<String> =
        found.iter().filter(|(members, _)| !allowed.contains(&members.as_str())).map(|(_, c)| c.clone()).collect();
    for a in allowed {
        if !found.iter().any(|(m, _)| m == a) {
            problems.push(format!("the allowed cycle {{{a}}} is gone (or changed): update the list"));
        }
    }
    assert!(problems.is_empty(), "{}\n{hint}", problems.join("\n\n"));
}

#[test]
fn no_cycle_between_modules() {
    assert_acyclic(cycles(&real().edges), MODULE_CYCLES_ALLOWED, "move what both sides need into a module both import");
}

#[test]
fn no_cycle_between_top_level_modules() {
    assert_acyclic(cycles(&real().top_level()), TOP_LEVEL_CYCLES_ALLOWED, "lower modules must not import higher ones");
}

// The checker itself, on small synthetic crates.

fn crate_of(files: &[(&str, &str)]) -> Graph {
    Graph::new(&files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect())
}

fn deps(g: &Graph, m: &str) -> Vec<String> {
    g.edges[m].keys().cloned().collect()
}

const LIB: &str = "//! root\npub mod passes;\npub mod pipeline;\npub mod ir;\n";
const PASSES: &str = "//! passes\npub mod ctx;\npub mod fold_reparam;\npub use ctx::PassCtx;\n";
const IR: &str = "//! ir\npub mod verify;\npub struct Graph;\n";

#[test]
fn a_planted_cycle_between_a_pass_and_the_pipeline_is_reported() {
    let g = crate_of(&[
        ("lib.rs", LIB),
        ("passes/mod.rs", PASSES),
        ("passes/ctx.rs", "//! ctx\npub struct PassCtx;\n"),
        // The pass reaches up into the pipeline through a group …
        ("passes/fold_reparam.rs", "//! fold\nuse crate::{ir::Graph, pipeline::{Mode, PASSES}};\npub fn f() {}\n"),
        // … and the pipeline lists the pass.
        ("pipeline.rs", "//! pipeline\nuse crate::passes::{fold_reparam::f, PassCtx};\npub enum Mode {}\n"),
        ("ir/mod.rs", IR),
        ("ir/verify.rs", "//! verify\n"),
    ]);
    assert_eq!(deps(&g, "passes::fold_reparam"), ["ir", "pipeline"]);
    assert_eq!(deps(&g, "pipeline"), ["passes::ctx", "passes::fold_reparam"], "through the re-export to ctx");
    let found = cycles(&g.edges);
    assert_eq!(found.len(), 1, "{found:?}");
    let (members, text) = &found[0];
    assert_eq!(members, "passes::fold_reparam, pipeline");
    assert!(text.contains("passes::fold_reparam -> pipeline") && text.contains("pipeline -> passes::fold_reparam"));
    assert!(text.contains("passes/fold_reparam.rs:2"), "{text}");
    // At the top level the same cycle is passes <-> pipeline.
    let top = cycles(&g.top_level());
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!(top[0].0, "passes, pipeline");
}

#[test]
fn a_top_level_cycle_through_different_files_is_reported() {
    // No two files import each other, but `backend` and `evaluate` do.
    let g = crate_of(&[
        ("lib.rs", "//! root\npub mod backend;\npub mod evaluate;\n"),
        ("backend/mod.rs", "//! b\npub mod train;\npub mod plan;\n"),
        ("backend/train.rs", "//! t\nfn f() { crate::evaluate::evaluate(); }\n"),
        ("backend/plan.rs", "//! p\npub struct Plan;\n"),
        ("evaluate.rs", "//! e\nuse crate::backend::plan::Plan;\npub fn evaluate() {}\n"),
    ]);
    assert!(cycles(&g.edges).is_empty());
    let top = cycles(&g.top_level());
    assert_eq!(top.len(), 1, "{top:?}");
    assert!(top[0].1.contains("backend -> evaluate") && top[0].1.contains("backend/train.rs:2"), "{}", top[0].1);
}

#[test]
fn parents_and_children_are_edges_too() {
    let g = crate_of(&[
        ("lib.rs", "//! root\npub mod a;\n"),
        ("a/mod.rs", "//! a\nmod b;\npub use b::helper;\npub struct Shared;\npub fn f() { b::helper() }\n"),
        ("a/b.rs", "//! b\nuse super::Shared;\npub fn helper() {}\n"),
    ]);
    assert_eq!(deps(&g, "a"), ["a::b"]);
    assert_eq!(deps(&g, "a::b"), ["a"]);
    assert_eq!(cycles(&g.edges).len(), 1);
    // A re-export the module's own code uses is a dependency too.
    let g = crate_of(&[
        ("lib.rs", "//! root\npub mod a;\n"),
        ("a/mod.rs", "//! a\nmod b;\npub use b::Helper;\npub struct Shared;\npub fn f(h: Helper) {}\n"),
        ("a/b.rs", "//! b\nuse super::Shared;\npub struct Helper;\n"),
    ]);
    assert_eq!(deps(&g, "a"), ["a::b"]);
    assert_eq!(cycles(&g.edges).len(), 1);
    // A re-export alone forwards the name: no edge, no cycle.
    let g = crate_of(&[
        ("lib.rs", "//! root\npub mod a;\n"),
        ("a/mod.rs", "//! a\nmod b;\npub use b::helper;\npub struct Shared;\n"),
        ("a/b.rs", "//! b\nuse super::Shared;\npub fn helper() {}\n"),
    ]);
    assert_eq!(deps(&g, "a"), Vec::<String>::new());
    assert!(cycles(&g.edges).is_empty());
}

#[test]
fn strings_comments_tests_and_other_crates_are_not_dependencies() {
    let g = crate_of(&[
        ("lib.rs", "//! root\npub mod a;\npub mod b;\n#[cfg(test)]\nmod testkit;\n"),
        (
            "a.rs",
            r##"//! a: uses `crate::b` in a comment only
// use crate::b;
/* crate::b::x /* nested */ crate::b */
const S: &str = "crate::b::x";
const R: &str = r#"use crate::b;"#;
use std::collections::BTreeMap;
use self::inner::Thing;
mod inner { pub struct Thing; }
#[cfg(test)]
mod tests {
    use crate::b::x;
}
"##,
        ),
        ("b.rs", "//! b\nuse crate::a;\npub fn x() {}\n"),
        ("testkit.rs", "//! only in tests\nuse crate::a;\nuse crate::b;\n"),
    ]);
    assert_eq!(deps(&g, "a"), Vec::<String>::new());
    assert_eq!(deps(&g, "b"), ["a"]);
    assert!(!g.modules.contains_key("testkit"), "a test-only file is not part of the crate");
}

#[test]
fn names_bound_by_use_and_macro_paths_resolve() {
    let g = crate_of(&[
        ("lib.rs", "//! root\npub mod x;\npub mod y;\npub mod z;\n"),
        ("x.rs", "//! x\nuse crate::y;\nfn f() { y::g(); }\n"),
        ("y.rs", "//! y\nmacro_rules! m { () => { $crate::z::h() }; }\npub fn g() {}\n"),
        ("z.rs", "//! z\nuse super::y as why;\npub fn h() { why::g() }\n"),
    ]);
    assert_eq!(deps(&g, "x"), ["y"]);
    assert_eq!(deps(&g, "y"), ["z"]);
    assert_eq!(deps(&g, "z"), ["y"]);
    assert_eq!(cycles(&g.edges).len(), 1);
}
