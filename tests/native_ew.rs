//! Fused elementwise groups of the native backend: the three strategies (unfused, L1
//! blocks, Cranelift JIT) against a one-element-at-a-time reference, on random groups,
//! every broadcast kind, shapes with vector tails and several blocks, and row splits.

use graft::backend::native::ew::{EwBroadcast, EwCompiler, EwError, EwGroup, EwInstr, EwKernel, EwStrategy, EwValue};
use graft::backend::native::math;
use proptest::prelude::*;

const STRATEGIES: [EwStrategy; 3] = [EwStrategy::Unfused, EwStrategy::Blocks, EwStrategy::Jit];

/// The group's value at one element, computed directly from the definition.
fn reference(g: &EwGroup, inputs: &[Vec<f32>], rows: usize, cols: usize) -> Vec<Vec<f32>> {
    let one = |f: fn(&mut [f32]), x: f32| {
        let mut v = [x];
        f(&mut v);
        v[0]
    };
    let mut outs = vec![vec![0.0; rows * cols]; g.outputs.len()];
    for r in 0..rows {
        for c in 0..cols {
            let mut vals: Vec<f32> = Vec::new();
            let get = |vals: &[f32], v: EwValue| match v {
                EwValue::Const(x) => x,
                EwValue::Instr(i) => vals[i],
                EwValue::Input(k) => {
                    inputs[k][match g.inputs[k] {
                        EwBroadcast::Full => r * cols + c,
                        EwBroadcast::Row => c,
                        EwBroadcast::Col => r,
                        EwBroadcast::Scalar => 0,
                    }]
                }
            };
            for ins in &g.body {
                let y = match *ins {
                    EwInstr::Add(a, b) => get(&vals, a) + get(&vals, b),
                    EwInstr::Sub(a, b) => get(&vals, a) - get(&vals, b),
                    EwInstr::Mul(a, b) => get(&vals, a) * get(&vals, b),
                    EwInstr::Scale(a, f) => get(&vals, a) * f,
                    EwInstr::Relu(a) => {
                        let x = get(&vals, a);
                        if x < 0.0 {
                            0.0
                        } else {
                            x
                        }
                    }
                    EwInstr::Tanh(a) => one(math::tanh_inplace, get(&vals, a)),
                    EwInstr::Gelu(a) => one(math::gelu_erf_inplace, get(&vals, a)),
                    EwInstr::Sigmoid(a) => one(math::sigmoid_inplace, get(&vals, a)),
                    EwInstr::Exp(a) => one(math::exp_inplace, get(&vals, a)),
                };
                vals.push(y);
            }
            for (j, v) in g.outputs.iter().enumerate() {
                outs[j][r * cols + c] = get(&vals, *v);
            }
        }
    }
    outs
}

fn input_len(b: EwBroadcast, rows: usize, cols: usize) -> usize {
    match b {
        EwBroadcast::Full => rows * cols,
        EwBroadcast::Row => cols,
        EwBroadcast::Col => rows,
        EwBroadcast::Scalar => 1,
    }
}

fn run(k: &EwKernel, rows: usize, cols: usize, inputs: &[Vec<f32>], n_out: usize) -> Vec<Vec<f32>> {
    let ins: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let mut outs = vec![vec![f32::NAN; rows * cols]; n_out];
    let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    k.run(rows, cols, &ins, &mut refs);
    outs
}

/// Bit-identical, except that all NaNs are equal.
fn same(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| !(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())))
}

