//! Backends: execute a compiled, verified IR graph.
//!
//! A backend receives a [`crate::pipeline::Compiled`] model and never sees the spec.
//! Every backend follows the same three steps:
//!
//! 1. **Lower** the graph once into a flat, backend-specific schedule (here: an
//!    instruction list over tensor slots). Nothing walks the graph at run time.
//! 2. **Materialise parameters** from their [`crate::ir::ParamSource`]: a key of a
//!    bound weights file, a seeded initialisation rule, or a fold expression
//!    evaluated once from its leaves (inference mode).
//! 3. **Execute** the schedule on named inputs and return named outputs. An absent
//!    optional input makes every value computed from it absent, except that `add`
//!    passes through a present operand that is itself computed from the data (the
//!    rule of `check_optional_inputs::absent_nodes`); outputs are never absent in a
//!    model that compiled.
//!
//! The only backend today is LibTorch ([`torch`], cargo feature `torch`), which also
//! provides the `graft run` and `graft fuse` commands.

pub mod native;
#[cfg(feature = "torch")]
pub mod torch;
