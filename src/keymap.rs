//! Key rules of a weights binding: how a checkpoint's keys map to the spec's.
//!
//! A checkpoint whose keys carry a prefix (`base_model.model.`, `module.`, `vit.`) or
//! another layout is bound with rules instead of a conversion script:
//!
//! ```text
//! backbone vit = vit(...)(image) weights "model.safetensors" prefix "vit." rename "attn.qkv" -> "attn.fused"
//! ```
//!
//! The rules read in the file's direction: a file key without the prefix is not the
//! binding's; with it, the prefix is removed and every `rename "from" -> "to"` then
//! replaces `from` by `to` (in order, every occurrence). What comes out is the key the
//! spec expects (`blocks.0.attn.qkv.weight`). `graft inspect --json` reports the
//! rules under each binding.

use serde::Serialize;

/// The key rules of one binding; the default maps every key to itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeyMap {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rename: Vec<Rename>,
    /// Position tables resampled as they load (`resample "pos_embed" [14, 14] -> [24, 24]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resample: Vec<Resample>,
    /// Put in front of every key after the rules (a PEFT directory's keys are its
    /// model's; the adapter's are under the backbone's name). Not spec syntax.
    #[serde(skip)]
    pub insert: Option<String>,
}

/// `resample "KEY" [grid] -> [grid] keep N`: the file's table `[1, N + prod(from), D]`
/// becomes the spec's `[1, N + prod(to), D]`, or `[N + prod(from), D]` the spec's
/// `[N + prod(to), D]` for a table without the leading 1 (std.clip's; see
/// `params::resample`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resample {
    pub key: String,
    pub from: Vec<i64>,
    pub to: Vec<i64>,
    pub keep: i64,
}

impl Resample {
    /// The table's shape on the file's side and on the spec's, for a table shaped
    /// like `like` (`[1, tokens, D]` or `[tokens, D]`: its leading dims and width kept).
    pub fn shapes(&self, like: &[i64]) -> (Vec<i64>, Vec<i64>) {
        let d = *like.last().unwrap_or(&0);
        let lead = &like[..like.len().saturating_sub(2)];
        let n = |g: &[i64]| self.keep + g.iter().product::<i64>();
        let shape = |g: &[i64]| lead.iter().copied().chain([n(g), d]).collect::<Vec<i64>>();
        (shape(&self.from), shape(&self.to))
    }
}

/// `rename "from" -> "to"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

impl KeyMap {
    pub fn is_identity(&self) -> bool {
        self.prefix.as_deref().is_none_or(str::is_empty)
            && self.rename.is_empty()
            && self.insert.is_none()
            && self.resample.is_empty()
    }

    /// The spec's key for a file key, or `None` when the key lies outside the prefix.
    pub fn to_spec(&self, file_key: &str) -> Option<String> {
        let mut k = match self.prefix.as_deref() {
            Some(p) => file_key.strip_prefix(p)?.to_string(),
            None => file_key.to_string(),
        };
        for r in &self.rename {
            if !r.from.is_empty() {
                k = k.replace(&r.from, &r.to);
            }
        }
        if let Some(i) = &self.insert {
            k.insert_str(0, i);
        }
        Some(k)
    }

    /// The rules as the spec writes them: `prefix "vit." rename "a" -> "b"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.prefix {
            parts.push(format!("prefix {p:?}"));
        }
        for r in &self.rename {
            parts.push(format!("rename {:?} -> {:?}", r.from, r.to));
        }
        for r in &self.resample {
            parts.push(format!("resample {:?} {:?} -> {:?} keep {}", r.key, r.from, r.to, r.keep));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_then_renames_in_order() {
        let m = KeyMap {
            prefix: Some("base_model.model.".into()),
            rename: vec![
                Rename { from: ".attention.attention.".into(), to: ".attn.".into() },
                Rename { from: "attn.".into(), to: "a.".into() },
            ],
            insert: None,
            resample: Vec::new(),
        };
        assert_eq!(
            m.to_spec("base_model.model.layer.0.attention.attention.query.weight").unwrap(),
            "layer.0.a.query.weight"
        );
        assert_eq!(m.to_spec("classifier.weight"), None, "outside the prefix");
        assert!(!m.is_identity());
        assert!(KeyMap::default().is_identity());
        assert_eq!(KeyMap::default().to_spec("x.y").unwrap(), "x.y");
        assert_eq!(
            m.describe(),
            r#"prefix "base_model.model." rename ".attention.attention." -> ".attn." rename "attn." -> "a.""#
        );
    }
}
