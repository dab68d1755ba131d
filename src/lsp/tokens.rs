//! Semantic tokens from the lossless tree: each leaf classified by its rule and the
//! rule around it (a name after `module` is a function, the name of a named argument
//! a parameter, a selector segment a property, …).

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
/// One pass over the text (a cursor that only moves forward), so a long line costs
/// its length, not its length times its tokens. A line break (`\n` or `\r\n`) is
/// never part of a token.
pub fn encode(text: &str, tokens: &[(usize, usize, u32)]) -> SemanticTokens {
    let mut data = Vec::new();
    // Where the cursor is: byte offset, line, UTF-16 column.
    let (mut at, mut line, mut col) = (0usize, 0u32, 0u32);
    let (mut prev_line, mut prev_col) = (0u32, 0u32);
    let advance = |to: usize, at: &mut usize, line: &mut u32, col: &mut u32| {
        for c in text.get(*at..to).unwrap_or_default().chars() {
            if c == '\n' {
                *line += 1;
                *col = 0;
            } else {
                *col += c.len_utf16() as u32;
            }
        }
        *at = to;
    };
    for &(start, end, ty) in tokens {
        let Some(tok) = text.get(start..end).filter(|_| start >= at) else { continue };
        // Split multi-line tokens (block comments) at line breaks.
        let mut s = start;
        for piece in tok.split_inclusive('\n') {
            advance(s, &mut at, &mut line, &mut col);
            let len: u32 = piece.trim_end_matches(['\n', '\r']).chars().map(|c| c.len_utf16() as u32).sum();
            if len > 0 {
                let delta_line = line - prev_line;
                let delta_start = if delta_line == 0 { col - prev_col } else { col };
                data.push(SemanticToken {
                    delta_line,
                    delta_start,
                    length: len,
                    token_type: ty,
                    token_modifiers_bitset: 0,
                });
                (prev_line, prev_col) = (line, col);
            }
            s += piece.len();
        }
    }
    SemanticTokens { result_id: None, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> Vec<(u32, u32, u32, String)> {
        let tree = crate::syntax::cst::build(text).expect("tree");
        let toks = encode(text, &classify(text, &tree));
        let (mut line, mut col) = (0, 0);
        let mut out = Vec::new();
        for t in &toks.data {
            line += t.delta_line;
            col = if t.delta_line == 0 { col + t.delta_start } else { t.delta_start };
            out.push((line, col, t.length, TYPES[t.token_type as usize].as_str().to_string()));
        }
        out
    }

    #[test]
    fn comments_in_crlf_files_end_at_the_line_end() {
        let text = "// one\r\nmodel m { // two\r\n  input x: f32[B, 4]\r\n  /* a\r\n b */ output y = x\r\n}\r\n";
        let got = decoded(text);
        let comments: Vec<_> = got.iter().filter(|t| t.3 == "comment").map(|t| (t.0, t.1, t.2)).collect();
        assert_eq!(comments, [(0, 0, 6), (1, 10, 6), (3, 2, 4), (4, 0, 5)], "{got:?}");
    }

    #[test]
    fn positions_on_a_long_line_match_the_line_index() {
        let sel: Vec<String> = (0..2000).map(|i| format!("b{i}")).collect();
        let text = format!("model m {{\n  input x: f32[B, 4]\n  output y = x\n  train {} // é\n}}\n", sel.join(", "));
        let idx = super::super::convert::LineIndex::new(&text);
        let tree = crate::syntax::cst::build(&text).expect("tree");
        let toks = classify(&text, &tree);
        let got = decoded(&text);
        assert_eq!(got.len(), toks.len());
        for ((line, col, _, _), (start, _, _)) in got.iter().zip(&toks) {
            let p = idx.position(*start);
            assert_eq!((p.line, p.character), (*line, *col));
        }
    }
}
