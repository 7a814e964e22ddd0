//! `spartan attack`.

use super::{load_any_model, AnyModel, DataArgs};
use crate::progress::Progress;
use anyhow::{bail, Context};
use spartan_train::attack::blackbox::{black_box, BlackBoxConfig, SubstituteKind};
use spartan_train::attack::eps::{parse_eps, DEFAULT_EPS};
use spartan_train::attack::filter_codes::{self, FilterCodesConfig};
use spartan_train::attack::gradient::Loss;
use spartan_train::attack::pgd::{self, PgdConfig, Schedule};
use spartan_train::attack::sweep::AttackReport;
use spartan_train::attack::threat::Grid;
use spartan_train::attack::white_box::{
    all_attacks, white_box, Order, Plan, WarmStart, WhiteBoxAttack, WhiteBoxConfig, WhiteBoxResult,
};
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
    /// Exact search over the codes a per-element filtering layer can reach in the ball.
    FilterCodes,
    /// Per image, the worst case of every white-box attack (FGSM, PGD with both BPDA
    /// modes, filter codes), by default each run only on the images the ones before
    /// left standing (`--plan`).
    WorstCase,
    /// Surrogate black-box: substitute trained on oracle labels, FGSM transferred.
    Blackbox,
}

/// `--pgd-loss`, `--codes-loss` values (the library's [`Loss`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LossArg {
    /// Cross-entropy.
    Ce,
    /// Carlini–Wagner margin: best other logit minus the target's.
    Margin,
}

impl From<LossArg> for Loss {
    fn from(a: LossArg) -> Self {
        match a {
            LossArg::Ce => Loss::CrossEntropy,
            LossArg::Margin => Loss::Margin,
        }
    }
}

/// `--pgd-schedule` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// APGD: steps of 2ε with momentum, halved where the loss stops rising.
    Apgd,
    /// Constant steps of `--pgd-step-factor`·ε/steps (Madry et al.).
    Constant,
}

/// How hard the white-box attacks try (shared by `attack` and `reproduce`).
#[derive(Debug, Clone, clap::Args)]
pub struct StrengthArgs {
    /// PGD iterations per restart.
    #[arg(long, default_value_t = pgd::STRONG_STEPS)]
    pub pgd_steps: usize,
    /// PGD runs from random starts (later ones only on images not yet broken).
    #[arg(long, default_value_t = pgd::STRONG_RESTARTS)]
    pub pgd_restarts: usize,
    /// PGD step size schedule.
    #[arg(long, value_enum, default_value = "apgd")]
    pub pgd_schedule: ScheduleArg,
    /// Constant-schedule PGD step size as a multiple of ε / steps.
    #[arg(long, default_value_t = 2.5)]
    pub pgd_step_factor: f32,
    /// Loss PGD climbs.
    #[arg(long, value_enum, default_value = "ce")]
    pub pgd_loss: LossArg,
    /// Start PGD's first run at the clean image instead of a random point of the ball.
    #[arg(long)]
    pub no_random_start: bool,
    /// Filter-code search: loss evaluations per restart.
    #[arg(long, default_value_t = filter_codes::DEFAULT_STEPS)]
    pub codes_steps: usize,
    /// Filter-code search: runs (the first from the clean codes, then random ones).
    #[arg(long, default_value_t = filter_codes::DEFAULT_RESTARTS)]
    pub codes_restarts: usize,
    /// Filter-code search: rounds of probing single switches by their true loss once
    /// first-order proposals stall (stronger, several times slower).
    #[arg(long, default_value_t = 0)]
    pub codes_probe_rounds: usize,
    /// Loss the filter-code search climbs.
    #[arg(long, value_enum, default_value = "margin")]
    pub codes_loss: LossArg,
    /// In an ε sweep, start each attack on a still-robust image from the best point it
    /// found at the ε before, with fewer fresh starts there (`--warm-pgd-random`,
    /// `--warm-codes-fresh`): cheaper, but measured a few tenths of a point to two
    /// points weaker than the full sweep at some ε (docs/attacks.md), so off by default.
    #[arg(long)]
    pub warm_start: bool,
    /// With --warm-start: PGD runs from random points after the warm one.
    #[arg(long, default_value_t = WarmStart::DEFAULT.pgd_random)]
    pub warm_pgd_random: usize,
    /// With --warm-start: filter-code searches after the warm ones (clean, then random).
    #[arg(long, default_value_t = WarmStart::DEFAULT.codes_fresh)]
    pub warm_codes_fresh: usize,
    /// The order an ε sweep visits its values in: `descending` takes an image a search
    /// attack fails on as robust to it at every smaller ε (docs/attacks.md measures
    /// what that costs and saves).
    #[arg(long, value_enum, default_value = "ascending")]
    pub eps_order: OrderArg,
    /// With --eps-order descending: the ε values in a row a search attack must fail
    /// at on an image before the image is settled for the smaller ones.
    #[arg(long, default_value_t = 1)]
    pub settle_after: usize,
}

