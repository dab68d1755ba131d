//! The server loop: JSON-RPC over stdio (framed and bounded by [`super::transport`]),
//! the protocol's lifecycle (`initialize`, `shutdown`, `exit`), one [`Analysis`] per
//! open document, requests answered from it on worker threads. Every request and
//! notification runs inside `catch_unwind`: a panic answers that one request with an
//! internal error (or, for a document change, publishes an internal-error
//! diagnostic) and the session goes on. Input that is not a message is answered
//! with the protocol's error and the session goes on.

use super::analysis::Analysis;
use super::transport::Incoming;
use lsp_server::{ErrorCode, Message, Notification, Request, RequestId, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, DidSaveTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{
    Completion, DocumentSymbolRequest, Formatting, GotoDefinition, HoverRequest, References, Request as _,
    SemanticTokensFullRequest,
};
use lsp_types::*;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};

/// Errors that end the session (the connection broke).
pub type ServerError = Box<dyn std::error::Error + Send + Sync>;

/// A request that panics, for the test of the server's recovery; it exists only in the
/// crate's own test build (a shipped server answers it as any unknown method).
#[cfg(test)]
const CRASH_TEST: &str = "graft/crashTest";

/// Requests answered at once while others run on the workers.
const WORKERS: usize = 4;

pub fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Options(TextDocumentSyncOptions {
            open_close: Some(true),
            change: Some(TextDocumentSyncKind::FULL),
            save: Some(TextDocumentSyncSaveOptions::Supported(true)),
            ..Default::default()
        })),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec![".".into(), "(".into(), ",".into(), "{".into()]),
            ..Default::default()
        }),
        document_formatting_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        semantic_tokens_provider: Some(SemanticTokensServerCapabilities::SemanticTokensOptions(
            SemanticTokensOptions {
                legend: super::tokens::legend(),
                full: Some(SemanticTokensFullOptions::Bool(true)),
                range: None,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `shutdown` then `exit`, as the protocol asks (exit code 0).
    Clean,
    /// `exit` without `shutdown`, or the input ended first (exit code 1).
    Unclean,
}

/// Serve one client over stdin/stdout until it sends `exit` or closes its output.
pub fn run_stdio() -> Result<Ending, ServerError> {
    let stdin = std::io::stdin();
    Ok(serve(stdin.lock(), Box::new(std::io::stdout()))?)
}

/// Where every message to the client goes: one writer shared by the main loop and
/// the workers, a message at a time.
#[derive(Clone)]
struct Out(Arc<Mutex<Box<dyn Write + Send>>>);

impl Out {
    fn send(&self, msg: Message) -> io::Result<()> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        super::transport::write(&mut **w, &msg)
    }

    fn error(&self, id: Option<&RequestId>, code: ErrorCode, message: &str) -> io::Result<()> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        super::transport::write_error(&mut **w, id, code, message)
    }
}

/// Where a session is in the protocol's lifecycle.
#[derive(PartialEq)]
enum Phase {
    /// Before `initialize`: requests are answered `ServerNotInitialized`.
    Starting,
    Running,
    /// After `shutdown`: only `exit` is acted on.
    ShutDown,
}

