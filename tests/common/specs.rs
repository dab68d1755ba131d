//! Specs several test files train: written once here.

/// A tiny video ViT (width 32, depth 2, 2 heads, 8 frames of 32×32) with a 4-class head,
/// trained whole: the model of `graft data synth --task pretrain`.
pub const TINY_PRETRAIN: &str = r#"use std.vit

model pre {
  input video: f32[B, 3, 8, 32, 32]
  encoder video_vit = vit3d(dim: 32, depth: 2, heads: 2, classes: 0, frames: 8, tubelet: 2, patch: 8, image: 32)(video)
  head cls = linear(32, 4)(video_vit)
  output logits = cls
  train video_vit, cls
}
"#;