impl StrengthArgs {
    /// Checks the settings are sane.
    pub fn check(&self) -> anyhow::Result<()> {
        for (name, v) in [
            ("--pgd-steps", self.pgd_steps),
            ("--pgd-restarts", self.pgd_restarts),
            ("--codes-steps", self.codes_steps),
            ("--codes-restarts", self.codes_restarts),
        ] {
            if !(1..=10_000).contains(&v) {
                bail!("{name} must be between 1 and 10000");
            }
        }
        if self.warm_pgd_random > 10_000 || self.warm_codes_fresh > 10_000 {
            bail!("--warm-pgd-random and --warm-codes-fresh must be at most 10000");
        }
        if self.warm_start && self.eps_order == OrderArg::Descending {
            bail!("--warm-start carries points to larger balls: it needs --eps-order ascending");
        }
        if !(1..=1_000).contains(&self.settle_after) {
            bail!("--settle-after must be between 1 and 1000");
        }
        if self.codes_probe_rounds > 10_000 {
            bail!("--codes-probe-rounds must be at most 10000");
        }
        if !(self.pgd_step_factor.is_finite() && self.pgd_step_factor > 0.0) {
            bail!("--pgd-step-factor must be positive");
        }
        Ok(())
    }

    /// PGD as asked (ε set per sweep point).
    pub fn pgd(&self, grad: GradMode) -> PgdConfig {
        PgdConfig {
            eps: 0.0,
            steps: self.pgd_steps,
            restarts: self.pgd_restarts,
            schedule: match self.pgd_schedule {
                ScheduleArg::Apgd => Schedule::Apgd,
                ScheduleArg::Constant => Schedule::Constant {
                    factor: self.pgd_step_factor,
                },
            },
            loss: self.pgd_loss.into(),
            early_stop: true,
            random_start: !self.no_random_start,
            grad,
        }
    }

    /// The filter-code search as asked (ε and grid set per sweep point).
    pub fn codes(&self) -> FilterCodesConfig {
        FilterCodesConfig {
            steps: self.codes_steps,
            restarts: self.codes_restarts,
            probe_rounds: self.codes_probe_rounds,
            loss: self.codes_loss.into(),
            ..FilterCodesConfig::new(0.0, Grid::Real)
        }
    }

    /// The warm start across ε asked for, if any.
    pub fn warm_start(&self) -> Option<WarmStart> {
        self.warm_start.then_some(WarmStart {
            pgd_random: self.warm_pgd_random,
            codes_fresh: self.warm_codes_fresh,
        })
    }

    /// The ε order asked for.
    pub fn order(&self) -> Order {
        match self.eps_order {
            OrderArg::Ascending => Order::Ascending,
            OrderArg::Descending => Order::Descending {
                settle_after: self.settle_after,
            },
        }
    }

    /// Every white-box attack, in cascade order (FGSM, filter codes, PGD surrogate, PGD identity).
    pub fn all_attacks(&self) -> Vec<WhiteBoxAttack> {
        all_attacks(self.pgd(GradMode::Surrogate), self.codes())
    }
}

/// `--eps-order` values (the library's [`Order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    /// Smallest ε first; every image still standing gets every attack at every ε.
    Ascending,
    /// Largest ε first; an image a search fails on is settled for the smaller ε.
    Descending,
}

