//! What `graft data import` reads: the list of samples (a file, a member of a tar, a
//! folder of frames) with their labels and class names, from
//!
//! - a class-folder tree `ROOT/CLASS/…` (torchvision's `ImageFolder`: class names are
//!   the sorted sub-directories, files found by a sorted recursive walk, symlinks
//!   followed; a class without a single usable file is an error, as there);
//! - a manifest, CSV (`path,label[,split]`, an optional header row naming those
//!   columns) or JSONL (`{"path": …, "label": …, "split": …}`), paths relative to the
//!   manifest; integer labels are class indices, any other labels are class names
//!   (sorted);
//! - WebDataset tar shards (a `.tar` or a folder of them, sorted): files sharing a
//!   key (the path up to the first `.` of the file name) form a sample, `KEY.cls`
//!   holding its class index in ASCII.
//!
//! A sample that cannot be listed properly (a missing manifest path, a tar sample
//! without a `.cls`) is a [`Skip`] with its reason, never a silent wrong label.

use super::error::DataError;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where one sample's bytes are.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemSource {
    File(PathBuf),
    /// `len` bytes at `offset` of a tar file.
    TarMember {
        tar: PathBuf,
        offset: u64,
        len: u64,
    },
    /// A folder of frame images (video).
    FrameDir(PathBuf),
}

/// One sample to import.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// How reports name it (a path, or `TAR:KEY`).
    pub name: String,
    pub source: ItemSource,
    pub label: usize,
}

/// A sample left out, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Skip {
    pub item: String,
    pub reason: String,
}

/// Everything found.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub items: Vec<Item>,
    pub class_names: Vec<String>,
    pub skipped: Vec<Skip>,
}

/// The layout of what is imported.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `ROOT/CLASS/…`
    Folder,
    /// A `.csv` or `.jsonl` file.
    Manifest,
    /// A `.tar` file or a folder of them.
    Webdataset,
}

/// The layout a path looks like: a `.csv`/`.jsonl` file, a `.tar` file or a folder
/// holding `.tar` files and no sub-folder, else a class-folder tree.
pub fn detect(root: &Path) -> Layout {
    let ext = |p: &Path| p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if root.is_file() {
        return if ext(root) == "tar" { Layout::Webdataset } else { Layout::Manifest };
    }
    let entries: Vec<PathBuf> =
        std::fs::read_dir(root).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    if !entries.is_empty() && entries.iter().all(|p| !p.is_dir()) && entries.iter().any(|p| ext(p) == "tar") {
        Layout::Webdataset
    } else {
        Layout::Folder
    }
}

fn io(path: &Path, e: std::io::Error) -> DataError {
    DataError::io(path, e)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| io(dir, e)))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

/// A class-folder tree. `is_sample` picks sample files; with `frame_dirs`, a
/// sub-folder holding image files is one sample (a video as extracted frames).
pub fn list_folder(root: &Path, is_sample: fn(&str) -> bool, frame_dirs: bool) -> Result<Listing, DataError> {
    let classes: Vec<PathBuf> = sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: no class folders (expected ROOT/CLASS/FILE, as torchvision's ImageFolder reads)",
            root.display()
        )));
    }
    let mut out = Listing::default();
    for (label, class_dir) in classes.iter().enumerate() {
        let name = class_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let before = out.items.len();
        let mut stack = vec![class_dir.clone()];
        // Python's sorted(os.walk(…)): folders in path order, files sorted in each.
        let mut dirs = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(d) = stack.pop() {
            // A symlink loop is walked once.
            if !seen.insert(std::fs::canonicalize(&d).unwrap_or_else(|_| d.clone())) {
                continue;
            }
            let entries = sorted_entries(&d)?;
            let is_frames = frame_dirs
                && d != *class_dir
                && entries.iter().any(|p| p.is_file() && super::decode::is_image_name(&p.to_string_lossy()));
            if is_frames {
                dirs.push((d.to_string_lossy().into_owned(), vec![ItemSource::FrameDir(d.clone())]));
                continue;
            }
            let files: Vec<ItemSource> = entries
                .iter()
                .filter(|p| p.is_file() && p.file_name().is_some_and(|n| is_sample(&n.to_string_lossy())))
                .map(|p| ItemSource::File(p.clone()))
                .collect();
            dirs.push((d.to_string_lossy().into_owned(), files));
            stack.extend(entries.into_iter().filter(|p| p.is_dir()));
        }
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        for source in dirs.into_iter().flat_map(|(_, f)| f) {
            let name = match &source {
                ItemSource::File(p) | ItemSource::FrameDir(p) => p.display().to_string(),
                ItemSource::TarMember { tar, .. } => tar.display().to_string(),
            };
            out.items.push(Item { name, source, label });
        }
        if out.items.len() == before {
            return Err(DataError::Invalid(format!(
                "{}: class folder `{name}` holds no file graft can import (torchvision's ImageFolder refuses this too): remove it or add samples",
                class_dir.display()
            )));
        }
        out.class_names.push(name);
    }
    Ok(out)
}

