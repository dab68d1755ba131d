#!/usr/bin/env bash
# The test command: sets up what the project needs (idempotent), then formatting,
# lints, and every test twice over: the default build (no LibTorch: the compiler,
# the native backend and its kernels, the tools) and the LibTorch build (its
# backend, training, the conformance tests against timm / transformers / plain
# PyTorch). The closing line counts both.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The video tests decode with the ffmpeg program (Debian's package), as users do.
if ! command -v ffmpeg >/dev/null 2>&1; then
  echo "== installing ffmpeg"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "ffmpeg is missing: install it (apt-get install -y ffmpeg) and rerun" >&2
    exit 1
  fi
fi
# libjpeg-turbo (the JPEG decoder, built from source) assembles its SIMD kernels with
# nasm; without it the build is plain C: the same pixels, slower.
if ! command -v nasm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing nasm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nasm >/dev/null
  else
    echo "note: nasm is missing, so libjpeg-turbo builds without SIMD (apt-get install -y nasm)" >&2
  fi
fi
if ! command -v cargo-insta >/dev/null 2>&1; then
  echo "== installing cargo-insta"
  cargo install cargo-insta --version 1.49.0 --locked --quiet
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== clippy (core, no LibTorch)"
cargo clippy --all-targets -- -D warnings
echo "== clippy (torch backend)"
cargo clippy --all-targets --features torch -- -D warnings
echo "== clippy (cuda-graphs and c10d/NCCL shims; build without a GPU or CUDA toolkit)"
cargo clippy --all-targets --features cuda-graphs,nccl -- -D warnings
echo "== clippy (the fault-injection build of the durability tests)"
cargo clippy --all-targets --features cuda-graphs,nccl,fault-injection -- -D warnings
echo "== editor grammar (vscode-tmgrammar-test, pinned by editors/vscode/package-lock.json)"
(cd editors/vscode && npm ci --no-audit --no-fund --loglevel=error && npm test --silent)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "== tests, default build (no LibTorch: the compiler, the native backend, the tools)"
# Snapshots only the torch tests use are not "unreferenced" here, so that check runs
# with the full build below; CI=true still fails on a changed or pending snapshot.
CI=true cargo test 2>&1 | tee "$log"
# Test files that compile to nothing without `torch` (their tests need LibTorch).
awk '/Running tests\// { file = $2 } /^running 0 tests/ && file { print file; file = "" } /^running [1-9]/ { file = "" }' "$log" \
  | sed 's|^tests/||; s|\.rs$||' | paste -sd' ' - | sed 's/^/torch-only test files (no tests in the default build): /'
if grep -qw avx512f /proc/cpuinfo; then
  echo "== tests that need AVX-512 (this CPU has it)"
  cargo test --lib -- --ignored packed::gelu::tests::the_gelu_gives softmax256::tests::the_avx512 2>&1 | tee -a "$log"
fi
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  echo "== tests that need AVX2 and FMA (this CPU has them)"
  cargo test --lib -- --ignored packed::gelu::tests::the_avx2_gelu softmax256::tests::the_avx2 2>&1 | tee -a "$log"
fi
echo "== tests, LibTorch build (fails on changed, pending or unreferenced snapshots)"
CI=true cargo insta test --features cuda-graphs,nccl --check --unreferenced reject 2>&1 | tee -a "$log"
echo "== durability tests (a build with fault injection at every durable step)"
cargo test --features cuda-graphs,nccl,fault-injection --test durability 2>&1 | tee -a "$log"
# One closing line for the whole run: both builds' tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed (default and LibTorch builds)\n", p, f }' "$log"
