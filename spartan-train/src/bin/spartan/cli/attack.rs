//! `spartan attack`.

use super::{load_any_model, AnyModel, DataArgs};
use crate::progress::Progress;
use anyhow::{bail, Context};
use spartan_train::attack::blackbox::{black_box, BlackBoxConfig, SubstituteKind};
use spartan_train::attack::eps::{parse_eps, DEFAULT_EPS};
use spartan_train::attack::sweep::{white_box_sweep, WhiteBox, WhiteBoxConfig};
use spartan_train::data::Split;
use spartan_train::int8::Int8Runner;
use spartan_train::nn::GradMode;
use std::path::PathBuf;

/// Which attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttackKind {
    /// Fast gradient sign method, white-box (BPDA through steps).
    Fgsm,
    /// Projected gradient descent (ℓ∞), white-box (BPDA through steps).
    Pgd,
    /// Surrogate black-box: substitute trained on oracle labels, FGSM transferred.
    Blackbox,
}

/// How a white-box attack differentiates a Heaviside step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bpda {
    /// Its composite activation's synthetic gradient (the adaptive attack).
    Surrogate,
    /// The identity (`H(cos z)` as `cos z`).
    Identity,
    /// None: the true derivative, zero through steps (shows the masking BPDA undoes).
    Exact,
}

/// `--substitute` values (the library's [`SubstituteKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubstituteArg {
    /// CleverHans's MLP: 784-200-200-10, ReLU (the paper's setting).
    Mlp,
    /// A small CNN: conv 32 3×3, pool 2, conv 64 3×3, pool 2, dense 200, dense 10.
    Cnn,
}

impl From<SubstituteArg> for SubstituteKind {
    fn from(a: SubstituteArg) -> Self {
        match a {
            SubstituteArg::Mlp => SubstituteKind::Mlp,
            SubstituteArg::Cnn => SubstituteKind::Cnn,
        }
    }
}

/// Arguments of `spartan attack`.
#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// Model file to attack.
    #[arg(long)]
    pub model: PathBuf,
    /// Attack.
    #[arg(long, value_enum)]
    pub attack: AttackKind,
    /// ε values in [0, 1]: numbers and `start:stop:step` ranges (inclusive), comma-separated.
    #[arg(long, default_value = DEFAULT_EPS, allow_hyphen_values = true)]
    pub eps: String,
    /// Gradient through steps for white-box attacks.
    #[arg(long, value_enum, default_value = "surrogate")]
    pub bpda: Bpda,
    #[command(flatten)]
    pub data: DataArgs,
    /// Test images held by the black-box adversary (the first ones); the others are
    /// the evaluation images of every attack.
    #[arg(long, default_value_t = 150)]
    pub holdout: usize,
    /// Evaluation images for white-box attacks (the first of the evaluation set).
    #[arg(long, default_value_t = 1000)]
    pub white_box_images: usize,
    /// Attack the model's own predictions instead of the true labels (white-box).
    #[arg(long)]
    pub predicted_targets: bool,
    /// PGD iterations.
    #[arg(long, default_value_t = 20)]
    pub pgd_steps: usize,
    /// PGD step size as a multiple of ε / steps.
    #[arg(long, default_value_t = 2.5)]
    pub pgd_step_factor: f32,
    /// Start PGD at the clean image instead of a random point of the ε-ball.
    #[arg(long)]
    pub no_random_start: bool,
    /// Black-box substitute.
    #[arg(long, value_enum, default_value = "mlp")]
    pub substitute: SubstituteArg,
    /// Seed (substitute training, PGD starts).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory: attack.csv, attack.json, attack.png.
    #[arg(long)]
    pub out: PathBuf,
}

