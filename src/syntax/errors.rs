//! Input limits checked before pest runs (size, bracket and `else if` nesting), and
//! pest's errors turned into readable diagnostics: what was expected in words, and
//! targeted messages for common slips (unterminated strings, a missing `=`, an
//! unclosed or unmatched bracket).

use super::grammar::{Rule, MAX_NESTING, MAX_SOURCE_BYTES};
use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{FileId, Span};

pub(super) fn check_limits(file: FileId, text: &str) -> Result<(), Diagnostics> {
    if text.len() > MAX_SOURCE_BYTES {
        return Err(Diagnostic::error(
            "E0001",
            format!("spec file is {} bytes; the limit is {} bytes", text.len(), MAX_SOURCE_BYTES),
        )
        .at(Span::new(file, 0, 0), "file starts here")
        .hint("split the spec into modules and `use` them")
        .into());
    }
    // Brackets nest pest's recursive descent; so does each `else if` of a chain, until
    // the block around the chain closes. Both count towards MAX_NESTING.
    let mut depth = 0usize;
    let mut chains: Vec<usize> = vec![0];
    let mut chained = 0usize;
    let mut in_string = false;
    let mut in_comment = false;
    let mut in_block_comment = false;
    let bytes = text.as_bytes();
    let too_deep = |i: usize, chain: bool| -> Diagnostics {
        let (message, hint) = if chain {
            (
                format!("`else if` chain nested more than {MAX_NESTING} deep (with the brackets around it)"),
                "each `else if` nests one level deeper: split a long chain into separate `if`s",
            )
        } else {
            (
                format!("brackets nested more than {MAX_NESTING} deep"),
                "name intermediate values with `name = ...` instead of nesting",
            )
        };
        Diagnostic::error("E0002", message).at(Span::new(file, i, i + 1), "too deep here").hint(hint).into()
    };
    for (i, &c) in bytes.iter().enumerate() {
        if in_comment {
            in_comment = c != b'\n';
            continue;
        }
        if in_block_comment {
            in_block_comment = !(c == b'/' && i > 0 && bytes[i - 1] == b'*');
            continue;
        }
        match c {
            b'"' => in_string = !in_string,
            b'\n' => in_string = false,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => in_comment = true,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'*') => in_block_comment = true,
            b'(' | b'[' | b'{' if !in_string => {
                depth += 1;
                chains.push(0);
                if depth + chained > MAX_NESTING {
                    return Err(too_deep(i, chained > depth));
                }
            }
            b')' | b']' | b'}' if !in_string && depth > 0 => {
                depth -= 1;
                chained -= chains.pop().unwrap_or(0);
            }
            b'e' if !in_string && is_else_if(bytes, i) => {
                chained += 1;
                if let Some(n) = chains.last_mut() {
                    *n += 1;
                }
                if depth + chained > MAX_NESTING {
                    return Err(too_deep(i, true));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the keywords `else if` start at `i` (whitespace and comments between them).
fn is_else_if(bytes: &[u8], i: usize) -> bool {
    let word = |j: usize| bytes.get(j).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if !bytes[i..].starts_with(b"else") || (i > 0 && word(i - 1)) || word(i + 4) {
        return false;
    }
    let mut j = i + 4;
    loop {
        match bytes.get(j) {
            Some(c) if c.is_ascii_whitespace() => j += 1,
            Some(b'/') if bytes.get(j + 1) == Some(&b'/') => {
                while bytes.get(j).is_some_and(|c| *c != b'\n') {
                    j += 1;
                }
            }
            Some(b'/') if bytes.get(j + 1) == Some(&b'*') => {
                j += 2;
                while j < bytes.len() && !bytes[j..].starts_with(b"*/") {
                    j += 1;
                }
                j += 2;
            }
            _ => break,
        }
    }
    bytes.get(j..).is_some_and(|r| r.starts_with(b"if")) && !word(j + 2)
}

fn rule_name(r: &Rule) -> Option<&'static str> {
    Some(match r {
        Rule::EOI => "end of file",
        Rule::use_decl | Rule::kw_use => "`use`",
        Rule::module_decl | Rule::module_alias | Rule::kw_module => "`module`",
        Rule::model_decl | Rule::kw_model => "`model`",
        Rule::ident | Rule::use_path => "a name",
        Rule::expr | Rule::postfix_expr => "an expression",
        Rule::int | Rule::signed_int | Rule::field_index => "an integer",
        Rule::float => "a number",
        Rule::string => "a string",
        Rule::ty => "a type (int, float, bool, str, list)",
        Rule::dtype => "a dtype (f32, f16, bf16, f64, i64, i32, bool)",
        Rule::dim => "a dimension (a number or a symbol such as B)",
        Rule::in_stmt | Rule::kw_in => "`in`",
        Rule::out_stmt | Rule::kw_out => "`out`",
        Rule::if_stmt | Rule::kw_if => "`if`",
        Rule::let_stmt => "a statement `name = ...`",
        Rule::input_decl | Rule::kw_input => "`input`",
        Rule::component_decl | Rule::component_kind => "`backbone`, `encoder`",
        Rule::adapter_decl | Rule::kw_adapter => "`adapter`",
        Rule::pathway_decl | Rule::kw_pathway => "`pathway`",
        Rule::head_decl | Rule::kw_head => "`head`",
        Rule::output_decl | Rule::kw_output => "`output`",
        Rule::train_decl | Rule::kw_train => "`train`",
        Rule::bind_decl | Rule::weights | Rule::kw_weights => "`weights`",
        Rule::trainability => "`frozen`, `trainable`",
        Rule::key_rule | Rule::kw_prefix | Rule::kw_rename => {
            "a key rule (`prefix \"...\"`, `rename \"...\" -> \"...\"`)"
        }
        Rule::kw_required => "`required`",
        Rule::int_list => "a grid like [14, 14]",
        Rule::kw_resample | Rule::kw_keep => "`resample`",
        Rule::placement => "a placement (`after`, `parallel` or `before`)",
        Rule::kw_at => "`at`",
        Rule::kw_from => "`from`",
        Rule::kw_into => "`into`",
        Rule::selector | Rule::sel_seg | Rule::sel_name => "a selector",
        Rule::sel_index => "an index like [*], [3], [0..6] or [-2..]",
        Rule::args | Rule::arg => "arguments",
        Rule::call => "`(`",
        Rule::optional_kw => "`optional`",
        Rule::input_norm | Rule::kw_normalized => "`normalized`",
        Rule::norm_stats | Rule::kw_mean => "`mean [...] std [...]` or a name (imagenet, clip, none, audioset)",
        Rule::kw_std => "`std`",
        Rule::num_list | Rule::signed_num => "a list of numbers like [0.5, 0.5, 0.5]",
        Rule::extends => "`extends`",
        Rule::or_op
        | Rule::and_op
        | Rule::eq
        | Rule::ne
        | Rule::lt
        | Rule::le
        | Rule::gt
        | Rule::ge
        | Rule::add
        | Rule::sub
        | Rule::mul
        | Rule::div
        | Rule::rem => "an operator",
        _ => return None,
    })
}

pub(super) fn syntax_error(file: FileId, text: &str, e: pest::error::Error<Rule>) -> Diagnostics {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let end = text[pos..].char_indices().nth(1).map_or(text.len(), |(i, _)| pos + i).max(pos);
    let found = found_token(&text[pos..]);
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().filter_map(rule_name).collect();
            names.sort();
            names.dedup();
            names
        }
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let expected_text = match expected.len() {
        0 => "something else".to_string(),
        1 => expected[0].to_string(),
        _ => {
            let (last, rest) = expected.split_last().expect("len >= 2");
            format!("{} or {}", rest.join(", "), last)
        }
    };
    if let Some(d) = common_slip(file, text, pos, end, &expected, &expected_text) {
        return d.into();
    }
    let hint = if found.starts_with("`)`") || found.starts_with("`}`") || found.starts_with("`]`") {
        "check that every bracket is closed where it should be".to_string()
    } else if expected.contains(&"`(`") {
        "a module instance is written `name = module(config)(inputs)`".to_string()
    } else {
        "see the language tour in README.md".to_string()
    };
    let mut d = Diagnostic::error("E0003", format!("syntax error: expected {expected_text}, found {found}"))
        .at(Span::new(file, pos, end), format!("expected {expected_text}"))
        .hint(hint);
    // A bracket left open on an earlier line is the likely culprit.
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    if let Some(open) = unclosed_bracket(&text[..pos]) {
        let starts_line = text[line_start..pos].trim().is_empty();
        if open < line_start && starts_line && matches!(text.as_bytes()[open], b'(' | b'[') {
            let c = &text[open..open + 1];
            d = d.also(Span::new(file, open, open + 1), format!("this `{c}` is still open")).hint(format!(
                "check that every bracket is closed where it should be: is a `{}` missing?",
                if c == "(" { ")" } else { "]" }
            ));
        }
    }
    d.into()
}

/// The token at the start of `rest`, quoted: a word, a string's start, or one character.
fn found_token(rest: &str) -> String {
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    match rest.chars().next() {
        None => "end of file".to_string(),
        Some(c) if word_char(c) || c == '"' => {
            let w: String = rest
                .chars()
                .enumerate()
                .take_while(|(i, c)| word_char(*c) || (*i == 0 && *c == '"'))
                .map(|(_, c)| c)
                .take(20)
                .collect();
            format!("`{w}`")
        }
        Some(c) => format!("`{c}`"),
    }
}

/// A targeted message for a common slip at `pos`, tried in order: a character outside
/// the language, a bad string, an unmatched closing bracket, a declaration or a
/// statement without its `=`.
fn common_slip(
    file: FileId,
    text: &str,
    pos: usize,
    end: usize,
    expected: &[&str],
    expected_text: &str,
) -> Option<Diagnostic> {
    let first = text[pos..].chars().next();
    if let Some(c) =
        first.filter(|c| !c.is_ascii_alphanumeric() && !c.is_whitespace() && !"()[]{},:=.*+-/%<>!&|\"_".contains(*c))
    {
        return Some(
            Diagnostic::error("E0003", format!("syntax error: unexpected character `{c}`"))
                .at(Span::new(file, pos, end), format!("expected {expected_text}"))
                .hint(format!("`{c}` is not part of the graft language; values are numbers, strings, names and lists")),
        );
    }
    bad_string(file, text, pos)
        .or_else(|| unmatched_bracket(file, text, pos))
        .or_else(|| expected.contains(&"`head`").then(|| declaration_without_separator(file, text, pos)).flatten())
        .or_else(|| {
            expected.contains(&"a statement `name = ...`").then(|| statement_without_equals(file, text, pos)).flatten()
        })
}

/// A string at `pos` that is unterminated or holds a backslash (strings are one line,
/// without backslashes).
fn bad_string(file: FileId, text: &str, pos: usize) -> Option<Diagnostic> {
    let body = text[pos..].strip_prefix('"')?;
    let line = body.split('\n').next().unwrap_or("").trim_end_matches('\r');
    let close = line.find('"');
    let inner = &line[..close.unwrap_or(line.len())];
    if close.is_none() {
        return Some(
            Diagnostic::error("E0003", "syntax error: unterminated string")
                .at(Span::new(file, pos, pos + 1 + line.len()), "this string has no closing `\"`")
                .hint("close the string on the same line; strings cannot span lines"),
        );
    }
    let b = inner.find('\\')?;
    let at = pos + 1 + b;
    Some(
        Diagnostic::error("E0003", "syntax error: a string cannot contain `\\`")
            .at(Span::new(file, at, at + 1), "backslash in a string")
            .hint("strings hold names and file paths; write paths with `/`"),
    )
}

/// A closing bracket at `pos` that closes nothing.
fn unmatched_bracket(file: FileId, text: &str, pos: usize) -> Option<Diagnostic> {
    let c @ (')' | ']' | '}') = text[pos..].chars().next()? else { return None };
    let opener = match c {
        ')' => b'(',
        ']' => b'[',
        _ => b'{',
    };
    unclosed_bracket(&text[..pos]).is_none_or(|o| text.as_bytes()[o] != opener).then(|| {
        Diagnostic::error("E0003", format!("syntax error: unmatched `{c}`"))
            .at(Span::new(file, pos, pos + 1), "closes nothing")
            .hint("remove it, or look for a bracket closed too early before it")
    })
}

/// `backbone vit vit(...)` where `backbone vit = vit(...)` was meant (`input x: ...`
/// for an input).
fn declaration_without_separator(file: FileId, text: &str, pos: usize) -> Option<Diagnostic> {
    let rest = &text[pos..];
    let decls = [
        ("backbone", '='),
        ("encoder", '='),
        ("head", '='),
        ("output", '='),
        ("adapter", '='),
        ("pathway", '='),
        ("input", ':'),
    ];
    let kw: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let (kw, sep) = decls.iter().find(|(k, _)| *k == kw)?;
    let name_at = pos + kw.len() + (rest.len() - kw.len() - rest[kw.len()..].trim_start_matches([' ', '\t']).len());
    let name: String = text[name_at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let next = text[name_at + name.len()..].trim_start_matches([' ', '\t']).chars().next();
    (!name.is_empty() && next != Some(*sep)).then(|| {
        Diagnostic::error("E0003", format!("syntax error: expected `{sep}` after `{kw} {name}`"))
            .at(Span::new(file, name_at, name_at + name.len()), format!("expected `{sep}` after this name"))
            .hint(if *sep == ':' {
                format!("an input is written `input {name}: f32[B, ...]`")
            } else {
                format!("a declaration is written `{kw} {name} = ...`")
            })
    })
}

/// `name value` where `name = value` was meant.
fn statement_without_equals(file: FileId, text: &str, pos: usize) -> Option<Diagnostic> {
    let word: String = text[pos..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    if !word.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
        return None;
    }
    let after = pos + word.len();
    let next = text[after..].trim_start_matches([' ', '\t']).chars().next();
    (!matches!(next, Some('=' | ':' | '(' | '.' | '[' | '\n' | '\r') | None)).then(|| {
        Diagnostic::error("E0003", format!("syntax error: expected `=` after `{word}`"))
            .at(Span::new(file, pos, after), "expected `=` after this name")
            .hint(format!("a statement is written `{word} = expression`, e.g. `{word} = linear(dim, hidden)(x)`"))
    })
}

/// Offset of the innermost bracket of `text` that is still open at its end.
fn unclosed_bracket(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut stack = Vec::new();
    let (mut in_string, mut in_comment, mut in_block) = (false, false, false);
    for (i, &c) in bytes.iter().enumerate() {
        if in_comment {
            in_comment = c != b'\n';
            continue;
        }
        if in_block {
            in_block = !(c == b'/' && i > 0 && bytes[i - 1] == b'*');
            continue;
        }
        match c {
            b'"' => in_string = !in_string,
            b'\n' => in_string = false,
            _ if in_string => {}
            b'/' if bytes.get(i + 1) == Some(&b'/') => in_comment = true,
            b'/' if bytes.get(i + 1) == Some(&b'*') => in_block = true,
            b'(' | b'[' | b'{' => stack.push(i),
            b')' | b']' | b'}' => {
                stack.pop();
            }
            _ => {}
        }
    }
    stack.pop()
}
