//! Leaf parameter values: every weights file checked, then loaded strictly.
//!
//! A parameter with source `Weights { binding, key }` reads `key` (relative to the
//! bound instance, i.e. a timm / Hugging Face key) from the file bound to `binding`;
//! a checkpoint that stores full paths (`binding.key`) works too. Loading is strict:
//! keys the spec needs but the file lacks, keys the file has but nothing reads, and
//! keys whose shape or dtype does not fit are collected over every file and reported
//! together, one line each (`blocks.8.attn.qkv.weight: file f32[768, 2304], spec
//! f32[2304, 768]`). `--allow-missing PATTERN` excuses keys matching a glob on either
//! side; an excused missing parameter is initialised ([`super::init::fallback_init`])
//! and named in a note (count and first paths) that every command prints.
//! Integer and boolean tensors nothing reads (buffers such as
//! `embeddings.position_ids`) are skipped. Float values are converted explicitly to
//! the parameter's dtype. A NaN or an infinity in a file is an error naming the file
//! and the tensor unless [`Bindings::allow_nonfinite`] (`--allow-nonfinite`).

use super::bindings::{Bindings, Declared};
use super::file_check::{abbreviate, Check, Found, Request};
use super::init::{fallback_init, init_values};
use super::weights::{check_finite, WeightFile};
use super::ParamError;
use crate::ir::{ParamInfo, ParamSource};
use crate::tensor::HostTensor;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

/// At most this many lines per list in the report.
const MAX_LINES: usize = 25;

/// The requests to each weights file, by its canonical path.
type ByFile<'a> = BTreeMap<PathBuf, Vec<Request<'a>>>;

/// Values of leaf parameters (loaded or initialised), by parameter path, on the CPU
/// in each parameter's dtype.
pub struct Leaves {
    values: HashMap<String, HostTensor>,
    allow_nonfinite: bool,
    /// What the caller should tell the user (keys a weights-only instance or a
    /// prefixed binding did not read).
    pub notes: Vec<String>,
}

impl Leaves {
    /// Whether non-finite values were allowed when these were loaded.
    pub fn allows_nonfinite(&self) -> bool {
        self.allow_nonfinite
    }

    pub fn get(&self, p: &ParamInfo) -> Result<&HostTensor, ParamError> {
        self.values.get(&p.path).ok_or_else(|| ParamError::Internal(format!("no value for parameter `{}`", p.path)))
    }

    /// Replace leaf `path`'s value (a trained checkpoint over the spec's weights),
    /// converted to the leaf's dtype; `false` when no such leaf was loaded.
    pub fn set(&mut self, path: &str, value: HostTensor) -> bool {
        match self.values.get_mut(path) {
            Some(v) => {
                *v = value.to_dtype(v.dtype);
                true
            }
            None => false,
        }
    }

    /// Load or initialise every leaf among `params` (folded ones contribute their
    /// leaves). All files are checked before any tensor is materialised.
    /// `declared`: parameters the spec declares that dead-code elimination removed;
    /// their keys are not "unexpected".
    pub fn load<'a>(
        params: impl IntoIterator<Item = &'a ParamInfo>,
        bindings: &Bindings,
        declared: &Declared,
        allow: &[String],
        seed: u64,
    ) -> Result<Leaves, ParamError> {
        let leaves = leaf_params(params);
        let (by_file, files) = weight_files(&leaves, bindings)?;
        let mut notes = Vec::new();
        let found = check_files(&Check { bindings, declared, allow }, &by_file, &files, &mut notes)?;
        let (values, at_init) = read_values(&leaves, bindings, &files, &found, seed)?;
        // Every parameter a weights file did not give (excused by --allow-missing) is
        // named: a bias left at zero changes outputs silently otherwise.
        if !at_init.is_empty() {
            notes.push(format!(
                "{} parameter{} left at {} initial value{} (not in {} weights file, excused by --allow-missing): {}",
                at_init.len(),
                if at_init.len() == 1 { "" } else { "s" },
                if at_init.len() == 1 { "its" } else { "their" },
                if at_init.len() == 1 { "" } else { "s" },
                if at_init.len() == 1 { "its" } else { "their" },
                abbreviate(&at_init, 8)
            ));
        }
        Ok(Leaves { values, allow_nonfinite: bindings.allow_nonfinite, notes })
    }
}

