//! Semantic tokens from the lossless tree: each leaf classified by its rule and the
//! rule around it (a name after `module` is a function, the name of a named argument
//! a parameter, a selector segment a property, …).

use super::convert::LineIndex;
use crate::syntax::cst::{Elem, Node, TokKind, Token};
use crate::syntax::Rule;
use lsp_types::{SemanticToken, SemanticTokenType, SemanticTokens, SemanticTokensLegend};

/// The token types, in legend order.
pub const TYPES: &[SemanticTokenType] = &[
    SemanticTokenType::KEYWORD,
    SemanticTokenType::FUNCTION,
    SemanticTokenType::PARAMETER,
    SemanticTokenType::VARIABLE,
    SemanticTokenType::PROPERTY,
    SemanticTokenType::TYPE,
    SemanticTokenType::STRING,
    SemanticTokenType::NUMBER,
    SemanticTokenType::COMMENT,
    SemanticTokenType::OPERATOR,
];

pub fn legend() -> SemanticTokensLegend {
    SemanticTokensLegend { token_types: TYPES.to_vec(), token_modifiers: Vec::new() }
}

fn index_of(t: SemanticTokenType) -> u32 {
    TYPES.iter().position(|x| *x == t).unwrap_or(0) as u32
}

/// Every classified token of the tree, in order: (start, end, type index).
pub fn classify(text: &str, root: &Node) -> Vec<(usize, usize, u32)> {
    let mut out = Vec::new();
    walk(text, root, &mut out);
    out
}

fn walk(text: &str, n: &Node, out: &mut Vec<(usize, usize, u32)>) {
    for (i, c) in n.children.iter().enumerate() {
        match c {
            Elem::Node(child) => walk(text, child, out),
            Elem::Token(t) => {
                let next = n.children.get(i + 1);
                if let Some(ty) = kind(text, t, n.rule, next) {
                    out.push((t.start, t.end, index_of(ty)));
                }
            }
        }
    }
}

fn kind(text: &str, t: &Token, parent: Rule, next: Option<&Elem>) -> Option<SemanticTokenType> {
    let rule = match t.kind {
        TokKind::LineComment | TokKind::BlockComment => return Some(SemanticTokenType::COMMENT),
        TokKind::Punct => return None,
        TokKind::Leaf(r) => r,
    };
    let called = matches!(next, Some(Elem::Node(n)) if n.rule == Rule::call);
    Some(match rule {
        Rule::ident => match parent {
            Rule::module_decl | Rule::module_alias | Rule::repeat_expr | Rule::adapter_decl => {
                // `adapter NAME = MODULE(...)`: the first name is the instance.
                if parent == Rule::adapter_decl && !matches!(next, Some(Elem::Token(p)) if p.text(text) == "(") {
                    SemanticTokenType::VARIABLE
                } else {
                    SemanticTokenType::FUNCTION
                }
            }
            Rule::param | Rule::arg => SemanticTokenType::PARAMETER,
            Rule::field => SemanticTokenType::PROPERTY,
            Rule::dim => SemanticTokenType::TYPE,
            _ if called => SemanticTokenType::FUNCTION,
            _ => SemanticTokenType::VARIABLE,
        },
        Rule::sel_name => SemanticTokenType::PROPERTY,
        Rule::dtype => SemanticTokenType::TYPE,
        Rule::kw_int | Rule::kw_float | Rule::kw_bool | Rule::kw_str | Rule::kw_list => SemanticTokenType::TYPE,
        Rule::string => SemanticTokenType::STRING,
        Rule::int | Rule::float | Rule::signed_int | Rule::field_index => SemanticTokenType::NUMBER,
        Rule::boolean => SemanticTokenType::KEYWORD,
        Rule::or_op | Rule::and_op | Rule::not if t.text(text).chars().all(char::is_alphabetic) => {
            SemanticTokenType::KEYWORD
        }
        r if r.is_binary_operator() => SemanticTokenType::OPERATOR,
        Rule::not | Rule::neg | Rule::index_all => SemanticTokenType::OPERATOR,
        Rule::use_path => SemanticTokenType::VARIABLE,
        _ => SemanticTokenType::KEYWORD,
    })
}

/// The LSP encoding: each token relative to the previous one, one per line segment.
pub fn encode(text: &str, tokens: &[(usize, usize, u32)]) -> SemanticTokens {
    let idx = LineIndex::new(text);
    let mut data = Vec::new();
    let (mut line, mut col) = (0u32, 0u32);
    for &(start, end, ty) in tokens {
        // Split multi-line tokens (block comments) at newlines.
        let mut s = start;
        for piece in text[start..end].split_inclusive('\n') {
            let e = s + piece.trim_end_matches('\n').len();
            let p = idx.position(s);
            let len: u32 = text[s..e].chars().map(|c| c.len_utf16() as u32).sum();
            if len > 0 {
                let delta_line = p.line - line;
                let delta_start = if delta_line == 0 { p.character - col } else { p.character };
                data.push(SemanticToken {
                    delta_line,
                    delta_start,
                    length: len,
                    token_type: ty,
                    token_modifiers_bitset: 0,
                });
                line = p.line;
                col = p.character;
            }
            s += piece.len();
        }
    }
    SemanticTokens { result_id: None, data }
}
