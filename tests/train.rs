//! `graft train` / `graft eval` end to end on CPU, on tiny models (a 3-D ViT of width
//! 32, depth 2, heads 2) and the synthetic datasets of `graft data synth`.
//!
//! One fixture, built once: the datasets, the specs, a backbone pretrained here (the
//! loss must fall), an adapter run on that frozen backbone and a run with an optional
//! audio modality. Every other test reads those or trains a few steps of its own.

#![cfg(feature = "torch")]

mod common;

use graft::backend::torch::convert::to_tensor;
use graft::backend::torch::train::{Model, TorchTrainer};
use graft::commands::train::checkpoint::{read_metadata, Identity, TrainableFile};
use graft::commands::train::spec::Spec;
use graft::commands::train::{self as trainer, TrainArgs, Trained};
use graft::safetensors::SafeFile;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const VIT: &str = "vit3d(dim: 32, depth: 2, heads: 2, classes: 0, frames: 8, tubelet: 2, patch: 8, image: 32)";

/// An adapter spec on the pretrained backbone; `bottleneck` and `scale` vary.
fn adapter_spec(model: &str, bottleneck: u32, scale: &str) -> String {
    format!(
        r#"use std.vit
use std.adapters

model {model} {{
  input video: f32[B, 3, 8, 32, 32]
  backbone video_vit = {VIT}(video)
      weights "runs/pre/trainable.safetensors" frozen
  adapter mhva = multi_head_adapter(dim: 32, heads: 2, bottleneck: {bottleneck}, scale: {scale})
      at video_vit.blocks[*].mlp parallel
  head cls = linear(32, 4)(mean_tokens(video_vit.norm))
  output logits = cls
  train mhva, cls
}}
"#
    )
}

fn specs() -> Vec<(&'static str, String)> {
    vec![
        (
            "pre.graft",
            format!(
                r#"use std.vit

model pre {{
  input video: f32[B, 3, 8, 32, 32]
  encoder video_vit = {VIT}(video)
  head cls = linear(32, 4)(video_vit)
  output logits = cls
  train video_vit, cls
}}
"#
            ),
        ),
        ("ad.graft", adapter_spec("ad", 8, "1.0")),
        ("ad_wide.graft", adapter_spec("ad_wide", 16, "1.0")),
        ("ad_scaled.graft", adapter_spec("ad_scaled", 8, "0.5")),
        (
            "lora.graft",
            format!(
                r#"use std.vit
use std.adapters

model lo {{
  input video: f32[B, 3, 8, 32, 32]
  backbone video_vit = {VIT}(video)
      weights "runs/pre/trainable.safetensors" frozen
  adapter lora_all = lora(rank: 4, alpha: 8.0) at video_vit.blocks[*].{{attn.qkv, mlp.fc1}} parallel
  head cls = linear(32, 4)(mean_tokens(video_vit.norm))
  output logits = cls
  train lora_all, cls
}}
"#
            ),
        ),
        (
            "plus.graft",
            r#"use "ad.graft"
use std.adapters

model plus extends ad {
  weights mhva "runs/ad/trainable.safetensors" frozen
  weights cls  "runs/ad/trainable.safetensors" frozen
  adapter extra = bottleneck(dim: 32, bottleneck: 8) at video_vit.blocks[*].attn after
  train extra
}
"#
            .to_string(),
        ),
        (
            "mm.graft",
            format!(
                r#"use std.vit
use std.adapters

model mm {{
  input video: f32[B, 3, 8, 32, 32]
  input audio: f32[B, 1, 32, 64] optional
  backbone video_vit = {VIT}(video)
      weights "runs/pre/trainable.safetensors" frozen
  encoder audio_enc = vit(dim: 32, depth: 1, heads: 2, classes: 0, patch: 8, height: 32, width: 64, channels: 1)(audio)
  adapter xa = cross_attention_adapter(context: audio_enc.norm, dim: 32, context_dim: 32, heads: 2, bottleneck: 16)
      at video_vit.blocks[1].attn after
  head cls = linear(32, 8)(mean_tokens(video_vit.norm))
  output logits = cls
  train xa, audio_enc, cls
}}
"#
            ),
        ),
        (
            "pose.graft",
            r#"use std.encoders

model needs_pose {
  input pose: f32[B, 8, 5, 2]
  encoder enc = token_mlp(features: 10, dim: 16, depth: 1, frames: 8)(pose)
  head cls = linear(16, 4)(mean_tokens(enc))
  output logits = cls
  train enc, cls
}
"#
            .to_string(),
        ),
    ]
}

struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn s(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }
}

fn graft_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).current_dir(dir).output().expect("run graft")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn ok_in(dir: &Path, args: &[&str]) -> String {
    let o = graft_in(dir, args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "graft {} failed:\n{out}\n{err}", args.join(" "));
    out
}

fn fx() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = common::scratch::process_dir("train");
        for (name, body) in specs() {
            std::fs::write(dir.join(name), body).unwrap();
        }
        let synth = |args: &[&str]| ok_in(&dir, &[&["data", "synth"], args].concat());
        synth(&["--task", "pretrain", "--n", "256", "--shard-size", "64", "--out", "data/pre"]);
        synth(&["--task", "pretrain", "--n", "64", "--seed", "1", "--out", "data/preval"]);
        synth(&["--task", "multimodal", "--n", "128", "--shard-size", "32", "--drop", "audio:0.5", "--out", "data/mm"]);
        let cpu = ["--device", "cpu"];
        let pre =
            ["train", "pre.graft", "--data", "data/pre", "--val", "data/preval", "--epochs", "8", "--batch", "16"];
        let pre_rest = ["--lr", "5e-3", "--warmup", "5", "--checkpoint-every", "64", "--out", "runs/pre"];
        ok_in(&dir, &[&pre[..], &pre_rest, &cpu].concat());
        let ad = [
            "train", "ad.graft", "--data", "data/pre", "--steps", "8", "--batch", "16", "--lr", "1e-2", "--out",
            "runs/ad",
        ];
        ok_in(&dir, &[&ad[..], &cpu].concat());
        let mm = [
            "train", "mm.graft", "--data", "data/mm", "--steps", "8", "--batch", "16", "--lr", "3e-3", "--out",
            "runs/mm",
        ];
        ok_in(&dir, &[&mm[..], &cpu].concat());
        Fixture { dir }
    })
}

