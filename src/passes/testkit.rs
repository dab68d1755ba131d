//! Test support: lower a small spec and print the graph between passes.

use crate::lower::{load_str, lower, Lowered};
use crate::passes::infer_shapes::infer_shapes;

/// Lower `src` (a spec that may `use` the standard library) and type it.
pub fn lowered(src: &str) -> Lowered {
    let prog =
        load_str("test.graft", None, src).unwrap_or_else(|(s, d)| panic!("{}", crate::diag::render(&s, &d, false)));
    let mut lw = lower(prog).unwrap_or_else(|(s, d)| panic!("{}", crate::diag::render(&s, &d, false)));
    let errs = infer_shapes(&mut lw.b.graph);
    assert!(errs.is_empty(), "{:?}", errs.iter().map(|e| &e.1.message).collect::<Vec<_>>());
    lw
}

/// The IR text without its header line.
pub fn ir(lw: &Lowered) -> String {
    crate::ir::print::to_text(&lw.b.graph, "").trim_start().to_string()
}

/// Rendered diagnostics of a lowered model.
pub fn errors(lw: &Lowered) -> String {
    crate::diag::render(&lw.b.program().sources, &lw.b.diags, false)
}
