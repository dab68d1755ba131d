//! Key patterns for `--allow-missing` and `--lr-for`: a minimal glob.

/// Minimal glob: `*` matches any run of characters (dots included), `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("head.*", "head.weight"));
        assert!(glob_match("*", "anything.at.all"));
        assert!(glob_match("blocks.*.attn.qkv.bias", "blocks.11.attn.qkv.bias"));
        assert!(!glob_match("blocks.*.attn.qkv.bias", "blocks.11.attn.qkv.weight"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("head.*", "vit.head.weight"));
        assert!(glob_match("*head*", "vit.head.weight"));
    }
}
