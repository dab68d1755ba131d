//! Data-parallel `graft train` on c10d (feature `distributed`), on the CPU with Gloo
//! over 127.0.0.1: ranks are child processes of the graft binary with torchrun's
//! variables set by hand (or torchrun itself), each on a port the OS picked, each
//! killed if it outlives a bound. The model is tiny (a frozen 1-block video ViT of
//! width 16 with a bottleneck adapter, plus an optional pose encoder added to its
//! tokens' mean) so a run takes a second.

#![cfg(feature = "distributed")]

mod common;

use common::compare::{assert_close, assert_close_host, Tol, Values};
use graft::backend::torch::convert::to_tensor;
use graft::backend::torch::dist::reduce::fingerprint;
use graft::backend::torch::train::dist::combined;
use graft::safetensors::SafeFile;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SPEC: &str = r#"use std.vit
use std.adapters
use std.encoders

model dp {
  input video: f32[B, 3, 8, 32, 32]
  input pose: f32[B, 8, 5, 2] optional
  encoder video_vit = vit3d(dim: 16, depth: 1, heads: 2, classes: 0, frames: 8, tubelet: 2, patch: 8, image: 32)(video)
  encoder pose_enc = token_mlp(features: 10, dim: 16, depth: 1, frames: 8)(pose)
  adapter ad = bottleneck(dim: 16, bottleneck: 8) at video_vit.blocks[*].mlp after
  head cls = linear(16, 8)(mean_tokens(video_vit.norm) + mean_tokens(pose_enc))
  output logits = cls
  train ad, pose_enc, cls
}
"#;

/// No child may outlive this.
const BOUND: Duration = Duration::from_secs(90);

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::scratch::process_dir("dist");
        std::fs::write(dir.join("dp.graft"), SPEC).unwrap();
        // Half of the shards lack pose: some global batches run without the modality.
        let o = Command::new(env!("CARGO_BIN_EXE_graft"))
            .args(["data", "synth", "--task", "multimodal", "--n", "64", "--shard-size", "8", "--drop", "pose:0.5"])
            .args(["--out", "data"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        dir
    })
}

/// A port nobody listens on now (the OS's pick; other tests run beside us).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn train_words(out: &str, extra: &[&str]) -> Vec<String> {
    let base = ["train", "dp.graft", "--data", "data", "--lr", "1e-2", "--schedule", "constant", "--device", "cpu"];
    base.iter().chain(["--out", out].iter()).chain(extra).map(|s| s.to_string()).collect()
}

