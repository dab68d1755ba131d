//! Conformance: graft computes what the reference implementations compute.
//!
//! Each test runs `tests/conformance/generate.py CASE DIR` with the pinned venv's
//! Python (weights, inputs, float64 reference outputs and a `manifest.json` of
//! steps), then runs the steps: `graft run` / `graft fuse` with this crate's binary,
//! the Python checks (a fused file loads into timm, an exported directory into PEFT,
//! each writing what that model computes), and the comparisons, made here with the
//! tests' one comparator (`tests/common/compare.rs`): every reference tensor against
//! graft's, norm-wise within the case's tolerance, NaN and ±∞ failing. A case that
//! compares nothing fails. See tests/conformance/generate.py for what each case
//! covers.
//!
//! Needs `scripts/setup.sh` (the venv with torch, timm, transformers) and
//! `cargo test --features torch`.
#![cfg(feature = "torch")]

mod common;

use common::compare::{assert_close, Tol, Values};
use graft::safetensors::SafeFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let py = repo().join(".graft-env/venv/bin/python");
    if !py.exists() {
        panic!(
            "conformance tests need the pinned Python environment, and {} does not exist: \
             run scripts/setup.sh first",
            py.display()
        );
    }
    py
}

/// The graft binary under test, snapshotted once per test process (a hard link, or a
/// copy): `target/debug/graft` is shared with every other `cargo build`, and one
/// without `--features torch` would otherwise swap in a binary without `run` while
/// the tests are running. Snapshots of finished test processes are removed.
fn graft() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_graft"));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-bin");
        std::fs::create_dir_all(&dir).expect("creating the snapshot directory");
        common::scratch::remove_orphans(&dir, "graft-");
        let bin = dir.join(format!("graft-{}", std::process::id()));
        let _ = std::fs::remove_file(&bin);
        if std::fs::hard_link(&built, &bin).is_err() {
            std::fs::copy(&built, &bin).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
        }
        let help = Command::new(&bin).args(["eval", "--help"]).output().expect("running graft");
        if !help.status.success() {
            panic!(
                "{} has no `eval` command: it was built without the LibTorch backend \
                 (cargo test --features torch; a cargo build without the feature may have replaced it)\n{}",
                built.display(),
                String::from_utf8_lossy(&help.stderr)
            );
        }
        bin
    })
}

/// A fresh, empty directory for one case (kept on failure for inspection, until the
/// next run of this file removes the directories of processes that are gone).
fn case_dir(case: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| common::scratch::remove_orphans(&std::env::temp_dir(), "graft-conformance-"));
    let dir = std::env::temp_dir().join(format!("graft-conformance-{}-{case}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clearing the case directory");
    }
    std::fs::create_dir_all(&dir).expect("creating the case directory");
    dir
}

fn command(program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo())
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

fn shell_words(program: &Path, args: &[String]) -> String {
    std::iter::once(program.display().to_string()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ")
}

/// The transcript of every command run so far, printed when a step fails.
#[derive(Default)]
struct Log(String);

impl Log {
    fn record(&mut self, line: &str, out: &Output, secs: f64) {
        self.0 += &format!("$ {line}\n  [exit {:?}, {secs:.1}s]\n", out.status.code());
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            if !text.trim().is_empty() {
                self.0 += &format!("  --- {name}\n");
                for l in text.trim_end().lines() {
                    self.0 += &format!("  {l}\n");
                }
            }
        }
    }
}

fn run_step(log: &mut Log, program: &Path, args: &[String], dir: &Path, what: &str) {
    let line = shell_words(program, args);
    let t = Instant::now();
    let out = command(program, args).output().unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    log.record(&line, &out, t.elapsed().as_secs_f64());
    if !out.status.success() {
        panic!("{what} failed\n\n{}\n(case files kept in {})", log.0, dir.display());
    }
}

/// The tensors of a safetensors file, by name.
fn read_tensors(path: &Path) -> Vec<(String, graft::tensor::HostTensor)> {
    let f = SafeFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.entries()
        .keys()
        .map(|k| (k.clone(), f.tensor(k).unwrap_or_else(|e| panic!("{}: {k}: {e}", path.display()))))
        .collect()
}

