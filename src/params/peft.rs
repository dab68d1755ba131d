//! PEFT LoRA adapter directories, both ways.
//!
//! A directory written by PEFT's `save_pretrained` (`adapter_config.json` +
//! `adapter_model.safetensors`) binds to a graft `lora` adapter like a file
//! (`--weights lora_all=DIR`, or in the spec). Its keys are the wrapped model's module
//! paths under `base_model.model.` (`base_model.model.blocks.0.attn.qkv.lora_A.weight`);
//! graft's are the adapter's sites (`vit.blocks.0.attn.qkv.lora_A.weight` under the
//! binding), so the binding reads them through a key map: the prefix removed, the
//! backbone's name put in front. Before anything loads, the config is checked against
//! the adapter: rank, alpha, target modules, and the options graft's `lora` does not
//! have (DoRA, rsLoRA, biases, per-module ranks); every disagreement is listed.
//!
//! `graft export peft` ([`crate::commands::export`]) writes the other direction with
//! [`config_json`] and [`PREFIX`].

use super::ParamError;
use crate::keymap::KeyMap;
use crate::lower::AdapterInfo;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "adapter_config.json";
pub const WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix for the wrapped model's keys.
pub const PREFIX: &str = "base_model.model.";

/// Whether `path` is a PEFT adapter directory.
pub fn is_peft_dir(path: &Path) -> bool {
    path.is_dir() && path.join(CONFIG).is_file()
}

/// The weights file inside a PEFT directory.
pub fn weights_file(dir: &Path) -> Result<PathBuf, ParamError> {
    for name in [WEIGHTS, "adapter_model.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(ParamError::File {
        path: dir.to_path_buf(),
        reason: format!("a PEFT adapter directory without {WEIGHTS} (or adapter_model.bin)"),
    })
}

fn binding_error(msg: String) -> ParamError {
    ParamError::Binding(msg)
}

/// The one component an adapter's sites lie in (PEFT wraps one model).
pub fn component(binding: &str, info: &AdapterInfo) -> Result<String, ParamError> {
    let mut comps: Vec<&str> = info.sites.iter().filter_map(|s| s.split('.').next()).collect();
    comps.sort();
    comps.dedup();
    match comps.as_slice() {
        [c] => Ok(c.to_string()),
        _ => Err(binding_error(format!(
            "adapter `{binding}` has sites in {} (`{}`); a PEFT adapter wraps one model",
            comps.len(),
            comps.join("`, `")
        ))),
    }
}

/// Check the directory's config against the adapter and return the key map that
/// reads its weights.
pub fn check(binding: &str, dir: &Path, info: Option<&AdapterInfo>) -> Result<KeyMap, ParamError> {
    let file = dir.join(CONFIG);
    let bad = |reason: String| ParamError::File { path: file.clone(), reason };
    let text = std::fs::read_to_string(&file).map_err(|e| bad(e.to_string()))?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Some(info) = info else {
        return Err(binding_error(format!(
            "--weights {binding}={}: a PEFT adapter directory binds to a `lora` adapter, and `{binding}` is not an adapter",
            dir.display()
        )));
    };
    if info.module != "lora" {
        return Err(binding_error(format!(
            "--weights {binding}={}: a PEFT LoRA directory binds to a `lora` adapter; `{binding}` is `{}`",
            dir.display(),
            info.module
        )));
    }
    let comp = component(binding, info)?;
    let mut diff = Vec::new();
    let get = |k: &str| cfg.get(k).cloned().unwrap_or(Value::Null);
    if get("peft_type") != json!("LORA") {
        diff.push(format!("peft_type: graft reads LORA, the config has {}", get("peft_type")));
    }
    for (ours, theirs) in [("rank", "r"), ("alpha", "lora_alpha")] {
        let spec = info.args.get(ours).copied();
        let file = get(theirs).as_f64();
        if spec != file {
            let s = spec.map_or("unset".to_string(), |v| v.to_string());
            diff.push(format!("{ours}: spec {s}, {CONFIG} {theirs} = {}", get(theirs)));
        }
    }
    for (key, want) in [("use_dora", json!(false)), ("use_rslora", json!(false)), ("fan_in_fan_out", json!(false))] {
        let v = get(key);
        if !v.is_null() && v != want {
            diff.push(format!("{key}: {v} (graft's lora computes (alpha / rank) · B A on the linear's input)"));
        }
    }
    let bias = get("bias");
    if !bias.is_null() && bias != json!("none") {
        diff.push(format!("bias: {bias} (graft's lora has no bias of its own; PEFT's \"none\")"));
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if get(key).as_object().is_some_and(|o| !o.is_empty()) {
            diff.push(format!("{key}: {} (one rank and alpha for every site in graft)", get(key)));
        }
    }
    if get("modules_to_save").as_array().is_some_and(|a| !a.is_empty()) {
        diff.push(format!("modules_to_save: {} (bind those modules' weights separately)", get("modules_to_save")));
    }
    // Every site must be one of PEFT's target modules (a name or a path suffix).
    let sites: Vec<String> = info.sites.iter().map(|s| s[comp.len() + 1..].to_string()).collect();
    if let Some(targets) = get("target_modules").as_array() {
        let targets: Vec<&str> = targets.iter().filter_map(Value::as_str).collect();
        let matched = |s: &str| targets.iter().any(|t| s == *t || s.ends_with(&format!(".{t}")));
        let untargeted: Vec<&str> = sites.iter().map(String::as_str).filter(|s| !matched(s)).collect();
        if !untargeted.is_empty() {
            diff.push(format!(
                "target_modules: {:?} do not cover {} of the adapter's sites (first: {})",
                targets,
                untargeted.len(),
                untargeted[0]
            ));
        }
    }
    if !diff.is_empty() {
        return Err(binding_error(format!(
            "adapter `{binding}` and the PEFT directory {} disagree:\n  {}\n  hint: declare the adapter with the directory's r and lora_alpha (lora(rank: …, alpha: …)) at the modules it targets",
            dir.display(),
            diff.join("\n  ")
        )));
    }
    Ok(KeyMap { prefix: Some(PREFIX.into()), insert: Some(format!("{comp}.")), ..KeyMap::default() })
}

/// The `adapter_config.json` graft writes for a `lora` adapter: PEFT's LoRA with the
/// adapter's rank and alpha, its sites (relative to the wrapped model) as target
/// modules, and PEFT's defaults for what graft's `lora` does not have.
pub fn config_json(rank: f64, alpha: f64, targets: &[String]) -> Value {
    json!({
        "peft_type": "LORA",
        "r": rank as i64,
        "lora_alpha": alpha,
        "target_modules": targets,
        "bias": "none",
        "lora_dropout": 0.0,
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "base_model_name_or_path": null,
        "task_type": null,
    })
}
