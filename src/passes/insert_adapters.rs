//! insert_adapters: instantiate each adapter at every site its selector matches and
//! wire it in by placement.
//!
//! Analyzer pass. Placement semantics (the adapter module decides its own residual):
//! - `after`:    the site's output `y` is replaced by `A(y)`;
//! - `parallel`: `y` is replaced by `y + A(x)`, `x` being the site's input;
//! - `before`:   inside the site, its input `x` is replaced by `A(x)`.
//!
//! Adapter parameters live under `ADAPTER.SITE` (`mhva.video_vit.blocks.3.mlp.down.weight`).
//! An empty selector, two adapters at one point with one placement, and adapter
//! arguments that do not fit the module are user errors.

use super::ctx::{Decls, PassCtx};
use crate::diag::Diagnostic;
use crate::ir::typing::type_nodes;
use crate::ir::verify::VerifyError;
use crate::ir::{Graph, NodeId, Op};
use crate::lower::{AdapterInfo, Builder, ModuleEntry, Value};
use crate::select::Universe;
use crate::syntax::ast::{AdapterDecl, ExprKind, Placement, Stmt};
use std::collections::{HashMap, HashSet};

/// The pass: insert every adapter of the model; errors go to the context.
pub fn insert_adapters(g: &mut Graph, cx: &mut PassCtx) -> Result<bool, VerifyError> {
    let (mut b, decls) = cx.lend(g);
    let b = &mut *b;
    let mut inserted = false;
    let mut taken: HashMap<(String, Placement), (String, crate::source::Span)> = HashMap::new();
    let mut owner_of: HashMap<NodeId, usize> = HashMap::new();
    let adapters = &decls.adapters;
    // Sites only grow (adapters add theirs): extend the universe instead of rebuilding it.
    let mut universe = Universe::new(std::iter::empty());
    let mut known = 0;
    for (ai, a) in adapters.iter().enumerate() {
        if b.diags.items.len() > crate::lower::limits::MAX_DIAGNOSTICS {
            break;
        }
        universe.extend(b.site_order[known..].iter().map(String::as_str));
        known = b.site_order.len();
        let sites = universe.full_matches(&a.at);
        if sites.is_empty() {
            let near = universe.suggest(&a.at, 3);
            b.diags.push(
                Diagnostic::error("E0701", format!("adapter `{}`: selector `{}` matches nothing", a.name.name, a.at))
                    .at(a.at.span, "no site has this path")
                    .hint(if near.is_empty() {
                        "`graft select SPEC PATTERN` lists what a pattern matches".to_string()
                    } else {
                        format!("nearest existing paths: {}", near.join(", "))
                    }),
            );
            continue;
        }
        // Instances are named `ADAPTER.SITE`: a site and one inside it would give
        // paths that run into each other.
        if let Some((outer, inner)) = nested_pair(&sites) {
            b.diags.push(
                Diagnostic::error(
                    "E0704",
                    format!("adapter `{}` matches both `{outer}` and `{inner}`, which is inside it", a.name.name),
                )
                .at(a.at.span, "selects an instance and a site within it")
                .hint("make the selector match one level only, e.g. with an exact path instead of `**`"),
            );
            continue;
        }
        // An adapter loaded from a trained run reads its parameters from that file.
        let binding = decls.adapter_weights.contains_key(&a.name.name).then(|| a.name.name.clone());
        for site_path in sites {
            if let Some((other, span)) = taken.get(&(site_path.clone(), a.placement)) {
                let d = Diagnostic::error(
                    "E0702",
                    format!("adapters `{}` and `{other}` collide at `{site_path}`", a.name.name),
                )
                .at(a.at.span, format!("`{}` here", a.placement.name()))
                .also(*span, format!("`{other}` is already `{}` here", a.placement.name()))
                .hint("merge them into one adapter module, or place one of them differently");
                b.diags.push(d);
                break;
            }
            taken.insert((site_path.clone(), a.placement), (a.name.name.clone(), a.at.span));
            // No node is removed before dead-code elimination, so new ids are above the bound.
            let mark = b.graph.id_bound();
            if insert_one(b, decls, a, &site_path, binding.clone()).is_err() {
                break;
            }
            for id in b.graph.ids_from(mark) {
                owner_of.insert(id, ai);
                inserted = true;
            }
        }
    }
    for (id, d) in type_nodes(&mut b.graph) {
        let d = match owner_of.get(&id) {
            Some(&ai) => {
                let a = &adapters[ai];
                d.also(a.span, format!("inserted by adapter `{}`", a.name.name))
                    .hint("the adapter's sizes must fit the site it is placed at; `graft select` shows the site")
            }
            None => d,
        };
        b.diags.push(d);
    }
    Ok(inserted)
}

