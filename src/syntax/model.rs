//! The model block of the AST: declarations (inputs, components, adapters, pathways,
//! heads, outputs, training rules) and selectors.

use super::ast::*;
use super::grammar::Rule;
use super::parser::{string_value, Builder};
use crate::diag::Diagnostic;
use pest::iterators::Pair;

impl Builder {
    pub(super) fn model_decl(&mut self, p: Pair<Rule>) -> ModelDecl {
        let span = self.span(&p);
        let mut name = None;
        let mut extends = None;
        let mut items = Vec::new();
        for x in p.into_inner() {
            match x.as_rule() {
                Rule::ident => name = Some(self.ident(x)),
                Rule::extends => extends = x.into_inner().find(|y| y.as_rule() == Rule::ident).map(|y| self.ident(y)),
                Rule::kw_model => {}
                _ => items.push(self.model_item(x)),
            }
        }
        ModelDecl { name: name.expect("model name"), extends, items, span }
    }

    pub(super) fn trainability(p: &Pair<Rule>) -> Trainability {
        if p.as_str() == "frozen" {
            Trainability::Frozen
        } else {
            Trainability::Trainable
        }
    }

    pub(super) fn model_item(&mut self, p: Pair<Rule>) -> ModelItem {
        let span = self.span(&p);
        let rule = p.as_rule();
        let inner: Vec<Pair<Rule>> = p.into_inner().collect();
        let idents: Vec<Ident> =
            inner.iter().filter(|x| x.as_rule() == Rule::ident).map(|x| self.ident(x.clone())).collect();
        let find = |r: Rule| inner.iter().find(|x| x.as_rule() == r).cloned();
        let weights = find(Rule::weights).map(|w| self.weights_ref(w));
        let trainability = find(Rule::trainability).map(|t| (Self::trainability(&t), self.span(&t)));
        match rule {
            Rule::input_decl => {
                let (dtype, dims) = self.tensor_type(find(Rule::tensor_type).expect("tensor type"));
                let default = find(Rule::input_default).and_then(|d| d.into_inner().next()).map(|d| self.ident(d));
                ModelItem::Input(InputDecl {
                    name: idents[0].clone(),
                    dtype,
                    dims,
                    optional: find(Rule::optional_kw).is_some(),
                    default,
                    normalized: find(Rule::input_norm).map(|n| self.input_norm(n)),
                    span,
                })
            }
            Rule::component_decl => {
                let kind = if find(Rule::component_kind).expect("kind").as_str() == "backbone" {
                    ComponentKind::Backbone
                } else {
                    ComponentKind::Encoder
                };
                let value = self.expr(find(Rule::expr).expect("component expr"));
                ModelItem::Component(ComponentDecl {
                    kind,
                    name: idents[0].clone(),
                    value,
                    weights,
                    trainability,
                    span,
                })
            }
            Rule::adapter_decl => {
                let args = find(Rule::args).map(|a| self.args(a)).unwrap_or_default();
                let at = self.selector(find(Rule::selector).expect("adapter selector"));
                let placement = match find(Rule::placement).expect("placement").as_str() {
                    "after" => Placement::After,
                    "parallel" => Placement::Parallel,
                    _ => Placement::Before,
                };
                ModelItem::Adapter(AdapterDecl {
                    name: idents[0].clone(),
                    module: idents[1].clone(),
                    args,
                    at,
                    placement,
                    weights,
                    trainability,
                    span,
                })
            }
            Rule::pathway_decl => {
                let args = find(Rule::args).map(|a| self.args(a)).unwrap_or_default();
                let mut sels = inner.iter().filter(|x| x.as_rule() == Rule::selector);
                let from = self.selector(sels.next().expect("from").clone());
                let into = self.selector(sels.next().expect("into").clone());
                ModelItem::Pathway(PathwayDecl {
                    name: idents[0].clone(),
                    kind: idents[1].clone(),
                    args,
                    from,
                    into,
                    span,
                })
            }
            Rule::head_decl | Rule::output_decl => {
                let value = self.expr(find(Rule::expr).expect("expr"));
                let name = idents[0].clone();
                if rule == Rule::head_decl {
                    ModelItem::Head { name, value, span }
                } else {
                    ModelItem::Output { name, value, span }
                }
            }
            Rule::train_decl => ModelItem::Train {
                rules: inner
                    .iter()
                    .filter(|x| x.as_rule() == Rule::selector)
                    .map(|x| self.selector(x.clone()))
                    .collect(),
                span,
            },
            Rule::bind_decl => ModelItem::Bind {
                name: idents[0].clone(),
                file: find(Rule::string).map(string_value),
                keys: key_map(inner.iter().filter(|y| y.as_rule() == Rule::key_rule).cloned()),
                trainability: trainability.map(|t| t.0),
                span,
            },
            r => unreachable!("model item {r:?}"),
        }
    }

    /// `weights "file" KEY_RULES` or `weights required KEY_RULES` on a declaration.
    fn weights_ref(&self, w: Pair<Rule>) -> WeightsRef {
        let span = self.span(&w);
        let parts: Vec<Pair<Rule>> = w.into_inner().collect();
        let file = parts.iter().find(|y| y.as_rule() == Rule::string).map(|s| string_value(s.clone()));
        let keys = key_map(parts.iter().filter(|y| y.as_rule() == Rule::key_rule).cloned());
        WeightsRef { file, span, keys }
    }