/// Serve one client: read framed messages from `input`, write to `output`. Bad
/// input is answered with the protocol's errors and the session goes on; document
/// requests run on worker threads over a snapshot of the documents, so a long one
/// does not hold up the others (changes are applied in order on this thread).
pub fn serve(input: impl BufRead, output: Box<dyn Write + Send>) -> io::Result<Ending> {
    let out = Out(Arc::new(Mutex::new(output)));
    let mut reader = super::transport::Reader::new(input);
    let mut state = State::default();
    let mut phase = Phase::Starting;
    let (jobs, queue) = mpsc::channel::<(State, Request)>();
    let queue = Arc::new(Mutex::new(queue));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (queue, out) = (queue.clone(), out.clone());
            std::thread::spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((snapshot, req)) = next else { return };
                let id = req.id.clone();
                let resp = catch_unwind(AssertUnwindSafe(|| snapshot.request(req))).unwrap_or_else(|p| {
                    Response::new_err(
                        id,
                        ErrorCode::InternalError as i32,
                        format!("internal error: {}", panic_text(&p)),
                    )
                });
                if out.send(Message::Response(resp)).is_err() {
                    return;
                }
            })
        })
        .collect();
    let ending = loop {
        let Some(msg) = reader.next_message()? else {
            break if phase == Phase::ShutDown { Ending::Clean } else { Ending::Unclean };
        };
        match msg {
            Incoming::Invalid { id, code, message } => out.error(id.as_ref(), code, &message)?,
            Incoming::Response => {}
            Incoming::Request(req) => match (&phase, req.method.as_str()) {
                (Phase::Starting, "initialize") => {
                    let result = InitializeResult {
                        capabilities: capabilities(),
                        server_info: Some(ServerInfo {
                            name: "graft".into(),
                            version: Some(env!("CARGO_PKG_VERSION").into()),
                        }),
                    };
                    out.send(Message::Response(Response::new_ok(req.id, result)))?;
                    phase = Phase::Running;
                }
                (Phase::Starting, m) => out.error(
                    Some(&req.id),
                    ErrorCode::ServerNotInitialized,
                    &format!("{m} before `initialize`: the server is not initialized yet"),
                )?,
                (Phase::Running, "initialize") => {
                    out.error(Some(&req.id), ErrorCode::InvalidRequest, "the server is already initialized")?
                }
                (Phase::Running, "shutdown") => {
                    out.send(Message::Response(Response::new_ok(req.id, Value::Null)))?;
                    phase = Phase::ShutDown;
                }
                (Phase::Running, _) => {
                    if jobs.send((state.clone(), req)).is_err() {
                        return Err(io::Error::other("the request workers stopped"));
                    }
                }
                (Phase::ShutDown, m) => out.error(
                    Some(&req.id),
                    ErrorCode::InvalidRequest,
                    &format!("{m} after `shutdown`: the server only accepts `exit` now"),
                )?,
            },
            Incoming::Notification(n) if n.method == "exit" => {
                break if phase == Phase::ShutDown { Ending::Clean } else { Ending::Unclean };
            }
            Incoming::Notification(n) => {
                if phase != Phase::Running {
                    continue; // dropped, as the protocol asks, before `initialize` and after `shutdown`
                }
                for n in notify_guarded(&mut state, n) {
                    out.send(Message::Notification(n))?;
                }
            }
        }
    };
    // Workers finish what they hold and stop when the queue closes; none is waited
    // for (`exit` does not wait for answers nobody will read).
    drop((jobs, workers));
    Ok(ending)
}

