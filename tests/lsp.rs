//! `graft lsp`: the request handlers on gallery specs (through `lsp::State`), the
//! diagnostics against `graft check`'s on every invalid fixture, and one session end to
//! end through the real binary over stdio. The test client reads with a timeout: a
//! server that hangs fails the test within [`BOUND`] and is killed.

use graft::lsp::State;
use lsp_server::{Request, RequestId};
use lsp_types::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The longest the client waits for one message from the server, or for it to exit
/// (generous: the first check of a gallery spec in a debug build takes seconds).
const BOUND: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn uri(path: &Path) -> Url {
    Url::from_file_path(path.canonicalize().unwrap()).unwrap()
}

/// Where `needle` (the `nth` occurrence) starts in `text`, as an LSP position, plus `shift` characters.
fn pos(text: &str, needle: &str, nth: usize, shift: u32) -> Position {
    let off = text.match_indices(needle).nth(nth).unwrap_or_else(|| panic!("{needle:?} not in text")).0;
    let mut p = graft::lsp::LineIndex::new(text).position(off);
    p.character += shift;
    p
}

fn request(state: &mut State, method: &str, params: Value) -> Value {
    let resp = state.request(Request::new(RequestId::from(1), method.to_string(), params));
    if let Some(e) = resp.error {
        panic!("{method}: {}", e.message);
    }
    resp.result.unwrap_or(Value::Null)
}

fn at(u: &Url, p: Position) -> Value {
    json!({ "textDocument": { "uri": u }, "position": p })
}

fn hover_text(state: &mut State, u: &Url, p: Position) -> String {
    let v = request(state, "textDocument/hover", at(u, p));
    let h: Option<Hover> = serde_json::from_value(v).unwrap();
    match h.expect("a hover").contents {
        HoverContents::Markup(m) => m.value,
        other => panic!("{other:?}"),
    }
}

fn open(state: &mut State, path: &Path) -> (Url, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let u = uri(path);
    let n = state.update(u.clone(), text.clone());
    let p: PublishDiagnosticsParams = serde_json::from_value(n.params).unwrap();
    assert!(p.diagnostics.is_empty(), "{}: {:?}", path.display(), p.diagnostics);
    (u, text)
}

#[test]
fn hover_on_sites_modules_selectors_and_pathways() {
    let mut s = State::default();
    let (u, text) = open(&mut s, &root().join("specs/m2pt_image_point.graft"));
    let h = hover_text(&mut s, &u, pos(&text, "backbone target", 0, 10));
    assert!(h.contains("**target**") && h.contains("f32[B, 1000]") && h.contains("86,567,656 parameters"), "{h}");
    let h = hover_text(&mut s, &u, pos(&text, "= vit(", 0, 3));
    assert!(h.contains("module vit(dim: int") && h.contains("<std>/vit.graft") && h.contains("Image ViT"), "{h}");
    let h = hover_text(&mut s, &u, pos(&text, "into target.blocks", 0, 8));
    assert!(h.contains("matches **48** sites"), "{h}");
    let h = hover_text(&mut s, &u, pos(&text, "pathway cmr", 0, 9));
    assert!(h.contains("48 pairs, 48 λ") && h.contains("`aux.blocks.0.attn.qkv` → `target.blocks.0.attn.qkv`"), "{h}");
}

#[test]
fn hover_on_a_name_inside_a_module() {
    let mut s = State::default();
    let path = root().join("specs/vit_tiny.graft");
    let (u, _) = open(&mut s, &path);
    // A module of the document, used by its model.
    let text = "use std.vit\n\nmodule twice(dim: int) {\n  in x\n  fc = linear(dim, dim)(x)\n  out fc\n}\n\nmodel m {\n  input x: f32[B, 8, 16]\n  encoder e = twice(dim: 16)(x)\n  output y = e\n  train e\n}\n";
    s.update(u.clone(), text.to_string());
    let h = hover_text(&mut s, &u, pos(text, "fc =", 0, 0));
    assert!(
        h.contains("1 site")
            && h.contains("**e.fc**")
            && h.contains("f32[B, 8, 16]")
            && h.contains("272 parameters, trainable"),
        "{h}"
    );
}

