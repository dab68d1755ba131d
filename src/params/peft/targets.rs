//! Which modules a PEFT LoRA config wraps, decided as PEFT decides it
//! (`check_target_module_exists` in `peft.tuners.tuners_utils`), for the check that
//! every site of a graft adapter is one of them:
//!
//! - `target_modules` as a list: a module whose name equals an entry or ends with
//!   `.entry`; then, when `layers_to_transform` is set (an index or a list), only
//!   modules whose name matches `(.*\.)?PATTERN\.(\d+)\.` with that index, PATTERN
//!   being each of `layers_pattern` (or `[^.]*` when it is unset), the layer list
//!   allowed at the start of the name as well (timm's `blocks.3.attn.qkv`);
//! - `target_modules` as a string: a regular expression the whole name must match
//!   (`"all-linear"`: every linear module, which every `lora` site is).
//!
//! A field of another type, or an expression graft's regex engine cannot read
//! (look-around), is refused by name rather than skipped.

use serde_json::Value;

/// `Ok` when every site (a module name relative to the wrapped model) is wrapped by
/// the config; otherwise the disagreement, naming the field.
pub fn covered(targets: &Value, layers: &Value, pattern: &Value, sites: &[String]) -> Result<(), String> {
    let wrapped: Box<dyn Fn(&str) -> bool> = match targets {
        Value::Null => return Ok(()), // PEFT fills it from the model type: nothing to check
        Value::String(s) if s == "all-linear" => Box::new(|_| true),
        Value::String(s) => {
            let re = regex::Regex::new(&format!("^(?:{s})$")).map_err(|e| {
                format!("target_modules: `{s}` is a regular expression graft cannot read ({e}); list the module names instead")
            })?;
            Box::new(move |site| re.is_match(site))
        }
        Value::Array(a) => {
            let mut names = Vec::new();
            for v in a {
                match v.as_str() {
                    Some(n) => names.push(n.to_string()),
                    None => return Err(format!("target_modules: {v} is not a module name (a string)")),
                }
            }
            let layer = layer_filter(layers, pattern)?;
            Box::new(move |site| {
                // An exact name is wrapped whatever its layer; a suffix only in a kept layer.
                names.iter().any(|n| n == site)
                    || (names.iter().any(|n| site.ends_with(&format!(".{n}")))
                        && layer.as_ref().is_none_or(|f| f(site)))
            })
        }
        other => return Err(format!("target_modules: {other} (PEFT takes a list of names or a regular expression)")),
    };
    let missed: Vec<&String> = sites.iter().filter(|s| !wrapped(s)).collect();
    match missed.first() {
        None => Ok(()),
        Some(first) => {
            let layers_note =
                if layers.is_null() { String::new() } else { format!(" with layers_to_transform {layers}") };
            Err(format!(
                "target_modules: {targets}{layers_note} do not cover {} of the adapter's {} sites (first: {first})",
                missed.len(),
                sites.len()
            ))
        }
    }
}

type Filter = Box<dyn Fn(&str) -> bool>;

/// The layer filter of `layers_to_transform` / `layers_pattern`, if one is set.
fn layer_filter(layers: &Value, pattern: &Value) -> Result<Option<Filter>, String> {
    let indices: Vec<u64> = match layers {
        Value::Null => return Ok(None),
        Value::Array(a) if a.is_empty() => return Ok(None),
        Value::Number(n) => vec![n.as_u64().ok_or_else(|| format!("layers_to_transform: {n} is not a layer index"))?],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_u64().ok_or_else(|| format!("layers_to_transform: {v} is not a layer index")))
            .collect::<Result<_, _>>()?,
        other => return Err(format!("layers_to_transform: {other} (PEFT takes a layer index or a list of them)")),
    };
    let patterns: Vec<String> = match pattern {
        Value::Null => vec!["[^.]*".to_string()],
        Value::String(s) if s.is_empty() => vec!["[^.]*".to_string()],
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if a.is_empty() => vec!["[^.]*".to_string()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("layers_pattern: {v} is not a name")))
            .collect::<Result<_, _>>()?,
        other => return Err(format!("layers_pattern: {other} (PEFT takes a name or a list of names)")),
    };
    let res = patterns
        .iter()
        .map(|p| {
            regex::Regex::new(&format!(r"^(?:.*\.)?{p}\.(\d+)\."))
                .map_err(|e| format!("layers_pattern: `{p}` is not a pattern graft can read ({e})"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Box::new(move |site: &str| {
        // PEFT takes the first pattern that matches, then compares its index.
        let index = res.iter().find_map(|re| re.captures(site)).and_then(|c| c[1].parse::<u64>().ok());
        index.is_some_and(|i| indices.contains(&i))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sites(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn lists_regexes_and_layers_as_peft_reads_them() {
        let s = sites(&["encoder.layer.0.attention.query", "encoder.layer.1.attention.query"]);
        let n = Value::Null;
        assert!(covered(&json!(["query"]), &n, &n, &s).is_ok());
        assert!(covered(&json!(r".*\.query"), &n, &n, &s).is_ok());
        assert!(covered(&json!("all-linear"), &n, &n, &s).is_ok());
        let e = covered(&json!(r".*layer\.0\..*query"), &n, &n, &s).unwrap_err();
        assert!(e.contains("do not cover 1 of the adapter's 2 sites (first: encoder.layer.1.attention.query)"), "{e}");
        // layers_to_transform keeps layer 1 only: layer 0's site is not wrapped.
        let e = covered(&json!(["query"]), &json!([1]), &n, &s).unwrap_err();
        assert!(e.contains("layers_to_transform [1]") && e.contains("first: encoder.layer.0"), "{e}");
        assert!(covered(&json!(["query"]), &json!([0, 1]), &json!("layer"), &s).is_ok());
        assert!(covered(&json!(["query"]), &json!(1), &json!(["blocks"]), &s).is_err());
        // Refused by name: what graft cannot read.
        let e = covered(&json!("(?<=x)query"), &n, &n, &s).unwrap_err();
        assert!(e.starts_with("target_modules: `(?<=x)query` is a regular expression graft cannot read"), "{e}");
        assert!(covered(&json!(7), &n, &n, &s).unwrap_err().starts_with("target_modules: 7"));
        assert!(covered(&json!(["query"]), &json!("all"), &n, &s).unwrap_err().starts_with("layers_to_transform"));
    }
}