/// Every strategy equals the reference bit for bit on `g`, and so do two row halves.
fn check_group(g: &EwGroup, rows: usize, cols: usize, inputs: &[Vec<f32>]) {
    let want = reference(g, inputs, rows, cols);
    for s in STRATEGIES {
        let k = EwCompiler::new(s).unwrap().compile(g).unwrap();
        let got = run(&k, rows, cols, inputs, g.outputs.len());
        for (j, (w, o)) in want.iter().zip(&got).enumerate() {
            if let Some(at) = same(w, o) {
                panic!("{s:?} output {j} at {at} ([{rows}, {cols}]): {} vs reference {}\n{g:?}", o[at], w[at]);
            }
        }
        // Rows split at `split`: slice Full and Col inputs and the outputs.
        let split = rows / 2;
        let mut parts = vec![vec![0.0f32; rows * cols]; g.outputs.len()];
        for (r0, r1) in [(0, split), (split, rows)] {
            let sub: Vec<&[f32]> = g
                .inputs
                .iter()
                .zip(inputs)
                .map(|(b, x)| match b {
                    EwBroadcast::Full => &x[r0 * cols..r1 * cols],
                    EwBroadcast::Col => &x[r0..r1],
                    _ => x.as_slice(),
                })
                .collect();
            let mut outs: Vec<&mut [f32]> = parts.iter_mut().map(|v| &mut v[r0 * cols..r1 * cols]).collect();
            k.run(r1 - r0, cols, &sub, &mut outs);
        }
        assert_eq!(None, parts.iter().zip(&got).find_map(|(a, b)| same(a, b)), "{s:?}: row split differs");
    }
}

fn seeded(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn arb_broadcast() -> impl Strategy<Value = EwBroadcast> {
    prop_oneof![
        3 => Just(EwBroadcast::Full),
        1 => Just(EwBroadcast::Row),
        1 => Just(EwBroadcast::Col),
        1 => Just(EwBroadcast::Scalar),
    ]
}

/// A random valid group: `n_in` inputs, instructions over earlier values and constants.
fn arb_group() -> impl Strategy<Value = EwGroup> {
    (prop::collection::vec(arb_broadcast(), 1..5), 1usize..12, 1usize..4).prop_flat_map(|(inputs, n, n_out)| {
        let n_in = inputs.len();
        let value = move |before: usize| {
            prop_oneof![
                3 => (0..n_in).prop_map(EwValue::Input),
                4 => (0..before.max(1)).prop_map(move |i| if before == 0 { EwValue::Input(0) } else { EwValue::Instr(i) }),
                1 => (-2.0f32..2.0).prop_map(EwValue::Const),
            ]
        };
        let instrs: Vec<_> = (0..n)
            .map(|i| {
                (0u8..9, value(i), value(i), -2.0f32..2.0).prop_map(|(op, a, b, f)| match op {
                    0 => EwInstr::Add(a, b),
                    1 => EwInstr::Sub(a, b),
                    2 => EwInstr::Mul(a, b),
                    3 => EwInstr::Scale(a, f),
                    4 => EwInstr::Relu(a),
                    5 => EwInstr::Tanh(a),
                    6 => EwInstr::Gelu(a),
                    7 => EwInstr::Sigmoid(a),
                    _ => EwInstr::Exp(a),
                })
            })
            .collect();
        let outputs = prop::collection::vec(
            prop_oneof![8 => (0..n).prop_map(EwValue::Instr), 1 => value(0)],
            n_out,
        );
        (Just(inputs), instrs, outputs).prop_map(|(inputs, body, mut outputs)| {
            outputs[0] = EwValue::Instr(body.len() - 1); // the group's result
            EwGroup { inputs, body, outputs }
        })
    })
}

fn arb_shape() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        4 => (1usize..6, 1usize..40),
        1 => (20usize..60, 30usize..50),   // several row blocks
        1 => (1usize..3, 1020usize..2100), // rows longer than a block
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn strategies_agree_with_the_reference_on_random_groups(g in arb_group(), (rows, cols) in arb_shape(), seed in 0u64..1000) {
        let inputs: Vec<Vec<f32>> = g
            .inputs
            .iter()
            .enumerate()
            .map(|(k, b)| seeded(input_len(*b, rows, cols), seed + k as u64, 3.0))
            .collect();
        check_group(&g, rows, cols, &inputs);
    }
}

