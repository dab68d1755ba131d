//! No public safe function of graft can reach undefined behaviour: the program below,
//! which has no `unsafe` and once made the native backend dereference an arbitrary
//! pointer (`SharedMut`'s public fields and the public, safe `Mem::read`), must not
//! compile against graft's public API.
//!
//! The check type-checks small crates against the graft library this test was built
//! with (`rustc --emit=metadata`, well under a second): the unsound program must fail
//! with privacy errors naming the native backend's internal modules, and a control
//! program over the public API must compile (so a broken harness cannot pass).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The program the native backend's public surface used to accept.
const UNSOUND: &str = r#"
use graft::backend::native::exec::Mem;
use graft::backend::native::pool::SharedMut;
use graft::backend::native::program::{Buffer, Store, View};

fn main() {
    let arena = SharedMut(8 as *mut f32, usize::MAX);
    let buffers = [Buffer { len: 1, first: 0, last: 0, offset: 0 }];
    let mem = Mem { arena, buffers: &buffers, params: &[], ids: &[] };
    let view = View::plain(Store::Arena(0), 0, vec![1]);
    println!("{}", mem.read(&view)[0]);
}
"#;

/// What a user of the native backend writes: the public API only.
const CONTROL: &str = r#"
use graft::backend::native::ew::EwStrategy;
use graft::backend::native::Native;

fn main() {
    let backend = Native { threads: 1, elementwise: EwStrategy::Jit, ..Native::default() };
    let mut x = [0.5f32; 4];
    graft::backend::native::math::exp_inplace(&mut x);
    println!("{backend:?} {x:?}");
}
"#;

/// The deps directory this test runs from, and the graft library in it that was built
/// last (cargo rebuilds this test's library before running it, so the newest one is
/// built from the current sources).
fn graft_rlib() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let newest = std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("libgraft-") && n.ends_with(".rlib")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .unwrap_or_else(|| panic!("no libgraft-*.rlib in {}", deps.display()));
    (deps, newest)
}

/// The rustc of the toolchain that built this test (next to `$CARGO`), else `rustc`.
fn rustc() -> PathBuf {
    std::env::var_os("CARGO")
        .map(|c| Path::new(&c).with_file_name(format!("rustc{}", std::env::consts::EXE_SUFFIX)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("rustc"))
}

/// Type-check `source` as a binary crate using graft; the compiler's stderr on failure.
fn check(name: &str, source: &str) -> Result<(), String> {
    let (deps, rlib) = graft_rlib();
    // Removed when the check ends, pass or fail (rustc has finished by then).
    let tmp = tempfile::Builder::new().prefix("graft-sound-api-").tempdir().unwrap();
    let dir = tmp.path();
    let src = dir.join(format!("{name}.rs"));
    std::fs::write(&src, source).unwrap();
    let out = Command::new(rustc())
        .args(["--edition", "2021", "--crate-type", "bin", "--emit=metadata", "--crate-name", name])
        .arg("-L")
        .arg(format!("dependency={}", deps.display()))
        .arg("--extern")
        .arg(format!("graft={}", rlib.display()))
        .arg("--out-dir")
        .arg(dir)
        .arg(&src)
        .output()
        .expect("run rustc");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn the_public_api_compiles() {
    if let Err(e) = check("control", CONTROL) {
        panic!("the control program over graft's public API does not compile:\n{e}");
    }
}

#[test]
fn the_unsound_program_does_not_compile() {
    let err = match check("unsound", UNSOUND) {
        Ok(()) => panic!("a program with no `unsafe` can reach graft's raw-memory internals again"),
        Err(e) => e,
    };
    for module in ["exec", "pool", "program"] {
        assert!(
            err.contains(&format!("module `{module}` is private")),
            "the unsound program should fail because `native::{module}` is private, but:\n{err}"
        );
    }
}
