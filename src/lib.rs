//! graft: a declarative model-graph compiler for parameter-efficient multimodal
//! transformers.
//!
//! A spec file (`.graft`) names a pretrained backbone, where adapters go, which
//! modalities enter where, which layers borrow weights from another model (M2PT
//! pathways) and what trains. graft checks it, compiles it to a verified graph IR
//! ([`ir`]), freezes what must not train and folds re-parameterizations for inference.
//! See ARCHITECTURE.md for the code map; [`pipeline::compile`] is the whole flow.

// The library returns errors and data; only the application (`commands/`) writes
// to the terminal.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod api;
pub mod backend;
pub mod bounds;
pub mod commands;
pub mod data;
pub mod diag;
pub mod durable;
pub mod evaluate;
pub mod export;
pub mod fault;
pub mod flops;
pub mod fmt;
pub mod fuse;
pub mod input_file;
pub mod ir;
pub mod keymap;
pub mod lower;
pub mod lsp;
pub mod params;
pub mod passes;
pub mod pipeline;
pub mod report;
pub mod rng;
pub mod safetensors;
pub mod select;
pub mod source;
pub mod stats;
pub mod syntax;
pub mod tensor;
