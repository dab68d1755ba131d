//! CUDA graphs and bf16 autocast (the `cuda-graphs` feature).
//!
//! Everywhere: the refusals (the command line runs with `CUDA_VISIBLE_DEVICES=""`, so
//! it sees no GPU even on a GPU machine) and the autocast switch, which is
//! thread-local state that needs no device. The GPU tests are
//! `#[ignore = "needs a CUDA device"]`: run them on a GPU machine with
//! `cargo test --features cuda-graphs --test cuda -- --ignored`, where they fail
//! (never skip) if the device is missing. They check: graph replay equals eager inference
//! (specs/vit_tiny.graft), three captured training steps equal three eager ones (loss
//! and parameters, also with gradient accumulation), bf16 autocast stays within 2e-2
//! of f32, and `graft bench --cuda-graph` runs.

#![cfg(feature = "cuda-graphs")]

mod common;

use common::compare::{assert_close, measure, Tol, Values};
use common::scratch::temp_dir;
use common::specs::TINY_PRETRAIN as TRAIN_SPEC;
use graft::api::compile_file;
use graft::backend::torch::convert::place;
use graft::backend::torch::cuda_graph::{
    cuda_graphs_available, require, set_autocast_bf16, Autocast, CudaGraph, GraphedForward,
};
use graft::backend::torch::exec;
use graft::backend::torch::store::ParamStore;
use graft::backend::torch::train::{Model, TorchTrainer};
use graft::backend::torch::TorchBackend;
use graft::backend::{inputs, Backend, Executable, Options, Plan};
use graft::commands::train::{self as trainer, TrainArgs, Trained};
use graft::ir::DType;
use graft::params::init::random_values;
use graft::pipeline::Mode;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind, Tensor};

/// The GPU, held for the whole test: a capture must not overlap other CUDA work in the
/// process, so GPU tests run one at a time. Fails without a device: these tests are
/// `#[ignore]`d and only run when asked for with `--ignored`.
fn gpu(test: &str) -> MutexGuard<'static, ()> {
    static GPU: Mutex<()> = Mutex::new(());
    assert!(cuda_graphs_available(), "{test} needs a CUDA device (and LibTorch built with CUDA)");
    GPU.lock().unwrap_or_else(|e| e.into_inner())
}

// The test binary may be copied to a GPU machine with the repository elsewhere: the
// paths fixed at build time then give way to ones found at run time.

/// The graft binary: as built, or next to this test's `deps/` folder.
fn graft_bin() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_graft"));
    let exe = std::env::current_exe().unwrap();
    let beside = exe.parent().and_then(Path::parent).map(|d| d.join("graft"));
    match beside {
        Some(b) if !built.exists() => b,
        _ => built,
    }
}

fn graft(dir: &Path, args: &[&str]) -> Output {
    Command::new(graft_bin()).args(args).current_dir(dir).output().expect("run graft")
}

/// The binary with every GPU hidden, so that its refusals are tested on any machine.
fn graft_without_gpu(dir: &Path, args: &[&str]) -> Output {
    Command::new(graft_bin()).args(args).current_dir(dir).env("CUDA_VISIBLE_DEVICES", "").output().expect("run graft")
}

/// specs/vit_tiny.graft, in the source tree or under the current directory.
fn vit_tiny() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/vit_tiny.graft");
    let here = std::env::current_dir().unwrap().join("specs/vit_tiny.graft");
    if built.exists() {
        built
    } else {
        here
    }
}

/// `graft …` fails with status 1, no panic, and `want` in its message.
fn refuses(args: &[&str], want: &str) {
    let o = graft_without_gpu(temp_dir("cuda-refuse").path(), args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "graft {} should fail:\n{err}", args.join(" "));
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(want), "graft {}: expected `{want}` in:\n{err}", args.join(" "));
}

