//! `graft export peft SPEC --run RUN_DIR --out DIR [--adapter NAME]`: a run's trained
//! `lora` adapter as a PEFT directory (`adapter_config.json` +
//! `adapter_model.safetensors`, published together), for
//! `peft.PeftModel.from_pretrained` over the timm / transformers model whose keys the
//! backbone has. See [`crate::params::peft`].

use super::compiled;
use crate::lower::AdapterInfo;
use crate::params::peft::{component, config_json, CONFIG, PREFIX, WEIGHTS};
use crate::pipeline::Mode;
use crate::safetensors::SafeFile;
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// A `graft train` run's checkpoint of the trainable tensors.
const TRAINABLE: &str = "trainable.safetensors";

/// `graft export peft`.
#[derive(clap::Args, Debug)]
pub struct ExportPeftArgs {
    /// The spec the run trained.
    pub spec: PathBuf,
    /// The `graft train` output directory (its trainable.safetensors), or the file.
    #[arg(long)]
    pub run: PathBuf,
    /// The directory to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The `lora` adapter to export, when the spec has several.
    #[arg(long)]
    pub adapter: Option<String>,
}

/// Write the run's LoRA adapter as a PEFT directory.
pub fn peft(a: &ExportPeftArgs) -> Result<ExitCode> {
    let c = compiled(&a.spec, Mode::Train)?;
    let loras: Vec<(&String, &AdapterInfo)> = c.adapter_info.iter().filter(|(_, i)| i.module == "lora").collect();
    let (name, info) = match (&a.adapter, loras.as_slice()) {
        (Some(n), _) => loras
            .iter()
            .find(|(k, _)| *k == n)
            .copied()
            .ok_or_else(|| anyhow!("--adapter {n}: the spec has no lora adapter `{n}`"))?,
        (None, [one]) => *one,
        (None, []) => bail!("{}: the spec has no `lora` adapter to export", a.spec.display()),
        (None, many) => bail!(
            "{}: several lora adapters ({}); choose one with --adapter",
            a.spec.display(),
            many.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let comp = component(name, info)?;
    let (rank, alpha) = match (info.args.get("rank"), info.args.get("alpha")) {
        (Some(r), Some(al)) => (*r, *al),
        _ => bail!("adapter `{name}`: rank and alpha must be numbers known at compile time"),
    };
    if a.out.exists() {
        bail!("--out {}: already exists; graft writes a new directory", a.out.display());
    }
    let ckpt = if a.run.is_dir() { a.run.join(TRAINABLE) } else { a.run.clone() };
    let file = SafeFile::open(&ckpt)?;
    let mut tensors = Vec::new();
    let mut targets = Vec::new();
    for site in &info.sites {
        let rest = &site[comp.len() + 1..];
        for m in ["lora_A", "lora_B"] {
            let key = format!("{name}.{site}.{m}.weight");
            let t = file
                .tensor(&key)
                .map_err(|_| anyhow!("{}: no `{key}`: was the run trained with this spec?", ckpt.display()))?;
            tensors.push((format!("{PREFIX}{rest}.{m}.weight"), t));
        }
        targets.push(rest.to_string());
    }
    let config = config_json(rank, alpha, &targets);
    let staged = crate::durable::StagedDir::new(&a.out)?;
    staged.write(CONFIG, serde_json::to_string_pretty(&config)?.as_bytes())?;
    staged.write(WEIGHTS, &crate::safetensors::encode(tensors.iter().map(|(n, t)| (n, t)), &BTreeMap::new())?)?;
    staged.publish()?;
    println!(
        "wrote {} (adapter `{name}`: rank {rank}, alpha {alpha}, {} modules of `{comp}`)",
        a.out.display(),
        targets.len()
    );
    Ok(ExitCode::SUCCESS)
}