/// The leaf parameters among `params` by path: folded ones give their leaves.
fn leaf_params<'a>(params: impl IntoIterator<Item = &'a ParamInfo>) -> BTreeMap<String, ParamInfo> {
    let mut leaves: BTreeMap<String, ParamInfo> = BTreeMap::new();
    for p in params {
        match &p.source {
            ParamSource::Folded { expr } => {
                for l in expr.leaves() {
                    leaves.entry(l.path.clone()).or_insert_with(|| l.clone());
                }
            }
            _ => {
                leaves.entry(p.path.clone()).or_insert_with(|| p.clone());
            }
        }
    }
    leaves
}

/// The weights files the leaves read, each with its requests, opened in path order.
fn weight_files<'p>(
    leaves: &'p BTreeMap<String, ParamInfo>,
    bindings: &Bindings,
) -> Result<(ByFile<'p>, Vec<WeightFile>), ParamError> {
    // Requests per file, files opened once even when several bindings share one.
    let mut by_file: ByFile = BTreeMap::new();
    for p in leaves.values() {
        if let Some((binding, key)) = bindings.source(p) {
            let file = bindings.files.get(&binding).ok_or_else(|| {
                ParamError::Binding(format!(
                    "`{}` reads weights binding `{binding}`, which has no file (pass --weights {binding}=FILE)",
                    p.path
                ))
            })?;
            let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
            by_file.entry(file).or_default().push((binding, key, p));
        }
    }
    let mut files = Vec::new();
    for path in by_file.keys() {
        // Only a missing file "does not exist"; a symlink loop or a FIFO is
        // reported as what it is when the file is opened.
        if std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            let names: BTreeSet<&str> = by_file[path].iter().map(|(b, _, _)| b.as_str()).collect();
            let names: Vec<&str> = names.into_iter().collect();
            return Err(ParamError::Binding(format!(
                "weights file {} (bound to `{}`) does not exist; pass --weights {}=FILE",
                path.display(),
                names.join("`, `"),
                names[0]
            )));
        }
        files.push(WeightFile::open(path)?);
    }
    Ok((by_file, files))
}

/// Check every file, then report every problem at once; where each parameter's value
/// was found.
fn check_files(
    check: &Check,
    by_file: &ByFile,
    files: &[WeightFile],
    notes: &mut Vec<String>,
) -> Result<Found, ParamError> {
    let mut report = String::new();
    let mut problems = 0;
    let mut gaps = false;
    let mut found = Found::new();
    for (fi, (path, reqs)) in by_file.iter().enumerate() {
        let f = &files[fi];
        let (missing, mismatched, used) = check.match_keys(fi, f, reqs, &mut found);
        let names: BTreeSet<&str> = reqs.iter().map(|(b, _, _)| b.as_str()).collect();
        let names: Vec<&str> = names.into_iter().collect();
        let unexpected = check.unread_keys(path, f, reqs, &names, &used, notes);
        if missing.is_empty() && unexpected.is_empty() && mismatched.is_empty() {
            continue;
        }
        problems += missing.len() + unexpected.len() + mismatched.len();
        gaps |= !missing.is_empty() || !unexpected.is_empty();
        let _ = writeln!(report, "  {} ← {}", names.join(", "), path.display());
        if let Some(h) = prefix_hint(&missing, &unexpected) {
            let _ = writeln!(report, "    hint: {h}");
        }
        list(&mut report, "missing from the file", &missing);
        list(&mut report, "in the file but not in the spec", &unexpected);
        list(&mut report, "shape or dtype mismatch", &mismatched);
    }
    if problems > 0 {
        if gaps {
            report.push_str("  hint: --allow-missing PATTERN excuses deliberate gaps (a glob on keys, `*` matches any text), e.g. --allow-missing 'head.*'\n");
        }
        return Err(ParamError::Mismatch { problems, report: report.trim_end().to_string() });
    }
    Ok(found)
}

