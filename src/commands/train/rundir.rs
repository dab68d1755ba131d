//! The run directory on disk: checkpoints that appear in one atomic step, the lock a
//! trainer holds on the directory, and the recovery of a directory a crash left.
//!
//! ```text
//! RUN_DIR/
//!   checkpoint-0000000100/   the newest complete checkpoint, written in a staging
//!     trainable.safetensors  directory (each file fsynced) and renamed into place in
//!     optimizer.safetensors  one step, then the directory fsynced: a checkpoint is
//!     state.json             either all there, from one step, or not there at all
//!   trainable.safetensors    the newest checkpoint's trainable tensors (a hard link),
//!                            what specs' `weights` and `--weights` name
//!   metrics.jsonl, loss.svg
//!   checkpoint-0000000200.rejected/  a bad newer checkpoint recovery set aside
//!   .lock                    locked (flock) by the trainer writing the run; its PID
//! ```
//!
//! After a checkpoint is published, `trainable.safetensors` is re-linked to it
//! (a link under a temporary name, renamed over) and older checkpoints are removed.
//! A crash anywhere in that sequence leaves the newest complete checkpoint and
//! possibly an older one, temporaries and a `trainable.safetensors` one checkpoint
//! behind; [`recover`] (run under the lock before a trainer reads a directory a
//! trainer used) removes those temporaries (only the names graft's writer gives its
//! own files), proves the newest checkpoint good before it removes the older ones,
//! and re-links the file, so `--resume` always continues from the newest good
//! checkpoint. A newer checkpoint directory that is not good (edited, corrupt, not
//! graft's) is renamed aside to `checkpoint-STEP.rejected`, never removed.
//!
//! A run that is read and not written (`--resume A --out B`, `graft eval --run`) is
//! never recovered: [`newest_good`] picks the checkpoint recovery would keep without
//! moving or removing anything, and takes no lock (another trainer may hold it).
//!
//! A run written by an older graft (the three files at the top, no checkpoint
//! directory) is read as one checkpoint.

use crate::durable::sync_dir;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub const TRAINABLE: &str = "trainable.safetensors";
pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const STATE: &str = "state.json";
pub const METRICS: &str = "metrics.jsonl";
pub const PLOT: &str = "loss.svg";
/// The train-mode IR a checkpoint was trained from (beside its tensors).
pub const GRAPH: &str = "graph.ir";

/// Checkpoint directories are `checkpoint-` and the step, zero-padded.
const PREFIX: &str = "checkpoint-";
/// The lock file.
pub const LOCK: &str = ".lock";

/// The directory name of step `step`'s checkpoint.
pub fn checkpoint_name(step: u64) -> String {
    format!("{PREFIX}{step:010}")
}