fn graft(args: &[&str]) -> Output {
    graft_in(&fx().dir, args)
}

fn ok(args: &[&str]) -> String {
    ok_in(&fx().dir, args)
}

/// `graft …` must fail with status 1 and no panic; its stderr.
fn fails(args: &[&str]) -> String {
    let o = graft(args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "graft {} should fail:\n{out}\n{err}", args.join(" "));
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn records(run: &str) -> Vec<serde_json::Value> {
    let t = std::fs::read_to_string(fx().path(run).join("metrics.jsonl")).unwrap();
    t.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn train_losses(run: &str) -> Vec<f64> {
    records(run).iter().filter(|r| r["kind"] == "train").map(|r| r["loss"].as_f64().unwrap()).collect()
}

/// Two runs of `steps` steps are the same to the bit: every step's loss and every
/// trainable tensor of the last checkpoint.
fn assert_same_run(a: &str, b: &str, steps: usize) {
    let bits = |v: &[f64]| v.iter().map(|&x| (x as f32).to_bits()).collect::<Vec<_>>();
    let (la, lb) = (train_losses(a), train_losses(b));
    assert_eq!(la.len(), steps);
    assert_eq!(bits(&la), bits(&lb), "losses {la:?} vs {lb:?}");
    let file = |r: &str| SafeFile::open(&fx().path(r).join("trainable.safetensors")).unwrap();
    let (fa, fb) = (file(a), file(b));
    assert_eq!(fa.entries().keys().collect::<Vec<_>>(), fb.entries().keys().collect::<Vec<_>>());
    for k in fa.entries().keys() {
        assert!(tensor(&fa, k).equal(&tensor(&fb, k)), "{k}");
    }
}

/// The directory of a run's newest complete checkpoint.
fn ckpt_dir(run: &Path) -> PathBuf {
    graft::commands::train::rundir::latest(run).unwrap().expect("a checkpoint")
}

/// Train in this process (absolute paths).
fn train_here(words: &[String]) -> Trained<TorchTrainer> {
    let args = TrainArgs::parse(words.iter().cloned()).unwrap();
    trainer::run(&args).unwrap().expect("spec compiles")
}

fn words(f: &Fixture, spec: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let mut w =
        vec![f.s(spec), "--data".into(), f.s("data/pre"), "--out".into(), f.s(out), "--device".into(), "cpu".into()];
    w.extend(extra.iter().map(|s| s.to_string()));
    w
}

fn initial(f: &Fixture, spec: &str) -> Model {
    let spec = Spec::compile(&f.path(spec)).unwrap();
    let (values, _) = spec.materialise(&[], &[], 0, None).unwrap();
    Model::new(&spec.plan, spec.output, values, tch::Device::Cpu).unwrap()
}

#[test]
fn pretraining_lowers_the_loss_and_writes_a_complete_run_dir() {
    let f = fx();
    let losses = train_losses("runs/pre");
    assert_eq!(losses.len(), 128);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&losses[..16]), mean(&losses[112..]));
    assert!(last < first - 0.1, "loss {first:.4} → {last:.4}");
    let vals: Vec<_> = records("runs/pre").into_iter().filter(|r| r["kind"] == "val").collect();
    assert_eq!(vals.len(), 2, "at steps 64 and 128");
    assert!(vals.iter().all(|v| (0.0..=1.0).contains(&v["accuracy"].as_f64().unwrap())));
    let run = f.path("runs/pre");
    for file in ["trainable.safetensors", "metrics.jsonl", "loss.svg"] {
        assert!(run.join(file).is_file(), "{file}");
    }
    // The newest checkpoint: one directory, the only one.
    let newest = ckpt_dir(&run);
    assert_eq!(newest.file_name().unwrap(), "checkpoint-0000000128");
    for file in ["trainable.safetensors", "optimizer.safetensors", "state.json"] {
        assert!(newest.join(file).is_file(), "{file}");
    }
    let dirs = std::fs::read_dir(&run).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count();
    assert_eq!(dirs, 1, "older checkpoints are removed");
    let svg = std::fs::read_to_string(run.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{svg}");
    // Full graph paths, exactly the trainable set, and the metadata.
    let ckpt = TrainableFile::open(&run).unwrap();
    let spec = Spec::compile(&f.path("pre.graft")).unwrap();
    let want: BTreeSet<String> = spec.trainable_shapes().into_iter().map(|(n, _)| n).collect();
    let have: BTreeSet<String> = ckpt.file.entries().keys().cloned().collect();
    assert_eq!(have, want);
    assert!(have.contains("video_vit.blocks.0.mlp.fc1.weight") && have.contains("cls.weight"));
    assert_eq!(ckpt.step(), Some(128));
    assert_eq!(ckpt.meta["format"], "graft.trainable.v1");
    assert_eq!(ckpt.meta["graph_fingerprint"], Identity::of(&spec.compiled).fingerprint);
    assert!(ckpt.meta["params"].contains(r#"["video_vit.blocks.0.mlp.fc1.weight",[128,32]]"#));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(newest.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 128);
    assert_eq!(state["epoch"], 8);
    assert_eq!(state["graph_fingerprint"], ckpt.meta["graph_fingerprint"].as_str());
}

#[test]
fn frozen_parameters_stay_bit_identical_and_trainable_ones_change() {
    let f = fx();
    let t = train_here(&words(f, "ad.graft", "runs/frozen", &["--steps", "4", "--batch", "16", "--lr", "1e-2"]));
    let backbone = SafeFile::open(&f.path("runs/pre/trainable.safetensors")).unwrap();
    let init = initial(f, "ad.graft");
    let (mut frozen, mut trained) = (0, BTreeSet::new());
    for ((p, v), (_, v0)) in t.trainer.model().params().zip(init.params()) {
        if p.trainable {
            assert!(v.requires_grad(), "{}", p.path);
            assert!(!v.equal(v0), "trainable `{}` did not change", p.path);
            trained.insert(p.path.clone());
        } else {
            assert!(p.path.starts_with("video_vit."), "{}", p.path);
            assert!(!v.requires_grad(), "{}", p.path);
            assert!(v.equal(&tensor(&backbone, &p.path)), "frozen `{}` changed", p.path);
            frozen += 1;
        }
    }
    assert_eq!(frozen, 29, "every backbone tensor checked");
    assert!(trained.iter().all(|p| p.starts_with("mhva.") || p.starts_with("cls.")), "{trained:?}");
    // The checkpoint holds exactly the trainable tensors, as trained.
    let ckpt = SafeFile::open(&t.dir.join("trainable.safetensors")).unwrap();
    assert_eq!(ckpt.entries().keys().cloned().collect::<BTreeSet<_>>(), trained);
    for (p, v) in t.trainer.model().params().filter(|(p, _)| p.trainable) {
        assert!(v.equal(&tensor(&ckpt, &p.path)), "{}", p.path);
    }
}

#[test]
fn a_resumed_run_continues_exactly() {
    let common = [
        "train",
        "ad.graft",
        "--data",
        "data/pre",
        "--batch",
        "32",
        "--accumulate",
        "2",
        "--lr",
        "3e-3",
        "--schedule",
        "constant",
        "--warmup",
        "2",
        "--clip",
        "1.0",
        "--lr-for",
        "mhva.*=1e-2",
        "--checkpoint-every",
        "2",
        "--device",
        "cpu",
    ];
    // 8 batches per epoch, 2 per step: the resume point (step 3) is mid-epoch and
    // the run crosses into epoch 1.
    ok(&[&common[..], &["--steps", "6", "--out", "runs/whole"]].concat());
    ok(&[&common[..], &["--steps", "3", "--out", "runs/halves"]].concat());
    let err =
        fails(&["train", "ad.graft", "--data", "data/pre", "--resume", "runs/halves", "--steps", "6", "--batch", "16"]);
    assert!(err.contains("--batch 16 differs from the resumed run's 32"), "{err}");
    ok(&["train", "ad.graft", "--data", "data/pre", "--resume", "runs/halves", "--steps", "6", "--device", "cpu"]);
    let (whole, halves) = (train_losses("runs/whole"), train_losses("runs/halves"));
    assert_eq!(whole.len(), 6);
    let bits = |v: &[f64]| v.iter().map(|&x| (x as f32).to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&whole), bits(&halves), "losses {whole:?} vs {halves:?}");
    for file in ["trainable.safetensors", "optimizer.safetensors"] {
        let (a, b) = (
            SafeFile::open(&ckpt_dir(&fx().path("runs/whole")).join(file)).unwrap(),
            SafeFile::open(&ckpt_dir(&fx().path("runs/halves")).join(file)).unwrap(),
        );
        assert_eq!(a.entries().keys().collect::<Vec<_>>(), b.entries().keys().collect::<Vec<_>>());
        for k in a.entries().keys() {
            assert!(tensor(&a, k).equal(&tensor(&b, k)), "{file}: {k}");
        }
    }
    let state = |r: &str| std::fs::read_to_string(ckpt_dir(&fx().path(r)).join("state.json")).unwrap();
    assert_eq!(state("runs/whole"), state("runs/halves"));
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let err = fails(&[
        "train",
        "ad.graft",
        "--data",
        "data/pre",
        "--steps",
        "30",
        "--batch",
        "16",
        "--lr",
        "1e4",
        "--schedule",
        "constant",
        "--checkpoint-every",
        "2",
        "--device",
        "cpu",
        "--out",
        "runs/nan",
    ]);
    assert!(err.contains("training stopped:"), "{err}");
    assert!(err.contains("the last good checkpoint (step"), "{err}");
    let run = fx().path("runs/nan");
    let ckpt = TrainableFile::open(&run).unwrap();
    let step = ckpt.step().unwrap();
    assert!(step >= 2, "{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt_dir(&run).join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], step);
    assert_eq!(read_metadata(&ckpt_dir(&run).join("optimizer.safetensors")).unwrap()["step"], step.to_string());
    for k in ckpt.file.entries().keys() {
        let t = tensor(&ckpt.file, k);
        assert_eq!(t.isfinite().all().int64_value(&[]), 1, "{k} is not finite in the kept checkpoint");
    }
    let last = records("runs/nan").pop().unwrap();
    assert_eq!(last["kind"], "stop", "{last}");
    assert!(last["step"].as_u64().unwrap() > step);
}

#[test]
fn a_checkpoint_of_another_spec_gives_a_readable_diff() {
    // Different shapes: eval and resume both refuse with the names and shapes.
    let line = "mhva.video_vit.blocks.0.mlp.down.weight: checkpoint f32[16, 16], spec f32[32, 16]";
    let err = fails(&["eval", "ad_wide.graft", "--data", "data/pre", "--run", "runs/ad", "--device", "cpu"]);
    assert!(err.contains("does not fit the trainable parameters of model `ad_wide`"), "{err}");
    assert!(err.contains("shape differs (") && err.contains(line), "{err}");
    assert!(err.contains("trained from model `ad`"), "{err}");
    let err = fails(&[
        "train",
        "ad_wide.graft",
        "--data",
        "data/pre",
        "--resume",
        "runs/ad",
        "--steps",
        "9",
        "--out",
        "runs/wide",
    ]);
    assert!(err.contains(line), "{err}");
    // Same names and shapes, different graph: eval notes it; an exact resume refuses.
    let o = graft(&["eval", "ad_scaled.graft", "--data", "data/pre", "--run", "runs/ad", "--device", "cpu"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("was trained from a different graph"), "{err}");
    let err = fails(&[
        "train",
        "ad_scaled.graft",
        "--data",
        "data/pre",
        "--resume",
        "runs/ad",
        "--steps",
        "9",
        "--out",
        "runs/scaled",
    ]);
    assert!(err.contains("an exact resume needs the same spec"), "{err}");
    // What changed: the adapters' scale, 1.0 in the run, 0.5 in this spec.
    assert!(err.contains("in the run's graph only") && err.contains("in this spec's graph only"), "{err}");
    assert!(err.contains("0.5"), "{err}");
}

#[test]
fn batches_without_an_optional_modality_train() {
    let recs: Vec<_> = records("runs/mm").into_iter().filter(|r| r["kind"] == "train").collect();
    assert_eq!(recs.len(), 8);
    let lacking = recs.iter().filter(|r| r["missing"] == serde_json::json!(["audio"])).count();
    assert!(lacking > 0 && lacking < 8, "steps with and without audio: {recs:?}");
    assert!(recs.iter().all(|r| r["loss"].as_f64().unwrap().is_finite()));
    let ckpt = TrainableFile::open(&fx().path("runs/mm")).unwrap();
    let gate = tensor(&ckpt.file, "xa.video_vit.blocks.1.attn.gate");
    assert_ne!(gate.double_value(&[0]), 0.0, "the cross-attention adapter trained");
    assert!(ckpt.file.entries().keys().any(|k| k.starts_with("audio_enc.")));
}

#[test]
fn lr_for_gives_a_group_its_own_rate() {
    let f = fx();
    let extra = ["--steps", "3", "--batch", "16", "--lr", "0", "--weight-decay", "0", "--lr-for", "mhva.*=1e-2"];
    let t = train_here(&words(f, "ad.graft", "runs/lrfor", &extra));
    let init = initial(f, "ad.graft");
    for ((p, v), (_, v0)) in t.trainer.model().params().zip(init.params()) {
        if p.path.starts_with("cls.") {
            assert!(v.equal(v0), "`{}` has lr 0 and must not move", p.path);
        }
        if p.path.ends_with("mlp.up.weight") {
            assert!(!v.equal(v0), "`{}` has its own lr and must move", p.path);
        }
    }
    let run = |pattern: &str| {
        let w = words(
            f,
            "ad.graft",
            "runs/lrfor-bad",
            &["--steps", "1", "--batch", "16", "--lr", "1e-3", "--lr-for", pattern],
        );
        trainer::run(&TrainArgs::parse(w).unwrap()).err().expect("refused").to_string()
    };
    assert!(run("video_vit.*=1e-2").contains("matches only frozen parameters"));
    assert!(run("nothing.*=1e-2").contains("matches no parameter"));
}

#[test]
fn eval_reports_accuracy_confusions_and_runs_without_a_modality() {
    let json = |extra: &[&str]| -> serde_json::Value {
        let out = ok(&[
            &["eval", "mm.graft", "--data", "data/mm", "--run", "runs/mm", "--json", "--device", "cpu"][..],
            extra,
        ]
        .concat());
        serde_json::from_str(&out).unwrap()
    };
    let r = json(&[]);
    assert_eq!(r["samples"], 128);
    let correct = r["correct"].as_u64().unwrap();
    assert_eq!(r["accuracy"].as_f64().unwrap(), correct as f64 / 128.0);
    assert_eq!(r["per_class"].as_array().unwrap().len(), 8);
    let total: u64 = r["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 128);
    assert!(r["loss"].as_f64().unwrap().is_finite());
    let without = json(&["--without", "audio"]);
    assert_eq!(without["without"], serde_json::json!(["audio"]));
    assert_eq!(without["samples"], 128);
    let t = ok(&["eval", "ad.graft", "--data", "data/pre", "--run", "runs/ad", "--device", "cpu"]);
    for part in ["accuracy", "per class:", "square", "(true → predicted)"] {
        assert!(t.contains(part), "missing {part:?} in:\n{t}");
    }
    let err = fails(&["eval", "mm.graft", "--data", "data/mm", "--without", "video"]);
    assert!(err.contains("`video` is not optional"), "{err}");
    let err = fails(&["eval", "mm.graft", "--data", "data/mm", "--without", "pose"]);
    assert!(err.contains("the model has no input `pose`"), "{err}");
    // Several views need stored videos or images: plain tensors would give K equal views.
    let err = fails(&["eval", "mm.graft", "--data", "data/mm", "--clips", "2"]);
    assert!(err.contains("--clips 2") && err.contains("no video input stored as frames"), "{err}");
    let err = fails(&["eval", "mm.graft", "--data", "data/mm", "--crops", "3"]);
    assert!(err.contains("--crops 3") && err.contains("graft data import"), "{err}");
}

#[test]
fn an_incremental_plugin_keeps_the_earlier_adapter_bit_identical() {
    let f = fx();
    let t = train_here(&words(f, "plus.graft", "runs/plus", &["--steps", "4", "--batch", "16", "--lr", "1e-2"]));
    let earlier = SafeFile::open(&f.path("runs/ad/trainable.safetensors")).unwrap();
    let backbone = SafeFile::open(&f.path("runs/pre/trainable.safetensors")).unwrap();
    let mut checked = 0;
    for (p, v) in t.trainer.model().params() {
        if p.path.starts_with("mhva.") || p.path.starts_with("cls.") {
            assert!(!p.trainable, "{}", p.path);
            assert!(v.equal(&tensor(&earlier, &p.path)), "plugin `{}` changed", p.path);
            checked += 1;
        } else if p.path.starts_with("video_vit.") {
            assert!(v.equal(&tensor(&backbone, &p.path)), "backbone `{}` changed", p.path);
        } else {
            assert!(p.trainable && p.path.starts_with("extra."), "{}", p.path);
        }
    }
    assert_eq!(checked, 10);
    let ckpt = SafeFile::open(&t.dir.join("trainable.safetensors")).unwrap();
    assert!(ckpt.entries().keys().all(|k| k.starts_with("extra.")), "{:?}", ckpt.entries().keys());
    let up = tensor(&ckpt, "extra.video_vit.blocks.0.attn.up.weight");
    assert!(up.abs().sum(tch::Kind::Double).double_value(&[]) > 0.0, "the new adapter trained from zeros");
}

#[test]
fn fuse_loads_a_run() {
    // The run's own files and the weights are inputs, never outputs.
    for out in ["runs/ad/trainable.safetensors", "runs/pre/trainable.safetensors"] {
        let err = fails(&["fuse", "ad.graft", "--run", "runs/ad", "--out", out]);
        assert!(err.contains("would overwrite an input"), "{err}");
    }
    ok(&["fuse", "ad.graft", "--run", "runs/ad", "--out", "runs/fused.safetensors"]);
    let fused = SafeFile::open(&fx().path("runs/fused.safetensors")).unwrap();
    let run = SafeFile::open(&fx().path("runs/ad/trainable.safetensors")).unwrap();
    for k in ["mhva.video_vit.blocks.0.mlp.up.weight", "cls.weight"] {
        assert!(tensor(&fused, k).equal(&tensor(&run, k)), "{k}");
    }
}

#[test]
fn the_dataset_is_checked_against_the_model_first() {
    let err = fails(&[
        "train",
        "pose.graft",
        "--data",
        "data/pre",
        "--steps",
        "1",
        "--batch",
        "4",
        "--lr",
        "1e-3",
        "--out",
        "runs/x",
    ]);
    assert!(
        err.contains("does not fit model `needs_pose`") && err.contains("model input `pose` is not in the dataset"),
        "{err}"
    );
    let err = fails(&[
        "train",
        "pre.graft",
        "--data",
        "data/mm",
        "--steps",
        "1",
        "--batch",
        "4",
        "--lr",
        "1e-3",
        "--out",
        "runs/x",
    ]);
    assert!(err.contains("has 8 classes") && err.contains("output `logits` has 4"), "{err}");
    let err = fails(&[
        "train", "ad.graft", "--data", "data/pre", "--steps", "1", "--batch", "4", "--lr", "1e-3", "--out", "runs/ad",
    ]);
    assert!(err.contains("already holds a run"), "{err}");
    assert!(!fx().path("runs/x").exists(), "nothing written for a run that never started");
    // A declared normalisation that the dataset's recorded transform does not have.
    let pre = std::fs::read_to_string(fx().path("pre.graft")).unwrap();
    let clip = pre.replace("input video: f32[B, 3, 8, 32, 32]", "input video: f32[B, 3, 8, 32, 32] normalized clip");
    std::fs::write(fx().path("pre_clip.graft"), clip).unwrap();
    ok(&["data", "synth", "--task", "pretrain", "--format", "files", "--n", "8", "--out", "data/normf"]);
    let import = ["data", "import", "video", "data/normf", "--out", "data/norm", "--frames", "8"];
    ok(&[&import[..], &["--sampling-rate", "1", "--image-size", "32", "--crop-pct", "1"]].concat());
    let args = ["train", "pre_clip.graft", "--data", "data/norm", "--steps", "1", "--batch", "4", "--lr", "1e-3"];
    let err = fails(&[&args[..], &["--out", "runs/x"]].concat());
    assert!(err.contains("pre_clip.graft:4:3 declares `normalized clip") && err.contains("--mean clip"), "{err}");
    assert!(!fx().path("runs/x").exists(), "nothing written for a run that never started");
}

#[test]
fn any_number_of_reader_threads_trains_the_same_run() {
    // uint8 frames with the training augmentation (random resized crops, flips): every
    // sample draws from its own stream, so the batches cannot depend on which thread
    // assembled them.
    ok(&["data", "synth", "--task", "pretrain", "--format", "files", "--n", "24", "--seed", "3", "--out", "data/u8f"]);
    let import = ["data", "import", "video", "data/u8f", "--out", "data/u8", "--frames", "8", "--sampling-rate", "1"];
    ok(&[&import[..], &["--image-size", "32", "--crop-pct", "1", "--shard-size", "8"]].concat());
    let run = |workers: &str| {
        let out = format!("runs/workers{workers}");
        let args = ["train", "ad.graft", "--data", "data/u8", "--steps", "4", "--batch", "4", "--accumulate", "2"];
        let rest = ["--lr", "1e-2", "--checkpoint-every", "4", "--device", "cpu", "--workers", workers, "--out", &out];
        ok(&[&args[..], &rest].concat());
        out
    };
    // 6 batches per epoch, 8 taken: the stream crosses into the second epoch.
    let (one, three) = (run("1"), run("3"));
    assert_same_run(&one, &three, 4);
    let eval = |w: &str| {
        ok(&["eval", "ad.graft", "--data", "data/u8", "--run", &one, "--json", "--device", "cpu", "--workers", w])
    };
    assert_eq!(eval("1"), eval("3"), "eval is the same for any number of reader threads");
    // Multi-view testing from the command line: 2 clips × 3 crops, softmax averaged.
    // These 8-frame 32² videos at 8 frames and crop-pct 1 have one window and one crop,
    // so the six views are the central one and score what it scores.
    let views = ok(&[
        "eval", "ad.graft", "--data", "data/u8", "--run", &one, "--json", "--device", "cpu", "--clips", "2", "--crops",
        "3",
    ]);
    let (v, c): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&views).unwrap(), serde_json::from_str(&eval("1")).unwrap());
    assert_eq!((v["clips"].as_u64(), v["crops"].as_u64(), c["clips"].as_u64()), (Some(2), Some(3), Some(1)));
    assert_eq!(v["samples"], c["samples"]);
    assert_eq!(v["correct"], c["correct"]);
    let (lv, lc) = (v["loss"].as_f64().unwrap(), c["loss"].as_f64().unwrap());
    assert!((lv - lc).abs() <= 1e-9 * lc.abs().max(1.0), "six equal views: {lv} vs {lc}");
    for bad in ["0", "100000"] {
        let o = graft(
            &["train", "ad.graft", "--data", "data/u8", "--steps", "1", "--batch", "4", "--lr", "1e-2"]
                .iter()
                .copied()
                .chain(["--workers", bad, "--out", "runs/workers_bad"])
                .collect::<Vec<_>>(),
        );
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "--workers {bad}: {err}");
        assert!(err.contains("--workers") && err.contains("1..=256"), "{err}");
    }
}

#[test]
fn a_corrupt_sample_ends_the_feed_with_its_error_and_the_readers_stop() {
    use graft::commands::train::feed::Feed;
    let f = fx();
    let root = f.path("data/pngs");
    for (c, class) in ["a", "b"].iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..4u8 {
            let rgb: Vec<u8> =
                (0..8 * 8 * 3).map(|p| (p as u8).wrapping_mul(i + 1).wrapping_add(c as u8 * 90)).collect();
            let mut png = Vec::new();
            let mut w = std::io::Cursor::new(&mut png);
            image::write_buffer_with_format(
                &mut w,
                &rgb,
                8,
                8,
                image::ExtendedColorType::Rgb8,
                image::ImageFormat::Png,
            )
            .unwrap();
            std::fs::write(root.join(class).join(format!("{i}.png")), png).unwrap();
        }
    }
    let ds = f.path("data/pngs_enc");
    ok(&["data", "import", "images", "data/pngs", "--out", "data/pngs_enc", "--store", "encoded", "--image-size", "8"]);
    // Break one stored file's signature: it still passes the index checks at open.
    let shard = ds.join("shard-00000.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = bytes.windows(4).position(|w| w == b"\x89PNG").expect("a stored PNG");
    bytes[at..at + 4].copy_from_slice(b"XXXX");
    std::fs::write(&shard, bytes).unwrap();
    let data = graft::data::Dataset::open(&ds).unwrap().with_workers(3);
    let feed = Feed::start(&data, 2, 0, false, 0, 0);
    let err = (0..8).find_map(|_| feed.next().err()).expect("the corrupt sample is an error");
    let msg = err.to_string();
    assert!(msg.contains("pngs_enc"), "{msg}");
    assert!(msg.contains("(encoded)"), "{msg}");
    drop(feed); // joins every reader thread: a hang here fails the test by timeout
}

/// A tensor of a safetensors file, as a LibTorch tensor.
fn tensor(f: &SafeFile, key: &str) -> tch::Tensor {
    to_tensor(&f.tensor(key).unwrap()).unwrap()
}

#[test]
fn pixels_normalised_on_the_device_train_the_same_run() {
    // `normalized imagenet` over uint8 frames: with `--normalize-on device` the reader
    // hands over raw pixels and the model normalises them where it runs; with `host`
    // the reader normalises them. The model receives the same bits, so the run is the
    // same to the bit.
    ok(&["data", "synth", "--task", "pretrain", "--format", "files", "--n", "16", "--seed", "4", "--out", "data/rawf"]);
    let import = ["data", "import", "video", "data/rawf", "--out", "data/raw", "--frames", "8", "--sampling-rate", "1"];
    ok(&[&import[..], &["--image-size", "32", "--crop-pct", "1"]].concat());
    let plain = adapter_spec("ad_norm", 8, "1.0");
    let spec = plain.replace("f32[B, 3, 8, 32, 32]", "f32[B, 3, 8, 32, 32] normalized imagenet");
    assert_ne!(spec, plain);
    std::fs::write(fx().path("ad_norm.graft"), spec).unwrap();
    let run = |on: &str| {
        let out = format!("runs/norm_{on}");
        let args = ["train", "ad_norm.graft", "--data", "data/raw", "--steps", "4", "--batch", "4", "--lr", "1e-2"];
        let rest = ["--checkpoint-every", "4", "--device", "cpu", "--normalize-on", on, "--out", &out];
        let o = graft(&[&args[..], &rest].concat());
        let (text, err) = text(&o);
        assert!(o.status.success(), "{text}{err}");
        (out, err)
    };
    let ((device, said), (host, host_said)) = (run("device"), run("host"));
    assert!(said.contains("input `video` reads raw u8 pixels"), "{said}");
    assert!(!host_said.contains("raw u8"), "{host_said}");
    // `auto` on the CPU: the reader normalises, beside the step.
    let (_, auto_said) = run("auto");
    assert!(!auto_said.contains("raw u8"), "{auto_said}");
    assert_same_run(&device, &host, 4);
    let eval = |on: &str| {
        ok(&[
            "eval",
            "ad_norm.graft",
            "--data",
            "data/raw",
            "--run",
            &device,
            "--json",
            "--device",
            "cpu",
            "--normalize-on",
            on,
        ])
    };
    assert_eq!(eval("device"), eval("host"), "evaluation reads either form to the same result");
}

/// Every file under `dir` (recursively, sorted) with its bytes: a directory listing
/// that any change shows in.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_dir() {
                out.push((name + "/", Vec::new()));
                todo.push(p);
            } else {
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// A run of `spec` in `out` trained to step 2, then resumed to step 4 (a checkpoint
/// every 2 steps), with step 2's checkpoint put back beside step 4's: what a trainer
/// killed after publishing step 4 and before removing step 2 leaves. Returns the run
/// directory.
fn two_checkpoints(spec: &str, out: &str, flags: &[&str]) -> PathBuf {
    let run = fx().path(out);
    let _ = std::fs::remove_dir_all(&run);
    ok(&[&["train", spec, "--data", "data/pre", "--steps", "2", "--out", out][..], flags].concat());
    let kept = fx().path(&format!("{out}.step2"));
    let _ = std::fs::remove_dir_all(&kept);
    copy_dir(&run.join("checkpoint-0000000002"), &kept);
    ok(&["train", spec, "--data", "data/pre", "--resume", out, "--steps", "4", "--device", "cpu"]);
    copy_dir(&kept, &run.join("checkpoint-0000000002"));
    assert_eq!(ckpt_dir(&run), run.join("checkpoint-0000000004"));
    run
}

/// Truncate a file to half its length, in a new file (its hard links keep the bytes).
fn tear(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

/// `args` as `&str`s.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn eval_fuse_and_export_prove_the_runs_newest_checkpoint_and_change_nothing() {
    let flags = ["--batch", "16", "--lr", "1e-2", "--checkpoint-every", "2", "--device", "cpu"];
    let run = two_checkpoints("lora.graft", "runs/evcheck", &flags);
    let (four, two) = (run.join("checkpoint-0000000004"), run.join("checkpoint-0000000002"));
    let (fused, peft) = (fx().path("runs/evcheck.fused.safetensors"), fx().path("runs/evcheck.peft"));
    // The three commands that read a run with `--run`.
    let words = |cmd: &str, r: &Path| {
        let (r, f, p) = (r.display().to_string(), fused.display().to_string(), peft.display().to_string());
        let w = match cmd {
            "eval" => vec!["eval", "lora.graft", "--data", "data/pre", "--run", &r, "--json", "--device", "cpu"],
            "fuse" => vec!["fuse", "lora.graft", "--run", &r, "--out", &f],
            _ => vec!["export", "peft", "lora.graft", "--run", &r, "--out", &p],
        };
        w.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let clear = || {
        let _ = std::fs::remove_file(&fused);
        let _ = std::fs::remove_dir_all(&peft);
    };
    // What each makes of a run: eval's report without the `run` it names, the fused
    // checkpoint, the PEFT adapter's tensors.
    let outputs = |r: &Path| {
        clear();
        let mut v: serde_json::Value = serde_json::from_str(&ok(&strs(&words("eval", r)))).unwrap();
        v.as_object_mut().unwrap().remove("run");
        ok(&strs(&words("fuse", r)));
        ok(&strs(&words("export", r)));
        let read = |p: &Path| std::fs::read(p).unwrap();
        [v.to_string().into_bytes(), read(&fused), read(&peft.join("adapter_model.safetensors"))]
    };
    // Each command refuses `r` with the same one line and hint, writes nothing and
    // leaves the run byte for byte as it was.
    let refused = |r: &Path| {
        let before = tree(&run);
        let mut errs = Vec::new();
        for cmd in ["eval", "fuse", "export"] {
            clear();
            let err = fails(&strs(&words(cmd, r)));
            assert!(tree(&run) == before, "{cmd} changed {}:\n{err}", run.display());
            assert!(!fused.exists() && !peft.exists(), "{cmd} wrote its output:\n{err}");
            assert_eq!(err.lines().filter(|l| !l.starts_with("  hint:")).count(), 1, "{cmd}: {err}");
            assert!(err.contains("\n  hint: "), "{cmd}: {err}");
            errs.push(err);
        }
        assert!(errs.iter().all(|e| *e == errs[0]), "eval, fuse and export differ:\n{}", errs.concat());
        errs.swap_remove(0)
    };
    // The top-level file is step 4's link: the run reads as its checkpoint does, and
    // as that checkpoint's file given directly.
    let before = tree(&run);
    let whole = outputs(&run);
    assert_eq!(tree(&run), before, "eval, fuse or export changed the run");
    assert_eq!(whole, outputs(&four));
    assert_eq!(whole, outputs(&four.join("trainable.safetensors")));
    let at_two = outputs(&two);
    for (what, (w, t)) in ["eval", "fuse", "export"].iter().zip(whole.iter().zip(&at_two)) {
        assert_ne!(w, t, "{what} reads steps 2 and 4 the same: the test proves nothing");
    }

    // A trainer killed before it linked step 4: the top-level file is step 2's.
    let top = run.join("trainable.safetensors");
    std::fs::remove_file(&top).unwrap();
    std::fs::hard_link(two.join("trainable.safetensors"), &top).unwrap();
    let err = refused(&run);
    assert!(
        err.contains(&format!(
            "{} is from step 2, expected the newest checkpoint's trainable tensors (step 4",
            top.display()
        )),
        "{err}"
    );
    assert!(err.contains(&format!("pass --run {}", four.display())), "{err}");
    // A torn top-level file (a copy where the filesystem has no links).
    std::fs::remove_file(&top).unwrap();
    std::fs::copy(four.join("trainable.safetensors"), &top).unwrap();
    assert_eq!(outputs(&run), whole, "a copy of the same bytes is the checkpoint's file");
    tear(&top);
    let err = refused(&run);
    assert!(err.contains(&format!("{} is not readable (", top.display())) && err.contains("truncated"), "{err}");
    std::fs::remove_file(&top).unwrap();
    let err = refused(&run);
    assert!(err.contains(&format!("{} is missing, expected", top.display())), "{err}");
    std::fs::hard_link(four.join("trainable.safetensors"), &top).unwrap();
    assert_eq!(outputs(&run), whole);

    // The newest checkpoint's trainable file is another step's: its files disagree.
    let own = std::fs::read(four.join("trainable.safetensors")).unwrap();
    std::fs::remove_file(four.join("trainable.safetensors")).unwrap();
    std::fs::copy(two.join("trainable.safetensors"), four.join("trainable.safetensors")).unwrap();
    let err = refused(&run);
    assert!(
        err.contains("its newest checkpoint (step 4) is not good")
            && err.contains("is from step 2 but state.json from step 4"),
        "{err}"
    );
    assert!(err.contains(&format!("pass --run {} to evaluate step 2", two.display())), "{err}");
    // Torn: truncated to half (the top-level link keeps the whole file).
    std::fs::remove_file(four.join("trainable.safetensors")).unwrap();
    std::fs::write(four.join("trainable.safetensors"), &own).unwrap();
    tear(&four.join("trainable.safetensors"));
    let err = refused(&run);
    assert!(err.contains("its newest checkpoint (step 4) is not good") && err.contains("truncated"), "{err}");
    // The hint's checkpoint reads; a checkpoint directory given torn is refused too.
    assert_eq!(outputs(&two), at_two);
    let err = refused(&four);
    assert!(
        err.contains(&four.join("trainable.safetensors").display().to_string()) && err.contains("truncated"),
        "{err}"
    );
    // No good checkpoint at all.
    tear(&two.join("optimizer.safetensors"));
    let err = refused(&run);
    assert!(err.contains("no checkpoint of this run is good"), "{err}");
}

#[test]
fn resume_into_another_dir_skips_a_torn_checkpoint_and_leaves_the_source_as_it_was() {
    let flags =
        ["--batch", "16", "--lr", "1e-2", "--schedule", "constant", "--checkpoint-every", "2", "--device", "cpu"];
    ok(&[&["train", "ad.graft", "--data", "data/pre", "--steps", "6", "--out", "runs/tear_ref"][..], &flags].concat());
    let a = two_checkpoints("ad.graft", "runs/tear_a", &flags);
    // A crash mid-checkpoint: step 4's trainable file torn, temporaries left behind.
    tear(&a.join("checkpoint-0000000004/trainable.safetensors"));
    std::fs::write(a.join(".metrics.jsonl.tmp-999999-0"), "partial").unwrap();
    std::fs::create_dir(a.join(".checkpoint-0000000006.tmp-999999-1")).unwrap();
    std::fs::write(a.join(".checkpoint-0000000006.tmp-999999-1/state.json"), "{").unwrap();
    let before = tree(&a);
    let _ = std::fs::remove_dir_all(fx().path("runs/tear_b"));
    let o = graft(&[
        "train",
        "ad.graft",
        "--data",
        "data/pre",
        "--resume",
        "runs/tear_a",
        "--out",
        "runs/tear_b",
        "--steps",
        "6",
        "--device",
        "cpu",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let took = "note: --resume runs/tear_a: resuming from step 2, its newest good checkpoint (runs/tear_a/checkpoint-0000000002)";
    assert!(err.contains(took), "{err}");
    assert!(err.contains("skipped the newer checkpoint of step 4 (") && err.contains("truncated"), "{err}");
    assert!(err.contains("ignored 2 temporary file(s) an interrupted run left in runs/tear_a"), "{err}");
    assert!(err.contains("runs/tear_a is left as it is (the run continues in runs/tear_b)"), "{err}");
    // A is byte for byte as it was: nothing set aside, removed, re-linked or locked.
    assert!(tree(&a) == before, "--resume runs/tear_a --out runs/tear_b changed runs/tear_a");
    // B continued from step 2 to step 6, the same run as one never interrupted.
    let b = fx().path("runs/tear_b");
    assert_eq!(ckpt_dir(&b), b.join("checkpoint-0000000006"));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt_dir(&b).join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 6);
    let steps: Vec<u64> =
        records("runs/tear_b").iter().filter(|r| r["kind"] == "train").map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    assert_same_run("runs/tear_ref", "runs/tear_b", 6);
}
