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
use super::glob::glob_match;
use super::init::{fallback_init, init_values};
use super::weights::{check_finite, WeightFile};
use super::ParamError;
use crate::ir::{ParamInfo, ParamSource};
use crate::tensor::{type_text, HostTensor};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

/// At most this many lines per list in the report.
const MAX_LINES: usize = 25;

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
        // Requests per file, files opened once even when several bindings share one.
        let mut by_file: BTreeMap<PathBuf, Vec<(String, String, &ParamInfo)>> = BTreeMap::new();
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
        // Check everything, then report everything at once.
        let mut report = String::new();
        let mut notes = Vec::new();
        let mut problems = 0;
        let mut gaps = false;
        let mut found: HashMap<String, (usize, String)> = HashMap::new();
        for (fi, (path, reqs)) in by_file.iter().enumerate() {
            let f = &files[fi];
            let (mut missing, mut mismatched) = (Vec::new(), Vec::new());
            let mut used: BTreeSet<&str> = BTreeSet::new();
            // Bindings with key rules look their keys up through them.
            let mapped: HashMap<&str, HashMap<String, &str>> = reqs
                .iter()
                .filter_map(|(b, _, _)| bindings.maps.get(b).filter(|m| !m.is_identity()).map(|m| (b.as_str(), m)))
                .map(|(b, m)| (b, f.metas.keys().filter_map(|k| m.to_spec(k).map(|s| (s, k.as_str()))).collect()))
                .collect();
            for (binding, key, p) in reqs {
                let full = format!("{binding}.{key}");
                let excused = allow.iter().any(|a| glob_match(a, key) || glob_match(a, &full));
                let lookup = |key: &str| {
                    if let Some(m) = mapped.get(binding.as_str()) {
                        m.get(key).copied()
                    } else if let Some((k, _)) = f.metas.get_key_value(key) {
                        Some(k.as_str())
                    } else {
                        f.metas.get_key_value(&format!("{binding}.{key}")).map(|(k, _)| k.as_str())
                    }
                };
                // A key std spells as a newer release saves it may be stored under its
                // older name (`q_bias` for `query.bias`).
                let hit = lookup(key).or_else(|| super::spellings::older(key).and_then(|k| lookup(&k)));
                let spec = type_text(p.dtype, &p.shape);
                match hit {
                    None if excused => {}
                    None => missing.push(format!("{key}: spec {spec}")),
                    Some(k) => {
                        used.insert(k);
                        let m = &f.metas[k];
                        let fits_kind = m.loadable && m.float == p.dtype.is_float();
                        let rule = bindings.resample_rule(binding, key);
                        let fits_shape = match rule {
                            // The file holds the checkpoint's grid, the spec the new one.
                            Some(r) => {
                                let (file, spec) = r.shapes(&p.shape);
                                m.shape == file && p.shape == spec
                            }
                            None => same_values_shape(&m.shape, &p.shape),
                        };
                        if !fits_shape || !fits_kind {
                            let why = match rule {
                                Some(r) => format!(
                                    " (resample {:?} -> {:?} keep {} expects file {:?}, spec {:?})",
                                    r.from,
                                    r.to,
                                    r.keep,
                                    r.shapes(&p.shape).0,
                                    r.shapes(&p.shape).1
                                ),
                                None => String::new(),
                            };
                            mismatched.push(format!("{key}: file {}, spec {spec}{why}", m.text));
                        } else {
                            found.insert(p.path.clone(), (fi, k.to_string()));
                        }
                    }
                }
            }
            // A file keyed by full graph paths (a training run's checkpoint holds several
            // components) answers only for the keys under the bindings that read it.
            let prefixes: Vec<String> = reqs.iter().map(|(b, _, _)| format!("{b}.")).collect();
            let full_paths = used.iter().any(|k| prefixes.iter().any(|p| k.starts_with(p.as_str())));
            let unexpected: Vec<String> = f
                .metas
                .iter()
                .filter(|(k, m)| !used.contains(k.as_str()) && !m.integer)
                .filter(|(k, _)| !full_paths || prefixes.iter().any(|p| k.starts_with(p.as_str())))
                .filter(|(k, _)| {
                    !reqs.iter().any(|(b, _, _)| {
                        let spec = bindings.maps.get(b).and_then(|m| m.to_spec(k)).unwrap_or_else(|| k.to_string());
                        declared.contains(&format!("{b}.{spec}")) || declared.contains(k)
                    })
                })
                .filter(|(k, _)| {
                    !allow
                        .iter()
                        .any(|a| glob_match(a, k) || reqs.iter().any(|(b, _, _)| glob_match(a, &format!("{b}.{k}"))))
                })
                .map(|(k, m)| format!("{k}: file {}", m.text))
                .collect();
            let names: BTreeSet<&str> = reqs.iter().map(|(b, _, _)| b.as_str()).collect();
            let names: Vec<&str> = names.into_iter().collect();
            // Keys of parameters the spec declares but no output uses (a pooler when
            // only the tokens are output): accepted, and counted in a note.
            let dead: Vec<&str> = f
                .metas
                .iter()
                .filter(|(k, m)| !used.contains(k.as_str()) && !m.integer)
                .filter(|(k, _)| !full_paths || prefixes.iter().any(|p| k.starts_with(p.as_str())))
                .filter(|(k, _)| {
                    reqs.iter().any(|(b, _, _)| {
                        let spec = bindings.maps.get(b).and_then(|m| m.to_spec(k)).unwrap_or_else(|| k.to_string());
                        declared.contains(&format!("{b}.{spec}")) || declared.contains(k)
                    })
                })
                .map(|(k, _)| k.as_str())
                .collect();
            if !dead.is_empty() {
                notes.push(format!(
                    "{} key{} of {} belong to parameters that no output uses, not read ({})",
                    dead.len(),
                    if dead.len() == 1 { "" } else { "s" },
                    path.display(),
                    abbreviate(&dead, 8)
                ));
            }
            // A binding with a prefix reads the part of the file under it (a backbone
            // inside a full Hugging Face checkpoint): the rest is noted, not refused.
            let outside = |k: &str| {
                names
                    .iter()
                    .all(|b| bindings.maps.get(*b).is_some_and(|m| m.prefix.is_some() && m.to_spec(k).is_none()))
            };
            let (elsewhere, unexpected): (Vec<String>, Vec<String>) =
                unexpected.into_iter().partition(|u| outside(u.split(": ").next().unwrap_or("")));
            if !elsewhere.is_empty() {
                let keys: Vec<&str> = elsewhere.iter().map(|u| u.split(": ").next().unwrap_or("")).collect();
                let prefixes: BTreeSet<&str> =
                    names.iter().filter_map(|b| bindings.maps.get(*b).and_then(|m| m.prefix.as_deref())).collect();
                notes.push(format!(
                    "`{}` reads the keys under `{}` of {}: {} other key{} not read ({})",
                    names.join("`, `"),
                    prefixes.into_iter().collect::<Vec<_>>().join("`, `"),
                    path.display(),
                    keys.len(),
                    if keys.len() == 1 { "" } else { "s" },
                    abbreviate(&keys, 8)
                ));
            }
            // An instance built for its weights only reads what it needs of a full
            // checkpoint (an auxiliary model's classifier is not an error).
            let unexpected = if !unexpected.is_empty() && names.iter().all(|b| bindings.weights_only.contains(*b)) {
                let keys: Vec<&str> = unexpected.iter().map(|u| u.split(": ").next().unwrap_or("")).collect();
                notes.push(format!(
                    "`{}` is built for its weights only: {} key{} of {} not read ({})",
                    names.join("`, `"),
                    keys.len(),
                    if keys.len() == 1 { "" } else { "s" },
                    path.display(),
                    abbreviate(&keys, 8)
                ));
                Vec::new()
            } else {
                unexpected
            };
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

/// The file's shape fits the spec's: equal, or both one value (`[1]` for `[]`).
fn same_values_shape(file: &[i64], spec: &[i64]) -> bool {
    file == spec || (file.iter().product::<i64>() == 1 && spec.iter().product::<i64>() == 1)
}

/// `a, b, c and 5 more`.
fn abbreviate(items: &[&str], max: usize) -> String {
    let mut s = items.iter().take(max).copied().collect::<Vec<_>>().join(", ");
    if items.len() > max {
        s += &format!(" and {} more", items.len() - max);
    }
    s
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

    fn file(name: &str, tensors: &[(&str, HostTensor)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("graft-weights-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
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
        let params = vec![
            param("m.blocks.8.attn.qkv.weight", &[6, 2], Some("blocks.8.attn.qkv.weight")),
            param("m.b.bias", &[3], Some("b.bias")),
            param("m.c.weight", &[4], Some("c.weight")),
            param("m.d", &[2], Some("d")),
            param("x.init", &[2], None),
        ];
        let path = file(
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
        let q = "encoder.layer.0.attention.attention.query.bias";
        let params = vec![param(&format!("m.{q}"), &[2], Some(q))];
        let path = file("q_bias.safetensors", &[("encoder.layer.0.attention.attention.q_bias", f32s(&[2], 3.0))]);
        let leaves = Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).unwrap();
        assert_eq!(leaves.get(&params[0]).unwrap(), &f32s(&[2], 3.0));
    }

    #[test]
    fn full_path_keys_and_prefix_hint() {
        let params = vec![param("m.a.weight", &[2], Some("a.weight")), param("m.b.weight", &[2], Some("b.weight"))];
        // A checkpoint keyed by full parameter paths loads.
        let path = file("full.safetensors", &[("m.a.weight", f32s(&[2], 1.0)), ("m.b.weight", f32s(&[2], 1.0))]);
        assert!(Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).is_ok());
        // A run's checkpoint also holds other components' tensors: not unexpected here.
        let path = file(
            "run.safetensors",
            &[("m.a.weight", f32s(&[2], 1.0)), ("m.b.weight", f32s(&[2], 1.0)), ("head.weight", f32s(&[3], 1.0))],
        );
        assert!(Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).is_ok());
        // But under the binding's own prefix, an extra key still is.
        let path = file(
            "extra.safetensors",
            &[("m.a.weight", f32s(&[2], 1.0)), ("m.b.weight", f32s(&[2], 1.0)), ("m.c.weight", f32s(&[3], 1.0))],
        );
        let err = Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).err().unwrap().to_string();
        assert!(err.contains("m.c.weight"), "{err}");
        let path =
            file("pre.safetensors", &[("module.a.weight", f32s(&[2], 1.0)), ("module.b.weight", f32s(&[2], 1.0))]);
        let err = Leaves::load(&params, &bind(&path), &Declared::default(), &[], 0).err().unwrap().to_string();
        assert!(err.contains("the file's keys carry the prefix `module.`"), "{err}");
    }

    #[test]
    fn unreadable_files_are_clear_errors() {
        let params = vec![param("m.a.weight", &[2], Some("a.weight"))];
        let dir = std::env::temp_dir().join(format!("graft-weights-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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
