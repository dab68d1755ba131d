//! `graft fmt`: one canonical layout for spec files.
//!
//! The formatter prints the lossless tree ([`crate::syntax::cst`]) with the rules in
//! [`layout`]. It only changes whitespace: every token and comment comes out in the
//! same order with the same text. [`format_text`] checks exactly that on its own
//! output before returning it (a mismatch is a formatter bug, reported as such and
//! never written), so formatting cannot change what a spec means. A file with a
//! syntax error is refused with the diagnostics `graft check` gives.

mod layout;

use crate::diag::Diagnostics;
use crate::source::SourceMap;
use crate::syntax::cst::{self, Node, TokKind};
pub use layout::MAX_WIDTH;

/// Why a file was not formatted.
#[derive(Debug)]
pub enum FmtError {
    /// The file does not parse: the same diagnostics as `graft check`.
    Syntax(SourceMap, Diagnostics),
    /// The formatter would have changed a token: a bug in graft, nothing is written.
    Internal(String),
}

/// The canonical layout of `text` (a spec named `name` in diagnostics).
pub fn format_text(name: &str, text: &str) -> Result<String, FmtError> {
    let mut sources = SourceMap::new();
    let id = sources.add(name, None, text.to_string());
    if let Err(d) = crate::syntax::parse(id, text) {
        return Err(FmtError::Syntax(sources, d));
    }
    let tree =
        cst::build(text).ok_or_else(|| FmtError::Internal(format!("{name}: the concrete tree failed to build")))?;
    let out = print(text, &tree);
    let again = cst::build(&out)
        .ok_or_else(|| FmtError::Internal(format!("{name}: the formatted text does not parse again")))?;
    let (before, after) = (signature(text, &tree), signature(&out, &again));
    if before != after {
        let at = before.iter().zip(&after).position(|(a, b)| a != b).unwrap_or(before.len().min(after.len()));
        return Err(FmtError::Internal(format!(
            "{name}: formatting would change token {at} ({:?} → {:?})",
            before.get(at),
            after.get(at)
        )));
    }
    Ok(out)
}

/// Print a tree with the canonical layout (no checks).
fn print(text: &str, tree: &Node) -> String {
    let mut p = layout::Printer::new(text);
    p.node(tree, 0);
    p.finish()
}

/// The tokens and comments of a file in order, as text: what formatting must keep.
fn signature<'a>(text: &'a str, tree: &Node) -> Vec<&'a str> {
    let mut toks = Vec::new();
    tree.tokens(&mut toks);
    toks.iter()
        .map(|t| match t.kind {
            TokKind::LineComment => t.text(text).trim_end(),
            _ => t.text(text),
        })
        .collect()
}

/// A unified diff from `old` to `new` (what `graft fmt --check` prints).
pub fn diff(name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(&format!("{name} (current)"), &format!("{name} (formatted)"))
        .to_string()
}

/// The spec files named by `path`: the file itself, or every `.graft` file under a
/// directory (recursively, in name order). A directory named on the command line
/// may be a symlink; symlinked directories met during the walk are not entered (two
/// links to each other would make the walk endless), symlinked files are listed.
pub fn collect_specs(path: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    walk(path, out)
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let (ty, path) = (e.file_type()?, e.path());
        if ty.is_dir() {
            walk(&path, out)?;
        } else if ty.is_symlink() && path.is_dir() {
            continue;
        } else if path.extension().is_some_and(|x| x == "graft") {
            out.push(path);
        }
    }
    Ok(())
}
