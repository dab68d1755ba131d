//! Every op, lowered and executed, against a direct LibTorch computation written out
//! from the op's definition on small tensors; plus absent-value semantics.

use super::exec;
use crate::backend::plan::Plan;
use crate::ir::{DType, Graph, Op, TensorType};
use tch::{Device, Kind, Tensor};

const F: (Kind, Device) = (Kind::Float, Device::Cpu);

fn dtype(k: Kind) -> DType {
    match k {
        Kind::Float => DType::F32,
        Kind::Double => DType::F64,
        Kind::Int64 => DType::I64,
        Kind::Int => DType::I32,
        other => panic!("no test dtype for {other:?}"),
    }
}

/// Lower and run `op` over inputs `args` (absent where `None`); the output or `None`.
fn try_op(op: Op, args: &[Option<&Tensor>]) -> anyhow::Result<Tensor> {
    let types: Vec<_> = args.iter().map(|t| t.map(|t| TensorType::fixed(dtype(t.kind()), &t.size()))).collect();
    let (mut g, ids) = crate::backend::graph_of_inputs(&types);
    let n = g.add(op, "op", None, &ids);
    g.add(Op::Output { name: "y".into() }, "y", None, &[n]);
    let plan = Plan::unverified(&g);
    let ins =
        plan.inputs().iter().map(|i| args[i.name[2..].parse::<usize>().unwrap()].map(|t| t.shallow_clone())).collect();
    let mut out = exec::run(&plan, &[], ins)?;
    Ok(out.remove(0).1)
}

fn op(op: Op, args: &[&Tensor]) -> Tensor {
    let a: Vec<Option<&Tensor>> = args.iter().map(|t| Some(*t)).collect();
    try_op(op, &a).unwrap()
}

fn close(a: &Tensor, b: &Tensor) {
    assert_eq!(a.size(), b.size(), "shapes differ");
    assert_eq!(a.kind(), b.kind(), "kinds differ");
    let err = (a - b).abs().max().double_value(&[]);
    assert!(err < 1e-5, "max abs error {err}\n{a}\n{b}");
}

fn randn(s: &[i64]) -> Tensor {
    Tensor::randn(s, F)
}

#[test]
fn linear() {
    let (x, w, b) = (randn(&[2, 3, 5]), randn(&[4, 5]), randn(&[4]));
    close(&op(Op::Linear, &[&x, &w, &b]), &(x.matmul(&w.tr()) + &b));
    close(&op(Op::Linear, &[&x, &w]), &x.matmul(&w.tr()));
}

#[test]
fn grouped_linear() {
    let (g, fin, fout) = (3, 6, 9);
    let (x, w, b) = (randn(&[2, 4, fin]), randn(&[fout, fin / g]), randn(&[fout]));
    let parts: Vec<Tensor> = (0..g)
        .map(|i| {
            let xi = x.narrow(-1, i * fin / g, fin / g);
            let wi = w.narrow(0, i * fout / g, fout / g);
            xi.matmul(&wi.tr()) + b.narrow(0, i * fout / g, fout / g)
        })
        .collect();
    close(&op(Op::GroupedLinear { groups: g }, &[&x, &w, &b]), &Tensor::cat(&parts, -1));
    let no_bias: Vec<Tensor> = (0..g).map(|i| x.narrow(-1, i * 2, 2).matmul(&w.narrow(0, i * 3, 3).tr())).collect();
    close(&op(Op::GroupedLinear { groups: g }, &[&x, &w]), &Tensor::cat(&no_bias, -1));
}

