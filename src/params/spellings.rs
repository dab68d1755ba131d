//! Older spellings of checkpoint keys. std names parameters as the newest release of a
//! library saves them; a checkpoint saved by an older release stores some of them
//! under another name, and the loader reads either without rename rules.
//!
//! | newer (std) | older | who saves the older |
//! |---|---|---|
//! | `attention.attention.query.bias` | `attention.attention.q_bias` | transformers < 5, VideoMAE (the Hub's checkpoints) |
//! | `attention.attention.value.bias` | `attention.attention.v_bias` | transformers < 5, VideoMAE |
//!
//! Only a key the file lacks is looked up under its older name, so a file with the
//! newer spelling is read as it is.

/// (newer suffix, older suffix).
const SPELLINGS: &[(&str, &str)] = &[
    ("attention.attention.query.bias", "attention.attention.q_bias"),
    ("attention.attention.value.bias", "attention.attention.v_bias"),
];

/// The older spelling of `key`, if it has one.
pub fn older(key: &str) -> Option<String> {
    SPELLINGS.iter().find_map(|(new, old)| {
        let head = key.strip_suffix(new)?;
        (head.is_empty() || head.ends_with('.')).then(|| format!("{head}{old}"))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_whole_segments_are_respelled() {
        assert_eq!(
            super::older("encoder.layer.3.attention.attention.query.bias").as_deref(),
            Some("encoder.layer.3.attention.attention.q_bias")
        );
        assert_eq!(super::older("attention.attention.value.bias").as_deref(), Some("attention.attention.v_bias"));
        assert_eq!(super::older("xattention.attention.query.bias"), None);
        assert_eq!(super::older("attention.attention.key.bias"), None);
    }
}
