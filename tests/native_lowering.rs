//! The native backend's lowering, in the default build (no LibTorch): arena lifetimes
//! derived from what each step reads and writes (a fusion group's output read only by
//! a copy stays written), kernel errors that name the instance and op, and the
//! bounded program cache (least recently used evicted, results unchanged).

use graft::api::{compile_str, render_failure};
use graft::backend::native::{Native, NativeExecutable, PROGRAMS};
use graft::backend::{Executable, Options, Plan};
use graft::params::init::random_values;
use graft::pipeline::Mode;
use graft::tensor::HostTensor;

fn prepare(spec: &str) -> NativeExecutable {
    let c = compile_str("t.graft", None, spec, Mode::Infer).unwrap_or_else(|e| panic!("{}", render_failure(&e, false)));
    let plan = Plan::new(&c.graph);
    let params = plan.params().iter().map(|p| random_values(p, 0)).collect();
    NativeExecutable::new(&plan, params, &Options::default(), Native::default()).unwrap()
}

fn f32s(shape: &[i64], f: impl Fn(usize) -> f32) -> HostTensor {
    let n = shape.iter().product::<i64>() as usize;
    HostTensor::from_f32(shape, &(0..n).map(f).collect::<Vec<_>>()).unwrap()
}

#[test]
fn a_fused_value_read_only_by_a_copy_is_kept() {
    // `r` and `y` form one fusion group; the permute (a copy) is `r`'s only reader
    // outside it, so `r` must stay an output of the group and keep its bytes.
    let mut exe = prepare(
        r#"
model m {
  input x: f32[2, 3, 4]
  head r = relu(x)
  output y = r * 2.0
  output z = permute(r, [0, 2, 1])
}
"#,
    );
    let x = f32s(&[2, 3, 4], |i| i as f32 - 11.5);
    let out = exe.run(&[Some(x.clone())]).unwrap();
    let xs = x.to_f64();
    let (y, z) = (&out[0].1, &out[1].1);
    assert_eq!((out[0].0.as_str(), out[1].0.as_str()), ("y", "z"));
    assert_eq!(z.shape, vec![2, 4, 3]);
    let want_y: Vec<f64> = xs.iter().map(|v| v.max(0.0) * 2.0).collect();
    let mut want_z = vec![0.0; 24];
    for b in 0..2 {
        for t in 0..3 {
            for c in 0..4 {
                want_z[b * 12 + c * 3 + t] = xs[b * 12 + t * 4 + c].max(0.0);
            }
        }
    }
    assert_eq!(y.to_f64(), want_y);
    assert_eq!(z.to_f64(), want_z);
}

#[test]
fn a_kernel_error_names_the_instance_and_op() {
    let mut exe = prepare(
        r#"
model m {
  input ids: i64[B, T]
  encoder tok = embedding(5, 4)(ids)
  output y = tok
}
"#,
    );
    let ids = HostTensor::from_i64(&[1, 3], &[0, 7, 1]).unwrap();
    let err = exe.run(&[Some(ids)]).unwrap_err().to_string();
    assert!(err.starts_with("running `tok"), "{err}");
    assert!(err.contains("(embedding): index 7 is out of range (ids must lie in 0..5 for this table)"), "{err}");
}

#[test]
fn programs_are_bounded_and_an_evicted_one_is_rebuilt_alike() {
    let mut exe = prepare(
        r#"
model m {
  input x: f32[B, 4]
  encoder fc = linear(4, 3)(x)
  output y = gelu(fc)
}
"#,
    );
    let x = |b: i64| f32s(&[b, 4], |i| (i as f32 * 0.37).sin());
    let first = exe.run(&[Some(x(1))]).unwrap();
    for b in 2..=PROGRAMS as i64 + 3 {
        exe.run(&[Some(x(b))]).unwrap();
        assert!(exe.programs() <= PROGRAMS, "{} programs held", exe.programs());
    }
    assert_eq!(exe.programs(), PROGRAMS);
    // Batch 1 was evicted long ago: it is lowered again, with the same result.
    assert_eq!(exe.run(&[Some(x(1))]).unwrap(), first);
}

