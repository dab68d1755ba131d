//! The run directory: what `graft train` writes and what `--resume`, `graft eval --run`
//! and `graft fuse --run` read back.
//!
//! ```text
//! RUN_DIR/checkpoint-STEP/
//!   trainable.safetensors   the trainable tensors under their full graph paths, with
//!                           metadata: graph fingerprint, spec hash, step, names+shapes,
//!                           the digest of state.json ([`super::state`]), each
//!                           tensor's CRC-32 (as in the optimizer's file)
//!   optimizer.safetensors   AdamW state per parameter: PATH.exp_avg, PATH.exp_avg_sq, PATH.step
//!   state.json              the resume point: step, epoch, position in the epoch, seed,
//!                           hyperparameters and schedule
//! RUN_DIR/trainable.safetensors   the newest checkpoint's trainable tensors
//!   metrics.jsonl           one JSON object per step and per validation
//!   loss.svg                train loss and validation accuracy
//! ```
//!
//! The three checkpoint files of a step live in one directory published in one rename
//! (see [`super::rundir`] for the layout on disk, the lock and crash recovery); a
//! checkpoint is still proven before it is used or an older one removed
//! ([`verify`]): graft's metadata in both tensor files (a foreign file is named as
//! such), the same step in all three, `state.json` in bounds and matching its digest,
//! every tensor's bytes matching the CRC-32 recorded when it was written (a flipped
//! bit or an overwritten block is named by file and tensor).
//!
//! The graph fingerprint is a hash of the compiled train-mode IR text: it changes with
//! anything that changes the computation (wiring, configuration, what trains) and not
//! with where the weights files are. A checkpoint whose names or shapes differ from the
//! spec's trainable parameters is refused with a diff, one line per name.

use crate::backend::plan::Plan;
use crate::ir::DType;
use crate::params::leaves::titled_list;
use crate::params::Leaves;
use crate::pipeline::Compiled;
use crate::safetensors::{self, SafeFile};
use crate::tensor::{type_text, HostTensor};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file names of a run (defined with the run directory's layout).
pub use super::rundir::{GRAPH, METRICS, OPTIMIZER, PLOT, STATE, TRAINABLE};

/// The `format` metadata of a trainable checkpoint.
pub const FORMAT: &str = "graft.trainable.v1";
pub use super::state::{State, STATE_DIGEST, STATE_FORMAT};

/// At most this many lines per list in a diff.
const MAX_LINES: usize = 20;

pub use crate::rng::fnv64;

/// What a checkpoint was trained from.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub model: String,
    /// Hash of the train-mode IR text.
    pub fingerprint: String,
    /// Hash of every source file of the compilation (the spec and what it uses).
    pub spec_hash: String,
    /// The train-mode IR text the fingerprint hashes; a checkpoint keeps it
    /// ([`GRAPH`]) so a refused resume can say what changed.
    pub ir: String,
}

impl Identity {
    pub fn of(c: &Compiled) -> Identity {
        let ir = crate::ir::print::to_text(&c.graph, &format!("graft ir: model {} mode train", c.model));
        let mut parts: Vec<&[u8]> = Vec::new();
        for (_, f) in c.sources.files() {
            parts.push(f.name.as_bytes());
            parts.push(f.text.as_bytes());
        }
        Identity { model: c.model.clone(), fingerprint: fnv64(&[ir.as_bytes()]), spec_hash: fnv64(&parts), ir }
    }
}

/// The trainable parameters of a plan: (full path, shape), in plan order.
pub fn trainable_shapes(plan: &Plan) -> Vec<(String, Vec<i64>)> {
    plan.params().iter().filter(|p| p.trainable).map(|p| (p.path.clone(), p.shape.clone())).collect()
}

/// Write tensors with metadata and each tensor's CRC-32 (checked by [`verify`]),
/// atomically and durably.
pub fn write_with_metadata(
    path: &Path,
    tensors: &[(String, HostTensor)],
    meta: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta = meta.clone();
    meta.insert(safetensors::TENSOR_CRC32.into(), safetensors::tensor_crc32(tensors));
    Ok(safetensors::write(path, tensors, &meta)?)
}

/// A safetensors file's `__metadata__` (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    Ok(safetensors::read_header(path)?.metadata)
}

