//! `graft export onnx`: the inference graph (folded) as an ONNX model.
//!
//! Inputs and outputs keep the spec's names; parameters become initializers named by
//! their paths, holding the values graft computes with (weights files, seeded init
//! rules, fold expressions). The batch symbol (the first dim of the inputs) is
//! symbolic with `dynamic`, otherwise fixed; other symbols (a sequence length `T`)
//! stay symbolic. Past 2 GB of weights, initializers go to one external data file
//! beside the model (protobuf's 2 GB message limit). Every input is required in
//! ONNX: a missing optional modality cannot be expressed, so the graph takes all of
//! them (zeros for an input declared `= zeros`).

use super::onnx_ops::{lower, Builder};
use super::onnx_proto::*;
use super::ExportError;
use crate::ir::{DType, Dim, NodeId, Op, TensorType};
use crate::pipeline::{Compiled, Mode};
use crate::tensor::HostTensor;
use prost::Message;
use std::collections::{HashMap, HashSet};

/// Export choices.
#[derive(Clone, Debug)]
pub struct Options {
    /// 17 to 21.
    pub opset: i64,
    /// Keep the batch symbol symbolic.
    pub dynamic: bool,
    /// The batch size when not `dynamic`.
    pub fixed: i64,
    /// Weights past this many bytes go to external data (`None`: 2 GB).
    pub external_over: Option<usize>,
}

/// The serialized model, and the external data file when the weights need one.
pub struct Exported {
    pub model: Vec<u8>,
    pub external: Option<Vec<u8>>,
    /// Nodes in the graph.
    pub nodes: usize,
}

/// Weights past this size go to an external data file.
const EXTERNAL_OVER: usize = 1 << 31;

/// The ONNX model of `c` (compiled in infer mode) with parameter values `weights` (by
/// path). `data_name` is the external data file's name, used past 2 GB.
pub fn model(
    c: &Compiled,
    weights: Vec<(String, HostTensor)>,
    opts: &Options,
    data_name: &str,
) -> Result<Exported, ExportError> {
    if c.mode != Mode::Infer {
        return Err(ExportError::Unsupported("ONNX export takes the folded (infer mode) model".into()));
    }
    if !(17..=21).contains(&opts.opset) {
        return Err(ExportError::Unsupported(format!("opset {} (graft writes 17 to 21)", opts.opset)));
    }
    let g = c.graph.graph();
    let order = g.topo_order().unwrap_or_default();
    let batch = batch_symbols(c);
    let value_info = |name: &str, ty: &TensorType| value_info(name, ty, &batch, opts);
    // Values move into the initializers (a ViT-L's weights are not copied).
    let mut by_path: HashMap<String, HostTensor> = weights.into_iter().collect();
    let mut b = Builder::new(opts.opset);
    let mut vals: HashMap<NodeId, String> = HashMap::new();
    let (mut inputs, mut outputs, mut params) = (Vec::new(), Vec::new(), Vec::new());
    for &n in &order {
        let node = g.node(n);
        match &node.op {
            Op::Input { name, ty, .. } => {
                inputs.push(value_info(name, ty)?);
                vals.insert(n, name.clone());
            }
            Op::Parameter(p) => {
                let t = by_path
                    .remove(p.path.as_str())
                    .ok_or_else(|| ExportError::Value(format!("no value for parameter `{}`", p.path)))?;
                params.push(initializer(p, t)?);
                vals.insert(n, p.path.clone());
            }
            Op::Output { name } => {
                let src = &vals[&g.operands(n)[0]];
                b.nodes.push(NodeProto {
                    input: vec![src.clone()],
                    output: vec![name.clone()],
                    name: format!("output/{name}"),
                    op_type: "Identity".into(),
                    ..Default::default()
                });
                let ty =
                    node.ty.as_ref().ok_or_else(|| ExportError::Unsupported(format!("output `{name}` has no type")))?;
                outputs.push(value_info(name, ty)?);
            }
            op => {
                let ops = g.operands(n);
                let a: Vec<String> = ops.iter().map(|o| vals[o].clone()).collect();
                let tys: Vec<&TensorType> = ops.iter().filter_map(|&o| g.node(o).ty.as_ref()).collect();
                let ty =
                    node.ty.as_ref().ok_or_else(|| ExportError::Unsupported(format!("`{}` has no type", node.path)))?;
                let out = lower(&mut b, op, &a, &tys, ty, &node.path)?;
                vals.insert(n, out);
            }
        }
    }
    let total: usize = params.iter().map(|t| t.raw_data.len()).sum();
    let external = (total > opts.external_over.unwrap_or(EXTERNAL_OVER)).then(|| externalize(&mut params, data_name));
    let nodes = b.nodes.len();
    let mut initializer = params;
    initializer.extend(b.consts);
    let graph = GraphProto {
        node: b.nodes,
        name: c.model.clone(),
        initializer,
        doc_string: String::new(),
        input: inputs,
        output: outputs,
    };
    let model = ModelProto {
        ir_version: ir_version(opts.opset),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opts.opset }],
        producer_name: "graft".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("model `{}`, exported by graft (infer mode, folded)", c.model),
        graph: Some(graph),
        metadata_props: vec![],
    };
    Ok(Exported { model: model.encode_to_vec(), external, nodes })
}