/// `--plan` values (the library's [`Plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanArg {
    /// Each attack only on the images the ones before it left standing (cheapest).
    Cascade,
    /// Every attack on every image it has not broken itself, so each has its own
    /// accuracy too (what `spartan reproduce` runs).
    Each,
}

impl From<PlanArg> for Plan {
    fn from(a: PlanArg) -> Self {
        match a {
            PlanArg::Cascade => Plan::Cascade,
            PlanArg::Each => Plan::Each,
        }
    }
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
    /// How the worst case shares the images between its attacks.
    #[arg(long, value_enum, default_value = "cascade")]
    pub plan: PlanArg,
    #[command(flatten)]
    pub strength: StrengthArgs,
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
    a.strength.check()?;
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
            let (attacks, plan) = match kind {
                AttackKind::Fgsm => (vec![WhiteBoxAttack::Fgsm { grad }], Plan::Each),
                AttackKind::Pgd => (vec![WhiteBoxAttack::Pgd(a.strength.pgd(grad))], Plan::Each),
                AttackKind::FilterCodes => {
                    filter_codes::ElementFilter::of(&net)
                        .map_err(|e| anyhow::anyhow!("--attack filter-codes: {e}"))?;
                    let codes = FilterCodesConfig {
                        grad,
                        ..a.strength.codes()
                    };
                    (vec![WhiteBoxAttack::FilterCodes(codes)], Plan::Each)
                }
                _ => (a.strength.all_attacks(), a.plan.into()),
            };
            let cfg = WhiteBoxConfig {
                attacks,
                plan,
                use_labels: !a.predicted_targets,
                seed: a.seed,
                warm_start: a.strength.warm_start(),
                order: a.strength.order(),
            };
            let data = eval.take(a.white_box_images).to_input();
            let result = white_box(&net, &data, &eps, &cfg, &progress);
            return finish_white_box(&a, kind, result);
        }
    };
    finish(&a, report)
}

/// Writes and prints a white-box sweep: the attack's report, or for the worst case its
/// report and, in subdirectories, the worst case after each attack.
fn finish_white_box(a: &AttackArgs, kind: AttackKind, r: WhiteBoxResult) -> anyhow::Result<()> {
    for note in &r.notes {
        eprintln!("note: {note}");
    }
    if kind != AttackKind::WorstCase {
        let report = r.attacks.into_iter().next().context("the attack ran")?;
        return finish(a, report);
    }
    let name = model_name(a);
    for report in &r.attacks {
        let dir = a.out.join(&report.attack);
        crate::report::write_attack(report, &dir, &name)
            .with_context(|| format!("cannot write results to {}", dir.display()))?;
    }
    match a.plan {
        PlanArg::Cascade => println!("cascade (accuracy after each attack, real / u8 grid; time):"),
        PlanArg::Each => println!("each attack on its own (accuracy, real / u8 grid; time):"),
    }
    for report in &r.attacks {
        let pts: Vec<String> = report
            .points
            .iter()
            .map(|p| {
                format!(
                    "ε {} {:.1}/{:.1}%",
                    p.eps,
                    p.accuracy * 100.0,
                    p.accuracy_u8.unwrap_or(f64::NAN) * 100.0
                )
            })
            .collect();
        println!(
            "  {:<26} {:>7.1} s  {}",
            report.attack,
            report.seconds,
            pts.join(", ")
        );
    }
    finish(a, r.worst_case)
}

fn model_name(a: &AttackArgs) -> String {
    a.model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes and prints an attack's results.
fn finish(a: &AttackArgs, report: AttackReport) -> anyhow::Result<()> {
    let name = model_name(a);
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
        match p.accuracy_u8 {
            Some(u) => println!(
                "  ε = {:<5} accuracy {:6.2}%   on the u8 grid {:6.2}%",
                p.eps,
                p.accuracy * 100.0,
                u * 100.0
            ),
            None => println!("  ε = {:<5} accuracy {:6.2}%", p.eps, p.accuracy * 100.0),
        }
    }
    if report.seconds > 0.0 {
        println!("  {:.1} s, {} queries", report.seconds, report.queries);
    }
    println!("wrote {}", a.out.join("attack.csv").display());
    Ok(())
}