#[test]
fn without_a_gpu_every_entry_point_refuses_clearly() {
    // Through the shim: without a device it reports an error, not an exception; with
    // one it builds the graph.
    match (cuda_graphs_available(), CudaGraph::new()) {
        (false, Err(e)) => assert!(e.to_string().contains("no CUDA device"), "{e}"),
        (true, Ok(_)) => {}
        (available, r) => panic!("cuda_graphs_available() = {available}, but CudaGraph::new() gave {:?}", r.err()),
    }
    let e = require("--cuda-graph", Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("needs a CUDA device"), "{e}");
    let spec = vit_tiny().display().to_string();
    let cpu = ["--device", "cpu"];
    let run = ["run", &spec, "--inputs", "in.safetensors", "--out", "out.safetensors", "--cuda-graph"];
    refuses(&[&run[..], &cpu].concat(), "--cuda-graph needs a CUDA device");
    let train = ["train", &spec, "--data", "data", "--steps", "1", "--batch", "1", "--lr", "1e-3", "--out", "run"];
    refuses(&[&train[..], &["--cuda-graph"], &cpu].concat(), "--cuda-graph needs a CUDA device");
    refuses(&[&train[..], &["--autocast", "bf16"], &cpu].concat(), "--autocast needs a CUDA device");
    refuses(&["bench", &spec, "--batch", "1", "--cuda-graph", "--device", "cpu"], "--cuda-graph needs a CUDA device");
    // `auto` falls back to the CPU here: refused the same way.
    refuses(&[&train[..], &["--cuda-graph", "--device", "auto"]].concat(), "--cuda-graph needs a CUDA device");
}

#[test]
fn the_autocast_switch_is_thread_local_state_and_the_guard_restores_it() {
    // No device needed: this runs everywhere, through the shim.
    std::thread::spawn(|| {
        assert!(!set_autocast_bf16(true).unwrap(), "off at first");
        assert!(set_autocast_bf16(false).unwrap(), "was on");
        {
            let _outer = Autocast::bf16().unwrap();
            {
                let _inner = Autocast::bf16().unwrap();
            }
            assert!(set_autocast_bf16(true).unwrap(), "the inner guard leaves the outer one's setting");
        }
        assert!(!set_autocast_bf16(false).unwrap(), "the outer guard turned it off");
        // CPU ops are not autocast.
        let _on = Autocast::bf16().unwrap();
        let x = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        assert_eq!(x.matmul(&x.tr()).kind(), Kind::Float);
    })
    .join()
    .unwrap();
}

/// vit_tiny in infer mode with random parameters on the GPU, and random inputs.
fn vit_tiny_on_gpu() -> (Plan, ParamStore) {
    let c = compile_file(&vit_tiny(), Mode::Infer).map_err(|_| "specs/vit_tiny.graft compiles").unwrap();
    let plan = Plan::new(&c.graph);
    let values = plan.params().iter().map(|p| random_values(p, 0)).collect();
    let store = ParamStore::new(&plan, values, Device::Cuda(0), Kind::Float).unwrap();
    (plan, store)
}

fn gpu_inputs(plan: &Plan, batch: i64, seed: u64) -> Vec<Option<Tensor>> {
    let given = inputs::random(plan, batch, seed).unwrap();
    place(plan.inputs(), &inputs::bind(plan, given, DType::F32).unwrap().values, Device::Cuda(0), Kind::Float).unwrap()
}

/// A tensor (any device, any float kind) as `f64` values on the host.
fn values(t: &Tensor) -> Values {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Double).contiguous();
    Values::new(&t.size(), Vec::<f64>::try_from(t.flatten(0, -1)).expect("a host f64 tensor"))
}

/// Named tensors as named host values.
fn host(outs: &[(String, Tensor)]) -> Vec<(String, Values)> {
    outs.iter().map(|(n, t)| (n.clone(), values(t))).collect()
}

