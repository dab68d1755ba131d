//! One op test suite, run on every backend through the seam (the torch backend is the
//! reference): each case is one op of the closed set on small seeded inputs, with
//! broadcasting, strided views, masks and absent optional inputs.

use super::native::Native;
use super::torch::TorchBackend;
use super::{Backend, Options, Plan};
use crate::ir::{DType, Graph, NodeId, Op, TensorType};
use crate::params::init::draw;
use crate::tensor::HostTensor;

fn f32s(shape: &[i64], seed: u64) -> HostTensor {
    draw(shape, seed, "op-suite", |r| r.normal()).to_dtype(DType::F32)
}

fn ids(shape: &[i64], values: &[i64]) -> HostTensor {
    HostTensor::from_i64(shape, values).unwrap()
}

/// Run `ops` (each over earlier node indices; inputs are nodes `0..inputs.len()`) on
/// `b`; `None` inputs are absent optional ones.
fn run(b: &dyn Backend, inputs: &[Option<HostTensor>], ops: &[(Op, Vec<usize>)]) -> Vec<(String, HostTensor)> {
    let types: Vec<_> = inputs.iter().map(|t| t.as_ref().map(|t| TensorType::fixed(t.dtype, &t.shape))).collect();
    let (mut g, mut ids) = super::graph_of_inputs(&types);
    for (k, (op, args)) in ops.iter().enumerate() {
        let a: Vec<NodeId> = args.iter().map(|&i| ids[i]).collect();
        ids.push(g.add(op.clone(), format!("op{k}"), None, &a));
    }
    let last = *ids.last().unwrap();
    g.add(Op::Output { name: "y".into() }, "y", None, &[last]);
    let plan = Plan::unverified(&g);
    let ins: Vec<Option<HostTensor>> =
        plan.inputs().iter().map(|i| inputs[i.name[2..].parse::<usize>().unwrap()].clone()).collect();
    b.prepare(&plan, vec![], &Options::default()).unwrap().run(&ins).unwrap_or_else(|e| panic!("{}: {e}", b.name()))
}

fn agree(name: &str, inputs: &[Option<HostTensor>], ops: &[(Op, Vec<usize>)]) {
    let want = run(&TorchBackend, inputs, ops);
    for threads in [1, 2] {
        let got = run(&Native { threads, ..Native::default() }, inputs, ops);
        let (a, b) = (&got[0].1, &want[0].1);
        assert_eq!(a.shape, b.shape, "{name}");
        let (a, b) = (a.to_f64(), b.to_f64());
        let num = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
        let den = b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-30);
        assert!(num / den <= 1e-6, "{name} ({threads} threads): relative error {:.3e}", num / den);
    }
}

