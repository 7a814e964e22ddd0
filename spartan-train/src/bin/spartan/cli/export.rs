//! `spartan export` and `spartan import`.

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

/// Arguments of `spartan import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A safetensors file with PyTorch names and layouts and the `spartan.spec`
    /// metadata, as `spartan export` writes it (docs/safetensors.md).
    #[arg(long)]
    pub safetensors: PathBuf,
    /// Output model file (f32 kind).
    #[arg(long)]
    pub out: PathBuf,
}

pub(super) fn import(a: ImportArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&a.safetensors)
        .with_context(|| format!("cannot read {}", a.safetensors.display()))?;
    let net = spartan_train::export::from_safetensors(&bytes)
        .with_context(|| format!("{}", a.safetensors.display()))?;
    let model = net.to_model_bytes();
    write_atomic(&a.out, &model).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "wrote {} ({} bytes): {} layers, {} parameters",
        a.out.display(),
        model.len(),
        net.spec().layers.len(),
        net.param_lens().iter().sum::<usize>()
    );
    Ok(())
}