/// Two matched sites of which one lies inside the other, if any.
fn nested_pair(sites: &[String]) -> Option<(String, String)> {
    let set: std::collections::HashSet<&str> = sites.iter().map(String::as_str).collect();
    sites.iter().find_map(|inner| {
        let mut p = inner.as_str();
        while let Some(i) = p.rfind('.') {
            p = &p[..i];
            if set.contains(p) {
                return Some((p.to_string(), inner.clone()));
            }
        }
        None
    })
}

fn insert_one(
    b: &mut Builder,
    decls: &Decls,
    a: &AdapterDecl,
    site_path: &str,
    binding: Option<String>,
) -> Result<(), ()> {
    let site = b.sites[site_path].clone();
    let path = format!("{}.{}", a.name.name, site_path);
    // Which arguments are tensor inputs of the module (all but its first `in`).
    let extra_ins: Vec<String> = match b.program().modules.get(&a.module.name).map(|e| &**e) {
        Some(ModuleEntry::Decl(m)) => m
            .body
            .iter()
            .filter_map(|s| match s {
                Stmt::In { name, .. } => Some(name.name.clone()),
                _ => None,
            })
            .skip(1)
            .collect(),
        _ => Vec::new(),
    };
    let args = b.eval_args(&a.args, &decls.env, &path).map_err(|_| ())?;
    let (inputs, config): (Vec<_>, Vec<_>) =
        args.into_iter().partition(|arg| arg.name.as_ref().is_some_and(|(n, _)| extra_ins.contains(n)));
    let feed = match a.placement {
        Placement::After => site.output,
        Placement::Parallel | Placement::Before => match site.input {
            Some(x) => x,
            None => {
                b.diags.push(
                    Diagnostic::error("E0703", format!("`{site_path}` has no input to feed adapter `{}`", a.name.name))
                        .at(a.at.span, format!("`{}` needs the site's input", a.placement.name()))
                        .hint("place it `after` this site, or at an instance that takes an input"),
                );
                return Err(());
            }
        },
    };
    let mut all_inputs = vec![crate::lower::eval_arg(Value::Tensor(feed), a.span)];
    all_inputs.extend(inputs);
    // The widths the module receives and returns here: its `site_in` / `site_out`.
    let width = |b: &Builder, n: NodeId| b.graph.node(n).ty.as_ref().and_then(|t| t.shape.last()?.fixed());
    let back = match a.placement {
        Placement::After | Placement::Parallel => site.output,
        Placement::Before => feed,
    };
    let widths = width(b, feed).zip(width(b, back));
    if let Some(w) = widths {
        check_explicit_sizes(b, a, site_path, &config, w)?;
    }
    record(b, a, site_path, &config);
    let mark = b.graph.id_bound();
    b.set_owner(&a.name.name, binding);
    b.adapter_site = widths;
    let out = b.instance(&a.module.name, a.module.span, config, all_inputs, &path, a.span);
    b.adapter_site = None;
    let out = out.map_err(|_| ())?;
    let out = match out {
        Value::Tensor(t) => t,
        _ => return Ok(()), // absent context at compile time: the adapter is skipped
    };
    let new: HashSet<NodeId> = b.graph.ids_from(mark).into_iter().collect();
    let g = &mut b.graph;
    match a.placement {
        Placement::After => g.replace_uses(site.output, out, |u| !new.contains(&u)),
        Placement::Parallel => {
            let add = g.add(Op::Add, path.clone(), Some(a.span), &[site.output, out]);
            g.replace_uses(site.output, add, |u| !new.contains(&u) && u != add);
        }
        Placement::Before => {
            let inside = format!("{site_path}.");
            let users: Vec<NodeId> = g
                .users(feed)
                .into_iter()
                .map(|(u, _)| u)
                .filter(|u| !new.contains(u))
                .filter(|u| {
                    let p = &g.node(*u).path;
                    p == site_path || p.starts_with(&inside)
                })
                .collect();
            g.replace_uses(feed, out, |u| users.contains(&u));
        }
    }
    Ok(())
}