/// `v` restricted to the rows of its first two dimensions where `mask` ([B, T]) is 1.
fn masked(v: Values, mask: &Values) -> Values {
    let rows = mask.data.len();
    assert!(
        rows > 0 && v.data.len().is_multiple_of(rows),
        "a mask of shape {:?} for a tensor of shape {:?}",
        mask.shape,
        v.shape
    );
    assert_eq!(v.shape[..2], mask.shape[..], "the mask's shape is the tensor's first two dimensions");
    let width = v.data.len() / rows;
    let data: Vec<f64> =
        v.data.chunks_exact(width).zip(&mask.data).filter(|(_, &m)| m != 0.0).flat_map(|(r, _)| r.to_vec()).collect();
    let shape: Vec<i64> =
        std::iter::once((data.len() / width.max(1)) as i64).chain(v.shape[2..].iter().copied()).collect();
    Values { shape, data, dtype: v.dtype }
}

/// A `compare` step: every tensor of the reference (but `NAME.mask`) against graft's
/// float32 output of that name. Returns how many tensors it compared.
fn compare_step(log: &mut Log, step: &serde_json::Value, dir: &Path) -> usize {
    let field = |k: &str| step[k].as_str().unwrap_or_else(|| panic!("compare step without `{k}`: {step}"));
    let (label, tol) = (field("label"), step["tol"].as_f64().expect("compare step without `tol`"));
    let got = read_tensors(Path::new(field("graft")));
    let want = read_tensors(Path::new(field("ref")));
    let mask = |name: &str| want.iter().find(|(n, _)| *n == format!("{name}.mask")).map(|(_, t)| Values::from(t));
    let (mut g, mut w) = (Vec::new(), Vec::new());
    for (name, t) in want.iter().filter(|(n, _)| !n.ends_with(".mask")) {
        let mut want_v = Values::from(t);
        want_v.dtype = None;
        let got_v = got.iter().find(|(n, _)| n == name).map(|(_, t)| {
            assert_eq!(t.dtype, graft::ir::DType::F32, "[{label}] graft's `{name}` is not float32");
            let mut v = Values::from(t);
            v.dtype = None;
            v
        });
        let (got_v, want_v) = match mask(name) {
            Some(m) => (got_v.map(|v| masked(v, &m)), masked(want_v, &m)),
            None => (got_v, want_v),
        };
        if let Some(v) = got_v {
            g.push((name.clone(), v));
        }
        w.push((name.clone(), want_v));
    }
    let what = format!("[{label}] graft vs reference (case files kept in {})", dir.display());
    for s in assert_close(&what, &g, &w, Tol::Norm { rel: tol }) {
        log.0 += &format!("[{label}] {s} (tol {tol:e})\n");
    }
    let extra: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).filter(|n| !w.iter().any(|(m, _)| m == n)).collect();
    if !extra.is_empty() {
        log.0 += &format!("[{label}] note: graft wrote tensors the reference does not have: {extra:?}\n");
    }
    w.len()
}

fn conformance(case: &str) {
    conformance_on(case, None)
}

