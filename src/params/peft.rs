//! PEFT LoRA adapter directories, both ways.
//!
//! A directory written by PEFT's `save_pretrained` (`adapter_config.json` +
//! `adapter_model.safetensors`) binds to a graft `lora` adapter like a file
//! (`--weights lora_all=DIR`, or in the spec). Its keys are the wrapped model's module
//! paths under `base_model.model.` (`base_model.model.blocks.0.attn.qkv.lora_A.weight`);
//! graft's are the adapter's sites (`vit.blocks.0.attn.qkv.lora_A.weight` under the
//! binding), so the binding reads them through a key map: the prefix removed, the
//! backbone's name put in front. Before anything loads, the config is checked against
//! the adapter: rank, alpha, target modules (a list, or PEFT's regular expression) and
//! `layers_to_transform`, and the options graft's `lora` does not have (DoRA, rsLoRA,
//! biases, per-module ranks, excluded modules); every disagreement is listed.
//!
//! `graft export peft` ([`crate::commands::export`]) writes the other direction with
//! [`config_json`] and [`PREFIX`].

mod targets;

use super::ParamError;
use crate::keymap::KeyMap;
use crate::lower::AdapterInfo;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "adapter_config.json";
pub const WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix for the wrapped model's keys.
pub const PREFIX: &str = "base_model.model.";

/// The largest `adapter_config.json` graft reads (PEFT writes about a kilobyte).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Whether a weights path is to be read as a PEFT adapter directory: any directory
/// is (its `adapter_config.json` is then checked, and a missing or unreadable one
/// is reported as what it is).
pub fn is_peft_dir(path: &Path) -> bool {
    path.is_dir()
}

/// The weights file inside a PEFT directory.
pub fn weights_file(dir: &Path) -> Result<PathBuf, ParamError> {
    for name in [WEIGHTS, "adapter_model.bin"] {
        let p = dir.join(name);
        if std::fs::symlink_metadata(&p).is_ok() {
            return Ok(p); // opened as a regular file only, by the weights reader
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
    if let Some(top) = info.sites.iter().find(|s| !s.contains('.')) {
        return Err(binding_error(format!(
            "adapter `{binding}` is at `{top}`, a top-level site of the model (a head), not inside a component; a PEFT adapter holds modules of one wrapped model: place the adapter inside a backbone or encoder"
        )));
    }
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
    let bytes = crate::input_file::read_capped(&file, MAX_CONFIG_BYTES, "a PEFT adapter config").map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!(" (a directory given as weights is read as a PEFT adapter directory: {CONFIG} + {WEIGHTS})")
            }
            _ => String::new(),
        };
        bad(format!("{e}{hint}"))
    })?;
    let cfg: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
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
    for key in ["exclude_modules", "target_parameters", "trainable_token_indices", "layer_replication"] {
        let v = get(key);
        if !(v.is_null() || v.as_array().is_some_and(|a| a.is_empty()) || v.as_object().is_some_and(|o| o.is_empty())) {
            diff.push(format!("{key}: {v} (graft reads LoRA on whole modules only; PEFT's default is null)"));
        }
    }
    if get("lora_bias").as_bool() == Some(true) {
        diff.push("lora_bias: true (graft's lora has no bias of its own)".to_string());
    }
    // Every site must be one of PEFT's target modules, in a transformed layer.
    let sites: Vec<String> = info.sites.iter().map(|s| s[comp.len() + 1..].to_string()).collect();
    match targets::covered(&get("target_modules"), &get("layers_to_transform"), &get("layers_pattern"), &sites) {
        Ok(()) => {}
        Err(why) => diff.push(why),
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
