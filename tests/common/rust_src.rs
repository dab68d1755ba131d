//! A small scanner of Rust source for the tidy and cycle checks (no parser
//! dependency): tokens with their lines, where strings (raw, byte, escaped), char
//! literals, lifetimes and nested block comments are each one token, so a `//`,
//! `{` or `crate::` inside a string is never code. Over the tokens: test-only items
//! removed, `use` trees expanded into paths, `ident::ident` paths, macro calls,
//! function bodies with their owners and line spans, and `mod` declarations.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ident,
    /// One punctuation character (`::` is two).
    Punct,
    /// A string, byte string, char or number literal.
    Lit,
    Lifetime,
    /// A line or block comment (doc comments included).
    Comment,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tok {
    pub kind: Kind,
    pub text: String,
    /// 1-based line of the token's first character.
    pub line: usize,
}

impl Tok {
    pub fn is(&self, text: &str) -> bool {
        self.text == text && self.kind != Kind::Lit && self.kind != Kind::Comment
    }
}

/// The tokens of `src`; `Err` for an unterminated string or comment.
pub fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let (start, start_line) = (i, line);
        let ch = c[i];
        let kind = if ch == '\n' {
            line += 1;
            i += 1;
            continue;
        } else if ch.is_whitespace() {
            i += 1;
            continue;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            Kind::Comment
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    return Err(format!("line {start_line}: unterminated block comment"));
                }
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += (c[i] == '\n') as usize;
                    i += 1;
                }
            }
            Kind::Comment
        } else if let Some(len) = raw_string_start(&c, i) {
            // r"…", r#"…"#, br"…", cr#"…"#: no escapes; ends at `"` and as many `#`.
            let hashes = len - 1 - (c[i] != 'r') as usize - 1;
            i += len;
            loop {
                if i >= c.len() {
                    return Err(format!("line {start_line}: unterminated raw string"));
                }
                if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                line += (c[i] == '\n') as usize;
                i += 1;
            }
            Kind::Lit
        } else if ch == '"' || ((ch == 'b' || ch == 'c') && at(i + 1) == '"') {
            i += if ch == '"' { 1 } else { 2 };
            loop {
                match c.get(i) {
                    None => return Err(format!("line {start_line}: unterminated string")),
                    Some('\\') => i += 2,
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(x) => {
                        line += (*x == '\n') as usize;
                        i += 1;
                    }
                }
            }
            Kind::Lit
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            let q = if ch == '\'' { i } else { i + 1 };
            if at(q + 1) == '\\' {
                // An escaped char: up to the closing quote.
                i = q + 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                Kind::Lit
            } else if at(q + 2) == '\'' {
                i = q + 3;
                Kind::Lit
            } else {
                // A lifetime or a label.
                i = q + 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                Kind::Lifetime
            }
        } else if ch.is_alphabetic() || ch == '_' {
            if ch == 'r' && at(i + 1) == '#' && (at(i + 2).is_alphabetic() || at(i + 2) == '_') {
                i += 2;
            }
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            Kind::Ident
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || (c[i] == '.' && at(i + 1).is_ascii_digit()))
            {
                i += 1;
            }
            Kind::Lit
        } else {
            i += 1;
            Kind::Punct
        };
        out.push(Tok { kind, text: c[start..i].iter().collect(), line: start_line });
    }
    Ok(out)
}

/// The length of a raw string's opening (`r#"` is 3) if one starts at `i`.
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(c.get(j), Some('b') | Some('c')) {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    // `r` must start the token: not the end of an identifier such as `bar"`.
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    j += 1;
    while c.get(j) == Some(&'#') {
        j += 1;
    }
    (c.get(j) == Some(&'"')).then_some(j + 1 - i)
}

/// The tokens without comments.
pub fn code(toks: &[Tok]) -> Vec<Tok> {
    toks.iter().filter(|t| t.kind != Kind::Comment).cloned().collect()
}