/// Apply a notification under `catch_unwind`: a panic while checking a document is
/// published as an internal-error diagnostic of that document.
fn notify_guarded(state: &mut State, n: Notification) -> Vec<Notification> {
    let uri = n.params.pointer("/textDocument/uri").and_then(|u| serde_json::from_value::<Url>(u.clone()).ok());
    catch_unwind(AssertUnwindSafe(|| state.notify(n))).unwrap_or_else(|p| {
        let Some(uri) = uri else { return Vec::new() };
        let d = Diagnostic {
            severity: Some(DiagnosticSeverity::ERROR),
            source: Some("graft".into()),
            message: format!("internal error while checking: {}\nthis is a bug in graft", panic_text(&p)),
            ..Default::default()
        };
        vec![publish(uri, vec![d])]
    })
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

fn publish(uri: Url, diagnostics: Vec<Diagnostic>) -> Notification {
    Notification::new(
        PublishDiagnostics::METHOD.to_string(),
        PublishDiagnosticsParams { uri, diagnostics, version: None },
    )
}

/// The open documents. Cloning is cheap (the analyses are shared): a request runs
/// on a snapshot while later changes replace documents in the original.
#[derive(Default, Clone)]
pub struct State {
    docs: HashMap<Url, Arc<Analysis>>,
}

impl State {
    /// Check a document's new text; the notification that publishes its diagnostics.
    pub fn update(&mut self, uri: Url, text: String) -> Notification {
        let a = Analysis::new(uri.clone(), text, self.docs.get(&uri).map(|a| &**a));
        let n = publish(uri.clone(), a.diagnostics.clone());
        self.docs.insert(uri, Arc::new(a));
        n
    }

    pub fn doc(&self, uri: &Url) -> Option<&Analysis> {
        self.docs.get(uri).map(|a| &**a)
    }

    fn notify(&mut self, n: Notification) -> Vec<Notification> {
        let params = n.params;
        match n.method.as_str() {
            DidOpenTextDocument::METHOD => match serde_json::from_value::<DidOpenTextDocumentParams>(params) {
                Ok(p) => vec![self.update(p.text_document.uri, p.text_document.text)],
                Err(_) => Vec::new(),
            },
            DidChangeTextDocument::METHOD => match serde_json::from_value::<DidChangeTextDocumentParams>(params) {
                Ok(mut p) => match p.content_changes.pop() {
                    Some(c) => vec![self.update(p.text_document.uri, c.text)],
                    None => Vec::new(),
                },
                Err(_) => Vec::new(),
            },
            DidSaveTextDocument::METHOD => match serde_json::from_value::<DidSaveTextDocumentParams>(params) {
                // Files it imports may have changed on disk: check again.
                Ok(p) => match self.docs.get(&p.text_document.uri).map(|a| a.text.clone()) {
                    Some(text) => vec![self.update(p.text_document.uri, text)],
                    None => Vec::new(),
                },
                Err(_) => Vec::new(),
            },
            DidCloseTextDocument::METHOD => match serde_json::from_value::<DidCloseTextDocumentParams>(params) {
                Ok(p) => {
                    self.docs.remove(&p.text_document.uri);
                    vec![publish(p.text_document.uri, Vec::new())]
                }
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// Answer one request.
    pub fn request(&self, req: Request) -> Response {
        let id = req.id.clone();
        match self.answer(req) {
            Ok(v) => Response::new_ok(id, v),
            Err((code, msg)) => Response::new_err(id, code as i32, msg),
        }
    }

    fn answer(&self, req: Request) -> Result<Value, (ErrorCode, String)> {
        fn parse<P: serde::de::DeserializeOwned>(v: Value) -> Result<P, (ErrorCode, String)> {
            serde_json::from_value(v).map_err(|e| (ErrorCode::InvalidParams, e.to_string()))
        }
        let json = |v: Result<Value, serde_json::Error>| v.map_err(|e| (ErrorCode::InternalError, e.to_string()));
        fn doc<'a>(s: &'a State, uri: &Url) -> Result<&'a Analysis, (ErrorCode, String)> {
            s.docs.get(uri).map(|a| &**a).ok_or_else(|| (ErrorCode::InvalidParams, format!("{uri} is not open")))
        }
        match req.method.as_str() {
            HoverRequest::METHOD => {
                let p: HoverParams = parse(req.params)?;
                let d = doc(self, &p.text_document_position_params.text_document.uri)?;
                json(serde_json::to_value(super::hover::hover(d, p.text_document_position_params.position)))
            }
            GotoDefinition::METHOD => {
                let p: GotoDefinitionParams = parse(req.params)?;
                let d = doc(self, &p.text_document_position_params.text_document.uri)?;
                let loc = super::navigate::definition(d, p.text_document_position_params.position);
                json(serde_json::to_value(loc.map(GotoDefinitionResponse::Scalar)))
            }
            References::METHOD => {
                let p: ReferenceParams = parse(req.params)?;
                let d = doc(self, &p.text_document_position.text_document.uri)?;
                let pos = p.text_document_position.position;
                json(serde_json::to_value(super::navigate::references(d, pos, p.context.include_declaration)))
            }
            Completion::METHOD => {
                let p: CompletionParams = parse(req.params)?;
                let d = doc(self, &p.text_document_position.text_document.uri)?;
                let items = super::complete::complete(d, p.text_document_position.position);
                json(serde_json::to_value(CompletionResponse::Array(items)))
            }
            Formatting::METHOD => {
                let p: DocumentFormattingParams = parse(req.params)?;
                let d = doc(self, &p.text_document.uri)?;
                let edits = super::navigate::format(d).map_err(|e| (ErrorCode::RequestFailed, e))?;
                json(serde_json::to_value(edits))
            }
            DocumentSymbolRequest::METHOD => {
                let p: DocumentSymbolParams = parse(req.params)?;
                let d = doc(self, &p.text_document.uri)?;
                json(serde_json::to_value(DocumentSymbolResponse::Nested(super::navigate::symbols(d))))
            }
            SemanticTokensFullRequest::METHOD => {
                let p: SemanticTokensParams = parse(req.params)?;
                let d = doc(self, &p.text_document.uri)?;
                let toks = d.cst.as_ref().map(|t| super::tokens::classify(&d.text, t)).unwrap_or_default();
                json(serde_json::to_value(SemanticTokensResult::Tokens(super::tokens::encode(&d.text, &toks))))
            }
            #[cfg(test)]
            CRASH_TEST => panic!("crash test request"),
            m => Err((ErrorCode::MethodNotFound, format!("graft lsp does not implement {m}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::mpsc::{Receiver, Sender};
    use std::time::Duration;

    /// The server's output, a write at a time, to the test.
    struct ToTest(Sender<Vec<u8>>);

    impl Write for ToTest {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Client {
        input: std::io::PipeWriter,
        output: Receiver<Vec<u8>>,
        pending: Vec<u8>,
    }

    impl Client {
        fn send(&mut self, v: Value) {
            let body = v.to_string();
            write!(self.input, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        }

        /// The next message from the server, or a failure after a generous timeout (a
        /// hung server must not hang the test run).
        fn recv(&mut self) -> Value {
            loop {
                let text = String::from_utf8_lossy(&self.pending).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len: usize = head.trim_start_matches("Content-Length: ").parse().unwrap();
                    if rest.len() >= len {
                        let v = serde_json::from_str(&rest[..len]).unwrap();
                        self.pending = rest.as_bytes()[len..].to_vec();
                        return v;
                    }
                }
                let more =
                    self.output.recv_timeout(Duration::from_secs(60)).expect("the server answers within a minute");
                self.pending.extend(more);
            }
        }

        fn request(&mut self, id: i32, method: &str, params: Value) -> Value {
            self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
            loop {
                let m = self.recv();
                if m.get("id") == Some(&json!(id)) {
                    return m;
                }
            }
        }
    }

    #[test]
    fn a_panicking_request_is_answered_with_an_internal_error_and_the_session_goes_on() {
        let (reader, input) = std::io::pipe().unwrap();
        let (tx, output) = mpsc::channel();
        let session = std::thread::spawn(move || serve(io::BufReader::new(reader), Box::new(ToTest(tx))).unwrap());
        let mut client = Client { input, output, pending: Vec::new() };
        let init = client.request(1, "initialize", json!({ "capabilities": {} }));
        assert!(init.get("result").is_some(), "{init}");
        client.send(json!({ "jsonrpc": "2.0", "method": "initialized", "params": {} }));

        let crash = client.request(2, CRASH_TEST, json!({}));
        assert_eq!(crash["error"]["code"], json!(ErrorCode::InternalError as i32), "{crash}");
        assert!(crash["error"]["message"].as_str().unwrap().contains("crash test request"), "{crash}");

        // The same state still serves: open a document, then list its symbols.
        let uri = "file:///t/m.graft";
        let text = "model m {\n  input x: f32[B, 4]\n  output y = x\n}\n";
        let open = json!({ "textDocument": { "uri": uri, "languageId": "graft", "version": 1, "text": text } });
        client.send(json!({ "jsonrpc": "2.0", "method": "textDocument/didOpen", "params": open }));
        let symbols = client.request(3, "textDocument/documentSymbol", json!({ "textDocument": { "uri": uri } }));
        assert!(symbols.get("error").is_none(), "{symbols}");
        assert!(symbols["result"].to_string().contains("\"m\""));

        assert!(client.request(4, "shutdown", Value::Null).get("error").is_none());
        client.send(json!({ "jsonrpc": "2.0", "method": "exit" }));
        assert_eq!(session.join().unwrap(), Ending::Clean);
    }
}
