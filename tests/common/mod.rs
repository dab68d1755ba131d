//! Support shared by the integration tests (`mod common;` in each): the one
//! comparator of named tensors, a scanner of Rust source with the crate's file
//! tree for the tidy and cycle checks, and scratch directories. Each test file uses part of it.
#![allow(dead_code)]

pub mod compare;
pub mod rust_src;
pub mod scratch;
pub mod specs;
pub mod tree;
