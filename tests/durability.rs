//! A run survives anything: a crash at every durable step and a full disk at every
//! write end, after `--resume`, bit-identical to an uninterrupted run; a second
//! trainer on a locked run directory is refused with the holder's PID; `--resume` of
//! a finished run exits 0. And `--resume` trusts nothing it reads: an edited
//! `state.json`, a bad newer checkpoint beside a good one, a FIFO for `metrics.jsonl`
//! and a foreign safetensors file as a checkpoint are each refused or set aside with
//! a message, never trained on, hung on or deleted; so is a tensor whose bytes changed
//! after they were written (each tensor's CRC-32 is recorded), named by file and tensor.
//!
//! Crashes and full disks are injected by the durable writer's fault points
//! (`GRAFT_FAULT_ABORT_AT=N` aborts the process at the N-th durable step, like a
//! SIGKILL; `GRAFT_FAULT_ENOSPC_AT=N` fails it with ENOSPC), which exist only in a build
//! with the `fault-injection` feature: this test requires it (Cargo.toml), and
//! `scripts/test.sh` runs it with `--features cuda-graphs,nccl,fault-injection`. The
//! model is a one-block token MLP on the synthetic pose input: each `graft train` takes
//! well under a second.

mod common;

use graft::commands::train::rundir;
use graft::safetensors::SafeFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SPEC: &str = r#"use std.encoders

model tiny {
  input pose: f32[B, 8, 5, 2]
  encoder enc = token_mlp(features: 10, dim: 8, depth: 1, frames: 8)(pose)
  head cls = linear(8, 8)(mean_tokens(enc))
  output logits = cls
  train enc, cls
}
"#;

/// The run: two steps, a checkpoint after each (so the second replaces the first).
const RUN: &[&str] =
    &["train", "tiny.graft", "--data", "data", "--steps", "2", "--batch", "8", "--lr", "1e-2", "--device", "cpu"];
const EVERY: &[&str] = &["--schedule", "constant", "--checkpoint-every", "1"];

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = common::scratch::process_dir("durability");
        std::fs::write(d.join("tiny.graft"), SPEC).unwrap();
        let o = graft(
            &d,
            &["data", "synth", "--task", "multimodal", "--n", "32", "--shard-size", "16", "--out", "data"],
            &[],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        d
    })
}

fn graft(cwd: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_graft"));
    c.args(args).current_dir(cwd).env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run graft")
}

fn train(out: &str, extra: &[&str], env: &[(&str, String)]) -> Output {
    graft(dir(), &[RUN, EVERY, &["--out", out], extra].concat(), env)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every tensor of the newest checkpoint's files and the top-level trainable file,
/// as (file, name, bytes), plus `state.json`.
type Snapshot = (Vec<(String, String, Vec<u8>)>, String);

fn snapshot(run: &Path) -> Snapshot {
    let ckpt = rundir::latest(run).unwrap().expect("a checkpoint");
    let mut v = Vec::new();
    for (label, path) in [
        ("trainable", ckpt.join("trainable.safetensors")),
        ("optimizer", ckpt.join("optimizer.safetensors")),
        ("top", run.join("trainable.safetensors")),
    ] {
        let f = SafeFile::open(&path).unwrap();
        for k in f.entries().keys() {
            v.push((label.to_string(), k.clone(), f.tensor(k).unwrap().data));
        }
    }
    (v, std::fs::read_to_string(ckpt.join("state.json")).unwrap())
}

fn reference() -> &'static Snapshot {
    static R: OnceLock<Snapshot> = OnceLock::new();
    R.get_or_init(|| {
        let o = train("whole", &[], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        snapshot(&dir().join("whole"))
    })
}

/// What a crashed or failed run left, after the recovery command (the same command
/// with `--resume`): complete, bit-identical to the uninterrupted run, no leftovers.
fn recover_and_compare(out: &str, what: &str) {
    let o = train(out, &["--resume", out], &[]);
    assert!(o.status.success(), "{what}: resume failed:\n{}", stderr(&o));
    let run = dir().join(out);
    assert!(snapshot(&run) == *reference(), "{what}: the resumed run differs from the uninterrupted one");
    let leftovers: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || (n.starts_with("checkpoint-") && n != "checkpoint-0000000002"))
        .collect();
    assert!(leftovers.is_empty(), "{what}: left {leftovers:?}");
}

