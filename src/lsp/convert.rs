//! Byte offsets ↔ LSP positions (line, UTF-16 column), files ↔ URIs.

use crate::source::{SourceMap, Span};
use lsp_types::{Location, Position, Range, Url};
use std::path::{Path, PathBuf};

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
/// it: written once per content into the user's private cache ([`std_file_in`]
/// under `$XDG_CACHE_HOME`, else `~/.cache`, else the temporary directory), read-only.
pub fn std_file(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.filter(|h| h.is_absolute()).map(|h| h.join(".cache")));
    match cache {
        Some(c) => std_file_in(&c.join("graft"), name).ok(),
        None => std_file_in(&std::env::temp_dir().join(format!("graft-{}", crate::input_file::user_id())), name).ok(),
    }
}

/// The std file `name` under `base/std/<hash of its text>/`. `base` (and `std/`
/// under it) is created owner-only (0700) and used only if it is a directory (not a
/// symlink) owned by this user that no one else can write to; the file is written
/// atomically and read back only as a regular file, so nothing another user planted
/// (a FIFO, a link, other text) is ever opened or shown.
pub fn std_file_in(base: &Path, name: &str) -> std::io::Result<PathBuf> {
    let (_, text) = crate::lower::load::STD
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no std module {name}")))?;
    let hash = crate::rng::hash_str(text);
    let dir = base.join("std").join(format!("{hash:016x}"));
    if let Some(parent) = base.parent() {
        std::fs::create_dir_all(parent)?;
    }
    for d in [base.to_path_buf(), base.join("std"), dir.clone()] {
        crate::input_file::private_dir(&d)?;
    }
    let path = dir.join(format!("{name}.graft"));
    let current = crate::input_file::read_limited(&path, text.len()).ok();
    if current.as_deref() != Some(text.as_bytes()) {
        crate::durable::write_atomic(&path, text.as_bytes()).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut perms = std::fs::metadata(&path)?.permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&path, perms)?;
    }
    Ok(path)
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
