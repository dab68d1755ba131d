//! Parameters: creating a parameter node (path, shape limits, owner, weights
//! binding) and the `param(...)` statement with its init rules.

use super::args::bind;
use super::eval::ArgVal;
use super::{limits, Builder, Value, R};
use crate::diag::Diagnostic;
use crate::ir::{DType, Init, NodeId, Op, ParamInfo, ParamSource};
use crate::source::Span;

impl Builder {
    /// Create a parameter node, owned by the current component.
    pub(crate) fn new_param(&mut self, path: &str, shape: Vec<i64>, init: Init, span: Span) -> R<NodeId> {
        let mut numel: u128 = 1;
        for &d in &shape {
            numel = numel.saturating_mul(d.max(0) as u128);
        }
        if shape.iter().any(|&d| d <= 0) || numel > limits::MAX_PARAM_ELEMENTS {
            return Err(self.error(
                Diagnostic::error("E0406", format!("parameter `{path}` has an absurd shape {shape:?}"))
                    .at(span, "declared here")
                    .hint("every dimension must be positive and a tensor below 2^40 elements"),
            ));
        }
        self.total_elements += numel;
        if self.total_elements > limits::MAX_TOTAL_ELEMENTS {
            return Err(self.error(
                Diagnostic::error("E0406", "the model has more than 2^42 parameters")
                    .at(span, "while creating this parameter")
                    .hint("check depths, widths and repeat counts"),
            ));
        }
        let source = match &self.binding {
            Some(binding) => ParamSource::Weights {
                binding: binding.clone(),
                key: path.strip_prefix(&format!("{binding}.")).unwrap_or(path).to_string(),
            },
            None => ParamSource::Init { init },
        };
        let info = ParamInfo {
            path: path.to_string(),
            shape,
            dtype: DType::F32,
            trainable: false,
            component: self.component.clone(),
            source,
        };
        self.node(Op::Parameter(info), path, span, &[])
    }

    pub(super) fn param_stmt(&mut self, args: Vec<ArgVal>, path: &str, span: Span) -> R<Value> {
        let v = bind(
            self,
            "param",
            args,
            &[
                ("shape", None),
                ("init", Some(Value::Str("zeros".into()))),
                ("std", Some(Value::Float(0.02))),
                ("value", Some(Value::Float(0.0))),
            ],
            span,
        )?;
        let Value::List(items) = &v[0] else {
            return Err(self.error(
                Diagnostic::error("E0405", "`shape` must be a list of sizes")
                    .at(span, format!("got {}", v[0].a_kind()))
                    .hint("write param([1, 1, dim])"),
            ));
        };
        let mut shape = Vec::new();
        for it in items.clone() {
            shape.push(self.size_arg(&it, "shape", span)?);
        }
        let init = self.init_rule(&v[1], &v[2], &v[3], 1.0, span)?;
        Ok(Value::Tensor(self.new_param(path, shape, init, span)?))
    }

    pub(super) fn init_rule(&mut self, init: &Value, std: &Value, value: &Value, bound: f64, span: Span) -> R<Init> {
        let std = self.float_arg(std, "std", span)?;
        let value = self.float_arg(value, "value", span)?;
        Ok(match init {
            Value::Str(s) if s == "zeros" => Init::Zeros,
            Value::Str(s) if s == "ones" => Init::Ones,
            Value::Str(s) if s == "normal" => Init::Normal { std },
            Value::Str(s) if s == "trunc_normal" => Init::TruncNormal { std },
            Value::Str(s) if s == "constant" => Init::Constant { value },
            Value::Str(s) if s == "default" => Init::Uniform { bound },
            other => {
                return Err(self.error(
                    Diagnostic::error("E0417", "unknown init rule").at(span, format!("init {other:?}")).hint(
                        "init is one of \"default\", \"zeros\", \"ones\", \"normal\", \"trunc_normal\", \"constant\"",
                    ),
                ))
            }
        })
    }
}
