//! Loading a spec and everything it `use`s into one [`Program`].
//!
//! `use std.NAME` reads the standard library embedded in the binary; `use "PATH"`
//! reads a file relative to the importing file. Import cycles are reported with the
//! chain that closes them. Module names form one namespace per program; a name
//! defined twice is an error that shows both definitions.

use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::ast::{Alias, File, ModelDecl, ModuleDecl, UseTarget};
use crate::syntax::parse;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The embedded standard library: (name, source).
pub const STD: &[(&str, &str)] = &[
    ("vit", include_str!("../../std/vit.graft")),
    ("bert", include_str!("../../std/bert.graft")),
    ("adapters", include_str!("../../std/adapters.graft")),
    ("encoders", include_str!("../../std/encoders.graft")),
];

/// The standard library's modules as `use` names: "std.vit, std.bert, …".
pub fn std_names() -> String {
    STD.iter().map(|(n, _)| format!("std.{n}")).collect::<Vec<_>>().join(", ")
}

/// How deep `use` chains may go.
const MAX_IMPORT_DEPTH: usize = 32;

#[derive(Debug, Clone)]
pub enum ModuleEntry {
    Decl(ModuleDecl),
    Alias(Alias),
}

/// A spec with its imports resolved.
#[derive(Debug, Clone)]
pub struct Program {
    pub sources: SourceMap,
    /// Shared so that instantiating a module does not copy its syntax tree.
    pub modules: BTreeMap<String, Arc<ModuleEntry>>,
    /// Every model of every loaded file, by name.
    pub models: BTreeMap<String, ModelDecl>,
    /// The model of the root file, if it has one.
    pub root_model: Option<String>,
    pub root: FileId,
}

#[derive(PartialEq)]
enum Key {
    Std(String),
    File(PathBuf),
}

struct Loader {
    sources: SourceMap,
    loaded: Vec<(Key, FileId)>,
    /// Files being loaded, for cycle detection: (key, name, span of the `use` that
    /// imported it; `None` for the root).
    stack: Vec<(Key, String, Option<Span>)>,
    files: Vec<(FileId, File)>,
    diags: Diagnostics,
}

/// Load `path` from disk.
pub fn load_file(path: &Path) -> Result<Program, (SourceMap, Diagnostics)> {
    let text = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                return Err((
                    SourceMap::new(),
                    Diagnostic::error("E0005", format!("{} is not UTF-8 text", path.display()))
                        .hint("a spec is a text file written in the graft language")
                        .into(),
                ))
            }
        },
        Err(e) => {
            return Err((
                SourceMap::new(),
                Diagnostic::error("E0005", format!("cannot read {}: {e}", path.display()))
                    .hint("check the path")
                    .into(),
            ))
        }
    };
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    load_source(&path.display().to_string(), canon.parent(), text, Key::File(canon.clone()))
}

/// Load a spec held in memory (tests, fuzzing); `dir` resolves relative imports.
pub fn load_str(name: &str, dir: Option<&Path>, text: &str) -> Result<Program, (SourceMap, Diagnostics)> {
    load_source(name, dir, text.to_string(), Key::File(PathBuf::from(format!("<mem>/{name}"))))
}

fn load_source(name: &str, dir: Option<&Path>, text: String, key: Key) -> Result<Program, (SourceMap, Diagnostics)> {
    let mut l = Loader {
        sources: SourceMap::new(),
        loaded: Vec::new(),
        stack: Vec::new(),
        files: Vec::new(),
        diags: Diagnostics::default(),
    };
    let root_key = match &key {
        Key::Std(s) => Key::Std(s.clone()),
        Key::File(p) => Key::File(p.clone()),
    };
    l.stack.push((root_key, name.to_string(), None));
    let root = l.load(name, dir, text, key);
    if l.diags.has_errors() {
        return Err((l.sources, l.diags));
    }
    let root = root.expect("root loaded without errors");
    l.finish(root)
}

