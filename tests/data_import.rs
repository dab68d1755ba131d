//! `graft data import` / `graft data sample` against the reference implementations, on
//! files generated here (`tests/data_import/make.py`: PIL, torchvision transforms v2,
//! transformers' `ASTFeatureExtractor`, the `ffmpeg` program):
//!
//! - decoding JPEG exactly as PIL does (both libjpeg-turbo: every chroma subsampling,
//!   progressive, gray), whole or only a crop box's region; PNG exact;
//! - the crop exact, the antialiased `resized_crop` within 1 level (bilinear, bicubic),
//!   normalisation bit-exact;
//! - the eval transform (short side, center crop, normalise) end to end through
//!   `import` + `sample --eval` within 1 level; the training view deterministic in
//!   the seed and the same for any number of workers;
//! - ImageFolder class order, CSV/JSONL manifests, WebDataset tars;
//! - hostile files converted as PIL converts them or skipped with the reason;
//!   `--strict`;
//! - the AST filter bank within 1e-3 of `ASTFeatureExtractor`;
//! - VideoMAE's eval clip from an mp4 (through ffmpeg) and from a frame folder;
//! - an import interrupted at every shard continues to the same dataset;
//! - `data synth --format files`: PNG frame folders import back to the tensors, WAVs
//!   import to filter banks whose loudest band is the label's.

mod common;

use common::scratch::temp_dir;
use graft::data::decode::decode_image;
use graft::data::safetensors::SafeFile;
use graft::data::transform::{crop, decode_jpeg_box, resize, to_chw, CropBox, Interpolation, Normalize};
use graft::data::Dataset;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The generated files (once per test process, shared by the tests: a static is never
/// dropped, so this directory stays, and the next run replaces it).
fn files() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("data-import").join("files");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        let py = repo().join(".graft-env/venv/bin/python");
        assert!(py.exists(), "{} is missing: run `bash scripts/setup.sh`", py.display());
        let out = Command::new(&py).arg(repo().join("tests/data_import/make.py")).arg(&d).output().unwrap();
        assert!(out.status.success(), "make.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
        d
    })
}

fn meta() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(files().join("ref.json")).unwrap()).unwrap()
}

fn reference(key: &str) -> (Vec<i64>, Vec<f64>) {
    let f = SafeFile::open(&files().join("ref.safetensors")).unwrap();
    let t = f.entries().get(key).unwrap_or_else(|| panic!("no reference `{key}`")).clone();
    let bytes = std::fs::read(files().join("ref.safetensors")).unwrap();
    let raw = &bytes[(f.header.data_start + t.start) as usize..(f.header.data_start + t.end) as usize];
    let values = match t.tag.as_str() {
        "U8" => raw.iter().map(|&v| v as f64).collect(),
        "F32" => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        other => panic!("reference tag {other}"),
    };
    (t.shape, values)
}