/// Split one CSV line (double quotes, `""` inside them).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(s) = out.last_mut() {
                    s.push('"');
                }
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            _ => {
                if let Some(s) = out.last_mut() {
                    s.push(c);
                }
            }
        }
    }
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

/// A CSV or JSONL manifest; rows of another `split` than `split` are left out.
pub fn list_manifest(path: &Path, split: Option<&str>) -> Result<Listing, DataError> {
    let bytes = crate::input_file::read_limited(path, 1 << 30).map_err(|e| io(path, e))?;
    let text =
        String::from_utf8(bytes).map_err(|_| DataError::Meta { path: path.into(), msg: "not UTF-8 text".into() })?;
    let jsonl = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"));
    let base = path.parent().unwrap_or(Path::new("."));
    let bad =
        |line: usize, msg: String| DataError::Meta { path: path.to_path_buf(), msg: format!("line {line}: {msg}") };
    let mut rows: Vec<(usize, String, String)> = Vec::new();
    let mut columns = (0usize, 1usize, Some(2usize));
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (p, label, sp) = if jsonl {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(n, format!("not JSON: {e}")))?;
            let field = |k: &str| match v.get(k) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(x)) => Some(x.to_string()),
                _ => None,
            };
            let p = field("path").ok_or_else(|| bad(n, "expected {\"path\": …, \"label\": …}".into()))?;
            let l = field("label").ok_or_else(|| bad(n, "no \"label\" (a class index or name)".into()))?;
            (p, l, field("split"))
        } else {
            let f = csv_fields(line);
            if rows.is_empty() && f.iter().any(|x| x == "path") && f.iter().any(|x| x == "label") {
                let at = |k: &str| f.iter().position(|x| x == k);
                columns = (at("path").unwrap_or(0), at("label").unwrap_or(1), at("split"));
                continue;
            }
            let get = |k: usize| f.get(k).cloned().filter(|s| !s.is_empty());
            let (Some(p), Some(l)) = (get(columns.0), get(columns.1)) else {
                return Err(bad(n, "expected path,label[,split]".into()));
            };
            (p, l, columns.2.and_then(get))
        };
        if split.is_some_and(|want| sp.as_deref() != Some(want)) {
            continue;
        }
        rows.push((n, p, label));
    }
    let numeric = rows.iter().all(|r| r.2.parse::<usize>().is_ok());
    let class_names: Vec<String> = if numeric {
        let max = rows.iter().filter_map(|r| r.2.parse::<usize>().ok()).max();
        (0..max.map_or(0, |m| m + 1)).map(|c| c.to_string()).collect()
    } else {
        let set: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    };
    if numeric && class_names.len() > crate::bounds::MAX_CLASSES as usize {
        return Err(DataError::Meta {
            path: path.into(),
            msg: format!("label {} is too large", class_names.len() - 1),
        });
    }
    let mut out = Listing { class_names, ..Listing::default() };
    for (n, p, l) in rows {
        let label = if numeric { l.parse().unwrap_or(0) } else { out.class_names.binary_search(&l).unwrap_or(0) };
        let file = base.join(&p);
        let name = format!("{}:{n}: {p}", path.display());
        if file.is_dir() {
            out.items.push(Item { name, source: ItemSource::FrameDir(file), label });
        } else {
            out.items.push(Item { name, source: ItemSource::File(file), label });
        }
    }
    if out.items.is_empty() {
        let which = split.map(|s| format!(" of split `{s}`")).unwrap_or_default();
        return Err(DataError::Meta { path: path.into(), msg: format!("no rows{which}") });
    }
    Ok(out)
}

