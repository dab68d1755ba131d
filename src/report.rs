//! Reports about a compiled model: the parameter table and the `inspect` contract.

use crate::ir::{Dim, Op};
use crate::pipeline::Compiled;
use crate::syntax::ast::ComponentKind;
use serde::Serialize;
use std::fmt::Write;

/// Parameter counts of one top-level component.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComponentParams {
    pub name: String,
    pub kind: String,
    pub total: u64,
    pub trainable: u64,
    pub frozen: u64,
    /// Computed once from other weights (`infer` mode: W + λ·W′, W + (α/r)·BA);
    /// counted in `total`, neither trainable nor frozen.
    pub folded: u64,
}

/// The whole parameter report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParamReport {
    pub model: String,
    pub mode: crate::pipeline::Mode,
    pub total: u64,
    pub trainable: u64,
    pub frozen: u64,
    pub folded: u64,
    pub components: Vec<ComponentParams>,
    /// The first declared backbone, that percentages refer to.
    pub backbone: Option<String>,
    pub backbone_params: u64,
    /// Trainable parameters as a % of the backbone's.
    pub trainable_pct_of_backbone: Option<f64>,
}

/// Parameters the spec declares that no output uses (dead-code elimination removed
/// them, so the table does not count them): reported by count, never dropped silently.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct UnusedParams {
    /// How many parameter tensors, and how many values in them.
    pub tensors: u64,
    pub values: u64,
    /// The first paths, in path order.
    pub first: Vec<String>,
}

/// What the graph `before` (the graph just before dead-code elimination) has that the
/// compiled model neither keeps nor folds into a kept parameter.
pub fn unused_params(before: &crate::ir::Graph, c: &Compiled) -> UnusedParams {
    let mut kept: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for (_, p) in c.graph.params() {
        kept.insert(&p.path);
        if let crate::ir::ParamSource::Folded { expr } = &p.source {
            kept.extend(expr.leaves().into_iter().map(|l| l.path.as_str()));
        }
    }
    let mut gone: Vec<(&str, u64)> = before
        .params()
        .filter(|(_, p)| !kept.contains(p.path.as_str()))
        .map(|(_, p)| (p.path.as_str(), p.numel()))
        .collect();
    gone.sort();
    gone.dedup();
    UnusedParams {
        tensors: gone.len() as u64,
        values: gone.iter().map(|(_, n)| n).sum(),
        first: gone.iter().take(8).map(|(p, _)| p.to_string()).collect(),
    }
}

/// One line for the parameter table: `unused: …` (empty when nothing is unused).
pub fn unused_line(u: &UnusedParams) -> String {
    if u.tensors == 0 {
        return String::new();
    }
    let more = if u.tensors as usize > u.first.len() {
        format!(" and {} more", u.tensors as usize - u.first.len())
    } else {
        String::new()
    };
    format!(
        "not counted: {} parameter tensor{} ({} values) that no output uses: {}{more}\n",
        u.tensors,
        if u.tensors == 1 { "" } else { "s" },
        thousands(u.values),
        u.first.join(", ")
    )
}

