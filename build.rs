//! Build script: when the `torch` feature links LibTorch (through torch-sys), embed an
//! rpath to its lib folder so the binary runs without LD_LIBRARY_PATH, and check that
//! the LibTorch found is the PyTorch version tch was built for.

use std::path::Path;

const TORCH_VERSION: &str = "2.11.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Set by torch-sys for crates that depend on it directly; absent without `torch`.
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    let lib = Path::new(&lib);
    // With LIBTORCH pointing at the pip wheel torch-sys checks no version: do it here.
    let version_py = lib.join("../version.py");
    println!("cargo:rerun-if-changed={}", version_py.display());
    if let Ok(text) = std::fs::read_to_string(&version_py) {
        let found = text
            .lines()
            .find_map(|l| l.strip_prefix("__version__ = "))
            .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_owned())
            .unwrap_or_default();
        if found.split('+').next() != Some(TORCH_VERSION) {
            panic!(
                "LibTorch in {} is PyTorch {found:?}; tch needs {TORCH_VERSION}: run scripts/setup.sh",
                lib.display()
            );
        }
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // rustc links with --as-needed, which would drop libtorch_cuda and leave CUDA unregistered.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
    }
}
