//! Crafted files, built here: weights files are data and are never executed or
//! trusted; files that are not regular files are refused before they are read.
//!
//! Each case runs under [`within`]: it must answer (an error, never a hang or a panic)
//! within the per-case time limit.

use graft::ir::{DType, ParamInfo, ParamSource};
use graft::params::{Bindings, Declared, Leaves, WeightFile};
use graft::safetensors::SafeFile;
use graft::tensor::HostTensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

fn scratch() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crafted-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run `f` on its own thread; its result, or a failure if it takes longer than the
/// harness's limit (a FIFO that blocks, a file read without end).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(super::TIMEOUT).unwrap_or_else(|_| panic!("{what}: no answer within {:?}", super::TIMEOUT))
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// A zip archive of stored (uncompressed) members, as `torch.save` writes them.
fn zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    let u16le = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let u32le = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    for (name, data) in members {
        let (offset, crc, n) = (out.len() as u32, crc32(data), data.len() as u32);
        u32le(&mut out, 0x0403_4b50);
        for x in [20, 0, 0, 0, 0] {
            u16le(&mut out, x);
        }
        for x in [crc, n, n] {
            u32le(&mut out, x);
        }
        u16le(&mut out, name.len() as u16);
        u16le(&mut out, 0);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        u32le(&mut central, 0x0201_4b50);
        for x in [20, 20, 0, 0, 0, 0] {
            u16le(&mut central, x);
        }
        for x in [crc, n, n] {
            u32le(&mut central, x);
        }
        for x in [name.len() as u16, 0, 0, 0, 0] {
            u16le(&mut central, x);
        }
        u32le(&mut central, 0);
        u32le(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_offset, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    u32le(&mut out, 0x0605_4b50);
    for x in [0, 0, members.len() as u16, members.len() as u16] {
        u16le(&mut out, x);
    }
    u32le(&mut out, cd_len);
    u32le(&mut out, cd_offset);
    u16le(&mut out, 0);
    out
}

/// The pickle of `{"w": tensor}` whose view (`size`, `stride`) is far larger than its
/// 4-byte storage: what LibTorch's loader accepted, reading past the buffer.
fn out_of_bounds_pickle() -> Vec<u8> {
    let mut p = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x01tq\x07QK\x00".to_vec();
    p.extend_from_slice(b"J\x00\x00\x00\x40\x85q\x08J\x00\x00\x00\x10\x85q\x09\x89ccollections\nOrderedDict\nq\x0a)Rq\x0btq\x0cRq\x0ds.");
    p
}

#[test]
fn pytorch_checkpoints_are_refused_with_the_conversion_never_loaded() {
    let d = scratch();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // torch.save's zip: a view larger than its storage (and a far stride).
        (
            "oob.pt",
            zip(&[
                ("archive/data.pkl", &out_of_bounds_pickle()),
                ("archive/data/0", &[0u8; 4]),
                ("archive/version", b"3\n"),
            ]),
        ),
        // A TorchScript module whose __setstate__ loops for ever.
        (
            "script.pt",
            zip(&[
                ("archive/data.pkl", b"\x80\x02c__torch__\nM\nq\x00)\x81}b."),
                (
                    "archive/code/__torch__.py",
                    b"class M(Module):\n  def __setstate__(self, state: Dict[str, Tensor]):\n    while True:\n      print(\"pwned\")\n",
                ),
                ("archive/constants.pkl", b"\x80\x02)."),
                ("archive/version", b"3\n"),
            ]),
        ),
        // A legacy pickle with a __reduce__ payload.
        ("reduce.bin", b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.".to_vec()),
    ];
    for (name, bytes) in cases {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = path.clone();
        let err = within(name, move || WeightFile::open(&p).err().map(|e| e.to_string())).expect("refused");
        assert!(err.contains(name) && err.contains("a PyTorch checkpoint"), "{err}");
        // The exact conversion, with this file's name and the output beside it.
        assert!(err.contains("weights_only=True") && err.contains("save_file("), "{err}");
        assert!(err.contains(&path.with_extension("safetensors").display().to_string()), "{err}");
    }
}

/// A safetensors file of two f32[4] tensors with the given header entries.
fn st(header: &str) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&[0u8; 32]);
    out
}

