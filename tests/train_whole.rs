//! Whole training steps read back later (`graft train --log-every N`, the seam's
//! `Trainer::step_whole` / `drain`) on the CPU: they compute exactly what the
//! step-by-step path computes, every step is recorded, and a non-finite step is named
//! where the step-by-step loop names it. The CUDA side (a whole step captured in one
//! graph) is in tests/cuda.rs.

#![cfg(feature = "torch")]

mod common;

use common::specs::TINY_PRETRAIN as SPEC;
use graft::backend::torch::train::dist::DistOptions;
use graft::backend::torch::train::TorchTraining;
use graft::backend::train::{TrainOptions, Trainer, Training, Update};
use graft::backend::Device;
use graft::commands::train::spec::Spec;
use graft::data::Dataset;
use graft::evaluate::batch_inputs;
use graft::tensor::HostTensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A directory with the spec and a synthetic dataset, made once.
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::scratch::process_dir("train-whole");
        std::fs::write(dir.join("pre.graft"), SPEC).unwrap();
        ok(&dir, &["data", "synth", "--task", "pretrain", "--n", "128", "--shard-size", "64", "--out", "data"]);
        dir
    })
}

fn graft(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).current_dir(dir).output().expect("run graft")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = graft(dir, args);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "graft {} failed:\n{out}\n{err}", args.join(" "));
    format!("{out}{err}")
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let o = graft(dir, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "graft {} should fail:\n{err}", args.join(" "));
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn records(run: &str, kind: &str) -> Vec<serde_json::Value> {
    let t = std::fs::read_to_string(dir().join(run).join("metrics.jsonl")).unwrap();
    let all = t.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
    all.filter(|r| r["kind"] == kind).collect()
}

/// What two runs must agree on, step by step (not the timings).
fn values(r: &serde_json::Value) -> String {
    format!(
        "{} {} {} {} {} {} {}",
        r["step"], r["epoch"], r["loss"], r["lr"], r["grad_norm"], r["samples"], r["missing"]
    )
}

fn train(log_every: Option<&str>, extra: &[&str], out: &str) -> Vec<String> {
    let mut w: Vec<&str> =
        vec!["train", "pre.graft", "--data", "data", "--batch", "16", "--device", "cpu", "--out", out];
    w.extend(extra);
    if let Some(n) = log_every {
        w.extend(["--log-every", n]);
    }
    w.iter().map(|s| s.to_string()).collect()
}

fn as_strs(w: &[String]) -> Vec<&str> {
    w.iter().map(String::as_str).collect()
}

#[test]
fn whole_steps_equal_the_step_and_update_path_bit_for_bit() {
    let d = dir();
    let spec = Spec::compile(&d.join("pre.graft")).unwrap();
    let ds = Dataset::open(d.join("data")).unwrap();
    let training =
        TorchTraining::join(Device::Cpu, None, DistOptions { backend: None, timeout_s: 60.0, pinned: false }).unwrap();
    let opts = TrainOptions {
        seed: 0,
        lr: 3e-3,
        lr_for: vec![("cls.*".into(), 1e-2)],
        weight_decay: 0.05,
        clip: Some(0.5),
        accumulate: 1,
        graph_capture: false,
        autocast: false,
        log_every: 3,
    };
    let prepare = || {
        let (values, _) = spec.materialise(&[], &[], 0, None).unwrap();
        training.prepare(&spec.plan, spec.output, values, &opts).unwrap()
    };
    let (mut eager, mut whole) = (prepare(), prepare());
    assert!(eager.defers() && whole.defers());
    let (mut stepped, mut read) = (Vec::new(), Vec::new());
    for (i, b) in ds.batches(16, 7, 0, true).take(7).enumerate() {
        let b = b.unwrap();
        let inputs: Vec<Option<HostTensor>> = batch_inputs(&spec.plan, &b, &[]).unwrap();
        let step = i as u64 + 1;
        let scale = [0.25, 0.5, 1.0, 0.8][i % 4];
        let s = eager.step(&inputs, &b.label_tensor()).unwrap();
        match eager.update(step, s.loss as f64, scale).unwrap() {
            Update::Applied { loss, grad_norm } => stepped.push((step, loss, grad_norm)),
            u => panic!("step {step}: {u:?}"),
        }
        whole.step_whole(step, &inputs, &b.label_tensor(), scale).unwrap();
        if step.is_multiple_of(3) {
            read.extend(whole.drain().unwrap().into_iter().map(|v| (v.step, v.loss, v.grad_norm)));
        }
    }
    read.extend(whole.drain().unwrap().into_iter().map(|v| (v.step, v.loss, v.grad_norm)));
    assert!(whole.drain().unwrap().is_empty(), "a drain empties the queue");
    let bits = |v: &[(u64, f64, f64)]| v.iter().map(|&(s, l, n)| (s, l.to_bits(), n.to_bits())).collect::<Vec<_>>();
    assert_eq!(bits(&stepped), bits(&read), "{stepped:?}\n{read:?}");
    let host = |t: &dyn Trainer| {
        let mut all = t.trainable().unwrap();
        all.extend(t.optimizer_state().unwrap());
        all
    };
    let (a, b) = (host(&eager), host(&whole));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.data == tb.data, "{na} differs between the two paths");
    }
}

