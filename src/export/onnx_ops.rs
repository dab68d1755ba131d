//! Each IR op as standard ONNX nodes (opset 17–21).
//!
//! Linear layers are `MatMul` over the transposed weight (+ `Add`), or `Gemm` on 2-d
//! inputs; attention is MatMul–Softmax–MatMul over heads (with an additive key mask);
//! GELU is the `Gelu` op from opset 20, its exact erf form before; reshapes keep
//! symbolic dims with ONNX's `0` (copy the input's size), so one graph serves any batch.
//! Weight-side ops on initializers (`Transpose`, `Reshape`) fold when ONNX Runtime
//! loads the model.

use super::onnx_proto::{attr_type, data_type, AttributeProto, NodeProto, TensorProto};
use super::ExportError;
use crate::ir::{DType, Dim, Op, TensorType};

/// The graph being built: nodes, constant initializers, fresh names.
pub(crate) struct Builder {
    pub nodes: Vec<NodeProto>,
    pub consts: Vec<TensorProto>,
    pub opset: i64,
    count: usize,
}

pub(crate) fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: Some(v), r#type: attr_type::INT, ..Default::default() }
}

pub(crate) fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f: Some(v), r#type: attr_type::FLOAT, ..Default::default() }
}

pub(crate) fn attr_s(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: Some(v.as_bytes().to_vec()),
        r#type: attr_type::STRING,
        ..Default::default()
    }
}

pub(crate) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: attr_type::INTS, ..Default::default() }
}

impl Builder {
    pub fn new(opset: i64) -> Builder {
        Builder { nodes: Vec::new(), consts: Vec::new(), opset, count: 0 }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.count += 1;
        format!("{hint}/{}", self.count)
    }

