//! The server loop: JSON-RPC over stdio (lsp-server), one [`Analysis`] per open
//! document, requests answered from it. Every request and notification runs inside
//! `catch_unwind`: a panic answers that one request with an internal error (or, for a
//! document change, publishes an internal-error diagnostic) and the session goes on.

use super::analysis::Analysis;
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
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
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Errors that end the session (the connection broke or the client spoke nonsense).
pub type ServerError = Box<dyn std::error::Error + Send + Sync>;

/// A request that panics, for the test of the server's recovery; it exists only in the
/// crate's own test build (a shipped server answers it as any unknown method).
#[cfg(test)]
const CRASH_TEST: &str = "graft/crashTest";

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

/// Serve one client over stdin/stdout until it sends `exit`.
pub fn run_stdio() -> Result<(), ServerError> {
    let (conn, io) = Connection::stdio();
    serve(&conn)?;
    drop(conn);
    io.join()?;
    Ok(())
}

/// Serve one client on a connection (stdio, or in memory for tests).
pub fn serve(conn: &Connection) -> Result<(), ServerError> {
    conn.initialize(serde_json::to_value(capabilities())?)?;
    let mut state = State::default();
    for msg in &conn.receiver {
        match msg {
            Message::Request(req) => {
                if conn.handle_shutdown(&req)? {
                    return Ok(());
                }
                let id = req.id.clone();
                let resp = catch_unwind(AssertUnwindSafe(|| state.request(req))).unwrap_or_else(|p| {
                    Response::new_err(
                        id,
                        ErrorCode::InternalError as i32,
                        format!("internal error: {}", panic_text(&p)),
                    )
                });
                conn.sender.send(Message::Response(resp))?;
            }
            Message::Notification(n) => {
                let uri =
                    n.params.pointer("/textDocument/uri").and_then(|u| serde_json::from_value::<Url>(u.clone()).ok());
                let out = catch_unwind(AssertUnwindSafe(|| state.notify(n))).unwrap_or_else(|p| {
                    let Some(uri) = uri else { return Vec::new() };
                    let d = Diagnostic {
                        severity: Some(DiagnosticSeverity::ERROR),
                        source: Some("graft".into()),
                        message: format!("internal error while checking: {}\nthis is a bug in graft", panic_text(&p)),
                        ..Default::default()
                    };
                    vec![publish(uri, vec![d])]
                });
                for n in out {
                    conn.sender.send(Message::Notification(n))?;
                }
            }
            Message::Response(_) => {}
        }
    }
    Ok(())
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

#[derive(Default)]
pub struct State {
    docs: HashMap<Url, Analysis>,
}

impl State {
    /// Check a document's new text; the notification that publishes its diagnostics.
    pub fn update(&mut self, uri: Url, text: String) -> Notification {
        let a = Analysis::new(uri.clone(), text, self.docs.get(&uri));
        let n = publish(uri.clone(), a.diagnostics.clone());
        self.docs.insert(uri, a);
        n
    }

    pub fn doc(&self, uri: &Url) -> Option<&Analysis> {
        self.docs.get(uri)
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
    pub fn request(&mut self, req: Request) -> Response {
        let id = req.id.clone();
        match self.answer(req) {
            Ok(v) => Response::new_ok(id, v),
            Err((code, msg)) => Response::new_err(id, code as i32, msg),
        }
    }

    fn answer(&mut self, req: Request) -> Result<Value, (ErrorCode, String)> {
        fn parse<P: serde::de::DeserializeOwned>(v: Value) -> Result<P, (ErrorCode, String)> {
            serde_json::from_value(v).map_err(|e| (ErrorCode::InvalidParams, e.to_string()))
        }
        let json = |v: Result<Value, serde_json::Error>| v.map_err(|e| (ErrorCode::InternalError, e.to_string()));
        fn doc<'a>(s: &'a State, uri: &Url) -> Result<&'a Analysis, (ErrorCode, String)> {
            s.docs.get(uri).ok_or_else(|| (ErrorCode::InvalidParams, format!("{uri} is not open")))
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
    use std::time::Duration;

    /// The next message from the server, or a failure after a generous timeout (a hung
    /// server must not hang the test run).
    fn recv(client: &Connection) -> Message {
        client.receiver.recv_timeout(Duration::from_secs(60)).expect("the server answers within a minute")
    }

    fn request(client: &Connection, id: i32, method: &str, params: Value) -> Response {
        client.sender.send(Message::Request(Request::new(id.into(), method.into(), params))).unwrap();
        loop {
            if let Message::Response(r) = recv(client) {
                assert_eq!(r.id, id.into());
                return r;
            }
        }
    }

    #[test]
    fn a_panicking_request_is_answered_with_an_internal_error_and_the_session_goes_on() {
        let (server, client) = Connection::memory();
        let session = std::thread::spawn(move || serve(&server).map_err(|e| e.to_string()));
        let init = request(&client, 1, "initialize", json!({ "capabilities": {} }));
        assert!(init.result.is_some(), "{init:?}");
        client.sender.send(Message::Notification(Notification::new("initialized".into(), json!({})))).unwrap();

        let crash = request(&client, 2, CRASH_TEST, json!({}));
        let err = crash.error.expect("an error response");
        assert_eq!(err.code, ErrorCode::InternalError as i32);
        assert!(err.message.contains("crash test request"), "{}", err.message);

        // The same state still serves: open a document, then list its symbols.
        let uri = "file:///t/m.graft";
        let text = "model m {\n  input x: f32[B, 4]\n  output y = x\n}\n";
        let open = json!({ "textDocument": { "uri": uri, "languageId": "graft", "version": 1, "text": text } });
        client.sender.send(Message::Notification(Notification::new("textDocument/didOpen".into(), open))).unwrap();
        let symbols = request(&client, 3, "textDocument/documentSymbol", json!({ "textDocument": { "uri": uri } }));
        assert!(symbols.error.is_none(), "{symbols:?}");
        assert!(symbols.result.unwrap().to_string().contains("\"m\""));

        assert!(request(&client, 4, "shutdown", Value::Null).error.is_none());
        client.sender.send(Message::Notification(Notification::new("exit".into(), Value::Null))).unwrap();
        session.join().unwrap().unwrap();
    }
}
