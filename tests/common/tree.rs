//! The crate's source files as the compiler sees them: every `.rs` file under
//! `src/`, by path relative to it, and which of them are compiled outside tests (a
//! file no `mod` declaration reaches outside `#[cfg(test)]` code, such as a test
//! helper module, is not).

use super::rust_src::{lex, mod_decls, without_tests};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `src/`, relative path (`passes/ctx.rs`, `/`-separated) → text.
pub fn source_files() -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).expect("readable dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).expect("under src").to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&p).expect("utf-8 source"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(Path::new("src"), Path::new("src"), &mut out);
    assert!(out.len() > 100, "found only {} files under src/: run from the repository root", out.len());
    out
}

/// The module path of a file (`passes/mod.rs` → `passes`, `lib.rs` → the crate root
/// ``); `None` for the binary's `main.rs`.
pub fn module_of(rel: &str) -> Option<String> {
    let mut segs: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    if segs.last() == Some(&"mod") {
        segs.pop();
    }
    match segs.as_slice() {
        ["lib"] => Some(String::new()),
        ["main"] => None,
        _ => Some(segs.join("::")),
    }
}

/// The files of the library compiled outside tests, with their modules: the root,
/// and every file whose parent declares it (and whose parent is compiled).
pub fn library_modules(files: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut modules = BTreeMap::new(); // module → file
    let mut decls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let Some(m) = module_of(rel) else { continue };
        let code = without_tests(&lex(text).unwrap_or_else(|e| panic!("{rel}: {e}")));
        decls.insert(m.clone(), mod_decls(&code).into_iter().map(|(n, _, _)| n).collect());
        modules.insert(m, rel.clone());
    }
    modules
        .into_iter()
        .filter(|(m, _)| {
            let segs: Vec<&str> = if m.is_empty() { Vec::new() } else { m.split("::").collect() };
            (1..=segs.len()).all(|k| {
                let parent = segs[..k - 1].join("::");
                decls.get(&parent).is_some_and(|d| d.contains(segs[k - 1]))
            })
        })
        .collect()
}