/// The case with `graft run` / `graft fuse` on `backend` (`None`: the default).
fn conformance_on(case: &str, backend: Option<&str>) {
    let py = python();
    let graft = graft();
    let script = repo().join("tests/conformance/generate.py");
    let dir = case_dir(&format!("{case}{}", backend.map(|b| format!("-{b}")).unwrap_or_default()));
    let mut log = Log::default();

    let gen_args = vec![script.display().to_string(), case.to_string(), dir.display().to_string()];
    run_step(&mut log, &py, &gen_args, &dir, "generating the case");

    let manifest = std::fs::read_to_string(dir.join("manifest.json")).expect("reading manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("parsing manifest.json");
    let steps = manifest["steps"].as_array().expect("manifest steps");
    let mut compared = 0;
    for step in steps {
        if step["tool"] == "compare" {
            compared += compare_step(&mut log, step, &dir);
            continue;
        }
        let mut args: Vec<String> = step["args"]
            .as_array()
            .expect("step args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_string())
            .collect();
        if let (Some(b), Some("graft")) = (backend, step["tool"].as_str()) {
            if matches!(args[0].as_str(), "run" | "fuse") {
                args.splice(1..1, ["--backend".to_string(), b.to_string(), "--threads".into(), "1".into()]);
            }
        }
        match step["tool"].as_str() {
            Some("graft") => run_step(&mut log, graft, &args, &dir, &format!("graft {}", args[0])),
            Some("python") => run_step(&mut log, &py, &args, &dir, "the comparison"),
            other => panic!("unknown step tool {other:?} in {}", dir.join("manifest.json").display()),
        }
    }
    assert!(compared > 0, "case {case} compared no tensor with a reference\n\n{}", log.0);
    // Passed: show the measured errors with `--nocapture`, and clean up.
    println!("{}", log.0);
    let _ = std::fs::remove_dir_all(&dir);
}

// (a) timm ViTs, perturbed random weights, batch 2 at 224².
#[test]
fn vit_tiny_matches_timm() {
    conformance("vit_tiny");
}

#[test]
fn vit_small_matches_timm() {
    conformance("vit_small");
}

// (b) the published all-MiniLM-L6-v2 checkpoint against transformers' BertModel on
// padded sentences, with and without token_type_ids.
#[test]
fn minilm_matches_transformers() {
    conformance("minilm");
}

// (c) std vit3d against a plain-torch VideoMAE-style video ViT.
#[test]
fn vit3d_matches_reference() {
    conformance("vit3d");
}

// (d) M2PT pathway, W + λ·W′ with a different λ per layer, train and infer.
#[test]
fn m2pt_pathway_matches_reference() {
    conformance("m2pt");
}

// (e) every adapter of std/adapters.graft against a plain-torch formulation.
#[test]
fn bottleneck_adapter_matches_reference() {
    conformance("adapter_bottleneck");
}

#[test]
fn multi_head_adapter_matches_reference() {
    conformance("adapter_multi_head");
}

#[test]
fn cross_attention_adapter_matches_reference() {
    conformance("adapter_cross_attention");
}

#[test]
fn lora_matches_reference() {
    conformance("adapter_lora");
}

#[test]
fn prefix_matches_reference() {
    conformance("adapter_prefix");
}

#[test]
fn linear_adapter_matches_reference() {
    conformance("adapter_linear");
}

// (f) `graft fuse` output loads into timm (strict) and reproduces graft's output.
#[test]
fn fused_m2pt_loads_into_timm() {
    conformance("fuse_m2pt");
}

#[test]
fn fused_lora_loads_into_timm() {
    conformance("fuse_lora");
}

#[test]
fn fused_linear_adapter_loads_into_timm() {
    conformance("fuse_linear_adapter");
}

// (g) the checkpoint families of std/, against transformers and timm (families.py).
#[test]
fn hf_vit_matches_transformers() {
    conformance("hf_vit");
}

#[test]
fn videomae_hf_matches_transformers() {
    conformance("videomae_hf");
}

#[test]
fn videomae_hf_classifier_matches_transformers() {
    conformance("videomae_hf_classifier");
}

#[test]
fn videomae_original_naming_matches_transformers() {
    conformance("videomae_original");
}

#[test]
fn dinov2_matches_timm() {
    conformance("dinov2");
}

#[test]
fn dinov2_reg4_matches_timm() {
    conformance("dinov2_reg4");
}

#[test]
fn ast_matches_transformers() {
    conformance("ast");
}

#[test]
fn clip_vision_matches_transformers() {
    conformance("clip");
}

// (h) PEFT interop, both directions.
#[test]
fn peft_lora_directory_binds_to_a_graft_adapter() {
    conformance("peft_to_graft");
}

#[test]
fn exported_peft_directory_loads_into_peft() {
    conformance("graft_to_peft");
}

// (i) a position table resampled at load, against timm's resample_abs_pos_embed.
#[test]
fn resampled_position_table_matches_timm() {
    conformance("resample");
}

// (j) the native backend (no LibTorch in the forward) against the same references.
#[test]
fn native_vit_tiny_matches_timm() {
    conformance_on("vit_tiny", Some("native"));
}

#[test]
fn native_vit_small_matches_timm() {
    conformance_on("vit_small", Some("native"));
}

#[test]
fn native_minilm_matches_transformers() {
    conformance_on("minilm", Some("native"));
}

#[test]
fn native_vit3d_matches_reference() {
    conformance_on("vit3d", Some("native"));
}

#[test]
fn native_m2pt_pathway_matches_reference() {
    conformance_on("m2pt", Some("native"));
}

#[test]
fn native_adapters_match_reference() {
    for case in [
        "adapter_bottleneck",
        "adapter_multi_head",
        "adapter_cross_attention",
        "adapter_lora",
        "adapter_prefix",
        "adapter_linear",
    ] {
        conformance_on(case, Some("native"));
    }
}

/// The checkpoint families of std/ (sigmoid in CLIP's quick GELU, the sine-cosine
/// tables of VideoMAE and AST, AST's overlapping patches, DINOv2's layer scale and
/// registers) on the native backend, against the same transformers / timm models.
#[test]
fn native_std_families_match_references() {
    for case in
        ["hf_vit", "videomae_hf", "videomae_hf_classifier", "videomae_original", "dinov2", "dinov2_reg4", "ast", "clip"]
    {
        conformance_on(case, Some("native"));
    }
}

#[test]
fn native_fused_m2pt_loads_into_timm() {
    conformance_on("fuse_m2pt", Some("native"));
}
