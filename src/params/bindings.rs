//! Where weights come from: the spec's bindings with command-line overrides, and the
//! parameters the spec declares (live or not) so that a file's keys for dead-code
//! eliminated layers are not reported as unexpected.

use super::weights::PytorchReader;
use super::ParamError;
use crate::ir::{ParamInfo, ParamSource};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Weights bindings in effect: the spec's (resolved against its directory), with
/// command-line overrides, and bindings given only on the command line (a component
/// whose parameters the spec initialises, e.g. trained adapters for `graft fuse`).
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    pub files: BTreeMap<String, PathBuf>,
    pub cli_only: BTreeSet<String>,
    /// How to read PyTorch zip checkpoints, when the build can.
    pub pytorch: Option<PytorchReader>,
}

impl Bindings {
    /// `spec_weights`: binding → file as written in the spec; `cli`: `BINDING=FILE`
    /// arguments; `components`: names a command-line-only binding may use.
    pub fn resolve(
        spec_dir: &Path,
        spec_weights: &BTreeMap<String, String>,
        cli: &[String],
        components: &BTreeSet<String>,
    ) -> Result<Bindings, ParamError> {
        let mut b = Bindings::default();
        for (k, f) in spec_weights {
            b.files.insert(k.clone(), spec_dir.join(f));
        }
        for arg in cli {
            let (name, file) = arg
                .split_once('=')
                .filter(|(n, f)| !n.is_empty() && !f.is_empty())
                .ok_or_else(|| ParamError::Binding(format!("--weights expects BINDING=FILE, got `{arg}`")))?;
            if !spec_weights.contains_key(name) {
                if !components.contains(name) {
                    let known: Vec<&str> = spec_weights.keys().map(String::as_str).collect();
                    return Err(ParamError::Binding(format!(
                        "--weights {name}=...: the spec has no weights binding or component `{name}` (its bindings: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    )));
                }
                b.cli_only.insert(name.to_string());
            }
            b.files.insert(name.to_string(), PathBuf::from(file));
        }
        Ok(b)
    }

    /// A compiled spec's bindings, resolved against the spec's directory, with `cli`
    /// (`BINDING=FILE` arguments) applied; a command-line-only binding may name any
    /// component, head, adapter or pathway.
    pub fn of_spec(spec: &Path, c: &crate::pipeline::Compiled, cli: &[String]) -> Result<Bindings, ParamError> {
        let dir = spec.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut names: BTreeSet<String> = c.components.iter().map(|x| x.name.clone()).collect();
        names.extend(c.heads.iter().cloned());
        names.extend(c.adapters.iter().cloned());
        names.extend(c.pathways.iter().cloned());
        Bindings::resolve(dir, &c.weights, cli, &names)
    }

    /// Where a leaf parameter's value comes from: `Some((binding, key))` for a file.
    pub fn source(&self, p: &ParamInfo) -> Option<(String, String)> {
        match &p.source {
            ParamSource::Weights { binding, key } => Some((binding.clone(), key.clone())),
            ParamSource::Init { .. } => self
                .cli_only
                .iter()
                .find_map(|b| p.path.strip_prefix(&format!("{b}.")).map(|k| (b.clone(), k.to_string()))),
            ParamSource::Folded { .. } => None,
        }
    }
}

/// Parameters the spec declares, live or not: an auxiliary backbone built for its
/// weights keeps only what a pathway borrows, but its file legitimately holds the rest.
/// Built from the compiled model's sites (instance paths and kinds).
#[derive(Clone, Debug, Default)]
pub struct Declared {
    /// Primitive instances that own `.weight` / `.bias`.
    layers: BTreeSet<String>,
    /// `param(...)` instances, whose path is the parameter's.
    params: BTreeSet<String>,
}

impl Declared {
    pub fn from_sites(sites: &[(String, String)]) -> Declared {
        let mut d = Declared::default();
        for (path, kind) in sites {
            // The language's parametric primitives own `.weight` / `.bias`, except
            // `param(...)`, whose path is the parameter's.
            match kind.as_str() {
                "param" => {
                    d.params.insert(path.clone());
                }
                k if crate::lower::builtins::PRIMITIVES.contains(&k) => {
                    d.layers.insert(path.clone());
                }
                _ => {}
            }
        }
        d
    }

    /// Whether the spec declares a parameter at `path` (a full path).
    pub fn contains(&self, path: &str) -> bool {
        if self.params.contains(path) {
            return true;
        }
        match path.rsplit_once('.') {
            Some((layer, "weight" | "bias")) => self.layers.contains(layer),
            _ => false,
        }
    }
}
