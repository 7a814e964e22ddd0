//! `spartan reproduce`.

use super::attack::StrengthArgs;
use super::DataArgs;
use crate::progress::Progress;
use crate::reproduce::{reproduce as run, ReproduceConfig};
use spartan_train::attack::eps::{parse_eps, QUICK_WHITE_BOX_EPS, REPRODUCE_EPS};
use spartan_train::data;
use std::path::PathBuf;

/// Arguments of `spartan reproduce`.
#[derive(Debug, clap::Args)]
pub struct ReproduceArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Training epochs per model.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Seed of training and attacks.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// ε values for every sweep: the authors' grid plus 0.1 and 0.2 (see `spartan attack --help`).
    #[arg(long, default_value = REPRODUCE_EPS, allow_hyphen_values = true)]
    pub eps: String,
    /// Test images held by the black-box adversary.
    #[arg(long, default_value_t = 150)]
    pub holdout: usize,
    /// Evaluation images for the white-box sweeps [default: 1000 with --data, 250 on
    /// the embedded subset, so the quick run stays within minutes].
    #[arg(long)]
    pub white_box_images: Option<usize>,
    /// ε values of the white-box sweeps [default: --eps with --data; on the embedded
    /// subset 0, 0.1, …, 0.5, so the quick run stays within minutes].
    #[arg(long, allow_hyphen_values = true)]
    pub white_box_eps: Option<String>,
    #[command(flatten)]
    pub strength: StrengthArgs,
    /// ε values at which `spartan certify` proves robustness on the white-box images
    /// ("none" to skip; each ε costs about as much as a white-box attack).
    #[arg(long, default_value = "0.1", allow_hyphen_values = true)]
    pub certify_eps: String,
    /// Output directory (REPORT.md, figures, models, raw results).
    #[arg(long, default_value = "runs/reproduce")]
    pub out: PathBuf,
}

pub(super) fn reproduce(a: ReproduceArgs, progress: Progress) -> anyhow::Result<()> {
    let eps = parse_eps(&a.eps).map_err(|e| anyhow::anyhow!("--eps: {e}"))?;
    a.strength.check()?;
    let full = a.data.data.is_some();
    let white_box_eps = match (&a.white_box_eps, full) {
        (Some(e), _) => parse_eps(e).map_err(|e| anyhow::anyhow!("--white-box-eps: {e}"))?,
        (None, true) => eps.clone(),
        (None, false) => parse_eps(QUICK_WHITE_BOX_EPS).expect("a valid ε list"),
    };
    let certify_eps = if a.certify_eps.trim() == "none" {
        Vec::new()
    } else {
        parse_eps(&a.certify_eps).map_err(|e| anyhow::anyhow!("--certify-eps: {e}"))?
    };
    let splits = data::load(a.data.data.as_deref())?;
    let cfg = ReproduceConfig {
        out: a.out.clone(),
        epochs: a.epochs,
        seed: a.seed,
        eps,
        holdout: a.holdout,
        white_box_images: a.white_box_images.unwrap_or(if full { 1000 } else { 250 }),
        white_box_eps,
        white_box_attacks: a.strength.all_attacks(),
        white_box_warm_start: a.strength.warm_start(),
        white_box_order: a.strength.order(),
        certify_eps,
        data_name: match &a.data.data {
            Some(d) => d.display().to_string(),
            None => "embedded".to_string(),
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    eprintln!("reproducing on {} into {}", splits.source, a.out.display());
    let report = run(&cfg, &splits, &progress)?;
    println!("wrote {}", report.display());
    Ok(())
}