/// Each leaf's value: read from its file (checked finite, resampled, converted to its
/// dtype), or initialised; the paths of the leaves initialised in place of a file's
/// value.
fn read_values<'p>(
    leaves: &'p BTreeMap<String, ParamInfo>,
    bindings: &Bindings,
    files: &[WeightFile],
    found: &Found,
    seed: u64,
) -> Result<(HashMap<String, HostTensor>, Vec<&'p str>), ParamError> {
    let mut values = HashMap::new();
    let mut at_init: Vec<&str> = Vec::new();
    for p in leaves.values() {
        let t = match (bindings.source(p), found.get(&p.path), &p.source) {
            (Some((binding, spec_key)), Some((fi, key)), _) => {
                let t = files[*fi].tensor(key)?;
                if !bindings.allow_nonfinite {
                    check_finite(&files[*fi].path, key, &t)?;
                }
                let t = match bindings.resample_rule(&binding, &spec_key) {
                    Some(r) => super::resample::apply(r, &t)?,
                    None => t,
                };
                // A scalar stored as `[1]` (an M2PT λ) takes the spec's shape.
                let mut t = t.to_dtype(p.dtype);
                t.shape = p.shape.clone();
                t
            }
            (Some(_), None, _) => {
                at_init.push(&p.path);
                init_values(&fallback_init(p), &p.shape, p.dtype, seed, &p.path)
            }
            (None, _, ParamSource::Init { init }) => init_values(init, &p.shape, p.dtype, seed, &p.path),
            (None, _, _) => return Err(ParamError::Internal(format!("`{}` has no value source", p.path))),
        };
        values.insert(p.path.clone(), t);
    }
    Ok((values, at_init))
}

fn list(out: &mut String, title: &str, items: &[String]) {
    titled_list(out, "    ", title, items, MAX_LINES);
}

/// `indent title (n):` then up to `max` items one per line, then `... and k more`.
pub(crate) fn titled_list(out: &mut String, indent: &str, title: &str, items: &[String], max: usize) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{title} ({}):", items.len());
    for it in items.iter().take(max) {
        let _ = writeln!(out, "{indent}  {it}");
    }
    if items.len() > max {
        let _ = writeln!(out, "{indent}  ... and {} more", items.len() - max);
    }
}

