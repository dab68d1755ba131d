//! The front end: spec text → [`ast::File`].
//!
//! `grammar/graft.pest` defines the syntax; [`parse`] runs pest and builds the AST,
//! turning pest's errors into [`Diagnostic`](crate::diag::Diagnostic)s with a
//! file, line, column and a human list of what was expected. Input limits (size,
//! nesting depth) are checked before pest runs so that no input can exhaust the stack.

pub mod ast;
mod errors;
mod grammar;
mod model;
mod parser;

pub use grammar::{MAX_EXPR_DEPTH, MAX_NESTING, MAX_SOURCE_BYTES};
pub use parser::{parse, parse_selector};
