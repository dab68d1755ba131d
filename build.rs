//! Build script: when the `torch` feature links LibTorch (through torch-sys), embed an
//! rpath to its lib folder so the binary runs without LD_LIBRARY_PATH, and check that
//! the LibTorch found is the PyTorch version tch was built for. With `cuda-graphs`,
//! also compile the C++ shim `csrc/cuda_graph.cpp` against that LibTorch's headers;
//! with `distributed`, `csrc/dist.cpp` (c10d; NCCL too with `nccl`).

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
    // Build scripts see the package's features as cfg (CARGO_FEATURE_CUDA_GRAPHS).
    #[cfg(feature = "torch")]
    optim_shim(lib);
    #[cfg(feature = "cuda-graphs")]
    cuda_graph_shim(lib);
    #[cfg(feature = "distributed")]
    dist_shim(lib);
}

/// Compile `csrc/optim.cpp` (the multi-tensor AdamW, clipping and non-finite check
/// `graft train` uses; tch exposes no tensor-list ops). CPU headers only: the same ops
/// dispatch to their CUDA kernels at run time when the tensors are on a GPU.
#[cfg(feature = "torch")]
fn optim_shim(lib: &Path) {
    println!("cargo:rerun-if-changed=csrc/optim.cpp");
    println!("cargo:rerun-if-changed=csrc/ffi_guard.hpp");
    let lib = lib.canonicalize().unwrap_or_else(|e| panic!("LibTorch lib folder {}: {e}", lib.display()));
    let torch = lib.parent().expect("LibTorch lib folder has a parent");
    let mut build = cc::Build::new();
    build.cpp(true).pic(true).std("c++17").define("_GLIBCXX_USE_CXX11_ABI", "1").define("GLOG_USE_GLOG_EXPORT", None);
    // -isystem: warnings in our file only, not in LibTorch's headers.
    for dir in [torch.join("include"), torch.join("include/torch/csrc/api/include")] {
        build.flag("-isystem").flag(dir.display().to_string());
    }
    build.file("csrc/optim.cpp").compile("graft_optim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// Compile `csrc/dist.cpp` (c10d's TCPStore and ProcessGroupGloo; ProcessGroupNCCL with
/// `nccl`). Gloo's headers are not in the wheel: `csrc/gloo_stub` stands in for them.
/// NCCL needs `nccl.h` (pip nvidia-nccl-cu13) and CCCL (pip nvidia-cuda-cccl), or
/// `GRAFT_CUDA_INCLUDE` / `GRAFT_NCCL_INCLUDE`; it compiles and links without a GPU.
#[cfg(feature = "distributed")]
fn dist_shim(lib: &Path) {
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    println!("cargo:rerun-if-changed=csrc/ffi_guard.hpp");
    println!("cargo:rerun-if-changed=csrc/gloo_stub");
    let lib = lib.canonicalize().unwrap_or_else(|e| panic!("LibTorch lib folder {}: {e}", lib.display()));
    let torch = lib.parent().expect("LibTorch lib folder has a parent");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_GLOO", None);
    #[cfg_attr(not(feature = "nccl"), allow(unused_mut))]
    let mut dirs = vec![
        Path::new("csrc/gloo_stub").to_path_buf(),
        torch.join("include"),
        torch.join("include/torch/csrc/api/include"),
    ];
    #[cfg(feature = "nccl")]
    {
        println!("cargo:rerun-if-env-changed=GRAFT_CUDA_INCLUDE");
        println!("cargo:rerun-if-env-changed=GRAFT_NCCL_INCLUDE");
        let env_dir = |k: &str| std::env::var_os(k).map(std::path::PathBuf::from);
        let cuda = env_dir("GRAFT_CUDA_INCLUDE").unwrap_or_else(|| torch.join("../nvidia/cu13/include"));
        let nccl = env_dir("GRAFT_NCCL_INCLUDE").unwrap_or_else(|| torch.join("../nvidia/nccl/include"));
        for (dir, header, pkg) in [
            (&cuda, "cuda_runtime_api.h", "nvidia-cuda-runtime"),
            (&cuda, "cccl/nv/target", "nvidia-cuda-cccl"),
            (&nccl, "nccl.h", "nvidia-nccl-cu13"),
        ] {
            if !dir.join(header).exists() {
                panic!(
                    "the nccl feature needs {header} (pip {pkg}); {} has none: run scripts/setup.sh or set GRAFT_CUDA_INCLUDE / GRAFT_NCCL_INCLUDE",
                    dir.display()
                );
            }
        }
        if !lib.join("libtorch_cuda.so").exists() {
            panic!("the nccl feature needs a CUDA build of LibTorch; {} has no libtorch_cuda.so", lib.display());
        }
        build.define("GRAFT_NCCL", None).define("USE_C10D_NCCL", None).define("USE_CUDA", None);
        dirs.extend([cuda.join("cccl"), cuda, nccl]);
    }
    // -isystem: warnings in our file only, not in LibTorch's headers.
    for dir in dirs {
        build.flag("-isystem").flag(dir.display().to_string());
    }
    build.file("csrc/dist.cpp").compile("graft_dist");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    #[cfg(feature = "nccl")]
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-lc10_cuda,--as-needed");
}

/// Compile `csrc/cuda_graph.cpp` and link it with libtorch_cuda and libc10_cuda. Needs no
/// GPU and no CUDA toolkit: the CUDA runtime headers come from the pip packages
/// nvidia-cuda-runtime and nvidia-cuda-crt (python/requirements.txt), or from
/// `GRAFT_CUDA_INCLUDE` (a folder holding cuda_runtime_api.h and crt/host_defines.h).
#[cfg(feature = "cuda-graphs")]
fn cuda_graph_shim(lib: &Path) {
    println!("cargo:rerun-if-changed=csrc/cuda_graph.cpp");
    println!("cargo:rerun-if-changed=csrc/ffi_guard.hpp");
    println!("cargo:rerun-if-env-changed=GRAFT_CUDA_INCLUDE");
    // The lib folder may sit behind the .graft-env/torch link: resolve it to find the
    // pip packages next to torch.
    let lib = lib.canonicalize().unwrap_or_else(|e| panic!("LibTorch lib folder {}: {e}", lib.display()));
    let torch = lib.parent().expect("LibTorch lib folder has a parent");
    if !lib.join("libtorch_cuda.so").exists() || !lib.join("libc10_cuda.so").exists() {
        panic!(
            "the cuda-graphs feature needs a CUDA build of LibTorch; {} has no libtorch_cuda.so / libc10_cuda.so",
            lib.display()
        );
    }
    let cuda = match std::env::var_os("GRAFT_CUDA_INCLUDE") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => torch.join("../nvidia/cu13/include"),
    };
    for header in ["cuda_runtime_api.h", "crt/host_defines.h"] {
        if !cuda.join(header).exists() {
            panic!(
                "the cuda-graphs feature needs the CUDA runtime headers; {} has no {header}: run scripts/setup.sh \
                 (it installs nvidia-cuda-runtime and nvidia-cuda-crt) or set GRAFT_CUDA_INCLUDE",
                cuda.display()
            );
        }
    }
    let mut build = cc::Build::new();
    build.cpp(true).pic(true).std("c++17").define("_GLIBCXX_USE_CXX11_ABI", "1").define("GLOG_USE_GLOG_EXPORT", None);
    // -isystem: warnings in our file only, not in LibTorch's headers.
    for dir in [torch.join("include"), torch.join("include/torch/csrc/api/include"), cuda] {
        build.flag("-isystem").flag(dir.display().to_string());
    }
    build.file("csrc/cuda_graph.cpp").compile("graft_cuda_graph");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cuda");
    println!("cargo:rustc-link-lib=dylib=c10_cuda");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-lc10_cuda,--as-needed");
}
