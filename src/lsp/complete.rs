//! Completion. The text being typed rarely parses, so the context is read from the
//! text before the cursor; what to offer comes from the last program and model that
//! compiled:
//!
//! - in a selector (after `train`, `at`, `from`, `into`) with a `.` typed: the path
//!   segments that exist below what the selector so far matches;
//! - inside a call's parentheses: the called module's parameters not yet given;
//! - elsewhere: module names (the program's and the built-ins).

use super::analysis::Analysis;
use crate::lower::ModuleEntry;
use lsp_types::{CompletionItem, CompletionItemKind, Position};
use std::collections::BTreeSet;

pub fn complete(a: &Analysis, pos: Position) -> Vec<CompletionItem> {
    let off = a.index().offset(pos);
    let before = &a.text[..off];
    let line = before.rsplit('\n').next().unwrap_or("");
    if let Some(sel) = selector_prefix(line) {
        if let Some(items) = path_segments(a, sel) {
            return items;
        }
    }
    if let Some(callee) = open_call(before) {
        let items = call_params(a, &callee, before);
        if !items.is_empty() {
            return items;
        }
    }
    module_names(a)
}

/// The selector typed so far on this line, if the cursor is in one.
fn selector_prefix(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let start = ["train ", "at ", "from ", "into "].iter().find_map(|k| t.strip_prefix(k)).or_else(|| {
        let i = line.rfind(" at ")?;
        Some(&line[i + 4..])
    })?;
    // In a `train` list: the last selector of the list (commas inside braces belong to it).
    let mut depth = 0i32;
    let mut cut = 0;
    for (i, c) in start.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => cut = i + 1,
            _ => {}
        }
    }
    Some(start[cut..].trim_start())
}

/// Children of what `sel` matches up to its last `.` (`vit.blocks[*].` → `attn`, `mlp`…).
fn path_segments(a: &Analysis, sel: &str) -> Option<Vec<CompletionItem>> {
    let c = a.compiled.as_deref()?;
    // Inside an open `{…}`: the part before the brace, then the current alternative.
    let (outer, inner) = match sel.rfind('{') {
        Some(i) if !sel[i..].contains('}') => {
            let alt = sel[i + 1..].rsplit(',').next().unwrap_or("").trim_start();
            (sel[..i].trim_end_matches('.'), alt)
        }
        _ => ("", sel),
    };
    let base = match inner.rfind('.') {
        Some(i) => join(outer, &inner[..i]),
        None if !outer.is_empty() => outer.to_string(),
        None => String::new(),
    };
    let paths: Vec<&str> =
        c.sites.iter().map(|(p, _)| p.as_str()).chain(c.graph.params().map(|(_, p)| p.path.as_str())).collect();
    let mut names = BTreeSet::new();
    let mut numbered = false;
    if base.is_empty() {
        names.extend(paths.iter().filter_map(|p| p.split('.').next()));
    } else {
        let parsed = crate::select::parse_selector(&base).ok()?;
        let universe = crate::select::Universe::new(paths.iter().copied());
        for m in universe.prefix_matches(&parsed) {
            let prefix = format!("{m}.");
            for p in &paths {
                if let Some(rest) = p.strip_prefix(&prefix) {
                    let seg = rest.split('.').next().unwrap_or(rest);
                    if seg.parse::<u64>().is_ok() {
                        numbered = true;
                    }
                    names.insert(seg);
                }
            }
        }
    }
    let mut items: Vec<CompletionItem> = names
        .into_iter()
        .filter(|n| !numbered || n.parse::<u64>().is_err())
        .map(|n| CompletionItem { label: n.to_string(), kind: Some(CompletionItemKind::FIELD), ..Default::default() })
        .collect();
    if numbered {
        // `blocks.` has 0 … N-1: offer the index forms instead of N numbers.
        for (label, detail) in [("[*]", "every index"), ("[0]", "the first"), ("[-1]", "the last")] {
            items.push(CompletionItem {
                label: label.to_string(),
                kind: Some(CompletionItemKind::OPERATOR),
                detail: Some(detail.to_string()),
                ..Default::default()
            });
        }
    }
    Some(items)
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}.{b}"),
    }
}

/// The name before the innermost `(` still open at the end of `text`.
fn open_call(text: &str) -> Option<String> {
    let mut depth = 0i32;
    for (i, c) in text.char_indices().rev().take(4000) {
        match c {
            ')' | ']' => depth += 1,
            '[' if depth > 0 => depth -= 1,
            '(' if depth > 0 => depth -= 1,
            '(' => {
                let head = text[..i].trim_end();
                let start = head.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |j| j + 1);
                let name = &head[start..];
                return (!name.is_empty()).then(|| name.to_string());
            }
            '{' | '}' | '[' => return None,
            _ => {}
        }
    }
    None
}

fn call_params(a: &Analysis, callee: &str, before: &str) -> Vec<CompletionItem> {
    let Some(prog) = a.program.as_deref() else { return Vec::new() };
    // An alias (`module audio_vit = vit(...)`) takes its target's parameters.
    let mut entry = prog.modules.get(callee).map(|e| e.as_ref());
    for _ in 0..8 {
        match entry {
            Some(ModuleEntry::Alias(al)) => entry = prog.modules.get(&al.target.name).map(|e| e.as_ref()),
            _ => break,
        }
    }
    let Some(ModuleEntry::Decl(m)) = entry else { return Vec::new() };
    let open = before.rfind('(').map_or("", |i| &before[i..]);
    m.params
        .iter()
        .filter(|p| !open.contains(&format!("{}:", p.name.name)))
        .map(|p| {
            let file = &prog.sources.get(p.name.span.file).text;
            let default = p.default.as_ref().map(|d| &file[d.span.start as usize..d.span.end as usize]);
            CompletionItem {
                label: p.name.name.clone(),
                kind: Some(CompletionItemKind::FIELD),
                detail: Some(match default {
                    Some(d) => format!("{} = {d}", p.ty.name()),
                    None => p.ty.name().to_string(),
                }),
                insert_text: Some(format!("{}: ", p.name.name)),
                ..Default::default()
            }
        })
        .collect()
}

fn module_names(a: &Analysis) -> Vec<CompletionItem> {
    let mut items: Vec<CompletionItem> = Vec::new();
    if let Some(prog) = a.program.as_deref() {
        for (name, e) in &prog.modules {
            items.push(CompletionItem {
                label: name.clone(),
                kind: Some(CompletionItemKind::MODULE),
                detail: Some(prog.sources.get(super::query::entry_span(e).file).name.clone()),
                ..Default::default()
            });
        }
    }
    use crate::lower::builtins::{PRIMITIVES, SCALAR_FNS, TENSOR_FNS};
    for b in PRIMITIVES.iter().chain(TENSOR_FNS).chain(SCALAR_FNS) {
        items.push(CompletionItem {
            label: b.to_string(),
            kind: Some(CompletionItemKind::FUNCTION),
            detail: Some("built-in".to_string()),
            ..Default::default()
        });
    }
    items
}