#[test]
fn conv2d_as_patches() {
    // stride = kernel: a patch embedding is a linear map of each patch.
    let (x, w, b) = (randn(&[2, 3, 8, 12]), randn(&[5, 3, 4, 4]), randn(&[5]));
    let got = op(Op::Conv2d { stride: [4, 4] }, &[&x, &w, &b]);
    let patches = x.reshape([2, 3, 2, 4, 3, 4]).permute([0, 2, 4, 1, 3, 5]).reshape([2, 2, 3, 48]);
    let want = (patches.matmul(&w.reshape([5, 48]).tr()) + &b).permute([0, 3, 1, 2]);
    close(&got, &want.contiguous());
    // Overlapping windows: against LibTorch's own convolution.
    let got = op(Op::Conv2d { stride: [2, 2] }, &[&x, &w]);
    close(&got, &x.conv2d(&w, None::<Tensor>, [2, 2], [0, 0], [1, 1], 1));
}

#[test]
fn conv3d_as_tubelets() {
    let (x, w, b) = (randn(&[1, 2, 4, 6, 6]), randn(&[3, 2, 2, 3, 3]), randn(&[3]));
    let got = op(Op::Conv3d { stride: [2, 3, 3] }, &[&x, &w, &b]);
    let t = x.reshape([1, 2, 2, 2, 2, 3, 2, 3]).permute([0, 2, 4, 6, 1, 3, 5, 7]).reshape([1, 2, 2, 2, 36]);
    let want = (t.matmul(&w.reshape([3, 36]).tr()) + &b).permute([0, 4, 1, 2, 3]);
    close(&got, &want.contiguous());
}

#[test]
fn layer_norm() {
    let (x, w, b) = (randn(&[2, 3, 8]) * 3.0 + 1.0, randn(&[8]), randn(&[8]));
    let mean = x.mean_dim([-1i64].as_slice(), true, Kind::Float);
    let var = (&x - &mean).square().mean_dim([-1i64].as_slice(), true, Kind::Float);
    let want = (&x - &mean) / (var + 1e-6).sqrt() * &w + &b;
    close(&op(Op::LayerNorm { eps: 1e-6 }, &[&x, &w, &b]), &want);
    // eps comes from the op.
    let small = Tensor::from_slice(&[1e-3f32, -1e-3, 1e-3, -1e-3]).reshape([1, 4]);
    let (one, zero) = (Tensor::ones([4], F), Tensor::zeros([4], F));
    let got = op(Op::LayerNorm { eps: 1e-12 }, &[&small, &one, &zero]);
    let big = op(Op::LayerNorm { eps: 1.0 }, &[&small, &one, &zero]);
    assert!(got.abs().max().double_value(&[]) > 0.99);
    assert!(big.abs().max().double_value(&[]) < 0.01);
}

#[test]
fn activations() {
    let x = randn(&[3, 7]) * 3.0;
    let erf = (&x / 2f64.sqrt()).erf();
    close(&op(Op::Gelu, &[&x]), &(&x * 0.5 * (erf + 1.0)));
    close(&op(Op::Relu, &[&x]), &x.clamp_min(0.0));
    let e = (&x * 2.0).exp();
    close(&op(Op::Tanh, &[&x]), &((&e - 1.0) / (&e + 1.0)));
    close(&op(Op::Sigmoid, &[&x]), &(((-&x).exp() + 1.0).reciprocal()));
}