pub(super) fn attack(a: AttackArgs, progress: Progress) -> anyhow::Result<()> {
    let eps = parse_eps(&a.eps).map_err(|e| anyhow::anyhow!("--eps: {e}"))?;
    if a.pgd_steps == 0 || a.pgd_steps > 10_000 {
        bail!("--pgd-steps must be between 1 and 10000");
    }
    if !(a.pgd_step_factor.is_finite() && a.pgd_step_factor > 0.0) {
        bail!("--pgd-step-factor must be positive");
    }
    let model = load_any_model(&a.model)?;
    let test = a.data.load(Split::Test)?;
    if a.holdout == 0 || a.holdout >= test.len() {
        bail!(
            "--holdout must be between 1 and {} (the test set size minus one)",
            test.len() - 1
        );
    }
    let eval = test.slice(a.holdout..test.len());
    let holdout = || test.slice(0..a.holdout).to_input();
    let bb_cfg = BlackBoxConfig {
        holdout: a.holdout,
        substitute: a.substitute.into(),
        seed: a.seed,
        ..BlackBoxConfig::default()
    };
    let mut net = match model {
        AnyModel::Int8(bytes) => {
            // The device's view: labels only, from integer inference on u8 images.
            if a.attack != AttackKind::Blackbox {
                bail!("white-box attacks differentiate the model: give the f32 model, or use --attack blackbox on an int8 model");
            }
            let mut runner = Int8Runner::load(&bytes)?;
            let input = runner.model.shapes()[0];
            test.check_shape(input)
                .context("the data does not fit the model")?;
            test.check_classes(runner.model.classes())?;
            let classes = u16::try_from(runner.model.classes()).context("too many classes")?;
            let report = black_box(
                &mut runner,
                &holdout(),
                &eval.to_input(),
                classes,
                &eps,
                &bb_cfg,
                &progress,
            );
            return finish(&a, report);
        }
        AnyModel::F32(net) => *net,
    };
    test.check_shape(net.shapes()[0])
        .context("the data does not fit the model")?;
    test.check_classes(net.classes())?;
    let grad = match a.bpda {
        Bpda::Surrogate => GradMode::Surrogate,
        Bpda::Identity => GradMode::Identity,
        Bpda::Exact => GradMode::Exact,
    };
    let report = match a.attack {
        AttackKind::Blackbox => {
            let classes = u16::try_from(net.classes()).context("too many classes")?;
            black_box(
                &mut net,
                &holdout(),
                &eval.to_input(),
                classes,
                &eps,
                &bb_cfg,
                &progress,
            )
        }
        kind => {
            if a.white_box_images == 0 {
                bail!("--white-box-images must be at least 1");
            }
            let attack = match kind {
                AttackKind::Fgsm => WhiteBox::Fgsm,
                _ => WhiteBox::Pgd {
                    steps: a.pgd_steps,
                    step_factor: a.pgd_step_factor,
                    random_start: !a.no_random_start,
                },
            };
            let cfg = WhiteBoxConfig {
                attack,
                grad,
                use_labels: !a.predicted_targets,
                seed: a.seed,
            };
            let data = eval.take(a.white_box_images).to_input();
            white_box_sweep(&net, &data, &eps, &cfg, &progress)
        }
    };
    finish(&a, report)
}

/// Writes and prints an attack's results.
fn finish(
    a: &AttackArgs,
    report: spartan_train::attack::sweep::AttackReport,
) -> anyhow::Result<()> {
    let name = a
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::report::write_attack(&report, &a.out, &name)
        .with_context(|| format!("cannot write results to {}", a.out.display()))?;
    println!(
        "{}: clean accuracy {:.2}% on {} images",
        report.settings,
        report.clean_accuracy * 100.0,
        report.n
    );
    if let (Some(s), Some(g)) = (report.substitute_accuracy, report.substitute_agreement) {
        println!(
            "substitute accuracy {:.2}%, agreement with the oracle {:.2}%, {} oracle queries",
            s * 100.0,
            g * 100.0,
            report.queries
        );
    }
    for p in &report.points {
        println!("  ε = {:<5} accuracy {:6.2}%", p.eps, p.accuracy * 100.0);
    }
    println!("wrote {}", a.out.join("attack.csv").display());
    Ok(())
}
