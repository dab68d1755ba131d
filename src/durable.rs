//! Durable file writes: the one way graft puts a file on disk.
//!
//! A reader (another process, or graft after a crash or power loss) sees either the
//! old file or the complete new one, never a prefix. The sequence is the one SQLite
//! and PostgreSQL use: write a temporary file in the destination's directory, fsync
//! it, rename it over the destination, fsync the directory so the rename itself is
//! on disk.
//!
//! - [`write_atomic`] writes a byte buffer; [`write_atomic_with`] lets a closure
//!   stream into the file (through a buffered writer) instead of building the bytes
//!   in memory first; [`rewrite_atomic`] replaces a user's file in place (through a
//!   symlink, keeping the mode), as `graft fmt` does.
//! - Temporary names stay within 255 bytes, whatever the destination's name.
//! - [`StagedDir`] writes a *set* of files that must appear together: each file is
//!   written and synced inside a private staging directory, and
//!   [`StagedDir::publish`] renames the whole directory into place in one step.
//! - [`sync_dir`] makes a directory's entries (creations, renames, removals) durable.
//!
//! Every step passes a [`crate::fault::point`], where tests inject a crash or a full
//! disk.
//!
//! Errors are [`WriteError`]s naming the destination path and the step that failed.
//! Nothing here knows about tensors or backends.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A write that did not complete; the destination is untouched.
#[derive(Debug, thiserror::Error)]
#[error("{}: {step}: {source}", path.display())]
pub struct WriteError {
    /// The file or directory that was being written.
    pub path: PathBuf,
    /// The step that failed ("writing", "renaming into place", …).
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

impl WriteError {
    fn new(path: &Path, step: &'static str, source: io::Error) -> WriteError {
        WriteError { path: path.to_path_buf(), step, source }
    }
}

/// Write `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Write `path` atomically and durably from a closure that streams into the file.
/// If the closure fails, the temporary file is removed and `path` is untouched.
pub fn write_atomic_with<F>(path: &Path, fill: F) -> Result<(), WriteError>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    replace_with(path, None, fill)
}

/// Rewrite an existing file atomically and durably, the way an editor saves: a
/// symlink is followed to the file it names (the link stays a link and the target
/// gets the new text), and the file keeps its permission bits (a 0600 spec stays
/// 0600).
pub fn rewrite_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let target = std::fs::canonicalize(path).map_err(|e| WriteError::new(path, "resolving the file's links", e))?;
    let perms = std::fs::metadata(&target).map_err(|e| WriteError::new(&target, "reading its permissions", e))?;
    replace_with(&target, Some(perms.permissions()), |w| w.write_all(bytes))
}

fn replace_with<F>(path: &Path, perms: Option<std::fs::Permissions>, fill: F) -> Result<(), WriteError>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| WriteError::new(path, "choosing a temporary name", io::Error::other("not a file path")))?;
    let tmp = dir.join(temp_name(&name.to_string_lossy()));
    let result = write_synced(&tmp, perms, fill)
        .and_then(|()| crate::fault::point("rename").map_err(|e| ("renaming into place", e)))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| ("renaming into place", e)))
        .and_then(|()| crate::fault::point("sync dir").map_err(|e| ("syncing the directory", e)));
    if let Err((step, e)) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(WriteError::new(path, step, e));
    }
    sync_dir(dir).map_err(|e| WriteError { path: path.to_path_buf(), ..e })
}