/// The metadata every file of a run carries.
pub fn metadata(id: &Identity, step: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("model".to_string(), id.model.clone()),
        ("graph_fingerprint".to_string(), id.fingerprint.clone()),
        ("spec_hash".to_string(), id.spec_hash.clone()),
        ("step".to_string(), step.to_string()),
    ])
}

/// Write `trainable.safetensors`: the given (path, tensor) pairs plus metadata,
/// including `params`, a JSON list of `[name, shape]`.
pub fn write_trainable(path: &Path, id: &Identity, step: u64, tensors: &[(String, HostTensor)]) -> Result<()> {
    write_trainable_with(path, id, step, tensors, &BTreeMap::new())
}

/// [`write_trainable`] with `extra` metadata (e.g. `world_size`, `global_batch`).
pub fn write_trainable_with(
    path: &Path,
    id: &Identity,
    step: u64,
    tensors: &[(String, HostTensor)],
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta = metadata(id, step);
    meta.extend(extra.clone());
    let names: Vec<(&str, &[i64])> = tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice())).collect();
    meta.insert("params".into(), serde_json::to_string(&names)?);
    write_with_metadata(path, tensors, &meta)
}

/// Write a checkpoint: the optimizer state, the trainable tensors, the graph and
/// `state.json` staged in a private directory, published as `RUN_DIR/checkpoint-STEP`
/// in one rename, then `trainable.safetensors` re-linked and older checkpoints
/// removed ([`super::rundir`]).
pub fn write_all(
    run: &Path,
    id: &Identity,
    trainable: &[(String, HostTensor)],
    optimizer: &[(String, HostTensor)],
    state: &State,
) -> Result<()> {
    // Data-parallel runs: how many ranks, and the batch over all of them; and the
    // digest that binds state.json to these tensors.
    let text = state.text()?;
    let extra = BTreeMap::from([
        ("world_size".to_string(), state.world_size.to_string()),
        ("global_batch".to_string(), state.global_batch.to_string()),
        (STATE_DIGEST.to_string(), super::state::digest(text.as_bytes())),
    ]);
    let mut meta = metadata(id, state.step);
    meta.extend(extra.clone());
    meta.insert("kind".into(), "adamw".into());
    let dest = run.join(super::rundir::checkpoint_name(state.step));
    if dest.exists() {
        // From a run resumed at an earlier step: superseded by this one.
        std::fs::remove_dir_all(&dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    let staged = crate::durable::StagedDir::new(&dest)?;
    write_with_metadata(&staged.path().join(OPTIMIZER), optimizer, &meta)?;
    write_trainable_with(&staged.path().join(TRAINABLE), id, state.step, trainable, &extra)?;
    staged.write(GRAPH, id.ir.as_bytes())?;
    staged.write(STATE, text.as_bytes())?;
    let published = staged.publish()?;
    super::rundir::settle(run, &published)
}

/// A trained checkpoint opened for reading: its header, metadata and tensors on demand.
pub struct TrainableFile {
    pub path: PathBuf,
    pub meta: BTreeMap<String, String>,
    pub file: SafeFile,
}

impl TrainableFile {
    /// Open `RUN_DIR/trainable.safetensors`, or a checkpoint file given directly.
    /// A run directory's newest complete checkpoint is read ([`super::rundir::latest`]).
    pub fn open(run: &Path) -> Result<TrainableFile> {
        let path = if run.is_dir() {
            match super::rundir::latest(run)? {
                Some(dir) => dir.join(TRAINABLE),
                None if run.join(TRAINABLE).is_file() => run.join(TRAINABLE),
                None => bail!(
                    "{} has no complete checkpoint: is it a run directory of `graft train` (no checkpoint written yet)?",
                    run.display()
                ),
            }
        } else {
            run.to_path_buf()
        };
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
        Ok(TrainableFile::of(SafeFile::open(&path)?))
    }

    /// An opened trainable file, its metadata at hand.
    fn of(file: SafeFile) -> TrainableFile {
        TrainableFile { path: file.path.clone(), meta: file.header.metadata.clone(), file }
    }

    /// Open what `graft eval --run RUN` evaluates, proven and read-only: a run
    /// directory's newest checkpoint, which must pass [`verify`] (its files complete,
    /// consistent and from one step), with `RUN/trainable.safetensors` that
    /// checkpoint's file; a checkpoint directory or a run of the older layout, proven
    /// the same way; a file given directly, as it is. Anything else is an error with a
    /// hint, never a fallback to older weights. Nothing is locked, recovered or written:
    /// a trainer may be writing the run, so a listing that changes under a failed read
    /// is read again. Returns notes.
    pub fn open_run(run: &Path) -> Result<(TrainableFile, Vec<String>)> {
        if !run.is_dir() {
            return Ok((TrainableFile::open(run)?, Vec::new()));
        }
        let mut tries = 0;
        loop {
            let seen = super::rundir::checkpoints(run)?;
            match open_proven(run, &seen) {
                Err(_) if tries < 3 && super::rundir::checkpoints(run)? != seen => tries += 1,
                r => return r,
            }
        }
    }

    pub fn step(&self) -> Option<u64> {
        self.meta.get("step").and_then(|s| s.parse().ok())
    }

    /// The step of a checkpoint graft wrote; a file without graft's metadata is an
    /// error that says so ([`graft_step`]).
    pub fn graft_step(&self) -> Result<u64> {
        graft_step(&self.path, &self.meta)
    }

    /// Check names and shapes against the spec's trainable parameters (an error with
    /// a diff when they differ), then the fingerprint: a different fingerprint is an
    /// error when `strict` (an exact resume), otherwise a returned note.
    pub fn check(&self, id: &Identity, expected: &[(String, Vec<i64>)], strict: bool) -> Result<Vec<String>> {
        let have: Vec<(String, String, Vec<i64>)> =
            self.file.entries().iter().map(|(k, e)| (k.clone(), e.type_text(), e.shape.clone())).collect();
        let mut notes = Vec::new();
        let origin = match (self.meta.get("model"), self.meta.get("graph_fingerprint")) {
            (Some(m), Some(f)) => format!("trained from model `{m}` (graph fingerprint {f})"),
            _ => "without graft metadata (not written by `graft train`)".to_string(),
        };
        if let Some(d) = diff(&have, expected) {
            bail!(
                "{} does not fit the trainable parameters of model `{}`:\n{d}  the checkpoint was {origin}; this spec's fingerprint is {}\n  hint: pass the spec the run was trained with, or train this one",
                self.path.display(),
                id.model,
                id.fingerprint
            );
        }
        match self.meta.get("graph_fingerprint") {
            Some(f) if *f == id.fingerprint => {}
            Some(f) if strict => bail!(
                "{} was trained from a different graph (fingerprint {f}, model `{}`); this spec compiles to {} (model `{}`). Names and shapes agree, so the change is in the wiring or configuration; an exact resume needs the same spec{}",
                self.path.display(),
                self.meta.get("model").map(String::as_str).unwrap_or("?"),
                id.fingerprint,
                id.model,
                self.path
                    .parent()
                    .and_then(|d| std::fs::read_to_string(d.join(GRAPH)).ok())
                    .map(|old| graph_changes(&old, &id.ir))
                    .unwrap_or_default()
            ),
            Some(f) => notes.push(format!(
                "{} was trained from a different graph (fingerprint {f}, this spec {}); names and shapes agree, so it is loaded",
                self.path.display(),
                id.fingerprint
            )),
            None if strict => bail!("{} has no graft metadata: it cannot be resumed from", self.path.display()),
            None => notes.push(format!("{} has no graft metadata; names and shapes agree, so it is loaded", self.path.display())),
        }
        Ok(notes)
    }

    /// Put the checkpoint's tensors over the spec's values (after [`Self::check`]).
    pub fn apply(&self, leaves: &mut Leaves) -> Result<()> {
        for name in self.file.entries().keys() {
            let t = self.file.tensor(name)?;
            if !leaves.allows_nonfinite() {
                crate::params::weights::check_finite(&self.path, name, &t)?;
            }
            if !leaves.set(name, t) {
                bail!("internal error: `{name}` is a trainable parameter with no loaded value");
            }
        }
        Ok(())
    }
}

/// [`TrainableFile::open_run`] of a run directory whose checkpoints are `all`.
fn open_proven(run: &Path, all: &[(u64, PathBuf)]) -> Result<(TrainableFile, Vec<String>)> {
    use super::rundir::{first_line, is_linked, newest_good};
    let Some((step, newest)) = all.last() else {
        // A checkpoint directory, or a run of the older layout: its files at the top.
        if run.join(STATE).is_file() {
            let (_, notes) = verify(run).map_err(|e| {
                anyhow!("{}\n  hint: restore the checkpoint's files, or pass another run or checkpoint", first_line(&e))
            })?;
            return Ok((TrainableFile::open(run)?, notes));
        }
        return Ok((TrainableFile::open(run)?, Vec::new()));
    };
    let f = TrainableFile::open(newest).and_then(|f| Ok((f, verify(newest)?.1)));
    let (f, notes) = f.map_err(|e| {
        let hint = match newest_good(run, |d| verify(d).map(|_| ())) {
            Ok(Some(c)) => format!(
                "pass --run {} to evaluate step {}, the newest good checkpoint; resuming the run (`graft train … --resume {}`) sets the bad one aside",
                c.dir.display(),
                c.step,
                run.display()
            ),
            _ => "no checkpoint of this run is good: restore the files, or train again".to_string(),
        };
        anyhow!("--run {}: its newest checkpoint (step {step}) is not good: {}\n  hint: {hint}", run.display(), first_line(&e))
    })?;
    if !is_linked(run, newest)? {
        let top = run.join(TRAINABLE);
        let what = match read_metadata(&top).and_then(|m| graft_step(&top, &m)) {
            Err(_) if !top.exists() => "is missing".to_string(),
            Err(e) => format!("is not readable ({})", first_line(&e).replace(&format!("{}: ", top.display()), "")),
            Ok(s) if s != *step => format!("is from step {s}"),
            Ok(_) => "differs from it (edited or torn)".to_string(),
        };
        bail!(
            "{} {what}, expected the newest checkpoint's trainable tensors (step {step}, {})\n  hint: a trainer stopped before linking its checkpoint, or the file was replaced; pass --run {} to evaluate the checkpoint itself; resuming the run (`graft train … --resume {}`) links the file again",
            top.display(),
            newest.join(TRAINABLE).display(),
            newest.display(),
            run.display()
        );
    }
    Ok((f, notes))
}

/// The `step` of a checkpoint file's metadata, after checking that graft wrote it:
/// a foreign safetensors file (no `format`, or another one) or one whose metadata
/// lacks the step is an error naming the file and the key.
pub fn graft_step(path: &Path, meta: &BTreeMap<String, String>) -> Result<u64> {
    let what = "a checkpoint of `graft train` carries `format`, `step`, `model` and `graph_fingerprint`";
    match meta.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => {
            bail!("{} is not a graft checkpoint: its metadata `format` is `{f}`, expected `{FORMAT}`", path.display())
        }
        None if meta.is_empty() => {
            bail!("{} is not a graft checkpoint: it has no metadata (`__metadata__`); {what}", path.display())
        }
        None => bail!("{} is not a graft checkpoint: its metadata has no `format` key; {what}", path.display()),
    }
    let step =
        meta.get("step").ok_or_else(|| anyhow!("{}: graft checkpoint metadata without `step`", path.display()))?;
    step.parse().map_err(|_| anyhow!("{}: metadata `step` is `{step}`, not a step number", path.display()))
}

/// Check a checkpoint directory (or a run of the older layout) before anything is
/// trusted or removed on its account: `state.json` parses and is in bounds, both
/// tensor files are graft's and from the state's step, and the trainable file's
/// `state_digest` is state.json's, and every tensor of both files still has the
/// CRC-32 recorded when it was written (older checkpoints have neither). Returns the
/// state and notes.
pub fn verify(dir: &Path) -> Result<(State, Vec<String>)> {
    prove(dir).map(|p| (p.state, p.notes))
}

/// A checkpoint [`verify`] has proven, its two tensor files still open: whoever loads
/// them reads the bytes that were checked, even if a trainer still writing the run
/// removes the checkpoint meanwhile (an open file outlives its name).
pub struct Proof {
    pub state: State,
    pub notes: Vec<String>,
    pub trainable: TrainableFile,
    pub optimizer: SafeFile,
}

/// [`verify`], keeping the files it proved open.
pub fn prove(dir: &Path) -> Result<Proof> {
    let (state, digest) = State::load(dir)?;
    let (mut notes, mut unchecked) = (Vec::new(), Vec::new());
    let mut open = |path: PathBuf| -> Result<SafeFile> {
        let file = SafeFile::open(&path)?;
        let meta = &file.header.metadata;
        let step = graft_step(&path, meta)?;
        if step != state.step {
            bail!(
                "{} is from step {step} but {STATE} from step {}: the checkpoint's files disagree",
                path.display(),
                state.step
            );
        }
        match meta.get(STATE_DIGEST) {
            Some(d) if *d == digest => {}
            Some(d) => bail!(
                "{}: its digest is {digest}, but {} was written with a {STATE} of digest {d}: {STATE} was edited or replaced after the checkpoint was written\n  hint: resume from an unedited checkpoint; flags such as --lr change hyperparameters on resume",
                dir.join(STATE).display(),
                path.display()
            ),
            None if notes.is_empty() => notes.push(format!(
                "{} has no `{STATE_DIGEST}` (written by an older graft): {STATE} is checked only against its bounds",
                path.display()
            )),
            None => {}
        }
        let checked = file.check_crc32().map_err(|e| match e {
            safetensors::SafetensorsError::Damaged { .. } | safetensors::SafetensorsError::BadRecord { .. } => anyhow!(
                "{e}\n  hint: restore the checkpoint's files from a copy, or resume from another checkpoint of the run"
            ),
            e => e.into(),
        })?;
        if !checked {
            unchecked.push(path.display().to_string());
        }
        Ok(file)
    };
    let trainable = TrainableFile::of(open(dir.join(TRAINABLE))?);
    let optimizer = open(dir.join(OPTIMIZER))?;
    if !unchecked.is_empty() {
        notes.push(format!(
            "{} {} no `{}` (written by an older graft): {} tensors' bytes are not checked",
            unchecked.join(" and "),
            if unchecked.len() == 1 { "carries" } else { "carry" },
            safetensors::TENSOR_CRC32,
            if unchecked.len() == 1 { "its" } else { "their" }
        ));
    }
    Ok(Proof { state, notes, trainable, optimizer })
}

/// Load RUN_DIR's trainable tensors over `leaves` (a model compiled in train mode whose
/// `plan` lists them): the run proven as `eval --run` proves it
/// ([`TrainableFile::open_run`]), then names and shapes checked. Returns notes to print.
pub fn apply_run(run: &Path, c: &Compiled, plan: &Plan, leaves: &mut Leaves) -> Result<Vec<String>> {
    let (f, mut notes) = TrainableFile::open_run(run)?;
    notes.extend(f.check(&Identity::of(c), &trainable_shapes(plan), false)?);
    f.apply(leaves)?;
    Ok(notes)
}

/// What changed between two IR texts, as lines only in one or the other (node
/// numbers left out, so an inserted node does not shift every line); empty when
/// nothing shows.
pub fn graph_changes(old: &str, new: &str) -> String {
    let norm = |l: &str| -> String {
        let body = l.split_once(" = ").map_or(l, |(_, b)| b);
        let mut out = String::new();
        let mut chars = body.chars().peekable();
        while let Some(ch) = chars.next() {
            out.push(ch);
            if ch == '%' {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            }
        }
        out
    };
    let count = |text: &str| {
        let mut m: BTreeMap<String, i64> = BTreeMap::new();
        for l in text.lines().skip(1) {
            *m.entry(norm(l)).or_default() += 1;
        }
        m
    };
    let (a, b) = (count(old), count(new));
    let only = |x: &BTreeMap<String, i64>, y: &BTreeMap<String, i64>| -> Vec<String> {
        x.iter().filter(|(l, n)| y.get(*l).copied().unwrap_or(0) < **n).map(|(l, _)| l.clone()).collect()
    };
    let (gone, new_lines) = (only(&a, &b), only(&b, &a));
    if gone.is_empty() && new_lines.is_empty() {
        return String::new();
    }
    let mut out = String::from(":\n");
    titled_list(&mut out, "  ", "in the run's graph only", &gone, 6);
    titled_list(&mut out, "  ", "in this spec's graph only", &new_lines, 6);
    out.trim_end().to_string()
}

/// A readable diff of a checkpoint's tensors (name, type text, shape) against the
/// expected (name, shape); `None` when they agree.
pub fn diff(have: &[(String, String, Vec<i64>)], want: &[(String, Vec<i64>)]) -> Option<String> {
    let have_map: BTreeMap<&str, (&str, &[i64])> =
        have.iter().map(|(n, t, s)| (n.as_str(), (t.as_str(), s.as_slice()))).collect();
    let want_map: BTreeMap<&str, &[i64]> = want.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
    let only_file: Vec<String> =
        have_map.iter().filter(|(n, _)| !want_map.contains_key(*n)).map(|(n, (t, _))| format!("{n}: {t}")).collect();
    let only_spec: Vec<String> = want_map
        .iter()
        .filter(|(n, _)| !have_map.contains_key(*n))
        .map(|(n, s)| format!("{n}: {}", type_text(DType::F32, s)))
        .collect();
    let shapes: Vec<String> = want_map
        .iter()
        .filter_map(|(n, s)| {
            let (t, hs) = have_map.get(n)?;
            (hs != s).then(|| format!("{n}: checkpoint {t}, spec {}", type_text(DType::F32, s)))
        })
        .collect();
    if only_file.is_empty() && only_spec.is_empty() && shapes.is_empty() {
        return None;
    }
    let mut out = String::new();
    let mut list = |title: &str, items: &[String]| titled_list(&mut out, "  ", title, items, MAX_LINES);
    list("in the checkpoint but not trainable in the spec", &only_file);
    list("trainable in the spec but not in the checkpoint", &only_spec);
    list("shape differs", &shapes);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_tensors_stay_readable() {
        let dir = tempfile::Builder::new().prefix("graft-ckpt-test-").tempdir().unwrap();
        let dir = dir.path();
        let path = dir.join("t.safetensors");
        let id = Identity { model: "m".into(), fingerprint: "00ff".into(), spec_hash: "aa".into(), ir: String::new() };
        let t = HostTensor::from_f32(&[3], &[1.0, 2.0, 3.0]).unwrap();
        write_trainable(&path, &id, 7, &[("a.weight".into(), t.clone())]).unwrap();
        let f = TrainableFile::open(&path).unwrap();
        assert_eq!(f.step(), Some(7));
        assert_eq!(f.meta["graph_fingerprint"], "00ff");
        assert_eq!(f.meta["params"], r#"[["a.weight",[3]]]"#);
        assert_eq!(f.file.tensor("a.weight").unwrap(), t);
        assert!(f.check(&id, &[("a.weight".into(), vec![3])], true).unwrap().is_empty());
        let other = Identity { fingerprint: "1234".into(), ..id.clone() };
        assert!(f
            .check(&other, &[("a.weight".into(), vec![3])], true)
            .unwrap_err()
            .to_string()
            .contains("different graph"));
        assert_eq!(f.check(&other, &[("a.weight".into(), vec![3])], false).unwrap().len(), 1);
        let err =
            f.check(&id, &[("a.weight".into(), vec![4]), ("b.bias".into(), vec![2])], false).unwrap_err().to_string();
        assert!(err.contains("a.weight: checkpoint f32[3], spec f32[4]"), "{err}");
        assert!(err.contains("trainable in the spec but not in the checkpoint (1):\n    b.bias: f32[2]"), "{err}");
    }

    /// `--resume A --out B` reads A while A's trainer may remove the checkpoint it
    /// chose: what was proven stays readable through the proof's open files.
    #[test]
    fn a_proven_checkpoint_stays_readable_after_its_directory_is_removed() {
        // The run lies in a scratch directory removed with the test, pass or fail (the
        // test removes the run itself half way).
        let scratch = tempfile::Builder::new().prefix("graft-ckpt-prove-").tempdir().unwrap();
        let run = scratch.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let id = Identity { model: "m".into(), fingerprint: "00".into(), spec_hash: "aa".into(), ir: "ir".into() };
        let state = super::super::state::tests::state();
        let w = HostTensor::from_f32(&[2, 3], &[1.0, -2.0, 3.5, 0.25, 8.0, -1.0]).unwrap();
        let m = HostTensor::from_f32(&[2, 3], &[0.5; 6]).unwrap();
        write_all(&run, &id, &[("a.weight".into(), w.clone())], &[("a.weight.exp_avg".into(), m.clone())], &state)
            .unwrap();
        let dir = super::super::rundir::latest(&run).unwrap().expect("a checkpoint");
        let proof = prove(&dir).unwrap();
        assert_eq!(proof.state, state);
        std::fs::remove_dir_all(&run).unwrap();
        assert!(!dir.exists() && verify(&dir).is_err(), "the checkpoint is gone by name");
        assert_eq!(proof.trainable.file.tensor("a.weight").unwrap(), w);
        assert_eq!(proof.trainable.graft_step().unwrap(), 4);
        assert_eq!(proof.optimizer.tensor("a.weight.exp_avg").unwrap(), m);
        assert!(proof.optimizer.check_crc32().unwrap(), "the same bytes as proven");
    }
}
