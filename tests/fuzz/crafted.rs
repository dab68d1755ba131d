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
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| super::common::scratch::process_dir("crafted")).clone()
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

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let made = std::process::Command::new("mkfifo").arg(path).status().map(|s| s.success()).unwrap_or(false);
    assert!(made, "mkfifo is needed to build the FIFO case");
}

/// `graft ARGS`: (exit code, stdout + stderr), or a failure after the time limit.
fn graft(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > super::TIMEOUT * 4 {
            let _ = child.kill();
            panic!("graft {args:?}: no answer within {:?}", super::TIMEOUT * 4);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or_else(|| panic!("graft {args:?} died of a signal:\n{text}"));
    assert!(!text.contains("panicked"), "graft {args:?} panicked:\n{text}");
    (code, text)
}

const MESSY: &str = "model m {\n  input x: f32[B, 4]\n  encoder e = linear(4, 4)(x)\noutput   y=e\n}\n";

#[test]
fn fmt_reads_only_regular_files_of_a_spec_size() {
    let d = scratch().join("fmt-files");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let fifo = d.join("pipe.graft");
    mkfifo(&fifo);
    let (code, out) = graft(&["fmt".as_ref(), fifo.as_os_str()]);
    assert!(code == 1 && out.contains("pipe.graft: a FIFO (named pipe), not a regular file"), "{out}");
    for dev in ["/dev/zero", "/dev/urandom"] {
        let (code, out) = graft(&["fmt".as_ref(), dev.as_ref()]);
        assert!(code == 1 && out.contains(&format!("{dev}: a character device")), "{out}");
    }
    let sparse = d.join("sparse.graft");
    std::fs::File::create(&sparse).unwrap().set_len(3 << 30).unwrap();
    let (code, out) = graft(&["fmt".as_ref(), "--check".as_ref(), sparse.as_os_str()]);
    assert!(code == 1 && out.contains("sparse.graft: 3221225472 bytes, over the limit of 1048576 bytes"), "{out}");
    std::fs::remove_file(&sparse).unwrap();
}

#[cfg(unix)]
#[test]
fn fmt_walks_no_directory_links_and_writes_through_file_links() {
    use std::os::unix::fs::PermissionsExt;
    let d = scratch().join("fmt-links");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("specs")).unwrap();
    // Two links back to the directory: the walk must not follow them.
    std::os::unix::fs::symlink("..", d.join("specs/up")).unwrap();
    std::os::unix::fs::symlink(".", d.join("specs/here")).unwrap();
    let real = d.join("specs/real.graft");
    std::fs::write(&real, MESSY).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out) = graft(&["fmt".as_ref(), d.as_os_str()]);
    assert_eq!((code, out.matches("formatted").count()), (0, 1), "{out}");
    // A spec that is a link: the target is formatted, the link stays, the mode stays.
    std::fs::write(&real, MESSY).unwrap();
    let link = d.join("link.graft");
    std::os::unix::fs::symlink("specs/real.graft", &link).unwrap();
    let (code, out) = graft(&["fmt".as_ref(), link.as_os_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::read_to_string(&real).unwrap().contains("\n  output y = e\n"));
    assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o600);
    // The longest legal file name: its temporary name must fit too.
    let long = d.join(format!("{}.graft", "s".repeat(244)));
    std::fs::write(&long, MESSY).unwrap();
    let (code, out) = graft(&["fmt".as_ref(), long.as_os_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read_to_string(&long).unwrap().contains("\n  output y = e\n"));
}

#[test]
fn a_spec_on_one_line_formats_in_one_pass() {
    let one = "module m(d: int) { in x a = linear(d, d)(x) bbbbbb = gelu(a) out bbbbbb } model q { input x: f32[B, 4] input longer: f32[B, 4] encoder e = m(d: 4)(x) output y = e }";
    let once = graft::fmt::format_text("one.graft", one).map_err(|e| format!("{e:?}")).unwrap();
    let twice = graft::fmt::format_text("one.graft", &once).map_err(|e| format!("{e:?}")).unwrap();
    assert_eq!(once, twice);
    assert!(once.contains("  a      = linear(d, d)(x)\n  bbbbbb = gelu(a)\n"), "{once}");
}

fn lora_info(sites: &[&str]) -> graft::lower::AdapterInfo {
    graft::lower::AdapterInfo {
        module: "lora".into(),
        args: BTreeMap::from([("rank".to_string(), 4.0), ("alpha".to_string(), 8.0)]),
        sites: sites.iter().map(|s| s.to_string()).collect(),
    }
}