/// The run's checkpoint directories, `(step, path)`, oldest first.
pub fn checkpoints(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    let entries = match std::fs::read_dir(run) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(e).with_context(|| format!("reading the run directory {}", run.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("reading the run directory {}", run.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(step) = name.strip_prefix(PREFIX).and_then(|s| s.parse::<u64>().ok()) else { continue };
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            v.push((step, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// The directory holding the newest complete checkpoint's files (`state.json`,
/// `trainable.safetensors`, `optimizer.safetensors`), if the run has one.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    if let Some((_, dir)) = checkpoints(run)?.pop() {
        return Ok(Some(dir));
    }
    // The layout of older versions: the files at the top.
    Ok(run.join(STATE).is_file().then(|| run.to_path_buf()))
}

/// The advisory lock a trainer holds on its run directory while it uses it; released
/// when dropped or when the process ends, however it ends.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Lock `run` (which must exist) for this process, writing its PID into the lock file;
/// a directory another trainer holds is an error naming that trainer's PID.
pub fn lock(run: &Path) -> Result<RunLock> {
    let path = run.join(LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("process {pid}"),
                Err(_) => "another process".to_string(),
            };
            bail!(
                "{} is in use by another `graft train` ({holder} holds {}): two trainers on one run directory would interleave their checkpoints\n  hint: wait for it to finish or stop it, or choose another --out",
                run.display(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0).and_then(|()| file.rewind()).with_context(|| format!("writing {}", path.display()))?;
    write!(file, "{}", std::process::id()).with_context(|| format!("writing {}", path.display()))?;
    Ok(RunLock { _file: file })
}

/// Whether a trainer has used `dir` (it holds the lock file every trainer creates
/// before it writes anything).
pub fn is_run(dir: &Path) -> bool {
    dir.join(LOCK).is_file()
}

/// A temporary graft's durable writer leaves beside a file of the run when killed
/// (`.NAME.tmp-PID-N`); nothing else in the directory is ever removed.
fn is_our_temporary(name: &str) -> bool {
    let Some((stem, _)) = name.split_once(".tmp-") else { return false };
    let Some(stem) = stem.strip_prefix('.') else { return false };
    const FILES: &[&str] = &[TRAINABLE, OPTIMIZER, STATE, GRAPH, METRICS, PLOT];
    FILES.contains(&stem) || stem.strip_prefix(PREFIX).is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
}

/// Clean up after a crashed writer (call with the lock held): temporaries and
/// staging directories of killed writes, checkpoints older than the newest good one,
/// and a `trainable.safetensors` that is not its. `good` proves a checkpoint
/// directory (its files complete and consistent). Checkpoints newer than the newest
/// good one are set aside under a name no reader takes for a checkpoint, never
/// removed; older ones are removed only once a newer one is proven good. When none
/// is good, every checkpoint stays as it is (reading the newest says what is wrong).
/// Returns notes.
pub fn recover(run: &Path, _lock: &RunLock, good: impl Fn(&Path) -> Result<()>) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut removed = 0;
    for e in std::fs::read_dir(run).with_context(|| format!("reading {}", run.display()))? {
        let e = e.with_context(|| format!("reading {}", run.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_our_temporary(&name) {
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.with_context(|| format!("removing the stale temporary {}", p.display()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        notes.push(format!("removed {removed} temporary file(s) an interrupted run left in {}", run.display()));
    }
    let all = checkpoints(run)?;
    let (newest, bad) = newest_proven(&all, &good);
    if let Some(i) = newest {
        for (step, dir, why) in bad {
            let aside = quarantine(dir)?;
            notes.push(format!(
                "set the checkpoint of step {step} aside as {} (not removed): {}",
                aside.display(),
                first_line(&why)
            ));
        }
        for (step, dir) in &all[..i] {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the superseded checkpoint {}", dir.display()))?;
            notes.push(format!("removed the superseded checkpoint of step {step}"));
        }
        let newest = &all[i].1;
        if !same_file(&newest.join(TRAINABLE), &run.join(TRAINABLE)) {
            link_trainable(run, newest)?;
        }
    }
    sync_dir(run)?;
    Ok(notes)
}

/// The index in `all` (oldest first) of the newest checkpoint `good` proves, and the
/// newer ones it refused, newest first, with why.
fn newest_proven<'a>(
    all: &'a [(u64, PathBuf)],
    good: &impl Fn(&Path) -> Result<()>,
) -> (Option<usize>, Vec<(u64, &'a Path, anyhow::Error)>) {
    let mut bad = Vec::new();
    for (i, (step, dir)) in all.iter().enumerate().rev() {
        match good(dir) {
            Ok(()) => return (Some(i), bad),
            Err(e) => bad.push((*step, dir.as_path(), e)),
        }
    }
    (None, bad)
}

/// The first line of an error and its causes (a message without its hint).
pub fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}").lines().next().unwrap_or_default().to_string()
}

/// The checkpoint [`recover`] would keep, as [`newest_good`] finds it.
#[derive(Debug)]
pub struct Choice {
    pub step: u64,
    pub dir: PathBuf,
    /// The newer checkpoints that are not good, newest first: step, directory and the
    /// first line of why.
    pub skipped: Vec<(u64, PathBuf, String)>,
    /// Temporaries of killed writes in the run directory (left where they are).
    pub temporaries: usize,
}

/// The newest checkpoint of `run` that `good` proves, by the rule of [`recover`],
/// chosen without moving, removing or writing anything: for a run that is only read
/// (`--resume A --out B`, another trainer may hold it). `None` when no checkpoint
/// directory is good, or the run has none.
pub fn newest_good(run: &Path, good: impl Fn(&Path) -> Result<()>) -> Result<Option<Choice>> {
    let all = checkpoints(run)?;
    let (newest, bad) = newest_proven(&all, &good);
    let Some(i) = newest else { return Ok(None) };
    let skipped = bad.into_iter().map(|(step, dir, why)| (step, dir.to_path_buf(), first_line(&why))).collect();
    let mut temporaries = 0;
    for e in std::fs::read_dir(run).with_context(|| format!("reading {}", run.display()))? {
        let e = e.with_context(|| format!("reading {}", run.display()))?;
        temporaries += usize::from(is_our_temporary(&e.file_name().to_string_lossy()));
    }
    Ok(Some(Choice { step: all[i].0, dir: all[i].1.clone(), skipped, temporaries }))
}

/// Whether `run/trainable.safetensors` is checkpoint `ckpt`'s: its hard link, or
/// (where the filesystem has no hard links) a copy of the same bytes. A missing file
/// is not.
pub fn is_linked(run: &Path, ckpt: &Path) -> Result<bool> {
    let (top, own) = (run.join(TRAINABLE), ckpt.join(TRAINABLE));
    if same_file(&own, &top) {
        return Ok(true);
    }
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if len(&top).is_none() || len(&top) != len(&own) {
        return Ok(false);
    }
    same_bytes(&top, &own)
}

/// Whether two files hold the same bytes, compared a MiB at a time (a checkpoint can be
/// gigabytes; neither is held whole).
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| crate::input_file::open_regular(p).with_context(|| format!("reading {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (Vec::with_capacity(1 << 20), Vec::with_capacity(1 << 20));
    // The next MiB of a file (less at its end).
    let next = |f: &mut File, buf: &mut Vec<u8>, p: &Path| {
        buf.clear();
        f.take(1 << 20).read_to_end(buf).with_context(|| format!("reading {}", p.display()))
    };
    loop {
        next(&mut fa, &mut ba, a)?;
        next(&mut fb, &mut bb, b)?;
        if ba != bb {
            return Ok(false);
        }
        if ba.is_empty() {
            return Ok(true);
        }
    }
}

/// Rename checkpoint directory `dir` to `NAME.rejected` (or `NAME.rejected-N`, the
/// first that is free), which [`checkpoints`] does not list and recovery never
/// removes. Returns the new path.
fn quarantine(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for n in 0..1000 {
        let suffix = if n == 0 { String::new() } else { format!("-{n}") };
        let aside = dir.with_file_name(format!("{name}.rejected{suffix}"));
        if std::fs::symlink_metadata(&aside).is_err() {
            std::fs::rename(dir, &aside)
                .with_context(|| format!("setting the bad checkpoint {} aside", dir.display()))?;
            return Ok(aside);
        }
    }
    bail!("{}: 1000 rejected checkpoints of this step are already set aside beside it; remove some", dir.display())
}

/// After checkpoint `newest` is published: point `trainable.safetensors` at it, then
/// remove the older checkpoints.
pub fn settle(run: &Path, newest: &Path) -> Result<()> {
    link_trainable(run, newest)?;
    for (_, dir) in checkpoints(run)? {
        if dir != newest {
            crate::fault::point("remove old checkpoint")?;
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the superseded checkpoint {}", dir.display()))?;
        }
    }
    Ok(sync_dir(run)?)
}

/// Replace `run/trainable.safetensors` by a hard link to `ckpt`'s (a copy where the
/// filesystem has no hard links), atomically.
fn link_trainable(run: &Path, ckpt: &Path) -> Result<()> {
    let (src, dest) = (ckpt.join(TRAINABLE), run.join(TRAINABLE));
    let tmp = run.join(format!(".{TRAINABLE}.tmp-{}-link", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    crate::fault::point("link trainable")?;
    if std::fs::hard_link(&src, &tmp).is_ok() {
        crate::fault::point("rename trainable")?;
        std::fs::rename(&tmp, &dest).with_context(|| format!("renaming into place {}", dest.display()))?;
        Ok(sync_dir(run)?)
    } else {
        let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        Ok(crate::durable::write_atomic(&dest, &bytes)?)
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_temporaries_are_stale() {
        for ours in [".trainable.safetensors.tmp-12-0", ".checkpoint-0000000002.tmp-5-1", ".metrics.jsonl.tmp-9-3"] {
            assert!(is_our_temporary(ours), "{ours}");
        }
        for theirs in [".bashrc.tmp-1", "notes.tmp-3", ".checkpoint-x.tmp-1-1", "trainable.safetensors", ".lock"] {
            assert!(!is_our_temporary(theirs), "{theirs}");
        }
        assert_eq!(checkpoint_name(42), "checkpoint-0000000042");
    }

    /// A fresh run dir with checkpoints at steps 2 and 4 (good: each holds a `good`
    /// file) and 5 and 9 (not good), each trainable file holding its step; removed when
    /// dropped, so also when the test fails.
    fn four_checkpoints(name: &str) -> tempfile::TempDir {
        let run = tempfile::Builder::new().prefix(&format!("graft-rundir-{name}-")).tempdir().unwrap();
        for (step, good) in [(2, true), (4, true), (5, false), (9, false)] {
            let d = run.path().join(checkpoint_name(step));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(TRAINABLE), format!("{step}")).unwrap();
            if good {
                std::fs::write(d.join("good"), "").unwrap();
            }
        }
        run
    }

    #[test]
    fn files_compare_equal_only_with_the_same_bytes_across_chunks() {
        let dir = tempfile::Builder::new().prefix("graft-rundir-bytes-").tempdir().unwrap();
        let dir = dir.path();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let big: Vec<u8> = (0..(1usize << 20) * 2 + 77).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&a, &big).unwrap();
        std::fs::write(&b, &big).unwrap();
        assert!(same_bytes(&a, &b).unwrap());
        // The last byte, a byte past the first chunk, one byte more, one byte less.
        let mut edits: Vec<Vec<u8>> = vec![big.clone(), big.clone(), big.clone(), big[..big.len() - 1].to_vec()];
        *edits[0].last_mut().unwrap() ^= 1;
        edits[1][(1 << 20) + 5] ^= 1;
        edits[2].push(0);
        for e in &edits {
            std::fs::write(&b, e).unwrap();
            assert!(!same_bytes(&a, &b).unwrap() && !same_bytes(&b, &a).unwrap());
        }
    }

    #[test]
    fn the_newest_good_checkpoint_is_chosen_without_touching_the_run() {
        let dir = four_checkpoints("choose");
        let run = dir.path();
        std::fs::write(run.join(".state.json.tmp-7-0"), "").unwrap();
        std::fs::hard_link(run.join(checkpoint_name(2)).join(TRAINABLE), run.join(TRAINABLE)).unwrap();
        let listing = |run: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(run).unwrap().map(|e| e.unwrap().file_name()).collect();
            v.sort();
            v
        };
        let before = listing(run);
        let good = |d: &Path| if d.join("good").exists() { Ok(()) } else { bail!("not good") };
        let c = newest_good(run, good).unwrap().unwrap();
        assert_eq!((c.step, c.dir.clone(), c.temporaries), (4, run.join(checkpoint_name(4)), 1));
        let skipped: Vec<(u64, &str)> = c.skipped.iter().map(|(s, _, why)| (*s, why.as_str())).collect();
        assert_eq!(skipped, [(9, "not good"), (5, "not good")]);
        assert_eq!(listing(run), before);
        // The top-level file is step 2's (a crash before the link): not step 4's.
        assert!(is_linked(run, &run.join(checkpoint_name(2))).unwrap());
        assert!(!is_linked(run, &c.dir).unwrap());
        // A copy of the same bytes is linked; a missing file is not.
        std::fs::remove_file(run.join(TRAINABLE)).unwrap();
        assert!(!is_linked(run, &c.dir).unwrap());
        std::fs::write(run.join(TRAINABLE), "4").unwrap();
        assert!(is_linked(run, &c.dir).unwrap());
        for d in ["checkpoint-0000000002/good", "checkpoint-0000000004/good"] {
            std::fs::remove_file(run.join(d)).unwrap();
        }
        assert!(newest_good(run, good).unwrap().is_none());
    }

    #[test]
    fn recovery_sets_bad_newer_checkpoints_aside_and_keeps_the_good_one() {
        let dir = four_checkpoints("recover");
        let run = dir.path();
        std::fs::create_dir_all(run.join("checkpoint-0000000005.rejected")).unwrap();
        let l = lock(run).unwrap();
        let good = |d: &Path| if d.join("good").exists() { Ok(()) } else { bail!("not good") };
        let notes = recover(run, &l, good).unwrap();
        let steps: Vec<u64> = checkpoints(run).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [4], "{notes:?}");
        assert!(run.join("checkpoint-0000000009.rejected").join(TRAINABLE).is_file());
        assert!(run.join("checkpoint-0000000005.rejected-1").join(TRAINABLE).is_file(), "{notes:?}");
        assert_eq!(std::fs::read_to_string(run.join(TRAINABLE)).unwrap(), "4");
        assert!(notes.iter().any(|n| n.contains("step 9 aside") && n.contains("not good")), "{notes:?}");
        // Nothing good: nothing is touched.
        std::fs::remove_file(run.join(checkpoint_name(4)).join("good")).unwrap();
        assert!(recover(run, &l, good).unwrap().is_empty());
        assert!(run.join(checkpoint_name(4)).is_dir());
    }
}
