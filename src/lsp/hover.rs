//! Hover: what a name is in the compiled model.
//!
//! - an instance or value: its path, output type (`f32[B, 197, 384]`), parameter
//!   count, trainable/frozen, weights binding;
//! - a module: its signature and the doc comment above it;
//! - a name inside a module: the sites it becomes in this model;
//! - a selector: how many sites it matches and their parameters;
//! - a pathway: its (aux → target) pairs and its λ count.

use super::analysis::Analysis;
use super::query::{target_at, Target};
use crate::lower::ModuleEntry;
use crate::pipeline::Compiled;
use crate::report::thousands;
use crate::syntax::ast::{ModelItem, UseTarget};
use lsp_types::{Hover, HoverContents, MarkupContent, MarkupKind, Position};

pub fn hover(a: &Analysis, pos: Position) -> Option<Hover> {
    let off = a.index().offset(pos);
    let target = target_at(a.ast.as_ref()?, off)?;
    let text = match &target {
        Target::Module(m) => module(a, m)?,
        Target::Path(p) => path(a.compiled.as_deref()?, p)?,
        Target::Local { module, name } => local(a.compiled.as_deref()?, module, name)?,
        Target::Selector(sel) => {
            let c = a.compiled.as_deref()?;
            match crate::api::select(c, sel) {
                Ok(rows) => {
                    let total: u64 = rows.iter().map(|r| r.params).sum();
                    let mut s = format!(
                        "`{sel}` matches **{}** site{}, {} parameters",
                        rows.len(),
                        if rows.len() == 1 { "" } else { "s" },
                        thousands(total)
                    );
                    for r in rows.iter().take(8) {
                        s.push_str(&format!("\n- `{}` ({}, {} parameters)", r.path, r.kind, thousands(r.params)));
                    }
                    if rows.len() > 8 {
                        s.push_str(&format!("\n- … and {} more", rows.len() - 8));
                    }
                    s
                }
                Err(near) => format!("`{sel}` matches nothing; nearest: {}", near.join(", ")),
            }
        }
        Target::Pathway(p) => pathway(a, p)?,
        Target::Use(UseTarget::Std(parts)) => {
            let file = format!("<std>/{}.graft", parts.last()?);
            let prog = a.program.as_deref()?;
            let names: Vec<&str> = prog
                .modules
                .iter()
                .filter(|(_, e)| prog.sources.get(super::query::entry_span(e).file).name == file)
                .map(|(n, _)| n.as_str())
                .collect();
            format!("standard library `{}`: {}", parts.join("."), names.join(", "))
        }
        Target::Use(UseTarget::File(f)) => format!("imports `{f}` (relative to this file)"),
    };
    Some(Hover {
        contents: HoverContents::Markup(MarkupContent { kind: MarkupKind::Markdown, value: text }),
        range: None,
    })
}

/// Parameters under a path (or owned by a component of that name): (total, trainable).
fn params_under(c: &Compiled, path: &str) -> (u64, u64) {
    let prefix = format!("{path}.");
    let mut total = 0;
    let mut trainable = 0;
    for (_, p) in c.graph.params() {
        if p.path == path || p.path.starts_with(&prefix) || p.component == path {
            total += p.numel();
            if p.trainable {
                trainable += p.numel();
            }
        }
    }
    (total, trainable)
}

fn params_line(c: &Compiled, path: &str) -> String {
    let (total, trainable) = params_under(c, path);
    let state = match (total, trainable) {
        (0, _) => "no parameters".to_string(),
        (t, 0) => format!("{} parameters, frozen", thousands(t)),
        (t, n) if n == t => format!("{} parameters, trainable", thousands(t)),
        (t, n) => format!("{} parameters: {} trainable, {} frozen", thousands(t), thousands(n), thousands(t - n)),
    };
    state
}