fn eager(plan: &Plan, store: &ParamStore, ins: &[Option<Tensor>]) -> Vec<(String, Values)> {
    let ins = ins.iter().map(|t| t.as_ref().map(Tensor::shallow_clone)).collect();
    host(&tch::no_grad(|| exec::run(plan, &store.tensors, ins)).unwrap())
}

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine"]
fn graph_replay_equals_eager_inference() {
    let _gpu = gpu("graph replay vs eager");
    let (plan, store) = vit_tiny_on_gpu();
    let (x1, x2) = (gpu_inputs(&plan, 4, 1), gpu_inputs(&plan, 4, 2));
    let (want1, want2) = (eager(&plan, &store, &x1), eager(&plan, &store, &x2));
    let g = GraphedForward::capture(&plan, &store.tensors, &x1).unwrap();
    for _ in 0..2 {
        for (x, want) in [(&x1, &want1), (&x2, &want2)] {
            let got = host(&g.run(x).unwrap());
            assert_close("graph replay vs eager", &got, want, Tol::Max { abs: 1e-5, rel: 1e-5 });
        }
    }
    let apart = measure(&want1, &want2).unwrap();
    assert!(apart.iter().all(|s| s.max_abs > 1e-3), "different inputs give different outputs: {apart:?}");
    let other = gpu_inputs(&plan, 2, 3);
    let e = g.run(&other).expect_err("another batch size does not fit the graph").to_string();
    assert!(e.contains("differ in shape"), "{e}");
}

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine"]
fn each_timed_forward_is_one_replay_of_one_capture() {
    let _gpu = gpu("replays per timed forward");
    let c = compile_file(&vit_tiny(), Mode::Infer).map_err(|_| "specs/vit_tiny.graft compiles").unwrap();
    let plan = Plan::new(&c.graph);
    let values = plan.params().iter().map(|p| random_values(p, 0)).collect();
    let opts = Options { device: graft::backend::Device::Cuda(0), float: DType::F32, graph_capture: true };
    let mut exe = TorchBackend.prepare(&plan, values, &opts).unwrap();
    let x = inputs::bind(&plan, inputs::random(&plan, 4, 1).unwrap(), DType::F32).unwrap().values;
    let figure = |exe: &dyn Executable, name: &str| {
        exe.report().into_iter().find(|(n, _)| n == name).map(|(_, v)| v).unwrap_or_else(|| panic!("no `{name}`"))
    };
    // As `graft bench` drives it: warmup once, then one timed forward per call.
    let t = exe.time_forward(&x, 2, 0).unwrap();
    assert!(t.is_empty());
    assert_eq!((figure(exe.as_ref(), "cuda_graph_captures"), figure(exe.as_ref(), "cuda_graph_replays")), (1.0, 2.0));
    for i in 1..=3 {
        assert_eq!(exe.time_forward(&x, 0, 1).unwrap().len(), 1);
        assert_eq!(figure(exe.as_ref(), "cuda_graph_replays"), 2.0 + i as f64, "one replay per timed forward");
    }
    assert_eq!(exe.time_forward(&x, 1, 4).unwrap().len(), 4);
    assert_eq!(figure(exe.as_ref(), "cuda_graph_replays"), 10.0);
    assert_eq!(figure(exe.as_ref(), "cuda_graph_captures"), 1.0, "a graph that fits is never captured again");
    // Another batch size: a second capture, then replays of it alone.
    let y = inputs::bind(&plan, inputs::random(&plan, 2, 1).unwrap(), DType::F32).unwrap().values;
    exe.time_forward(&y, 0, 2).unwrap();
    assert_eq!(figure(exe.as_ref(), "cuda_graph_captures"), 2.0);
    assert_eq!(figure(exe.as_ref(), "cuda_graph_replays"), 2.0);
}

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine"]
fn bf16_autocast_stays_close_to_f32() {
    let _gpu = gpu("bf16 autocast");
    let (plan, store) = vit_tiny_on_gpu();
    let x = gpu_inputs(&plan, 4, 1);
    let f32_out = eager(&plan, &store, &x);
    let (bf16_out, graphed) = {
        let _ac = Autocast::bf16().unwrap();
        let out = eager(&plan, &store, &x);
        let g = GraphedForward::capture(&plan, &store.tensors, &x).unwrap();
        (out, g)
    };
    for s in assert_close("bf16 autocast vs f32", &bf16_out, &f32_out, Tol::Norm { rel: 2e-2 }) {
        assert!(s.rel > 0.0, "autocast changed nothing in `{}`: not in effect?", s.name);
    }
    // Captured under autocast, replayed after the guard is gone: still the bf16 kernels.
    let replayed = host(&graphed.run(&x).unwrap());
    assert_close("replay vs eager bf16", &replayed, &bf16_out, Tol::Norm { rel: 1e-3 });
}

