//! Compile time, source → verified IR (the verifier runs after every pass:
//! [`CompileOptions::verify_each_pass`]), for ViTs
//! from Ti to L with a multi-head adapter in every block and an M2PT pathway on every
//! linear layer of every block. Run: `cargo bench --bench compile`.
//!
//! `final_verification/vit_l/*` times the stage that runs in every build (release
//! included) on its own: the finished ViT-L graph through [`Verified::new`], to set
//! against the whole compile of the same model.

use criterion::BatchSize;
use criterion::{criterion_group, criterion_main, Criterion};
use graft::api::compile_str_with;
use graft::ir::Verified;
use graft::pipeline::{CompileOptions, Mode};
use std::hint::black_box;

/// (name, dim, depth, heads)
const SIZES: &[(&str, i64, i64, i64)] =
    &[("vit_ti", 192, 12, 3), ("vit_s", 384, 12, 6), ("vit_b", 768, 12, 12), ("vit_l", 1024, 24, 16)];

pub fn spec(dim: i64, depth: i64, heads: i64) -> String {
    format!(
        r#"
use std.vit
use std.adapters
model bench {{
  input image: f32[B, 3, 224, 224]
  backbone target = vit(dim: {dim}, depth: {depth}, heads: {heads}, classes: 1000)(image) weights "t.safetensors"
  backbone aux = vit(dim: {dim}, depth: {depth}, heads: {heads}, classes: 0) weights "a.safetensors"
  adapter mhva = multi_head_adapter(dim: {dim}, heads: 4, bottleneck: 64) at target.blocks[*].mlp parallel
  pathway cmr = reparam(lambda: 0.0, aux: trainable)
      from aux.blocks[*].{{attn.qkv, attn.proj, mlp.fc1, mlp.fc2}}
      into target.blocks[*].{{attn.qkv, attn.proj, mlp.fc1, mlp.fc2}}
  output logits = target
  train mhva, cmr, target.head
}}
"#
    )
}

fn bench(c: &mut Criterion) {
    let opts = CompileOptions { verify_each_pass: true };
    let compile_str = |name: &str, dir: Option<&std::path::Path>, src: &str, mode: Mode| {
        compile_str_with(name, dir, src, mode, &opts)
    };
    let mut group = c.benchmark_group("compile");
    for &(name, dim, depth, heads) in SIZES {
        let src = spec(dim, depth, heads);
        for (mode, m) in [(Mode::Train, "train"), (Mode::Infer, "infer")] {
            // Fail loudly rather than time an error path.
            let c = compile_str("bench.graft", None, &src, mode).unwrap_or_else(|_| panic!("{name} does not compile"));
            black_box(c.graph.len());
            group.bench_function(format!("{name}/{m}"), |b| {
                b.iter(|| {
                    black_box(compile_str("bench.graft", None, black_box(&src), mode).ok().map(|c| c.graph.len()))
                })
            });
        }
    }
    group.finish();
    let mut group = c.benchmark_group("final_verification");
    let (name, dim, depth, heads) = SIZES[SIZES.len() - 1];
    let src = spec(dim, depth, heads);
    for (mode, m) in [(Mode::Train, "train"), (Mode::Infer, "infer")] {
        let c = compile_str("bench.graft", None, &src, mode).unwrap_or_else(|_| panic!("{name} does not compile"));
        let bindings = c.weights.keys().cloned().collect();
        let graph = c.graph.graph().clone();
        group.bench_function(format!("{name}/{m}"), |b| {
            b.iter_batched(
                || graph.clone(),
                |g| black_box(Verified::new(g, &bindings).map(|v| v.len()).ok()),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