/// Rank `rank` of `world` (or a plain process when `world` is 0).
fn spawn(words: &[String], rank: usize, world: usize, port: u16) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_graft"));
    c.args(words).current_dir(dir()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("OMP_NUM_THREADS", "1");
    for k in ["WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"] {
        c.env_remove(k);
    }
    if world > 0 {
        c.env("WORLD_SIZE", world.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("GLOO_SOCKET_IFNAME", "lo");
    }
    c.spawn().unwrap()
}

/// Wait for a child, killing it (by its PID) past `bound`; its output and the time it took.
fn finish(mut c: Child, bound: Duration) -> (Output, Duration) {
    let t = Instant::now();
    loop {
        if c.try_wait().unwrap().is_some() {
            return (c.wait_with_output().unwrap(), t.elapsed());
        }
        if t.elapsed() > bound {
            let _ = c.kill();
            let o = c.wait_with_output().unwrap();
            panic!("a rank ran past {bound:?} and was killed:\n{}", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    text(o)
}

/// Train `words` on `world` ranks (0: one plain process); every rank's output.
fn run(words: &[String], world: usize) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..world.max(1)).map(|r| spawn(words, r, world, port)).collect();
    children.into_iter().map(|c| finish(c, BOUND).0).collect()
}

fn losses(run: &str) -> Vec<f64> {
    let t = std::fs::read_to_string(dir().join(run).join("metrics.jsonl")).unwrap();
    t.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "train")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

/// The run's trained tensors, by name.
fn host_tensors(run: &str) -> Vec<(String, graft::tensor::HostTensor)> {
    let f = SafeFile::open(&dir().join(run).join("trainable.safetensors")).unwrap();
    f.entries().keys().map(|k| (k.clone(), f.tensor(k).unwrap())).collect()
}

fn tensors(run: &str) -> Vec<(String, tch::Tensor)> {
    host_tensors(run).into_iter().map(|(k, t)| (k, to_tensor(&t).unwrap())).collect()
}

/// A list of numbers (losses) as one named tensor for the comparator.
fn series(name: &str, v: &[f64]) -> Vec<(String, Values)> {
    vec![(name.to_string(), Values::new(&[v.len() as i64], v.to_vec()))]
}

fn fingerprint_of(run: &str) -> String {
    let items: Vec<(String, String)> = tensors(run).iter().map(|(n, t)| (n.clone(), fingerprint(t).unwrap())).collect();
    combined(&items)
}

/// `state.json` of the run's newest complete checkpoint (`RUN_DIR/checkpoint-STEP/`).
fn latest_state(run: &Path) -> Option<serde_json::Value> {
    let ckpt = graft::commands::train::rundir::latest(run).ok()??;
    serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json")).ok()?).ok()
}

fn state(run: &str) -> serde_json::Value {
    latest_state(&dir().join(run)).unwrap_or_else(|| panic!("{run}: no checkpoint"))
}

#[test]
fn two_ranks_of_batch_b_match_one_process_of_batch_2b() {
    let steps = ["--steps", "6", "--accumulate", "2", "--val", "data", "--eval-every", "3"];
    let one = run(&train_words("one", &[&["--batch", "8"], &steps[..]].concat()), 0);
    ok(&one[0]);
    let two = run(&train_words("two", &[&["--batch", "4"], &steps[..]].concat()), 2);
    let (r0, r1) = (ok(&two[0]), ok(&two[1]));
    let (a, b) = (losses("one"), losses("two"));
    assert_eq!(a.len(), 6);
    // Some steps ran without the optional modality, on both sides alike.
    let missing = |run: &str| -> Vec<String> {
        let t = std::fs::read_to_string(dir().join(run).join("metrics.jsonl")).unwrap();
        t.lines()
            .filter(|l| l.contains(r#""kind":"train""#))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["missing"].to_string())
            .collect()
    };
    assert_eq!(missing("one"), missing("two"));
    assert!(missing("one").iter().any(|m| m.contains("pose")), "{:?}", missing("one"));
    assert_close("losses: 2 ranks vs 1 process", &series("loss", &b), &series("loss", &a), Tol::Norm { rel: 1e-6 });
    let tol = Tol::Max { abs: 1e-12, rel: 1e-6 };
    assert_close_host("trained tensors: 2 ranks vs 1 process", &host_tensors("two"), &host_tensors("one"), tol);
    // Rank 1 wrote nothing, but reports the hash of its tensors: rank 0's file's.
    let fp = fingerprint_of("two");
    assert!(r0.contains(&format!("trainable fingerprint {fp} (bitwise identical on every rank)")), "{r0}");
    assert!(r1.contains(&format!("rank 1 of 2: trained to step 6; trainable fingerprint {fp}")), "{r1}");
    let s = state("two");
    assert_eq!(
        (s["world_size"].as_u64(), s["global_batch"].as_u64(), s["hyper"]["batch"].as_u64()),
        (Some(2), Some(8), Some(4))
    );
    let meta = graft::commands::train::checkpoint::read_metadata(&dir().join("two/trainable.safetensors")).unwrap();
    assert_eq!((meta["world_size"].as_str(), meta["global_batch"].as_str()), ("2", "8"));
    // The validation (sharded, reduced) saw every sample once, as one process does.
    let val = |run: &str| -> Vec<serde_json::Value> {
        let t = std::fs::read_to_string(dir().join(run).join("metrics.jsonl")).unwrap();
        t.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["kind"] == "val")
            .collect()
    };
    let (va, vb) = (val("one"), val("two"));
    assert_eq!((va.len(), vb.len()), (2, 2));
    for (x, y) in va.iter().zip(&vb) {
        assert_eq!(x["samples"], y["samples"]);
        assert_eq!(x["accuracy"], y["accuracy"]);
        let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((lx - ly).abs() <= 1e-6 * lx, "{lx} vs {ly}");
    }
}

/// Start two ranks, kill rank 1 (SIGKILL, by PID) once rank 0 has checkpointed
/// `after` steps; rank 0's output and how long it took to exit after the kill.
fn kill_rank_1(out: &str, after: u64) -> (Output, Duration) {
    let words =
        train_words(out, &["--batch", "4", "--steps", "100000", "--checkpoint-every", "4", "--dist-timeout", "20"]);
    let port = free_port();
    let r0 = spawn(&words, 0, 2, port);
    let mut r1 = spawn(&words, 1, 2, port);
    let t = Instant::now();
    let run = dir().join(out);
    while latest_state(&run).and_then(|s| s["step"].as_u64()).unwrap_or(0) < after {
        assert!(t.elapsed() < BOUND, "no checkpoint at step {after} within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    r1.kill().unwrap();
    let _ = r1.wait();
    finish(r0, BOUND)
}

#[test]
fn a_killed_rank_stops_the_other_with_its_name_and_the_run_resumes_exactly() {
    let (o, took) = kill_rank_1("crash", 8);
    let err = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(err.contains("failed on rank 0 of 2: rank 1 stopped"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The checkpoint left behind is whole; resuming with 2 ranks reaches what an
    // uninterrupted run reaches, bit for bit.
    let at = state("crash")["step"].as_u64().unwrap();
    let total = (at + 8).to_string();
    let steps = ["--batch", "4", "--steps", &total, "--checkpoint-every", "4"];
    for o in run(&train_words("straight", &steps), 2) {
        ok(&o);
    }
    let resume = ["train", "dp.graft", "--data", "data", "--device", "cpu", "--resume", "crash", "--steps", &total];
    let resume: Vec<String> = resume.iter().map(|s| s.to_string()).collect();
    for o in run(&resume, 2) {
        ok(&o);
    }
    assert_eq!(state("crash")["step"].as_u64(), Some(at + 8));
    assert_close_host("resumed vs uninterrupted", &host_tensors("crash"), &host_tensors("straight"), Tol::Exact);
    let (a, b) = (losses("straight"), losses("crash"));
    assert_eq!(a.len(), b.len());
    assert_eq!(a[at as usize..], b[at as usize..]);
    // On one process instead: it continues, saying that the data order changes.
    let more = (at + 10).to_string();
    let one = ["train", "dp.graft", "--data", "data", "--device", "cpu", "--resume", "crash", "--out", "crash1"];
    let one: Vec<String> = one.iter().chain(&["--steps", more.as_str()]).map(|s| s.to_string()).collect();
    let err = ok(&run(&one, 0)[0]);
    assert!(err.contains("the run so far used 2 rank(s) (global batch 8); now 1 (global batch 4)"), "{err}");
    assert!(err.contains("the data order changes"), "{err}");
    assert_eq!(state("crash1")["world_size"].as_u64(), Some(1));
}

#[test]
fn a_frozen_rank_times_out_the_collective_and_is_named() {
    let words =
        train_words("frozen", &["--batch", "4", "--steps", "100000", "--checkpoint-every", "4", "--dist-timeout", "5"]);
    let port = free_port();
    let r0 = spawn(&words, 0, 2, port);
    let mut r1 = spawn(&words, 1, 2, port);
    let t = Instant::now();
    while latest_state(&dir().join("frozen")).is_none() {
        assert!(t.elapsed() < BOUND, "no checkpoint within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SIGSTOP: alive but stuck (a hang), by PID.
    let stop = Command::new("kill").args(["-STOP", &r1.id().to_string()]).status().unwrap();
    assert!(stop.success());
    let (o, took) = finish(r0, BOUND);
    r1.kill().unwrap();
    let _ = r1.wait();
    let err = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(err.contains("rank 1 stopped"), "{err}");
    // Gloo words it "Timed out waiting …" or "Application timeout caused pair closure".
    let lower = err.to_lowercase();
    assert!(lower.contains("timed out") || lower.contains("timeout"), "{err}");
}

#[test]
fn a_rank_that_never_starts_is_a_rendezvous_error_naming_it() {
    let words = train_words("alone", &["--batch", "4", "--steps", "2", "--dist-timeout", "5"]);
    let (o, took) = finish(spawn(&words, 0, 2, free_port()), BOUND);
    let err = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(err.contains("rank 1 did not join within 5 s"), "{err}");
    assert!(!dir().join("alone").exists(), "nothing written");
}

#[test]
fn a_listener_that_never_answers_on_master_port_fails_rank_1_within_the_timeout() {
    // Accepts connections (the kernel completes them) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let words = train_words("silent", &["--batch", "4", "--steps", "2", "--dist-timeout", "4"]);
    let (o, took) = finish(spawn(&words, 1, 2, port), BOUND);
    drop(silent);
    let err = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}: {err}");
    assert!(err.contains(&format!("rendezvous store at 127.0.0.1:{port} (MASTER_ADDR:MASTER_PORT")), "{err}");
    assert!(err.contains("within 4 s"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn different_settings_on_two_ranks_are_refused() {
    let port = free_port();
    let a = spawn(&train_words("mismatch", &["--batch", "4", "--steps", "2"]), 0, 2, port);
    let b = spawn(&train_words("mismatch", &["--batch", "4", "--steps", "2", "--seed", "3"]), 1, 2, port);
    for (o, _) in [finish(a, BOUND), finish(b, BOUND)] {
        let err = text(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("rank 1 and rank 0 differ in the run's settings"), "{err}");
    }
}

#[test]
fn torchrun_launches_the_same_command() {
    let torchrun = Path::new(env!("CARGO_MANIFEST_DIR")).join(".graft-env/venv/bin/torchrun");
    assert!(torchrun.exists(), "{} is missing: run scripts/setup.sh", torchrun.display());
    let mut c = Command::new(&torchrun);
    c.args(["--standalone", "--nproc-per-node", "2", "--no-python", env!("CARGO_BIN_EXE_graft")])
        .args(train_words("torchrun", &["--batch", "4", "--steps", "3"]))
        .current_dir(dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GLOO_SOCKET_IFNAME", "lo");
    let (o, _) = finish(c.spawn().unwrap(), BOUND);
    let out = ok(&o);
    assert!(out.contains("data-parallel: 2 ranks (gloo), global batch 8"), "{out}");
    assert_eq!(state("torchrun")["world_size"].as_u64(), Some(2));
    assert_eq!(losses("torchrun").len(), 3);
}

fn on_cuda(words: Vec<String>) -> Vec<String> {
    words.into_iter().map(|w| if w == "cpu" { "cuda".to_string() } else { w }).collect()
}

#[test]
#[ignore = "needs a CUDA device and a `--features nccl` build: cargo test --features nccl --test dist -- --ignored"]
fn nccl_with_one_rank_and_gloo_on_cuda_tensors_with_two() {
    // NCCL refuses two ranks on one GPU: one rank forms a group of one.
    let o = finish(
        spawn(
            &on_cuda(train_words("cuda_nccl", &["--batch", "4", "--steps", "3", "--dist-backend", "nccl"])),
            0,
            1,
            free_port(),
        ),
        BOUND,
    )
    .0;
    let out = ok(&o);
    assert!(out.contains("data-parallel: 1 ranks (nccl)"), "{out}");
    // Two ranks on one GPU with Gloo (it stages CUDA tensors through the host): with
    // `--device cuda:0` every rank takes that GPU, whatever its LOCAL_RANK.
    let words = on_cuda(train_words("cuda_gloo", &["--batch", "4", "--steps", "3", "--dist-backend", "gloo"]));
    let words: Vec<String> = words.into_iter().map(|w| if w == "cuda" { "cuda:0".to_string() } else { w }).collect();
    let outs = run(&words, 2);
    let fp = fingerprint_of("cuda_gloo");
    for o in &outs {
        assert!(ok(o).contains(&format!("trainable fingerprint {fp}")), "{}", text(o));
    }
}

#[test]
#[ignore = "needs a CUDA device and a `--features nccl` build: cargo test --features nccl --test dist -- --ignored"]
fn a_local_rank_beyond_the_visible_gpus_is_one_line_and_the_waiting_rank_names_it() {
    // Rank 1 claims LOCAL_RANK 4096, beyond any machine's GPUs: it refuses in one line
    // (no C++ backtrace) before joining; rank 0 then stops within --dist-timeout,
    // naming rank 1 as the one that never joined.
    let port = free_port();
    let words = on_cuda(train_words("beyond_gpus", &["--batch", "4", "--steps", "2", "--dist-timeout", "8"]));
    let words: Vec<String> = words.into_iter().chain(["--dist-backend".into(), "gloo".into()]).collect();
    let r0 = spawn(&words, 0, 2, port);
    let mut c = Command::new(env!("CARGO_BIN_EXE_graft"));
    c.args(&words).current_dir(dir()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.env("WORLD_SIZE", "2").env("RANK", "1").env("LOCAL_RANK", "4096").env("MASTER_ADDR", "127.0.0.1");
    c.env("MASTER_PORT", port.to_string()).env("GLOO_SOCKET_IFNAME", "lo").env_remove("TORCHELASTIC_USE_AGENT_STORE");
    let (o1, _) = finish(c.spawn().unwrap(), BOUND);
    let e1 = String::from_utf8_lossy(&o1.stderr).to_string();
    assert_eq!(o1.status.code(), Some(1), "{e1}");
    assert!(e1.contains("LOCAL_RANK is 4096") && e1.contains("visible CUDA device"), "{e1}");
    assert!(e1.lines().count() <= 2 && !e1.contains("frame #"), "one line, no C++ backtrace:\n{e1}");
    let (o0, took) = finish(r0, BOUND);
    let e0 = String::from_utf8_lossy(&o0.stderr).to_string();
    assert_eq!(o0.status.code(), Some(1), "{e0}");
    assert!(e0.contains("rank 1"), "rank 0 names the rank that never joined:\n{e0}");
    assert!(took < Duration::from_secs(60), "stopped within the timeout, took {took:?}");
}