/// Inject a fault (`var`) at durable step 1, 2, … until a run gets past the last one;
/// `failed` checks each faulted run's output, then the run is recovered and compared.
/// Runs `WORKERS` steps at a time. Returns the number of durable steps.
fn at_every_step(var: &str, name: &str, failed: impl Fn(u64, &Output) + Sync) -> u64 {
    const WORKERS: u64 = 4;
    reference();
    let mut first = 1;
    loop {
        let done = std::thread::scope(|s| {
            let handles: Vec<_> = (first..first + WORKERS)
                .map(|k| {
                    let failed = &failed;
                    s.spawn(move || {
                        let out = format!("{name}-{k}");
                        let o = train(&out, &[], &[(var, k.to_string())]);
                        if o.status.success() {
                            return true; // past the last durable step
                        }
                        failed(k, &o);
                        recover_and_compare(&out, &format!("{var}={k}"));
                        let _ = std::fs::remove_dir_all(dir().join(&out));
                        false
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<bool>>()
        });
        if let Some(i) = done.iter().position(|&d| d) {
            assert!(done[i..].iter().all(|&d| d), "a fault at a later step had no effect: {done:?}");
            return first + i as u64 - 1;
        }
        first += WORKERS;
    }
}

#[test]
fn a_crash_at_every_durable_step_resumes_bit_identical() {
    let n = at_every_step("GRAFT_FAULT_ABORT_AT", "abort", |k, o| {
        assert!(stderr(o).contains("fault injection: aborting"), "step {k}: {}", stderr(o));
    });
    assert!(n > 20, "only {n} durable steps: is the fault hook wired in?");
}

#[test]
fn a_full_disk_at_every_write_fails_cleanly_and_resumes_bit_identical() {
    let n = at_every_step("GRAFT_FAULT_ENOSPC_AT", "enospc", |k, o| {
        let err = stderr(o);
        assert_eq!(o.status.code(), Some(1), "step {k}: {err}");
        assert!(err.contains("No space left on device") && !err.contains("panicked"), "step {k}: {err}");
    });
    assert!(n > 20, "only {n} durable steps");
}

#[test]
fn a_locked_run_directory_refuses_a_second_trainer_and_a_finished_run_resumes_to_exit_0() {
    reference();
    let run = dir().join("whole");
    // Hold the lock as a running trainer does (flock on RUN_DIR/.lock, PID inside).
    let held = rundir::lock(&run).unwrap();
    let o = graft(dir(), &["train", "tiny.graft", "--data", "data", "--resume", "whole", "--steps", "3"], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is in use by another `graft train`"), "{err}");
    assert!(err.contains(&format!("process {}", std::process::id())), "{err}");
    drop(held);
    // Finished: the same command again exits 0 and says so; nothing changes.
    let o = train("whole", &["--resume", "whole"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("already finished"), "{:?}", o);
    assert!(snapshot(&run) == *reference());
    // Without --resume an existing run is never overwritten.
    let o = train("whole", &[], &[]);
    assert!(stderr(&o).contains("already holds a run"), "{}", stderr(&o));
}

#[test]
fn absurd_numbers_are_refused_before_anything_starts() {
    let d = dir();
    let refused = |args: &[&str], want: &str| {
        let o = graft(d, args, &[]);
        let err = stderr(&o);
        assert!(matches!(o.status.code(), Some(1 | 2)), "graft {}: {err}", args.join(" "));
        assert!(err.contains(want) && !err.contains("panicked"), "graft {}: {err}", args.join(" "));
    };
    fn t<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["train", "tiny.graft", "--data", "data", "--lr", "1e-2", "--out", "absurd"], extra].concat()
    }
    refused(&t(&["--steps", "2", "--batch", "1000000000000"]), "1..=65536");
    refused(&t(&["--steps", "2", "--batch", "8", "--accumulate", "1000000000000"]), "1..=4096");
    refused(&t(&["--epochs", "1000000000000000000", "--batch", "8"]), "1..=4294967296");
    // Within each range, but the product is not: checked, never wrapped.
    refused(&t(&["--epochs", "4294967296", "--batch", "8"]), "more than 4294967296 optimizer steps");
    // 2^64 - 1 seconds made Duration panic; 9.3e9 s overflowed c10d's clock.
    for huge in ["18446744073709551615", "9.3e9", "inf", "0"] {
        refused(&t(&["--steps", "2", "--batch", "8", "--dist-timeout", huge]), "0 < SECS <= 604800");
    }
    assert!(!d.join("absurd").exists(), "nothing is created for a refused run");
    refused(&["eval", "tiny.graft", "--data", "data", "--batch", "1000000000000"], "1..=65536");
    for (flag, value, want) in
        [("--threads", "0", "1..=1024"), ("--threads", "100000", "1..=1024"), ("--iters", "0", "1..=1000000")]
    {
        refused(&["bench", "tiny.graft", flag, value], want);
    }
    refused(&["bench", "tiny.graft", "--batch", "1,1000000000000"], "1..=65536");
}

/// A trained run of two steps in `out` (its one checkpoint: step 2).
fn trained(out: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir().join(out));
    let o = train(out, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    dir().join(out)
}

/// `--resume out` to step 3, killed (by its PID) if it runs past a bound.
fn resume_to_3(out: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_graft"));
    c.args(["train", "tiny.graft", "--data", "data", "--resume", out, "--steps", "3"]);
    let mut child =
        c.current_dir(dir()).env("NO_COLOR", "1").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("--resume {out} ran past 60 s and was killed (a hang):\n{}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn refused(o: &Output, want: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(want) && !err.contains("panicked"), "expected `{want}`:\n{err}");
    err
}

#[test]
fn an_edited_state_json_is_refused_naming_the_field() {
    let run = trained("edited");
    let path = rundir::latest(&run).unwrap().unwrap().join("state.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&original).unwrap();
    let edit = |edits: &[(&str, serde_json::Value)]| {
        let mut j = json.clone();
        for (pointer, v) in edits {
            *j.pointer_mut(pointer).unwrap() = v.clone();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&j).unwrap() + "\n").unwrap();
    };
    // Out of bounds: refused from the number itself.
    let cases: &[(&str, serde_json::Value, &str)] = &[
        ("/epoch", u64::MAX.into(), "`epoch` is 18446744073709551615"),
        ("/hyper/accumulate", 1_000_000_000u64.into(), "`hyper.accumulate` is 1000000000; at most 4096"),
        ("/world_size", 0.into(), "`world_size` is 0"),
        ("/global_batch", 24.into(), "`global_batch` is 24"),
        ("/step", 7.into(), "past the run's last step"),
        ("/position", u64::MAX.into(), "`position` is 18446744073709551615"),
    ];
    for (pointer, v, want) in cases {
        edit(&[(*pointer, v.clone())]);
        let err = refused(&resume_to_3("edited"), want);
        assert!(err.contains("corrupt or was edited"), "{err}");
    }
    // Within bounds, but not the state the tensors were written with: the digest.
    let in_bounds: Vec<Vec<(&str, serde_json::Value)>> = vec![
        vec![("/epoch", 1.into())],
        vec![("/position", 1.into())],
        vec![("/world_size", 2.into()), ("/global_batch", 16.into())],
        vec![("/hyper/seed", 9.into())],
    ];
    for edits in &in_bounds {
        edit(edits);
        refused(&resume_to_3("edited"), "was edited or replaced after the checkpoint was written");
    }
    // Nothing was changed by the refusals: the untouched file resumes.
    std::fs::write(&path, &original).unwrap();
    let o = resume_to_3("edited");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_damaged_tensor_is_refused_naming_its_file_and_tensor() {
    let run = trained("damaged");
    let ckpt = rundir::latest(&run).unwrap().unwrap();
    for file in ["optimizer.safetensors", "trainable.safetensors"] {
        let path = ckpt.join(file);
        let original = std::fs::read(&path).unwrap();
        // One bit of the file's last tensor, which the headers do not describe.
        let f = SafeFile::open(&path).unwrap();
        let (name, e) = f.header.entries.iter().max_by_key(|(_, e)| e.start).unwrap();
        let mut bytes = original.clone();
        bytes[(f.header.data_start + e.start) as usize + 1] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = refused(&resume_to_3("damaged"), &format!("tensor `{name}` has CRC-32"));
        let shown = path.strip_prefix(dir()).unwrap().display().to_string();
        assert!(err.contains(&shown) && err.contains("damaged or changed") && err.contains("hint: restore"), "{err}");
        // Refused, not set aside or trained on: the bytes are as they were left.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(rundir::latest(&run).unwrap().unwrap(), ckpt);
        std::fs::write(&path, &original).unwrap();
    }
    let o = resume_to_3("damaged");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_bad_newer_checkpoint_is_set_aside_and_the_run_resumes_from_the_good_one() {
    let run = trained("bogus");
    let good = rundir::latest(&run).unwrap().unwrap();
    // A newer directory with garbage, and a newer copy of the good one whose state.json
    // claims another step.
    let garbage = run.join("checkpoint-0000000009");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("state.json"), "{ not json").unwrap();
    let copy = run.join("checkpoint-0000000005");
    std::fs::create_dir(&copy).unwrap();
    for f in ["trainable.safetensors", "optimizer.safetensors", "graph.ir"] {
        std::fs::copy(good.join(f), copy.join(f)).unwrap();
    }
    let state = std::fs::read_to_string(good.join("state.json")).unwrap();
    std::fs::write(copy.join("state.json"), state.replace("\"step\": 2,", "\"step\": 5,")).unwrap();
    let o = resume_to_3("bogus");
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for step in [5, 9] {
        assert!(err.contains(&format!("set the checkpoint of step {step} aside")), "{err}");
    }
    // Renamed aside with their files, not deleted; the run went on from step 2.
    assert_eq!(std::fs::read_to_string(run.join("checkpoint-0000000009.rejected/state.json")).unwrap(), "{ not json");
    assert!(run.join("checkpoint-0000000005.rejected/trainable.safetensors").is_file());
    assert_eq!(rundir::latest(&run).unwrap().unwrap(), run.join("checkpoint-0000000003"));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint-0000000003/state.json")).unwrap()).unwrap();
    assert_eq!(s["step"], 3);
}

#[test]
fn a_fifo_for_metrics_jsonl_is_an_error_not_a_hang() {
    let run = trained("fifo");
    std::fs::remove_file(run.join("metrics.jsonl")).unwrap();
    let made = Command::new("mkfifo").arg(run.join("metrics.jsonl")).status().unwrap();
    assert!(made.success());
    refused(&resume_to_3("fifo"), "a FIFO (named pipe), not a regular file");
}

#[test]
fn a_foreign_safetensors_file_as_a_checkpoint_says_what_it_is() {
    let run = trained("foreign");
    let ckpt = rundir::latest(&run).unwrap().unwrap().join("trainable.safetensors");
    let tensors = SafeFile::open(&ckpt).unwrap().tensors().unwrap();
    let write = |meta: &[(&str, &str)]| {
        let meta = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        graft::safetensors::write(&ckpt, &tensors, &meta).unwrap();
    };
    write(&[]);
    let err = refused(&resume_to_3("foreign"), "is not a graft checkpoint: it has no metadata (`__metadata__`)");
    assert!(!err.contains("None") && !err.contains("interrupted"), "{err}");
    write(&[("source", "torch")]);
    refused(&resume_to_3("foreign"), "is not a graft checkpoint: its metadata has no `format` key");
    write(&[("format", "graft.trainable.v1"), ("model", "tiny")]);
    refused(&resume_to_3("foreign"), "graft checkpoint metadata without `step`");
}
