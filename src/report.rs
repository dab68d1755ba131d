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
}

/// The whole parameter report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParamReport {
    pub model: String,
    pub mode: crate::pipeline::Mode,
    pub total: u64,
    pub trainable: u64,
    pub frozen: u64,
    pub components: Vec<ComponentParams>,
    /// The first declared backbone, that percentages refer to.
    pub backbone: Option<String>,
    pub backbone_params: u64,
    /// Trainable parameters as a % of the backbone's.
    pub trainable_pct_of_backbone: Option<f64>,
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
        .map(|(n, k)| ComponentParams { name: n.clone(), kind: k.clone(), total: 0, trainable: 0, frozen: 0 })
        .collect();
    let (mut total, mut trainable) = (0u64, 0u64);
    for (_, p) in c.graph.params() {
        let n = p.numel();
        total += n;
        if p.trainable {
            trainable += n;
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
                });
                comps.last_mut().expect("just pushed")
            }
        };
        entry.total += n;
        if p.trainable {
            entry.trainable += n;
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
        frozen: total - trainable,
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

/// The table `graft params` prints.
pub fn param_table(r: &ParamReport) -> String {
    let mut s = String::new();
    let mode = match r.mode {
        crate::pipeline::Mode::Train => "train",
        crate::pipeline::Mode::Infer => "infer",
    };
    let _ = writeln!(s, "model {} ({mode} mode)", r.model);
    let _ = writeln!(s, "{:<24} {:<9} {:>14} {:>14} {:>14}", "component", "kind", "total", "trainable", "frozen");
    for c in &r.components {
        let _ = writeln!(
            s,
            "{:<24} {:<9} {:>14} {:>14} {:>14}",
            c.name,
            c.kind,
            thousands(c.total),
            thousands(c.trainable),
            thousands(c.frozen)
        );
    }
    let _ = writeln!(
        s,
        "{:<24} {:<9} {:>14} {:>14} {:>14}",
        "total",
        "",
        thousands(r.total),
        thousands(r.trainable),
        thousands(r.frozen)
    );
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
    pub file: String,
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
        weights: c.weights.iter().map(|(b, f)| InspectWeights { binding: b.clone(), file: f.clone() }).collect(),
        params: InspectParams { total: r.total, trainable: r.trainable, frozen: r.frozen },
    }
}