#[test]
fn every_op_agrees_across_backends() {
    let x = || Some(f32s(&[2, 5, 12], 1));
    agree("linear", &[x(), Some(f32s(&[7, 12], 2)), Some(f32s(&[7], 3))], &[(Op::Linear, vec![0, 1, 2])]);
    agree("linear no bias", &[x(), Some(f32s(&[7, 12], 2))], &[(Op::Linear, vec![0, 1])]);
    agree(
        "grouped linear",
        &[x(), Some(f32s(&[9, 4], 2)), Some(f32s(&[9], 3))],
        &[(Op::GroupedLinear { groups: 3 }, vec![0, 1, 2])],
    );
    agree(
        "conv2d patches",
        &[Some(f32s(&[2, 3, 8, 12], 1)), Some(f32s(&[5, 3, 4, 4], 2)), Some(f32s(&[5], 3))],
        &[(Op::Conv2d { stride: [4, 4] }, vec![0, 1, 2])],
    );
    agree(
        "conv2d overlapping",
        &[Some(f32s(&[1, 2, 7, 6], 1)), Some(f32s(&[3, 2, 3, 2], 2))],
        &[(Op::Conv2d { stride: [2, 1] }, vec![0, 1])],
    );
    agree(
        "conv3d tubelets + flatten_tokens",
        &[Some(f32s(&[2, 3, 4, 8, 8], 1)), Some(f32s(&[6, 3, 2, 4, 4], 2)), Some(f32s(&[6], 3))],
        &[
            (Op::Conv3d { stride: [2, 4, 4] }, vec![0, 1, 2]),
            (Op::Reshape { dims: vec![0, 0, -1] }, vec![3]),
            (Op::Permute { perm: vec![0, 2, 1] }, vec![4]),
        ],
    );
    agree(
        "layernorm",
        &[x(), Some(f32s(&[12], 2)), Some(f32s(&[12], 3))],
        &[(Op::LayerNorm { eps: 1e-6 }, vec![0, 1, 2])],
    );
    agree(
        "residual add + layernorm",
        &[x(), x(), Some(f32s(&[12], 2)), Some(f32s(&[12], 3))],
        &[(Op::Add, vec![0, 1]), (Op::LayerNorm { eps: 1e-5 }, vec![4, 2, 3]), (Op::Add, vec![5, 4])],
    );
    for (n, op) in [
        ("gelu", Op::Gelu),
        ("relu", Op::Relu),
        ("tanh", Op::Tanh),
        ("sigmoid", Op::Sigmoid),
        ("scale", Op::Scale { factor: 0.3 }),
    ] {
        agree(n, &[x()], &[(op, vec![0])]);
    }
    agree("add row broadcast", &[x(), Some(f32s(&[12], 2))], &[(Op::Add, vec![0, 1])]);
    agree("mul column broadcast", &[x(), Some(f32s(&[2, 5, 1], 2))], &[(Op::Mul, vec![0, 1])]);
    agree("mul scalar", &[x(), Some(f32s(&[], 2))], &[(Op::Mul, vec![0, 1])]);
    agree("add middle broadcast", &[x(), Some(f32s(&[2, 1, 12], 2))], &[(Op::Add, vec![0, 1])]);
    agree(
        "fused chain",
        &[x(), Some(f32s(&[12], 2)), Some(f32s(&[], 3))],
        &[
            (Op::Add, vec![0, 1]),
            (Op::Gelu, vec![3]),
            (Op::Mul, vec![4, 2]),
            (Op::Add, vec![5, 0]),
            (Op::Tanh, vec![6]),
        ],
    );
    let qkv = || Some(f32s(&[2, 6, 24], 4));
    let split = |i| (Op::Split { axis: -1, parts: 3, index: i }, vec![0]);
    agree(
        "attention from fused qkv",
        &[qkv()],
        &[split(0), split(1), split(2), (Op::Attention { heads: 2 }, vec![1, 2, 3])],
    );
    agree(
        "attention, masked keys and a fully masked row",
        &[qkv(), Some(ids(&[2, 6], &[1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]))],
        &[split(0), split(1), split(2), (Op::Attention { heads: 4 }, vec![2, 3, 4, 1])],
    );
    agree(
        "cross attention (Tq != Tk)",
        &[Some(f32s(&[2, 3, 8], 1)), Some(f32s(&[2, 5, 8], 2)), Some(f32s(&[2, 5, 8], 3))],
        &[(Op::Attention { heads: 2 }, vec![0, 1, 2])],
    );
    agree("reshape", &[x()], &[(Op::Reshape { dims: vec![0, -1, 4] }, vec![0]), (Op::Relu, vec![1])]);
    agree("permute", &[x()], &[(Op::Permute { perm: vec![2, 0, 1] }, vec![0])]);
    agree("split middle axis", &[x()], &[(Op::Split { axis: 1, parts: 5, index: 3 }, vec![0])]);
    agree("concat with class token", &[Some(f32s(&[1, 1, 12], 2)), x()], &[(Op::Concat { axis: 1 }, vec![0, 1])]);
    agree("concat last axis", &[x(), Some(f32s(&[2, 5, 3], 2))], &[(Op::Concat { axis: -1 }, vec![0, 1])]);
    agree(
        "embedding + positions",
        &[Some(ids(&[2, 3], &[0, 4, 2, 3, 3, 1])), Some(f32s(&[5, 6], 2)), Some(f32s(&[3, 6], 3))],
        &[(Op::Embedding, vec![0, 1]), (Op::Positions, vec![0]), (Op::Embedding, vec![4, 2]), (Op::Add, vec![3, 5])],
    );
    agree("token select", &[x()], &[(Op::TokenSelect { index: -1 }, vec![0]), (Op::Gelu, vec![1])]);
    agree(
        "token select + linear",
        &[x(), Some(f32s(&[4, 12], 2))],
        &[(Op::TokenSelect { index: 0 }, vec![0]), (Op::Linear, vec![2, 1])],
    );
    agree("mean tokens", &[x()], &[(Op::MeanTokens, vec![0])]);
    agree(
        "sine-cosine positions added to tokens",
        &[Some(f32s(&[2, 50, 64], 1))],
        &[(Op::SinusoidPositions, vec![0]), (Op::Add, vec![0, 1])],
    );
    agree("matmul", &[Some(f32s(&[4, 3], 1)), Some(f32s(&[3, 5], 2))], &[(Op::MatMul, vec![0, 1])]);
}

