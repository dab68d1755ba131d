//! Support shared by the integration tests (`mod common;` in each): the one
//! comparator of named tensors. Each test file uses part of it.
#![allow(dead_code)]

pub mod compare;