#[test]
fn a_long_elementwise_chain_splits_into_bounded_groups_and_stays_exact() {
    // 999 chained adds: one fusion group would be one 999-instruction kernel; groups
    // hold at most MAX_GROUP_OPS (256) instructions, so this is four groups, each
    // reading the last one's output.
    // Five heads of 200 terms each (an expression nests at most 256 deep), chained.
    let n: usize = 1000;
    let mut spec = String::from("model m {\n  input x: f32[2, 8]\n  head h0 = x\n");
    for k in 1..=5 {
        let terms = if k == 1 { 199 } else { 200 };
        spec += &format!("  head h{k} = h{}{}\n", k - 1, " + x".repeat(terms));
    }
    spec += "  output y = h5\n}\n";
    let mut exe = prepare(&spec);
    let x = f32s(&[2, 8], |i| (i % 7) as f32 - 3.0);
    let out = exe.run(&[Some(x.clone())]).unwrap();
    let want: Vec<f64> = x.to_f64().iter().map(|v| v * n as f64).collect();
    assert_eq!(out[0].1.to_f64(), want, "integers times {n} are exact in f32");
    let report: std::collections::BTreeMap<String, f64> = exe.report().into_iter().collect();
    let max = graft::backend::native::MAX_GROUP_OPS;
    assert_eq!(report["ew_groups"], (n - 1).div_ceil(max) as f64, "{report:?}");
}

/// An MLP: the GELU of `fc1` is its epilogue unless `keep` also outputs `fc1`'s value
/// (then the GELU stays a group of its own).
fn mlp(keep: bool) -> String {
    format!(
        "module act() {{\n  in x\n  fc1 = linear(24, 70)(x)\n  out gelu(fc1)\n}}\n\
         model m {{\n  input x: f32[B, 24]\n  encoder h = act()(x)\n  encoder fc2 = linear(70, 20)(h)\n  \
         output y = fc2\n  output g = h\n{}}}\n",
        if keep { "  output pre = h.fc1\n" } else { "" }
    )
}

#[test]
fn a_gelu_after_a_linear_runs_as_its_epilogue_with_the_same_bits() {
    let run = |keep: bool, threads: usize, batch: i64| {
        let c = graft::api::compile_str("m.graft", None, &mlp(keep), Mode::Infer)
            .unwrap_or_else(|e| panic!("{}", graft::api::render_failure(&e, false)));
        let plan = Plan::new(&c.graph);
        let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
        let mut given = graft::backend::inputs::random(&plan, batch, 7).unwrap();
        // Large inputs push some of fc1's outputs past the GELU's cut-offs.
        for (_, t) in given.iter_mut() {
            let v: Vec<f32> =
                t.as_f32().unwrap().iter().enumerate().map(|(i, x)| x * (1 + i % 5 * 40) as f32).collect();
            *t = HostTensor::from_f32(&t.shape, &v).unwrap();
        }
        use graft::backend::Backend;
        let native = graft::backend::native::Native { threads, ..Default::default() };
        let mut exe = native.prepare(&plan, params, &Options::default()).unwrap();
        let out = graft::backend::run_named(exe.as_mut(), &plan, given, graft::ir::DType::F32).unwrap();
        let report: std::collections::BTreeMap<String, f64> = exe.report().into_iter().collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let of = |name: &str| bits(&out.iter().find(|(n, _)| n == name).unwrap().1.as_f32().unwrap());
        ((of("g"), of("y")), report["ew_groups"])
    };
    for batch in [1, 7, 13] {
        let (unfused, groups) = run(true, 1, batch);
        assert_eq!(groups, 1.0, "the GELU whose input is also an output stays a group");
        for threads in [1, 2] {
            let (fused, groups) = run(false, threads, batch);
            assert_eq!(groups, 0.0, "the GELU runs in fc1's epilogue");
            assert_eq!(fused, unfused, "batch {batch}, {threads} threads");
        }
    }
}
