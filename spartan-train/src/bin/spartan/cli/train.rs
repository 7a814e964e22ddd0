//! `spartan train` and `spartan eval`.

use super::DataArgs;
use crate::progress::Progress;
use anyhow::{bail, Context};
use spartan_train::arch::{resolve, Overrides};
use spartan_train::data::{self, Split};
use spartan_train::eval::evaluate;
use spartan_train::nn::optim::AdamConfig;
use spartan_train::nn::Init;
use spartan_train::train::{self as trainer, read_config, RunDir, Start, TrainConfig};
use std::path::PathBuf;

/// Arguments of `spartan train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// standard, candidate-a, candidate-b, candidate-c, or a path to a TOML spec.
    #[arg(long, default_value = "candidate-c")]
    pub arch: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Passes over the training set.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Filter-regularisation scaling factor (default: the spec's, 1e-5 for named archs).
    #[arg(long)]
    pub sf: Option<f32>,
    /// σ of normal-distribution activations (default: the spec's, 1).
    #[arg(long)]
    pub sigma: Option<f32>,
    /// Thresholds per pixel of the filtering layer, β (default: the spec's, 4).
    #[arg(long)]
    pub beta: Option<u16>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Initialisation of conv and dense weights (glorot: the Keras default the paper used).
    #[arg(long, value_enum, default_value = "glorot")]
    pub init: InitArg,
    /// Train the last N epochs at a tenth of --lr, but never more than the last sixth of
    /// all steps, so a short run still learns: a run of 6·N epochs or more anneals its
    /// last N epochs, a shorter one its last sixth of steps (0: the paper's constant rate).
    #[arg(long, default_value_t = 1)]
    pub anneal_epochs: usize,
    /// Certified training: also minimise the cross-entropy of the worst logits interval
    /// bounds allow within this radius (pixel values in [0, 1]; e.g. 0.1), so that
    /// `spartan certify` can prove the robustness attacks find. After the clean warm-up
    /// the filter is frozen and the radius grows from 0 over half the remaining steps,
    /// while the clean loss's weight falls to ½. Each certified step costs about four
    /// clean ones.
    #[arg(long, value_name = "EPS")]
    pub certify_eps: Option<f32>,
    /// Epochs trained on the clean loss before certified training starts: the filter
    /// learns its codes then (the paper's six epochs give it its three grey levels).
    #[arg(
        long,
        value_name = "EPOCHS",
        requires = "certify_eps",
        default_value_t = 1
    )]
    pub certify_warmup: usize,
    /// Use only the first N training images (quick experiments).
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Run directory, new or empty: run.json, checkpoint.bin, loss.csv, loss.png,
    /// model.spartan, summary.json.
    #[arg(long, value_name = "RUN_DIR", required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Replace the run in a non-empty --out directory (its files are removed first).
    #[arg(long, requires = "out")]
    pub overwrite: bool,
    /// Continue an interrupted run from its last finished epoch, with the settings of
    /// its run.json; only --epochs may be given beside it, to extend the run while the
    /// epochs done ran the same learning rates as they would in the longer run.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
}

/// `--init` values (the library's [`Init`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitArg {
    /// He-uniform for ReLU and linear layers, Glorot for step layers.
    He,
    /// Glorot-uniform (the Keras default the paper used).
    Glorot,
}

impl From<InitArg> for Init {
    fn from(a: InitArg) -> Self {
        match a {
            InitArg::He => Init::He,
            InitArg::Glorot => Init::Glorot,
        }
    }
}

/// Arguments of `spartan eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Model file (f32 kind).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Options `--resume` takes beside it: `--epochs` (an extension) and the display.
const RESUMABLE: [&str; 3] = ["--resume", "--epochs", "--quiet"];

