//! Byte offsets ↔ LSP positions (line, UTF-16 column), files ↔ URIs.

use crate::source::{SourceMap, Span};
use lsp_types::{Location, Position, Range, Url};
use std::path::PathBuf;

/// Line starts of one text, for position conversions.
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let col: usize = self.text.get(start..offset).map_or(0, |s| s.chars().map(char::len_utf16).sum());
        Position::new(line as u32, col as u32)
    }

    pub fn range(&self, start: usize, end: usize) -> Range {
        Range::new(self.position(start), self.position(end))
    }

    /// The byte offset of a position (clamped to the line and the text).
    pub fn offset(&self, p: Position) -> usize {
        let Some(&start) = self.starts.get(p.line as usize) else { return self.text.len() };
        let end = self.starts.get(p.line as usize + 1).map_or(self.text.len(), |&e| e - 1);
        let mut units = 0u32;
        for (i, c) in self.text[start..end].char_indices() {
            if units >= p.character {
                return start + i;
            }
            units += c.len_utf16() as u32;
        }
        end
    }
}

/// The standard library as files on disk, so that editors can open a definition in
/// it: written once per content into a cache directory, read-only.
pub fn std_file(name: &str) -> Option<PathBuf> {
    let (_, text) = crate::lower::load::STD.iter().find(|(n, _)| *n == name)?;
    let hash = crate::rng::hash_str(text);
    let dir = std::env::temp_dir().join(format!("graft-std-{hash:016x}"));
    let path = dir.join(format!("{name}.graft"));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(*text) {
        std::fs::create_dir_all(&dir).ok()?;
        crate::durable::write_atomic(&path, text.as_bytes()).ok()?;
        if let Ok(meta) = std::fs::metadata(&path) {
            let mut perms = meta.permissions();
            perms.set_readonly(true);
            let _ = std::fs::set_permissions(&path, perms);
        }
    }
    Some(path)
}

/// The URI of a file of a compilation: the document itself, an imported file, or a
/// standard library file.
pub fn file_uri(sources: &SourceMap, file: crate::source::FileId, doc: &Url, doc_name: &str) -> Option<Url> {
    let f = sources.get(file);
    if f.name == doc_name {
        return Some(doc.clone());
    }
    if let Some(std) = f.name.strip_prefix("<std>/").and_then(|n| n.strip_suffix(".graft")) {
        return Url::from_file_path(std_file(std)?).ok();
    }
    let dir = f.dir.as_ref()?;
    let base = std::path::Path::new(&f.name).file_name()?;
    Url::from_file_path(dir.join(base)).ok()
}

/// A span of a compilation as an LSP location.
pub fn location(sources: &SourceMap, span: Span, doc: &Url, doc_name: &str) -> Option<Location> {
    let uri = file_uri(sources, span.file, doc, doc_name)?;
    let idx = LineIndex::new(&sources.get(span.file).text);
    Some(Location::new(uri, idx.range(span.start as usize, span.end as usize)))
}
