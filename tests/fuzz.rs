//! Robustness: no input makes the compiler panic, hang or run out of memory, and every
//! failure is a user error (never an internal compiler error).
//!
//! Each case runs `load_str` + `check_program` (and renders the failure) on a thread of
//! its own with a main-thread-sized stack, inside `catch_unwind`, and must finish within
//! `TIMEOUT`. Case counts keep the whole file to a few seconds in a debug build.

mod common;
#[path = "fuzz/crafted.rs"]
mod crafted;

use graft::api::{check_program, render_failure};
use graft::pipeline::Failure;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Per-case wall-clock limit: a hang detector, not a speed check. A 100k-link chain
/// takes a few seconds in a debug build and went past 5 s on two cores shared with a
/// build; a quadratic blow-up at that length would take minutes.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The CLI runs on the main thread; give each case the same 8 MiB.
const STACK: usize = 8 << 20;

#[derive(Debug)]
enum Outcome {
    Compiled,
    /// The rendered diagnostics.
    UserError(String),
}

fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("specs")
}

fn compile(text: &str) -> Result<Outcome, String> {
    // The editor tools parse the text again: keep the hand-built giant inputs (which
    // only probe the parser's limits) within the per-case time.
    if text.len() <= 1 << 14 {
        tools(text)?;
    }
    let dir = specs_dir();
    let failure = match graft::lower::load_str("fuzz.graft", Some(&dir), text) {
        Err((sources, diags)) => Failure::User(sources, diags),
        Ok(prog) => match check_program(prog) {
            Ok(_) => return Ok(Outcome::Compiled),
            Err(f) => f,
        },
    };
    // Rendering must not panic either (spans inside their files, on char boundaries).
    let text = render_failure(&failure, false);
    match failure {
        Failure::User(_, d) if !d.items.is_empty() && !text.is_empty() => Ok(Outcome::UserError(text)),
        Failure::User(..) => Err("a user failure without diagnostics".to_string()),
        Failure::Bug(_) => Err(format!("compiler bug instead of a user error:\n{text}")),
    }
}

/// The editor tools on the same input: `graft fmt` formats it idempotently or refuses
/// it with a syntax error, never with an internal error; the language server checks it
/// and answers requests all over it without panicking.
fn tools(text: &str) -> Result<(), String> {
    use graft::fmt::{format_text, FmtError};
    let mut state = graft::lsp::State::default();
    let uri = lsp_types::Url::from_file_path(specs_dir().join("fuzz.graft")).map_err(|()| "uri")?;
    state.update(uri.clone(), text.to_string());
    let lines = text.lines().count().max(1) as u32;
    for (i, method) in [
        "textDocument/hover",
        "textDocument/completion",
        "textDocument/definition",
        "textDocument/references",
        "textDocument/documentSymbol",
        "textDocument/semanticTokens/full",
        "textDocument/formatting",
    ]
    .iter()
    .enumerate()
    {
        for line in [0, lines / 2, lines.saturating_sub(1)] {
            for character in [3 + i as u32, 17] {
                let params = serde_json::json!({
                    "textDocument": { "uri": uri },
                    "position": { "line": line, "character": character },
                    "context": { "includeDeclaration": true },
                    "options": { "tabSize": 2, "insertSpaces": true },
                });
                let req = lsp_server::Request::new(lsp_server::RequestId::from(1), method.to_string(), params);
                let _ = state.request(req);
            }
        }
    }
    match format_text("fuzz.graft", text) {
        Ok(once) => match format_text("fuzz.graft", &once) {
            Ok(twice) if twice == once => Ok(()),
            Ok(twice) => Err(format!("fmt is not idempotent:\n{once}\n---\n{twice}")),
            Err(_) => Err(format!("fmt output does not format again:\n{once}")),
        },
        Err(FmtError::Syntax(..)) => Ok(()),
        Err(FmtError::Internal(e)) => Err(format!("fmt: {e}")),
    }
}

