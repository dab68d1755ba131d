//! Raw pixels, normalised where the model runs: an input declared `normalized` takes
//! the u8 pixels the reader stops at (a quarter of the bytes) and the backend computes
//! `(v / 255 − mean) / std` as it places them. The model must receive exactly the bits
//! the reader's own normalisation gives, on both backends, for images (stored as
//! pixels and as encoded files) and video in both layouts, with the training
//! augmentation and the evaluation transform.

mod common;

use common::scratch::temp_dir;
use graft::backend::{native::Native, Backend, Executable, Options, Plan};
use graft::commands::data::fits::raw_inputs;
use graft::data::{Batch, Dataset, EvalView, View};
use graft::evaluate::batch_inputs;
use graft::ir::DType;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn graft(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_graft")).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn ok(args: &[&str]) -> String {
    let (good, out, err) = graft(args);
    assert!(good, "graft {args:?} failed:\n{out}{err}");
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The synthetic video task as PNG frame folders (`ROOT/CLASS/NNNNN/img_00001.png`),
/// and an image folder made of each clip's first frame (`ROOT/CLASS/NNNNN.png`).
fn files(scratch: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let frames = scratch.join(format!("{tag}-frames"));
    ok(&["data", "synth", "--task", "pretrain", "--format", "files", "--n", "8", "--seed", "5", "--out", p(&frames)]);
    let images = scratch.join(format!("{tag}-images"));
    for class in std::fs::read_dir(&frames).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
        let to = images.join(class.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for clip in std::fs::read_dir(&class).unwrap().map(|e| e.unwrap().path()) {
            let name = format!("{}.png", clip.file_name().unwrap().to_str().unwrap());
            std::fs::copy(clip.join("img_00001.png"), to.join(name)).unwrap();
        }
    }
    (frames, images)
}

/// A dataset imported from `root` and a spec whose input declares `normalized imagenet`.
struct Case {
    name: &'static str,
    data: PathBuf,
    spec: PathBuf,
    input: &'static str,
}

fn cases(scratch: &Path, tag: &str) -> Vec<Case> {
    let (frames, images) = files(scratch, tag);
    let size = ["--image-size", "32", "--crop-pct", "1"];
    let mut cases = Vec::new();
    for store in ["pixels", "encoded"] {
        let data = scratch.join(format!("{tag}-images-{store}"));
        ok(&[&["data", "import", "images", p(&images), "--out", p(&data), "--store", store][..], &size].concat());
        let model = "vit(dim: 32, depth: 1, heads: 2, classes: 4, patch: 16, height: 32)(image)";
        let spec = write_spec(&data, "image: f32[B, 3, 32, 32]", model);
        cases.push(Case { name: store, data, spec, input: "image" });
    }
    for layout in ["cthw", "tchw"] {
        let data = scratch.join(format!("{tag}-video-{layout}"));
        let import = ["data", "import", "video", p(&frames), "--out", p(&data), "--layout", layout];
        ok(&[&import[..], &["--frames", "4", "--sampling-rate", "2"], &size].concat());
        let (ty, model) = match layout {
            "cthw" => (
                "video: f32[B, 3, 4, 32, 32]",
                "vit3d(dim: 32, depth: 1, heads: 2, classes: 4, frames: 4, tubelet: 2, patch: 16, image: 32)(video)",
            ),
            _ => (
                "video: f32[B, 4, 3, 32, 32]",
                "hf_videomae_classifier(classes: 4, dim: 32, depth: 1, heads: 2, hidden: 64, frames: 4, tubelet: 2, \
                 patch: 16, image: 32)(video)",
            ),
        };
        let spec = write_spec(&data, ty, model);
        cases.push(Case { name: layout, data, spec, input: "video" });
    }
    cases
}

fn write_spec(data: &Path, input: &str, model: &str) -> PathBuf {
    let path = data.with_extension("graft");
    let text = format!(
        "use std.vit\nuse std.hf_vit\nmodel raw {{\n  input {input} normalized imagenet\n  encoder m = {model}\n  \
         output logits = m\n}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn plan_of(spec: &Path) -> Plan {
    let c = graft::api::compile_spec(spec, graft::pipeline::Mode::Train).unwrap();
    Plan::new(&c.graph)
}

fn bits(t: &[f32]) -> Vec<u32> {
    t.iter().map(|x| x.to_bits()).collect()
}

/// Both forms of the first samples: the reader's f32 and the raw u8.
fn both(ds: &Dataset, raw: &BTreeSet<String>, seed: u64) -> (Batch, Batch) {
    let f = graft::data::sample::first_samples(ds, 6, seed).unwrap();
    let u = graft::data::sample::first_samples(&ds.clone().with_raw(raw.clone()), 6, seed).unwrap();
    (f, u)
}

fn outputs(exe: &mut dyn Executable, plan: &Plan, b: &Batch) -> Vec<u32> {
    let out = exe.run(&batch_inputs(plan, b, &[]).unwrap()).unwrap();
    bits(&out[0].1.as_f32().unwrap())
}

fn check_backend(backend: &dyn Backend) {
    let tmp = temp_dir(backend.name());
    for case in cases(tmp.path(), backend.name()) {
        let plan = plan_of(&case.spec);
        let base = Dataset::open(&case.data).unwrap();
        let raw = raw_inputs(&plan, &base);
        assert_eq!(raw, BTreeSet::from([case.input.to_string()]), "{}: the input takes raw pixels", case.name);
        let norm = plan.inputs()[0].norm.clone().unwrap();
        let params = plan.params().iter().map(|p| graft::params::init::random_values(p, 0)).collect();
        let mut exe = backend.prepare(&plan, params, &Options::default()).unwrap();
        for (view, seed) in [(View::Train, 3), (View::Eval(EvalView::CENTRE), 0)] {
            let ds = base.clone().with_view(view);
            let (f, u) = both(&ds, &raw, seed);
            let (ft, ut) = (&f.inputs[case.input], &u.inputs[case.input]);
            assert_eq!((ft.dtype, ut.dtype), (DType::F32, DType::U8), "{}", case.name);
            assert_eq!(ft.shape, ut.shape);
            assert_eq!(f.labels, u.labels);
            let mut normalised = vec![0f32; ut.data.len()];
            norm.apply(&ut.shape, &ut.data, &mut normalised);
            let want = ft.as_f32().unwrap();
            assert_eq!(bits(&normalised), bits(&want), "{} {view:?}: the table gives the reader's bits", case.name);
            assert!(want.iter().any(|&x| x != want[0]), "{}: the pixels vary", case.name);
            let (a, b) = (outputs(exe.as_mut(), &plan, &f), outputs(exe.as_mut(), &plan, &u));
            assert_eq!(a, b, "{} {view:?} on {}: raw pixels give the same logits", case.name, backend.name());
        }
    }
}

#[test]
fn the_native_backend_normalises_raw_pixels_to_the_readers_bits() {
    check_backend(&Native::default());
}

#[test]
#[cfg(feature = "torch")]
fn libtorch_normalises_raw_pixels_to_the_readers_bits() {
    check_backend(&graft::backend::torch::TorchBackend);
}

fn spec_text(input: &str) -> String {
    let model = "vit(dim: 32, depth: 1, heads: 2, classes: 4, patch: 16, height: 32)(image)";
    format!("use std.vit\nmodel raw {{\n  input {input}\n  encoder m = {model}\n  output logits = m\n}}\n")
}

#[test]
fn raw_pixels_only_where_the_declaration_matches_the_data() {
    let tmp = temp_dir("raw-pixels-mismatch");
    let (_, images) = files(tmp.path(), "mismatch");
    let data = tmp.path().join("mismatch-data");
    ok(&["data", "import", "images", p(&images), "--out", p(&data), "--image-size", "32", "--crop-pct", "1"]);
    let ds = Dataset::open(&data).unwrap();
    let plain = data.with_extension("plain.graft");
    std::fs::write(&plain, spec_text("image: f32[B, 3, 32, 32]")).unwrap();
    assert!(raw_inputs(&plan_of(&plain), &ds).is_empty(), "no declaration: the reader normalises");
    let clip = data.with_extension("clip.graft");
    std::fs::write(&clip, spec_text("image: f32[B, 3, 32, 32] normalized clip")).unwrap();
    assert!(raw_inputs(&plan_of(&clip), &ds).is_empty(), "other statistics: the reader normalises");

    // u8 given to an input without the declaration: refused, with the way to allow it.
    let plan = plan_of(&plain);
    let u8s = graft::tensor::HostTensor::zeros(DType::U8, &[1, 3, 32, 32]).unwrap();
    let err = graft::backend::inputs::bind(&plan, vec![("image".into(), u8s)], DType::F32).unwrap_err().to_string();
    assert!(err.contains("dtype u8 instead of f32") && err.contains("declared `normalized`"), "{err}");
}

/// A sample file without its labels: the model's inputs only.
fn inputs_only(file: &Path) {
    let f = graft::safetensors::SafeFile::open(file).unwrap();
    let kept: std::collections::BTreeMap<_, _> =
        f.tensors().unwrap().into_iter().filter(|(k, _)| k != "label").collect();
    std::fs::write(file, graft::safetensors::encode(&kept, &Default::default()).unwrap()).unwrap();
}

#[test]
fn graft_run_takes_the_raw_sample_data_sample_writes() {
    // The user's path: `data sample --raw` writes the u8 pixels; `graft run` on them and
    // on the f32 sample writes the same outputs.
    let tmp = temp_dir("raw-pixels-run");
    let case = cases(tmp.path(), "run").into_iter().find(|c| c.name == "encoded").unwrap();
    let at = |ext: &str| case.data.with_extension(ext);
    let (f32s, u8s) = (at("f.safetensors"), at("u.safetensors"));
    ok(&["data", "sample", p(&case.data), "--eval", "--n", "4", "--out", p(&f32s)]);
    let said = ok(&["data", "sample", p(&case.data), "--eval", "--n", "4", "--raw", "--out", p(&u8s)]);
    assert!(said.contains("image u8[4, 3, 32, 32]"), "{said}");
    let run = |inputs: &Path, out: &Path| {
        inputs_only(inputs);
        ok(&["run", p(&case.spec), "--backend", "native", "--inputs", p(inputs), "--out", p(out)]);
        std::fs::read(out).unwrap()
    };
    let (a, b) = (run(&f32s, &at("fo.safetensors")), run(&u8s, &at("uo.safetensors")));
    assert_eq!(a, b, "the same output file from either form");
}
