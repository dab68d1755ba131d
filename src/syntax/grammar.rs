//! The grammar (`grammar/graft.pest`, compiled by pest into [`Rule`]) and the input
//! limits checked before it runs. The parser and the syntax-error renderer both
//! build on this module.

#[derive(pest_derive::Parser)]
#[grammar = "grammar/graft.pest"]
pub(super) struct GraftParser;

/// Largest spec file accepted.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;
/// Deepest bracket nesting accepted (guards pest's recursive descent).
pub const MAX_NESTING: usize = 64;
/// Deepest expression tree accepted (operators, calls, fields and indexes nested in
/// one another, brackets included), so that evaluating it cannot exhaust the stack.
pub const MAX_EXPR_DEPTH: usize = 256;

impl Rule {
    /// The infix operators of expressions (`==` … `%`, `or`, `and`): what the
    /// formatter spaces as binary operators and the language server colours as such.
    pub fn is_binary_operator(self) -> bool {
        matches!(
            self,
            Rule::eq
                | Rule::ne
                | Rule::le
                | Rule::ge
                | Rule::lt
                | Rule::gt
                | Rule::add
                | Rule::sub
                | Rule::mul
                | Rule::div
                | Rule::rem
                | Rule::or_op
                | Rule::and_op
        )
    }
}