/// Run one input under the panic, hang and bug checks; `Err` says what went wrong.
fn verdict(text: String) -> Result<Outcome, String> {
    let (tx, rx) = mpsc::channel();
    let preview: String = text.chars().take(200).collect();
    std::thread::Builder::new()
        .name("fuzz-case".into())
        .stack_size(STACK)
        .spawn(move || {
            let r = std::panic::catch_unwind(|| compile(&text));
            let _ = tx.send(r);
        })
        .expect("spawn");
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(r)) => r.map_err(|e| format!("{e}\ninput starts: {preview:?}")),
        Ok(Err(p)) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panic: {msg}\ninput starts: {preview:?}"))
        }
        Err(_) => Err(format!("no result within {TIMEOUT:?}\ninput starts: {preview:?}")),
    }
}

fn must_fail(text: String) -> String {
    match verdict(text) {
        Ok(Outcome::UserError(rendered)) => rendered,
        Ok(Outcome::Compiled) => panic!("expected a user error"),
        Err(e) => panic!("{e}"),
    }
}

fn specs() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(specs_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "graft"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn config(cases: u32) -> Config {
    Config { cases, max_shrink_iters: 64, failure_persistence: None, ..Config::default() }
}

/// Words and punctuation of the language, plus names the standard library defines.
/// Language words and literal shapes; the built-in names come from the compiler itself.
const WORDS: &[&str] = &[
    "use",
    "module",
    "model",
    "in",
    "out",
    "if",
    "else",
    "repeat",
    "true",
    "false",
    "and",
    "or",
    "not",
    "extends",
    "input",
    "backbone",
    "encoder",
    "weights",
    "frozen",
    "trainable",
    "adapter",
    "at",
    "after",
    "parallel",
    "before",
    "pathway",
    "from",
    "into",
    "head",
    "output",
    "train",
    "optional",
    "int",
    "float",
    "bool",
    "str",
    "list",
    "f32",
    "i64",
    "bool",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    ".",
    "..",
    "*",
    "**",
    "+",
    "-",
    "/",
    "%",
    "==",
    "!=",
    "<=",
    ">=",
    "<",
    ">",
    "&&",
    "||",
    "!",
    "x",
    "y",
    "B",
    "T",
    "vit",
    "vit3d",
    "bert",
    "block",
    "mlp",
    "attention",
    "bottleneck",
    "lora",
    "token_mlp",
    "blocks",
    "fc1",
    "0",
    "1",
    "2",
    "3",
    "16",
    "768",
    "-1",
    "4096",
    "99999999999999999999",
    "1e309",
    "0.5",
    "1e-6",
    "\"zeros\"",
    "\"x.safetensors\"",
    "\"cm3t_video.graft\"",
    "\"",
    "std.vit",
    "std.adapters",
    "std.encoders",
    "\n",
    "//",
    "/*",
    "*/",
];

/// Every token the soup draws from.
fn tokens() -> Vec<&'static str> {
    use graft::lower::builtins::{PRIMITIVES, SCALAR_FNS, TENSOR_FNS};
    WORDS.iter().chain(PRIMITIVES).chain(TENSOR_FNS).chain(SCALAR_FNS).copied().collect()
}

fn token_soup(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(tokens()), 0..max).prop_map(|t| t.join(" "))
}