/// Make the entries of `dir` durable (a no-op where directories cannot be opened).
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    #[cfg(unix)]
    {
        let f = File::open(dir).map_err(|e| WriteError::new(dir, "opening the directory to sync it", e))?;
        f.sync_all().map_err(|e| WriteError::new(dir, "syncing the directory", e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A set of files written into a private staging directory and published together:
/// either the destination directory appears with every file complete, or it does
/// not appear at all. Dropping an unpublished `StagedDir` removes the staging
/// directory.
#[derive(Debug)]
pub struct StagedDir {
    staging: PathBuf,
    dest: PathBuf,
    published: bool,
}

impl StagedDir {
    /// Start a set of files that will become the directory `dest` (which must not
    /// exist, or be empty, when [`publish`](Self::publish) runs). The staging
    /// directory sits beside `dest`, so publishing is a rename within one filesystem.
    pub fn new(dest: &Path) -> Result<StagedDir, WriteError> {
        let parent = parent_dir(dest);
        let name = dest.file_name().ok_or_else(|| {
            WriteError::new(dest, "choosing a staging name", io::Error::other("not a directory path"))
        })?;
        let staging = parent.join(temp_name(&name.to_string_lossy()));
        std::fs::create_dir(&staging).map_err(|e| WriteError::new(dest, "creating the staging directory", e))?;
        Ok(StagedDir { staging, dest: dest.to_path_buf(), published: false })
    }

    /// The staging directory (files written here appear in `dest` on publish).
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Write the file `name` of the set, synced.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        self.write_with(name, |w| w.write_all(bytes))
    }

    /// Write the file `name` of the set from a closure that streams into it, synced.
    pub fn write_with<F>(&self, name: &str, fill: F) -> Result<(), WriteError>
    where
        F: FnOnce(&mut dyn Write) -> io::Result<()>,
    {
        let path = self.staging.join(name);
        write_synced(&path, None, fill).map_err(|(step, e)| WriteError::new(&self.dest.join(name), step, e))
    }

    /// Make the set visible as `dest` in one rename, then sync the parent directory.
    pub fn publish(mut self) -> Result<PathBuf, WriteError> {
        sync_dir(&self.staging)?;
        crate::fault::point("publish")
            .map_err(|e| WriteError::new(&self.dest, "renaming the staged directory into place", e))?;
        std::fs::rename(&self.staging, &self.dest)
            .map_err(|e| WriteError::new(&self.dest, "renaming the staged directory into place", e))?;
        self.published = true;
        sync_dir(parent_dir(&self.dest))?;
        Ok(self.dest.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Create (or truncate) `path` (with `perms`, when given, before anything is
/// written), fill it, flush and fsync it.
fn write_synced<F>(path: &Path, perms: Option<std::fs::Permissions>, fill: F) -> Result<(), (&'static str, io::Error)>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(p) = &perms {
        // Never wider than the final mode, even for an instant.
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, std::os::unix::fs::PermissionsExt::mode(p) & 0o777);
    }
    let file = opts.open(path).map_err(|e| ("creating a temporary file", e))?;
    if let Some(p) = perms {
        file.set_permissions(p).map_err(|e| ("setting the file's permissions", e))?;
    }
    let mut w = BufWriter::new(file);
    fill(&mut w).map_err(|e| ("writing", e))?;
    crate::fault::point("write").map_err(|e| ("writing", e))?;
    let file = w.into_inner().map_err(|e| ("writing", e.into_error()))?;
    file.sync_all().map_err(|e| ("syncing", e))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The longest file name most filesystems take (ext4, XFS, btrfs, tmpfs: 255 bytes).
const NAME_MAX: usize = 255;

/// A hidden name beside the destination, unique per process and per call, so
/// concurrent writers (threads or processes) never share a temporary file. The
/// destination's name is shortened (at a character boundary) so that the temporary
/// name stays within [`NAME_MAX`] bytes: any name the destination may have, its
/// temporary may have too. The process id and counter keep it unique.
fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(".tmp-{}-{n}", std::process::id());
    let mut keep = name.len().min(NAME_MAX - 1 - suffix.len());
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}{suffix}", &name[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test, removed when it drops.
    fn scratch(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("graft-durable-{name}-")).tempdir().unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let d = scratch("replace");
        let d = d.path();
        let p = d.join("a.txt");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(entries(d), ["a.txt"]);
    }

    #[test]
    fn a_failing_stream_leaves_the_old_file_and_no_temporary() {
        let d = scratch("fail");
        let d = d.path();
        let p = d.join("a.txt");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"half of the new")?;
            Err(io::Error::other("the producer gave up"))
        })
        .unwrap_err();
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(d), ["a.txt"]);
        let msg = err.to_string();
        assert!(msg.contains("a.txt") && msg.contains("writing") && msg.contains("the producer gave up"), "{msg}");
    }

    #[test]
    fn an_unwritable_destination_is_an_error_naming_the_path() {
        let d = scratch("missing");
        let d = d.path();
        let p = d.join("no-such-dir").join("a.txt");
        let err = write_atomic(&p, b"x").unwrap_err();
        assert_eq!(err.path, p);
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[test]
    fn the_longest_legal_names_can_be_written() {
        let d = scratch("long");
        let d = d.path();
        for len in [250, 255] {
            let name = "é".repeat(len / 2) + &"x".repeat(len % 2);
            assert_eq!(name.len(), len);
            write_atomic(&d.join(&name), b"x").unwrap();
            StagedDir::new(&d.join("y".repeat(len))).unwrap().publish().unwrap();
        }
        assert_eq!(entries(d).len(), 4);
    }

    #[cfg(unix)]
    #[test]
    fn a_rewrite_goes_through_the_link_and_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = scratch("rewrite");
        let d = d.path();
        let real = d.join("real.graft");
        std::fs::write(&real, b"old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("real.graft", d.join("link.graft")).unwrap();
        rewrite_atomic(&d.join("link.graft"), b"new").unwrap();
        assert!(std::fs::symlink_metadata(d.join("link.graft")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(entries(d), ["link.graft", "real.graft"]);
    }

    #[test]
    fn a_staged_set_appears_whole_on_publish() {
        let d = scratch("staged");
        let d = d.path();
        let dest = d.join("ckpt");
        let staged = StagedDir::new(&dest).unwrap();
        staged.write("a.bin", b"aa").unwrap();
        staged.write_with("b.json", |w| w.write_all(b"{}")).unwrap();
        assert!(!dest.exists(), "nothing is visible before publish");
        assert_eq!(staged.publish().unwrap(), dest);
        assert_eq!(entries(d), ["ckpt"]);
        assert_eq!(entries(&dest), ["a.bin", "b.json"]);
        assert_eq!(std::fs::read(dest.join("b.json")).unwrap(), b"{}");
    }

    #[test]
    fn an_abandoned_staged_set_leaves_nothing() {
        let d = scratch("abandoned");
        let d = d.path();
        let staged = StagedDir::new(&d.join("ckpt")).unwrap();
        staged.write("a.bin", b"aa").unwrap();
        drop(staged);
        assert!(entries(d).is_empty());
    }
}