#[test]
fn definition_references_symbols_and_tokens() {
    let mut s = State::default();
    let (u, text) = open(&mut s, &root().join("specs/m2pt_image_point.graft"));
    // A std module opens as a read-only file at its declaration.
    let v = request(&mut s, "textDocument/definition", at(&u, pos(&text, "= vit(", 0, 3)));
    let GotoDefinitionResponse::Scalar(loc) = serde_json::from_value(v).unwrap() else { panic!("not a location") };
    let std_text = std::fs::read_to_string(loc.uri.to_file_path().unwrap()).unwrap();
    assert_eq!(std_text, graft::lower::STD.iter().find(|(n, _)| *n == "vit").unwrap().1);
    let line = std_text.lines().nth(loc.range.start.line as usize).unwrap();
    assert!(line.starts_with("module vit("), "{line}");
    assert!(std::fs::metadata(loc.uri.to_file_path().unwrap()).unwrap().permissions().readonly());
    // `use std.vit` goes to the file.
    let v = request(&mut s, "textDocument/definition", at(&u, pos(&text, "use std.vit", 0, 6)));
    let GotoDefinitionResponse::Scalar(l2) = serde_json::from_value(v).unwrap() else { panic!("not a location") };
    assert_eq!(l2.uri, loc.uri);
    // References of `vit`: both backbones of the document.
    let mut p = at(&u, pos(&text, "= vit(", 0, 3));
    p["context"] = json!({ "includeDeclaration": false });
    let refs: Vec<Location> = serde_json::from_value(request(&mut s, "textDocument/references", p)).unwrap();
    // `vit` in both backbones of the document, and std's `module audio_vit = vit(...)`.
    assert_eq!(refs.iter().filter(|r| r.uri == u).count(), 2, "{refs:?}");
    assert_eq!(refs.len(), 3, "{refs:?}");
    assert!(refs[2].uri.path().ends_with("/vit.graft"), "{refs:?}");
    // Symbols: the model and its declarations.
    let v = request(&mut s, "textDocument/documentSymbol", json!({ "textDocument": { "uri": u } }));
    let syms: Vec<DocumentSymbol> = serde_json::from_value(v).unwrap();
    let model = syms.iter().find(|x| x.name == "m2pt_image_point").expect("model symbol");
    let names: Vec<&str> = model.children.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["image", "target", "aux", "cmr", "logits"]);
    // Semantic tokens: `model` is a keyword, `vit` a function.
    let v = request(&mut s, "textDocument/semanticTokens/full", json!({ "textDocument": { "uri": u } }));
    let toks: SemanticTokens = serde_json::from_value(v).unwrap();
    let (mut line, mut col) = (0, 0);
    let mut found = Vec::new();
    for t in &toks.data {
        line += t.delta_line;
        col = if t.delta_line == 0 { col + t.delta_start } else { t.delta_start };
        let l = text.lines().nth(line as usize).unwrap();
        let word: String = l.chars().skip(col as usize).take(t.length as usize).collect();
        found.push((word, graft::lsp::tokens::TYPES[t.token_type as usize].as_str().to_string()));
    }
    for (w, ty) in
        [("model", "keyword"), ("vit", "function"), ("dim", "parameter"), ("f32", "type"), ("blocks", "property")]
    {
        assert!(found.iter().any(|(a, b)| a == w && b == ty), "{w} as {ty} not in {found:?}");
    }
    assert!(found.iter().any(|(a, b)| a.starts_with("//") && b == "comment"));
}

