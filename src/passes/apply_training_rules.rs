//! apply_training_rules: mark exactly the parameters the model's rules name as
//! trainable; everything else is frozen.
//!
//! Analyzer pass. A rule is a component name (backbone, encoder, head, adapter —
//! everything under it; a pathway — its λs, and its W′ when `aux: trainable`) or a
//! selector over parameter paths (`target.blocks[-2..]`). A component marked
//! `trainable` counts as named. Naming something declared `frozen` (or an adapter
//! loaded from a trained run) is a conflict; a rule that matches nothing is an error.
//!
//! The pass leaves the parameters the rules were evaluated over in the context; after
//! the last pass the pipeline evaluates the rules again over them ([`named_by_rules`])
//! and checks every flag in the final graph against that set
//! (`ir::verify::verify_trainable`), so a later pass that flips a flag, or makes a
//! trainable parameter, is caught as a compiler bug.

use super::ctx::{Borrowed, PassCtx};
use crate::diag::Diagnostic;
use crate::ir::verify::VerifyError;
use crate::ir::Graph;
use crate::lower::Decls;
use crate::select::Universe;
use crate::syntax::ast::{SegName, SelStep, Trainability};
use std::collections::{HashMap, HashSet};

/// The pass: set every parameter's trainable flag from the rules.
pub fn apply_training_rules(g: &mut Graph, cx: &mut PassCtx) -> Result<bool, VerifyError> {
    let params: Vec<(String, String)> = g.params().map(|(_, p)| (p.path.clone(), p.component.clone())).collect();
    let (named, errors) = named_by_rules(&params, &cx.decls, &cx.borrowed);
    for d in errors {
        cx.report(d);
    }
    if cx.diags().has_errors() {
        return Ok(false);
    }
    let mut changed = false;
    let ids: Vec<_> = g.params().map(|(id, p)| (id, p.path.clone())).collect();
    for (id, path) in ids {
        if let Some(p) = g.param_mut(id) {
            changed |= p.trainable != named.contains(&path);
            p.trainable = named.contains(&path);
        }
    }
    cx.rule_params = Some(params);
    Ok(changed)
}

/// The parameter paths the training rules (and `trainable` components) name among
/// `params` (path, component; in creation order), with the errors of the rules:
/// conflicts with frozen components and rules that match nothing.
pub fn named_by_rules(
    params: &[(String, String)],
    decls: &Decls,
    borrowed: &HashMap<String, Borrowed>,
) -> (HashSet<String>, Vec<Diagnostic>) {
    // Components that must not train, with why.
    let mut frozen: HashMap<String, &'static str> = HashMap::new();
    for c in &decls.components {
        if c.trainability == Some(Trainability::Frozen) {
            frozen.insert(c.name.clone(), "declared `frozen`");
        }
    }
    for (a, (_, t)) in &decls.adapter_weights {
        if *t != Some(Trainability::Trainable) {
            frozen.insert(a.clone(), "loaded from trained weights, so frozen");
        }
    }
    let component_of: HashMap<&str, &str> = params.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    let under = |name: &str| -> Vec<String> {
        let prefix = format!("{name}.");
        params.iter().filter(|(p, _)| p == name || p.starts_with(&prefix)).map(|(p, _)| p.clone()).collect()
    };
    let mut expected: HashSet<String> = HashSet::new();
    for c in &decls.components {
        if c.trainability == Some(Trainability::Trainable) {
            expected.extend(under(&c.name));
        }
    }
    let universe = Universe::new(params.iter().map(|(p, _)| p.as_str()));
    let mut errors = Vec::new();
    for rule in &decls.train {
        if errors.len() > crate::lower::limits::MAX_DIAGNOSTICS {
            break;
        }
        let single = match rule.steps.as_slice() {
            [SelStep::Seg { name: SegName::Exact(n), index: None }] => Some(n.clone()),
            _ => None,
        };
        let named: Vec<String> = match single.as_ref().and_then(|n| borrowed.get(n).map(|b| (n, b))) {
            Some((_, b)) => {
                let mut v = b.lambdas.clone();
                if b.aux_trainable {
                    v.extend(b.aux_params.iter().cloned());
                }
                v
            }
            None => {
                let prefixes = universe.prefix_matches(rule);
                prefixes.iter().flat_map(|p| under(p)).collect()
            }
        };
        if named.is_empty() {
            let near = universe.suggest(rule, 3);
            errors.push(
                Diagnostic::error("E1001", format!("training rule `{rule}` matches no parameter"))
                    .at(rule.span, "nothing to train here")
                    .hint(if near.is_empty() {
                        "name a component, adapter, pathway or head, or a parameter path pattern".to_string()
                    } else {
                        format!("nearest existing paths: {}", near.join(", "))
                    }),
            );
            continue;
        }
        let owners: HashSet<&str> = named.iter().filter_map(|p| component_of.get(p.as_str()).copied()).collect();
        let mut conflict = false;
        for o in owners {
            if let Some(why) = frozen.get(o) {
                let is_pathway_aux = single.as_ref().is_some_and(|n| borrowed.contains_key(n));
                let d = Diagnostic::error("E1002", format!("training rule `{rule}` trains `{o}`, which is {why}"))
                    .at(rule.span, "conflicting rule")
                    .hint(if is_pathway_aux {
                        format!("declare the pathway `aux: frozen`, or remove `frozen` from `{o}`")
                    } else {
                        format!("remove `frozen` from `{o}`, or drop it from the rule")
                    });
                errors.push(d);
                conflict = true;
            }
        }
        if !conflict {
            expected.extend(named);
        }
    }
    (expected, errors)
}

#[cfg(test)]
mod tests {
    use crate::passes::testkit::{errors, lowered};

    fn trainable(rules: &str) -> (Vec<String>, String) {
        let src = format!(
            r#"
module lin(dim: int) {{
  in x
  fc = linear(dim, dim)(x)
  out fc
}}
module two(dim: int) {{
  in x
  blocks = repeat(3) lin(dim)(x)
  out blocks
}}
model m {{
  input x: f32[B, 4]
  backbone t = two(4)(x) weights "t.safetensors"
  head h = linear(4, 2)(t)
  output y = h
  {rules}
}}
"#
        );
        let (mut g, mut cx) = lowered(&src);
        super::apply_training_rules(&mut g, &mut cx).expect("no compiler bug");
        let mut v: Vec<String> = g.params().filter(|(_, p)| p.trainable).map(|(_, p)| p.path.clone()).collect();
        v.sort();
        (v, errors(&cx))
    }

    #[test]
    fn component_and_selector_rules() {
        let (v, _) = trainable("train h, t.blocks[-1..]");
        insta::assert_snapshot!(v.join("\n"), @"
        h.bias
        h.weight
        t.blocks.2.fc.bias
        t.blocks.2.fc.weight
        ");
    }

    #[test]
    fn nothing_named_nothing_trains() {
        assert!(trainable("").0.is_empty());
    }

    #[test]
    fn empty_rule_is_an_error() {
        insta::assert_snapshot!(trainable("train t.blokcs").1, @"
        error[E1001]: training rule `t.blokcs` matches no parameter
           ┌─ test.graft:17:9
           │
        17 │   train t.blokcs
           │         ^^^^^^^^ nothing to train here
           │
           = hint: nearest existing paths: t.blocks
        ");
    }
}