#[test]
fn log_every_reads_later_and_records_every_step_alike() {
    let d = dir();
    let extra = ["--steps", "10", "--lr", "3e-3", "--clip", "1.0", "--checkpoint-every", "8"];
    ok(d, &as_strs(&train(None, &extra, "runs/each")));
    let out = ok(d, &as_strs(&train(Some("4"), &extra, "runs/every4")));
    assert!(out.contains("losses read every 4 steps"), "{out}");
    assert!(out.contains("waited for data:"), "{out}");
    let (a, b) = (records("runs/each", "train"), records("runs/every4", "train"));
    assert_eq!(a.len(), 10);
    assert_eq!(a.iter().map(values).collect::<Vec<_>>(), b.iter().map(values).collect::<Vec<_>>());
    assert!(b.iter().all(|r| r["data_wait_s"].as_f64().is_some_and(|w| w >= 0.0)), "{b:?}");
    let read = |r: &str| std::fs::read(dir().join(r).join("trainable.safetensors")).unwrap();
    assert!(read("runs/each") == read("runs/every4"), "the trained tensors differ");
    // Several batches per step read every step, and say so.
    let acc = ["--steps", "2", "--lr", "3e-3", "--accumulate", "2"];
    let out = ok(d, &as_strs(&train(Some("4"), &acc, "runs/acc")));
    assert!(out.contains("--log-every: steps of several batches"), "{out}");
    assert_eq!(records("runs/acc", "train").len(), 2);
}

#[test]
fn a_non_finite_step_is_named_when_read_and_stops_where_step_by_step_stops() {
    let d = dir();
    let extra = ["--steps", "40", "--lr", "1e4", "--schedule", "constant", "--checkpoint-every", "3"];
    let each = fails(d, &as_strs(&train(None, &extra, "runs/nan-each")));
    let later = fails(d, &as_strs(&train(Some("7"), &extra, "runs/nan-every7")));
    let stop = |r: &str| records(r, "stop").pop().expect("a stop record");
    let (s1, s7) = (stop("runs/nan-each"), stop("runs/nan-every7"));
    assert_eq!(s1["step"], s7["step"], "{each}\n{later}");
    assert_eq!(s1["reason"], s7["reason"]);
    let k = s7["step"].as_u64().unwrap();
    assert!(later.contains(&format!("at step {k}")), "{later}");
    let (a, b) = (records("runs/nan-each", "train"), records("runs/nan-every7", "train"));
    assert_eq!(b.len() as u64, k - 1, "every step before the bad one is recorded");
    assert_eq!(a.iter().map(values).collect::<Vec<_>>(), b.iter().map(values).collect::<Vec<_>>());
    // The kept checkpoint is the last one before the bad step, and the same in both.
    let ckpt = |r: &str| graft::commands::train::rundir::latest(&dir().join(r)).unwrap();
    let (c1, c7) = (ckpt("runs/nan-each"), ckpt("runs/nan-every7"));
    assert_eq!(
        c1.as_ref().map(|p| p.file_name().unwrap().to_owned()),
        c7.as_ref().map(|p| p.file_name().unwrap().to_owned())
    );
    if let (Some(c1), Some(c7)) = (c1, c7) {
        let read = |c: &Path| std::fs::read(c.join("trainable.safetensors")).unwrap();
        assert!(read(&c1) == read(&c7));
    }
}