fn peft_dir(name: &str, config: Option<&str>) -> PathBuf {
    let d = scratch().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    if let Some(c) = config {
        std::fs::write(d.join(graft::params::peft::CONFIG), c).unwrap();
    }
    d
}

fn peft_check(dir: &Path, info: graft::lower::AdapterInfo) -> String {
    let dir = dir.to_path_buf();
    within("PEFT check", move || graft::params::peft::check("l", &dir, Some(&info)).err().map(|e| e.to_string()))
        .unwrap_or_default()
}

#[test]
fn peft_configs_are_bounded_regular_files_named_in_errors() {
    let info = || lora_info(&["v.blocks.0.attn.qkv"]);
    let d = peft_dir("peft-missing", None);
    let e = peft_check(&d, info());
    assert!(e.contains("peft-missing/adapter_config.json") && e.contains("No such file"), "{e}");
    mkfifo(&d.join("adapter_config.json"));
    let e = peft_check(&d, info());
    assert!(e.contains("adapter_config.json: a FIFO (named pipe)"), "{e}");
    std::fs::remove_file(d.join("adapter_config.json")).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/dev/zero", d.join("adapter_config.json")).unwrap();
        let e = peft_check(&d, info());
        assert!(e.contains("adapter_config.json: a character device"), "{e}");
        std::fs::remove_file(d.join("adapter_config.json")).unwrap();
        std::os::unix::fs::symlink("adapter_config.json", d.join("adapter_config.json")).unwrap();
        let e = peft_check(&d, info());
        assert!(e.contains("adapter_config.json") && !e.contains("No such file"), "{e}");
        std::fs::remove_file(d.join("adapter_config.json")).unwrap();
    }
    std::fs::File::create(d.join("adapter_config.json")).unwrap().set_len(4 << 30).unwrap();
    let e = peft_check(&d, info());
    assert!(e.contains("adapter_config.json: 4294967296 bytes, over the limit of 1048576 bytes"), "{e}");
    std::fs::remove_file(d.join("adapter_config.json")).unwrap();
    // As weights, the directory's problem is named too (not "a directory").
    let e = WeightFile::open(&d).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("adapter_model.safetensors"), "{e}");
}

#[test]
fn peft_fields_are_honoured_or_refused_by_name() {
    let cfg = |extra: &str| format!(r#"{{"peft_type": "LORA", "r": 4, "lora_alpha": 8{extra}}}"#);
    let sites = ["v.blocks.0.attn.qkv", "v.blocks.1.attn.qkv"];
    let d = peft_dir("peft-fields", Some(&cfg(r#", "target_modules": ".*blocks\\.0\\.attn\\.qkv""#)));
    let e = peft_check(&d, lora_info(&sites));
    assert!(e.contains("do not cover 1 of the adapter's 2 sites (first: blocks.1.attn.qkv)"), "{e}");
    let d = peft_dir("peft-fields", Some(&cfg(r#", "target_modules": ".*\\.qkv""#)));
    assert_eq!(peft_check(&d, lora_info(&sites)), "");
    let d = peft_dir("peft-fields", Some(&cfg(r#", "target_modules": ["qkv"], "layers_to_transform": [0]"#)));
    let e = peft_check(&d, lora_info(&sites));
    assert!(e.contains("layers_to_transform [0]") && e.contains("first: blocks.1.attn.qkv"), "{e}");
    let d = peft_dir("peft-fields", Some(&cfg(r#", "target_modules": ["qkv"], "exclude_modules": ["x"]"#)));
    assert!(peft_check(&d, lora_info(&sites)).contains("exclude_modules"));
    // A lora at a top-level site (a head): refused with the reason, no panic.
    let d = peft_dir("peft-fields", Some(&cfg("")));
    let e = peft_check(&d, lora_info(&["cls"]));
    assert!(e.contains("`cls`, a top-level site of the model"), "{e}");
    let spec = scratch().join("head-lora.graft");
    std::fs::write(
        &spec,
        "use std.adapters\nmodel m {\n  input x: f32[B, 4]\n  head cls = linear(4, 2)(x)\n  adapter l = lora(rank: 4, alpha: 8) at cls parallel\n  output y = cls\n  train l\n}\n",
    )
    .unwrap();
    let out = scratch().join("head-lora-out");
    let (code, text) = graft(&[
        "export".as_ref(),
        "peft".as_ref(),
        spec.as_os_str(),
        "--run".as_ref(),
        d.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(code == 1 && text.contains("top-level site"), "{text}");
}