#[test]
fn completion_of_paths_parameters_and_modules() {
    let mut s = State::default();
    let (u, text) = open(&mut s, &root().join("specs/m2pt_image_point.graft"));
    let labels = |s: &mut State, p: Position| -> Vec<String> {
        let v = request(s, "textDocument/completion", at(&u, p));
        let CompletionResponse::Array(items) = serde_json::from_value(v).unwrap() else { panic!("not an array") };
        items.into_iter().map(|i| i.label).collect()
    };
    // A selector being typed: the text no longer compiles, the last model answers.
    let typing = text.replace("  train target, cmr", "  train target, cmr, target.blocks[*].");
    s.update(u.clone(), typing.clone());
    let got = labels(&mut s, pos(&typing, "target.blocks[*].\n", 0, 17));
    for want in ["attn", "mlp", "norm1", "norm2"] {
        assert!(got.contains(&want.to_string()), "{want} not in {got:?}");
    }
    let typing = text.replace("  train target, cmr", "  train target.blocks[0].{attn.");
    s.update(u.clone(), typing.clone());
    let got = labels(&mut s, pos(&typing, "{attn.", 0, 6));
    assert!(got.contains(&"qkv".to_string()) && got.contains(&"proj".to_string()), "{got:?}");
    let typing = text.replace("  train target, cmr", "  train target.");
    s.update(u.clone(), typing.clone());
    let got = labels(&mut s, pos(&typing, "train target.", 0, 13));
    assert!(got.contains(&"blocks".to_string()) && got.contains(&"head".to_string()), "{got:?}");
    let got = labels(&mut s, pos(&typing, "train target.", 0, 13));
    assert!(!got.contains(&"0".to_string()));
    // Parameters of the module being called, those not given yet.
    let typing = text.replace("vit(dim: 768, depth: 12, heads: 12, classes: 1000)", "vit(dim: 768, )");
    s.update(u.clone(), typing.clone());
    let got = labels(&mut s, pos(&typing, "vit(dim: 768, )", 0, 14));
    assert!(got.contains(&"depth".to_string()) && got.contains(&"mlp_ratio".to_string()), "{got:?}");
    assert!(!got.contains(&"dim".to_string()), "{got:?}");
    // An alias offers its target's parameters.
    let typing = text.replace("vit(dim: 768, depth: 12, heads: 12, classes: 1000)", "audio_vit(dim: 768, )");
    s.update(u.clone(), typing.clone());
    let got = labels(&mut s, pos(&typing, "audio_vit(dim: 768, )", 0, 20));
    assert!(got.contains(&"depth".to_string()) && !got.contains(&"dim".to_string()), "{got:?}");
    // Module names.
    let got = labels(&mut s, Position::new(0, 0));
    assert!(got.contains(&"vit3d".to_string()) && got.contains(&"linear".to_string()), "{got:?}");
}

#[test]
fn formatting_returns_the_fmt_layout() {
    let mut s = State::default();
    let path = root().join("specs/vit_tiny.graft");
    let (u, text) = open(&mut s, &path);
    let v = request(
        &mut s,
        "textDocument/formatting",
        json!({ "textDocument": { "uri": u }, "options": { "tabSize": 2, "insertSpaces": true } }),
    );
    assert_eq!(v, json!([]), "a formatted file needs no edit");
    let messy = text.replace("  input image: f32[B, 3, 224, 224]", "input   image :f32[ B,3,224,224 ]");
    s.update(u.clone(), messy);
    let edits: Vec<TextEdit> = serde_json::from_value(request(
        &mut s,
        "textDocument/formatting",
        json!({ "textDocument": { "uri": u }, "options": { "tabSize": 2, "insertSpaces": true } }),
    ))
    .unwrap();
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].new_text, text);
}

