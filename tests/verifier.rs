//! The IR verifier's negative cases (Cranelift's verifier filetests): each case
//! builds a small well-formed graph, breaks one invariant, and expects the verifier
//! to name that invariant and the node it broke at. The well-formed graph itself
//! must verify, so every case fails for the reason it states.

use graft::ir::verify::{verify, verify_trainable, Stage, VerifyError};
use graft::ir::{DType, Graph, Init, NodeId, Op, ParamInfo, ParamSource, TensorType};
use std::collections::HashSet;

/// `y = relu(linear(x, w, b))`, typed, with its node ids.
struct Base {
    g: Graph,
    x: NodeId,
    w: NodeId,
    b: NodeId,
    lin: NodeId,
    relu: NodeId,
    out: NodeId,
}

fn param(g: &mut Graph, path: &str, shape: &[i64]) -> NodeId {
    let info = ParamInfo {
        path: path.into(),
        shape: shape.to_vec(),
        dtype: DType::F32,
        trainable: false,
        component: "m".into(),
        source: ParamSource::Init { init: Init::Zeros },
    };
    let id = g.add(Op::Parameter(info), path, None, &[]);
    g.node_mut(id).ty = Some(TensorType::fixed(DType::F32, shape));
    id
}

fn base() -> Base {
    let mut g = Graph::new();
    let ty = TensorType::fixed(DType::F32, &[2, 4]);
    let x = g.add(
        Op::Input { name: "x".into(), ty: ty.clone(), optional: false, default_zeros: false, norm: None },
        "x",
        None,
        &[],
    );
    g.node_mut(x).ty = Some(ty.clone());
    let w = param(&mut g, "fc.weight", &[4, 4]);
    let b = param(&mut g, "fc.bias", &[4]);
    let lin = g.add(Op::Linear, "fc", None, &[x, w, b]);
    g.node_mut(lin).ty = Some(ty.clone());
    let relu = g.add(Op::Relu, "act", None, &[lin]);
    g.node_mut(relu).ty = Some(ty.clone());
    let out = g.add(Op::Output { name: "y".into() }, "y", None, &[relu]);
    g.node_mut(out).ty = Some(ty);
    let base = Base { g, x, w, b, lin, relu, out };
    verify(&base.g, "test", Stage::Typed).expect("the base graph is well formed");
    base
}

/// Verify after `break_it` and return the error (the case fails if there is none).
fn broken(stage: Stage, break_it: impl FnOnce(&mut Base)) -> (Base, VerifyError) {
    let mut b = base();
    break_it(&mut b);
    let e = verify(&b.g, "test", stage).expect_err("the verifier must reject this graph");
    assert_eq!(e.pass, "test");
    (b, e)
}

#[test]
fn a_cycle() {
    let (_, e) = broken(Stage::Lowered, |b| b.g.set_operand(b.lin, 0, b.relu));
    assert_eq!(e.node, None);
    assert_eq!(e.message, "the graph has a cycle");
}

#[test]
fn too_few_operands() {
    let (b, e) = broken(Stage::Lowered, |b| {
        b.g.remove(b.lin);
        b.lin = b.g.add(Op::Linear, "fc", None, &[b.x]);
        b.g.set_operand(b.relu, 0, b.lin);
    });
    assert_eq!(e.node, Some(b.lin));
    assert_eq!(e.message, "`linear` has 1 operands, expects 2..=3");
}

#[test]
fn operand_slots_with_a_hole() {
    // Removing the weight leaves the bias in slot 2.
    let (b, e) = broken(Stage::Lowered, |b| b.g.remove(b.w));
    assert_eq!(e.node, Some(b.lin));
    assert_eq!(e.message, "operand slots are not dense: [0, 2]");
}

#[test]
fn two_parameters_with_one_path() {
    let (_, e) = broken(Stage::Lowered, |b| {
        let dup = param(&mut b.g, "fc.weight", &[4, 4]);
        b.g.set_operand(b.lin, 1, dup);
    });
    assert!(e.node.is_some());
    assert_eq!(e.message, "duplicate parameter path `fc.weight`");
}

#[test]
fn a_parameter_with_an_empty_dimension() {
    let (b, e) = broken(Stage::Lowered, |b| {
        if let Some(p) = b.g.param_mut(b.b) {
            p.shape = vec![0];
        }
    });
    assert_eq!(e.node, Some(b.b));
    assert_eq!(e.message, "parameter `fc.bias` has shape [0]");
}

#[test]
fn two_outputs_with_one_name() {
    let (_, e) = broken(Stage::Lowered, |b| {
        b.g.add(Op::Output { name: "y".into() }, "y2", None, &[b.lin]);
    });
    assert!(e.node.is_some());
    assert_eq!(e.message, "duplicate output `y`");
}

#[test]
fn an_output_fed_by_an_unbound_input() {
    let (b, e) = broken(Stage::Lowered, |b| {
        let u = b.g.add(Op::Unbound, "aux", None, &[]);
        b.g.set_operand(b.lin, 0, u);
    });
    assert_eq!(e.node, Some(b.out));
    assert_eq!(e.message, "output `y` depends on an unbound input");
}

#[test]
fn an_output_with_users() {
    let (b, e) = broken(Stage::Lowered, |b| {
        b.g.add(Op::Gelu, "after", None, &[b.out]);
    });
    assert_eq!(e.node, Some(b.out));
    assert_eq!(e.message, "an output has users");
}

