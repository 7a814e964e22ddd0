//! `spartan certify`.

use super::{read_model_file, DataArgs};
use crate::progress::Progress;
use anyhow::{bail, Context};
use spartan_core::float::F32Model;
use spartan_train::attack::eps::parse_eps;
use spartan_train::certify::{
    certify_set, Certifier, Grid, ImageSet, DEFAULT_BUDGET, DEFAULT_CLUSTER,
};
use spartan_train::data;
use std::path::PathBuf;

/// `--grid` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GridArg {
    /// Every f32 value within ε (real arithmetic).
    Real,
    /// Raw pixels within ε, as a device receives them.
    U8,
    /// Both.
    Both,
}

impl GridArg {
    pub fn grids(self) -> Vec<Grid> {
        match self {
            GridArg::Real => vec![Grid::Real],
            GridArg::U8 => vec![Grid::U8],
            GridArg::Both => vec![Grid::Real, Grid::U8],
        }
    }
}

/// Arguments of `spartan certify`.
#[derive(Debug, clap::Args)]
pub struct CertifyArgs {
    /// Float model file to certify.
    #[arg(long)]
    pub model: PathBuf,
    /// ε values in [0, 1]: numbers and `start:stop:step` ranges, comma-separated.
    #[arg(long, default_value = "0.1,0.2,0.3", allow_hyphen_values = true)]
    pub eps: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Test images held back (the black-box adversary's); certification starts after them.
    #[arg(long, default_value_t = 150)]
    pub holdout: usize,
    /// Images to certify (the first after the holdout: the white-box attack images).
    #[arg(long, default_value_t = 1000)]
    pub images: usize,
    /// Inputs the ball holds: real values, the u8 grid, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub grid: GridArg,
    /// Most bound computations (branching nodes) per image before giving up.
    #[arg(long, default_value_t = DEFAULT_BUDGET)]
    pub budget: usize,
    /// Most combined codes of a cluster of nearby uncertain pixels (their interactions
    /// are then exact; 1: every pixel on its own).
    #[arg(long, default_value_t = DEFAULT_CLUSTER)]
    pub cluster: usize,
    /// Output directory: certify.csv, certify.json, certify.png, counterexamples/.
    #[arg(long)]
    pub out: PathBuf,
}

pub(super) fn certify(a: CertifyArgs, progress: Progress) -> anyhow::Result<()> {
    let eps = parse_eps(&a.eps).map_err(|e| anyhow::anyhow!("--eps: {e}"))?;
    if a.images == 0 {
        bail!("--images must be at least 1");
    }
    if !(1..=1_000_000).contains(&a.budget) {
        bail!("--budget must be between 1 and 1000000");
    }
    if !(1..=4096).contains(&a.cluster) {
        bail!("--cluster must be between 1 and 4096");
    }
    let bytes = read_model_file(&a.model)?;
    let model = F32Model::load(&bytes).with_context(|| {
        format!(
            "{}: certify needs a float model (the int8 model is certified through its f32 source)",
            a.model.display()
        )
    })?;
    let cert = Certifier::new(model).with_context(|| format!("{}", a.model.display()))?;
    let splits = data::load(a.data.data.as_deref())?;
    let test = splits.test;
    if a.holdout >= test.len() {
        bail!("--holdout must be below {} (the test set size)", test.len());
    }
    test.check_shape(cert.model().shapes()[0])
        .context("the data does not fit the model")?;
    test.check_classes(cert.model().classes())?;
    let set = test.slice(a.holdout..test.len()).take(a.images);
    let images = ImageSet {
        images: &set,
        first_index: a.holdout,
    };
    let (report, found) = certify_set(
        &cert,
        images,
        &eps,
        &a.grid.grids(),
        a.budget,
        a.cluster,
        &progress,
    )?;
    let name = a
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::report::write_certify(&report, &found, &a.out, &name, cert.model().shapes()[0])
        .with_context(|| format!("cannot write results to {}", a.out.display()))?;
    println!(
        "{}: clean accuracy {:.2}% on {} images (test images {}..{})",
        name,
        report.clean_accuracy * 100.0,
        report.n,
        a.holdout,
        a.holdout + report.n
    );
    for p in &report.points {
        println!(
            "  ε = {:<5} {:<4} certified {:6.2}%  proven {} (IBP {}, bounds {}, branching {}), counterexample {}, unknown {}  [{:.1} s]",
            p.eps,
            p.grid.name(),
            p.certified_accuracy * 100.0,
            p.proven,
            p.proven_ibp,
            p.proven_without_branching - p.proven_ibp,
            p.proven - p.proven_without_branching,
            p.counterexamples,
            p.unknown,
            p.seconds
        );
    }
    println!("wrote {}", a.out.join("certify.csv").display());
    Ok(())
}
