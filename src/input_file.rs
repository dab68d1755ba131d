//! Opening the files graft reads (specs and the files they `use`, weights, dataset
//! shards, input tensors): regular files only, checked before they are opened for
//! reading, so a FIFO never blocks graft and `/dev/zero` is never read without end.
//! A symlink loop or a permission problem is reported as what it is, not as a
//! missing file. [`refuse_overwrite`] keeps an output path off the command's inputs.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;

/// What a path is, in words, when it is not a regular file.
fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

fn not_regular(m: &Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}, not a regular file: graft reads only regular files", kind(m)),
    )
}

/// The metadata of `path` (symlinks followed) if it is a regular file.
pub fn check_regular(path: &Path) -> io::Result<Metadata> {
    let m = std::fs::metadata(path)?;
    if !m.is_file() {
        return Err(not_regular(&m));
    }
    Ok(m)
}

/// Open `path` for reading if it is a regular file (checked before opening, and
/// again on the opened file, in case it was replaced in between).
pub fn open_regular(path: &Path) -> io::Result<File> {
    check_regular(path)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    // Non-blocking, so that a FIFO swapped in after the check does not block the
    // open (the check on the opened file then refuses it); no effect on regular files.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
    let f = opts.open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(not_regular(&m));
    }
    Ok(f)
}

/// Read at most `max` bytes of the regular file `path`: a longer file gives its first
/// `max + 1` bytes, so the caller's own size check reports it.
pub fn read_limited(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The whole of the regular file `path` if it is at most `max` bytes (`what` names
/// it in the error: "a spec"); a larger file is refused from its size, before any of
/// it is read (a 3 GiB sparse file costs nothing).
pub fn read_capped(path: &Path, max: usize, what: &str) -> io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let len = f.metadata()?.len();
    let too_big = |len: u64| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{len} bytes, over the limit of {max} bytes for {what}"))
    };
    if len > max as u64 {
        return Err(too_big(len));
    }
    let mut bytes = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(too_big(bytes.len() as u64)); // it grew while being read
    }
    Ok(bytes)
}

/// The effective user id of this process (0 where there are no user ids).
pub fn user_id() -> u32 {
    #[cfg(unix)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    return unsafe { libc::geteuid() };
    #[cfg(not(unix))]
    0
}

/// Make `dir` a private directory of this user, or refuse it: created owner-only
/// (0700) if missing; an existing one must be a directory (not a symlink) owned by
/// this user that neither group nor others can write to.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    match b.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(dir)?;
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: {why}; graft uses only a private directory of its user here", dir.display()),
        ))
    };
    if !m.is_dir() {
        return refuse(format!("{}, not a directory", if m.file_type().is_symlink() { "a symlink" } else { kind(&m) }));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if m.uid() != user_id() {
            return refuse(format!("owned by user {}, not by user {}", m.uid(), user_id()));
        }
        if m.mode() & 0o022 != 0 {
            return refuse(format!("writable by others (mode {:o})", m.mode() & 0o777));
        }
    }
    Ok(())
}

/// Whether `a` and `b` name the same file: the same inode when both exist, else the
/// same canonical path (a file not written yet is compared by its canonical directory
/// and its name).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    let canon = |p: &Path| {
        p.canonicalize().ok().or_else(|| {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Some(dir.canonicalize().ok()?.join(p.file_name()?))
        })
    };
    match (canon(a), canon(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Refuse an output path that is one of the command's inputs (`(what, path)`): writing
/// it would destroy the input before (or while) it is read.
pub fn refuse_overwrite<'a>(
    flag: &str,
    out: &Path,
    inputs: impl IntoIterator<Item = (String, &'a Path)>,
) -> Result<(), String> {
    for (what, input) in inputs {
        if same_file(out, input) {
            return Err(format!(
                "{flag} {} is {what} ({}): writing it would overwrite an input; choose another {flag}",
                out.display(),
                input.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_regular_files_are_refused_before_reading() {
        let e = open_regular(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("a character device"), "{e}");
        let e = open_regular(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let d = tempfile::Builder::new().prefix("graft-input-file-").tempdir().unwrap();
        let d = d.path();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.join("b"), d.join("a")).unwrap();
            std::os::unix::fs::symlink(d.join("a"), d.join("b")).unwrap();
            let e = open_regular(&d.join("a")).unwrap_err();
            assert_ne!(e.kind(), io::ErrorKind::NotFound, "a loop is not a missing file: {e}");
        }
        std::fs::write(d.join("f"), b"0123456789").unwrap();
        assert_eq!(read_limited(&d.join("f"), 4).unwrap(), b"01234");
        assert_eq!(read_capped(&d.join("f"), 10, "a test").unwrap(), b"0123456789");
        let e = read_capped(&d.join("f"), 9, "a test").unwrap_err().to_string();
        assert_eq!(e, "10 bytes, over the limit of 9 bytes for a test");
        // A sparse file far over the limit: refused from its size.
        let sparse = File::create(d.join("sparse")).unwrap();
        sparse.set_len(3 << 30).unwrap();
        let e = read_capped(&d.join("sparse"), 1 << 20, "a spec").unwrap_err().to_string();
        assert!(e.starts_with("3221225472 bytes, over the limit of 1048576"), "{e}");
        #[cfg(unix)]
        {
            // Private directories: created 0700; one others can write to is refused.
            use std::os::unix::fs::PermissionsExt;
            private_dir(&d.join("p")).unwrap();
            let mode = std::fs::metadata(d.join("p")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
            std::fs::set_permissions(d.join("p"), std::fs::Permissions::from_mode(0o777)).unwrap();
            let e = private_dir(&d.join("p")).unwrap_err().to_string();
            assert!(e.contains("writable by others (mode 777)"), "{e}");
            std::os::unix::fs::symlink(d.join("p"), d.join("q")).unwrap();
            let e = private_dir(&d.join("q")).unwrap_err().to_string();
            assert!(e.contains("a symlink, not a directory"), "{e}");
        }
        // The same file under another name; a file not written yet.
        std::fs::hard_link(d.join("f"), d.join("g")).unwrap();
        assert!(same_file(&d.join("f"), &d.join("g")) && same_file(&d.join("x"), &d.join(".").join("x")));
        let err = refuse_overwrite("--out", &d.join("g"), [("--inputs".to_string(), d.join("f").as_path())]);
        assert!(err.unwrap_err().contains("would overwrite an input"));
    }
}