/// Every invalid fixture: the published diagnostics are `check`'s, code for code,
/// each at the document's span of it (a std error at the user's line that led there).
#[test]
fn diagnostics_are_checks() {
    let mut s = State::default();
    let mut std_errors = 0;
    let mut files = Vec::new();
    graft::fmt::collect_specs(&root().join("tests/fixtures/invalid"), &mut files).unwrap();
    for path in files.iter().filter(|p| p.parent().unwrap().ends_with("invalid")) {
        let text = std::fs::read_to_string(path).unwrap();
        let u = uri(path);
        let check = match graft::lower::load_file(&u.to_file_path().unwrap()) {
            Err((_, d)) => d,
            Ok(prog) => match graft::api::check_program(prog) {
                Err(graft::pipeline::Failure::User(_, d)) => d,
                _ => panic!("{} passes check", path.display()),
            },
        };
        let n = s.update(u.clone(), text.clone());
        let p: PublishDiagnosticsParams = serde_json::from_value(n.params).unwrap();
        assert_eq!(p.diagnostics.len(), check.items.len(), "{}", path.display());
        let idx = graft::lsp::LineIndex::new(&text);
        for (lsp, d) in p.diagnostics.iter().zip(&check.items) {
            assert_eq!(lsp.code, Some(NumberOrString::String(d.code.to_string())), "{}", path.display());
            assert!(lsp.message.starts_with(&d.message));
            if let Some(h) = &d.hint {
                assert!(lsp.message.contains(h));
            }
            // The first label in the document.
            let doc_file = |f: graft::source::FileId| f == graft::source::FileId(0);
            let anchor = d.primary.iter().chain(&d.secondary).find(|(sp, _)| doc_file(sp.file));
            if let Some((sp, _)) = anchor {
                assert_eq!(lsp.range, idx.range(sp.start as usize, sp.end as usize), "{}", path.display());
                if d.primary.as_ref().is_some_and(|(p, _)| !doc_file(p.file)) {
                    std_errors += 1;
                    let rel = lsp.related_information.as_ref().expect("the std location");
                    assert!(rel.iter().any(|r| r.location.uri != u), "{}", path.display());
                }
            }
        }
    }
    assert!(std_errors > 0, "no fixture has an error inside std");
}

/// A minimal LSP client over the binary's stdio. A thread reads the server's
/// messages into a channel, so every wait has a bound; the server is killed when the
/// client is dropped (a failing test included).
struct Client {
    child: Child,
    /// `None` once the client has closed its side.
    stdin: Option<ChildStdin>,
    messages: Receiver<Result<Value, String>>,
    next_id: i32,
    /// How long one wait may take ([`BOUND`]).
    bound: Duration,
}

/// One message from the server's output; `Err` when the stream ends or is malformed.
fn read_message(stdout: &mut BufReader<ChildStdout>) -> Result<Value, String> {
    let mut len = None;
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("the server closed its output".into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(n) = line.strip_prefix("Content-Length: ") {
            len = Some(n.parse::<usize>().map_err(|e| format!("Content-Length {n:?}: {e}"))?);
        }
    }
    let len = len.ok_or("a message without Content-Length")?;
    let mut body = vec![0; len];
    stdout.read_exact(&mut body).map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("a message that is not JSON: {e}"))
}

