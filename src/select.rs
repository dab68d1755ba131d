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
    seen: HashSet<String>,
    /// Per path and segment position j: the id of the prefix `segs[..j]`.
    prefix_ids: Vec<Vec<usize>>,
    /// Prefix id → (parent prefix id, segment) lookup, and per prefix the number of
    /// numeric children (`a.blocks` → 12), for negative indices. Id 0 is the empty prefix.
    ids: HashMap<(usize, String), usize>,
    count_of: Vec<i64>,
}

impl Universe {
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Universe {
        let mut u = Universe {
            paths: Vec::new(),
            seen: HashSet::new(),
            prefix_ids: Vec::new(),
            ids: HashMap::new(),
            count_of: vec![0],
        };
        u.extend(paths);
        u
    }

    /// Add paths (in linear time: prefixes are interned, not joined).
    pub fn extend<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>) {
        for p in paths {
            if !self.seen.insert(p.to_string()) {
                continue;
            }
            let segs: Vec<String> = p.split('.').map(str::to_string).collect();
            let mut cur = 0;
            let mut pids = Vec::with_capacity(segs.len());
            for (j, seg) in segs.iter().enumerate() {
                pids.push(cur);
                if j > 0 {
                    if let Ok(n) = seg.parse::<i64>() {
                        self.count_of[cur] = self.count_of[cur].max(n.saturating_add(1));
                    }
                }
                let next = self.count_of.len();
                cur = *self.ids.entry((cur, seg.clone())).or_insert(next);
                if cur == next {
                    self.count_of.push(0);
                }
            }
            self.prefix_ids.push(pids);
            self.paths.push(segs);
        }
    }

    /// Paths that the selector matches exactly.
    pub fn full_matches(&self, sel: &Selector) -> Vec<String> {
        let alts = expand(sel);
        self.paths
            .iter()
            .enumerate()
            .filter(|(k, segs)| alts.iter().any(|a| self.matches(a, 0, segs, 0, *k)))
            .map(|(_, segs)| segs.join("."))
            .collect()
    }

    /// Distinct path prefixes that the selector matches (an instance selects all below it).
    pub fn prefix_matches(&self, sel: &Selector) -> Vec<String> {
        let alts = expand(sel);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (pi, segs) in self.paths.iter().enumerate() {
            for k in 1..=segs.len() {
                let pre = &segs[..k];
                if alts.iter().any(|a| self.matches(a, 0, pre, 0, pi)) {
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
    /// Paths are compared with their numbers as `*` (`vit.blocks.*.mlp`) and the selector
    /// with its indices as `*`, so that `blocks[*].mpl` finds `blocks.0.mlp`.
    pub fn suggest(&self, sel: &Selector, n: usize) -> Vec<String> {
        let text = normalize(&sel.to_string());
        let depth = text.matches('.').count() + 1;
        // Normalized prefixes of `min..=max` segments → the first existing path of that
        // form (built segment by segment: long paths cost linear, not quadratic, time).
        let forms_up_to = |min: usize, max: usize| -> Vec<(String, String)> {
            let mut forms = Vec::new();
            let mut seen = HashSet::new();
            for segs in &self.paths {
                let (mut form, mut path) = (String::new(), String::new());
                for (k, seg) in segs.iter().take(max).enumerate() {
                    if k > 0 {
                        form.push('.');
                        path.push('.');
                    }
                    form.push_str(if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) { "*" } else { seg });
                    path.push_str(seg);
                    if k + 1 >= min && seen.insert(form.clone()) {
                        forms.push((form.clone(), path.clone()));
                    }
                }
            }
            forms
        };
        let pick = |forms: &[(String, String)], cands: Vec<&str>| -> Vec<String> {
            nearest(&text, cands, n)
                .into_iter()
                .filter_map(|f| forms.iter().find(|(g, _)| g == f).map(|(_, p)| p.clone()))
                .collect()
        };
        let forms = forms_up_to(depth, depth);
        let same: Vec<&str> =
            forms.iter().filter(|(f, _)| f.matches('.').count() + 1 == depth).map(|(f, _)| f.as_str()).collect();
        let near = pick(&forms, same);
        if !near.is_empty() {
            return near;
        }
        let forms = forms_up_to(1, 2 * depth + 2);
        pick(&forms, forms.iter().map(|(f, _)| f.as_str()).collect())
    }

    /// Whether `pats` matches all of `segs`: dynamic programming over (pattern, segment)
    /// positions, so that runs of `**` cannot make it exponential.
    /// `p` is the path's index in `paths` (for the index counts).
    fn matches(&self, pats: &[Pat], i0: usize, segs: &[String], j0: usize, p: usize) -> bool {
        let (n, m) = (pats.len(), segs.len());
        // Without `**` a pattern matches segment by segment: no table needed.
        if !pats[i0..].iter().any(|q| matches!(q, Pat::DoubleStar)) {
            return n - i0 == m.saturating_sub(j0)
                && pats[i0..].iter().zip(&segs[j0..]).enumerate().all(|(k, (q, seg))| match q {
                    Pat::Star => true,
                    Pat::Name(name) => seg == name,
                    Pat::Index(ix) => self.index_matches(ix, segs, j0 + k, p),
                    Pat::DoubleStar => unreachable!("checked above"),
                });
        }
        let fixed = pats[i0..].iter().filter(|p| !matches!(p, Pat::DoubleStar)).count();
        if fixed > m.saturating_sub(j0) {
            return false;
        }
        // ok[i][j]: pats[i..] matches segs[j..].
        let mut ok = vec![vec![false; m + 1]; n + 1];
        ok[n][m] = true;
        for i in (i0..n).rev() {
            for j in (j0..=m).rev() {
                ok[i][j] = match &pats[i] {
                    Pat::DoubleStar => ok[i + 1][j] || (j < m && ok[i][j + 1]),
                    _ if j >= m => false,
                    Pat::Star => ok[i + 1][j + 1],
                    Pat::Name(name) => segs[j] == *name && ok[i + 1][j + 1],
                    Pat::Index(ix) => ok[i + 1][j + 1] && self.index_matches(ix, segs, j, p),
                };
            }
        }
        ok[i0][j0]
    }

    fn index_matches(&self, ix: &IndexSel, segs: &[String], j: usize, p: usize) -> bool {
        let Ok(v) = segs[j].parse::<i64>() else { return false };
        let count = self.count_of[self.prefix_ids[p][j]];
        let norm = |x: i64| if x < 0 { count.saturating_add(x) } else { x };
        match ix {
            IndexSel::All => true,
            IndexSel::One(k) => v == norm(*k),
            IndexSel::Range(lo, hi) => {
                let lo = lo.map_or(0, norm);
                let hi = hi.map_or(count, norm);
                v >= lo && v < hi
            }
        }
    }
}

/// `vit.blocks[-2..].mlp` and `vit.blocks.10.mlp` → `vit.blocks.*.mlp`.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in text.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str(".*");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out.split('.')
        .map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { "*" } else { s })
        .collect::<Vec<_>>()
        .join(".")
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
                    // `**.**` is `**`.
                    let skip =
                        matches!(pats.as_slice(), [Pat::DoubleStar]) && matches!(a.last(), Some(Pat::DoubleStar));
                    if !skip {
                        a.extend(pats.iter().cloned());
                    }
                }
            }
            SelStep::Set(sels) => {
                let subs: Vec<Vec<Pat>> = sels.iter().flat_map(expand).take(4096).collect();
                // Bound the product of nested sets (without building it first).
                let mut next = Vec::new();
                'product: for a in &alts {
                    for s in &subs {
                        if next.len() >= 4096 {
                            break 'product;
                        }
                        let mut n = a.clone();
                        n.extend(s.iter().cloned());
                        next.push(n);
                    }
                }
                alts = next;
            }
        }
    }
    alts
}

/// Parse a selector given on the command line.
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    crate::syntax::parse_selector(crate::source::FileId(0), text).map_err(|_| format!("`{text}` is not a selector"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_selectors_parse_on_their_own() {
        let sel = super::parse_selector("vit.blocks[-2..].{attn.qkv, mlp.fc1}").unwrap();
        assert_eq!(sel.to_string(), "vit.blocks[-2..].{attn.qkv, mlp.fc1}");
        assert_eq!(super::parse_selector(" blocks[*] ").unwrap().to_string(), "blocks[*]");
        // Text that only a `model m { train … }` wrapper would have made whole.
        for bad in ["", "a, b", "a }  model n { train b", "a.", "[0]"] {
            assert!(super::parse_selector(bad).is_err(), "`{bad}` parsed");
        }
    }
}
