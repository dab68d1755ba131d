//! The data side end to end: synthetic datasets written, opened and streamed as
//! batches; determinism; class balance; corrupt shards reported with the shard and
//! the tensor named; missing modalities; fitting a dataset to a model's inputs.

mod common;

use common::scratch::temp_dir;
use graft::commands::data::{parse_drop, DataCmd};
use graft::data::safetensors::encode;
use graft::data::{synth, Batch, DataError, Dataset, HostTensor, SynthOptions, Task};
use graft::ir::{DType, Dim};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A synthetic dataset written to `root/name`.
fn make(root: &Path, name: &str, task: Task, n: usize, seed: u64, shard_size: usize, drop: &[(&str, f64)]) -> PathBuf {
    let d = root.join(name);
    let drop = drop.iter().map(|(m, f)| (m.to_string(), *f)).collect();
    synth(&SynthOptions { task, n, seed, shard_size, drop }, &d).expect("synth");
    d
}

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// One hash per sample of a batch (all its inputs and its label).
fn sample_hashes(b: &Batch) -> Vec<u64> {
    (0..b.len())
        .map(|i| {
            let mut h = fnv(0xcbf29ce484222325, &b.labels[i].to_le_bytes());
            for (name, t) in &b.inputs {
                let per = t.data.len() / b.len();
                h = fnv(fnv(h, name.as_bytes()), &t.data[i * per..(i + 1) * per]);
            }
            h
        })
        .collect()
}

fn all_samples(ds: &Dataset) -> Vec<u64> {
    let mut v: Vec<u64> = (0..ds.shards.len()).flat_map(|i| sample_hashes(&ds.read_shard(i).unwrap())).collect();
    v.sort();
    v
}

fn epoch(ds: &Dataset, bs: usize, seed: u64, epoch: u64, drop_last: bool) -> Vec<Batch> {
    ds.batches(bs, seed, epoch, drop_last).collect::<Result<_, _>>().expect("batches")
}

#[test]
fn every_sample_once_per_epoch() {
    let tmp = temp_dir("data-epoch");
    let d = make(tmp.path(), "roundtrip", Task::Multimodal, 100, 3, 16, &[]);
    let ds = Dataset::open(&d).unwrap();
    assert_eq!((ds.len(), ds.shards.len(), ds.meta.classes), (100, 7, 8));
    let reference = all_samples(&ds);
    for bs in [8, 7, 100, 1000] {
        let batches = epoch(&ds, bs, 11, 0, false);
        assert_eq!(batches.len(), ds.num_batches(bs, false));
        assert!(batches.iter().all(|b| b.len() <= bs && !b.is_empty()));
        assert_eq!(batches.iter().filter(|b| b.len() < bs).count(), usize::from(100 % bs != 0));
        let mut got: Vec<u64> = batches.iter().flat_map(sample_hashes).collect();
        got.sort();
        assert_eq!(got, reference, "batch size {bs}");
        for b in &batches {
            assert_eq!(b.inputs["video"].shape, vec![b.len() as i64, 3, 8, 32, 32]);
            assert_eq!(b.inputs["audio"].shape, vec![b.len() as i64, 1, 32, 64]);
            assert_eq!(b.inputs["pose"].as_f32().unwrap().len(), b.len() * 80);
        }
    }
    let dropped = epoch(&ds, 7, 11, 0, true);
    assert_eq!(dropped.len(), 14);
    assert!(dropped.iter().all(|b| b.len() == 7));
}

