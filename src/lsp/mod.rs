//! `graft lsp`: a language server for spec files over stdio.
//!
//! It shares the compiler's front end and pipeline: every change of a document runs
//! the same checks as `graft check` ([`analysis`]), and the requests are answered
//! from that result and from the lossless tree:
//!
//! | request | module |
//! |---|---|
//! | diagnostics (published on open, change, save) | [`analysis`] |
//! | hover | [`hover`] |
//! | definition, references, document symbols, formatting | [`navigate`] |
//! | completion | [`complete`] |
//! | semantic tokens | [`tokens`] |
//! | the wire: bounded frames, bad input classified | [`transport`] |
//!
//! The library does not print: the server speaks only the protocol on stdout.

pub mod analysis;
pub mod complete;
mod convert;
pub mod hover;
pub mod navigate;
mod query;
pub mod server;
pub mod tokens;
pub mod transport;

pub use convert::{std_file, std_file_in, LineIndex};
pub use server::{run_stdio, serve, Ending, State};