/// WebDataset tars; `is_sample` picks the member extension that holds the sample.
pub fn list_webdataset(root: &Path, is_sample: fn(&str) -> bool) -> Result<Listing, DataError> {
    let tars: Vec<PathBuf> = if root.is_file() {
        vec![root.to_path_buf()]
    } else {
        sorted_entries(root)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "tar")).collect()
    };
    let mut samples: Vec<(String, Option<ItemSource>, Option<String>)> = Vec::new();
    let mut out = Listing::default();
    for tar in &tars {
        let f = crate::input_file::open_regular(tar).map_err(|e| io(tar, e))?;
        let mut archive = tar::Archive::new(f);
        let mut groups: BTreeMap<String, (Option<ItemSource>, Option<String>)> = BTreeMap::new();
        let mut order = Vec::new();
        let entries = archive.entries().map_err(|e| io(tar, e))?;
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    out.skipped.push(Skip { item: tar.display().to_string(), reason: format!("unreadable tar: {e}") });
                    break;
                }
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            let (dir, file) = path.rsplit_once('/').map_or(("", path.as_str()), |(d, f)| (d, f));
            let Some((stem, ext)) = file.split_once('.') else { continue };
            let key = if dir.is_empty() { stem.to_string() } else { format!("{dir}/{stem}") };
            let slot = groups.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                (None, None)
            });
            let ext = ext.to_ascii_lowercase();
            if ext == "cls" {
                let mut s = String::new();
                let _ = entry.by_ref().take(64).read_to_string(&mut s);
                slot.1 = Some(s.trim().to_string());
            } else if is_sample(file) && slot.0.is_none() {
                let offset = entry.raw_file_position();
                slot.0 = Some(ItemSource::TarMember { tar: tar.clone(), offset, len: entry.size() });
            }
        }
        for key in order {
            let (src, cls) = groups.remove(&key).unwrap_or_default();
            samples.push((format!("{}:{key}", tar.display()), src, cls));
        }
    }
    let mut max = None;
    for (name, src, cls) in samples {
        let Some(source) = src else {
            out.skipped.push(Skip { item: name, reason: "no sample file with this key".into() });
            continue;
        };
        let label = match cls.as_deref().map(str::parse::<usize>) {
            Some(Ok(l)) if l < crate::bounds::MAX_CLASSES as usize => l,
            Some(_) => {
                let reason = format!("`.cls` holds `{}`, not a class index", cls.unwrap_or_default());
                out.skipped.push(Skip { item: name, reason });
                continue;
            }
            None => {
                out.skipped.push(Skip { item: name, reason: "no `.cls` label".into() });
                continue;
            }
        };
        max = max.max(Some(label));
        out.items.push(Item { name, source, label });
    }
    out.class_names = (0..max.map_or(0, |m| m + 1)).map(|c| c.to_string()).collect();
    if out.items.is_empty() {
        return Err(DataError::Invalid(format!("{}: no WebDataset sample with a label", root.display())));
    }
    Ok(out)
}

/// The bytes of a file or tar member (at most `max`; a larger one is an error).
pub fn read_source(source: &ItemSource, max: u64) -> Result<Vec<u8>, String> {
    match source {
        ItemSource::File(p) => {
            let bytes = crate::input_file::read_limited(p, max as usize).map_err(|e| e.to_string())?;
            if bytes.len() as u64 > max {
                return Err(format!("larger than {} MiB", max >> 20));
            }
            Ok(bytes)
        }
        ItemSource::TarMember { tar, offset, len } => {
            if *len > max {
                return Err(format!("larger than {} MiB", max >> 20));
            }
            let mut f = crate::input_file::open_regular(tar).map_err(|e| e.to_string())?;
            f.seek(SeekFrom::Start(*offset)).map_err(|e| e.to_string())?;
            let mut v = vec![0u8; *len as usize];
            f.read_exact(&mut v).map_err(|e| format!("truncated tar member: {e}"))?;
            Ok(v)
        }
        ItemSource::FrameDir(d) => Err(format!("{} is a folder", d.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_quote() {
        assert_eq!(csv_fields(r#"a,"b, c",d"#), vec!["a", "b, c", "d"]);
        assert_eq!(csv_fields(r#""say ""hi""",1"#), vec!["say \"hi\"", "1"]);
    }
}
