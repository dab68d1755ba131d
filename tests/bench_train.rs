//! `graft bench --train` end to end through the binary, on the tiny demo specs: the
//! report's shape, the trainable counts, the memory probe. No timing is asserted.

#![cfg(feature = "torch")]

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_graft"))
        .arg("bench")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run graft")
}

#[test]
fn train_mode_reports_steps_and_memory_per_spec() {
    let specs = ["specs/demo/cm3t_head.graft", "specs/demo/cm3t_mhva.graft", "specs/demo/video_pretrain.graft"];
    let mut args = vec!["--train"];
    args.extend(specs);
    args.extend(["--batch", "2,3", "--iters", "2", "--warmup", "1", "--threads", "1", "--device", "cpu", "--json"]);
    let o = bench(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(r["threads"], 1);
    assert_eq!(r["device"], "cpu");
    assert!(r["memory_note"].is_null());
    let s = r["specs"].as_array().unwrap();
    assert_eq!(s.len(), 3);
    let names: Vec<&str> = s.iter().map(|x| x["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["cm3t_head", "cm3t_mhva", "video_pretrain"]);
    // Frozen backbones: only the head (64·8 + 8), then the adapters too, train.
    assert_eq!(s[0]["trainable"], 520);
    assert!(s[1]["trainable"].as_u64().unwrap() > 520);
    assert!(s[1]["trainable"].as_u64() < s[1]["params"].as_u64());
    assert_eq!(s[2]["trainable"], s[2]["params"]);
    // The matmul floor: a frozen backbone with a trained head takes only the head's
    // weight gradient; the fully trained ViT takes every one.
    let macs = |i: usize, k: &str| s[i]["matmul_macs"][k].as_u64().unwrap();
    assert!(macs(0, "forward") > 0 && macs(0, "backward") > 0);
    assert!(macs(0, "backward") * 10 < macs(0, "forward"), "head only: {}", s[0]["matmul_macs"]);
    assert!(macs(2, "backward") > macs(2, "forward"), "weights and inputs: {}", s[2]["matmul_macs"]);
    for spec in s {
        let batches = spec["batches"].as_array().unwrap();
        assert_eq!(batches.iter().map(|b| b["batch"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 3]);
        for b in batches {
            assert_eq!(b["steps_ms"].as_array().unwrap().len(), 2);
            assert!(b["step_ms"].as_f64().unwrap() > 0.0);
            assert!(b["first_loss"].as_f64().unwrap().is_finite());
            let m = &b["memory"];
            let (state, peak) = (m["state_mib"].as_f64().unwrap(), m["peak_mib"].as_f64().unwrap());
            assert!(peak >= state && state >= 0.0, "{m}");
        }
    }
}

#[test]
fn train_mode_prints_a_table_and_can_skip_memory() {
    let o = bench(&[
        "--train",
        "specs/demo/cm3t_head.graft",
        "specs/demo/cm3t_mhva.graft",
        "--batch",
        "2",
        "--iters",
        "1",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-memory",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("training steps"), "{text}");
    assert!(text.contains("not measured (--no-memory)"), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("cm3t_")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].contains("1.000"), "the first spec is the ratios' base: {text}");
}

#[test]
fn train_mode_needs_logits() {
    let tmp = tempfile::Builder::new().prefix("graft-bench-train-").tempdir().unwrap();
    let dir = tmp.path();
    let spec = dir.join("features.graft");
    std::fs::write(
        &spec,
        "use std.vit\nmodel features {\n  input image: f32[B, 1, 32, 32]\n  encoder e = vit(dim: 32, depth: 1, heads: 2, classes: 0, patch: 8, height: 32, channels: 1)(image)\n  output tokens = e.norm\n  train e\n}\n",
    )
    .unwrap();
    let o = bench(&["--train", spec.to_str().unwrap(), "--batch", "1", "--iters", "1", "--no-memory"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("logits [B, classes]"), "{err}");
}
