//! The normalisation a model input declares (`input image: f32[B, 3, 224, 224]
//! normalized imagenet`): resolved to numbers here, so `graft check` rejects an unknown
//! name or a malformed list, and later checked against a dataset's recorded transform
//! (`graft train`, `eval`, `data check --spec`) before step 1.
//!
//! Names: the image statistics `graft data import` knows (`imagenet`, `clip`, `none`)
//! and `audioset`, the filter-bank statistics of the AST feature extractor.

use crate::diag::Diagnostic;
use crate::ir::{Dim, PixelNorm};
use crate::source::Span;
use crate::stats::{AST_MEAN, AST_STD, NAMED_STATS};
use crate::syntax::ast::InputNorm;

/// What an input expects: `(x − mean) / std` per channel, in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalized {
    /// The name as written, when named.
    pub name: Option<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The declaration, for messages.
    pub span: Span,
}

impl Normalized {
    /// `imagenet`, or `mean [..] std [..]`.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} (mean {:?}, std {:?})", self.mean, self.std),
            None => format!("mean {:?} std {:?}", self.mean, self.std),
        }
    }
}

/// The statistics a spec may name, with their numbers: the image ones whose names are
/// identifiers (`0.5` is written as numbers in a spec: `mean [0.5, 0.5, 0.5] std [0.5,
/// 0.5, 0.5]`), and `audioset`.
fn named() -> impl Iterator<Item = (&'static str, Vec<f32>, Vec<f32>)> {
    NAMED_STATS
        .iter()
        .filter(|(n, _, _)| n.parse::<f64>().is_err())
        .map(|(n, m, s)| (*n, m.to_vec(), s.to_vec()))
        .chain([("audioset", vec![AST_MEAN], vec![AST_STD])])
}

/// The raw form the input takes besides normalised f32 ([`PixelNorm`]): none for the
/// filter-bank statistics (`audioset`: audio is never pixels); the diagnostic when no
/// dim of the input holds one value per channel.
pub fn pixels(n: &Normalized, shape: &[Dim]) -> Result<Option<PixelNorm>, Box<Diagnostic>> {
    if n.name.as_deref() == Some("audioset") {
        return Ok(None);
    }
    let fixed: Vec<Option<i64>> = shape.iter().map(Dim::fixed).collect();
    PixelNorm::over(&n.mean, &n.std, &fixed).map(Some).ok_or_else(|| {
        Box::new(
            Diagnostic::error(
                "E0510",
                format!("normalisation for {} channels, but the input has no dim of that size", n.mean.len()),
            )
            .at(n.span, format!("no dim after the batch is {}", n.mean.len()))
            .hint("give one mean and one std per channel, e.g. `[B, 3, 224, 224]` with three of each"),
        )
    })
}

/// Resolve a declaration; the diagnostic when it is unknown or malformed.
pub fn resolve(n: &InputNorm, decl: Span) -> Result<Normalized, Box<Diagnostic>> {
    match n {
        InputNorm::Named(id) => {
            let (_, mean, std) = named().find(|(n, _, _)| *n == id.name).ok_or_else(|| -> Box<Diagnostic> {
                let names: Vec<&str> = named().map(|(n, _, _)| n).collect();
                Box::new(
                    Diagnostic::error("E0510", format!("unknown normalisation `{}`", id.name))
                        .at(id.span, format!("expected one of {}", names.join(", ")))
                        .hint("or give the numbers: `normalized mean [0.5, 0.5, 0.5] std [0.5, 0.5, 0.5]`"),
                )
            })?;
            Ok(Normalized { name: Some(id.name.clone()), mean, std, span: decl })
        }
        InputNorm::Stats { mean, std, span } => {
            let bad = |why: &str| {
                Box::new(
                    Diagnostic::error("E0510", format!("unusable normalisation: {why}"))
                        .at(*span, "one mean and one positive std per channel")
                        .hint("write `normalized mean [0.485, 0.456, 0.406] std [0.229, 0.224, 0.225]`"),
                )
            };
            if mean.len() != std.len() {
                return Err(bad(&format!("{} means and {} stds", mean.len(), std.len())));
            }
            let (m, s) = (mean.clone(), std.clone());
            if m.iter().any(|x| !x.is_finite()) || s.iter().any(|x| !x.is_finite() || *x <= 0.0) {
                return Err(bad("a mean that is not a finite number, or a std that is not positive"));
            }
            Ok(Normalized { name: None, mean: m, std: s, span: decl })
        }
    }
}
