//! `spartan export`.

use super::read_model_file;
use anyhow::Context;
use spartan_train::fsutil::write_atomic;
use spartan_train::nn::Network;
use std::path::PathBuf;

/// Export formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// safetensors with PyTorch names and layouts (docs/safetensors.md).
    Safetensors,
}

/// Arguments of `spartan export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Model file (f32 kind).
    #[arg(long)]
    pub model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "safetensors")]
    pub format: ExportFormat,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
}

pub(super) fn export(a: ExportArgs) -> anyhow::Result<()> {
    let bytes = read_model_file(&a.model)?;
    let net = Network::load(&bytes).with_context(|| format!("{}", a.model.display()))?;
    let out = match a.format {
        ExportFormat::Safetensors => {
            spartan_train::export::to_safetensors(&net).context("safetensors encoding")?
        }
    };
    write_atomic(&a.out, &out).with_context(|| format!("cannot write {}", a.out.display()))?;
    let names: Vec<String> = spartan_train::export::pytorch_tensors(&net)
        .into_iter()
        .map(|t| format!("{} {:?}", t.name, t.shape))
        .collect();
    println!(
        "wrote {} ({} bytes): {}",
        a.out.display(),
        out.len(),
        names.join(", ")
    );
    Ok(())
}