#[test]
fn an_untyped_node_after_typing() {
    let (b, e) = broken(Stage::Typed, |b| b.g.node_mut(b.relu).ty = None);
    assert_eq!(e.node, Some(b.relu));
    assert_eq!(e.message, "`relu` has no type");
    // Before typing the same graph is fine.
    verify(&b.g, "lower", Stage::Lowered).expect("types may be missing straight after lowering");
}

#[test]
fn a_type_that_disagrees_with_the_shape_rule() {
    let (b, e) = broken(Stage::Typed, |b| b.g.node_mut(b.relu).ty = Some(TensorType::fixed(DType::F32, &[2, 5])));
    assert_eq!(e.node, Some(b.relu));
    assert_eq!(e.message, "type f32[2, 5] disagrees with the shape rule's f32[2, 4]");
}

#[test]
fn a_shape_rule_that_fails() {
    let (b, e) = broken(Stage::Typed, |b| {
        let w = param(&mut b.g, "fc.weight2", &[4, 3]);
        b.g.set_operand(b.lin, 1, w);
        b.g.remove(b.w);
    });
    assert_eq!(e.node, Some(b.lin));
    assert!(e.message.starts_with("shape rule fails: "), "{}", e.message);
}

#[test]
fn a_trainable_set_that_differs_from_the_rules() {
    let mut b = base();
    if let Some(p) = b.g.param_mut(b.w) {
        p.trainable = true;
    }
    let named: HashSet<String> = ["fc.bias".to_string()].into();
    let e = verify_trainable(&b.g, &named, "apply_training_rules").expect_err("must differ");
    assert_eq!(e.node, Some(b.w));
    assert_eq!(e.message, "parameter `fc.weight` is trainable, but no training rule names it");
    let exact: HashSet<String> = ["fc.weight".to_string()].into();
    verify_trainable(&b.g, &exact, "apply_training_rules").expect("equal sets pass");
    // Named but frozen.
    let both: HashSet<String> = ["fc.weight".to_string(), "fc.bias".to_string()].into();
    let e = verify_trainable(&b.g, &both, "apply_training_rules").expect_err("fc.bias is frozen");
    assert_eq!(
        (e.node, e.message.as_str()),
        (Some(b.b), "parameter `fc.bias` is named by the training rules, but frozen")
    );
    // A name the graph no longer has (folded or dead) is no error.
    let gone: HashSet<String> = ["fc.weight".to_string(), "gone.weight".to_string()].into();
    verify_trainable(&b.g, &gone, "eliminate_dead_code").expect("a dropped parameter is no error");
}

/// The pipeline's own check, through its API, on a real compilation: the rules
/// evaluated again from the declarations against the final graph's flags. It passes
/// on the compiled graph and fires on each corruption a later pass could make.
#[test]
fn the_pipeline_checks_the_final_graph_against_the_rules() {
    use graft::pipeline::{check_trainable, run_passes, CompileOptions, Mode};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/specs/adapter_lora.graft");
    let compiled = |mode| {
        let prog = graft::lower::load_file(&path).unwrap_or_else(|_| panic!("{} loads", path.display()));
        run_passes(prog, mode, None, &CompileOptions::default(), &mut Vec::new())
            .unwrap_or_else(|_| panic!("{} compiles", path.display()))
    };
    // Train mode: the adapters and the head train, the backbone does not.
    let (mut g, cx) = compiled(Mode::Train);
    check_trainable(&g, &cx, "eliminate_dead_code").expect("the compiled graph agrees with its rules");
    let flags = |g: &Graph| -> Vec<(NodeId, String, bool)> {
        g.params().map(|(id, p)| (id, p.path.clone(), p.trainable)).collect()
    };
    let (lora, _, _) =
        flags(&g).into_iter().find(|(_, p, t)| p.starts_with("lora_qkv.") && *t).expect("a trainable LoRA factor");
    let (frozen, _, _) =
        flags(&g).into_iter().find(|(_, p, t)| p.starts_with("vit.blocks.") && !*t).expect("a frozen backbone weight");
    for (id, now) in [(lora, false), (frozen, true)] {
        g.param_mut(id).expect("a parameter").trainable = now;
        let e = check_trainable(&g, &cx, "eliminate_dead_code").expect_err("a flipped flag must be caught");
        assert_eq!(e.node, Some(id), "{e}");
        assert_eq!(e.pass, "eliminate_dead_code");
        g.param_mut(id).expect("a parameter").trainable = !now;
    }
    check_trainable(&g, &cx, "eliminate_dead_code").expect("restored");
    // Infer mode: LoRA folds into the backbone's weights, which never train.
    let (mut g, cx) = compiled(Mode::Infer);
    check_trainable(&g, &cx, "eliminate_dead_code").expect("the folded graph agrees with its rules");
    let folded = g
        .params()
        .find(|(_, p)| matches!(p.source, ParamSource::Folded { .. }))
        .map(|(id, _)| id)
        .expect("LoRA folds in infer mode");
    g.param_mut(folded).expect("a parameter").trainable = true;
    let e = check_trainable(&g, &cx, "eliminate_dead_code").expect_err("a trainable folded parameter");
    assert!(e.message.starts_with("folded parameter") && e.node == Some(folded), "{e}");
}
