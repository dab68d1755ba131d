//! Test support: lower a small spec and print the graph between passes.

use crate::ir::Graph;
use crate::lower::{load_str, lower};
use crate::passes::ctx::PassCtx;
use crate::passes::infer_shapes::infer_shapes;

/// Lower `src` (a spec that may `use` the standard library) and type it.
pub fn lowered(src: &str) -> (Graph, PassCtx) {
    let prog =
        load_str("test.graft", None, src).unwrap_or_else(|(s, d)| panic!("{}", crate::diag::render(&s, &d, false)));
    let lw = lower(prog).unwrap_or_else(|(s, d)| panic!("{}", crate::diag::render(&s, &d, false)));
    let (mut g, mut cx) = PassCtx::new(lw);
    infer_shapes(&mut g, &mut cx).expect("no compiler bug");
    assert!(!cx.diags().has_errors(), "{}", errors(&cx));
    (g, cx)
}

/// The IR text without its header line.
pub fn ir(g: &Graph) -> String {
    crate::ir::print::to_text(g, "").trim_start().to_string()
}

/// Rendered diagnostics of a compilation so far.
pub fn errors(cx: &PassCtx) -> String {
    crate::diag::render(&cx.program().sources, cx.diags(), false)
}