    /// An input's `dtype[dims]`: the dtype as written, and each dimension fixed or symbolic.
    fn tensor_type(&mut self, tt: Pair<Rule>) -> (String, Vec<Dim>) {
        let mut dtype = String::new();
        let mut dims = Vec::new();
        for x in tt.into_inner() {
            match x.as_rule() {
                Rule::dtype => dtype = x.as_str().to_string(),
                _ => {
                    let d = x.into_inner().next().expect("dim");
                    let sp = self.span(&d);
                    if d.as_rule() == Rule::int {
                        match d.as_str().parse::<i64>() {
                            Ok(v) => dims.push(Dim::Fixed(v, sp)),
                            Err(_) => {
                                self.diags.push(
                                    Diagnostic::error("E0004", "dimension too large")
                                        .at(sp, "does not fit in 64 bits")
                                        .hint("write a realistic size"),
                                );
                                dims.push(Dim::Fixed(1, sp));
                            }
                        }
                    } else {
                        dims.push(Dim::Symbolic(self.ident(d)));
                    }
                }
            }
        }
        (dtype, dims)
    }

    /// `normalized NAME` or `normalized mean [...] std [...]`.
    fn input_norm(&mut self, p: Pair<Rule>) -> InputNorm {
        let inner = p.into_inner().find(|x| matches!(x.as_rule(), Rule::ident | Rule::norm_stats)).expect("norm");
        if inner.as_rule() == Rule::ident {
            return InputNorm::Named(self.ident(inner));
        }
        let span = self.span(&inner);
        // f32 as `graft data import --mean` parses, so equal text gives equal numbers.
        let nums = |l: Pair<Rule>| -> Vec<f32> {
            l.into_inner().map(|n| n.as_str().parse::<f32>().unwrap_or(f32::NAN)).collect()
        };
        let mut lists = inner.into_inner().filter(|x| x.as_rule() == Rule::num_list).map(nums);
        let mean = lists.next().unwrap_or_default();
        let std = lists.next().unwrap_or_default();
        InputNorm::Stats { mean, std, span }
    }

    pub(super) fn selector(&mut self, p: Pair<Rule>) -> Selector {
        let span = self.span(&p);
        let mut steps = Vec::new();
        for step in p.into_inner() {
            match step.as_rule() {
                Rule::sel_set => steps.push(SelStep::Set(step.into_inner().map(|s| self.selector(s)).collect())),
                _ => {
                    let mut it = step.into_inner();
                    let name = it.next().expect("segment name").as_str();
                    let name = match name {
                        "*" => SegName::Star,
                        "**" => SegName::DoubleStar,
                        n => SegName::Exact(n.to_string()),
                    };
                    let index = it.next().map(|ix| self.index_sel(ix));
                    steps.push(SelStep::Seg { name, index });
                }
            }
        }
        Selector { steps, span }
    }

    pub(super) fn index_sel(&mut self, p: Pair<Rule>) -> IndexSel {
        let span = self.span(&p);
        let inner = p.into_inner().next().expect("index body");
        let mut num = |x: Pair<Rule>| -> i64 {
            x.as_str().parse::<i64>().unwrap_or_else(|_| {
                self.diags.push(
                    Diagnostic::error("E0004", "index too large")
                        .at(span, "does not fit in 64 bits")
                        .hint("indices count instances such as blocks.0 … blocks.N"),
                );
                0
            })
        };
        match inner.as_rule() {
            Rule::index_all => IndexSel::All,
            Rule::index_one => IndexSel::One(num(inner.into_inner().next().expect("int"))),
            _ => {
                let mut lo = None;
                let mut hi = None;
                for x in inner.into_inner() {
                    let is_lo = x.as_rule() == Rule::range_lo;
                    let v = num(x.into_inner().next().expect("int"));
                    if is_lo {
                        lo = Some(v);
                    } else {
                        hi = Some(v);
                    }
                }
                IndexSel::Range(lo, hi)
            }
        }
    }
}

/// `prefix "p"` and `rename "a" -> "b"` rules, in order (a later prefix wins).
pub(super) fn key_map<'a>(rules: impl Iterator<Item = Pair<'a, Rule>>) -> crate::keymap::KeyMap {
    let mut m = crate::keymap::KeyMap::default();
    for r in rules {
        let parts: Vec<Pair<Rule>> = r.into_inner().collect();
        let strings: Vec<String> =
            parts.iter().filter(|x| x.as_rule() == Rule::string).cloned().map(string_value).collect();
        let ints =
            |p: &Pair<Rule>| -> Vec<i64> { p.clone().into_inner().filter_map(|i| i.as_str().parse().ok()).collect() };
        let lists: Vec<Vec<i64>> = parts.iter().filter(|x| x.as_rule() == Rule::int_list).map(ints).collect();
        if let [from, to] = lists.as_slice() {
            let keep =
                parts.iter().find(|x| x.as_rule() == Rule::int).and_then(|k| k.as_str().parse().ok()).unwrap_or(0);
            let key = strings.first().cloned().unwrap_or_default();
            m.resample.push(crate::keymap::Resample { key, from: from.clone(), to: to.clone(), keep });
            continue;
        }
        match strings.as_slice() {
            [p] => m.prefix = Some(p.clone()),
            [from, to] => m.rename.push(crate::keymap::Rename { from: from.clone(), to: to.clone() }),
            _ => {}
        }
    }
    m
}
