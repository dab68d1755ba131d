//! Go to definition, find references, document symbols and formatting.

use super::analysis::Analysis;
use super::convert::{location, std_file};
use super::query::{module_uses, target_at, Target};
use crate::syntax::ast::{ModelItem, UseTarget};
use lsp_types::{DocumentSymbol, Location, Position, Range, SymbolKind, TextEdit, Url};

/// Where the module, import or model name under the cursor is defined.
pub fn definition(a: &Analysis, pos: Position) -> Option<Location> {
    let off = a.index().offset(pos);
    match target_at(a.ast.as_ref()?, off)? {
        Target::Module(m) => {
            let prog = a.program.as_deref()?;
            location(&prog.sources, super::query::entry_span(prog.modules.get(&m)?), &a.uri, &a.name)
        }
        Target::Use(UseTarget::Std(parts)) => {
            let uri = Url::from_file_path(std_file(parts.last()?)?).ok()?;
            Some(Location::new(uri, Range::default()))
        }
        Target::Use(UseTarget::File(rel)) => {
            let uri = Url::from_file_path(a.dir.as_ref()?.join(rel)).ok()?;
            Some(Location::new(uri, Range::default()))
        }
        Target::Path(p) => {
            // The model declaration that introduces the path's first segment.
            let first = p.split('.').next()?;
            let ast = a.ast.as_ref()?;
            let span = ast.models.iter().flat_map(|m| &m.items).find_map(|i| {
                let name = match i {
                    ModelItem::Input(x) => &x.name,
                    ModelItem::Component(x) => &x.name,
                    ModelItem::Adapter(x) => &x.name,
                    ModelItem::Pathway(x) => &x.name,
                    ModelItem::Head { name, .. } | ModelItem::Output { name, .. } => name,
                    _ => return None,
                };
                (name.name == first).then_some(name.span)
            })?;
            let idx = a.index();
            Some(Location::new(a.uri.clone(), idx.range(span.start as usize, span.end as usize)))
        }
        _ => None,
    }
}

/// Every use of the module under the cursor (and its declaration if asked).
pub fn references(a: &Analysis, pos: Position, include_declaration: bool) -> Option<Vec<Location>> {
    let off = a.index().offset(pos);
    let Target::Module(m) = target_at(a.ast.as_ref()?, off)? else { return None };
    let prog = a.program.as_deref()?;
    let mut spans = module_uses(prog, &m);
    if include_declaration {
        if let Some(e) = prog.modules.get(&m) {
            spans.insert(0, super::query::entry_span(e));
        }
    }
    Some(spans.into_iter().filter_map(|s| location(&prog.sources, s, &a.uri, &a.name)).collect())
}

/// Modules, aliases and the model with its declarations.
#[allow(deprecated)]
pub fn symbols(a: &Analysis) -> Vec<DocumentSymbol> {
    let Some(ast) = a.ast.as_ref() else { return Vec::new() };
    let idx = a.index();
    let range = |s: crate::source::Span| idx.range(s.start as usize, s.end as usize);
    let sym = |name: &str, detail: Option<String>, kind, full, sel, children| DocumentSymbol {
        name: name.to_string(),
        detail,
        kind,
        tags: None,
        deprecated: None,
        range: full,
        selection_range: sel,
        children,
    };
    let mut out = Vec::new();
    for m in &ast.modules {
        let params: Vec<String> = m.params.iter().map(|p| format!("{}: {}", p.name.name, p.ty.name())).collect();
        out.push(sym(
            &m.name.name,
            Some(format!("({})", params.join(", "))),
            SymbolKind::FUNCTION,
            range(m.span),
            range(m.name.span),
            None,
        ));
    }
    for al in &ast.aliases {
        out.push(sym(
            &al.name.name,
            Some(format!("= {}(…)", al.target.name)),
            SymbolKind::FUNCTION,
            range(al.span),
            range(al.name.span),
            None,
        ));
    }
    for model in &ast.models {
        let mut children = Vec::new();
        for item in &model.items {
            let (name, kind, detail, span) = match item {
                ModelItem::Input(i) => (&i.name, SymbolKind::VARIABLE, "input", i.span),
                ModelItem::Component(c) => (&c.name, SymbolKind::OBJECT, "component", c.span),
                ModelItem::Adapter(x) => (&x.name, SymbolKind::OBJECT, "adapter", x.span),
                ModelItem::Pathway(x) => (&x.name, SymbolKind::OBJECT, "pathway", x.span),
                ModelItem::Head { name, span, .. } => (name, SymbolKind::OBJECT, "head", *span),
                ModelItem::Output { name, span, .. } => (name, SymbolKind::VARIABLE, "output", *span),
                _ => continue,
            };
            let full = range(span);
            let sel = range(name.span);
            children.push(sym(&name.name, Some(detail.to_string()), kind, full, sel, None));
        }
        out.push(sym(
            &model.name.name,
            Some("model".to_string()),
            SymbolKind::CLASS,
            range(model.span),
            range(model.name.span),
            Some(children),
        ));
    }
    out
}

/// The document in `graft fmt`'s layout as one edit; `Err` when it does not parse.
pub fn format(a: &Analysis) -> Result<Vec<TextEdit>, String> {
    match crate::fmt::format_text(&a.name, &a.text) {
        Ok(out) if out == a.text => Ok(Vec::new()),
        Ok(out) => {
            let idx = a.index();
            Ok(vec![TextEdit::new(idx.range(0, a.text.len()), out)])
        }
        Err(crate::fmt::FmtError::Syntax(..)) => Err("the file has syntax errors; fix them first".to_string()),
        Err(crate::fmt::FmtError::Internal(e)) => Err(format!("internal error in graft fmt: {e}")),
    }
}