#[test]
fn same_seed_same_bytes_and_order_other_epoch_other_order() {
    let tmp = temp_dir("data-seed");
    let a = make(tmp.path(), "det-a", Task::Pretrain, 40, 5, 16, &[]);
    let b = make(tmp.path(), "det-b", Task::Pretrain, 40, 5, 16, &[]);
    for f in ["dataset.json", "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    let c = make(tmp.path(), "det-c", Task::Pretrain, 40, 6, 16, &[]);
    assert_ne!(
        std::fs::read(a.join("shard-00000.safetensors")).unwrap(),
        std::fs::read(c.join("shard-00000.safetensors")).unwrap()
    );
    // The samples do not depend on the shard size.
    let e = make(tmp.path(), "det-e", Task::Pretrain, 40, 5, 7, &[]);
    let (da, de) = (Dataset::open(&a).unwrap(), Dataset::open(&e).unwrap());
    assert_eq!(all_samples(&da), all_samples(&de));

    let order =
        |ds: &Dataset, seed, ep| epoch(ds, 4, seed, ep, false).iter().flat_map(sample_hashes).collect::<Vec<_>>();
    let first = order(&da, 1, 0);
    assert_eq!(first, order(&da, 1, 0));
    assert_eq!(first, order(&Dataset::open(&b).unwrap(), 1, 0));
    assert_ne!(first, order(&da, 1, 1));
    assert_ne!(first, order(&da, 2, 0));
}

#[test]
fn labels_are_balanced_for_every_task() {
    let tmp = temp_dir("data-balance");
    for (task, n) in [(Task::Pretrain, 80), (Task::AudioPretrain, 80), (Task::Motion, 80), (Task::Multimodal, 160)] {
        let d = make(tmp.path(), &format!("balance-{}", task.name()), task, n, 9, 32, &[]);
        let ds = Dataset::open(&d).unwrap();
        let mut counts = vec![0usize; ds.meta.classes];
        for b in epoch(&ds, 16, 0, 0, false) {
            b.labels.iter().for_each(|&l| counts[l as usize] += 1);
        }
        let mean = n as f64 / counts.len() as f64;
        assert!(counts.iter().all(|&c| (c as f64 - mean).abs() <= 0.2 * mean), "{}: {counts:?}", task.name());
        assert_eq!(ds.meta.class_names.len(), ds.meta.classes);
        let only: Vec<&str> = ds.meta.inputs.keys().map(String::as_str).collect();
        let want: &[&str] = match task {
            Task::AudioPretrain => &["audio"],
            Task::Multimodal => &["audio", "pose", "video"],
            _ => &["video"],
        };
        assert_eq!(only, want);
    }
}

/// A two-shard pretrain dataset whose second shard is edited; the first error from
/// opening it or streaming an epoch.
fn try_corrupt(root: &Path, name: &str, edit: impl FnOnce(&Path)) -> Option<DataError> {
    let d = make(root, name, Task::Pretrain, 20, 1, 10, &[]);
    edit(&d.join("shard-00001.safetensors"));
    match Dataset::open(&d) {
        Err(e) => Some(e),
        Ok(ds) => ds.batches(4, 0, 0, false).find_map(Result::err),
    }
}

fn corrupt(root: &Path, name: &str, edit: impl FnOnce(&Path)) -> DataError {
    try_corrupt(root, name, edit).unwrap_or_else(|| panic!("{name}: no error"))
}

/// Replace a shard by ten samples of constant video, edited by `f`.
fn reencode(path: &Path, f: impl FnOnce(&mut BTreeMap<String, HostTensor>)) {
    let video = HostTensor::from_f32(&[10, 3, 8, 32, 32], &vec![0.25; 10 * 3 * 8 * 32 * 32]).unwrap();
    let label = HostTensor::from_i64(&[10], &[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]).unwrap();
    let mut m = BTreeMap::from([("video".to_string(), video), ("label".to_string(), label)]);
    f(&mut m);
    std::fs::write(path, encode(&m, &BTreeMap::new()).unwrap()).unwrap();
}

fn assert_names(e: &DataError, key: Option<&str>) {
    let text = e.to_string();
    assert!(text.contains("shard-00001.safetensors"), "{text}");
    assert_eq!(e.key(), key, "{text}");
    if let Some(k) = key {
        assert!(text.contains(&format!("`{k}`")), "{text}");
    }
}

#[test]
fn corrupt_shards_are_named_errors() {
    let tmp = temp_dir("data-corrupt");
    // The unedited re-encoding is a valid shard: the errors below come from the edits.
    assert!(try_corrupt(tmp.path(), "bad-none", |p| reencode(p, |_| {})).is_none());
    let e = corrupt(tmp.path(), "bad-trunc", |p| {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    assert_names(&e, Some("video"));

    let e = corrupt(tmp.path(), "bad-garbage", |p| {
        std::fs::write(p, (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).unwrap()
    });
    assert!(matches!(e, DataError::NotSafetensors { .. }), "{e}");
    assert_names(&e, None);

    let e = corrupt(tmp.path(), "bad-nolabel", |p| reencode(p, |m| drop(m.remove("label"))));
    assert!(matches!(e, DataError::MissingLabel { .. }), "{e}");
    assert_names(&e, Some("label"));

    let e = corrupt(tmp.path(), "bad-dtype", |p| {
        reencode(p, |m| {
            m.insert("video".into(), HostTensor::from_f64(&[10, 3, 8, 32, 32], &vec![0.5; 10 * 24576]).unwrap());
        })
    });
    assert!(matches!(&e, DataError::WrongDtype { found, .. } if found == "f64"), "{e}");
    assert_names(&e, Some("video"));

    let e = corrupt(tmp.path(), "bad-label-dtype", |p| {
        reencode(p, |m| {
            m.insert("label".into(), HostTensor::from_i32(&[10], &[0; 10]).unwrap());
        })
    });
    assert!(matches!(e, DataError::WrongDtype { .. }), "{e}");
    assert_names(&e, Some("label"));

    let e = corrupt(tmp.path(), "bad-shape", |p| {
        reencode(p, |m| {
            m.insert("video".into(), HostTensor::from_f32(&[10, 3, 8, 32, 16], &vec![0.5; 10 * 12288]).unwrap());
        })
    });
    assert!(matches!(e, DataError::WrongShape { .. }), "{e}");
    assert_names(&e, Some("video"));

    let e = corrupt(tmp.path(), "bad-count", |p| {
        reencode(p, |m| {
            m.insert("video".into(), HostTensor::from_f32(&[9, 3, 8, 32, 32], &vec![0.5; 9 * 24576]).unwrap());
        })
    });
    assert!(matches!(e, DataError::SampleCount { found: 9, expected: 10, .. }), "{e}");
    assert_names(&e, Some("video"));

    let e = corrupt(tmp.path(), "bad-missing-input", |p| reencode(p, |m| drop(m.remove("video"))));
    assert!(matches!(e, DataError::MissingInput { .. }), "{e}");
    assert_names(&e, Some("video"));

    let e = corrupt(tmp.path(), "bad-extra", |p| {
        reencode(p, |m| {
            m.insert("vidoe".into(), HostTensor::from_f32(&[10], &[0.0; 10]).unwrap());
        })
    });
    assert!(matches!(e, DataError::UnknownTensor { .. }), "{e}");
    assert_names(&e, Some("vidoe"));

    let e = corrupt(tmp.path(), "bad-label-range", |p| {
        reencode(p, |m| {
            m.insert("label".into(), HostTensor::from_i64(&[10], &[0, 1, 2, 3, 4, 0, 1, 2, 3, 0]).unwrap());
        })
    });
    assert!(matches!(e, DataError::LabelRange { index: 4, value: 4, .. }), "{e}");
    assert_names(&e, Some("label"));
    // Every label is read when the dataset opens, before any batch: a run never
    // starts on data it would fail on later.
    let d = make(tmp.path(), "bad-label-open", Task::Pretrain, 20, 1, 10, &[]);
    reencode(&d.join("shard-00001.safetensors"), |m| {
        m.insert("label".into(), HostTensor::from_i64(&[10], &[0, 1, 2, 3, 0, 1, 2, 3, 0, -1]).unwrap());
    });
    let e = Dataset::open(&d).unwrap_err();
    assert!(matches!(e, DataError::LabelRange { index: 9, value: -1, .. }), "{e}");
    assert_names(&e, Some("label"));

    let e = corrupt(tmp.path(), "bad-absent", |p| std::fs::remove_file(p).unwrap());
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    assert_names(&e, None);

    let e = corrupt(tmp.path(), "bad-empty", |p| std::fs::write(p, b"").unwrap());
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");

    // A shard cut short after the dataset was opened (its header checked): found when
    // the shard is mapped for reading, named, never a fault on a missing page.
    let d = make(tmp.path(), "bad-shrunk", Task::Pretrain, 20, 1, 10, &[]);
    let ds = Dataset::open(&d).unwrap();
    let shard = d.join("shard-00001.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len - 100).unwrap();
    let e = ds.batches(4, 0, 0, false).find_map(Result::err).expect("the cut shard is an error");
    assert!(matches!(e, DataError::Truncated { key: Some(_), .. }), "{e}");
    assert_names(&e, e.key());
}

#[test]
fn corrupt_metadata_is_reported() {
    let tmp = temp_dir("data-meta");
    let d = make(tmp.path(), "bad-meta", Task::Motion, 12, 1, 8, &[]);
    let meta = d.join("dataset.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, text.replace("\"samples\": 12", "\"samples\": 13")).unwrap();
    let e = Dataset::open(&d).unwrap_err();
    assert!(matches!(e, DataError::Meta { .. }) && e.to_string().contains("dataset.json"), "{e}");
    // Absurd counts are refused before anything is allocated or opened.
    for (from, to) in [("\"shards\": 2", "\"shards\": 1000000000000"), ("\"classes\": 4", "\"classes\": 4000000000")] {
        std::fs::write(&meta, text.replace(from, to)).unwrap();
        let e = Dataset::open(&d).unwrap_err().to_string();
        assert!(e.contains("at most") && e.contains("dataset.json"), "{e}");
    }
    std::fs::write(&meta, "{ not json").unwrap();
    assert!(matches!(Dataset::open(&d).unwrap_err(), DataError::Meta { .. }));
    std::fs::remove_file(&meta).unwrap();
    assert!(matches!(Dataset::open(&d).unwrap_err(), DataError::Io { .. }));
    // A batch size of 0 is an error item, then the stream ends.
    let ds = Dataset::open(make(tmp.path(), "bs0", Task::Motion, 4, 1, 8, &[])).unwrap();
    let items: Vec<_> = ds.batches(0, 0, 0, false).collect();
    assert!(items.len() == 1 && items[0].is_err());
}

#[test]
fn dropped_modality_gives_batches_without_it() {
    let tmp = temp_dir("data-drop");
    let d = make(tmp.path(), "drop", Task::Multimodal, 96, 2, 16, &[("audio", 0.5)]);
    let ds = Dataset::open(&d).unwrap();
    let without: usize = ds.shards.iter().filter(|s| !s.has("audio")).map(|s| s.samples).sum();
    assert_eq!(without, 48);
    assert!(ds.shards.iter().all(|s| s.has("pose") && s.has("video")));
    let batches = epoch(&ds, 8, 0, 0, false);
    assert_eq!((batches.len(), ds.num_batches(8, false)), (12, 12));
    fn on_another_thread<T: Send + 'static>(_: &T) {}
    on_another_thread(&ds.batches(8, 0, 0, false));
    let lacking: usize = batches.iter().filter(|b| !b.has("audio")).map(Batch::len).sum();
    assert_eq!(lacking, 48);
    for b in &batches {
        if let Some(a) = b.inputs.get("audio") {
            assert_eq!(a.shape[0] as usize, b.len());
        }
    }
    // Same seed without --drop: identical samples apart from the missing audio.
    let full = Dataset::open(make(tmp.path(), "drop-full", Task::Multimodal, 96, 2, 16, &[])).unwrap();
    for i in 0..ds.shards.len() {
        let (x, y) = (ds.read_shard(i).unwrap(), full.read_shard(i).unwrap());
        assert_eq!((&x.labels, &x.inputs["video"]), (&y.labels, &y.inputs["video"]));
    }

    let f32_ = DType::F32;
    let shape = |dims: &[i64]| {
        std::iter::once(Dim::Sym("B".into())).chain(dims.iter().map(|&d| Dim::Fixed(d))).collect::<Vec<_>>()
    };
    let mut model = vec![
        ("video".to_string(), f32_, shape(&[3, 8, 32, 32]), false),
        ("audio".to_string(), f32_, shape(&[1, 32, 64]), true),
        ("pose".to_string(), f32_, shape(&[8, 5, 2]), true),
    ];
    let notes = ds.check_against(&model).unwrap();
    assert!(notes.iter().any(|n| n.contains("`audio` is absent from")), "{notes:?}");
    model[1].3 = false;
    let e = ds.check_against(&model).unwrap_err().to_string();
    assert!(e.contains("input `audio` is required by the model but absent from"), "{e}");
}

#[test]
fn check_against_a_compiled_spec() {
    let tmp = temp_dir("data-fit");
    let d = make(tmp.path(), "fit", Task::Multimodal, 16, 0, 16, &[]);
    let ds = Dataset::open(&d).unwrap();
    let c = graft::api::compile_file(Path::new("specs/cm3t_video_audio_pose.graft"), graft::pipeline::Mode::Train)
        .ok()
        .expect("gallery spec compiles");
    let inputs = graft::data::model_inputs(&graft::report::inspect(&c));
    assert_eq!(inputs.len(), 3);
    let e = ds.check_against(&inputs).unwrap_err().to_string();
    // The gallery model wants 16 frames of 224×224 and a 128×1024 spectrogram.
    assert!(e.contains("input `video`: the model takes f32[B, 3, 16, 224, 224]"), "{e}");
    assert!(e.contains("input `audio`"), "{e}");
    // `graft data check --spec` also compares the classes with the head.
    let check = graft::commands::data::CheckArgs {
        dir: d.clone(),
        spec: Some(PathBuf::from("specs/cm3t_video_audio_pose.graft")),
    };
    let e = graft::commands::data::run(&DataCmd::Check(check)).unwrap_err().to_string();
    assert!(e.contains("has 8 classes (dataset.json), but model `cm3t_video_audio_pose`'s output"), "{e}");
    // Symbols bind per-sample dims consistently.
    let sym = |s: &str| Dim::Sym(s.into());
    let model = vec![
        (
            "video".to_string(),
            DType::F32,
            vec![sym("B"), Dim::Fixed(3), sym("T"), Dim::Fixed(32), Dim::Fixed(32)],
            false,
        ),
        ("pose".to_string(), DType::F32, vec![sym("B"), sym("T"), Dim::Fixed(5), Dim::Fixed(2)], true),
    ];
    let notes = ds.check_against(&model).unwrap();
    assert!(notes.iter().any(|n| n.contains("`audio` is not a model input")), "{notes:?}");
    let bad = vec![
        model[0].clone(),
        ("pose".to_string(), DType::F32, vec![sym("B"), Dim::Fixed(8), sym("T"), Dim::Fixed(2)], true),
    ];
    let e = ds.check_against(&bad).unwrap_err().to_string();
    assert!(e.contains("`T` is 5 here but 8 in input `video`"), "{e}");
    let wrong_dtype = vec![("video".to_string(), DType::F16, model[0].2.clone(), false)];
    assert!(ds.check_against(&wrong_dtype).unwrap_err().to_string().contains("the model takes f16"));
}

#[test]
fn command_line_and_options() {
    let tmp = temp_dir("data-cli");
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: DataCmd,
    }
    let out = tmp.path().join("cli");
    let args = [
        "graft",
        "synth",
        "--task",
        "multimodal",
        "--out",
        out.to_str().unwrap(),
        "--n",
        "40",
        "--shard-size",
        "8",
        "--seed",
        "4",
        "--drop",
        "audio:0.4",
        "--drop",
        "pose:0.2",
    ];
    let cli = Cli::try_parse_from(args).unwrap();
    graft::commands::data::run(&cli.cmd).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.shards.iter().filter(|s| !s.has("audio")).count(), 2);
    assert_eq!(ds.shards.iter().filter(|s| !s.has("pose")).count(), 1);
    assert_eq!(ds.meta.seed, Some(4));
    let check = Cli::try_parse_from(["graft", "check", out.to_str().unwrap()]).unwrap();
    graft::commands::data::run(&check.cmd).unwrap();
    assert!(Cli::try_parse_from(["graft", "synth", "--task", "audio_pretrain", "--out", "x"]).is_ok());
    assert!(Cli::try_parse_from(["graft", "synth", "--task", "nope", "--out", "x"]).is_err());
    assert!(parse_drop("audio").is_err() && parse_drop("audio:1.5").is_err() && parse_drop("audio:x").is_err());
    assert_eq!(parse_drop("pose:0.25").unwrap(), ("pose".to_string(), 0.25));

    // Options synth refuses.
    let bad = |task, drop: &[(&str, f64)], n, shard| {
        let drop = drop.iter().map(|(m, f)| (m.to_string(), *f)).collect();
        synth(&SynthOptions { task, n, seed: 0, shard_size: shard, drop }, &tmp.path().join("refused"))
            .unwrap_err()
            .to_string()
    };
    assert!(bad(Task::Multimodal, &[("video", 0.5)], 8, 4).contains("required input"));
    assert!(bad(Task::Pretrain, &[("audio", 0.5)], 8, 4).contains("has no input `audio`"));
    assert!(bad(Task::Motion, &[], 0, 4).contains("at least 1"));

    // A directory holding other files is not overwritten; a previous dataset is replaced.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let e =
        synth(&SynthOptions { task: Task::Motion, n: 4, seed: 0, shard_size: 4, drop: vec![] }, &foreign).unwrap_err();
    assert!(e.to_string().contains("notes.txt"), "{e}");
    let again = make(tmp.path(), "replace", Task::Motion, 30, 0, 4, &[]);
    synth(&SynthOptions { task: Task::Motion, n: 8, seed: 0, shard_size: 4, drop: vec![] }, &again).unwrap();
    let files = std::fs::read_dir(&again).unwrap().count();
    assert_eq!(files, 3, "stale shards removed");
    assert_eq!(Dataset::open(&again).unwrap().len(), 8);
}