/// The symbols in the first dim of the inputs: the batch.
fn batch_symbols(c: &Compiled) -> HashSet<String> {
    let g = c.graph.graph();
    g.inputs()
        .iter()
        .filter_map(|&i| match &g.node(i).op {
            Op::Input { ty, .. } => match ty.shape.first() {
                Some(Dim::Sym(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A graph input's or output's name and type; the batch fixed unless `dynamic`.
fn value_info(
    name: &str,
    ty: &TensorType,
    batch: &HashSet<String>,
    opts: &Options,
) -> Result<ValueInfoProto, ExportError> {
    let dim = ty
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Dimension { dim_value: Some(*n), dim_param: None },
            Dim::Sym(s) if batch.contains(s) && !opts.dynamic => {
                Dimension { dim_value: Some(opts.fixed), dim_param: None }
            }
            Dim::Sym(s) => Dimension { dim_value: None, dim_param: Some(s.clone()) },
        })
        .collect();
    let shape = Some(TensorShapeProto { dim });
    Ok(ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { tensor_type: Some(TypeTensor { elem_type: elem(ty.dtype)?, shape }) }),
    })
}

/// A parameter's value as an initializer named by its path (the data moves).
fn initializer(p: &crate::ir::ParamInfo, t: HostTensor) -> Result<TensorProto, ExportError> {
    if t.shape != p.shape || t.dtype != p.dtype {
        return Err(ExportError::Value(format!(
            "parameter `{}`: expected {}, the value is {}",
            p.path,
            crate::tensor::type_text(p.dtype, &p.shape),
            t.type_text()
        )));
    }
    Ok(TensorProto {
        dims: t.shape.clone(),
        data_type: elem(t.dtype)?,
        name: p.path.clone(),
        raw_data: t.data,
        ..Default::default()
    })
}

/// The ONNX IR version that goes with an opset.
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

fn elem(d: DType) -> Result<i32, ExportError> {
    Ok(match d {
        DType::F32 => data_type::FLOAT,
        DType::F16 => data_type::FLOAT16,
        DType::BF16 => data_type::BFLOAT16,
        DType::F64 => data_type::DOUBLE,
        DType::I64 => data_type::INT64,
        DType::I32 => data_type::INT32,
        DType::Bool => data_type::BOOL,
        DType::U8 => data_type::UINT8,
    })
}

/// Move every initializer's data into one buffer (aligned to 4 KiB, as ONNX's own
/// writer does) and point the initializers at it.
fn externalize(params: &mut [TensorProto], data_name: &str) -> Vec<u8> {
    let mut data = Vec::new();
    for t in params.iter_mut() {
        while data.len() % 4096 != 0 {
            data.push(0);
        }
        let offset = data.len();
        data.extend_from_slice(&t.raw_data);
        let entry = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v };
        t.external_data = vec![
            entry("location", data_name.to_string()),
            entry("offset", offset.to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        t.data_location = 1;
        t.raw_data = Vec::new();
    }
    data
}