fn train(dir: &Path, out: &str, extra: &[&str]) -> Trained<TorchTrainer> {
    let path = |s: &str| dir.join(s).display().to_string();
    let mut words = vec![path("pre.graft"), "--data".into(), path("data"), "--out".into(), path(out)];
    let flags = ["--steps", "3", "--batch", "16", "--lr", "1e-3", "--schedule", "constant", "--device", "cuda"];
    words.extend(flags.iter().chain(extra).map(|s| s.to_string()));
    trainer::run(&TrainArgs::parse(words).unwrap()).unwrap().expect("spec compiles")
}

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine"]
fn captured_training_steps_equal_eager_ones() {
    let _gpu = gpu("captured training steps");
    let dir = temp_dir("cuda-train");
    let dir = dir.path();
    std::fs::write(dir.join("pre.graft"), TRAIN_SPEC).unwrap();
    let o = graft(dir, &["data", "synth", "--task", "pretrain", "--n", "128", "--out", "data"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for accumulate in ["1", "2"] {
        let a = ["--accumulate", accumulate];
        let eager = train(dir, &format!("eager{accumulate}"), &a);
        let graphed = train(dir, &format!("graph{accumulate}"), &[&a[..], &["--cuda-graph"]].concat());
        assert_eq!(eager.losses.len(), 3);
        let losses = |v: &[f32]| vec![("loss".to_string(), Values::f32(&[v.len() as i64], v))];
        let tol = Tol::Max { abs: 1e-4, rel: 1e-4 };
        assert_close("losses: graph vs eager", &losses(&graphed.losses), &losses(&eager.losses), tol);
        let trained = |t: &Trained<TorchTrainer>| host(&t.trainer.model().trainable());
        assert_close(
            "parameters: graph vs eager",
            &trained(&graphed),
            &trained(&eager),
            Tol::Max { abs: 1e-4, rel: 0.0 },
        );
        // The steps did train: the parameters moved.
        let before = graft::commands::train::spec::Spec::compile(&dir.join("pre.graft")).unwrap();
        let (values, _) = before.materialise(&[], &[], 0, None).unwrap();
        let init = Model::new(&before.plan, before.output, values, Device::Cuda(0)).unwrap();
        let moved = measure(&trained(&graphed), &host(&init.trainable())).unwrap();
        assert!(moved.iter().any(|s| s.max_abs > 1e-6), "three captured steps left every parameter where it was");
    }
    // With autocast too: the loss stays finite and close to the f32 run's first loss.
    let ac = train(dir, "graph_bf16", &["--cuda-graph", "--autocast", "bf16"]);
    let f32_run = train(dir, "eager_f32", &[]);
    assert!((ac.losses[0] - f32_run.losses[0]).abs() <= 2e-2 * f32_run.losses[0].abs(), "{:?}", ac.losses);
}

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine"]
fn bench_replays_a_graph() {
    let _gpu = gpu("graft bench --cuda-graph");
    let spec = vit_tiny().display().to_string();
    let o = graft(
        temp_dir("cuda-bench").path(),
        &["bench", &spec, "--batch", "2", "--iters", "3", "--device", "cuda", "--cuda-graph"],
    );
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("batch 2"), "{out}");
}

/// The TRAIN_SPEC model on the GPU with seeded parameters, AdamW over its trainable ones.
fn pre_on_gpu(dir: &Path) -> (Model, graft::backend::torch::train::optim::AdamW) {
    use graft::backend::torch::train::optim::AdamW;
    std::fs::write(dir.join("pre.graft"), TRAIN_SPEC).unwrap();
    let spec = graft::commands::train::spec::Spec::compile(&dir.join("pre.graft")).unwrap();
    let values = spec.plan.params().iter().map(|p| random_values(p, 0)).collect();
    let model = Model::new(&spec.plan, spec.output, values, Device::Cuda(0)).unwrap();
    let opt = AdamW::new(model.trainable(), 1e-3, &[], 0.01, &model.frozen_paths()).unwrap();
    (model, opt)
}

#[test]
#[ignore = "needs a CUDA device; run with --ignored on a GPU machine"]
fn a_whole_captured_step_equals_the_eager_step() {
    use graft::backend::torch::train::device_step::{train_step, DeviceStep, StepGraphs, StepParts};
    let _gpu = gpu("whole-step capture");
    let dir = temp_dir("cuda-whole_step");
    let dir = dir.path();
    let batches: Vec<(Vec<Option<Tensor>>, Tensor)> = (0..4u64)
        .map(|i| {
            let (model, _) = pre_on_gpu(dir);
            let x = gpu_inputs(&model.plan, 8, 10 + i);
            let y = Tensor::from_slice(&[0i64, 1, 2, 3, 3, 2, 1, 0]).roll([i as i64], [0]).to_device(Device::Cuda(0));
            (x, y)
        })
        .collect();
    // Eager sync-free steps, then the same batches through captured whole steps (the
    // rate changes every step: it is read from the device tensor at each replay).
    let run = |graphed: bool| {
        let (model, mut opt) = pre_on_gpu(dir);
        let params = opt.params();
        let mut dev = DeviceStep::new(Device::Cuda(0), 8).unwrap();
        let mut graphs = StepGraphs::default();
        for (step, (x, y)) in batches.iter().enumerate() {
            dev.set_rate(1.0 / (1.0 + step as f64)).unwrap();
            let mut parts = StepParts {
                model: &model,
                params: &params,
                opt: &mut opt,
                clip: Some(1.0),
                autocast: false,
                dev: &dev,
            };
            let (loss, norm) = if graphed {
                graphs.step(&mut parts, x, y).unwrap()
            } else {
                let ins = x.iter().map(|t| t.as_ref().map(Tensor::shallow_clone)).collect();
                train_step(&mut parts, None, ins, y).unwrap()
            };
            dev.record(step as u64 + 1, &loss, &norm).unwrap();
        }
        let (values, bad) = dev.drain().unwrap();
        assert!(!bad);
        let params: Vec<Tensor> = params.iter().map(|p| p.to_device(Device::Cpu)).collect();
        (values, params, graphs.captures)
    };
    let (eager_values, eager_params, _) = run(false);
    let (graph_values, graph_params, captures) = run(true);
    assert_eq!(captures, 1, "one batch signature, one capture");
    assert_eq!(eager_values.len(), 4);
    use graft::backend::torch::train::device_step::StepValues;
    let steps = |v: &[StepValues]| -> Vec<u64> { v.iter().map(|r| r.step).collect() };
    assert_eq!(steps(&graph_values), steps(&eager_values));
    let series = |v: &[StepValues]| {
        let loss: Vec<f64> = v.iter().map(|r| r.loss).collect();
        let norm: Vec<f64> = v.iter().map(|r| r.grad_norm).collect();
        vec![
            ("loss".to_string(), Values::new(&[loss.len() as i64], loss)),
            ("grad_norm".to_string(), Values::new(&[norm.len() as i64], norm)),
        ]
    };
    assert_close(
        "whole step: graph vs eager",
        &series(&graph_values),
        &series(&eager_values),
        Tol::Max { abs: 1e-4, rel: 1e-5 },
    );
    // Parameters in the optimizer's order, named by position.
    let indexed = |ts: &[Tensor]| -> Vec<(String, Values)> {
        ts.iter().enumerate().map(|(i, t)| (format!("param {i}"), values(t))).collect()
    };
    assert_close(
        "parameters: graph vs eager",
        &indexed(&graph_params),
        &indexed(&eager_params),
        Tol::Max { abs: 1e-5, rel: 1e-5 },
    );
    let (first, _) = pre_on_gpu(dir);
    let initial: Vec<Tensor> = first.trainable().into_iter().map(|(_, t)| t.to_device(Device::Cpu)).collect();
    let moved = measure(&indexed(&eager_params), &indexed(&initial)).unwrap();
    let moved = moved.iter().any(|s| s.max_abs > 1e-4);
    assert!(moved, "the steps trained");
}

#[test]
#[ignore = "needs a CUDA device; run on a GPU machine with --ignored"]
fn raw_pixels_are_normalised_on_the_gpu_to_the_hosts_bits() {
    // Every level of every channel, along the channel axis of a video [B, T, C, H, W]:
    // the table lookup on the device gives what the host's normalisation gives.
    let _g = gpu("raw_pixels_are_normalised_on_the_gpu_to_the_hosts_bits");
    let norm = graft::ir::PixelNorm { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225], axis: 2 };
    let shape = [2i64, 4, 3, 16, 16];
    let bytes: Vec<u8> = (0..shape.iter().product::<i64>()).map(|i| (i * 7 % 256) as u8).collect();
    let mut want = vec![0f32; bytes.len()];
    norm.apply(&shape, &bytes, &mut want);
    let t = Tensor::from_slice(&bytes).view(shape).to_device(Device::Cuda(0));
    let got = graft::backend::torch::convert::normalise(&t, &norm).unwrap();
    assert_eq!(got.device(), Device::Cuda(0));
    let got: Vec<f32> = Vec::try_from(got.to_device(Device::Cpu).flatten(0, -1)).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
}