/// Index just past the group opened at `open` (`(`, `[` or `{`), or the end.
pub fn close_of(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if t.kind != Kind::Punct {
            continue;
        }
        match t.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// Index just past the item starting at `i`: its `;` at nesting depth 0, or its
/// body's closing `}`.
pub fn item_end(toks: &[Tok], mut i: usize) -> usize {
    while i < toks.len() {
        let t = &toks[i];
        if t.kind == Kind::Punct {
            match t.text.as_str() {
                ";" => return i + 1,
                "{" => return close_of(toks, i),
                "(" | "[" => {
                    i = close_of(toks, i);
                    continue;
                }
                _ => {}
            }
        }
        i += 1;
    }
    toks.len()
}

/// Whether the attribute at `i` (`#` `[` … `]`) is `#[test]` or `#[cfg(test)]`; its end.
fn test_attribute(toks: &[Tok], i: usize) -> Option<(bool, usize)> {
    if !(toks[i].is("#") && toks.get(i + 1).is_some_and(|t| t.is("["))) {
        return None;
    }
    let end = close_of(toks, i + 1);
    let inner: Vec<&str> = toks[i + 2..end - 1].iter().map(|t| t.text.as_str()).collect();
    Some((inner == ["test"] || inner == ["cfg", "(", "test", ")"], end))
}

/// The code tokens with every `#[cfg(test)]` / `#[test]` item removed (comments
/// removed too).
pub fn without_tests(toks: &[Tok]) -> Vec<Tok> {
    let toks = code(toks);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if let Some((true, mut end)) = test_attribute(&toks, i) {
            // Further attributes of the same item, then the item.
            while let Some((_, e)) = test_attribute(&toks, end) {
                end = e;
            }
            i = item_end(&toks, end);
            continue;
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// One path a `use` declaration brings in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsePath {
    /// Segments as written (`crate`, `super`, `self` included); a glob ends in `*`.
    pub path: Vec<String>,
    /// The name it is bound to (the last segment, or the `as` name).
    pub alias: String,
    /// `pub` (of any scope): a re-export.
    pub public: bool,
    pub line: usize,
}

/// Every path of every `use` declaration, groups expanded: `use crate::a::{b::c, d};`
/// gives `crate::a::b::c` and `crate::a::d`; `self` in a group names the prefix.
pub fn use_paths(code: &[Tok]) -> Vec<UsePath> {
    let mut out = Vec::new();
    for (i, t) in code.iter().enumerate() {
        if !(t.kind == Kind::Ident && t.text == "use") {
            continue;
        }
        let public = visibility_before(code, i);
        let mut j = i + 1;
        if code.get(j).is_some_and(|t| t.is(":")) {
            j += 2;
        }
        use_tree(code, &mut j, &mut Vec::new(), public, t.line, &mut out);
    }
    out
}

/// Whether the item keyword at `i` is preceded by `pub` or `pub(…)`.
fn visibility_before(code: &[Tok], i: usize) -> bool {
    !visibility(code, i).is_empty()
}

/// The visibility written before the item keyword at `i`: `pub`, `pub(crate)`,
/// `pub(super)`, `pub(in path)`, or `` (private).
pub fn visibility(code: &[Tok], i: usize) -> String {
    match i.checked_sub(1).map(|k| &code[k]) {
        Some(t) if t.is("pub") => "pub".into(),
        Some(t) if t.is(")") => {
            let mut k = i - 1;
            while k > 0 && !code[k].is("(") {
                k -= 1;
            }
            if k > 0 && code[k - 1].is("pub") {
                let inner: Vec<&str> = code[k + 1..i - 1].iter().map(|t| t.text.as_str()).collect();
                format!("pub({})", inner.join(" "))
            } else {
                String::new()
            }
        }
        _ => String::new(),
    }
}

fn use_tree(code: &[Tok], j: &mut usize, prefix: &mut Vec<String>, public: bool, line: usize, out: &mut Vec<UsePath>) {
    let depth = prefix.len();
    while let Some(t) = code.get(*j) {
        if t.is("{") {
            *j += 1;
            loop {
                if code.get(*j).is_none_or(|t| t.is("}")) {
                    *j += 1;
                    break;
                }
                use_tree(code, j, &mut prefix.clone(), public, line, out);
                if code.get(*j).is_some_and(|t| t.is(",")) {
                    *j += 1;
                }
            }
            break;
        } else if t.is("*") {
            *j += 1;
            let mut path = prefix.clone();
            path.push("*".into());
            out.push(UsePath { path, alias: "*".into(), public, line });
            break;
        } else if t.kind == Kind::Ident {
            prefix.push(t.text.clone());
            *j += 1;
            if code.get(*j).is_some_and(|t| t.is(":")) && code.get(*j + 1).is_some_and(|t| t.is(":")) {
                *j += 2;
                continue;
            }
            // The end of this path: `as NAME`, `self` (the prefix itself), or a name.
            let mut path = prefix.clone();
            let mut alias = path.last().cloned().unwrap_or_default();
            if alias == "self" {
                path.pop();
                alias = path.last().cloned().unwrap_or_default();
            }
            if code.get(*j).is_some_and(|t| t.is("as")) {
                alias = code.get(*j + 1).map(|t| t.text.clone()).unwrap_or_default();
                *j += 2;
            }
            out.push(UsePath { path, alias, public, line });
            break;
        } else {
            break;
        }
    }
    prefix.truncate(depth);
    // A whole declaration ends at `;`; a group member at `,` or `}` (the caller's).
    if code.get(*j).is_some_and(|t| t.is(";")) {
        *j += 1;
    }
}

/// Every `a::b::c` path outside `use` declarations, as segments, with its line. A
/// path starts at an identifier (or `$crate`) not preceded by `::`.
pub fn code_paths(code: &[Tok]) -> Vec<(Vec<String>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if code[i].is("use") {
            i = item_end(code, i);
            continue;
        }
        let after_colons = i >= 2 && code[i - 1].is(":") && code[i - 2].is(":");
        if code[i].kind == Kind::Ident && !after_colons {
            let dollar = i >= 1 && code[i - 1].is("$");
            let mut segs = vec![if dollar { format!("${}", code[i].text) } else { code[i].text.clone() }];
            let mut j = i + 1;
            while code.get(j).is_some_and(|t| t.is(":"))
                && code.get(j + 1).is_some_and(|t| t.is(":"))
                && code.get(j + 2).is_some_and(|t| t.kind == Kind::Ident)
            {
                segs.push(code[j + 2].text.clone());
                j += 3;
            }
            if segs.len() > 1 {
                out.push((segs, code[i].line));
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// Macro invocations `name!(…)` / `name![…]` / `name!{…}`: name and line.
pub fn macro_calls(code: &[Tok]) -> Vec<(String, usize)> {
    code.windows(3)
        .filter(|w| w[0].kind == Kind::Ident && w[1].is("!") && (w[2].is("(") || w[2].is("[") || w[2].is("{")))
        .map(|w| (w[0].text.clone(), w[0].line))
        .collect()
}

/// `mod NAME;` declarations (files, not inline modules): name, visibility (as
/// [`visibility`] spells it), line.
pub fn mod_decls(code: &[Tok]) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    for i in 0..code.len() {
        if code[i].is("mod")
            && code.get(i + 1).is_some_and(|t| t.kind == Kind::Ident)
            && code.get(i + 2).is_some_and(|t| t.is(";"))
        {
            out.push((code[i + 1].text.clone(), visibility(code, i), code[i].line));
        }
    }
    out
}

/// A function with a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// `Type::name` inside an `impl`/`trait` block, else `name`.
    pub name: String,
    /// Lines of the `fn` keyword and of the closing brace.
    pub first: usize,
    pub last: usize,
}

impl Function {
    pub fn lines(&self) -> usize {
        self.last - self.first + 1
    }
}

/// Every function with a body in `code` (nested ones too), owners from the
/// enclosing `impl`/`trait` blocks.
pub fn functions(code: &[Tok]) -> Vec<Function> {
    let mut out = Vec::new();
    functions_in(code, 0, code.len(), None, &mut out);
    out
}

fn functions_in(code: &[Tok], mut i: usize, end: usize, owner: Option<&str>, out: &mut Vec<Function>) {
    while i < end {
        let t = &code[i];
        if t.is("impl") || t.is("trait") {
            // The block's type: after `for` if any, else the first path; its last segment.
            let Some(open) = (i..end).find(|&k| code[k].is("{") || code[k].is(";")) else { return };
            if code[open].is(";") {
                i = open + 1;
                continue;
            }
            let head = &code[i + 1..open];
            let after_for = head.iter().rposition(|t| t.is("for")).map(|p| p + 1).unwrap_or(0);
            let name = type_name(&head[after_for..]);
            let close = close_of(code, open);
            functions_in(code, open + 1, close - 1, Some(&name), out);
            i = close;
        } else if t.is("fn") && code.get(i + 1).is_some_and(|t| t.kind == Kind::Ident) {
            let name = match owner {
                Some(o) => format!("{o}::{}", code[i + 1].text),
                None => code[i + 1].text.clone(),
            };
            // The body: the first `{` outside parentheses and brackets, unless a `;` ends
            // the declaration first.
            let mut k = i + 2;
            while k < end && !code[k].is("{") && !code[k].is(";") {
                k = if code[k].is("(") || code[k].is("[") { close_of(code, k) } else { k + 1 };
            }
            if k >= end || code[k].is(";") {
                i = k + 1;
                continue;
            }
            let close = close_of(code, k);
            out.push(Function { name, first: t.line, last: code[close - 1].line });
            functions_in(code, k + 1, close - 1, None, out);
            i = close;
        } else {
            i += 1;
        }
    }
}

/// `Foo` of `<T> a::Foo<T> where …` (generics and paths skipped).
fn type_name(head: &[Tok]) -> String {
    let mut k = 0;
    if head.first().is_some_and(|t| t.is("<")) {
        let mut depth = 0;
        while k < head.len() {
            if head[k].is("<") {
                depth += 1;
            } else if head[k].is(">") {
                depth -= 1;
                if depth == 0 {
                    k += 1;
                    break;
                }
            }
            k += 1;
        }
    }
    let mut name = String::new();
    while k < head.len() {
        let t = &head[k];
        if t.kind == Kind::Ident && !matches!(t.text.as_str(), "dyn" | "unsafe" | "const" | "mut") {
            name = t.text.clone();
        } else if !(t.is(":") || t.is("&") || t.is("'")) && t.kind != Kind::Lifetime {
            break;
        }
        k += 1;
    }
    name
}
