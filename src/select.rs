//! Selectors: patterns over hierarchical paths.
//!
//! `vit.blocks[*].mlp`, `blocks[6..]`, `blocks[-2..]`, `{attn.qkv, mlp.fc1}`, `**.fc1`.
//! A segment name matches one path segment exactly; `*` matches any one segment,
//! `**` any number; an index (`[3]`, `[0..6]`, `[-2..]`, `[*]`) matches the numeric
//! segment after the name, negative indices counting from the number of children.
//! Matches come back in the order the paths were created (block 0 before block 1).

use crate::lower::builtins::nearest;
use crate::syntax::ast::{IndexSel, SegName, SelStep, Selector};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone)]
enum Pat {
    Name(String),
    Star,
    DoubleStar,
    Index(IndexSel),
}

/// The set of paths a selector can match, in creation order.
pub struct Universe {
    paths: Vec<Vec<String>>,
    /// Number of numeric children under each prefix (`a.blocks` → 12).
    counts: HashMap<String, i64>,
}

impl Universe {
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Universe {
        let mut seen = HashSet::new();
        let mut list = Vec::new();
        let mut counts: HashMap<String, i64> = HashMap::new();
        for p in paths {
            if !seen.insert(p.to_string()) {
                continue;
            }
            let segs: Vec<String> = p.split('.').map(str::to_string).collect();
            for j in 1..segs.len() {
                if let Ok(n) = segs[j].parse::<i64>() {
                    let prefix = segs[..j].join(".");
                    let c = counts.entry(prefix).or_insert(0);
                    *c = (*c).max(n + 1);
                }
            }
            list.push(segs);
        }
        Universe { paths: list, counts }
    }

    /// Paths that the selector matches exactly.
    pub fn full_matches(&self, sel: &Selector) -> Vec<String> {
        let alts = expand(sel);
        self.paths
            .iter()
            .filter(|segs| alts.iter().any(|a| self.matches(a, 0, segs, 0)))
            .map(|segs| segs.join("."))
            .collect()
    }

    /// Distinct path prefixes that the selector matches (an instance selects all below it).
    pub fn prefix_matches(&self, sel: &Selector) -> Vec<String> {
        let alts = expand(sel);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for segs in &self.paths {
            for k in 1..=segs.len() {
                let pre = &segs[..k];
                if alts.iter().any(|a| self.matches(a, 0, pre, 0)) {
                    let s = pre.join(".");
                    if seen.insert(s.clone()) {
                        out.push(s);
                    }
                    break;
                }
            }
        }
        out
    }

    /// Existing paths (and their prefixes) closest to what the selector asked for.
    pub fn suggest(&self, sel: &Selector, n: usize) -> Vec<String> {
        let text = sel.to_string();
        let mut prefixes: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for segs in &self.paths {
            for k in 1..=segs.len() {
                let s = segs[..k].join(".");
                if seen.insert(s.clone()) {
                    prefixes.push(s);
                }
            }
        }
        let depth = text.matches('.').count() + 1;
        let same_depth: Vec<&str> = prefixes
            .iter()
            .filter(|p| p.matches('.').count() + 1 == depth)
            .map(String::as_str)
            .collect();
        let mut near: Vec<String> = nearest(&text, same_depth, n).into_iter().map(str::to_string).collect();
        if near.is_empty() {
            near = nearest(&text, prefixes.iter().map(String::as_str), n).into_iter().map(str::to_string).collect();
        }
        near
    }

    fn matches(&self, pats: &[Pat], i: usize, segs: &[String], j: usize) -> bool {
        if i == pats.len() {
            return j == segs.len();
        }
        match &pats[i] {
            Pat::DoubleStar => (j..=segs.len()).any(|k| self.matches(pats, i + 1, segs, k)),
            _ if j >= segs.len() => false,
            Pat::Star => self.matches(pats, i + 1, segs, j + 1),
            Pat::Name(n) => segs[j] == *n && self.matches(pats, i + 1, segs, j + 1),
            Pat::Index(ix) => {
                let Ok(v) = segs[j].parse::<i64>() else { return false };
                let count = self.counts.get(&segs[..j].join(".")).copied().unwrap_or(0);
                let norm = |x: i64| if x < 0 { count + x } else { x };
                let ok = match ix {
                    IndexSel::All => true,
                    IndexSel::One(k) => v == norm(*k),
                    IndexSel::Range(lo, hi) => {
                        let lo = lo.map_or(0, norm);
                        let hi = hi.map_or(count, norm);
                        v >= lo && v < hi
                    }
                };
                ok && self.matches(pats, i + 1, segs, j + 1)
            }
        }
    }
}

/// Expand sets into alternatives: `a.{b, c.d}` → `[a.b, a.c.d]`.
fn expand(sel: &Selector) -> Vec<Vec<Pat>> {
    let mut alts: Vec<Vec<Pat>> = vec![Vec::new()];
    for step in &sel.steps {
        match step {
            SelStep::Seg { name, index } => {
                let mut pats = vec![match name {
                    SegName::Exact(n) => Pat::Name(n.clone()),
                    SegName::Star => Pat::Star,
                    SegName::DoubleStar => Pat::DoubleStar,
                }];
                if let Some(ix) = index {
                    pats.push(Pat::Index(ix.clone()));
                }
                for a in &mut alts {
                    a.extend(pats.iter().cloned());
                }
            }
            SelStep::Set(sels) => {
                let subs: Vec<Vec<Pat>> = sels.iter().flat_map(expand).collect();
                let mut next = Vec::new();
                for a in &alts {
                    for s in &subs {
                        let mut n = a.clone();
                        n.extend(s.iter().cloned());
                        next.push(n);
                    }
                }
                // Bound the product of nested sets.
                next.truncate(4096);
                alts = next;
            }
        }
    }
    alts
}

/// Parse a selector given on the command line.
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let src = format!("model m {{ train {text} }}");
    let file = crate::syntax::parse(crate::source::FileId(0), &src).map_err(|_| format!("`{text}` is not a selector"))?;
    match file.models.first().and_then(|m| m.items.first()) {
        Some(crate::syntax::ast::ModelItem::Train { rules, .. }) if rules.len() == 1 => Ok(rules[0].clone()),
        _ => Err(format!("`{text}` is not a single selector")),
    }
}