#[test]
fn overlapping_and_duplicate_safetensors_headers_are_refused() {
    let e = |b: Vec<u8>| SafeFile::from_bytes(Path::new("w.safetensors"), b).err().expect("refused").to_string();
    let t = |n: &str, a: u32| format!(r#""{n}":{{"dtype":"F32","shape":[4],"data_offsets":[{a},{}]}}"#, a + 16);
    // Two tensors sharing the same bytes.
    let err = e(st(&format!("{{{},{}}}", t("a", 0), t("b", 0))));
    assert!(err.contains("overlaps") && err.contains("w.safetensors"), "{err}");
    // The same name twice (a JSON parser would keep the second silently).
    let err = e(st(&format!("{{{},{}}}", t("a", 0), t("a", 16))));
    assert!(err.contains("appears twice") && err.contains("`a`"), "{err}");
    // A gap, and an offset past the end.
    assert!(e(st(&format!("{{{}}}", t("a", 16)))).contains("gap"));
    assert!(e(st(&format!("{{{},{}}}", t("a", 0), t("b", 32)))).contains("gap"));
    let ok = SafeFile::from_bytes(Path::new("w"), st(&format!("{{{},{}}}", t("a", 0), t("b", 16)))).unwrap();
    assert_eq!(ok.entries().len(), 2);
}

#[test]
fn files_that_are_not_regular_are_refused_before_reading() {
    let d = scratch();
    let fifo = d.join("weights.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
    assert!(made, "mkfifo is needed to build the FIFO case");
    let f = fifo.clone();
    let err = within("FIFO as weights", move || WeightFile::open(&f).err().map(|e| e.to_string())).expect("refused");
    assert!(err.contains("a FIFO") && err.contains("weights.fifo"), "{err}");
    let f = fifo.clone();
    let err = within("FIFO as safetensors", move || SafeFile::open(&f).err().map(|e| e.to_string())).unwrap();
    assert!(err.contains("a FIFO"), "{err}");
    let err = within("/dev/zero as weights", || WeightFile::open(Path::new("/dev/zero")).err().map(|e| e.to_string()));
    assert!(err.unwrap().contains("a character device"));
    // A spec, and a spec's `use`, read /dev/zero never.
    let r = within("check /dev/zero", || graft::lower::load_file(Path::new("/dev/zero")).is_err());
    assert!(r);
    let r = within("use /dev/zero", || {
        let text =
            "use \"/dev/zero\"\nmodel m {\n  input x: f32[B, 4]\n  encoder e = linear(4, 4)(x)\n  output y = e\n}\n";
        match graft::lower::load_str("u.graft", Some(Path::new("/")), text) {
            Err((sources, diags)) => graft::api::render_failure(&graft::pipeline::Failure::User(sources, diags), false),
            Ok(_) => String::new(),
        }
    });
    assert!(r.contains("a character device"), "{r}");
    // A symlink loop is not "missing".
    #[cfg(unix)]
    {
        let (a, b) = (d.join("loop-a.safetensors"), d.join("loop-b.safetensors"));
        let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let err = load_one(&a, false).unwrap_err();
        assert!(!err.contains("does not exist") && err.contains("symbolic links"), "{err}");
    }
}

/// Load one f32[2, 2] parameter `m.w` (key `w`) from `file`.
fn load_one(file: &Path, allow_nonfinite: bool) -> Result<(), String> {
    let p = ParamInfo {
        path: "m.w".into(),
        shape: vec![2, 2],
        dtype: DType::F32,
        trainable: false,
        component: "m".into(),
        source: ParamSource::Weights { binding: "m".into(), key: "w".into() },
    };
    let b = Bindings {
        files: BTreeMap::from([("m".to_string(), file.to_path_buf())]),
        allow_nonfinite,
        ..Bindings::default()
    };
    Leaves::load([&p], &b, &Declared::default(), &[], 0).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn non_finite_weights_are_an_error_naming_file_and_tensor() {
    let d = scratch();
    for (name, v) in [("nan.safetensors", f32::NAN), ("inf.safetensors", f32::NEG_INFINITY)] {
        let path = d.join(name);
        let t = HostTensor::from_f32(&[2, 2], &[1.0, 2.0, v, 4.0]).unwrap();
        graft::safetensors::write(&path, &[("w".to_string(), t)], &BTreeMap::new()).unwrap();
        let err = load_one(&path, false).unwrap_err();
        assert!(err.contains(name) && err.contains("tensor `w` is not finite") && err.contains("element 2"), "{err}");
        assert!(err.contains("--allow-nonfinite"), "{err}");
        assert!(load_one(&path, true).is_ok());
    }
}