impl Client {
    fn start() -> Client {
        let child = Command::new(env!("CARGO_BIN_EXE_graft"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start graft lsp");
        Client::with_child(child, BOUND)
    }

    /// A client of a started server (stdin and stdout piped).
    fn with_child(mut child: Child, bound: Duration) -> Client {
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || loop {
            let m = read_message(&mut stdout);
            let end = m.is_err();
            if tx.send(m).is_err() || end {
                break;
            }
        });
        Client { child, stdin: Some(stdin), messages, next_id: 0, bound }
    }

    fn send(&mut self, msg: Value) {
        let body = msg.to_string();
        self.send_raw(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    }

    /// The next message, within the bound; otherwise the server is killed and the test fails.
    fn recv(&mut self) -> Value {
        match self.messages.recv_timeout(self.bound) {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("{e}"),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!("the server sent nothing for {:?}: hung (killed)", self.bound);
            }
            Err(RecvTimeoutError::Disconnected) => panic!("the server's output reader stopped"),
        }
    }

    /// The server's exit status, within the bound; otherwise it is killed and the test fails.
    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > self.bound {
                let _ = self.child.kill();
                panic!("the server did not exit within {:?} (killed)", self.bound);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a request and wait for its response (notifications on the way are kept).
    fn call(&mut self, method: &str, params: Value, seen: &mut Vec<Value>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let m = self.recv();
            if m["id"] == json!(id) {
                return m;
            }
            seen.push(m);
        }
    }

    /// Send bytes as they are (hostile frames).
    fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("the client's side is open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Send a frame around `body` as it is.
    fn send_body(&mut self, body: &[u8]) {
        let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        frame.extend_from_slice(body);
        self.send_raw(&frame);
    }

    /// Close the client's side and wait for the server's exit code (never a signal).
    fn finish(mut self) -> i32 {
        drop(self.stdin.take());
        let status = self.wait();
        status.code().unwrap_or_else(|| panic!("graft lsp died of a signal: {status}"))
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// The next diagnostics published (other messages skipped).
    fn diagnostics(&mut self) -> Vec<Diagnostic> {
        loop {
            let m = self.recv();
            if m["method"] == "textDocument/publishDiagnostics" {
                return serde_json::from_value(m["params"]["diagnostics"].clone()).unwrap();
            }
        }
    }
}

#[test]
fn a_session_over_stdio() {
    let mut c = Client::start();
    let mut seen = Vec::new();
    let init = c.call("initialize", json!({ "capabilities": {} }), &mut seen);
    assert_eq!(init["result"]["capabilities"]["hoverProvider"], json!(true), "{init}");
    c.notify("initialized", json!({}));
    let path = root().join("specs/m2pt_image_point.graft");
    let text = std::fs::read_to_string(&path).unwrap();
    let u = uri(&path);
    c.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": u, "languageId": "graft", "version": 1, "text": text } }),
    );
    assert_eq!(c.diagnostics(), vec![]);
    // An error: a width that does not exist in std's vit.
    let broken = text.replacen("depth: 12", "depth: 12, heights: 3", 1);
    c.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": u, "version": 2 }, "contentChanges": [{ "text": broken }] }),
    );
    let d = c.diagnostics();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, Some(NumberOrString::String("E0402".into())));
    assert_eq!(d[0].range.start, pos(&broken, "heights", 0, 0));
    assert!(d[0].message.contains("did you mean `height`?"), "{}", d[0].message);
    c.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": u, "version": 3 }, "contentChanges": [{ "text": text }] }),
    );
    assert_eq!(c.diagnostics(), vec![]);
    // Hover a site.
    let h = c.call("textDocument/hover", at(&u, pos(&text, "backbone aux", 0, 9)), &mut seen);
    let v = h["result"]["contents"]["value"].as_str().unwrap().to_string();
    assert!(v.contains("**aux** — backbone `vit`") && v.contains("84,934,656 parameters"), "{v}");
    assert!(v.contains("weights `../weights/point_vit_b16.safetensors`"), "{v}");
    // (A panic in one request is answered as an error and the session goes on: tested
    // in `lsp::server`, where the crate's test build has a request that panics.)
    // Complete a selector path.
    let typing = text.replace("  train target, cmr", "  train target, cmr, aux.blocks[0].");
    c.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": u, "version": 4 }, "contentChanges": [{ "text": typing }] }),
    );
    let r = c.call("textDocument/completion", at(&u, pos(&typing, "aux.blocks[0].\n", 0, 14)), &mut seen);
    let labels: Vec<&str> = r["result"].as_array().unwrap().iter().map(|i| i["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"attn") && labels.contains(&"mlp"), "{labels:?}");
    c.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": u, "version": 5 }, "contentChanges": [{ "text": text }] }),
    );
    // Go to a std definition.
    let r = c.call("textDocument/definition", at(&u, pos(&text, "= vit(", 1, 3)), &mut seen);
    assert!(r["result"]["uri"].as_str().unwrap().ends_with("/vit.graft"), "{r}");
    // Format a messy version.
    let messy = text.replace("  output logits = target\n", "output   logits=target\n");
    assert_ne!(messy, text);
    c.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": u, "version": 6 }, "contentChanges": [{ "text": messy }] }),
    );
    let r = c.call(
        "textDocument/formatting",
        json!({ "textDocument": { "uri": u }, "options": { "tabSize": 2, "insertSpaces": true } }),
        &mut seen,
    );
    assert_eq!(r["result"][0]["newText"].as_str(), Some(text.as_str()), "{r}");
    // Shut down cleanly.
    let r = c.call("shutdown", Value::Null, &mut seen);
    assert!(r.get("error").is_none(), "{r}");
    c.notify("exit", Value::Null);
    let status = c.wait();
    assert!(status.success(), "{status}");
}

