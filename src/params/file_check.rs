//! One weights file checked against the parameters that read it: which requested keys
//! it gives (and whether their shape and dtype fit), which it lacks, and which of its
//! own keys nothing reads, apart from those a note accounts for (keys of parameters no
//! output uses, keys outside a prefixed binding, keys a weights-only instance skips).
//! [`super::leaves`] runs this for every file and reports every problem together.

use super::bindings::{Bindings, Declared};
use super::glob::glob_match;
use super::weights::WeightFile;
use crate::ir::ParamInfo;
use crate::tensor::type_text;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// A parameter's request to a weights file: its binding, its key under the binding,
/// the parameter.
pub(super) type Request<'a> = (String, String, &'a ParamInfo);

/// Where a parameter's value was found: parameter path → (file index, key in the file).
pub(super) type Found = HashMap<String, (usize, String)>;

/// What every file is checked against: the bindings, the parameters the spec declares
/// and the `--allow-missing` patterns.
pub(super) struct Check<'a> {
    pub bindings: &'a Bindings,
    pub declared: &'a Declared,
    pub allow: &'a [String],
}

impl Check<'_> {
    /// Look each request up in file `fi`: the spec keys it lacks and the keys whose
    /// shape or dtype does not fit (report lines), and the file keys read; a fitting
    /// key goes into `found`.
    pub(super) fn match_keys<'f>(
        &self,
        fi: usize,
        f: &'f WeightFile,
        reqs: &[Request],
        found: &mut Found,
    ) -> (Vec<String>, Vec<String>, BTreeSet<&'f str>) {
        let (mut missing, mut mismatched) = (Vec::new(), Vec::new());
        let mut used: BTreeSet<&str> = BTreeSet::new();
        // Bindings with key rules look their keys up through them.
        let mapped: HashMap<&str, HashMap<String, &str>> = reqs
            .iter()
            .filter_map(|(b, _, _)| self.bindings.maps.get(b).filter(|m| !m.is_identity()).map(|m| (b.as_str(), m)))
            .map(|(b, m)| (b, f.metas.keys().filter_map(|k| m.to_spec(k).map(|s| (s, k.as_str()))).collect()))
            .collect();
        for (binding, key, p) in reqs {
            let full = format!("{binding}.{key}");
            let excused = self.allow.iter().any(|a| glob_match(a, key) || glob_match(a, &full));
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
                    let rule = self.bindings.resample_rule(binding, key);
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
        (missing, mismatched, used)
    }

    /// The keys of file `f` at `path` that nothing read and no note accounts for
    /// (report lines); the notes go to `notes`. `names`: the bindings that read it.
    pub(super) fn unread_keys(
        &self,
        path: &Path,
        f: &WeightFile,
        reqs: &[Request],
        names: &[&str],
        used: &BTreeSet<&str>,
        notes: &mut Vec<String>,
    ) -> Vec<String> {
        // A file keyed by full graph paths (a training run's checkpoint holds several
        // components) answers only for the keys under the bindings that read it.
        let prefixes: Vec<String> = reqs.iter().map(|(b, _, _)| format!("{b}.")).collect();
        let full_paths = used.iter().any(|k| prefixes.iter().any(|p| k.starts_with(p.as_str())));
        let unread: Vec<_> = f
            .metas
            .iter()
            .filter(|(k, m)| !used.contains(k.as_str()) && !m.integer)
            .filter(|(k, _)| !full_paths || prefixes.iter().any(|p| k.starts_with(p.as_str())))
            .collect();
        let unexpected: Vec<String> = unread
            .iter()
            .filter(|(k, _)| !self.declared_key(reqs, k))
            .filter(|(k, _)| {
                !self
                    .allow
                    .iter()
                    .any(|a| glob_match(a, k) || reqs.iter().any(|(b, _, _)| glob_match(a, &format!("{b}.{k}"))))
            })
            .map(|(k, m)| format!("{k}: file {}", m.text))
            .collect();
        // Keys of parameters the spec declares but no output uses (a pooler when
        // only the tokens are output): accepted, and counted in a note.
        let dead: Vec<&str> =
            unread.iter().filter(|(k, _)| self.declared_key(reqs, k)).map(|(k, _)| k.as_str()).collect();
        if !dead.is_empty() {
            notes.push(format!(
                "{} key{} of {} belong to parameters that no output uses, not read ({})",
                dead.len(),
                if dead.len() == 1 { "" } else { "s" },
                path.display(),
                abbreviate(&dead, 8)
            ));
        }
        self.set_aside(path, names, unexpected, notes)
    }

    /// Whether file key `k` belongs to a parameter the spec declares under one of the
    /// bindings of `reqs` (read through its key rules).
    fn declared_key(&self, reqs: &[Request], k: &str) -> bool {
        reqs.iter().any(|(b, _, _)| {
            let spec = self.bindings.maps.get(b).and_then(|m| m.to_spec(k)).unwrap_or_else(|| k.to_string());
            self.declared.contains(&format!("{b}.{spec}")) || self.declared.contains(k)
        })
    }

    /// Of the `unexpected` keys of the file at `path`, those a prefixed binding or a
    /// weights-only instance leaves unread on purpose go into a note; the rest remain.
    fn set_aside(&self, path: &Path, names: &[&str], unexpected: Vec<String>, notes: &mut Vec<String>) -> Vec<String> {
        let bindings = self.bindings;
        // A binding with a prefix reads the part of the file under it (a backbone
        // inside a full Hugging Face checkpoint): the rest is noted, not refused.
        let outside = |k: &str| {
            names.iter().all(|b| bindings.maps.get(*b).is_some_and(|m| m.prefix.is_some() && m.to_spec(k).is_none()))
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
        if !unexpected.is_empty() && names.iter().all(|b| bindings.weights_only.contains(*b)) {
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
        }
    }
}

/// The file's shape fits the spec's: equal, or both one value (`[1]` for `[]`).
fn same_values_shape(file: &[i64], spec: &[i64]) -> bool {
    file == spec || (file.iter().product::<i64>() == 1 && spec.iter().product::<i64>() == 1)
}

/// `a, b, c and 5 more`.
pub(super) fn abbreviate(items: &[&str], max: usize) -> String {
    let mut s = items.iter().take(max).copied().collect::<Vec<_>>().join(", ");
    if items.len() > max {
        s += &format!(" and {} more", items.len() - max);
    }
    s
}