/// The two groups of a ViT block the ablation measures, and every broadcast kind.
#[test]
fn vit_like_groups_and_every_broadcast() {
    use EwValue::{Const, Input as I, Instr as N};
    let bias_gelu = EwGroup {
        inputs: vec![EwBroadcast::Full, EwBroadcast::Row],
        body: vec![EwInstr::Add(I(0), I(1)), EwInstr::Gelu(N(0))],
        outputs: vec![N(1)],
    };
    let gated = EwGroup {
        inputs: vec![EwBroadcast::Full, EwBroadcast::Full, EwBroadcast::Row, EwBroadcast::Scalar],
        body: vec![
            EwInstr::Add(I(1), I(2)),
            EwInstr::Tanh(I(3)),
            EwInstr::Mul(N(1), N(0)),
            EwInstr::Scale(N(2), 0.5),
            EwInstr::Add(I(0), N(3)),
        ],
        outputs: vec![N(4)],
    };
    let every = EwGroup {
        inputs: vec![EwBroadcast::Full, EwBroadcast::Row, EwBroadcast::Col, EwBroadcast::Scalar],
        body: vec![
            EwInstr::Mul(I(1), I(2)),
            EwInstr::Sub(N(0), I(3)),
            EwInstr::Relu(N(1)),
            EwInstr::Sigmoid(I(0)),
            EwInstr::Add(N(2), N(3)),
            EwInstr::Exp(N(4)),
            EwInstr::Mul(N(5), Const(-1.5)),
        ],
        outputs: vec![N(6), N(2), I(1), Const(7.0), N(6)],
    };
    for g in [&bias_gelu, &gated, &every] {
        for (rows, cols) in [(1, 1), (3, 5), (7, 384), (2, 1536), (40, 33)] {
            let inputs: Vec<Vec<f32>> = g
                .inputs
                .iter()
                .enumerate()
                .map(|(k, b)| seeded(input_len(*b, rows, cols), 7 + k as u64, 4.0))
                .collect();
            check_group(g, rows, cols, &inputs);
        }
    }
}

#[test]
fn identical_structures_compile_once_and_keep_their_own_constants() {
    let group = |s: f32| EwGroup {
        inputs: vec![EwBroadcast::Full],
        body: vec![EwInstr::Scale(EwValue::Input(0), s), EwInstr::Add(EwValue::Instr(0), EwValue::Const(s))],
        outputs: vec![EwValue::Instr(1)],
    };
    for s in STRATEGIES {
        let mut c = EwCompiler::new(s).unwrap();
        let (k2, k3) = (c.compile(&group(2.0)).unwrap(), c.compile(&group(3.0)).unwrap());
        let stats = c.stats();
        assert_eq!((stats.kernels_compiled, stats.cache_hits), (1, 1), "{s:?}");
        let x = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0]];
        assert_eq!(run(&k2, 1, 5, &x, 1)[0], [4.0, 6.0, 8.0, 10.0, 12.0]);
        assert_eq!(run(&k3, 1, 5, &x, 1)[0], [6.0, 9.0, 12.0, 15.0, 18.0]);
    }
}

#[test]
fn kernels_run_concurrently_from_many_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<EwKernel>();
    let g = EwGroup {
        inputs: vec![EwBroadcast::Full, EwBroadcast::Row],
        body: vec![EwInstr::Add(EwValue::Input(0), EwValue::Input(1)), EwInstr::Gelu(EwValue::Instr(0))],
        outputs: vec![EwValue::Instr(1)],
    };
    let k = EwCompiler::new(EwStrategy::Jit).unwrap().compile(&g).unwrap();
    let inputs = vec![seeded(64 * 100, 1, 3.0), seeded(100, 2, 1.0)];
    let want = run(&k, 64, 100, &inputs, 1);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(run(&k, 64, 100, &inputs, 1), want));
        }
    });
}