pub fn param_report(c: &Compiled) -> ParamReport {
    let mut kinds: Vec<(String, String)> = Vec::new();
    for comp in &c.components {
        let k = match comp.kind {
            ComponentKind::Backbone => "backbone",
            ComponentKind::Encoder => "encoder",
        };
        kinds.push((comp.name.clone(), k.into()));
    }
    kinds.extend(c.heads.iter().map(|h| (h.clone(), "head".into())));
    kinds.extend(c.adapters.iter().map(|a| (a.clone(), "adapter".into())));
    kinds.extend(c.pathways.iter().map(|p| (p.clone(), "pathway".into())));
    let mut comps: Vec<ComponentParams> = kinds
        .iter()
        .map(|(n, k)| ComponentParams {
            name: n.clone(),
            kind: k.clone(),
            total: 0,
            trainable: 0,
            frozen: 0,
            folded: 0,
        })
        .collect();
    let (mut total, mut trainable, mut folded) = (0u64, 0u64, 0u64);
    for (_, p) in c.graph.params() {
        let n = p.numel();
        let is_folded = matches!(p.source, crate::ir::ParamSource::Folded { .. });
        total += n;
        if p.trainable {
            trainable += n;
        } else if is_folded {
            folded += n;
        }
        let owner = if p.component.is_empty() { p.path.split('.').next().unwrap_or("") } else { p.component.as_str() };
        let entry = match comps.iter_mut().position(|x| x.name == owner) {
            Some(i) => &mut comps[i],
            None => {
                comps.push(ComponentParams {
                    name: owner.to_string(),
                    kind: "other".into(),
                    total: 0,
                    trainable: 0,
                    frozen: 0,
                    folded: 0,
                });
                comps.last_mut().expect("just pushed")
            }
        };
        entry.total += n;
        if p.trainable {
            entry.trainable += n;
        } else if is_folded {
            entry.folded += n;
        } else {
            entry.frozen += n;
        }
    }
    let backbone = c.components.iter().find(|x| x.kind == ComponentKind::Backbone).map(|x| x.name.clone());
    let backbone_params = backbone.as_ref().and_then(|b| comps.iter().find(|x| &x.name == b)).map_or(0, |x| x.total);
    ParamReport {
        model: c.model.clone(),
        mode: c.mode,
        total,
        trainable,
        frozen: total - trainable - folded,
        folded,
        components: comps,
        trainable_pct_of_backbone: (backbone_params > 0).then(|| 100.0 * trainable as f64 / backbone_params as f64),
        backbone,
        backbone_params,
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The table `graft params` prints. In `infer` mode a `folded` column counts the
/// weights computed from others (they neither train nor load as they are).
pub fn param_table(r: &ParamReport) -> String {
    let mut s = String::new();
    let infer = r.mode == crate::pipeline::Mode::Infer;
    let mode = if infer { "infer" } else { "train" };
    let _ = writeln!(s, "model {} ({mode} mode)", r.model);
    let row = |s: &mut String, name: &str, kind: &str, nums: [u64; 4]| {
        let _ = write!(
            s,
            "{:<24} {:<9} {:>14} {:>14} {:>14}",
            name,
            kind,
            thousands(nums[0]),
            thousands(nums[1]),
            thousands(nums[2])
        );
        if infer {
            let _ = write!(s, " {:>14}", thousands(nums[3]));
        }
        s.push('\n');
    };
    let _ = write!(s, "{:<24} {:<9} {:>14} {:>14} {:>14}", "component", "kind", "total", "trainable", "frozen");
    if infer {
        let _ = write!(s, " {:>14}", "folded");
    }
    s.push('\n');
    for c in &r.components {
        row(&mut s, &c.name, &c.kind, [c.total, c.trainable, c.frozen, c.folded]);
    }
    row(&mut s, "total", "", [r.total, r.trainable, r.frozen, r.folded]);
    match (&r.backbone, r.trainable_pct_of_backbone) {
        (Some(b), Some(pct)) => {
            let _ = writeln!(
                s,
                "trainable: {} = {pct:.2}% of backbone `{b}` ({})",
                thousands(r.trainable),
                thousands(r.backbone_params)
            );
        }
        _ => {
            let _ = writeln!(s, "trainable: {}", thousands(r.trainable));
        }
    }
    if infer && r.folded > 0 {
        let _ = writeln!(s, "folded: {} (computed once from the trained weights when they load)", thousands(r.folded));
    }
    s
}

#[derive(Serialize)]
pub struct InspectInput {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<Dim>,
    pub optional: bool,
}

#[derive(Serialize)]
pub struct InspectOutput {
    pub name: String,
    pub shape: Vec<Dim>,
}

#[derive(Serialize)]
pub struct InspectWeights {
    pub binding: String,
    /// `null` for `weights required`: the command line gives the file.
    pub file: Option<String>,
    /// Present (true) only for `weights required`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Key rules (`prefix`, `rename`), present only when the binding has some.
    #[serde(flatten)]
    pub keys: crate::keymap::KeyMap,
}

#[derive(Serialize)]
pub struct InspectParams {
    pub total: u64,
    pub trainable: u64,
    pub frozen: u64,
}

/// The stable `graft inspect --json` contract.
#[derive(Serialize)]
pub struct Inspect {
    pub model: String,
    pub inputs: Vec<InspectInput>,
    pub outputs: Vec<InspectOutput>,
    pub weights: Vec<InspectWeights>,
    pub params: InspectParams,
}

pub fn inspect(c: &Compiled) -> Inspect {
    let g = &c.graph;
    let inputs = g
        .inputs()
        .into_iter()
        .filter_map(|i| match &g.node(i).op {
            Op::Input { name, ty, optional, .. } => Some(InspectInput {
                name: name.clone(),
                dtype: ty.dtype.name().to_string(),
                shape: ty.shape.clone(),
                optional: *optional,
            }),
            _ => None,
        })
        .collect();
    let outputs = g
        .outputs()
        .into_iter()
        .filter_map(|o| match &g.node(o).op {
            Op::Output { name } => Some(InspectOutput {
                name: name.clone(),
                shape: g.node(o).ty.as_ref().map(|t| t.shape.clone()).unwrap_or_default(),
            }),
            _ => None,
        })
        .collect();
    let r = param_report(c);
    Inspect {
        model: c.model.clone(),
        inputs,
        outputs,
        weights: inspect_weights(c),
        params: InspectParams { total: r.total, trainable: r.trainable, frozen: r.frozen + r.folded },
    }
}

/// Every binding, by name: files, then `weights required`, each with its key rules.
fn inspect_weights(c: &Compiled) -> Vec<InspectWeights> {
    let mut names: Vec<&String> = c.weights.keys().chain(&c.required_weights).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|b| InspectWeights {
            binding: b.clone(),
            file: c.weights.get(b).cloned(),
            required: !c.weights.contains_key(b),
            keys: c.key_maps.get(b).cloned().unwrap_or_default(),
        })
        .collect()
}