/// `given`: the options on the command line (`--name`).
pub(super) fn train(a: TrainArgs, given: &[String], progress: Progress) -> anyhow::Result<()> {
    let (config, out, start) = match &a.resume {
        Some(run) => {
            let refused: Vec<String> = given
                .iter()
                .filter(|flag| !RESUMABLE.contains(&flag.as_str()))
                .cloned()
                .collect();
            if !refused.is_empty() {
                bail!(
                    "{} cannot be given with --resume: a resumed run keeps the settings of \
                     its run.json (only --epochs may extend it)",
                    refused.join(", ")
                );
            }
            let mut cfg = read_config(run)?;
            if given.iter().any(|flag| flag == "--epochs") {
                cfg.epochs = a.epochs;
            }
            (cfg, run.clone(), Start::Resume)
        }
        None => {
            let out = a.out.clone().context("--out is required")?;
            let overrides = Overrides {
                beta: a.beta,
                sf: a.sf,
                sigma: a.sigma,
            };
            let data_desc = match &a.data.data {
                Some(d) => d.display().to_string(),
                None => "embedded".to_string(),
            };
            let cfg = TrainConfig {
                arch_name: a.arch.clone(),
                spec: resolve(&a.arch, overrides, 10)?,
                epochs: a.epochs,
                batch: a.batch,
                adam: AdamConfig {
                    lr: a.lr,
                    ..AdamConfig::default()
                },
                seed: a.seed,
                data: data_desc,
                train_limit: a.train_limit,
                init: a.init.into(),
                anneal_epochs: a.anneal_epochs,
                certify_eps: a.certify_eps,
                certify_warmup: if a.certify_eps.is_some() {
                    a.certify_warmup
                } else {
                    0
                },
            };
            if !a.overwrite && out.is_dir() {
                // Fail before loading data; train checks again under the lock.
                RunDir::open(&out).ensure_empty()?;
            }
            let start = if a.overwrite {
                Start::Overwrite
            } else {
                Start::Fresh
            };
            (cfg, out, start)
        }
    };
    config.validate()?;
    let data_dir = match config.data.as_str() {
        "embedded" => None,
        d => Some(PathBuf::from(d)),
    };
    let mut splits = data::load(data_dir.as_deref())?;
    if let Some(n) = config.train_limit {
        splits.train = splits.train.take(n);
    }
    eprintln!(
        "training {} ({} parameters) on {}: {} train / {} test images, {} epochs, batch {}, seed {}",
        config.arch_name,
        config.spec.parameter_count()?,
        splits.source,
        splits.train.len(),
        splits.test.len(),
        config.epochs,
        config.batch,
        config.seed
    );
    let (summary, _) = trainer::train(&config, &splits, &out, start, &progress)?;
    println!(
        "test accuracy {:.2}% after {} epochs ({:.1} s, {:.0} samples/s); wrote {}",
        summary.test_accuracy * 100.0,
        summary.epochs,
        summary.train_seconds,
        summary.samples_per_second,
        out.join(trainer::files::MODEL).display()
    );
    if let Some(c) = summary.certified {
        println!(
            "the training's interval bounds prove {:.2}% of the test images at ε {}; \
             `spartan certify` gives the sound figure",
            c.bounds_hold * 100.0,
            c.eps
        );
    }
    Ok(())
}

pub(super) fn eval(a: EvalArgs, _progress: Progress) -> anyhow::Result<()> {
    let model = super::load_any_model(&a.model)?;
    let test = &a.data.load(Split::Test)?;
    if test.is_empty() {
        bail!("the test set is empty");
    }
    let (e, kind) = match model {
        super::AnyModel::F32(net) => {
            test.check_shape(net.shapes()[0])?;
            test.check_classes(net.classes())?;
            (evaluate(&net, test), "f32")
        }
        super::AnyModel::Int8(bytes) => {
            let runner = spartan_train::int8::Int8Runner::load(&bytes)?;
            test.check_shape(runner.model.shapes()[0])?;
            test.check_classes(runner.model.classes())?;
            let (preds, _) = runner.run(test.values(), test.len());
            (
                spartan_train::eval::score(&preds, &test.labels, runner.model.classes()),
                "int8",
            )
        }
    };
    println!(
        "{kind} accuracy {:.2}% on {} test images of {}",
        e.accuracy * 100.0,
        e.n,
        a.data.describe()
    );
    print!("{}", e.confusion_table());
    Ok(())
}