#[test]
fn absent_inputs_pass_through_add_only() {
    // `add` of a present data operand and an absent one is the present operand.
    let x = f32s(&[2, 3], 1);
    agree("add, one operand absent", &[Some(x.clone()), None], &[(Op::Add, vec![0, 1]), (Op::Relu, vec![2])]);
    let native = run(&Native::default(), &[Some(x.clone()), None], &[(Op::Add, vec![0, 1])]);
    assert_eq!(native[0].1, x);
    // Anything else computed from an absent input is absent, and so is the output.
    let mut g = Graph::new();
    let a = g.add(
        Op::Input {
            name: "a".into(),
            ty: TensorType::fixed(DType::F32, &[2]),
            optional: true,
            default_zeros: false,
            norm: None,
        },
        "a",
        None,
        &[],
    );
    let r = g.add(Op::Relu, "r", None, &[a]);
    g.add(Op::Output { name: "y".into() }, "y", None, &[r]);
    let plan = Plan::unverified(&g);
    let err = Native::default().prepare(&plan, vec![], &Options::default()).unwrap().run(&[None]).unwrap_err();
    assert!(err.to_string().contains("output `y` is absent"), "{err}");
}

#[test]
fn kernel_errors_name_the_instance_and_cuda_is_refused() {
    let err = {
        let mut g = Graph::new();
        let i = g.add(
            Op::Input {
                name: "i".into(),
                ty: TensorType::fixed(DType::I64, &[2]),
                optional: false,
                default_zeros: false,
                norm: None,
            },
            "i",
            None,
            &[],
        );
        let t = g.add(
            Op::Input {
                name: "t".into(),
                ty: TensorType::fixed(DType::F32, &[3, 2]),
                optional: false,
                default_zeros: false,
                norm: None,
            },
            "t",
            None,
            &[],
        );
        let e = g.add(Op::Embedding, "enc.tok", None, &[i, t]);
        g.add(Op::Output { name: "y".into() }, "y", None, &[e]);
        let plan = Plan::unverified(&g);
        let ins = [Some(ids(&[2], &[1, 3])), Some(f32s(&[3, 2], 1))];
        Native::default().prepare(&plan, vec![], &Options::default()).unwrap().run(&ins).unwrap_err()
    };
    assert_eq!(
        err.to_string(),
        "running `enc.tok` (embedding): index 3 is out of range (ids must lie in 0..3 for this table)"
    );
    let plan = Plan::unverified(&Graph::new());
    let cuda = Options { device: super::Device::Cuda(0), ..Options::default() };
    let e = Native::default().prepare(&plan, vec![], &cuda).err().expect("refused").to_string();
    assert!(e.contains("CPU only"), "{e}");
}