/// VideoMAE's table written out element by element in f64.
#[test]
fn sinusoid_positions() {
    let x = randn(&[2, 5, 6]);
    let got = op(Op::SinusoidPositions, &[&x]);
    assert_eq!(got.size(), vec![1, 5, 6]);
    let mut want = Vec::new();
    for t in 0..5 {
        for j in 0..6i32 {
            let angle = t as f64 / 10000f64.powf(2.0 * (j / 2) as f64 / 6.0);
            want.push(if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    close(&got, &Tensor::from_slice(&want).reshape([1, 5, 6]));
}

/// Attention written out: split heads, softmax(q kᵀ/√d + mask) v, merge.
fn attention_ref(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, h: i64) -> Tensor {
    let (b, tq, d) = (q.size()[0], q.size()[1], q.size()[2]);
    let (tk, dv) = (k.size()[1], v.size()[2]);
    let qh = q.reshape([b, tq, h, d / h]).permute([0, 2, 1, 3]);
    let kh = k.reshape([b, tk, h, d / h]).permute([0, 2, 1, 3]);
    let vh = v.reshape([b, tk, h, dv / h]).permute([0, 2, 1, 3]);
    let mut s = qh.matmul(&kh.transpose(-1, -2)) / ((d / h) as f64).sqrt();
    if let Some(m) = mask {
        let add: Tensor = (1.0 - m.to_kind(Kind::Float)) * f32::MIN as f64;
        s += add.reshape([b, 1, 1, tk]);
    }
    s.softmax(-1, Kind::Float).matmul(&vh).permute([0, 2, 1, 3]).reshape([b, tq, dv])
}

#[test]
fn attention() {
    let (q, k, v) = (randn(&[2, 5, 12]), randn(&[2, 7, 12]), randn(&[2, 7, 6]));
    close(&op(Op::Attention { heads: 3 }, &[&q, &k, &v]), &attention_ref(&q, &k, &v, None, 3));
    // An integer key mask, 1 = attend (Hugging Face's attention_mask).
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1]).reshape([2, 7]);
    let got = op(Op::Attention { heads: 3 }, &[&q, &k, &v, &mask]);
    close(&got, &attention_ref(&q, &k, &v, Some(&mask), 3));
    // Masked keys do not matter.
    let v2 = v.copy();
    let _ = v2.narrow(1, 5, 2).get(0).fill_(100.0);
    close(&op(Op::Attention { heads: 3 }, &[&q, &k, &v2, &mask]), &got);
}

#[test]
fn elementwise() {
    let (a, b) = (randn(&[2, 3, 4]), randn(&[1, 3, 4]));
    close(&op(Op::Add, &[&a, &b]), &(&a + &b));
    close(&op(Op::Mul, &[&a, &b]), &(&a * &b));
    close(&op(Op::Scale { factor: 0.25 }, &[&a]), &(&a * 0.25));
    let (m, n) = (randn(&[3, 4]), randn(&[4, 2]));
    close(&op(Op::MatMul, &[&m, &n]), &m.mm(&n));
}

#[test]
fn shapes() {
    let x = Tensor::arange(2 * 3 * 4 * 5, F).reshape([2, 3, 4, 5]);
    close(&op(Op::Reshape { dims: vec![0, 0, -1] }, &[&x]), &x.view([2, 3, 20]));
    close(&op(Op::Reshape { dims: vec![6, -1] }, &[&x]), &x.view([6, 20]));
    close(&op(Op::Permute { perm: vec![0, 2, 3, 1] }, &[&x]), &x.permute([0, 2, 3, 1]));
    let s = Tensor::arange(12, F).reshape([1, 2, 6]);
    let part = op(Op::Split { axis: -1, parts: 3, index: 1 }, &[&s]);
    close(&part, &Tensor::from_slice(&[2f32, 3., 8., 9.]).reshape([1, 2, 2]));
    close(&op(Op::Split { axis: 1, parts: 2, index: 1 }, &[&s]), &s.get(0).get(1).reshape([1, 1, 6]));
}

#[test]
fn concat_broadcasts_leading_size_one_dims() {
    let cls = randn(&[1, 1, 4]);
    let patches = randn(&[3, 5, 4]);
    let got = op(Op::Concat { axis: 1 }, &[&cls, &patches]);
    assert_eq!(got.size(), vec![3, 6, 4]);
    for b in 0..3 {
        close(&got.get(b).get(0), &cls.get(0).get(0));
        close(&got.get(b).narrow(0, 1, 5), &patches.get(b));
    }
    let (a, c) = (randn(&[2, 3]), randn(&[2, 2]));
    close(&op(Op::Concat { axis: -1 }, &[&a, &c, &a]), &Tensor::cat(&[&a, &c, &a], 1));
}

#[test]
fn tokens() {
    let ids = Tensor::from_slice(&[3i64, 0, 2, 2, 1, 3]).reshape([2, 3]);
    let table = randn(&[4, 5]);
    let want = table.index_select(0, &ids.view([-1])).view([2, 3, 5]);
    close(&op(Op::Embedding, &[&ids, &table]), &want);
    let ids32 = ids.to_kind(Kind::Int);
    close(&op(Op::Embedding, &[&ids32, &table]), &want);
    let x = randn(&[2, 3, 5]);
    close(&op(Op::TokenSelect { index: 0 }, &[&x]), &x.narrow(1, 0, 1).squeeze_dim(1));
    close(&op(Op::TokenSelect { index: -1 }, &[&x]), &x.narrow(1, 2, 1).squeeze_dim(1));
    close(&op(Op::MeanTokens, &[&x]), &(x.sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / 3.0));
    let pos = op(Op::Positions, &[&ids]);
    assert_eq!(pos.kind(), Kind::Int64);
    assert!(pos.equal(&Tensor::from_slice(&[0i64, 1, 2]).reshape([1, 3])));
}

#[test]
fn absent_values_propagate_except_through_add() {
    let x = randn(&[2, 3]);
    // add(x, absent) = x.
    close(&try_op(Op::Add, &[Some(&x), None]).unwrap(), &x);
    close(&try_op(Op::Add, &[None, Some(&x)]).unwrap(), &x);
    // Any other op on an absent value is absent: an output that is absent is an error.
    let err = try_op(Op::Mul, &[Some(&x), None]).unwrap_err().to_string();
    assert!(err.contains("absent"), "{err}");
    assert!(try_op(Op::Relu, &[None]).is_err());
}

#[test]
fn kernel_errors_name_the_instance() {
    let (x, w) = (randn(&[2, 3]), randn(&[4, 5]));
    let err = try_op(Op::Linear, &[Some(&x), Some(&w)]).unwrap_err().to_string();
    assert!(err.contains("running `op` (linear)"), "{err}");
}

#[test]
fn add_passes_through_data_but_not_parameters_alone() {
    use crate::ir::{Init, ParamInfo, ParamSource};
    // y = x + relu(ctx + pos): with ctx absent, `ctx + pos` is absent (pos is a
    // parameter, not data), so y = x.
    let mut g = Graph::new();
    let ty = TensorType::fixed(DType::F32, &[2, 3]);
    let x = g.add(
        Op::Input { name: "x".into(), ty: ty.clone(), optional: false, default_zeros: false, norm: None },
        "x",
        None,
        &[],
    );
    let ctx =
        g.add(Op::Input { name: "ctx".into(), ty, optional: true, default_zeros: false, norm: None }, "ctx", None, &[]);
    let info = ParamInfo {
        path: "pos".into(),
        shape: vec![1, 3],
        dtype: DType::F32,
        trainable: false,
        component: "m".into(),
        source: ParamSource::Init { init: Init::Ones },
    };
    let pos = g.add(Op::Parameter(info), "pos", None, &[]);
    let t = g.add(Op::Add, "t", None, &[ctx, pos]);
    let r = g.add(Op::Relu, "r", None, &[t]);
    let y = g.add(Op::Add, "y", None, &[x, r]);
    g.add(Op::Output { name: "y".into() }, "y", None, &[y]);
    let plan = Plan::unverified(&g);
    let params = [Tensor::ones([1, 3], F)];
    let xv = randn(&[2, 3]);
    let order = |x: Option<Tensor>, c: Option<Tensor>| {
        plan.inputs()
            .iter()
            .map(|i| {
                if i.name == "x" {
                    x.as_ref().map(|t| t.shallow_clone())
                } else {
                    c.as_ref().map(|t| t.shallow_clone())
                }
            })
            .collect::<Vec<_>>()
    };
    let out = exec::run(&plan, &params, order(Some(xv.shallow_clone()), None)).unwrap();
    close(&out[0].1, &xv);
    let cv = randn(&[2, 3]);
    let out = exec::run(&plan, &params, order(Some(xv.shallow_clone()), Some(cv.shallow_clone()))).unwrap();
    close(&out[0].1, &(&xv + (&cv + 1.0).relu()));
}