/// When the file's keys are the spec's under a common prefix (`model.`, `module.`).
fn prefix_hint(missing: &[String], unexpected: &[String]) -> Option<String> {
    let key = |s: &String| s.split(": ").next().unwrap_or("").to_string();
    let m: Vec<String> = missing.iter().map(key).collect();
    let u: BTreeSet<String> = unexpected.iter().map(key).collect();
    let first = m.first()?;
    let prefix = u.iter().find_map(|k| k.strip_suffix(first.as_str()).filter(|p| p.ends_with('.')))?;
    let hits = m.iter().filter(|k| u.contains(&format!("{prefix}{k}"))).count();
    (hits * 2 >= m.len()).then(|| {
        format!("the file's keys carry the prefix `{prefix}` ({hits} of {} missing keys are there under it)", m.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Init};
    use std::path::Path;

    fn param(path: &str, shape: &[i64], key: Option<&str>) -> ParamInfo {
        ParamInfo {
            path: path.into(),
            shape: shape.to_vec(),
            dtype: DType::F32,
            trainable: false,
            component: "m".into(),
            source: match key {
                Some(k) => ParamSource::Weights { binding: "m".into(), key: k.into() },
                None => ParamSource::Init { init: Init::Ones },
            },
        }
    }

    /// A scratch directory for one test's files, removed when it drops.
    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("graft-weights-test-").tempdir().unwrap()
    }

    fn file(dir: &tempfile::TempDir, name: &str, tensors: &[(&str, HostTensor)]) -> PathBuf {
        let path = dir.path().join(name);
        let v: Vec<(String, HostTensor)> = tensors.iter().map(|(k, t)| (k.to_string(), t.clone())).collect();
        crate::safetensors::write(&path, &v, &BTreeMap::new()).unwrap();
        path
    }

    fn bind(path: &Path) -> Bindings {
        Bindings { files: BTreeMap::from([("m".to_string(), path.to_path_buf())]), ..Bindings::default() }
    }

    fn f32s(shape: &[i64], v: f32) -> HostTensor {
        let n = crate::tensor::numel(shape).unwrap();
        HostTensor::from_f32(shape, &vec![v; n]).unwrap()
    }

    fn i64s(n: i64) -> HostTensor {
        HostTensor::from_i64(&[n], &(0..n).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn strict_report_lists_every_problem() {
        let dir = scratch();
        let params = vec![
            param("m.blocks.8.attn.qkv.weight", &[6, 2], Some("blocks.8.attn.qkv.weight")),
            param("m.b.bias", &[3], Some("b.bias")),
            param("m.c.weight", &[4], Some("c.weight")),
            param("m.d", &[2], Some("d")),
            param("x.init", &[2], None),
        ];
        let path = file(
            &dir,
            "bad.safetensors",
            &[
                ("blocks.8.attn.qkv.weight", f32s(&[2, 6], 0.0)),
                ("c.weight", i64s(4)),
                ("d", HostTensor::from_f32(&[2], &[1.5, -2.0]).unwrap().to_dtype(DType::F16)),
                ("embeddings.position_ids", i64s(5)),
                ("extra", f32s(&[1], 0.0)),
                ("dead.weight", f32s(&[3, 3], 0.0)),
                ("dead.bias", f32s(&[3], 0.0)),
            ],
        );
        // `dead` is declared by the spec but dead-code eliminated (an auxiliary layer).
        let declared = Declared::from_sites(&[("m.dead".to_string(), "linear".to_string())]);
        assert!(
            declared.contains("m.dead.bias") && !declared.contains("m.dead.other") && !declared.contains("m.extra")
        );
        let err = Leaves::load(&params, &bind(&path), &declared, &[], 0).err().expect("strict").to_string();
        for line in [
            "weights do not match the spec (4 problems)",
            "missing from the file (1):\n      b.bias: spec f32[3]",
            "in the file but not in the spec (1):\n      extra: file f32[1]",
            "blocks.8.attn.qkv.weight: file f32[2, 6], spec f32[6, 2]",
            "c.weight: file i64[4], spec f32[4]",
        ] {
            assert!(err.contains(line), "missing {line:?} in:\n{err}");
        }
        assert!(!err.contains("position_ids"), "integer buffers are skipped:\n{err}");
        assert!(!err.contains("dead"), "declared but unused keys are not unexpected:\n{err}");
        assert!(err.contains("--allow-missing"), "{err}");

        // Fixed file; the gaps excused by patterns (on the relative or the full key).
        let path = file(
            &dir,
            "good.safetensors",
            &[
                ("blocks.8.attn.qkv.weight", f32s(&[6, 2], 1.0)),
                ("c.weight", f32s(&[4], 1.0).to_dtype(DType::F64)),
                ("d", HostTensor::from_f32(&[2], &[1.5, -2.0]).unwrap().to_dtype(DType::F16)),
                ("embeddings.position_ids", i64s(5)),
                ("extra", f32s(&[1], 0.0)),
            ],
        );
        let allow = vec!["m.b.*".to_string(), "ext*".to_string()];
        let leaves = Leaves::load(&params, &bind(&path), &Declared::default(), &allow, 0).unwrap();
        let get = |i: usize| leaves.get(&params[i]).unwrap().clone();
        assert_eq!(get(0).shape, vec![6, 2]);
        assert_eq!(get(1).as_f32().unwrap(), vec![0.0; 3], "an excused missing bias starts at zero");
        assert_eq!(get(2).dtype, DType::F32, "f64 converted to the parameter's f32");
        assert_eq!(get(3).as_f32().unwrap(), vec![1.5, -2.0], "f16 converted to f32");
        assert_eq!(get(4), f32s(&[2], 1.0), "init rule");
        // The excused gap is named, never silent.
        let note = leaves.notes.iter().find(|n| n.contains("initial value")).expect("a note of the parameter at init");
        assert!(note.starts_with("1 parameter left at its initial value") && note.ends_with(": m.b.bias"), "{note}");
    }

    #[test]
    fn older_spellings_load_without_rename_rules() {
        let dir = scratch();
        let q = "encoder.layer.0.attention.attention.query.bias";
        let params = vec![param(&format!("m.{q}"), &[2], Some(q))];
        let path = file(&dir, "q_bias.safetensors", &[("encoder.layer.0.attention.attention.q_bias", f32s(&[2], 3.0))]);
        let leaves = Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).unwrap();
        assert_eq!(leaves.get(&params[0]).unwrap(), &f32s(&[2], 3.0));
    }

    #[test]
    fn full_path_keys_and_prefix_hint() {
        let dir = scratch();
        let params = vec![param("m.a.weight", &[2], Some("a.weight")), param("m.b.weight", &[2], Some("b.weight"))];
        // A checkpoint keyed by full parameter paths loads.
        let path = file(&dir, "full.safetensors", &[("m.a.weight", f32s(&[2], 1.0)), ("m.b.weight", f32s(&[2], 1.0))]);
        assert!(Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).is_ok());
        // A run's checkpoint also holds other components' tensors: not unexpected here.
        let path = file(
            &dir,
            "run.safetensors",
            &[("m.a.weight", f32s(&[2], 1.0)), ("m.b.weight", f32s(&[2], 1.0)), ("head.weight", f32s(&[3], 1.0))],
        );
        assert!(Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).is_ok());
        // But under the binding's own prefix, an extra key still is.
        let path = file(
            &dir,
            "extra.safetensors",
            &[("m.a.weight", f32s(&[2], 1.0)), ("m.b.weight", f32s(&[2], 1.0)), ("m.c.weight", f32s(&[3], 1.0))],
        );
        let err = Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).err().unwrap().to_string();
        assert!(err.contains("m.c.weight"), "{err}");
        let path = file(
            &dir,
            "pre.safetensors",
            &[("module.a.weight", f32s(&[2], 1.0)), ("module.b.weight", f32s(&[2], 1.0))],
        );
        let err = Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).err().unwrap().to_string();
        assert!(err.contains("the file's keys carry the prefix `module.`"), "{err}");
    }

    #[test]
    fn unreadable_files_are_clear_errors() {
        let params = vec![param("m.a.weight", &[2], Some("a.weight"))];
        let scratch = scratch();
        let dir = scratch.path();
        let junk = dir.join("junk.bin");
        std::fs::write(&junk, b"this is not a checkpoint at all").unwrap();
        let err = Leaves::load(&params, &bind(&junk), &Declared::default(), &[], 0).err().unwrap().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
        let zip = dir.join("broken.pt");
        std::fs::write(&zip, b"PK\x03\x04 but not really a zip archive").unwrap();
        let err = Leaves::load(&params, &bind(&zip), &Declared::default(), &[], 0).err().unwrap().to_string();
        assert!(err.contains("broken.pt: a PyTorch checkpoint (torch.save's zip format)"), "{err}");
        assert!(err.contains("weights_only=True") && err.contains("broken.safetensors"), "{err}");
        let legacy = dir.join("legacy.pt");
        std::fs::write(&legacy, b"\x80\x02\x8a\x0alegacy pickle").unwrap();
        let err = Leaves::load(&params, &bind(&legacy), &Declared::default(), &[], 0).err().unwrap().to_string();
        assert!(err.contains("legacy"), "{err}");
        let err = Leaves::load(&params, &bind(&dir.join("absent.safetensors")), &Declared::default(), &[], 0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