impl Loader {
    fn load(&mut self, name: &str, dir: Option<&Path>, text: String, key: Key) -> Option<FileId> {
        let id = self.sources.add(name, dir, text);
        self.loaded.push((key, id));
        let file = match parse(id, &self.sources.get(id).text.clone()) {
            Ok(f) => f,
            Err(d) => {
                self.diags.extend(d);
                return None;
            }
        };
        let uses = file.uses.clone();
        self.files.push((id, file));
        for u in uses {
            let (key, display, text, dir): (Key, String, Option<String>, Option<PathBuf>) = match &u.target {
                UseTarget::Std(parts) => {
                    let n = parts.last().cloned().unwrap_or_default();
                    if parts.len() == 2 && parts[0] == "std" && !STD.iter().any(|(s, _)| *s == n) {
                        let near = crate::lower::builtins::nearest(&n, STD.iter().map(|(s, _)| *s), 1);
                        self.diags.push(
                            Diagnostic::error("E0103", format!("unknown standard library module `std.{n}`"))
                                .at(u.span, "not in the standard library")
                                .hint(match near.first() {
                                    Some(m) => format!("did you mean `use std.{m}`?"),
                                    None => format!("the standard library has {}", std_names()),
                                }),
                        );
                        continue;
                    }
                    if parts.len() != 2 || parts[0] != "std" {
                        self.diags.push(
                            Diagnostic::error("E0101", format!("unknown import `{}`", parts.join(".")))
                                .at(u.span, "not a standard library module")
                                .hint(format!(
                                    "the standard library has {}; a file is imported as use \"path.graft\"",
                                    std_names()
                                )),
                        );
                        continue;
                    }
                    let text = STD.iter().find(|(s, _)| *s == n).map(|(_, t)| t.to_string());
                    (Key::Std(n.clone()), format!("<std>/{n}.graft"), text, None)
                }
                UseTarget::File(rel) => {
                    let base = self.sources.get(id).dir.clone().unwrap_or_default();
                    let p = base.join(rel);
                    let canon = p.canonicalize().unwrap_or(p.clone());
                    let text = std::fs::read_to_string(&p).ok();
                    let parent = canon.parent().map(Path::to_path_buf);
                    // Shown relative to where the importing file was named from.
                    let display = match Path::new(name).parent() {
                        Some(d) if !d.as_os_str().is_empty() && !name.starts_with('<') => {
                            d.join(rel).display().to_string()
                        }
                        _ => rel.clone(),
                    };
                    (Key::File(canon), display, text, parent)
                }
            };
            if let Some(pos) = self.stack.iter().position(|(k, _, _)| *k == key) {
                let mut chain: Vec<String> = self.stack[pos..].iter().map(|(_, n, _)| n.clone()).collect();
                chain.push(display.clone());
                let mut d = Diagnostic::error("E0102", "import cycle")
                    .at(u.span, format!("`{display}` is already being imported"))
                    .hint(format!("the chain is {}; move shared modules into a file both can use", chain.join(" → ")));
                for (_, n, sp) in &self.stack {
                    if let Some(sp) = sp {
                        d = d.also(*sp, format!("imports `{n}`"));
                    }
                }
                self.diags.push(d);
                continue;
            }
            if self.loaded.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let Some(text) = text else {
                self.diags.push(
                    Diagnostic::error("E0103", format!("cannot import `{display}`")).at(u.span, "file not found").hint(
                        match &u.target {
                            UseTarget::Std(_) => format!("the standard library has {}", std_names()),
                            UseTarget::File(_) => "paths are relative to the importing file".to_string(),
                        },
                    ),
                );
                continue;
            };
            if self.stack.len() > MAX_IMPORT_DEPTH {
                self.diags.push(
                    Diagnostic::error("E0104", "imports nested too deep")
                        .at(u.span, format!("more than {MAX_IMPORT_DEPTH} files deep"))
                        .hint("flatten the import chain"),
                );
                continue;
            }
            self.stack.push((
                match &key {
                    Key::Std(s) => Key::Std(s.clone()),
                    Key::File(p) => Key::File(p.clone()),
                },
                display.clone(),
                Some(u.span),
            ));
            let _ = self.load(&display, dir.as_deref(), text, key);
            self.stack.pop();
        }
        Some(id)
    }

    fn finish(mut self, root: FileId) -> Result<Program, (SourceMap, Diagnostics)> {
        let mut modules: BTreeMap<String, Arc<ModuleEntry>> = BTreeMap::new();
        let mut models: BTreeMap<String, ModelDecl> = BTreeMap::new();
        let mut root_model = None;
        let mut defined: HashMap<String, Span> = HashMap::new();
        // Imported files first, so that a clash is reported in the file that imports.
        let mut files = std::mem::take(&mut self.files);
        files.reverse();
        for (id, file) in files {
            let entries =
                file.modules.into_iter().map(ModuleEntry::Decl).chain(file.aliases.into_iter().map(ModuleEntry::Alias));
            for m in entries {
                let (name, span) = match &m {
                    ModuleEntry::Decl(d) => (d.name.name.clone(), d.name.span),
                    ModuleEntry::Alias(a) => (a.name.name.clone(), a.name.span),
                };
                if crate::lower::builtins::is_builtin(&name) {
                    self.diags.push(
                        Diagnostic::error("E0105", format!("`{name}` is a built-in primitive"))
                            .at(span, "cannot be redefined")
                            .hint("choose another module name"),
                    );
                    continue;
                }
                if let Some(prev) = defined.get(&name) {
                    let hint = if prev.file == span.file {
                        "rename one of them".to_string()
                    } else {
                        format!("`{name}` already comes from {}; rename this one", self.sources.get(prev.file).name)
                    };
                    self.diags.push(
                        Diagnostic::error("E0106", format!("module `{name}` is defined twice"))
                            .at(span, "redefined here")
                            .also(*prev, "first defined here")
                            .hint(hint),
                    );
                    continue;
                }
                defined.insert(name.clone(), span);
                modules.insert(name, Arc::new(m));
            }
            let mut in_file = 0;
            for m in file.models {
                in_file += 1;
                if in_file > 1 {
                    self.diags.push(
                        Diagnostic::error("E0107", "a spec file holds at most one model")
                            .at(m.name.span, "second model")
                            .hint("put each model in its own file and `use` the shared one"),
                    );
                    continue;
                }
                if let Some(prev) = defined.get(&m.name.name) {
                    self.diags.push(
                        Diagnostic::error("E0106", format!("`{}` is defined twice", m.name.name))
                            .at(m.name.span, "redefined here")
                            .also(*prev, "first defined here")
                            .hint("rename one of them"),
                    );
                    continue;
                }
                defined.insert(m.name.name.clone(), m.name.span);
                if id == root {
                    root_model = Some(m.name.name.clone());
                }
                models.insert(m.name.name.clone(), m);
            }
        }
        if self.diags.has_errors() {
            return Err((self.sources, self.diags));
        }
        Ok(Program { sources: self.sources, modules, models, root_model, root })
    }
}