/// The adapter's module, numeric configuration (given, or a literal default) and sites.
fn record(b: &mut Builder, a: &AdapterDecl, site_path: &str, config: &[crate::lower::ArgVal]) {
    let entry = b
        .adapter_info
        .entry(a.name.name.clone())
        .or_insert_with(|| AdapterInfo { module: a.module.name.clone(), ..AdapterInfo::default() });
    entry.sites.push(site_path.to_string());
    if entry.sites.len() > 1 {
        return;
    }
    let Some(ModuleEntry::Decl(m)) = b.program().modules.get(&a.module.name).map(|e| (**e).clone()) else { return };
    let entry = b.adapter_info.get_mut(&a.name.name).expect("just inserted");
    let num = |v: &Value| match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    };
    let positional: Vec<&crate::lower::ArgVal> = config.iter().filter(|c| c.name.is_none()).collect();
    for (i, p) in m.params.iter().enumerate() {
        let given = positional.get(i).copied();
        let given = given.or_else(|| config.iter().find(|c| c.name.as_ref().is_some_and(|(n, _)| n == &p.name.name)));
        let value = match given {
            Some(g) => num(&g.value),
            None => match p.default.as_ref().map(|d| &d.kind) {
                Some(ExprKind::Int(v)) => Some(*v as f64),
                Some(ExprKind::Float(v)) => Some(*v),
                _ => None,
            },
        };
        if let Some(v) = value {
            entry.args.insert(p.name.name.clone(), v);
        }
    }
}

