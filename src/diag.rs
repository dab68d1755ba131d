//! User-facing diagnostics.
//!
//! A [`Diagnostic`] is a user error with a primary span, optional
//! secondary spans and a hint. Every layer of the compiler reports into a
//! [`Diagnostics`] list instead of stopping at the first error; rendering happens in
//! one place ([`render`]) so that the CLI and the snapshot tests show the same text.
//! Compiler bugs are not diagnostics: they are `ir::VerifyError`s.

use crate::source::{SourceMap, Span};
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, termcolor};

/// One user-facing message.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Stable short code, e.g. `E0201`; grouped by layer (see `codes`).
    pub code: &'static str,
    pub message: String,
    /// Primary location and what is wrong there (`None` for whole-file problems).
    pub primary: Option<(Span, String)>,
    pub secondary: Vec<(Span, String)>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic { code, message: message.into(), primary: None, secondary: Vec::new(), hint: None }
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.primary = Some((span, label.into()));
        self
    }

    pub fn also(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }
}

/// An accumulating list of diagnostics.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn has_errors(&self) -> bool {
        !self.items.is_empty()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics { items: vec![d] }
    }
}

/// Rendered text after which the remaining diagnostics are only counted.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

/// Render diagnostics as text, `file:line:col`, the source line, a caret and the hint.
pub fn render(sources: &SourceMap, diags: &Diagnostics, color: bool) -> String {
    let mut files = SimpleFiles::new();
    for (_, f) in sources.files() {
        files.add(f.name.clone(), f.text.clone());
    }
    let config = term::Config::default();
    let mut out: Vec<u8> = Vec::new();
    for (i, d) in diags.items.iter().enumerate() {
        // Each diagnostic prints its whole source line: on pathological inputs (a long
        // line, hundreds of errors) stop once the report is long enough to be read.
        if out.len() > MAX_RENDERED_BYTES {
            let rest = diags.items.len() - i;
            out.extend_from_slice(
                format!("... and {rest} more diagnostic{} not shown\n", if rest == 1 { "" } else { "s" }).as_bytes(),
            );
            break;
        }
        let mut cs = CsDiagnostic::error().with_code(d.code).with_message(&d.message);
        let mut labels = Vec::new();
        if let Some((span, label)) = &d.primary {
            labels
                .push(Label::primary(span.file.0 as usize, span.start as usize..span.end as usize).with_message(label));
        }
        for (span, label) in &d.secondary {
            labels.push(
                Label::secondary(span.file.0 as usize, span.start as usize..span.end as usize).with_message(label),
            );
        }
        cs = cs.with_labels(labels);
        if let Some(h) = &d.hint {
            cs = cs.with_notes(vec![format!("hint: {h}")]);
        }
        if color {
            let mut buf = termcolor::Ansi::new(&mut out);
            let _ = term::emit_to_write_style(&mut buf, &config, &files, &cs);
        } else {
            let mut buf = termcolor::NoColor::new(&mut out);
            let _ = term::emit_to_write_style(&mut buf, &config, &files, &cs);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
