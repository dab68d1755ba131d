//! The fuzz test's mutations (a number changed, a word replaced by another of the
//! language) applied to the small specs — the demo models and the conformance cases —
//! and every mutant that compiles run on both backends, train and infer mode, with
//! seeded parameters and inputs at batch 1: the native backend and LibTorch agree
//! (‖native − torch‖ / ‖torch‖ ≤ 1e-5), or both refuse the inputs.
//!
//! The mutants come from a fixed seed, so a failure names a reproducible spec; the
//! test fails if too few mutants compile to mean anything.
#![cfg(feature = "torch")]

mod common;

use common::compare::{compare, named, Tol};
use graft::api::compile_str;
use graft::backend::native::Native;
use graft::backend::torch::TorchBackend;
use graft::backend::{inputs, Backend, Options, Plan};
use graft::params::init::random_values;
use graft::pipeline::{Compiled, Mode};
use graft::tensor::HostTensor;
use std::path::{Path, PathBuf};

/// Mutants tried, and how many must compile and run for the test to count.
const TRIES: usize = 160;
const MIN_RUN: usize = 60;
/// Mutants larger than this (parameter or input elements) are skipped: the debug
/// build's kernels are slow, and size is not what this test is about.
const MAX_ELEMENTS: u64 = 3_000_000;

fn small_specs() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<(PathBuf, String)> = ["specs/demo", "tests/conformance/specs"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "graft"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    v.sort();
    v
}

/// SplitMix64: the mutants do not depend on a crate's generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Words a replacement draws from: the built-in functions, placements, flags.
fn words() -> Vec<&'static str> {
    use graft::lower::builtins::{PRIMITIVES, SCALAR_FNS, TENSOR_FNS};
    const MORE: &[&str] = &["after", "before", "parallel", "true", "false", "optional", "frozen", "0", "1", "2"];
    PRIMITIVES.iter().chain(TENSOR_FNS).chain(SCALAR_FNS).chain(MORE).copied().collect()
}

/// One mutant of `text`: an integer literal replaced by another small one, or a word
/// (outside comments) replaced by a word of the language.
fn mutate(text: &str, rng: &mut Rng) -> String {
    let code: Vec<&str> = text.lines().collect();
    // (line, start, end) of every integer literal and every word outside comments.
    let mut numbers = Vec::new();
    let mut names = Vec::new();
    for (li, line) in code.iter().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let start = i;
            if b[i].is_ascii_digit() {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                if line[start..i].bytes().all(|c| c.is_ascii_digit()) {
                    numbers.push((li, start, i));
                }
            } else if b[i].is_ascii_alphabetic() || b[i] == b'_' {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                names.push((li, start, i));
            } else {
                i += 1;
            }
        }
    }
    let (pool, replacement): (&[(usize, usize, usize)], String) = if rng.below(3) < 2 && !numbers.is_empty() {
        const SMALL: &[u32] = &[1, 2, 3, 4, 6, 8, 12, 16, 24, 32];
        (&numbers, SMALL[rng.below(SMALL.len())].to_string())
    } else {
        let w = words();
        (&names, w[rng.below(w.len())].to_string())
    };
    let (li, s, e) = pool[rng.below(pool.len())];
    let mut lines: Vec<String> = code.iter().map(|l| l.to_string()).collect();
    lines[li].replace_range(s..e, &replacement);
    lines.join("\n") + "\n"
}

fn elements(shape: &[i64]) -> u64 {
    shape.iter().map(|&d| d.max(1) as u64).product()
}

/// Outputs on `backend` with parameters and inputs from fixed seeds.
fn outputs(backend: &dyn Backend, plan: &Plan) -> Result<Vec<(String, HostTensor)>, String> {
    let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
    let given = inputs::random(plan, 1, 1).map_err(|e| e.to_string())?;
    let bound = inputs::bind(plan, given, graft::ir::DType::F32).map_err(|e| e.to_string())?;
    let mut exe = backend.prepare(plan, params, &Options::default()).map_err(|e| e.to_string())?;
    exe.run(&bound.values).map_err(|e| e.to_string())
}

/// Small enough to run in a debug build.
fn small(c: &Compiled) -> bool {
    let plan = Plan::new(&c.graph);
    let params: u64 = plan.params().iter().map(|p| elements(&p.shape)).sum();
    let inputs: u64 = plan
        .inputs()
        .iter()
        .map(|i| i.ty.shape.iter().map(|d| d.fixed().unwrap_or(1).max(1) as u64).product::<u64>())
        .sum();
    params <= MAX_ELEMENTS && inputs <= MAX_ELEMENTS
}

#[test]
fn mutants_of_small_specs_agree_on_both_backends() {
    let specs = small_specs();
    let mut rng = Rng(0x0067_7261_6674);
    let (mut compiled, mut ran) = (0, 0);
    for _ in 0..TRIES {
        let (path, text) = &specs[rng.below(specs.len())];
        let mutant = mutate(text, &mut rng);
        for mode in [Mode::Infer, Mode::Train] {
            let Ok(c) = compile_str("mutant.graft", path.parent(), &mutant, mode) else { continue };
            compiled += 1;
            if !small(&c) {
                continue;
            }
            let plan = Plan::new(&c.graph);
            let want = outputs(&TorchBackend, &plan);
            let got = outputs(&Native { threads: 1, ..Native::default() }, &plan);
            let at = format!("a mutant of {} ({mode:?}):\n{mutant}", path.display());
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    if let Err(e) = compare(&named(&got), &named(&want), Tol::Norm { rel: 1e-5 }) {
                        panic!("{at}\nnative vs torch:\n{e}");
                    }
                    ran += 1;
                }
                (Err(_), Err(_)) => {}
                (got, want) => panic!("{at}\nonly one backend refused: native {:?}, torch {:?}", got.err(), want.err()),
            }
        }
    }
    eprintln!("{TRIES} mutants: {compiled} compilations, {ran} compared on both backends");
    assert!(ran >= MIN_RUN, "only {ran} mutants compiled and ran (of {compiled} compilations)");
}