/// A model prologue that resolves, so that token soup after it reaches lowering.
const PROLOGUE: &str =
    "use std.vit\nuse std.adapters\nuse std.encoders\n\nmodel m {\n  input image: f32[B, 3, 224, 224]\n";

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let r = verdict(text);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn random_ascii(text in "[ -~\n]{0,512}") {
        let r = verdict(text);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn random_token_sequences(text in token_soup(200)) {
        let r = verdict(text);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn random_model_bodies(body in token_soup(60)) {
        let r = verdict(format!("{PROLOGUE}{body}\n}}\n"));
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// One piece of a client's byte stream: a well-framed body (random bytes, random JSON
/// values, or a message with a random id), a header with a random length, or bytes.
fn lsp_piece() -> impl Strategy<Value = Vec<u8>> {
    let frame = |body: Vec<u8>| {
        let mut f = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        f.extend(body);
        f
    };
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64).prop_map(frame),
        (any::<i64>(), any::<f64>(), "[a-z/]{0,12}").prop_map(move |(i, x, m)| {
            frame(
                format!(
                    r#"{{"jsonrpc":"2.0","id":{},"method":"{m}","params":{{"x":{x}}}}}"#,
                    if i % 2 == 0 { i.to_string() } else { x.to_string() }
                )
                .into_bytes(),
            )
        }),
        any::<u64>().prop_map(|n| format!("Content-Length: {n}\r\n\r\n").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// The language server's reader: any byte stream is classified frame by frame
    /// (never a panic, never an allocation the stream's length does not pay for) and
    /// ends when the stream does.
    #[test]
    fn lsp_streams(pieces in prop::collection::vec(lsp_piece(), 0..12)) {
        let bytes: Vec<u8> = pieces.concat();
        let mut r = graft::lsp::transport::Reader::new(bytes.as_slice());
        let mut n = 0;
        while let Some(m) = r.next_message().unwrap() {
            n += 1;
            prop_assert!(n <= bytes.len() + 1, "more messages than bytes: {m:?}");
        }
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn truncated_specs(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>()) {
        let specs = specs();
        let (_, text) = which.get(&specs);
        let mut cut = at.index(text.len() + 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let r = verdict(text[..cut].to_string());
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn mutated_specs(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let specs = specs();
        let (_, text) = which.get(&specs);
        let mut bytes = text.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let r = verdict(String::from_utf8_lossy(&bytes).into_owned());
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn specs_with_a_token_replaced(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(),
                                   tok in prop::sample::select(tokens())) {
        let specs = specs();
        let (_, text) = which.get(&specs);
        let words: Vec<&str> = text.split(' ').collect();
        let i = at.index(words.len());
        let mut out = words.clone();
        out[i] = tok;
        let r = verdict(out.join(" "));
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// Numbers that break naive arithmetic.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("9223372036854775808".to_string()),
        Just("99999999999999999999999999999999".to_string()),
        Just("1000000000000000".to_string()),
        Just("4097".to_string()),
        Just("100000".to_string()),
        Just("1e308".to_string()),
        Just("1e309".to_string()),
        Just("0.0".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..1 << 45).prop_map(|n| n.to_string()),
        (1u32..5000).prop_map(|n| n.to_string()),
    ]
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn huge_sizes_and_repeat_counts(a in number(), b in number(), n in number(), d in number()) {
        let text = format!(
            "module stack(dim: int, hidden: int, n: int) {{\n  in x\n  fc = linear(dim, hidden)(x)\n  back = linear(hidden, dim)(fc)\n  p = param([1, dim])\n  blocks = repeat(n) mlp(dim, hidden)(back + p)\n  out blocks\n}}\nuse std.vit\nmodel m {{\n  input x: f32[B, {d}]\n  encoder s = stack({a}, {b}, {n})(x)\n  output y = s\n}}\n"
        );
        let r = verdict(text);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn huge_model_configurations(dim in number(), depth in number(), heads in number(), patch in number()) {
        let text = format!(
            "use std.vit\nmodel m {{\n  input image: f32[B, 3, 224, 224]\n  encoder v = vit(dim: {dim}, depth: {depth}, heads: {heads}, patch: {patch})(image)\n  output y = v\n}}\n"
        );
        let r = verdict(text);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn huge_arithmetic(a in number(), b in number(), op in prop::sample::select(&["+", "-", "*", "/", "%", "<", "=="][..])) {
        let text = format!(
            "module f(k: int) {{\n  in x\n  fc = linear(4, int(k))(x)\n  out fc\n}}\nmodel m {{\n  input x: f32[B, 4]\n  encoder e = f({a} {op} {b})(x)\n  output y = e\n}}\n"
        );
        let r = verdict(text);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

const DEEP: usize = 100_000;

/// Fails with the nesting-limit error, not with whatever pest stumbles on first.
fn must_hit_depth_limit(text: String) {
    let rendered = must_fail(text);
    assert!(rendered.contains("error[E0002]"), "expected the nesting limit, got:\n{rendered}");
}

#[test]
fn deep_brackets() {
    for open in ["(", "[", "{"] {
        must_hit_depth_limit(open.repeat(DEEP));
        must_hit_depth_limit(format!("module m() {{\n  in x\n  y = {}x\n  out y\n}}\n", open.repeat(DEEP)));
        // A quote inside a comment must not hide the brackets after it.
        must_hit_depth_limit(format!("module m() {{\n  in x\n  y = /* \" */ {}x\n  out y\n}}\n", open.repeat(DEEP)));
        must_hit_depth_limit(format!("module m() {{\n  in x\n  y = // \"\n {}x\n  out y\n}}\n", open.repeat(DEEP)));
    }
    must_hit_depth_limit(format!("model m {{ train {}a{} }}", "{".repeat(DEEP), "}".repeat(DEEP)));
    must_hit_depth_limit(format!(
        "model m {{ input x: f32[B, 4]\n output y = {}x{} }}",
        "(".repeat(DEEP),
        ")".repeat(DEEP)
    ));
}

#[test]
fn long_chains() {
    let body = |e: String| {
        format!("module m() {{\n  in x\n  y = {e}\n  out y\n}}\nmodel q {{\n  input x: f32[B, 4]\n  encoder e = m()(x)\n  output o = e\n}}\n")
    };
    must_hit_depth_limit(body(format!("{}x", "-".repeat(DEEP))));
    must_hit_depth_limit(body(format!("{}true", "not ".repeat(DEEP / 4))));
    must_hit_depth_limit(body(format!("{}true", "!".repeat(DEEP))));
    must_hit_depth_limit(body(format!("x{}", " + x".repeat(DEEP))));
    must_hit_depth_limit(body(format!("1{}", " * 1".repeat(DEEP))));
    must_hit_depth_limit(body(format!("x{}", ".a".repeat(DEEP))));
    must_hit_depth_limit(body(format!("x{}", "[0]".repeat(DEEP))));
    must_hit_depth_limit(body(format!("f{}", "(x)".repeat(DEEP))));
    // `else if` chains recurse like brackets.
    let chain = format!("if true {{ out x }}{}", " else if false { out x }".repeat(DEEP / 10));
    must_hit_depth_limit(format!("module m() {{\n  in x\n  {chain}\n}}\n"));
}

/// A flat chain is as deep as its operators: `a + b + c` is two levels, so a sum of
/// 128 (or 200) terms is well within the limit of 256.
#[test]
fn flat_chains_count_their_operators() {
    let body = |e: String| {
        format!("module m() {{\n  in x\n  y = {e}\n  out y\n}}\nmodel q {{\n  input x: f32[B, 4]\n  encoder e = m()(x)\n  output o = e\n}}\n")
    };
    for terms in [128, 200] {
        for e in [format!("x{}", " + x".repeat(terms - 1)), format!("x * ({}1)", "1 + ".repeat(terms - 1))] {
            match verdict(body(e)) {
                Ok(Outcome::Compiled) => {}
                Ok(Outcome::UserError(r)) => panic!("{terms} terms refused:\n{r}"),
                Err(e) => panic!("{e}"),
            }
        }
    }
    must_hit_depth_limit(body(format!("x{}", " + x".repeat(300))));
}

#[test]
fn pathological_selectors() {
    let spec = |sel: &str| {
        format!("use std.vit\nmodel m {{\n  input image: f32[B, 3, 224, 224]\n  encoder v = vit(dim: 64, depth: 2, heads: 2, classes: 0, patch: 32)(image)\n  output y = v\n  train {sel}\n}}\n")
    };
    // Runs of `**` are not exponential.
    must_fail(spec(&format!("{}nothing", "**.".repeat(2000))));
    must_fail(spec(&format!("{}*.nothing", "**.*.".repeat(500))));
    // Products of sets are bounded before they are built.
    let set = format!("{{{}}}", (0..60).map(|i| format!("n{i}")).collect::<Vec<_>>().join(", "));
    let wide = format!("{{{}}}", (0..60).map(|_| format!("{set}.{set}")).collect::<Vec<_>>().join(", "));
    must_fail(spec(&format!("{wide}.{wide}.{wide}")));
    // Very long selectors and many rules.
    must_fail(spec("a.".repeat(100_000).trim_end_matches('.')));
    must_fail(spec(&vec!["nothing"; 20_000].join(", ")));
}

#[test]
fn huge_inputs() {
    // Over the size limit.
    must_fail(format!("// {}\n", "x".repeat(graft::syntax::MAX_SOURCE_BYTES)));
    // Big but legal: many modules, many statements.
    let mut text = String::new();
    for i in 0..2000 {
        text.push_str(&format!("module m{i}(d: int) {{\n  in x\n  a = linear(d, d)(x)\n  out a\n}}\n"));
    }
    assert!(verdict(text).is_ok());
    // A repeat at the limit of a wide linear: stopped by the parameter budget.
    must_fail("module big(d: int) {\n  in x\n  fc = linear(d, d)(x)\n  out fc\n}\nmodel m {\n  input x: f32[B, 1048576]\n  encoder s = stack_of_big()(x)\n  output y = s\n}\nmodule stack_of_big() {\n  in x\n  b = repeat(4096) big(1048576)(x)\n  out b\n}\n".to_string());
    // Huge input dims.
    must_fail(
        "model m {\n  input x: f32[B, 99999999999999999999]\n  encoder e = linear(4, 4)(x)\n  output y = e\n}\n"
            .to_string(),
    );
    must_fail("model m {\n  input x: f32[B, 0]\n  encoder e = linear(4, 4)(x)\n  output y = e\n}\n".to_string());
    must_fail(
        "model m {\n  input x: f32[B, 4294967297]\n  encoder e = linear(4294967297, 4)(x)\n  output y = e\n}\n"
            .to_string(),
    );
}

#[test]
fn adapters_inside_adapters_are_bounded() {
    // Each adapter sits inside the previous one: paths grow by two segments a step.
    let mut text =
        String::from("use std.adapters\nmodel m {\n  input x: f32[B, 8, 16]\n  encoder e = linear(16, 16)(x)\n");
    text.push_str("  adapter a0 = bottleneck(dim: 16, bottleneck: 16) at e after\n");
    for i in 1..3000 {
        let site = if i % 2 == 1 { "down" } else { "up" };
        text.push_str(&format!("  adapter a{i} = bottleneck(dim: 16, bottleneck: 16) at a{}.**.{site} after\n", i - 1));
    }
    text.push_str("  output y = e\n}\n");
    must_fail(text);
}

#[test]
fn gallery_specs_compile_under_the_harness() {
    for (name, text) in specs() {
        let r = verdict(text);
        assert!(matches!(r, Ok(Outcome::Compiled)), "{name}: {r:?}");
    }
}

/// `l{k}` instantiates `l{k-1}` twice: 2^k instances of `leaf` from a spec of a few
/// lines.
fn doubling_chain(k: usize, leaf: &str) -> String {
    let mut text = format!("module l0(d: int) {{\n  in x\n  a = {leaf}\n  out a\n}}\n");
    for i in 1..=k {
        text.push_str(&format!(
            "module l{i}(d: int) {{\n  in x\n  a = l{}(d)(x)\n  b = l{}(d)(a)\n  out b\n}}\n",
            i - 1,
            i - 1
        ));
    }
    text.push_str(&format!("model m {{\n  input x: f32[B, 4]\n  encoder t = l{k}(4)(x)\n  output y = t\n}}\n"));
    text
}

#[test]
fn doubling_chains_stop_at_the_instance_and_node_limits() {
    // 2^19 linears (1.5 million operations) or 2^19 operation-free-ish instances: one
    // error each, within the harness's time limit.
    let e = must_fail(doubling_chain(19, "linear(d, d)(x)"));
    assert!(e.contains("E0301") || e.contains("E0310"), "{e}");
    assert_eq!(e.matches("error[").count(), 1, "{e}");
    let e = must_fail(doubling_chain(19, "gelu(x)"));
    assert!(e.contains("E0301") || e.contains("E0310"), "{e}");
    // Below the limits, a large chain still compiles.
    assert!(matches!(verdict(doubling_chain(10, "linear(d, d)(x)")), Ok(Outcome::Compiled)));
}

/// The case the property above once found: a patch size whose kernel's element count
/// overflows i64 when the convolution's fan-in is computed. A clean error, no panic.
#[test]
fn a_patch_past_i64_squared_is_an_error_not_a_panic() {
    let text = "use std.vit\nmodel m {\n  input image: f32[B, 3, 224, 224]\n  encoder v = vit(dim: 4097, depth: 0, heads: 0, patch: 1753413057)(image)\n  output y = v\n}\n";
    match verdict(text.to_string()) {
        Ok(Outcome::UserError(d)) => assert!(d.contains("absurd shape"), "{d}"),
        Ok(Outcome::Compiled) => panic!("a 1753413057² kernel compiled"),
        Err(e) => panic!("{e}"),
    }
}