fn graft(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_graft")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn ok(args: &[&str]) -> String {
    let (good, out, err) = graft(args);
    assert!(good, "graft {args:?} failed:\n{out}\n{err}");
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `graft data sample`'s tensors: (input values per sample, labels).
fn sampled(file: &Path, input: &str) -> (Vec<Vec<f64>>, Vec<i64>) {
    let f = SafeFile::open(file).unwrap();
    let x = f.tensor(input).unwrap();
    let labels = f.tensor("label").unwrap().as_i64().unwrap();
    let v = x.to_f64();
    let per = v.len() / labels.len();
    (v.chunks(per).map(|c| c.to_vec()).collect(), labels)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The reference closest to `x` among `keys`: (key, max difference).
fn closest(x: &[f64], keys: &[String]) -> (String, f64) {
    keys.iter().map(|k| (k.clone(), max_diff(x, &reference(k).1))).min_by(|a, b| a.1.total_cmp(&b.1)).unwrap()
}

const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// The largest difference in 8-bit levels of two normalised `[3, …]` tensors.
fn levels(a: &[f64], b: &[f64]) -> f64 {
    let plane = a.len() / 3;
    (0..a.len()).map(|i| (a[i] - b[i]).abs() * IMAGENET_STD[i / plane] * 255.0).fold(0.0, f64::max)
}

fn jpeg_names() -> Vec<String> {
    let m = meta();
    let variants = m["jpeg_variants"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string());
    (0..3).map(|k| format!("j{k}.jpg")).chain(variants).collect()
}

#[test]
fn decoding_matches_pil() {
    let dir = files().join("jpeg");
    for name in jpeg_names() {
        let img = decode_image(&std::fs::read(dir.join(&name)).unwrap()).unwrap();
        let (shape, want) = reference(&format!("jpeg/{name}"));
        assert_eq!(shape, vec![img.height as i64, img.width as i64, 3]);
        let got: Vec<f64> = img.data.iter().map(|&v| v as f64).collect();
        assert_eq!(max_diff(&got, &want), 0.0, "{name}: decoded otherwise than PIL");
    }
    let png = decode_image(&std::fs::read(files().join("images").join(meta()["box_src"].as_str().unwrap())).unwrap());
    let got: Vec<f64> = png.unwrap().data.iter().map(|&v| v as f64).collect();
    assert_eq!(max_diff(&got, &reference(&format!("pil/{}", meta()["box_src"].as_str().unwrap())).1), 0.0);
}

#[test]
fn a_crop_boxs_region_decodes_to_the_whole_images_pixels() {
    let dir = files().join("jpeg");
    for name in jpeg_names() {
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        let whole = decode_image(&bytes).unwrap();
        let (h, w) = (whole.height as i64, whole.width as i64);
        // Boxes at every corner and edge, 1-pixel ones, the whole image, and one that
        // leaves the image (decoded whole, zero-padded as the crop pads).
        let mut boxes = vec![(0, 0, h, w), (0, 0, 1, 1), (h - 1, w - 1, 1, 1), (-3, 5, 20, 20)];
        for k in 0..40i64 {
            let (bh, bw) = (1 + (k * 37) % h, 1 + (k * 53) % w);
            boxes.push(((k * 29) % (h - bh + 1), (k * 41) % (w - bw + 1), bh, bw));
        }
        for (top, left, bh, bw) in boxes {
            let b = CropBox { top, left, height: bh as u32, width: bw as u32 };
            let (region, placed) = decode_jpeg_box(&bytes, vec![3; 11], |iw, ih| {
                assert_eq!((iw, ih), (whole.width, whole.height));
                b
            })
            .unwrap()
            .expect("a JPEG decodes by region");
            assert_eq!(crop(&region, placed), crop(&whole, b), "{name}: box {b:?} decoded from {placed:?}");
            // Only the box's rows and columns, with at most two iMCUs of margin each way.
            if top >= 0 && left >= 0 {
                assert!(region.height as i64 <= bh + 2 * 16 && region.width as i64 <= bw + 4 * 16, "{name}: {b:?}");
            }
        }
    }
    // Not a JPEG: decoded whole by the caller, the box not picked.
    let png = std::fs::read(files().join("images").join(meta()["box_src"].as_str().unwrap())).unwrap();
    assert!(decode_jpeg_box(&png, Vec::new(), |_, _| unreachable!()).unwrap().is_none());
}

#[test]
fn crop_resize_and_normalise_match_torchvision() {
    let m = meta();
    let src = files().join("images").join(m["box_src"].as_str().unwrap());
    let img = decode_image(&std::fs::read(src).unwrap()).unwrap();
    for (k, b) in m["boxes"].as_array().unwrap().iter().enumerate() {
        let b: Vec<i64> = b.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let cb = CropBox { top: b[0], left: b[1], height: b[2] as u32, width: b[3] as u32 };
        let c = crop(&img, cb);
        let got: Vec<f64> = c.data.iter().map(|&v| v as f64).collect();
        assert_eq!(max_diff(&got, &reference(&format!("crop/{k}")).1), 0.0, "crop {k} is exact");
        for (name, interp) in [("bilinear", Interpolation::Bilinear), ("bicubic", Interpolation::Bicubic)] {
            let r = resize(&c, 32, 32, interp);
            let got: Vec<f64> = r.data.iter().map(|&v| v as f64).collect();
            let d = max_diff(&got, &reference(&format!("rc_{name}/{k}")).1);
            assert!(d <= 1.0, "resized_crop box {k} {name}: {d} levels from torchvision");
        }
    }
    for (stats, key) in [("imagenet", "normalized/box_src"), ("clip", "normalized_clip/box_src")] {
        let mut out = Vec::new();
        to_chw(&img, &Normalize::parse(stats, None).unwrap(), &mut out);
        let got: Vec<f64> = out.iter().map(|&v| v as f64).collect();
        assert_eq!(max_diff(&got, &reference(key).1), 0.0, "{stats} normalisation is exact");
    }
}

fn import_images(scratch: &Path, name: &str, root: &Path, extra: &[&str]) -> PathBuf {
    let out = scratch.join(name);
    let mut args =
        vec!["data", "import", "images", p(root), "--out", p(&out), "--image-size", "32", "--shard-size", "4"];
    args.extend_from_slice(extra);
    ok(&args);
    out
}

/// Import the test videos under `files()/root` (`video`: mp4 files decoded by the
/// ffmpeg program; `frames`: the same frames as folders, which the fixture writes only
/// where ffmpeg ran) as clips of 4 frames 2 apart at 32².
fn import_video(scratch: &Path, name: &str, root: &str) -> PathBuf {
    assert!(
        meta()["video_ok"].as_bool().unwrap(),
        "the ffmpeg program is missing: install it with `apt-get install -y ffmpeg` (scripts/test.sh does)"
    );
    let out = scratch.join(name);
    let src = files().join(root);
    ok(&[
        "data",
        "import",
        "video",
        p(&src),
        "--out",
        p(&out),
        "--image-size",
        "32",
        "--frames",
        "4",
        "--sampling-rate",
        "2",
    ]);
    out
}

#[test]
fn image_folder_eval_matches_torchvision() {
    let tmp = temp_dir("data-import-folder");
    let m = meta();
    let images: Vec<String> = m["images"].as_object().unwrap().keys().cloned().collect();
    for (interp, prefix, store) in [("bilinear", "eval", "pixels"), ("bicubic", "evalbicubic", "encoded")] {
        let ds = import_images(
            tmp.path(),
            &format!("folder-{interp}"),
            &files().join("images"),
            &["--interpolation", interp, "--store", store],
        );
        let d = Dataset::open(&ds).unwrap();
        assert_eq!(d.meta.class_names, vec!["C_cls", "a_cls", "b_cls"], "sorted as torchvision sorts");
        assert_eq!(d.len(), 9, "notes.txt is not a sample");
        let out = ds.with_extension("eval.safetensors");
        ok(&["data", "sample", p(&ds), "--eval", "--n", "9", "--out", p(&out)]);
        let (xs, labels) = sampled(&out, "image");
        let keys: Vec<String> = images.iter().map(|k| format!("{prefix}/{k}")).collect();
        let mut seen = std::collections::BTreeSet::new();
        for (x, label) in xs.iter().zip(&labels) {
            let (key, _) = closest(x, &keys);
            let rel = key.split_once('/').unwrap().1;
            let d = levels(x, &reference(&key).1);
            // PNGs decode exactly; the JPEGs add the decoders' difference.
            let bound = if rel.ends_with(".jpg") { 6.0 } else { 1.0 };
            assert!(d <= bound + 1e-3, "{interp} {rel}: {d} levels from torchvision");
            assert_eq!(*label, m["images"][rel].as_i64().unwrap(), "{rel}'s label");
            seen.insert(rel.to_string());
        }
        assert_eq!(seen.len(), 9, "every image once");
    }
}

#[test]
fn train_view_is_deterministic_and_workers_agree() {
    let tmp = temp_dir("data-import-train-view");
    let ds = import_images(tmp.path(), "train-view", &files().join("images"), &[]);
    let run = |seed: &str, workers: &str, name: &str| {
        let out = ds.with_extension(name);
        ok(&["data", "sample", p(&ds), "--train", "--seed", seed, "--n", "9", "--workers", workers, "--out", p(&out)]);
        std::fs::read(out).unwrap()
    };
    let a = run("1", "1", "a.safetensors");
    assert_eq!(a, run("1", "3", "b.safetensors"), "the same batch for any number of workers");
    assert_ne!(a, run("2", "1", "c.safetensors"), "another seed, other crops");
    let (xs, _) = sampled(&ds.with_extension("a.safetensors"), "image");
    assert!(xs.iter().all(|x| x.len() == 3 * 32 * 32 && x.iter().all(|v| v.is_finite() && v.abs() < 3.0)));
    let check = ok(&["data", "check", p(&ds)]);
    assert!(check.contains("stored as pixels") && check.contains("normalised imagenet"), "{check}");
}

#[test]
fn manifests_and_webdataset() {
    let tmp = temp_dir("data-import-manifests");
    let f = files();
    let csv = import_images(tmp.path(), "csv", &f.join("manifest.csv"), &["--split", "train"]);
    let d = Dataset::open(&csv).unwrap();
    assert_eq!(d.len(), 6, "the train rows of 9");
    assert_eq!(d.meta.classes, 3);
    let jsonl = import_images(tmp.path(), "jsonl", &f.join("manifest.jsonl"), &[]);
    let d = Dataset::open(&jsonl).unwrap();
    assert_eq!((d.len(), d.meta.class_names.clone()), (9, vec!["C_cls".into(), "a_cls".into(), "b_cls".into()]));
    let out = tmp.path().join("wds");
    let report = ok(&["data", "import", "images", p(&f.join("wds")), "--out", p(&out), "--image-size", "32"]);
    let d = Dataset::open(&out).unwrap();
    assert_eq!(d.len(), 4, "{report}");
    assert!(report.contains("s/0004: no `.cls` label"), "{report}");
    assert!(report.contains("s/0005: `.cls` holds `oops`"), "{report}");
    let (_, mut labels) = sampled(
        &{
            let s = out.with_extension("s.safetensors");
            ok(&["data", "sample", p(&out), "--eval", "--n", "4", "--out", p(&s)]);
            s
        },
        "image",
    );
    labels.sort();
    assert_eq!(labels, vec![0, 0, 1, 2], "labels from the .cls members (0, 1, 2, 0)");
}

#[test]
fn hostile_files_are_converted_or_skipped_with_the_reason() {
    let tmp = temp_dir("data-import-hostile");
    let root = files().join("hostile");
    let out = tmp.path().join("hostile");
    let report =
        ok(&["data", "import", "images", p(&root), "--out", p(&out), "--image-size", "32", "--store-short-side", "0"]);
    let m = meta();
    for name in m["hostile_skipped"].as_array().unwrap() {
        assert!(report.contains(name.as_str().unwrap()), "{name} not reported:\n{report}");
    }
    assert!(report.contains("decompression bomb"), "{report}");
    assert!(report.contains("empty file"), "{report}");
    let d = Dataset::open(&out).unwrap();
    assert_eq!(d.len(), m["hostile_converted"].as_array().unwrap().len(), "{report}");
    // Converted modes decode as PIL's convert("RGB") does.
    for name in ["gray.png", "palette.png", "rgba.png", "cmyk.jpg"] {
        let img = decode_image(&std::fs::read(root.join("x").join(name)).unwrap()).unwrap();
        let got: Vec<f64> = img.data.iter().map(|&v| v as f64).collect();
        let bound = if name.ends_with(".jpg") { 5.0 } else { 0.0 };
        let d = max_diff(&got, &reference(&format!("hostile/{name}")).1);
        assert!(d <= bound, "{name}: {d} levels from PIL");
    }
    let (good, _, err) =
        graft(&["data", "import", "images", p(&root), "--out", p(&tmp.path().join("strict")), "--strict"]);
    assert!(!good && err.contains("(--strict)") && err.lines().count() <= 2, "{err}");
    let (good, _, err) = graft(&["data", "import", "images", "/nonexistent/x", "--out", p(&tmp.path().join("none"))]);
    assert!(!good && err.contains("/nonexistent/x"), "{err}");
}

#[test]
fn audio_filter_bank_matches_the_ast_feature_extractor() {
    let tmp = temp_dir("data-import-audio");
    let out = tmp.path().join("audio");
    let report = ok(&[
        "data",
        "import",
        "audio",
        p(&files().join("audio")),
        "--out",
        p(&out),
        "--frames",
        "200",
        "--shard-size",
        "2",
    ]);
    assert!(report.contains("broken.wav"), "{report}");
    let d = Dataset::open(&out).unwrap();
    assert_eq!(d.len(), 5, "4 WAVs at 16 kHz and a resampled stereo one");
    let s = out.with_extension("s.safetensors");
    ok(&["data", "sample", p(&out), "--eval", "--n", "5", "--out", p(&s)]);
    let (xs, labels) = sampled(&s, "audio");
    let m = meta();
    let keys: Vec<String> = m["audio"].as_object().unwrap().keys().map(|k| format!("ast/{k}")).collect();
    let mut matched = 0;
    for (x, label) in xs.iter().zip(&labels) {
        assert_eq!(x.len(), 200 * 128);
        let (key, d) = closest(x, &keys);
        if d < 0.5 {
            assert!(d <= 1e-3, "{key}: {d} from ASTFeatureExtractor");
            assert_eq!(*label, m["audio"][key.strip_prefix("ast/").unwrap()].as_i64().unwrap());
            matched += 1;
        }
    }
    assert_eq!(matched, 4);
    let fb = tmp.path().join("audio-fbank");
    ok(&["data", "import", "audio", p(&files().join("audio")), "--out", p(&fb), "--frames", "200", "--store", "fbank"]);
    let s2 = fb.with_extension("s.safetensors");
    ok(&["data", "sample", p(&fb), "--eval", "--n", "5", "--out", p(&s2)]);
    let (ys, _) = sampled(&s2, "audio");
    let mut a: Vec<Vec<u64>> = xs.iter().map(|x| x.iter().map(|v| v.to_bits()).collect()).collect();
    let mut b: Vec<Vec<u64>> = ys.iter().map(|x| x.iter().map(|v| v.to_bits()).collect()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "precomputed and on-the-fly filter banks are the same");
}

#[test]
fn video_clips_match_videomae_eval() {
    let tmp = temp_dir("data-import-video");
    for (name, root) in [("mp4", "video"), ("frames", "frames")] {
        let out = import_video(tmp.path(), &format!("video-{name}"), root);
        let s = out.with_extension("s.safetensors");
        ok(&["data", "sample", p(&out), "--eval", "--n", "2", "--out", p(&s)]);
        let (xs, labels) = sampled(&s, "video");
        for (x, label) in xs.iter().zip(&labels) {
            let cls = if *label == 0 { "bars" } else { "noise" };
            let (shape, want) = reference(&format!("video/{cls}"));
            assert_eq!(shape, vec![3, 4, 32, 32]);
            let d = levels(x, &want);
            assert!(d <= 1.0 + 1e-3, "{name} {cls}: {d} levels from the reference clip");
        }
    }
}

#[test]
fn video_views_match_videomae_multi_view_testing() {
    let tmp = temp_dir("data-import-views");
    let out = import_video(tmp.path(), "video-views", "video");
    let mut seen = std::collections::BTreeSet::new();
    for k in 0..2 {
        for j in 0..3 {
            let s = out.with_extension(format!("v{k}{j}.safetensors"));
            let (clip, crop) = (format!("{k}/2"), format!("{j}/3"));
            let o = ok(&["data", "sample", p(&out), "--eval", "--clip", &clip, "--crop", &crop, "--out", p(&s)]);
            assert!(o.contains(&format!("clip {clip}, crop {crop}")), "{o}");
            let (xs, labels) = sampled(&s, "video");
            assert_eq!(xs.len(), 2);
            for (x, label) in xs.iter().zip(&labels) {
                let cls = if *label == 0 { "bars" } else { "noise" };
                let (shape, want) = reference(&format!("video/{cls}/clip{k}crop{j}"));
                assert_eq!(shape, vec![3, 4, 32, 32]);
                let d = levels(x, &want);
                assert!(d <= 1.0 + 1e-3, "{cls} clip {k} crop {j}: {d} levels from VideoMAE's view");
                seen.insert(x.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
        }
    }
    assert_eq!(seen.len(), 12, "the six views of each video differ");
    // A view index outside its count is a usage error naming the form.
    let bad = out.with_extension("x");
    let o = Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(["data", "sample", p(&out), "--eval", "--clip", "2/2", "--out", p(&bad)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected I/K"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn eval_averages_the_softmax_probabilities_of_every_view() {
    let tmp = temp_dir("data-import-eval-views");
    use graft::backend::{native::Native, Backend, Options, Plan};
    use graft::data::{EvalView, View};
    use graft::evaluate::{batch_inputs, evaluate, Evaluated, Views};
    let out = import_video(tmp.path(), "video-eval-views", "video");
    let spec = out.with_extension("graft");
    std::fs::write(
        &spec,
        "use std.vit\nmodel views {\n  input video: f32[B, 3, 4, 32, 32]\n  encoder v = vit3d(dim: 32, depth: 1, \
         heads: 2, classes: 2, frames: 4, tubelet: 2, patch: 8, image: 32)(video)\n  output logits = v\n}\n",
    )
    .unwrap();
    let c = graft::api::compile_spec(&spec, graft::pipeline::Mode::Train).unwrap();
    let plan = Plan::new(&c.graph);
    let params = plan.params().iter().map(|p| graft::params::init::random_values(p, 0)).collect();
    let mut exe = Native::default().prepare(&plan, params, &Options::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    let mut eval = |views| {
        let m = Evaluated { model: "views", plan: &plan, exe: exe.as_mut(), output: 0 };
        evaluate(m, &ds, 1, &[], views).unwrap()
    };
    let (r, one) = (eval(Views { clips: 2, crops: 3 }), eval(Views::ONE));
    assert_eq!((r.clips, r.crops, r.samples, one.clips), (2, 3, 2, 1));
    // Independently: every view's logits on both videos, softmax, mean over the six.
    let mut mean = [[0.0f64; 2]; 2];
    let mut labels = Vec::new();
    for v in EvalView::all(2, 3) {
        let b = graft::data::sample::first_samples(&ds.clone().with_view(View::Eval(v)), 2, 0).unwrap();
        let logits = exe.run(&batch_inputs(&plan, &b, &[]).unwrap()).unwrap().remove(0).1.to_f64();
        for (i, row) in logits.chunks(2).enumerate() {
            let z: f64 = row.iter().map(|x| x.exp()).sum();
            (0..2).for_each(|c| mean[i][c] += row[c].exp() / z / 6.0);
        }
        labels = b.labels;
    }
    let want = labels.iter().enumerate().map(|(i, &t)| -mean[i][t as usize].ln()).sum::<f64>() / 2.0;
    let correct = labels.iter().enumerate().filter(|&(i, &t)| mean[i][t as usize] >= mean[i][1 - t as usize]).count();
    assert!((r.loss - want).abs() <= 1e-6 * want, "loss {} vs {want}", r.loss);
    assert_eq!(r.correct as usize, correct);
    assert!((one.loss - r.loss).abs() > 1e-6, "six views score differently from the central one");
}

#[test]
fn data_bench_reads_the_epochs_it_is_asked_for() {
    let tmp = temp_dir("data-import-bench");
    let ds = import_images(tmp.path(), "bench", &files().join("images"), &["--store", "encoded"]);
    let n = Dataset::open(&ds).unwrap().len() as u64;
    for (view, want) in [("--train", n + 1), ("--eval", 3)] {
        let want_s = want.to_string();
        let out = ok(&["data", "bench", p(&ds), view, "--n", &want_s, "--batch", "2", "--workers", "2", "--json"]);
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        // Whole batches of 2 until at least `want` samples: into a second epoch for --train.
        let samples = r["samples"].as_u64().unwrap();
        assert!(samples >= want && samples < want + 2, "{view}: {out}");
        assert_eq!(r["workers"], 2);
        let rate = r["samples_per_s"].as_f64().unwrap();
        assert!(rate > 0.0 && (rate / 2.0 - r["samples_per_s_per_worker"].as_f64().unwrap()).abs() < 1e-9, "{out}");
    }
    let text = ok(&["data", "bench", p(&ds), "--batch", "4"]);
    assert!(text.contains(&format!("{n} samples")) && text.contains("samples/s"), "{text}");
}

#[test]
fn a_declared_normalisation_is_checked_against_the_dataset() {
    let tmp = temp_dir("data-import-norm");
    let out = import_video(tmp.path(), "video-norm", "frames");
    let spec = |name: &str, norm: &str| {
        let path = out.with_extension(format!("{name}.graft"));
        let text = format!(
            "use std.vit\nmodel views {{\n  input video: f32[B, 3, 4, 32, 32] {norm}\n  encoder v = vit3d(dim: 32, \
             depth: 1, heads: 2, classes: 2, frames: 4, tubelet: 2, patch: 8, image: 32)(video)\n  output logits = v\n}}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let check = |s: &Path| graft(&["data", "check", p(&out), "--spec", p(s)]);
    // The import's default is ImageNet's statistics, by name or by number.
    for (name, norm) in [
        ("named", "normalized imagenet"),
        ("numbers", "normalized mean [0.485, 0.456, 0.406] std [0.229, 0.224, 0.225]"),
    ] {
        let (good, text, err) = check(&spec(name, norm));
        assert!(good && text.contains("fits model views"), "{norm}: {text}{err}");
    }
    let (good, _, err) = check(&spec("clip", "normalized clip"));
    assert!(!good, "CLIP's statistics do not fit an ImageNet-normalised dataset");
    for part in [
        "input `video` is normalised with mean [0.485, 0.456, 0.406]",
        ".clip.graft:3:3",
        "normalized clip",
        "--mean clip",
    ] {
        assert!(err.contains(part), "missing {part:?} in {err}");
    }
    let (good, _, err) = check(&spec("half", "normalized mean [0.5, 0.5, 0.5] std [0.5, 0.5, 0.5]"));
    assert!(!good && err.contains("--mean 0.5,0.5,0.5 --std 0.5,0.5,0.5"), "{err}");
}

#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs --features fault-injection (the abort points)")]
fn an_interrupted_import_continues_to_the_same_dataset() {
    let tmp = temp_dir("data-import-resume");
    let root = files().join("images");
    let whole = import_images(tmp.path(), "resume-whole", &root, &[]);
    let shards = Dataset::open(&whole).unwrap().shards.len();
    assert!(shards >= 3);
    // Each shard is two durable writes (the shard, then the state), three steps each
    // (write, rename, sync): stop inside the first shard, the second, the second state.
    for at in [2, 8, 11] {
        let out = tmp.path().join(format!("resume-{at}"));
        let args = ["data", "import", "images", p(&root), "--out", p(&out), "--image-size", "32", "--shard-size", "4"];
        let status = Command::new(env!("CARGO_BIN_EXE_graft"))
            .args(args)
            .env("GRAFT_FAULT_ABORT_AT", at.to_string())
            .output()
            .unwrap()
            .status;
        assert!(!status.success(), "the import stops at write {at}");
        assert!(!out.join("dataset.json").exists());
        let report = ok(&args);
        if at > 6 {
            assert!(report.contains("resumed after"), "{report}");
        }
        for i in 0..shards {
            let f = format!("shard-{i:05}.safetensors");
            assert_eq!(std::fs::read(out.join(&f)).unwrap(), std::fs::read(whole.join(&f)).unwrap(), "{f} after {at}");
        }
        assert_eq!(
            std::fs::read(out.join("dataset.json")).unwrap(),
            std::fs::read(whole.join("dataset.json")).unwrap()
        );
        assert!(!out.join("import-state.json").exists());
    }
}

#[test]
fn training_reads_stored_inputs_and_refuses_a_mismatched_spec() {
    let tmp = temp_dir("data-import-reader");
    let ds = import_images(tmp.path(), "reader", &files().join("images"), &[]);
    let d = Dataset::open(&ds).unwrap();
    let mut labels = Vec::new();
    for b in d.batches(4, 7, 0, false) {
        let b = b.unwrap();
        let x = &b.inputs["image"];
        assert_eq!((x.dtype, &x.shape[1..]), (graft::ir::DType::F32, &[3i64, 32, 32][..]));
        labels.extend(b.labels);
    }
    labels.sort();
    assert_eq!(labels, vec![0, 0, 0, 1, 1, 1, 2, 2, 2], "every sample once per epoch");
    let again: Vec<_> = d.clone().with_workers(2).batches(4, 7, 0, false).map(|b| b.unwrap()).collect();
    let first: Vec<_> = d.with_workers(1).batches(4, 7, 0, false).map(|b| b.unwrap()).collect();
    assert_eq!(first, again, "batches are the same for any number of reader threads");
    let (good, _, err) = graft(&["data", "check", p(&ds), "--spec", "specs/vit_tiny.graft"]);
    assert!(!good && err.contains("input `image`") && err.contains("3, 224, 224"), "{err}");
}

#[test]
fn synthetic_frames_import_back_to_the_tensors() {
    let tmp = temp_dir("data-import-synth-frames");
    let frames = tmp.path().join("synth-frames");
    ok(&["data", "synth", "--task", "motion", "--format", "files", "--out", p(&frames), "--n", "12", "--seed", "5"]);
    let tensors = tmp.path().join("synth-tensors");
    ok(&["data", "synth", "--task", "motion", "--out", p(&tensors), "--n", "12", "--seed", "5"]);
    let ds = tmp.path().join("synth-imported");
    let s = graft::data::synth_files::FILES_STD.to_string();
    let std = format!("{s},{s},{s}");
    ok(&[
        "data",
        "import",
        "video",
        p(&frames),
        "--out",
        p(&ds),
        "--frames",
        "8",
        "--sampling-rate",
        "1",
        "--image-size",
        "32",
        "--crop-pct",
        "1",
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        &std,
        "--hflip",
        "0",
        "--min-scale",
        "1",
    ]);
    let imported = Dataset::open(&ds).unwrap();
    assert_eq!(imported.meta.class_names, vec!["down", "left", "right", "up"]);
    let want = Dataset::open(&tensors).unwrap();
    // Match samples by content: every imported clip is one of the tensors' to within a level.
    let mut reference: Vec<(Vec<f64>, String)> = Vec::new();
    for i in 0..want.shards.len() {
        let b = want.read_shard(i).unwrap();
        let v = b.inputs["video"].to_f64();
        let per = v.len() / b.len();
        for (j, l) in b.labels.iter().enumerate() {
            reference.push((v[j * per..(j + 1) * per].to_vec(), want.meta.class_name(*l as usize)));
        }
    }
    for train in [false, true] {
        let d = imported.clone().with_view(if train {
            graft::data::View::Train
        } else {
            graft::data::View::Eval(graft::data::EvalView::CENTRE)
        });
        let b = graft::data::sample::first_samples(&d, 12, 0).unwrap();
        let v = b.inputs["video"].to_f64();
        let per = v.len() / 12;
        for (j, l) in b.labels.iter().enumerate() {
            let x = &v[j * per..(j + 1) * per];
            let (d, name) = reference
                .iter()
                .map(|(r, n)| (max_diff(x, r.iter().map(|v| v.clamp(-1.2, 1.2)).collect::<Vec<_>>().as_slice()), n))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap();
            assert!(d <= 2.4 / 255.0 / 2.0 + 1e-4, "sample {j}: {d} from the tensor form");
            assert_eq!(name, &imported.meta.class_name(*l as usize));
        }
    }
}

#[test]
fn synthetic_wavs_import_to_filter_banks_that_keep_the_band() {
    let tmp = temp_dir("data-import-synth-wavs");
    let wavs = tmp.path().join("synth-wavs");
    let out = ok(&["data", "synth", "--task", "audio_pretrain", "--format", "files", "--out", p(&wavs), "--n", "16"]);
    assert!(out.contains("as WAV files") && out.contains("graft data import audio"), "{out}");
    assert!(wavs.join("band_0/").is_dir());
    let ds = tmp.path().join("synth-wavs-imported");
    let import = ["data", "import", "audio", p(&wavs), "--out", p(&ds), "--sample-rate", "16000"];
    ok(&[&import[..], &["--mel-bins", "32", "--frames", "64", "--layout", "1ft"]].concat());
    let d = Dataset::open(&ds).unwrap();
    assert_eq!(d.meta.class_names, vec!["band_0", "band_1", "band_2", "band_3"]);
    assert_eq!(d.meta.inputs["audio"].shape, vec![1, 32, 64], "the demo's audio model input");
    let file = ds.with_extension("sample.safetensors");
    ok(&["data", "sample", p(&ds), "--eval", "--n", "16", "--out", p(&file)]);
    let (x, labels) = sampled(&file, "audio");
    // The loudest mel bin (on average over time) lies in the label's band: centres 4.5,
    // 12, 19.5, 27 ± 1.5 bins.
    for (v, l) in x.iter().zip(&labels) {
        let mean = |m: usize| v[m * 64..(m + 1) * 64].iter().sum::<f64>();
        let peak = (0..32).max_by(|&a, &b| mean(a).total_cmp(&mean(b))).unwrap() as f64;
        let centre = [4.5, 12.0, 19.5, 27.0][*l as usize];
        assert!((peak - centre).abs() <= 2.5, "label {l}: loudest bin {peak}");
        // The tone pulses: on and off frames differ in its band.
        let row = &v[peak as usize * 64..(peak as usize + 1) * 64];
        let (lo, hi) = row.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(hi - lo > 0.3, "label {l}: the band's level only spans {lo}..{hi}");
    }
    assert_eq!(labels.iter().filter(|&&l| l == 2).count(), 4, "classes balanced");
}
