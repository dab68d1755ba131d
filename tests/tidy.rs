//! Tidy checks over the source tree (rust-analyzer's `tidy.rs`): every module says
//! what it is, files and functions stay readable, only the command line prints or
//! reads the environment, the native backend's internals stay private, passes keep
//! their one shape, backends stay off the front end. The source scanner these rules
//! use is tested at the end.

mod common;

use common::rust_src::{code, code_paths, functions, lex, macro_calls, mod_decls, use_paths, without_tests, Kind, Tok};
use common::tree::{library_modules, source_files};
use std::collections::BTreeMap;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_has_a_doc_comment_and_a_sane_length() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    assert!(files.len() > 20);
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("utf-8 source");
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{}: no `//!` module doc at the top", f.display()));
        }
        let lines = text.lines().count();
        if lines > 600 {
            problems.push(format!("{}: {lines} lines; split it by concern", f.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_pass_file_is_named_after_its_function() {
    for e in std::fs::read_dir("src/passes").expect("passes dir").flatten() {
        let name = e.file_name().to_string_lossy().trim_end_matches(".rs").to_string();
        if name == "mod" || name == "testkit" || name == "ctx" {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).expect("source");
        let signature =
            |cx: &str| format!("pub fn {name}(g: &mut Graph, {cx}: &mut PassCtx) -> Result<bool, VerifyError>");
        assert!(
            text.contains(&signature("cx")) || text.contains(&signature("_cx")),
            "src/passes/{name}.rs must define the pass `{}`",
            signature("cx")
        );
        assert!(
            graft::pipeline::PASSES.iter().any(|p| p.name == name),
            "src/passes/{name}.rs is not in the pipeline's pass list"
        );
        assert!(
            text.trim_start().starts_with(&format!("//! {name}:")),
            "src/passes/{name}.rs doc must start with `{name}:`"
        );
    }
}

/// Backends see verified IR and plans only: nothing under `src/backend/` reaches into
/// the front end (`lower`, `syntax`) or the passes.
#[test]
fn backends_do_not_import_the_front_end_or_the_passes() {
    let mut files = Vec::new();
    rust_files(Path::new("src/backend"), &mut files);
    assert!(files.len() > 5);
    let forbidden = ["lower", "syntax", "passes"];
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("utf-8 source");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for m in forbidden {
                // `crate::lower`, `graft::syntax::…`, `use crate::{passes, …}`.
                let paths = [format!("crate::{m}"), format!("graft::{m}"), format!("super::super::{m}")];
                let braced =
                    code.contains("crate::{") && code.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == m);
                if paths.iter().any(|p| code.contains(p.as_str())) || braced {
                    problems.push(format!("{}:{}: imports `{m}`: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------- invariants over the code
//
// Each rule below scans the library's code (`src/`, comments, strings and test code
// excluded, with `tests/common/rust_src.rs`). Where code that breaks a rule is being
// moved or split, its exact place is listed in the rule's allowlist; an entry that no
// longer breaks the rule fails the test, so each list only shrinks.

/// The library's compiled files (test-only files left out): relative path → code.
fn library_code() -> Vec<(String, Vec<Tok>)> {
    let files = source_files();
    let mut rels: Vec<String> = library_modules(&files).into_values().collect();
    rels.push("main.rs".into());
    rels.sort();
    rels.into_iter()
        .map(|rel| {
            let code = without_tests(&lex(&files[&rel]).unwrap_or_else(|e| panic!("src/{rel}: {e}")));
            (rel, code)
        })
        .collect()
}

/// The command-line edge: the binary and its command modules, which may print and
/// read the environment.
fn at_the_edge(rel: &str) -> bool {
    rel == "main.rs" || rel.starts_with("commands/")
}

/// Fails with every finding not allowed and every allowlist entry nothing needs.
#[track_caller]
fn enforce(rule: &str, found: BTreeMap<String, Vec<String>>, allowed: &[&str]) {
    let mut problems = Vec::new();
    for (key, places) in &found {
        if !allowed.contains(&key.as_str()) {
            problems.extend(places.iter().map(|p| format!("{p}: {rule}")));
        }
    }
    for a in allowed {
        if !found.contains_key(*a) {
            problems.push(format!("`{a}` is allowed to break \"{rule}\" but no longer does: remove it from the list"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Files outside the command modules that print today: the fault injector's abort
/// message.
const PRINTS_ALLOWED: &[&str] = &["fault.rs"];

#[test]
fn only_the_command_line_prints() {
    const PRINTS: [&str; 5] = ["println", "eprintln", "print", "eprint", "dbg"];
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (rel, code) in library_code() {
        if at_the_edge(&rel) {
            continue;
        }
        for (name, line) in macro_calls(&code).into_iter().filter(|(n, _)| PRINTS.contains(&n.as_str())) {
            found.entry(rel.clone()).or_default().push(format!("src/{rel}:{line}: `{name}!`"));
        }
    }
    enforce("the library prints; return the text or an event for the command to print", found, PRINTS_ALLOWED);
}

/// Files outside the command modules that read environment variables today: the fault
/// injector (its counters), the language server's std cache (`XDG_CACHE_HOME`,
/// `HOME`), and torchrun's `RANK`/`WORLD_SIZE`/… contract, read where the process
/// group starts.
const ENV_ALLOWED: &[&str] = &["backend/torch/dist/mod.rs", "fault.rs", "lsp/convert.rs"];

#[test]
fn only_the_command_line_reads_the_environment() {
    const READS: [&str; 4] = ["var", "var_os", "vars", "vars_os"];
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (rel, code) in library_code() {
        if at_the_edge(&rel) {
            continue;
        }
        // `std::env::var(…)`, `env::var_os(…)`, and names imported from `std::env`.
        let mut reads: Vec<(String, usize)> = code_paths(&code)
            .into_iter()
            .filter(|(p, _)| p.windows(2).any(|w| w[0] == "env" && READS.contains(&w[1].as_str())))
            .map(|(p, line)| (p.join("::"), line))
            .collect();
        reads.extend(
            use_paths(&code)
                .into_iter()
                .filter(|u| u.path.windows(2).any(|w| w[0] == "env" && (READS.contains(&w[1].as_str()) || w[1] == "*")))
                .map(|u| (format!("use {}", u.path.join("::")), u.line)),
        );
        for (what, line) in reads {
            found.entry(rel.clone()).or_default().push(format!("src/{rel}:{line}: `{what}`"));
        }
    }
    enforce("the library reads the environment; take an option from the caller", found, ENV_ALLOWED);
}

/// The longest a function may be, in lines from `fn` to its closing brace.
const MAX_FN_LINES: usize = 120;

/// Functions longer than that today (`file: Type::name`), each to be split.
const LONG_FNS_ALLOWED: &[&str] = &[];

#[test]
fn functions_stay_short() {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (rel, code) in library_code() {
        for f in functions(&code).into_iter().filter(|f| f.lines() > MAX_FN_LINES) {
            let key = format!("{rel}: {}", f.name);
            found.entry(key).or_default().push(format!("src/{rel}:{}: `{}` is {} lines", f.first, f.name, f.lines()));
        }
    }
    let rule = format!("longer than {MAX_FN_LINES} lines; split it");
    enforce(&rule, found, LONG_FNS_ALLOWED);
}

/// Modules of the native backend that hold raw pointers and unchecked memory: the
/// crate's own business, never its public API.
const NATIVE_INTERNALS: [&str; 4] = ["arena", "exec", "pool", "program"];

/// Of those, the ones still `pub` today.
const PUB_INTERNALS_ALLOWED: &[&str] = &[];

#[test]
fn the_native_backend_keeps_its_internals_private() {
    let files = source_files();
    let code = without_tests(&lex(&files["backend/native/mod.rs"]).expect("lexes"));
    let decls = mod_decls(&code);
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in NATIVE_INTERNALS {
        let (_, vis, line) =
            decls.iter().find(|(n, _, _)| n == m).unwrap_or_else(|| panic!("no `mod {m};` in backend/native/mod.rs"));
        if vis == "pub" {
            found.entry(m.to_string()).or_default().push(format!("src/backend/native/mod.rs:{line}: `pub mod {m}`"));
        }
    }
    enforce("public; make it `pub(crate)`", found, PUB_INTERNALS_ALLOWED);
}

// ---------------------------------------------------------------- the scanner itself

fn texts(code: &[Tok]) -> Vec<&str> {
    code.iter().map(|t| t.text.as_str()).collect()
}

#[test]
fn scanner_strings_comments_and_chars_are_single_tokens() {
    let src = r####"let a = "x // not a comment { \" }"; // a comment {
let b = r#"raw "quoted" { "#; /* block /* nested */ still } */ let c = b"bytes{";
let d = '{'; let e = '\''; let f: &'static str = "\\"; fn g<'a>(x: &'a u8) {}
let h = br##"a"#b"##; let i = c"cstr"; let j = 'x'; let k = b'}';"####;
    let toks = lex(src).expect("lexes");
    let code = code(&toks);
    // Every brace outside literals is one of `fn g`'s body.
    let braces: Vec<&Tok> = code.iter().filter(|t| t.kind == Kind::Punct && (t.text == "{" || t.text == "}")).collect();
    assert_eq!(braces.len(), 2, "{braces:?}");
    let comments: Vec<&Tok> = toks.iter().filter(|t| t.kind == Kind::Comment).collect();
    assert_eq!(comments.len(), 2);
    assert_eq!(comments[1].text, "/* block /* nested */ still } */");
    let lits: Vec<&str> = code.iter().filter(|t| t.kind == Kind::Lit).map(|t| t.text.as_str()).collect();
    assert_eq!(
        lits,
        [
            r#""x // not a comment { \" }""#,
            r##"r#"raw "quoted" { "#"##,
            r#"b"bytes{""#,
            "'{'",
            r"'\''",
            r#""\\""#,
            r###"br##"a"#b"##"###,
            r#"c"cstr""#,
            "'x'",
            "b'}'"
        ]
    );
    let lifetimes: Vec<&str> = code.iter().filter(|t| t.kind == Kind::Lifetime).map(|t| t.text.as_str()).collect();
    assert_eq!(lifetimes, ["'static", "'a", "'a"]);
    assert_eq!(code.iter().find(|t| t.text == "g").map(|t| t.line), Some(3));
    assert!(lex("let s = \"open").is_err());
    assert!(lex("/* open /* */").is_err());
}

#[test]
fn scanner_removes_test_items_only() {
    let src = r#"
fn keep() { println!("kept"); }
#[cfg(test)]
mod tests {
    fn helper() { println!("{}", "}"); }
}
#[test]
fn a_test() { dbg!(1); }
#[cfg(test)]
mod more;
#[cfg(feature = "torch")]
fn also_kept() {}
"#;
    let code = without_tests(&lex(src).unwrap());
    let t = texts(&code);
    assert!(t.contains(&"keep") && t.contains(&"also_kept"), "{t:?}");
    assert!(!t.contains(&"helper") && !t.contains(&"a_test") && !t.contains(&"more") && !t.contains(&"dbg"), "{t:?}");
    assert_eq!(macro_calls(&code), [("println".to_string(), 2)]);
}

#[test]
fn scanner_expands_use_groups() {
    let src = "use crate::a::{b::{c, d as e}, self, f::*};\npub(crate) use super::g;\nuse ::std::io;\n";
    let code = code(&lex(src).unwrap());
    let got: Vec<(String, String, bool)> =
        use_paths(&code).into_iter().map(|u| (u.path.join("::"), u.alias, u.public)).collect();
    let want = [
        ("crate::a::b::c", "c", false),
        ("crate::a::b::d", "e", false),
        ("crate::a", "a", false),
        ("crate::a::f::*", "*", false),
        ("super::g", "g", true),
        ("std::io", "io", false),
    ];
    let want: Vec<(String, String, bool)> = want.iter().map(|(p, a, v)| (p.to_string(), a.to_string(), *v)).collect();
    assert_eq!(got, want);
}

#[test]
fn scanner_finds_paths_functions_and_their_lengths() {
    let src = r#"
use crate::x::y;
impl<'a> fmt::Display for Thing<'a> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let s = "fn fake() {";
        write!(f, "{}", std::env::var("A").unwrap_or_default())
    }
}
trait T { fn declared(&self); fn provided(&self) -> u8 { 1 } }
pub fn outer(v: Vec<[u8; 2]>) -> impl Iterator<Item = u8> {
    fn inner() {}
    v.into_iter().map(|[a, _]| a)
}
"#;
    let code = code(&lex(src).unwrap());
    let f: Vec<(String, usize, usize)> = functions(&code).into_iter().map(|f| (f.name, f.first, f.last)).collect();
    let want = [("Thing::fmt", 4, 7), ("T::provided", 9, 9), ("outer", 10, 13), ("inner", 11, 11)];
    let want: Vec<(String, usize, usize)> = want.iter().map(|(n, a, b)| (n.to_string(), *a, *b)).collect();
    assert_eq!(f, want);
    let paths: Vec<String> = code_paths(&code).into_iter().map(|(p, _)| p.join("::")).collect();
    assert_eq!(paths, ["fmt::Display", "fmt::Formatter", "fmt::Result", "std::env::var"]);
    let m = mod_decls(&common::rust_src::code(&lex("pub mod a;\npub(crate) mod b;\nmod c;\nmod d { }\n").unwrap()));
    let m: Vec<(&str, &str)> = m.iter().map(|(n, v, _)| (n.as_str(), v.as_str())).collect();
    assert_eq!(m, [("a", "pub"), ("b", "pub(crate)"), ("c", "")]);
}