/// Sizes given explicitly for parameters that default to the site's widths must be
/// those widths: one clear error instead of a shape mismatch deep inside the module.
fn check_explicit_sizes(
    b: &mut Builder,
    a: &AdapterDecl,
    site_path: &str,
    config: &[crate::lower::ArgVal],
    (site_in, site_out): (i64, i64),
) -> Result<(), ()> {
    let Some(ModuleEntry::Decl(m)) = b.program().modules.get(&a.module.name).map(|e| &**e) else { return Ok(()) };
    let m = m.clone();
    let mut pos = 0;
    for arg in config {
        let i = match &arg.name {
            Some((n, _)) => m.params.iter().position(|p| &p.name.name == n),
            None => {
                pos += 1;
                Some(pos - 1)
            }
        };
        let Some(p) = i.and_then(|i| m.params.get(i)) else { continue };
        let want = match p.default.as_ref().map(|d| &d.kind) {
            Some(ExprKind::Name(n)) if n == "site_in" => (site_in, "receives"),
            Some(ExprKind::Name(n)) if n == "site_out" => (site_out, "returns"),
            _ => continue,
        };
        if let Value::Int(given) = arg.value {
            if given != want.0 {
                b.diags.push(
                    Diagnostic::error(
                        "E0705",
                        format!("adapter `{}`: `{}: {given}` does not fit `{site_path}`", a.name.name, p.name.name),
                    )
                    .at(arg.span, format!("the adapter {} {} features there", want.1, want.0))
                    .also(p.name.span, format!("`{}` defaults to the site's width", p.name.name))
                    .hint(format!("leave `{}` out: each site gives the adapter its own width", p.name.name)),
                );
                return Err(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::passes::testkit::{errors, ir, lowered};

    const SPEC: &str = r#"
module lin(dim: int) {
  in x
  fc = linear(dim, dim)(x)
  out fc
}
module delta(dim: int) {
  in x
  up = linear(dim, dim, bias: false)(x)
  out up
}
model m {
  input x: f32[B, 4]
  encoder t = lin(4)(x)
  adapter a = delta(4) at t.fc PLACEMENT
  output y = t
}
"#;

    fn run(placement: &str) -> String {
        let (mut g, mut cx) = lowered(&SPEC.replace("PLACEMENT", placement));
        assert!(super::insert_adapters(&mut g, &mut cx).unwrap());
        assert!(!cx.diags().has_errors(), "{}", errors(&cx));
        ir(&g)
    }

    /// One declaration at sites of different widths: each instance takes its site's.
    #[test]
    fn sizes_come_from_the_site() {
        let spec = r#"
module two(dim: int) {
  in x
  wide   = linear(dim, dim * 3)(x)
  narrow = linear(dim * 3, dim)(wide)
  out narrow
}
module low_rank(in_features: int = site_in, out_features: int = site_out, rank: int) {
  in x
  a = linear(in_features, rank, bias: false)(x)
  b = linear(rank, out_features, bias: false)(a)
  out b
}
model m {
  input x: f32[B, 2]
  encoder t = two(2)(x)
  adapter l = low_rank(rank: 1) at t.{wide, narrow} parallel
  output y = t
}
"#;
        let (mut g, mut cx) = lowered(spec);
        super::insert_adapters(&mut g, &mut cx).unwrap();
        assert!(!cx.diags().has_errors(), "{}", errors(&cx));
        let text = ir(&g);
        assert!(text.contains("param l.t.wide.a.weight : f32[1, 2]"), "{text}");
        assert!(text.contains("param l.t.wide.b.weight : f32[6, 1]"), "{text}");
        assert!(text.contains("param l.t.narrow.a.weight : f32[1, 6]"), "{text}");
        assert!(text.contains("param l.t.narrow.b.weight : f32[2, 1]"), "{text}");
        // The same sizes given explicitly compile to the same graph.
        let explicit = spec.replace(
            "adapter l = low_rank(rank: 1) at t.{wide, narrow} parallel",
            "adapter l = low_rank(in_features: 2, out_features: 6, rank: 1) at t.wide parallel\n  \
             adapter k = low_rank(in_features: 6, out_features: 2, rank: 1) at t.narrow parallel",
        );
        let (mut g, mut cx) = lowered(&explicit);
        super::insert_adapters(&mut g, &mut cx).unwrap();
        assert!(!cx.diags().has_errors(), "{}", errors(&cx));
        assert_eq!(ir(&g).replace("k.t.narrow", "l.t.narrow"), text);
    }

    #[test]
    fn after_composes() {
        insta::assert_snapshot!(run("after"), @r"
        %0 = input x : f32[B, 4]
        %1 = param t.fc.weight : f32[4, 4] frozen init uniform(0.500000)
        %2 = param t.fc.bias : f32[4] frozen init uniform(0.500000)
        %3 = linear(%0, %1, %2) : f32[B, 4]  @t.fc
        %4 = param a.t.fc.up.weight : f32[4, 4] frozen init uniform(0.500000)
        %5 = linear(%3, %4) : f32[B, 4]  @a.t.fc.up
        output y = %5 : f32[B, 4]
        ");
    }

    #[test]
    fn parallel_adds_adapter_of_the_input() {
        insta::assert_snapshot!(run("parallel"), @r"
        %0 = input x : f32[B, 4]
        %1 = param t.fc.weight : f32[4, 4] frozen init uniform(0.500000)
        %2 = param t.fc.bias : f32[4] frozen init uniform(0.500000)
        %3 = linear(%0, %1, %2) : f32[B, 4]  @t.fc
        %4 = param a.t.fc.up.weight : f32[4, 4] frozen init uniform(0.500000)
        %5 = linear(%0, %4) : f32[B, 4]  @a.t.fc.up
        %6 = add(%3, %5) : f32[B, 4]  @a.t.fc
        output y = %6 : f32[B, 4]
        ");
    }

    #[test]
    fn before_feeds_the_site() {
        insta::assert_snapshot!(run("before"), @r"
        %0 = input x : f32[B, 4]
        %1 = param a.t.fc.up.weight : f32[4, 4] frozen init uniform(0.500000)
        %2 = linear(%0, %1) : f32[B, 4]  @a.t.fc.up
        %3 = param t.fc.weight : f32[4, 4] frozen init uniform(0.500000)
        %4 = param t.fc.bias : f32[4] frozen init uniform(0.500000)
        %5 = linear(%2, %3, %4) : f32[B, 4]  @t.fc
        output y = %5 : f32[B, 4]
        ");
    }
}
