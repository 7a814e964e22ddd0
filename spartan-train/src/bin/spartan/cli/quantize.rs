//! `spartan quantize`.

use super::{read_model_file, DataArgs};
use anyhow::Context;
use spartan_train::data::Split;
use spartan_train::fsutil::write_atomic;
use spartan_train::nn::Network;
use std::path::PathBuf;

/// Arguments of `spartan quantize`.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// f32 model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Training images used to calibrate activation ranges (the first N).
    #[arg(long, default_value_t = 2000)]
    pub calib: usize,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output int8 model file.
    #[arg(long)]
    pub out: PathBuf,
}

pub(super) fn quantize(a: QuantizeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.calib >= 1, "--calib must be at least 1");
    let bytes = read_model_file(&a.model)?;
    let net = Network::load(&bytes)
        .with_context(|| format!("{} (quantize needs an f32 model)", a.model.display()))?;
    let train = a.data.load(Split::Train)?;
    train
        .check_shape(net.shapes()[0])
        .context("calibration data does not fit the model")?;
    let calib = train.take(a.calib).to_input();
    let q = spartan_train::quantize::quantize(&net, calib.images())?;
    write_atomic(&a.out, &q).with_context(|| format!("cannot write {}", a.out.display()))?;
    let model = spartan_core::int8::Int8Model::load(&q)?;
    println!(
        "wrote {}: int8 model, {} bytes (f32: {} bytes), arena {} bytes, calibrated on {} images",
        a.out.display(),
        q.len(),
        bytes.len(),
        model.arena_len(),
        calib.len()
    );
    Ok(())
}