    /// Add a node; returns its output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, hint: &str) -> String {
        let out = self.fresh(&format!("{hint}/{op}"));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute: attrs,
            doc_string: String::new(),
        });
        out
    }

    fn constant(&mut self, data_type: i32, raw: Vec<u8>, dims: &[i64]) -> String {
        let name = self.fresh("const");
        self.consts.push(TensorProto {
            dims: dims.to_vec(),
            data_type,
            name: name.clone(),
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    pub fn ints(&mut self, v: &[i64]) -> String {
        self.constant(data_type::INT64, v.iter().flat_map(|x| x.to_le_bytes()).collect(), &[v.len() as i64])
    }

    pub fn scalar_i64(&mut self, v: i64) -> String {
        self.constant(data_type::INT64, v.to_le_bytes().to_vec(), &[])
    }

    /// A float constant in `dtype` (float32 models; float64 for f64).
    pub fn floats(&mut self, v: &[f64], dims: &[i64], dtype: DType) -> Result<String, ExportError> {
        let (dt, raw): (i32, Vec<u8>) = match dtype {
            DType::F32 => (data_type::FLOAT, v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect()),
            DType::F64 => (data_type::DOUBLE, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            d => return Err(ExportError::Unsupported(format!("ONNX export computes in f32 or f64, not {}", d.name()))),
        };
        Ok(self.constant(dt, raw, dims))
    }

    /// `axes` as the attribute (before `since`) or as an input (from `since` on).
    fn with_axes(
        &mut self,
        op: &str,
        x: &str,
        axes: &[i64],
        since: i64,
        mut attrs: Vec<AttributeProto>,
        hint: &str,
    ) -> String {
        if self.opset >= since {
            let a = self.ints(axes);
            self.node(op, &[x, &a], attrs, hint)
        } else {
            attrs.push(attr_ints("axes", axes));
            self.node(op, &[x], attrs, hint)
        }
    }

    pub fn unsqueeze(&mut self, x: &str, axes: &[i64], hint: &str) -> String {
        self.with_axes("Unsqueeze", x, axes, 13, vec![], hint)
    }

    fn transpose(&mut self, x: &str, perm: &[i64], hint: &str) -> String {
        self.node("Transpose", &[x], vec![attr_ints("perm", perm)], hint)
    }

    fn reshape(&mut self, x: &str, dims: &[i64], hint: &str) -> String {
        let s = self.ints(dims);
        self.node("Reshape", &[x, &s], vec![], hint)
    }
}

/// The ONNX nodes of one op over operand values `a` (typed `tys`); `out` is its type.
pub(crate) fn lower(
    b: &mut Builder,
    op: &Op,
    a: &[String],
    tys: &[&TensorType],
    out: &TensorType,
    hint: &str,
) -> Result<String, ExportError> {
    let dt = out.dtype;
    let rank = |t: &TensorType| t.rank() as i64;
    Ok(match op {
        Op::Linear => {
            if rank(tys[0]) == 2 {
                let mut ins = vec![a[0].as_str(), a[1].as_str()];
                if let Some(bias) = a.get(2) {
                    ins.push(bias);
                }
                b.node("Gemm", &ins, vec![attr_i("transB", 1)], hint)
            } else {
                let wt = b.transpose(&a[1], &[1, 0], hint);
                let y = b.node("MatMul", &[&a[0], &wt], vec![], hint);
                match a.get(2) {
                    Some(bias) => b.node("Add", &[&y, bias], vec![], hint),
                    None => y,
                }
            }
        }
        Op::GroupedLinear { groups } => {
            let g = *groups;
            let fin = tys[0].dim(-1).and_then(Dim::fixed).unwrap_or(0);
            let fout = tys[1].shape[0].fixed().unwrap_or(0);
            let lead = vec![0i64; tys[0].rank() - 1];
            let xg = b.reshape(&a[0], &[lead.clone(), vec![g, fin / g]].concat(), hint);
            let wg = b.reshape(&a[1], &[g, fout / g, fin / g], hint);
            let eq = attr_s("equation", "...gi,goi->...go");
            let y = b.node("Einsum", &[&xg, &wg], vec![eq], hint);
            let y = b.reshape(&y, &[lead, vec![fout]].concat(), hint);
            match a.get(2) {
                Some(bias) => b.node("Add", &[&y, bias], vec![], hint),
                None => y,
            }
        }
        Op::Conv2d { stride } => conv(b, a, tys, stride, hint),
        Op::Conv3d { stride } => conv(b, a, tys, stride, hint),
        Op::LayerNorm { eps } => {
            let attrs = vec![attr_i("axis", -1), attr_f("epsilon", *eps as f32)];
            b.node("LayerNormalization", &[&a[0], &a[1], &a[2]], attrs, hint)
        }
        Op::Gelu if b.opset >= 20 => b.node("Gelu", &[&a[0]], vec![attr_s("approximate", "none")], hint),
        Op::Gelu => gelu_erf(b, &a[0], dt, hint)?,
        Op::Relu => b.node("Relu", &[&a[0]], vec![], hint),
        Op::Tanh => b.node("Tanh", &[&a[0]], vec![], hint),
        Op::Sigmoid => b.node("Sigmoid", &[&a[0]], vec![], hint),
        Op::SinusoidPositions => {
            let (t, d) = (out.shape[1].fixed().unwrap_or(0), out.shape[2].fixed().unwrap_or(0));
            b.floats(&sinusoid(t, d), &[1, t, d], dt)?
        }
        Op::Attention { heads } => attention(b, a, tys, *heads, hint)?,
        Op::Add => b.node("Add", &[&a[0], &a[1]], vec![], hint),
        Op::Mul => b.node("Mul", &[&a[0], &a[1]], vec![], hint),
        Op::MatMul => b.node("MatMul", &[&a[0], &a[1]], vec![], hint),
        Op::Scale { factor } => {
            let f = b.floats(&[*factor], &[], dt)?;
            b.node("Mul", &[&a[0], &f], vec![], hint)
        }
        Op::Reshape { dims } => b.reshape(&a[0], dims, hint),
        Op::Permute { perm } => b.transpose(&a[0], &perm.iter().map(|&p| p as i64).collect::<Vec<_>>(), hint),
        Op::Split { axis, parts: _, index } => {
            let ax = if *axis < 0 { axis + rank(tys[0]) } else { *axis };
            let n = out.shape[ax as usize].fixed().unwrap_or(0);
            let (s, e, x) = (b.ints(&[index * n]), b.ints(&[(index + 1) * n]), b.ints(&[ax]));
            b.node("Slice", &[&a[0], &s, &e, &x], vec![], hint)
        }
        Op::Concat { axis } => concat(b, a, tys, out, *axis, hint),
        Op::Embedding => b.node("Gather", &[&a[1], &a[0]], vec![attr_i("axis", 0)], hint),
        Op::TokenSelect { index } => {
            let i = b.scalar_i64(*index);
            b.node("Gather", &[&a[0], &i], vec![attr_i("axis", 1)], hint)
        }
        Op::MeanTokens => b.with_axes("ReduceMean", &a[0], &[1], 18, vec![attr_i("keepdims", 0)], hint),
        Op::Positions => positions(b, &a[0], tys[0], hint),
        Op::Input { .. } | Op::Output { .. } | Op::Parameter(_) | Op::Unbound => {
            return Err(ExportError::Unsupported(format!("internal: `{}` is not a computing op", op.name())))
        }
    })
}

/// `0.5 · x · (1 + erf(x / √2))`, the pattern ONNX Runtime fuses into one Gelu.
fn gelu_erf(b: &mut Builder, x: &str, dt: DType, hint: &str) -> Result<String, ExportError> {
    let r2 = b.floats(&[std::f64::consts::SQRT_2], &[], dt)?;
    let one = b.floats(&[1.0], &[], dt)?;
    let half = b.floats(&[0.5], &[], dt)?;
    let d = b.node("Div", &[x, &r2], vec![], hint);
    let e = b.node("Erf", &[&d], vec![], hint);
    let p = b.node("Add", &[&e, &one], vec![], hint);
    let m = b.node("Mul", &[x, &p], vec![], hint);
    Ok(b.node("Mul", &[&m, &half], vec![], hint))
}
/// Concatenation; size-1 dims off the axis broadcast (`Expand` to the sizes of the
/// other operands, read with `Shape` where symbolic).
fn concat(b: &mut Builder, a: &[String], tys: &[&TensorType], out: &TensorType, axis: i64, hint: &str) -> String {
    let ax = if axis < 0 { axis + out.rank() as i64 } else { axis } as usize;
    let mut parts = Vec::new();
    for (k, t) in tys.iter().enumerate() {
        let grow: Vec<usize> = (0..out.rank())
            .filter(|&i| i != ax && t.shape[i] == Dim::Fixed(1) && out.shape[i] != Dim::Fixed(1))
            .collect();
        if grow.is_empty() {
            parts.push(a[k].clone());
            continue;
        }
        // Expand to [size at grown dims, 1 elsewhere] (broadcast does the rest).
        let mut pieces = Vec::new();
        for i in 0..out.rank() {
            let piece = match (&out.shape[i], grow.contains(&i)) {
                (_, false) => b.ints(&[1]),
                (Dim::Fixed(n), true) => b.ints(&[*n]),
                (Dim::Sym(_), true) => {
                    let from = tys.iter().position(|u| u.shape[i] != Dim::Fixed(1)).unwrap_or(0);
                    let attrs = vec![attr_i("start", i as i64), attr_i("end", i as i64 + 1)];
                    b.node("Shape", &[&a[from]], attrs, hint)
                }
            };
            pieces.push(piece);
        }
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let shape = b.node("Concat", &refs, vec![attr_i("axis", 0)], hint);
        parts.push(b.node("Expand", &[&a[k], &shape], vec![], hint));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    b.node("Concat", &refs, vec![attr_i("axis", ax as i64)], hint)
}

/// `[1, T]` positions `0..T` of `[B, T]` ids (a `Range` over the ids' length when
/// it is symbolic).
fn positions(b: &mut Builder, x: &str, ids: &TensorType, hint: &str) -> String {
    match &ids.shape[1] {
        Dim::Fixed(t) => {
            let v: Vec<i64> = (0..*t).collect();
            let c = b.ints(&v);
            b.reshape(&c, &[1, *t], hint)
        }
        Dim::Sym(_) => {
            let t = b.node("Shape", &[x], vec![attr_i("start", 1), attr_i("end", 2)], hint);
            let t = b.with_axes("Squeeze", &t, &[0], 13, vec![], hint);
            let (zero, one) = (b.scalar_i64(0), b.scalar_i64(1));
            let r = b.node("Range", &[&zero, &t, &one], vec![], hint);
            b.unsqueeze(&r, &[0], hint)
        }
    }
}

fn conv(b: &mut Builder, a: &[String], tys: &[&TensorType], stride: &[i64], hint: &str) -> String {
    let kernel: Vec<i64> = tys[1].shape[2..].iter().map(|d| d.fixed().unwrap_or(1)).collect();
    let attrs = vec![attr_ints("kernel_shape", &kernel), attr_ints("strides", stride)];
    let ins: Vec<&str> = a.iter().map(String::as_str).collect();
    b.node("Conv", &ins, attrs, hint)
}

/// Heads split, `softmax(q kᵀ / √d + mask) v`, heads merged.
fn attention(
    b: &mut Builder,
    a: &[String],
    tys: &[&TensorType],
    heads: i64,
    hint: &str,
) -> Result<String, ExportError> {
    let width = |t: &TensorType| t.shape[2].fixed().unwrap_or(0);
    let (dq, dv) = (width(tys[0]), width(tys[2]));
    let split = |b: &mut Builder, x: &str, d: i64, perm: &[i64]| {
        let r = b.reshape(x, &[0, 0, heads, d / heads], hint);
        b.transpose(&r, perm, hint)
    };
    let q = split(b, &a[0], dq, &[0, 2, 1, 3]);
    let k = split(b, &a[1], dq, &[0, 2, 3, 1]);
    let v = split(b, &a[2], dv, &[0, 2, 1, 3]);
    let s = b.node("MatMul", &[&q, &k], vec![], hint);
    let dt = tys[0].dtype;
    let scale = b.floats(&[1.0 / ((dq / heads) as f64).sqrt()], &[], dt)?;
    let mut s = b.node("Mul", &[&s, &scale], vec![], hint);
    if let Some(mask) = a.get(3) {
        let mdt = tys[3].dtype;
        let zero = match mdt {
            DType::I64 => b.scalar_i64(0),
            DType::F32 | DType::F64 => b.floats(&[0.0], &[], mdt)?,
            d => return Err(ExportError::Unsupported(format!("an attention mask of {} for ONNX", d.name()))),
        };
        let blocked = b.node("Equal", &[mask, &zero], vec![], hint);
        let to = if dt == DType::F64 { data_type::DOUBLE } else { data_type::FLOAT };
        let blocked = b.node("Cast", &[&blocked], vec![attr_i("to", to as i64)], hint);
        let min = b.floats(&[f32::MIN as f64], &[], dt)?;
        let bias = b.node("Mul", &[&blocked, &min], vec![], hint);
        let bias = b.unsqueeze(&bias, &[1, 2], hint);
        s = b.node("Add", &[&s, &bias], vec![], hint);
    }
    let p = b.node("Softmax", &[&s], vec![attr_i("axis", -1)], hint);
    let o = b.node("MatMul", &[&p, &v], vec![], hint);
    let o = b.transpose(&o, &[0, 2, 1, 3], hint);
    Ok(b.reshape(&o, &[0, 0, dv], hint))
}

/// VideoMAE's sinusoid table `[T, D]` in float64.
fn sinusoid(t: i64, d: i64) -> Vec<f64> {
    let mut out = Vec::with_capacity((t * d) as usize);
    for pos in 0..t {
        for j in 0..d {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / d as f64);
            out.push(if j % 2 == 0 { angle.sin() } else { angle.cos() });
        }
    }
    out
}
