//! End to end through the built `graft` binary: exit codes, stderr format, JSON shape,
//! parameter counts, selectors and emitted files.

mod common;

use common::scratch::temp_dir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn graft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run graft")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn specs() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("specs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".graft"))
        .map(|n| format!("specs/{n}"))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

/// Whether `text` holds `file:LINE:COL`.
fn has_location(text: &str, file: &str) -> bool {
    text.match_indices(&format!("{file}:")).any(|(i, m)| {
        let mut parts = text[i + m.len()..].splitn(3, |c: char| c == ':' || c.is_whitespace());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(parts.next().unwrap_or("")) && digits(parts.next().unwrap_or(""))
    })
}

#[test]
fn check_accepts_every_gallery_spec() {
    for spec in specs() {
        let o = graft(&["check", &spec]);
        assert_eq!(o.status.code(), Some(0), "{spec}:\n{}", stderr(&o));
        assert!(stdout(&o).contains(&format!("{spec}: ok")), "{spec}: {}", stdout(&o));
    }
}

#[test]
fn check_of_an_invalid_spec_exits_1_with_location_and_hint() {
    let spec = "tests/fixtures/invalid/11_linear_width_mismatch.graft";
    let o = graft(&["check", spec]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(has_location(&err, spec), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(err.contains('^'), "{err}");
    assert!(!err.contains("internal compiler error"), "{err}");
}

#[test]
fn check_of_several_files_reports_the_errors_of_each() {
    let bad = [
        "tests/fixtures/invalid/05_unknown_module.graft",
        "tests/fixtures/invalid/15_adapters_collide.graft",
        "tests/fixtures/invalid/37_if_not_bool.graft",
    ];
    let o = graft(&["check", bad[0], "specs/vit_base.graft", bad[1], bad[2]]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    for spec in bad {
        assert!(has_location(&err, spec), "no error for {spec} in\n{err}");
    }
    assert!(err.contains("E0313"), "{err}");
    assert!(err.contains("E0702"), "{err}");
    assert!(err.contains("E0415"), "{err}");
    assert_eq!(err.matches("hint:").count(), 3, "{err}");
    // The valid spec in between is still checked.
    assert!(stdout(&o).contains("specs/vit_base.graft: ok"), "{}", stdout(&o));
}

#[test]
fn an_error_says_its_cause_once() {
    // The durable write's error prints its OS error, and reports it as its source too.
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-parent/deeper/files");
    let o = graft(&[
        "data",
        "synth",
        "--task",
        "pretrain",
        "--format",
        "files",
        "--n",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("creating the staging directory").count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // The reader is gone before graft starts, so its first write fails: SIGPIPE ends
    // it, as it ends `cat`, not a panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(["params", "specs/vit_base.graft"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::from(writer))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.signal(), Some(13), "{:?}: {err}", o.status);
}

#[test]
fn usage_errors_exit_2() {
    let o = graft(&["check", "--no-such-flag", "specs/vit_base.graft"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--no-such-flag"));
    let o = graft(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

fn keys(v: &serde_json::Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
    k.sort();
    k
}

#[test]
fn inspect_json_has_exactly_the_documented_shape() {
    let o = graft(&["inspect", "--json", "specs/cm3t_video_audio_pose.graft"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
    assert_eq!(keys(&v), ["inputs", "model", "outputs", "params", "weights"]);
    assert_eq!(v["model"], "cm3t_video_audio_pose");

    let inputs = v["inputs"].as_array().unwrap();
    for i in inputs {
        assert_eq!(keys(i), ["dtype", "name", "optional", "shape"]);
        assert!(i["shape"].is_array());
        assert_eq!(i["dtype"], "f32");
    }
    let optional: Vec<(&str, bool)> =
        inputs.iter().map(|i| (i["name"].as_str().unwrap(), i["optional"].as_bool().unwrap())).collect();
    assert_eq!(optional, [("video", false), ("audio", true), ("pose", true)]);
    assert_eq!(inputs[0]["shape"], serde_json::json!(["B", 3, 16, 224, 224]));

    let outputs = v["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(keys(&outputs[0]), ["name", "shape"]);
    assert_eq!(outputs[0]["name"], "logits");
    assert_eq!(outputs[0]["shape"], serde_json::json!(["B", 97]));

    let weights = v["weights"].as_array().unwrap();
    assert!(!weights.is_empty());
    for w in weights {
        assert_eq!(keys(w), ["binding", "file"]);
    }
    let bindings: Vec<&str> = weights.iter().map(|w| w["binding"].as_str().unwrap()).collect();
    assert!(bindings.contains(&"video_vit") && bindings.contains(&"audio_enc"), "{bindings:?}");

    let p = &v["params"];
    assert_eq!(keys(p), ["frozen", "total", "trainable"]);
    let (total, trainable, frozen) =
        (p["total"].as_u64().unwrap(), p["trainable"].as_u64().unwrap(), p["frozen"].as_u64().unwrap());
    assert_eq!(total, trainable + frozen);
    assert!(trainable > 0 && frozen > trainable);
}

#[test]
fn params_of_vit_base() {
    let o = graft(&["params", "specs/vit_base.graft"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("86,567,656"), "{}", stdout(&o));
}

#[test]
fn select_lists_the_matches_with_their_parameters() {
    let o = graft(&["select", "specs/m2pt_image_point.graft", "target.blocks[-2..].mlp"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.ends_with(" params") && !l.contains("match"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    // fc1 768·3072 + 3072, fc2 3072·768 + 768.
    let mlp = "4,722,432";
    assert_eq!(
        rows,
        [vec!["target.blocks.10.mlp", "mlp", mlp, "params"], vec!["target.blocks.11.mlp", "mlp", mlp, "params"],],
        "{out}"
    );
    assert!(out.contains("2 matches, 9,444,864 params"), "{out}");
}

#[test]
fn select_with_a_typo_suggests_the_nearest_path() {
    let o = graft(&["select", "specs/m2pt_image_point.graft", "target.blocks[-2..].mpl"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("matches nothing"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(err.contains("target.blocks.0.mlp"), "{err}");
    let o = graft(&["select", "specs/m2pt_image_point.graft", "traget.head"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("target.head"), "{}", stderr(&o));
}

#[test]
fn compile_emits_four_files_and_the_ir_is_deterministic() {
    let spec = "specs/cm3t_video_audio_pose.graft";
    let mut irs = Vec::new();
    for run in 0..2 {
        let dir = temp_dir(&format!("compile{run}"));
        let out = dir.path().to_str().unwrap();
        let o = graft(&["compile", spec, "--emit", "ir,yaml,dot,params", "--out", out]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let m = "cm3t_video_audio_pose.train";
        assert_eq!(files, [format!("{m}.dot"), format!("{m}.ir"), format!("{m}.params.txt"), format!("{m}.yaml")]);
        for f in &files {
            assert!(std::fs::metadata(dir.path().join(f)).unwrap().len() > 0, "{f} is empty");
            assert!(stdout(&o).contains(f.as_str()), "{}", stdout(&o));
        }
        irs.push(std::fs::read(dir.path().join(format!("{m}.ir"))).unwrap());
    }
    assert!(irs[0] == irs[1], "the IR differs between two runs");
}

#[test]
fn compile_stop_after_prints_the_ir_after_that_pass() {
    let f = "tests/filetests/lora_after_insert_adapters.graft";
    let o = graft(&["compile", f, "--mode", "infer", "--stop-after", "insert_adapters"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("graft ir: model m mode infer after insert_adapters\n"), "{text}");
    assert!(text.contains("l.t.fc.lora_A.weight"), "the adapter is in: {text}");
    let folded = stdout(&graft(&["compile", f, "--mode", "infer", "--stop-after", "fold_reparam"]));
    assert_eq!(folded.matches("= linear(").count(), 1, "LoRA folded into the one linear: {folded}");
    assert_ne!(text.lines().skip(1).collect::<Vec<_>>(), folded.lines().skip(1).collect::<Vec<_>>());
    // A pass that does not run in the mode, and a name that is no pass, are usage errors.
    let o = graft(&["compile", f, "--stop-after", "fold_reparam"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not run in train mode"), "{}", stderr(&o));
    assert_eq!(graft(&["compile", f, "--stop-after", "no_such_pass"]).status.code(), Some(2));
}

#[test]
fn compile_timings_lists_every_stage() {
    let o = graft(&["compile", "tests/filetests/lora_after_insert_adapters.graft", "--mode", "infer", "--timings"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for stage in graft::pipeline::stages(graft::pipeline::Mode::Infer) {
        assert!(err.lines().any(|l| l.starts_with(&format!("{stage} "))), "no `{stage}` in:\n{err}");
    }
    assert!(err.lines().last().unwrap().starts_with("total"), "{err}");
    assert!(stdout(&o).starts_with("graft ir:"), "the IR still goes to stdout");
}

/// Without LibTorch, `train` and `eval` are refused with how to get them (exit 1),
/// not reported as unknown commands. (`cargo test` without features runs this.)
#[cfg(not(feature = "torch"))]
#[test]
fn train_and_eval_without_libtorch_say_how_to_get_them() {
    for cmd in ["train", "eval"] {
        let o = graft(&[cmd, "specs/vit_tiny.graft", "--data", "nowhere"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("built without LibTorch") && err.contains("--features torch"), "{err}");
    }
}

/// Without LibTorch a run directory cannot be proven (`TrainableFile::open_run`), so
/// `export peft --run RUN_DIR` is refused with the file to pass instead, and nothing
/// is written. (`cargo test` without features runs this.)
#[cfg(not(feature = "torch"))]
#[test]
fn export_peft_of_a_run_dir_without_libtorch_names_the_file_to_pass() {
    let d = temp_dir("peft-run-native");
    let spec = d.path().join("lora.graft");
    std::fs::write(
        &spec,
        "use std.vit\nuse std.adapters\n\nmodel m {\n  input image: f32[B, 3, 32, 32]\n  backbone vit = vit(dim: 32, depth: 1, heads: 2, classes: 4, height: 32)(image) weights required\n  adapter l = lora(rank: 2, alpha: 4.0) at vit.blocks[*].attn.qkv parallel\n  output logits = vit\n  train l\n}\n",
    )
    .unwrap();
    let run = d.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let out = d.path().join("peft");
    let o = graft(&[
        "export",
        "peft",
        spec.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--features torch") && err.contains("checkpoint-STEP/trainable.safetensors"), "{err}");
    assert!(!out.exists(), "{err}");
}

/// A head bound after its declaration, to a file or to the command line
/// (`weights cls required`), and `--allow-missing` naming what it leaves at init.
#[test]
fn heads_bind_required_weights_and_gaps_left_at_init_are_named() {
    let d = temp_dir("head-required");
    let spec = d.path().join("head.graft");
    std::fs::write(
        &spec,
        "model m {\n  input x: f32[B, 4]\n  encoder e = linear(4, 4)(x)\n  head cls = linear(4, 2)(e)\n  output y = cls\n  weights cls required\n}\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let o = graft(&["inspect", spec, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let w = v["weights"].as_array().unwrap().iter().find(|w| w["binding"] == "cls").expect("cls binding");
    assert_eq!((w["file"].clone(), w["required"].clone()), (serde_json::Value::Null, serde_json::json!(true)));
    // Run without the file: refused by name; with an empty one and --allow-missing:
    // the note names both parameters left at their initial values.
    let inputs = d.path().join("in.safetensors");
    let x = graft::tensor::HostTensor::from_f32(&[1, 4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    graft::safetensors::write(&inputs, &[("x".to_string(), x)], &Default::default()).unwrap();
    let out = d.path().join("out.safetensors");
    let (i, o_) = (inputs.to_str().unwrap(), out.to_str().unwrap());
    let o = graft(&["run", spec, "--inputs", i, "--out", o_]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("`cls` leaves its weights to the command line"), "{}", stderr(&o));
    let empty = d.path().join("empty.safetensors");
    let other = graft::tensor::HostTensor::from_f32(&[1], &[0.0]).unwrap();
    graft::safetensors::write(&empty, &[("unused".to_string(), other)], &Default::default()).unwrap();
    let bind = format!("cls={}", empty.display());
    let o = graft(&["run", spec, "--inputs", i, "--out", o_, "--weights", &bind, "--allow-missing", "*"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 parameters left at their initial values") && stderr(&o).contains("cls.bias, cls.weight"),
        "{}",
        stderr(&o)
    );
}

/// Parameters no output uses are counted apart by `graft params`, and their keys in a
/// weights file are named in a note, not dropped silently.
#[test]
fn parameters_and_keys_no_output_uses_are_reported() {
    let d = temp_dir("unused");
    let spec = d.path().join("unused.graft");
    std::fs::write(
        &spec,
        "module two(d: int) {\n  in x\n  a    = linear(d, d)(x)\n  dead = linear(d, d)(x)\n  out a\n}\n\nmodel m {\n  input x: f32[B, 4]\n  encoder e = two(4)(x)\n      weights required\n  head unused = linear(4, 3)(e)\n  output y = e\n}\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let o = graft(&["params", spec]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("not counted: 4 parameter tensors (35 values) that no output uses: e.dead.bias, e.dead.weight, unused.bias, unused.weight"),
        "{}",
        stdout(&o)
    );
    let o = graft(&["params", spec, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((v["total"].clone(), v["unused"]["values"].clone()), (serde_json::json!(20), serde_json::json!(35)));
    let w = d.path().join("e.safetensors");
    let t = |n: &[i64]| graft::tensor::HostTensor::from_f32(n, &vec![0.5; n.iter().product::<i64>() as usize]).unwrap();
    let tensors: Vec<(String, graft::tensor::HostTensor)> = ["a", "dead"]
        .iter()
        .flat_map(|l| [(format!("{l}.weight"), t(&[4, 4])), (format!("{l}.bias"), t(&[4]))])
        .collect();
    graft::safetensors::write(&w, &tensors, &Default::default()).unwrap();
    let inputs = d.path().join("in.safetensors");
    graft::safetensors::write(&inputs, &[("x".to_string(), t(&[1, 4]))], &Default::default()).unwrap();
    let bind = format!("e={}", w.display());
    let out = d.path().join("out.safetensors");
    let o =
        graft(&["run", spec, "--inputs", inputs.to_str().unwrap(), "--out", out.to_str().unwrap(), "--weights", &bind]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 keys of") && stderr(&o).contains("no output uses, not read (dead.bias, dead.weight)"),
        "{}",
        stderr(&o)
    );
}

/// More memory than the process may have is an error (bytes wanted, the limit), exit 1,
/// not an abort: under a 3 GB address-space limit, ViT-S/16 inputs of batch 4096 (2.5 GB
/// of pixels, drawn as f32 and stored as bytes) and its native arena cannot fit.
#[cfg(target_os = "linux")]
#[test]
fn an_allocation_past_the_limit_is_an_error_not_an_abort() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/vit_small.graft");
    let script = format!(
        "ulimit -v 3000000 && exec '{}' bench '{}' --backend native --batch 4096 --iters 1 --warmup 0",
        env!("CARGO_BIN_EXE_graft"),
        spec.display()
    );
    let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("allocating") && err.contains("GB wanted"), "{err}");
    assert!(err.contains("the address-space limit (ulimit -v) is 3.1 GB"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `graft bench` puts each forward beside the machine's limit: the matrix-multiply work
/// at each batch and one core's measured FMA peak. A ViT with 32² images of 8² patches
/// (16 patches + the class token), width 64, 2 blocks, 10 classes, counted by hand:
/// the patch embedding 16·64·(3·8·8), per block 17·64·(3·64 + 64 + 256) + 17·256·64
/// and attention's two products 17·17·64, the head 64·10.
#[test]
fn bench_reports_the_forwards_matrix_work_and_the_fma_peak() {
    let dir = temp_dir("cli-bench");
    let spec = dir.path().join("small_vit.graft");
    std::fs::write(
        &spec,
        "use std.vit\n\nmodel small_vit {\n  input image: f32[B, 3, 32, 32]\n  encoder vit = vit(dim: 64, depth: 2, heads: 4, classes: 10, patch: 8, height: 32)(image)\n  output logits = vit\n}\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let per_image: u64 = 16 * 64 * 192 + 2 * (17 * 64 * 512 + 17 * 256 * 64 + 2 * 17 * 17 * 64) + 64 * 10;
    let bench = |batch: &str, extra: &[&str]| {
        let args =
            ["bench", spec, "--backend", "native", "--batch", batch, "--iters", "1", "--warmup", "0", "--threads", "1"];
        graft(&[&args[..], extra].concat())
    };
    let o = bench("1,3", &["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let macs = &r["specs"][0]["forward_macs"];
    assert_eq!(macs[0][1].as_u64(), Some(per_image), "{macs}");
    assert_eq!(macs[1][1].as_u64(), Some(3 * per_image), "{macs}");
    let peak = r["fma_peak_macs_per_core"].as_f64().expect("measured with the native backend");
    assert!(peak.is_finite() && peak > 1e7, "{peak}");
    assert_eq!(r["native_threads"], 1);
    let text = stdout(&bench("1", &[]));
    assert!(text.contains("one core's FMA peak, measured:"), "{text}");
    let gmac = format!("{:.2} GMAC of matrix products", per_image as f64 / 1e9);
    assert!(text.contains(&gmac) && text.contains("% of the FMA peak of 1 core"), "{text}");
}

/// `graft bench --paced` runs one forward per batch size read from stdin and prints its
/// milliseconds after `ready` (a driver interleaves these with another runtime's); a
/// line that is not one of the prepared sizes ends it with exit 1 and names the line.
#[test]
fn bench_paced_answers_one_forward_per_line() {
    use std::io::Write;
    use std::process::Stdio;
    let paced = |stdin: &str, specs: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_graft"))
            .args(["bench"])
            .args(specs)
            .args(["--paced", "--backend", "native", "--batch", "1,3", "--warmup", "1", "--threads", "1"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run graft");
        // A process that fails before reading closes its end of the pipe.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    };
    let o = paced("1\n3\n 1 \n", &["specs/demo/video_plain.graft"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "ready");
    for l in &lines[1..] {
        let ms: f64 = l.parse().unwrap_or_else(|_| panic!("milliseconds, got `{l}`"));
        assert!(ms > 0.0 && ms.is_finite(), "{l}");
    }
    let o = paced("1\n2\n1\n", &["specs/demo/video_plain.graft"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("stdin line 2: expected one of the batch sizes 1, 3; got `2`"), "{err}");
    assert!(err.contains("hint:") && !err.contains("panicked"), "{err}");
    let o = paced("", &["specs/demo/video_plain.graft", "specs/demo/cm3t_multimodal.graft"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--paced times one spec; got 2"), "{}", stderr(&o));
    // The driver decides how many forwards run: `--iters` is refused, not ignored.
    let o = graft(&["bench", "specs/demo/video_plain.graft", "--paced", "--iters", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("'--paced' cannot be used with '--iters"), "{}", stderr(&o));
}
