//! Arguments: binding call arguments to a signature, and coercing values to the
//! ints, floats, sizes and tensors that modules and primitives expect.

use super::builtins::nearest;
use super::eval::ArgVal;
use super::{limits, Builder, Value, R};
use crate::diag::Diagnostic;
use crate::ir::NodeId;
use crate::source::Span;

/// Bind arguments to a fixed signature of `(name, default)`; `None` = required.
pub(super) fn bind(
    b: &mut Builder,
    what: &str,
    args: Vec<ArgVal>,
    sig: &[(&str, Option<Value>)],
    span: Span,
) -> R<Vec<Value>> {
    let mut slots: Vec<Option<Value>> = vec![None; sig.len()];
    let mut pos = 0;
    for a in args {
        let i = match &a.name {
            None => {
                if pos >= sig.len() {
                    return Err(b.error(
                        Diagnostic::error("E0401", format!("too many arguments to `{what}`"))
                            .at(a.span, format!("`{what}` takes {} argument(s)", sig.len()))
                            .hint(format!(
                                "`{what}` takes ({})",
                                sig.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            )),
                    ));
                }
                pos += 1;
                pos - 1
            }
            Some((n, nspan)) => match sig.iter().position(|(s, _)| s == n) {
                Some(i) => i,
                None => {
                    let near = nearest(n, sig.iter().map(|(s, _)| *s), 2);
                    return Err(b.error(
                        Diagnostic::error("E0402", format!("`{what}` has no parameter `{n}`"))
                            .at(*nspan, "unknown parameter")
                            .hint(if near.is_empty() {
                                format!(
                                    "`{what}` takes ({})",
                                    sig.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                                )
                            } else {
                                format!("did you mean `{}`?", near[0])
                            }),
                    ));
                }
            },
        };
        if slots[i].is_some() {
            return Err(b.error(
                Diagnostic::error("E0403", format!("`{}` given twice", sig[i].0))
                    .at(a.span, "given again here")
                    .hint("pass each parameter once"),
            ));
        }
        slots[i] = Some(a.value);
    }
    let mut out = Vec::with_capacity(sig.len());
    for (slot, (n, default)) in slots.into_iter().zip(sig) {
        match slot.or_else(|| default.clone()) {
            Some(v) => out.push(v),
            None => {
                return Err(b.error(
                    Diagnostic::error("E0404", format!("`{what}` needs `{n}`"))
                        .at(span, format!("missing `{n}`"))
                        .hint(format!("pass it as `{n}: ...`")),
                ))
            }
        }
    }
    Ok(out)
}

impl Builder {
    pub(super) fn int_arg(&mut self, v: &Value, what: &str, span: Span) -> R<i64> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(self.error(
                Diagnostic::error("E0405", format!("`{what}` must be an int"))
                    .at(span, format!("got {}", other.a_kind()))
                    .hint("sizes and counts are integers; use int(x) to convert"),
            )),
        }
    }

    pub(super) fn float_arg(&mut self, v: &Value, what: &str, span: Span) -> R<f64> {
        match v {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            other => Err(self.error(
                Diagnostic::error("E0405", format!("`{what}` must be a number"))
                    .at(span, format!("got {}", other.a_kind()))
                    .hint("write a number such as 1e-6"),
            )),
        }
    }

    pub(super) fn size_arg(&mut self, v: &Value, what: &str, span: Span) -> R<i64> {
        let n = self.int_arg(v, what, span)?;
        if n <= 0 || n as u128 > limits::MAX_PARAM_ELEMENTS {
            return Err(self.error(
                Diagnostic::error("E0406", format!("`{what}` = {n} is not a usable size"))
                    .at(span, "sizes must be positive and below 2^40")
                    .hint("check the parameters that compute it"),
            ));
        }
        Ok(n)
    }

    pub(super) fn tensor_arg(&mut self, v: &Value, what: &str, span: Span) -> R<Option<NodeId>> {
        match v {
            Value::Tensor(t) => Ok(Some(*t)),
            Value::Absent => Ok(None),
            other => Err(self.error(
                Diagnostic::error("E0407", format!("`{what}` must be a tensor"))
                    .at(span, format!("got {}", other.a_kind()))
                    .hint("tensors come from inputs, instances and tensor functions"),
            )),
        }
    }

    pub(super) fn sizes(&mut self, v: &Value, n: usize, what: &str, span: Span) -> R<Vec<i64>> {
        match v {
            Value::Int(_) => {
                let k = self.size_arg(v, what, span)?;
                Ok(vec![k; n])
            }
            Value::List(items) if items.len() == n => items.iter().map(|i| self.size_arg(i, what, span)).collect(),
            other => Err(self.error(
                Diagnostic::error("E0405", format!("`{what}` must be an int or a list of {n}"))
                    .at(span, format!("got {}", other.kind()))
                    .hint(format!("write {what}: 16 or {what}: [{}]", vec!["16"; n].join(", "))),
            )),
        }
    }
}