fn path(c: &Compiled, p: &str) -> Option<String> {
    let kind = c.sites.iter().find(|(s, _)| s == p).map(|(_, k)| k.clone());
    let ty = c.site_types.get(p).map(|t| t.to_string());
    let input = c.graph.inputs().into_iter().map(|id| c.graph.node(id)).find(|n| n.path == p);
    let ty = ty.or_else(|| input.and_then(|n| n.ty.as_ref()).map(|t| t.to_string()));
    if kind.is_none() && ty.is_none() && params_under(c, p).0 == 0 {
        return None;
    }
    let mut s = format!("**{p}**");
    let role = c.components.iter().find(|x| x.name == p).map(|x| match x.kind {
        crate::syntax::ast::ComponentKind::Backbone => "backbone ",
        crate::syntax::ast::ComponentKind::Encoder => "encoder ",
    });
    let role = role.or_else(|| c.heads.iter().any(|h| h == p).then_some("head "));
    let role = role.or_else(|| c.adapters.iter().any(|h| h == p).then_some("adapter "));
    if let Some(k) = kind {
        s.push_str(&format!(" — {}`{k}`", role.unwrap_or("")));
    } else if input.is_some() {
        s.push_str(" — input");
    }
    if let Some(t) = ty {
        s.push_str(&format!("\n\n`{t}`"));
    }
    s.push_str(&format!("\n\n{}", params_line(c, p)));
    if let Some(w) = c.weights.get(p) {
        s.push_str(&format!("\n\nweights `{w}`"));
    }
    Some(s)
}

fn local(c: &Compiled, module: &str, name: &str) -> Option<String> {
    let suffix = format!(".{name}");
    let sites: Vec<&String> = c
        .sites
        .iter()
        .filter(|(p, _)| p.ends_with(&suffix))
        .filter(|(p, _)| {
            let parent = &p[..p.len() - suffix.len()];
            c.sites.iter().any(|(q, k)| q == parent && k == module)
        })
        .map(|(p, _)| p)
        .collect();
    let first = sites.first()?;
    let mut s = format!(
        "`{name}` in `{module}`: {} site{} in this model",
        sites.len(),
        if sites.len() == 1 { "" } else { "s" }
    );
    s.push_str(&format!("\n\n{}", path(c, first)?));
    Some(s)
}

fn module(a: &Analysis, name: &str) -> Option<String> {
    let prog = a.program.as_deref()?;
    let Some(entry) = prog.modules.get(name) else {
        return crate::lower::builtins::is_builtin(name).then(|| format!("`{name}`: built-in"));
    };
    let file = prog.sources.get(super::query::entry_span(entry).file);
    let span = match entry.as_ref() {
        ModuleEntry::Decl(m) => m.span,
        ModuleEntry::Alias(al) => al.span,
    };
    let decl = &file.text[span.start as usize..span.end as usize];
    let head = decl.split('{').next().unwrap_or(decl);
    let signature = head.split_whitespace().collect::<Vec<_>>().join(" ");
    // The comment lines right above the declaration.
    let before = &file.text[..span.start as usize];
    let mut doc: Vec<&str> = before
        .lines()
        .rev()
        .skip(usize::from(!before.ends_with('\n')))
        .take_while(|l| l.trim_start().starts_with("//"))
        .map(|l| l.trim_start().trim_start_matches('/').trim())
        .collect();
    doc.reverse();
    let mut s = format!("```graft\n{signature}\n```\n{}", file.name);
    if !doc.is_empty() {
        s.push_str(&format!("\n\n{}", doc.join("\n")));
    }
    Some(s)
}

fn pathway(a: &Analysis, name: &str) -> Option<String> {
    let c = a.compiled.as_deref()?;
    let decl = a.ast.as_ref()?.models.iter().flat_map(|m| &m.items).find_map(|i| match i {
        ModelItem::Pathway(p) if p.name.name == name => Some(p),
        _ => None,
    })?;
    let from = crate::api::select(c, &decl.from).unwrap_or_default();
    let into = crate::api::select(c, &decl.into).unwrap_or_default();
    let prefix = format!("{name}.");
    let lambdas = c.graph.params().filter(|(_, p)| p.path.starts_with(&prefix) && p.path.ends_with(".lambda")).count();
    let mut s =
        format!("pathway **{name}**: {} pair{}, {lambdas} λ", into.len(), if into.len() == 1 { "" } else { "s" });
    for (f, t) in from.iter().zip(&into).take(8) {
        s.push_str(&format!("\n- `{}` → `{}`", f.path, t.path));
    }
    if into.len() > 8 {
        s.push_str(&format!("\n- … and {} more", into.len() - 8));
    }
    s.push_str(&format!("\n\n{}", params_line(c, name)));
    Some(s)
}
