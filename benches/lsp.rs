//! `graft lsp` latency: one keystroke's diagnostics (the whole document checked again,
//! as the server does on every change) on a ViT-L with a multi-head adapter in every
//! block and an M2PT pathway on every linear layer, valid and with an error typed in;
//! and a hover and a selector completion on it. Run: `cargo bench --bench lsp`.

use criterion::{criterion_group, criterion_main, Criterion};
use graft::lsp::State;
use lsp_server::{Request, RequestId};
use serde_json::json;
use std::hint::black_box;

const SPEC: &str = r#"use std.vit
use std.adapters

model bench {
  input image: f32[B, 3, 224, 224]
  backbone target = vit(dim: 1024, depth: 24, heads: 16, classes: 1000)(image)
      weights "t.safetensors"
  backbone aux = vit(dim: 1024, depth: 24, heads: 16, classes: 0)
      weights "a.safetensors"
  adapter mhva = multi_head_adapter(dim: 1024, heads: 4, bottleneck: 64)
      at target.blocks[*].mlp parallel
  pathway cmr = reparam(lambda: 0.0, aux: trainable)
      from aux.blocks[*].{attn.qkv, attn.proj, mlp.fc1, mlp.fc2}
      into target.blocks[*].{attn.qkv, attn.proj, mlp.fc1, mlp.fc2}
  output logits = target
  train mhva, cmr, target.head
}
"#;

fn bench(c: &mut Criterion) {
    let uri = lsp_types::Url::parse("file:///bench/vit_l.graft").unwrap();
    let mut state = State::default();
    let first = state.update(uri.clone(), SPEC.to_string());
    assert_eq!(first.params["diagnostics"], json!([]), "the bench spec must compile");
    let mut group = c.benchmark_group("lsp");
    group.bench_function("keystroke_diagnostics_vit_l", |b| {
        b.iter(|| black_box(state.update(uri.clone(), black_box(SPEC.to_string()))))
    });
    let broken = SPEC.replace("bottleneck: 64", "bottleneck: 64, botleneck: 3");
    group.bench_function("keystroke_diagnostics_vit_l_error", |b| {
        b.iter(|| black_box(state.update(uri.clone(), black_box(broken.clone()))))
    });
    state.update(uri.clone(), SPEC.to_string());
    let line = SPEC.lines().position(|l| l.contains("pathway cmr")).unwrap() as u32;
    let hover = json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": 11 } });
    group.bench_function("hover_pathway_vit_l", |b| {
        b.iter(|| {
            black_box(state.request(Request::new(RequestId::from(1), "textDocument/hover".into(), hover.clone())))
        })
    });
    let typing = SPEC.replace("  train mhva, cmr, target.head", "  train target.blocks[*].");
    state.update(uri.clone(), typing.clone());
    let line = typing.lines().position(|l| l.contains("train target")).unwrap() as u32;
    let complete = json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": 25 } });
    group.bench_function("complete_selector_vit_l", |b| {
        b.iter(|| {
            black_box(state.request(Request::new(
                RequestId::from(1),
                "textDocument/completion".into(),
                complete.clone(),
            )))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