/// The error code of an answer, and that its id is `id`.
fn error_code(m: &Value, id: Value) -> i64 {
    assert_eq!(m["id"], id, "{m}");
    m["error"]["code"].as_i64().unwrap_or_else(|| panic!("not an error: {m}"))
}

#[test]
fn bad_input_is_answered_per_the_protocol_and_the_session_goes_on() {
    let mut c = Client::start();
    let mut seen = Vec::new();
    // Before `initialize`: requests are refused, the session goes on.
    let r = c.call("textDocument/hover", json!({}), &mut seen);
    assert_eq!(error_code(&r, json!(1)), -32002);
    c.call("initialize", json!({ "capabilities": {} }), &mut seen);
    // A request before `initialized` is served.
    let r = c.call("textDocument/documentSymbol", json!({ "textDocument": { "uri": "file:///x.graft" } }), &mut seen);
    assert_eq!(error_code(&r, json!(3)), -32602);
    c.notify("initialized", json!({}));
    c.send_body(b"{\"jsonrpc\": \"2.0\", \"id\": 9, \"method\": ");
    assert_eq!(error_code(&c.recv(), Value::Null), -32700);
    c.send_body(b"\xff\xfe{}");
    assert_eq!(error_code(&c.recv(), Value::Null), -32700);
    for body in
        [&b"[1, 2]"[..], b"42", b"{\"jsonrpc\": \"2.0\"}", b"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"shutdown\"}"]
    {
        c.send_body(body);
        assert_eq!(error_code(&c.recv(), Value::Null), -32600, "{}", String::from_utf8_lossy(body));
    }
    c.send_raw(b"Content-Length: x\r\n\r\n");
    assert_eq!(error_code(&c.recv(), Value::Null), -32700);
    // A message over the limit: refused, skipped as it streams by, the next one read.
    let big = graft::lsp::transport::MAX_MESSAGE_BYTES as usize + 1;
    c.send_raw(format!("Content-Length: {big}\r\n\r\n").as_bytes());
    let r = c.recv();
    assert_eq!(error_code(&r, Value::Null), -32600);
    assert!(r["error"]["message"].as_str().unwrap().contains("limit of 67108864 bytes"), "{r}");
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..big / chunk.len() {
        c.send_raw(&chunk);
    }
    c.send_raw(&chunk[..big % chunk.len()]);
    // Still serving.
    let path = root().join("specs/vit_tiny.graft");
    let u = uri(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    c.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": u, "languageId": "graft", "version": 1, "text": text } }),
    );
    assert_eq!(c.diagnostics(), vec![]);
    let r = c.call("textDocument/documentSymbol", json!({ "textDocument": { "uri": u } }), &mut seen);
    assert!(r["result"].is_array(), "{r}");
    // After `shutdown`: requests and a second `shutdown` are refused; `exit` is 0.
    let r = c.call("shutdown", Value::Null, &mut seen);
    assert!(r.get("error").is_none(), "{r}");
    let r = c.call("shutdown", Value::Null, &mut seen);
    assert_eq!(error_code(&r, json!(6)), -32600);
    let r = c.call("textDocument/documentSymbol", json!({ "textDocument": { "uri": u } }), &mut seen);
    assert_eq!(error_code(&r, json!(7)), -32600);
    c.notify("exit", Value::Null);
    assert_eq!(c.finish(), 0);
}

