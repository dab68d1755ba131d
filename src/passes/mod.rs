//! The passes, one per file, each named after its function.
//!
//! Analyzer passes make the graph valid and may report user errors:
//! [`infer_shapes`], [`insert_adapters`], [`check_optional_inputs`],
//! [`build_pathways`], [`apply_training_rules`].
//! Optimizer passes preserve meaning; a failure there is a compiler bug:
//! [`fold_reparam`], [`eliminate_dead_code`].
//! Every pass has the signature [`ctx::PassFn`]; the order is the list
//! [`crate::pipeline::PASSES`].

pub mod apply_training_rules;
pub mod build_pathways;
pub mod check_optional_inputs;
pub mod ctx;
pub mod eliminate_dead_code;
pub mod fold_reparam;
pub mod infer_shapes;
pub mod insert_adapters;

#[cfg(test)]
pub(crate) mod testkit;