#[test]
fn invalid_groups_are_refused_with_a_reason() {
    let bad = |body: Vec<EwInstr>, outputs: Vec<EwValue>| {
        let g = EwGroup { inputs: vec![EwBroadcast::Full], body, outputs };
        EwCompiler::new(EwStrategy::Jit).unwrap().compile(&g).expect_err("refused").to_string()
    };
    let e = bad(vec![EwInstr::Relu(EwValue::Input(3))], vec![EwValue::Instr(0)]);
    assert_eq!(e, "elementwise group: instruction 0 reads input 3, but the group has 1 inputs");
    let e = bad(vec![EwInstr::Relu(EwValue::Instr(0))], vec![EwValue::Instr(0)]);
    assert_eq!(e, "elementwise group: instruction 0 reads instruction 0, which is not an earlier instruction");
    let e = bad(vec![EwInstr::Relu(EwValue::Input(0))], vec![EwValue::Instr(1)]);
    assert_eq!(e, "elementwise group: output 0 reads instruction 1, which is not an earlier instruction");
    assert!(matches!(
        EwCompiler::new(EwStrategy::Blocks).unwrap().compile(&EwGroup {
            inputs: vec![],
            body: vec![],
            outputs: vec![]
        }),
        Err(EwError::NoOutputs)
    ));
    assert_eq!("jit".parse::<EwStrategy>().unwrap(), EwStrategy::Jit);
    assert!("fast".parse::<EwStrategy>().unwrap_err().contains("expected unfused, blocks or jit"));
}

#[test]
#[should_panic(expected = "input 1 (Row) over [2, 3]")]
fn a_wrongly_sized_buffer_is_a_caller_bug_caught_before_any_code_runs() {
    let g = EwGroup {
        inputs: vec![EwBroadcast::Full, EwBroadcast::Row],
        body: vec![EwInstr::Add(EwValue::Input(0), EwValue::Input(1))],
        outputs: vec![EwValue::Instr(0)],
    };
    let k = EwCompiler::new(EwStrategy::Jit).unwrap().compile(&g).unwrap();
    run(&k, 2, 3, &[vec![0.0; 6], vec![0.0; 2]], 1);
}

#[test]
fn intermediates_are_full_buffers_unfused_and_one_block_otherwise() {
    let g = EwGroup {
        inputs: vec![EwBroadcast::Full, EwBroadcast::Row],
        body: vec![EwInstr::Add(EwValue::Input(0), EwValue::Input(1)), EwInstr::Gelu(EwValue::Instr(0))],
        outputs: vec![EwValue::Instr(1)],
    };
    let bytes = |s| EwCompiler::new(s).unwrap().compile(&g).unwrap().intermediate_bytes(197, 1536);
    // Unfused: the sum is a [197, 1536] temporary. Blocks: one 1024-element block of it.
    // JIT: the sum goes from registers into the output, where GELU runs in place.
    assert_eq!(bytes(EwStrategy::Unfused), 197 * 1536 * 4);
    assert_eq!(bytes(EwStrategy::Blocks), 1024 * 4);
    assert_eq!(bytes(EwStrategy::Jit), 0);
}

/// The generated code for the fc1 epilogue, as text: per block, one phase stores
/// `x + bias` into the output (an f32x4 loop, then a scalar tail), then one call runs
/// GELU over the block in place.
#[test]
fn clif_of_bias_gelu() {
    let g = EwGroup {
        inputs: vec![EwBroadcast::Full, EwBroadcast::Row],
        body: vec![EwInstr::Add(EwValue::Input(0), EwValue::Input(1)), EwInstr::Gelu(EwValue::Instr(0))],
        outputs: vec![EwValue::Instr(1)],
    };
    let clif = EwCompiler::new(EwStrategy::Jit).unwrap().clif(&g).unwrap().expect("JIT");
    insta::assert_snapshot!(clif);
    assert_eq!(EwCompiler::new(EwStrategy::Blocks).unwrap().clif(&g).unwrap(), None);
}