#[test]
fn exit_without_shutdown_and_a_huge_length_end_with_code_1() {
    let mut c = Client::start();
    c.call("initialize", json!({ "capabilities": {} }), &mut Vec::new());
    c.notify("exit", Value::Null);
    assert_eq!(c.finish(), 1);
    // 2^64 - 1 bytes announced: answered at once, nothing allocated; the input then
    // ends inside that message.
    let mut c = Client::start();
    c.call("initialize", json!({ "capabilities": {} }), &mut Vec::new());
    c.send_raw(b"Content-Length: 18446744073709551615\r\n\r\n{}");
    let r = c.recv();
    assert_eq!(error_code(&r, Value::Null), -32600);
    assert!(r["error"]["message"].as_str().unwrap().contains("18446744073709551615 bytes"), "{r}");
    assert_eq!(c.finish(), 1);
}

/// Semantic tokens of a 600 KB selector line (quadratic before: about a minute); on a
/// thread with a generous limit, so a regression fails instead of hanging.
#[test]
fn semantic_tokens_of_a_long_line() {
    let sel: Vec<String> = (0..75_000).map(|i| format!("b{i}")).collect();
    let text = format!("model m {{\n  input x: f32[B, 4]\n  output y = x\n  train {}\n}}\n", sel.join(", "));
    assert!(text.len() > 500_000);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let tree = graft::syntax::cst::build(&text).unwrap();
        let toks = graft::lsp::tokens::encode(&text, &graft::lsp::tokens::classify(&text, &tree));
        let _ = tx.send(toks.data.len());
    });
    let n = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("semantic tokens within a minute");
    assert!(n > 75_000, "{n}");
}

#[cfg(unix)]
#[test]
fn the_std_cache_is_private_and_holds_only_what_graft_wrote() {
    use std::os::unix::fs::PermissionsExt;
    // The cache is made by std_file_in, inside a scratch directory removed with the
    // test, pass or fail.
    let tmp = tempfile::Builder::new().prefix("graft-lsp-cache-").tempdir().unwrap();
    let base = tmp.path().join("cache");
    let want = graft::lower::STD.iter().find(|(n, _)| *n == "vit").unwrap().1;
    let path = graft::lsp::std_file_in(&base, "vit").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
    for d in [base.clone(), base.join("std"), path.parent().unwrap().to_path_buf()] {
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
    }
    // A FIFO (or other text) in place of the file: replaced atomically, never opened.
    std::fs::remove_file(&path).unwrap();
    assert!(Command::new("mkfifo").arg(&path).status().unwrap().success());
    let (tx, rx) = std::sync::mpsc::channel();
    let b = base.clone();
    std::thread::spawn(move || {
        let _ = tx.send(graft::lsp::std_file_in(&b, "vit").map_err(|e| e.to_string()));
    });
    let again = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("no hang on a FIFO").unwrap();
    assert_eq!(again, path);
    assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
    // A directory others can write to, or a link in place of one, is refused.
    std::fs::set_permissions(base.join("std"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = graft::lsp::std_file_in(&base, "vit").unwrap_err().to_string();
    assert!(e.contains("writable by others"), "{e}");
    std::fs::rename(base.join("std"), base.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(base.join("elsewhere"), base.join("std")).unwrap();
    let e = graft::lsp::std_file_in(&base, "vit").unwrap_err().to_string();
    assert!(e.contains("a symlink, not a directory"), "{e}");
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The client's bound is real: a "server" that never answers fails the read within
/// the bound, and is killed.
#[test]
fn a_server_that_hangs_fails_the_read_and_is_killed() {
    let child = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sleep");
    let mut c = Client::with_child(child, Duration::from_millis(200));
    let start = Instant::now();
    let pid = c.child.id();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.recv()));
    let e = r.expect_err("no message from a hung server");
    let e = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(e.contains("hung"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    let status = c.child.wait().unwrap();
    assert!(!status.success(), "sleep {pid} was killed: {status}");
}
