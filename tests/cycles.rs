//! No cycles between modules: a file-level dependency graph of `src/` (from the
//! `crate::…` and `super::…` paths each file names outside comments and its test
//! module) must be acyclic. Shared pieces go into the module both sides need.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`passes::ctx`) → source text, for every file under `src/` except the
/// crate roots.
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            let mut next = prefix.to_vec();
            next.push(name);
            modules(&p, &next, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut path = prefix.to_vec();
            if stem != "mod" {
                path.push(stem.to_string());
            }
            if path.is_empty() || path == ["lib"] || path == ["main"] {
                continue;
            }
            out.insert(path.join("::"), std::fs::read_to_string(&p).expect("source"));
        }
    }
}

/// The code of a file: comments and the `#[cfg(test)] mod tests` block removed.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The module a `crate::…`/`super::…` path in `from` refers to (its longest prefix
/// that is a module), if it is another module.
fn target(from: &str, path: &str, mods: &BTreeMap<String, String>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = if segs[0] == "crate" { Vec::new() } else { from.split("::").collect() };
    if segs[0] == "crate" {
        segs.remove(0);
    } else {
        while segs.first() == Some(&"super") {
            base.pop();
            segs.remove(0);
        }
    }
    let full: Vec<&str> = base.into_iter().chain(segs).collect();
    (1..=full.len()).rev().map(|k| full[..k].join("::")).find(|m| mods.contains_key(m)).filter(|m| {
        // A module's own parents and children are not dependencies of interest.
        m != from && !from.starts_with(&format!("{m}::")) && !m.starts_with(&format!("{from}::"))
    })
}

#[test]
fn the_module_graph_is_acyclic() {
    let mut mods = BTreeMap::new();
    modules(Path::new("src"), &[], &mut mods);
    assert!(mods.len() > 40, "found only {} modules", mods.len());
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &mods {
        let code = code(text);
        let mut set = BTreeSet::new();
        for (i, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
            let rest = &code[i..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            if let Some(t) = target(m, rest[..end].trim_end_matches(':'), &mods) {
                set.insert(t);
            }
        }
        deps.insert(m.clone(), set);
    }
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for d in &deps[m] {
            if let Some(c) = visit(d, deps, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in deps.keys() {
        let cycle = visit(m, &deps, &mut done, &mut Vec::new());
        assert!(cycle.is_none(), "module cycle: {}", cycle.unwrap_or_default().join(" -> "));
    }
}
