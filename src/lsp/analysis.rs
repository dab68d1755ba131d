//! One open document, checked exactly like `graft check` checks a file.
//!
//! [`Analysis::new`] runs the library's front end and pipeline on the editor's text
//! (`load_str` + `check_program`, `use`s resolved against the file's directory) and
//! keeps what the requests need: the diagnostics converted for this document, the
//! loaded program (modules, sources), the compiled model (sites, parameters, types),
//! the document's own AST and lossless tree. A document that stops compiling while the
//! user types keeps its last good program and model for completion and hover.

use super::convert::{location, LineIndex};
use crate::diag::Diagnostics;
use crate::lower::Program;
use crate::pipeline::{Compiled, Failure};
use crate::source::SourceMap;
use crate::syntax::{ast, cst};
use lsp_types::{Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, NumberOrString, Url};
use std::path::PathBuf;
use std::sync::Arc;

/// What the server knows about one open document.
pub struct Analysis {
    pub uri: Url,
    /// The name diagnostics use for the document (its path).
    pub name: String,
    pub dir: Option<PathBuf>,
    pub text: String,
    /// Diagnostics of this text, converted for the document.
    pub diagnostics: Vec<Diagnostic>,
    /// The document's syntax tree, when it parses.
    pub ast: Option<ast::File>,
    pub cst: Option<cst::Node>,
    /// The program of this text, or of the last text that loaded.
    pub program: Option<Arc<Program>>,
    /// The compiled model of this text, or of the last text that compiled.
    pub compiled: Option<Arc<Compiled>>,
}

impl Analysis {
    /// Check `text`, the content of `uri`; `previous` lends its program and model when
    /// this text does not get that far.
    pub fn new(uri: Url, text: String, previous: Option<&Analysis>) -> Analysis {
        let path = uri.to_file_path().ok();
        let name = path.as_ref().map_or_else(|| uri.to_string(), |p| p.display().to_string());
        let dir = path.as_ref().and_then(|p| p.parent().map(|d| d.to_path_buf()));
        let mut program = previous.and_then(|p| p.program.clone());
        let mut compiled = previous.and_then(|p| p.compiled.clone());
        let mut diagnostics = Vec::new();
        match crate::lower::load_str(&name, dir.as_deref(), &text) {
            Err((sources, d)) => diagnostics = convert(&sources, &d, &uri, &name),
            Ok(prog) => {
                let prog = Arc::new(prog);
                program = Some(prog.clone());
                match crate::api::check_program((*prog).clone()) {
                    Ok(Some(c)) => compiled = Some(Arc::new(c)),
                    Ok(None) => compiled = None,
                    Err(Failure::User(sources, d)) => diagnostics = convert(&sources, &d, &uri, &name),
                    Err(Failure::Bug(e)) => diagnostics.push(Diagnostic {
                        range: Default::default(),
                        severity: Some(DiagnosticSeverity::ERROR),
                        source: Some("graft".into()),
                        message: format!("internal compiler error: {e}\nthis is a bug in graft, not in the spec"),
                        ..Default::default()
                    }),
                }
            }
        }
        let ast = crate::syntax::parse(crate::source::FileId(0), &text).ok();
        let cst = ast.as_ref().and_then(|_| cst::build(&text));
        Analysis { uri, name, dir, text, diagnostics, ast, cst, program, compiled }
    }

    pub fn index(&self) -> LineIndex<'_> {
        LineIndex::new(&self.text)
    }

    /// The program's sources, if a program loaded.
    pub fn sources(&self) -> Option<&SourceMap> {
        self.program.as_ref().map(|p| &p.sources)
    }
}

/// `check`'s diagnostics as LSP diagnostics of the document `uri`. A diagnostic whose
/// primary span lies in another file (a standard library module) is shown at the
/// document's span that led there (its first secondary label in the document), and
/// the other file's location is given as related information.
pub fn convert(sources: &SourceMap, diags: &Diagnostics, uri: &Url, name: &str) -> Vec<Diagnostic> {
    let doc = sources.files().find(|(_, f)| f.name == name).map(|(id, _)| id);
    let idx = doc.map(|id| LineIndex::new(&sources.get(id).text));
    let mut out = Vec::new();
    for d in &diags.items {
        let in_doc = |s: &crate::source::Span| Some(s.file) == doc;
        let anchor = match &d.primary {
            Some((s, label)) if in_doc(s) => Some((*s, label.clone())),
            _ => d.secondary.iter().find(|(s, _)| in_doc(s)).cloned(),
        };
        let range = match (&anchor, &idx) {
            (Some((s, _)), Some(idx)) => idx.range(s.start as usize, s.end as usize),
            _ => Default::default(),
        };
        let mut message = d.message.clone();
        if let Some((_, label)) = &anchor {
            if !label.is_empty() {
                message.push_str(&format!("\n{label}"));
            }
        }
        if let Some(h) = &d.hint {
            message.push_str(&format!("\nhint: {h}"));
        }
        let mut related = Vec::new();
        let labels = d.primary.iter().chain(&d.secondary);
        for (s, label) in labels {
            if anchor.as_ref().is_some_and(|(a, _)| a == s) {
                continue;
            }
            if let Some(loc) = location(sources, *s, uri, name) {
                related.push(DiagnosticRelatedInformation { location: loc, message: label.clone() });
            }
        }
        out.push(Diagnostic {
            range,
            severity: Some(DiagnosticSeverity::ERROR),
            code: Some(NumberOrString::String(d.code.to_string())),
            source: Some("graft".into()),
            message,
            related_information: (!related.is_empty()).then_some(related),
            ..Default::default()
        });
    }
    out
}
